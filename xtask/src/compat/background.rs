//! etcdctl commands that do not exit by themselves (`watch`, `elect`, `lock` without a command,
//! `watch -i`), run in the background while later commands of the script run, then stopped with
//! SIGINT (as a user's Ctrl-C) and their whole output compared.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::cluster::Answer;

/// How long a wait for a background command's output may take: etcdctl's own timeouts are 5 s,
/// and a watcher that resumes after an error waits for a leader. A text that never comes costs
/// this once, and the difference shows in the compared output.
pub const OUTPUT_WITHIN: Duration = Duration::from_secs(15);
/// How long a command without a text to wait for must print nothing more before it is stopped.
const QUIET_FOR: Duration = Duration::from_millis(500);
/// How long a stopped command may take to exit after SIGINT (`elect` resigns, `lock` unlocks)
/// before it is killed.
const EXIT_WITHIN: Duration = Duration::from_secs(10);
/// How often the output is looked at while waiting.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// A pipe read to its end on a thread of its own, its bytes so far readable at any time.
#[derive(Debug)]
struct Collected {
    bytes: Arc<Mutex<Vec<u8>>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Collected {
    fn new(mut pipe: impl Read + Send + 'static) -> Self {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&bytes);
        let reader = thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                shared
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend_from_slice(&buffer[..n]);
            }
        });
        Self {
            bytes,
            reader: Some(reader),
        }
    }

    fn text(&self) -> String {
        let bytes = self
            .bytes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The whole output, once the pipe has closed.
    fn finish(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.text()
    }
}

/// One etcdctl running in the background.
#[derive(Debug)]
pub struct Background {
    child: Child,
    /// Kept open until the command is stopped: `watch -i` exits at the end of its input.
    stdin: Option<ChildStdin>,
    /// Whether it reads commands from stdin (`watch -i`): it is stopped by closing its input,
    /// not by SIGINT. Both at once race inside etcdctl (it exits 3 on EOF, or dies of the
    /// signal, whichever it meets first), and a loaded machine flipped the order between the
    /// two systems' runs.
    interactive: bool,
    stdout: Collected,
    stderr: Collected,
}

impl Background {
    /// Starts `etcdctl ARGS` with API version 3 and writes `stdin` to it (left open).
    ///
    /// # Errors
    ///
    /// If etcdctl cannot be started.
    pub fn start(args: &[&str], stdin: &str) -> Result<Self> {
        let mut command = Command::new("etcdctl");
        command
            .args(args)
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("ETCDCTL") && key_text != "ETCDCTL_API" {
                command.env_remove(key);
            }
        }
        let mut child = command.spawn().context("starting etcdctl")?;
        let mut input = child.stdin.take().context("etcdctl's stdin")?;
        // Short (a few script lines): the pipe's buffer takes it without blocking.
        let _ = input.write_all(stdin.as_bytes());
        let _ = input.flush();
        let stdout = Collected::new(child.stdout.take().context("etcdctl's stdout")?);
        let stderr = Collected::new(child.stderr.take().context("etcdctl's stderr")?);
        Ok(Self {
            child,
            stdin: Some(input),
            interactive: args.iter().any(|a| *a == "-i" || *a == "--interactive"),
            stdout,
            stderr,
        })
    }

    /// Waits (at most [`OUTPUT_WITHIN`]) until stdout has a line containing `text`, or the
    /// command has exited; says which.
    pub fn wait_for(&mut self, text: &str) -> String {
        let started = Instant::now();
        loop {
            if self.stdout.text().lines().any(|line| line.contains(text)) {
                return format!("seen: {text}\n");
            }
            if self.exited() {
                // One more look: the last line may have come with the exit.
                if self.stdout.text().lines().any(|line| line.contains(text)) {
                    return format!("seen: {text}\n");
                }
                return format!("exited before showing: {text}\n");
            }
            if started.elapsed() > OUTPUT_WITHIN {
                return format!("not seen within {}s: {text}\n", OUTPUT_WITHIN.as_secs());
            }
            thread::sleep(POLL_EVERY);
        }
    }

    /// Waits until stdout has a line containing `until` (when given; otherwise until it has
    /// been quiet for a moment), bounded by [`OUTPUT_WITHIN`], then sends SIGINT, waits for the
    /// exit (killing the command past [`EXIT_WITHIN`]) and returns what it printed.
    pub fn stop(&mut self, until: Option<&str>) -> Answer {
        let waited = match until {
            Some(text) => Some(self.wait_for(text)),
            None => {
                let started = Instant::now();
                let mut last = (self.stdout.text(), Instant::now());
                while started.elapsed() < OUTPUT_WITHIN && !self.exited() {
                    let now = self.stdout.text();
                    if now != last.0 {
                        last = (now, Instant::now());
                    } else if last.1.elapsed() > QUIET_FOR {
                        break;
                    }
                    thread::sleep(POLL_EVERY);
                }
                None
            }
        };
        drop(self.stdin.take());
        if self.interactive {
            // Closed input ends it; SIGINT only if it is still running past the bound.
            let started = Instant::now();
            while started.elapsed() < EXIT_WITHIN && !self.exited() {
                thread::sleep(POLL_EVERY);
            }
        }
        let interrupted = !self.exited() && self.interrupt();
        let started = Instant::now();
        let exit = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    let code = status
                        .code()
                        .map_or_else(|| "signal".to_owned(), |code| code.to_string());
                    break if interrupted {
                        format!("{code} after SIGINT")
                    } else {
                        code
                    };
                }
                Ok(None) if started.elapsed() < EXIT_WITHIN => thread::sleep(POLL_EVERY),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break "killed: no exit after SIGINT".to_owned();
                }
            }
        };
        let mut stdout = self.stdout.finish();
        if let Some(waited) = waited {
            stdout = format!("{waited}{stdout}");
        }
        Answer {
            exit,
            stdout,
            stderr: self.stderr.finish(),
        }
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Sends SIGINT to the command (by its pid: only the process this harness started).
    fn interrupt(&self) -> bool {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .is_ok_and(|status| status.success())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Only a command never stopped by the script (an error ended the run) is still here.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
