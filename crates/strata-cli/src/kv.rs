//! `strata kv`: a client of the seed's Kvdb service (register, put, get, delete).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use strata_server::proto::clientpb::kvdb_client::KvdbClient;
use strata_server::proto::clientpb::{
    Auth, Command, DeleteCommand, KvPair, Operate, PutCommand, ReadonlyQuery, Request, Response,
};

use crate::output::{self, Table, outln};

/// `strata kv`: the output format (as etcdctl's `-w`) and the subcommand.
#[derive(Debug, Args)]
pub struct KvArgs {
    /// Output format: `simple` (the value, or OK), `json`, or `table` (as etcdctl's `-w`).
    #[arg(short = 'w', long, global = true, value_enum, default_value_t = WriteOut::Simple)]
    write_out: WriteOut,
    #[command(subcommand)]
    command: KvCommand,
}

/// etcdctl's output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WriteOut {
    Simple,
    Json,
    Table,
}

/// The `strata kv` subcommands.
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Open a session with the server's token; prints the client id.
    #[command(after_help = "Example (`strata dev` prints its token):
  strata kv register --token $(cat DATA_DIR/kvdb-token)")]
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
    #[command(after_help = "Examples:
  strata kv put --client-id 7 --seq 1 greeting hello
  strata kv put --client-id 7 --seq 2 greeting goodbye -w json")]
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
    /// Print KEY's value (a linearizable read); exit 1 if absent.
    #[command(after_help = "Examples:
  strata kv get greeting
  strata kv get greeting -w table")]
    Get {
        /// The member's client URL.
        #[arg(long, default_value = "http://127.0.0.1:2379")]
        endpoint: String,
        /// The key.
        key: String,
    },
    /// Delete KEY, exactly once per (client id, seq).
    #[command(after_help = "Example:
  strata kv delete --client-id 7 --seq 3 greeting")]
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

/// Prints a result in the chosen format: `simple` as the one line given, `json` as one
/// object of `fields`, `table` as a bordered table of them.
fn print(format: WriteOut, simple: &str, fields: &[(&str, serde_json::Value)]) -> Result<()> {
    match format {
        WriteOut::Simple => outln!("{simple}"),
        WriteOut::Json => {
            let object: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            output::json(&object, false)
        }
        WriteOut::Table => {
            let mut table = Table::new(&fields.iter().map(|(k, _)| *k).collect::<Vec<_>>());
            table.row(
                fields
                    .iter()
                    .map(|(_, v)| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect(),
            );
            outln!("{}", table.boxed())
        }
    }
}

/// A write's answer: `OK`, with the session and sequence number it was made under.
fn print_ok(format: WriteOut, client_id: u64, seq: u64) -> Result<()> {
    print(
        format,
        "OK",
        &[
            ("client_id", json!(client_id)),
            ("seq", json!(seq)),
            ("result", json!("OK")),
        ],
    )
}

/// Runs a `strata kv` subcommand.
pub fn run(args: KvArgs) -> Result<()> {
    let KvArgs { write_out, command } = args;
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
                print(
                    write_out,
                    &response.client_id.to_string(),
                    &[("client_id", json!(response.client_id))],
                )?;
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
                print_ok(write_out, client_id, seq)?;
            }
            KvCommand::Get { endpoint, key } => {
                let key = key.into_bytes();
                let response = connect(endpoint)
                    .await?
                    .get(ReadonlyQuery { key: key.clone() })
                    .await?
                    .into_inner();
                check(&response)?;
                let Some(pair) = response.data.first() else {
                    bail!("key {:?} not found", String::from_utf8_lossy(&key));
                };
                let value = String::from_utf8_lossy(&pair.value);
                print(
                    write_out,
                    &value,
                    &[
                        ("key", json!(String::from_utf8_lossy(&pair.key))),
                        ("value", json!(value)),
                    ],
                )?;
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
                print_ok(write_out, client_id, seq)?;
            }
        }
        Ok(())
    })
}
