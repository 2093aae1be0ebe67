//! Connection timeouts: a request head that never completes, a keep-alive
//! connection left idle, and a body that stops arriving are all ended.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::kit::*;

fn limits() -> allot_server::Limits {
    allot_server::Limits {
        connections: allot_server::serve::ConnectionLimits {
            max_connections: 64,
            header_timeout: Duration::from_millis(600),
            body_timeout: Duration::from_millis(600),
        },
        ..Default::default()
    }
}

/// Reads until the server closes the socket; returns what it sent and how
/// long it took. Fails the test if the server keeps it open for 5 s.
async fn read_until_closed(socket: &mut tokio::net::TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "the server kept the connection open: {}",
        String::from_utf8_lossy(&got)
    );
    (String::from_utf8_lossy(&got).into_owned(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_heads_idle_connections_and_stalled_bodies_are_ended() {
    let app = spawn_with_limits(Backend::Sqlite, limits()).await;
    let addr = app.url.trim_start_matches("http://").to_string();

    // Half a request head, then nothing.
    let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: al").await.expect("write");
    let (_, took) = read_until_closed(&mut s).await;
    assert!(took >= Duration::from_millis(400), "closed too early: {took:?}");

    // A keep-alive connection that served a request, then idles.
    let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: allot.test\r\n\r\n")
        .await
        .expect("write");
    let (answer, _) = read_until_closed(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A body that stops after 10 of its 100 bytes: answered as unreadable.
    let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST /api/v1/orgs HTTP/1.1\r\nHost: allot.test\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\": \"",
        app.admin
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let (answer, _) = read_until_closed(&mut s).await;
    assert!(
        answer.starts_with("HTTP/1.1 4"),
        "a stalled body gets a refusal, not a hang: {answer}"
    );
    let orgs = app.get("/api/v1/orgs", &app.admin).await.ok();
    assert_eq!(orgs["items"].as_array().expect("items").len(), 0, "nothing was created");
}
