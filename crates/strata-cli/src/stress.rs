//! What the `stress` commands share: writer threads, and acknowledgements printed so that a
//! kill can only lose them, never invent them.

use std::io::Write;

use anyhow::{Result, bail};

/// Runs `writers` threads, each calling `write(writer)`, and waits for all of them.
pub fn run_writers(
    writers: u64,
    write: impl Fn(u64) -> Result<()> + Send + Sync + Clone + 'static,
) -> Result<()> {
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let write = write.clone();
            std::thread::spawn(move || write(w))
        })
        .collect();
    for handle in handles {
        match handle.join() {
            Ok(result) => result?,
            Err(_) => bail!("a writer thread panicked"),
        }
    }
    Ok(())
}

/// Prints `acked WHAT` and flushes stdout, after the write it acknowledges is durable and
/// before the next one starts.
pub fn ack(what: std::fmt::Arguments<'_>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "acked {what}")?;
    out.flush()?;
    Ok(())
}
