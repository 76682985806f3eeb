//! The script's `~ PATH JSON` steps: one `POST` to etcd's JSON gateway over plain HTTP/1.1, as
//! `curl` sends it, and the answer made comparable by the etcdctl normalizer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// How long a gateway answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Fields whose strings are bytes (base64) or names, never 64-bit integers.
const NOT_INTEGERS: &[&str] = &["key", "value", "range_end", "name", "password", "blob"];

/// `POST path` with `body` to `endpoint` (`http://host:port`): the HTTP status and the body.
///
/// # Errors
///
/// If the member cannot be reached or its answer is not HTTP.
pub fn post(endpoint: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    // One write: `write!` on the socket would send each piece of the format as its own
    // segment, and a server that answers (a 404, say) and closes after the head alone gets the
    // body after its close, answers it with a reset, and the reset can take its answer with it
    // (seen against etcd 3.4 in CI: "Connection reset by peer" reading a 404).
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    if let Err(e) = stream.read_to_end(&mut answer) {
        // A reset after a whole answer arrived loses nothing: the answer is complete.
        if e.kind() != std::io::ErrorKind::ConnectionReset || !is_whole(&answer) {
            return Err(e).with_context(|| format!("reading the answer to POST {path}"));
        }
    }
    parse_answer(&answer)
}

/// Whether `answer` is a whole HTTP/1.1 answer: its head, then as many body bytes as its
/// `Content-Length` says, or every chunk up to the last (an answer with neither is whole only
/// at the end of the stream, which a reset does not tell).
fn is_whole(answer: &[u8]) -> bool {
    let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..at]).to_ascii_lowercase();
    let body = &answer[at + 4..];
    if let Some(length) = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
    {
        return body.len() >= length;
    }
    head.lines()
        .any(|line| line.starts_with("transfer-encoding:") && line.contains("chunked"))
        && parse_answer(answer).is_ok()
}

/// An HTTP/1.1 answer's status and body (chunked or not; trailers dropped).
fn parse_answer(answer: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("not an HTTP answer: {text}");
    };
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {head}"))?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_owned()));
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            bail!("a chunked body without its sizes: {body}");
        };
        let size = usize::from_str_radix(size.trim(), 16)
            .with_context(|| format!("a chunk size in {body}"))?;
        if size == 0 {
            return Ok((status, out));
        }
        let chunk = after
            .get(..size)
            .with_context(|| format!("a short chunk in {body}"))?;
        out.push_str(chunk);
        rest = after[size..].trim_start_matches("\r\n");
    }
}

/// The gateway's JSON as etcdctl's `-w json` writes the same message: 64-bit integers as
/// numbers, not strings; bytes and names left alone.
pub fn numbers(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(name, inner)| {
                    let inner = if NOT_INTEGERS.contains(&name.as_str()) {
                        inner
                    } else {
                        numbers(inner)
                    };
                    (name, inner)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(numbers).collect()),
        Value::String(text) => {
            if let Ok(n) = text.parse::<u64>() {
                Value::from(n)
            } else if let Ok(n) = text.parse::<i64>() {
                Value::from(n)
            } else {
                Value::String(text)
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_whole_only_with_all_its_body() {
        assert!(is_whole(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"
        ));
        assert!(!is_whole(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot fo"
        ));
        assert!(!is_whole(b"HTTP/1.1 404 Not Found\r\nContent-Len"));
        assert!(is_whole(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        ));
        assert!(!is_whole(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n"
        ));
        // Neither a length nor chunks: only the end of the stream would tell.
        assert!(!is_whole(b"HTTP/1.1 200 OK\r\n\r\n{}"));
    }

    #[test]
    fn chunked_and_plain_answers_give_their_body() -> Result<()> {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_answer(plain)?, (200, "{}".to_owned()));
        let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n\
            3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\nGrpc-Trailer-Content-Type: application/grpc\r\n\r\n";
        assert_eq!(parse_answer(chunked)?, (404, "{\"a\":1}".to_owned()));
        assert!(parse_answer(b"garbage").is_err());
        Ok(())
    }

    #[test]
    fn integer_strings_become_numbers_but_bytes_stay_strings() {
        let gateway = serde_json::json!({
            "header": {"revision": "5", "cluster_id": "18446744073709551615"},
            "kvs": [{"key": "MTIz", "value": "1234", "version": "-1"}],
            "watch_id": "-1",
            "name": "42",
            "text": "abc",
        });
        let etcdctl = serde_json::json!({
            "header": {"revision": 5, "cluster_id": u64::MAX},
            "kvs": [{"key": "MTIz", "value": "1234", "version": -1}],
            "watch_id": -1,
            "name": "42",
            "text": "abc",
        });
        assert_eq!(numbers(gateway), etcdctl);
    }
}
