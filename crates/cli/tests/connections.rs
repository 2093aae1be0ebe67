//! A crowd of idle and half-sent connections must not lock anyone out, even
//! when the process may open few files: the real binary, under `ulimit -n`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Connects within 2 s (a server that stopped accepting must fail the test,
/// not hang it).
fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let addr: std::net::SocketAddr = addr.parse().map_err(|e| std::io::Error::other(format!("{e}")))?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))
}

fn healthz(addr: &str) -> Result<String, String> {
    let mut s = connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: allot.test\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| format!("read: {e}"))?;
    Ok(answer)
}

#[test]
fn idle_sockets_do_not_lock_out_healthz_under_a_low_file_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("allot.db");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 128 && exec \"$0\" serve --database \"$1\" --listen 127.0.0.1:0")
        .arg(BIN)
        .arg(&db)
        .env("ALLOT_HEADER_TIMEOUT_MS", "60000");
    let (_server, lines) = start_command(cmd, "allot serve under ulimit -n 128", |l| l.contains("listening on"));
    let url = url_in(&lines, "listening on");
    let addr = url.trim_start_matches("http://").to_string();
    assert!(healthz(&addr).expect("healthz before").starts_with("HTTP/1.1 200"));
    // Twice the file limit in idle sockets: half send nothing, half send
    // half a request head and stop.
    let mut idle = Vec::new();
    for i in 0..256 {
        let Ok(mut s) = connect(&addr) else {
            continue;
        };
        if i % 2 == 1 {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: allot");
        }
        idle.push(s);
    }
    // The header timeout is a minute, so none of them has timed out: the
    // server must make room for newcomers by closing idle ones.
    for round in 0..5 {
        let answer =
            healthz(&addr).unwrap_or_else(|e| panic!("round {round}: /healthz did not answer with {} idle sockets open: {e}", idle.len()));
        assert!(answer.starts_with("HTTP/1.1 200"), "round {round}: {answer}");
    }
    drop(idle);
}
