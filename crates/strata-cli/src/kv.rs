//! `strata kv`: a client of the seed's Kvdb service (register, put, get, delete).

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use strata_server::proto::clientpb::kvdb_client::KvdbClient;
use strata_server::proto::clientpb::{
    Auth, Command, DeleteCommand, KvPair, Operate, PutCommand, ReadonlyQuery, Request, Response,
};

/// The `strata kv` subcommands.
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Open a session with the server's token; prints the client id.
    Register {
        /// The member's client URL.
        #[arg(long, default_value = "http://127.0.0.1:2379")]
        endpoint: String,
        /// The token (`--kvdb-token-file` on the server).
        #[arg(long)]
        token: String,
    },
    /// Set KEY to VALUE, exactly once per (client id, seq): a retry with the same seq gets the
    /// first answer.
    Put {
        /// The member's client URL.
        #[arg(long, default_value = "http://127.0.0.1:2379")]
        endpoint: String,
        /// From `register`.
        #[arg(long)]
        client_id: u64,
        /// This request's sequence number: one more than the last one's.
        #[arg(long)]
        seq: u64,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Print KEY's value (a linearizable read).
    Get {
        /// The member's client URL.
        #[arg(long, default_value = "http://127.0.0.1:2379")]
        endpoint: String,
        /// The key.
        key: String,
    },
    /// Delete KEY, exactly once per (client id, seq).
    Delete {
        /// The member's client URL.
        #[arg(long, default_value = "http://127.0.0.1:2379")]
        endpoint: String,
        /// From `register`.
        #[arg(long)]
        client_id: u64,
        /// This request's sequence number.
        #[arg(long)]
        seq: u64,
        /// The key.
        key: String,
    },
}

fn check(response: &Response) -> Result<()> {
    if !response.success {
        bail!("refused: {}", response.msg);
    }
    Ok(())
}

/// Runs a `strata kv` subcommand.
pub fn run(command: KvCommand) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the Tokio runtime")?;
    runtime.block_on(async move {
        let connect = |endpoint: String| async move {
            KvdbClient::connect(endpoint.clone())
                .await
                .with_context(|| format!("connect to {endpoint}"))
        };
        match command {
            KvCommand::Register { endpoint, token } => {
                let response = connect(endpoint)
                    .await?
                    .register(Auth { token })
                    .await?
                    .into_inner();
                check(&response)?;
                println!("{}", response.client_id);
            }
            KvCommand::Put {
                endpoint,
                client_id,
                seq,
                key,
                value,
            } => {
                let request = Request {
                    client_id,
                    seq,
                    cmd: Some(Command {
                        operate_type: Operate::Put as i32,
                        put: Some(PutCommand {
                            data: vec![KvPair {
                                key: key.into_bytes(),
                                value: value.into_bytes(),
                            }],
                        }),
                        del: None,
                    }),
                    query: None,
                };
                check(&connect(endpoint).await?.put(request).await?.into_inner())?;
                println!("OK");
            }
            KvCommand::Get { endpoint, key } => {
                let response = connect(endpoint)
                    .await?
                    .get(ReadonlyQuery {
                        key: key.into_bytes(),
                    })
                    .await?
                    .into_inner();
                check(&response)?;
                match response.data.first() {
                    Some(pair) => println!("{}", String::from_utf8_lossy(&pair.value)),
                    None => bail!("not found"),
                }
            }
            KvCommand::Delete {
                endpoint,
                client_id,
                seq,
                key,
            } => {
                let request = Request {
                    client_id,
                    seq,
                    cmd: Some(Command {
                        operate_type: Operate::Delete as i32,
                        put: None,
                        del: Some(DeleteCommand {
                            keys: vec![key.into_bytes()],
                        }),
                    }),
                    query: None,
                };
                check(&connect(endpoint).await?.delete(request).await?.into_inner())?;
                println!("OK");
            }
        }
        Ok(())
    })
}
