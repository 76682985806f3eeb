//! What the memory tests share.

/// `RssAnon` of this process, in bytes (Linux: reads `/proc/self/status`).
pub fn anon_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read status");
    let line = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .expect("RssAnon");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number");
    kib * 1024
}
