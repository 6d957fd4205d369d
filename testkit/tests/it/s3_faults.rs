//! `deeplake-s3-faults` in front of a real HTTP server on 127.0.0.1: requests pass
//! unchanged, each fault kind does what it says to the client and to the upstream, the
//! counters match, and the proxy stops by itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::http::HttpServer;

struct Proxy {
    child: Child,
    addr: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(upstream: &HttpServer, flags: &[&str]) -> Proxy {
    let mut child = Command::new(env!("CARGO_BIN_EXE_deeplake-s3-faults"))
        .args(["--upstream", &format!("http://{}", upstream.addr())])
        .args(flags)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    Proxy { child, addr }
}

/// One request on a fresh connection; what came back until the server closed it.
fn send(addr: &str, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    // A dropped connection ends the read with an error; what arrived before it stays.
    let _ = s.read_to_end(&mut out);
    out
}

fn stats(addr: &str) -> serde_json::Value {
    let resp = send(addr, "GET", "/_faults/stats", b"");
    let text = String::from_utf8(resp).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    serde_json::from_str(body).unwrap()
}

#[test]
fn without_faults_requests_pass_unchanged() {
    let up = HttpServer::start();
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    up.put("/bucket/key", payload.clone());
    let p = start(&up, &[]);
    for _ in 0..3 {
        let resp = send(&p.addr, "GET", "/bucket/key", b"");
        assert!(resp.starts_with(b"HTTP/1.1 200"), "{:?}", &resp[..40]);
        assert!(resp.ends_with(&payload));
    }
    assert_eq!(up.requests("/bucket/key"), 3);
    let s = stats(&p.addr);
    assert_eq!(s["requests"], 3);
    assert_eq!(s["forwarded"], 3);
    assert_eq!(
        s["injected_500"].as_u64().unwrap() + s["injected_503"].as_u64().unwrap(),
        0
    );
}

#[test]
fn errors_are_s3_errors_and_never_reach_the_upstream() {
    let up = HttpServer::start();
    up.put("/bucket/key", b"data".to_vec());
    let p = start(&up, &["--error-rate", "1", "--seed", "3"]);
    let mut codes = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let resp = String::from_utf8(send(&p.addr, "PUT", "/bucket/key", b"new bytes")).unwrap();
        if resp.starts_with("HTTP/1.1 503") {
            assert!(resp.contains("<Code>SlowDown</Code>"), "{resp}");
        } else {
            assert!(resp.starts_with("HTTP/1.1 500"), "{resp}");
            assert!(resp.contains("<Code>InternalError</Code>"), "{resp}");
        }
        codes.insert(resp[9..12].to_owned());
    }
    assert_eq!(codes.len(), 2, "both 500 and 503 are drawn: {codes:?}");
    assert_eq!(up.total_requests(), 0);
    let s = stats(&p.addr);
    assert_eq!(
        s["injected_500"].as_u64().unwrap() + s["injected_503"].as_u64().unwrap(),
        20
    );
    assert_eq!(s["forwarded"], 0);
}

#[test]
fn resets_cut_a_get_mid_body_and_drop_other_requests_unsent() {
    let up = HttpServer::start();
    let payload = vec![7u8; 64 * 1024];
    up.put("/bucket/key", payload.clone());
    let p = start(&up, &["--reset-rate", "1"]);
    let resp = send(&p.addr, "GET", "/bucket/key", b"");
    assert!(resp.starts_with(b"HTTP/1.1 200"));
    let head_end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let got = resp.len() - head_end;
    assert!(
        got < payload.len(),
        "the body was cut: {got} of {} bytes",
        payload.len()
    );
    assert_eq!(up.requests("/bucket/key"), 1);
    // Not a GET: the connection is dropped before anything is forwarded.
    let resp = send(&p.addr, "PUT", "/bucket/other", b"x");
    assert!(resp.is_empty(), "no response: {resp:?}");
    assert_eq!(up.requests("/bucket/other"), 0);
    let s = stats(&p.addr);
    assert_eq!(s["reset_mid_body"], 1);
    assert_eq!(s["reset_before_forward"], 1);
}

#[test]
fn latency_is_added_and_the_proxy_stops_by_itself() {
    let up = HttpServer::start();
    up.put("/bucket/key", b"data".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let stats_file = dir.path().join("stats.json");
    let mut p = start(
        &up,
        &[
            "--latency-rate",
            "1",
            "--latency-ms",
            "300",
            "--max-seconds",
            "3",
            "--stats-file",
            stats_file.to_str().unwrap(),
        ],
    );
    let t = Instant::now();
    let resp = send(&p.addr, "GET", "/bucket/key", b"");
    assert!(resp.ends_with(b"data"));
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not stop by itself"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stats_file).unwrap()).unwrap();
    assert_eq!(s["injected_latency"], 1);
    assert_eq!(s["forwarded"], 1);
}

#[test]
fn bad_flags_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_deeplake-s3-faults"))
        .args(["--upstream", "http://127.0.0.1:1", "--error-rate", "1.5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--error-rate must be within 0..1"), "{err}");
}
