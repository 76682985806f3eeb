//! etcd's JSON gateway (`POST /v3/kv/put`, `/v3/watch`, ...) on a real cluster, driven over
//! plain HTTP/1.1 as `curl` drives it, beside the etcd-client crate on gRPC: the answers are
//! etcd 3.4's (checked by hand against it: field names, 64-bit integers as strings, base64
//! bytes, the error shapes and HTTP statuses).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use support::cluster::{Cluster, client, runtime, wait_ready};

/// How long a streamed line may take to arrive.
const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// An HTTP/1.1 request's head and body.
fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    head + body
}

/// A whole (not streamed) answer: status and body.
fn call(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(LINE_TIMEOUT))
        .expect("timeout");
    stream
        .write_all(request(addr, method, path, headers, body).as_bytes())
        .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let status = answer[9..12].parse().expect("a status code");
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `POST path` with JSON: status and the parsed answer.
fn post(addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let (status, body) = call(addr, "POST", path, headers, body);
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

/// base64 of `s`.
fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A streamed answer (chunked), read line by line.
struct Stream {
    reader: BufReader<TcpStream>,
    status: u16,
}

impl Stream {
    fn open(addr: &str, path: &str, body: &str) -> Stream {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(LINE_TIMEOUT))
            .expect("timeout");
        (&stream)
            .write_all(request(addr, "POST", path, &[], body).as_bytes())
            .expect("write");
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).expect("status line");
        let status = status_line[9..12].parse().expect("a status code");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("a header");
            if line == "\r\n" {
                break;
            }
        }
        Stream { reader, status }
    }

    /// The next JSON line of the answer (each chunk holds whole lines).
    fn next(&mut self) -> Value {
        let mut size = String::new();
        self.reader.read_line(&mut size).expect("a chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        assert!(size > 0, "the stream ended");
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).expect("a chunk");
        let text = String::from_utf8(chunk).expect("UTF-8");
        serde_json::from_str(text.trim_end()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }
}

/// KV, Txn, Lease, errors and aliases through the gateway, with gRPC seeing the same store.
#[test]
fn the_json_gateway_answers_as_etcds_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 3, &[]);
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
    });
    let addr = endpoints[1].trim_start_matches("http://").to_owned();
    let (status, put) = post(
        &addr,
        "/v3/kv/put",
        &[],
        &format!(r#"{{"key":"{}","value":"{}"}}"#, b64("foo"), b64("bar")),
    );
    assert_eq!(status, 200, "{put}");
    let revision = put["header"]["revision"]
        .as_str()
        .expect("a string revision");
    assert!(put["header"]["cluster_id"].is_string(), "{put}");
    // gRPC sees it.
    runtime().block_on(async {
        let mut c = client(&endpoints[..1]).await;
        let got = c.get("foo", None).await.expect("get");
        assert_eq!(got.kvs()[0].value(), b"bar");
        assert_eq!(
            got.header().expect("header").revision().to_string(),
            revision
        );
    });
    // etcd's field names (camelCase accepted too), unknown fields ignored, defaults left out.
    let (status, range) = post(
        &addr,
        "/v3/kv/range",
        &[],
        &format!(r#"{{"key":"{}","keysOnly":true,"bogus":1}}"#, b64("foo")),
    );
    assert_eq!(status, 200, "{range}");
    assert_eq!(range["count"], "1");
    let kv = &range["kvs"][0];
    assert_eq!(kv["key"], b64("foo"));
    assert_eq!(kv["create_revision"], revision);
    assert_eq!(kv["version"], "1");
    assert!(kv.get("value").is_none(), "keys only: {kv}");
    // /v3beta/ is /v3/ (etcd 3.4).
    let (status, beta) = post(
        &addr,
        "/v3beta/kv/range",
        &[],
        &format!(r#"{{"key":"{}"}}"#, b64("foo")),
    );
    assert_eq!(status, 200);
    assert_eq!(beta["kvs"][0]["value"], b64("bar"));
    // A Txn with a compare, enums by name, and the oneof's proto names.
    let txn = format!(
        r#"{{"compare":[{{"target":"VALUE","key":"{k}","value":"{v}"}}],
            "success":[{{"request_put":{{"key":"{k}","value":"{w}","prev_kv":true}}}}],
            "failure":[{{"request_range":{{"key":"{k}"}}}}]}}"#,
        k = b64("foo"),
        v = b64("bar"),
        w = b64("baz")
    );
    let (status, answer) = post(&addr, "/v3/kv/txn", &[], &txn);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["succeeded"], true);
    assert_eq!(
        answer["responses"][0]["response_put"]["prev_kv"]["value"],
        b64("bar")
    );
    let (_, answer) = post(&addr, "/v3/kv/txn", &[], &txn);
    assert!(
        answer.get("succeeded").is_none(),
        "false is left out: {answer}"
    );
    assert_eq!(
        answer["responses"][0]["response_range"]["kvs"][0]["value"],
        b64("baz")
    );
    // Errors: etcd's text, the gRPC code, grpc-gateway's HTTP status.
    let (status, answer) = post(
        &addr,
        "/v3/kv/range",
        &[],
        &format!(r#"{{"key":"{}","revision":"1000000"}}"#, b64("foo")),
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], 11);
    assert_eq!(
        answer["error"],
        "etcdserver: mvcc: required revision is a future revision"
    );
    assert_eq!(answer["message"], answer["error"]);
    let (status, answer) = post(&addr, "/v3/lease/revoke", &[], r#"{"ID":5}"#);
    assert_eq!(
        (status, &answer["code"]),
        (404, &Value::from(5)),
        "{answer}"
    );
    assert_eq!(answer["error"], "etcdserver: requested lease not found");
    let (status, answer) = post(&addr, "/v3/kv/range", &[], "");
    assert_eq!(
        (status, &answer["code"]),
        (400, &Value::from(3)),
        "{answer}"
    );
    assert_eq!(answer["error"], "etcdserver: key is not provided");
    let (status, answer) = post(&addr, "/v3/kv/put", &[], r#"{"key":"not base64!"}"#);
    assert_eq!(
        (status, &answer["code"]),
        (400, &Value::from(3)),
        "{answer}"
    );
    let (status, _) = call(&addr, "POST", "/v3/kv/nosuch", &[], "{}");
    assert_eq!(status, 404);
    let (status, _) = call(&addr, "GET", "/v3/kv/range", &[], "");
    assert_eq!(status, 405);
    // Leases: grant, time to live (at its alias), list.
    let (status, lease) = post(&addr, "/v3/lease/grant", &[], r#"{"TTL":60,"ID":4242}"#);
    assert_eq!(status, 200, "{lease}");
    assert_eq!(
        (&lease["ID"], &lease["TTL"]),
        (&Value::from("4242"), &Value::from("60"))
    );
    let (_, ttl) = post(&addr, "/v3/kv/lease/timetolive", &[], r#"{"ID":"4242"}"#);
    assert_eq!(ttl["grantedTTL"], "60", "{ttl}");
    let (_, leases) = post(&addr, "/v3/lease/leases", &[], "{}");
    assert_eq!(leases["leases"][0]["ID"], "4242", "{leases}");
    // Keep-alive: a line per request, then the stream ends with the body (etcd's).
    let mut keepalive = Stream::open(&addr, "/v3/lease/keepalive", r#"{"ID":4242} {"ID":"4242"}"#);
    assert_eq!(keepalive.status, 200);
    for _ in 0..2 {
        let line = keepalive.next();
        assert_eq!(line["result"]["TTL"], "60", "{line}");
    }
    // Cluster and maintenance.
    let (_, members) = post(&addr, "/v3/cluster/member/list", &[], "{}");
    assert_eq!(members["members"].as_array().expect("members").len(), 3);
    assert!(members["members"][0]["peerURLs"].is_array(), "{members}");
    let (_, status_answer) = post(&addr, "/v3/maintenance/status", &[], "{}");
    assert!(status_answer["dbSize"].is_string(), "{status_answer}");
    // CORS, as etcd's default.
    let (status, body) = call(&addr, "OPTIONS", "/v3/kv/range", &[], "");
    assert_eq!(status, 200, "{body}");
}

/// A watch over the gateway streams its events, stays open once its request body has ended
/// (etcd's), and a compacted start revision cancels it; auth takes the `Authorization`
/// header's token.
#[test]
fn gateway_watches_stream_and_auth_takes_the_authorization_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 1, &[]);
    let endpoints = cluster.endpoints();
    let addr = endpoints[0].trim_start_matches("http://").to_owned();
    runtime().block_on(async {
        let mut c = wait_ready(&endpoints[0]).await;
        c.put("w/1", "one", None).await.expect("put");
    });
    let create = format!(
        r#"{{"create_request":{{"key":"{}","range_end":"{}","start_revision":1}}}}"#,
        b64("w/"),
        b64("w0")
    );
    let mut watch = Stream::open(&addr, "/v3/watch", &create);
    assert_eq!(watch.status, 200);
    let created = watch.next();
    assert_eq!(created["result"]["created"], true, "{created}");
    let history = watch.next();
    assert_eq!(
        history["result"]["events"][0]["kv"]["value"],
        b64("one"),
        "{history}"
    );
    // Live events after the request body ended.
    runtime().block_on(async {
        let mut c = client(&endpoints).await;
        c.delete("w/1", None).await.expect("delete");
    });
    let deleted = watch.next();
    let event = &deleted["result"]["events"][0];
    assert_eq!(event["type"], "DELETE", "{deleted}");
    assert_eq!(event["kv"]["key"], b64("w/1"));
    drop(watch);
    // Several requests in one body: a client-chosen id, then a progress request.
    let body = format!(
        r#"{{"create_request":{{"key":"{}","watch_id":7}}}}
           {{"progress_request":{{}}}}"#,
        b64("x")
    );
    let mut watch = Stream::open(&addr, "/v3/watch", &body);
    let created = watch.next();
    assert_eq!(created["result"]["watch_id"], "7", "{created}");
    let progress = watch.next();
    assert_eq!(progress["result"]["watch_id"], "-1", "{progress}");
    drop(watch);
    // A first request that is not JSON: a unary error.
    let (status, answer) = post(&addr, "/v3/watch", &[], "garbage");
    assert_eq!(
        (status, &answer["code"]),
        (400, &Value::from(3)),
        "{answer}"
    );

    // Auth: no token is refused, the Authorization header's is taken.
    runtime().block_on(async {
        let mut c = client(&endpoints).await;
        c.user_add("root", "pw", None).await.expect("user add");
        c.user_grant_role("root", "root").await.expect("grant root");
        c.auth_enable().await.expect("auth enable");
    });
    let range = format!(r#"{{"key":"{}"}}"#, b64("w/1"));
    let (status, answer) = post(&addr, "/v3/kv/range", &[], &range);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "etcdserver: user name is empty");
    let (status, answer) = post(
        &addr,
        "/v3/auth/authenticate",
        &[],
        r#"{"name":"root","password":"bad"}"#,
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"],
        "etcdserver: authentication failed, invalid user ID or password"
    );
    let (status, answer) = post(
        &addr,
        "/v3/auth/authenticate",
        &[],
        r#"{"name":"root","password":"pw"}"#,
    );
    assert_eq!(status, 200, "{answer}");
    let token = answer["token"].as_str().expect("a token").to_owned();
    for value in [token.clone(), format!("Bearer {token}")] {
        let (status, answer) = post(&addr, "/v3/kv/range", &[("Authorization", &value)], &range);
        assert_eq!(status, 200, "{answer}");
    }
    let (status, answer) = post(&addr, "/v3/kv/range", &[("Authorization", "bogus")], &range);
    assert_eq!(
        (status, &answer["code"]),
        (401, &Value::from(16)),
        "{answer}"
    );
    assert_eq!(answer["error"], "etcdserver: invalid auth token");
    // A watch without a token is cancelled, as etcd's.
    let mut watch = Stream::open(&addr, "/v3/watch", &create);
    let line = watch.next();
    assert_eq!(line["result"]["canceled"], true, "{line}");
}

/// `--cors`: by default every HTTP answer of the client port allows any origin; with a list,
/// only a listed `Origin` is named back, and an `OPTIONS` preflight answers 200.
#[test]
fn cors_answers_follow_the_flag() {
    let head = |addr: &str, method: &str, path: &str, origin: &str| -> String {
        let mut stream = TcpStream::connect(addr).expect("connect");
        // One write, the body with the head: see `post` in xtask's compat/gateway.rs.
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        stream.write_all(request.as_bytes()).expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        let head = answer.split("\r\n\r\n").next().unwrap_or_default();
        head.to_ascii_lowercase()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let open = Cluster::start(&dir.path().join("open"), 1, &[]);
    let listed = Cluster::start(
        &dir.path().join("listed"),
        1,
        &["--cors", "http://a.example,http://b.example"],
    );
    let addrs: Vec<String> = [&open, &listed]
        .iter()
        .map(|c| c.endpoints()[0].trim_start_matches("http://").to_owned())
        .collect();
    runtime().block_on(async {
        for c in [&open, &listed] {
            wait_ready(&c.endpoints()[0]).await;
        }
    });
    let any = head(
        &addrs[0],
        "POST",
        "/v3/maintenance/status",
        "http://x.example",
    );
    assert!(any.contains("access-control-allow-origin: *"), "{any}");
    let health = head(&addrs[0], "GET", "/health", "http://x.example");
    assert!(
        health.contains("access-control-allow-origin: *"),
        "{health}"
    );
    let named = head(
        &addrs[1],
        "POST",
        "/v3/maintenance/status",
        "http://b.example",
    );
    assert!(
        named.contains("access-control-allow-origin: http://b.example"),
        "{named}"
    );
    let other = head(
        &addrs[1],
        "POST",
        "/v3/maintenance/status",
        "http://x.example",
    );
    assert!(other.starts_with("http/1.1 200"), "{other}");
    assert!(!other.contains("access-control-allow-origin"), "{other}");
    let preflight = head(&addrs[1], "OPTIONS", "/v3/kv/put", "http://a.example");
    assert!(preflight.starts_with("http/1.1 200"), "{preflight}");
    assert!(
        preflight.contains("access-control-allow-headers: accept, content-type, authorization"),
        "{preflight}"
    );
}

/// `--host-whitelist`: on a port without TLS, an HTTP request naming another host (a name a
/// web page rebound to the member's address) gets 421 and etcd's explanation, whatever its
/// path (the gateway, `/health`, `/metrics`); a listed host (any case, any port) is served,
/// and gRPC is not checked, as etcd does.
#[test]
fn the_host_whitelist_refuses_other_hosts_over_plain_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(
        dir.path(),
        1,
        &["--host-whitelist", "example.com,member.local"],
    );
    let endpoint = cluster.endpoints()[0].clone();
    let addr = endpoint.trim_start_matches("http://").to_owned();
    runtime().block_on(async {
        // gRPC is served whatever its authority says.
        let mut c = wait_ready(&endpoint).await;
        c.put("k", "v", None).await.expect("a gRPC put");
    });
    let as_host = |host: &str, method: &str, path: &str| -> (u16, String) {
        let mut stream = TcpStream::connect(&addr).expect("connect");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\
             Connection: close\r\n\r\n{{}}"
        );
        stream.write_all(request.as_bytes()).expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        let status = answer[9..12].parse().expect("a status code");
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
        (status, body.unwrap_or_default())
    };
    for (method, path) in [
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("POST", "/v3/kv/range"),
    ] {
        let (status, body) = as_host(&addr, method, path);
        assert_eq!(status, 421, "{path}: {body}");
        assert!(
            body.contains("the Host header was unrecognized")
                && body.contains("CVE-2018-5702")
                && body.contains("--host-whitelist \"127.0.0.1\""),
            "{body}"
        );
        let (status, body) = as_host("evil.example:80", method, path);
        assert_eq!(status, 421, "{path}: {body}");
    }
    for host in ["example.com", "Member.Local:2379", "example.com:80"] {
        let (status, body) = as_host(host, "GET", "/health");
        assert_eq!(status, 200, "{host}: {body}");
    }
    let (status, body) = as_host("example.com", "POST", "/v3/kv/range");
    assert_eq!(
        status, 400,
        "an empty range request reaches the gateway: {body}"
    );
}
