//! Clients that hang up at any moment must never stop anyone else's writes.
//!
//! Raw TCP clients send writes (licence changes, user creations, a bogus
//! token with an `Idempotency-Key`) and close their socket at random
//! moments: before the body is complete, right after sending, or a few
//! hundred microseconds to a few milliseconds later, which is when a
//! request's future is dropped inside the writer's transaction boundaries.
//! Between bursts a real client writes, and every real write must succeed.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::both_backends;
use crate::kit::*;

/// Opens a connection, sends `request` (or its first half), waits `delay`
/// and closes the socket without reading the answer.
async fn hang_up(addr: String, request: Vec<u8>, half: bool, delay: Duration) {
    let Ok(mut socket) = tokio::net::TcpStream::connect(&addr).await else {
        return;
    };
    let n = if half { request.len() / 2 } else { request.len() };
    if socket.write_all(&request[..n]).await.is_err() {
        return;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // Dropping the stream closes it; with SO_LINGER 0 it is a reset, the
    // harshest hang-up.
    if half {
        let _ = socket.set_zero_linger();
    }
    drop(socket);
}

fn http_post(path: &str, token: &str, idempotency_key: Option<&str>, body: &serde_json::Value) -> Vec<u8> {
    let body = body.to_string();
    let key = idempotency_key.map(|k| format!("Idempotency-Key: {k}\r\n")).unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: allot.test\r\nAuthorization: Bearer {token}\r\n{key}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn hanging_up_clients_never_stop_writes(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let victims = many_users(&app, &w.org, "hang", "hang.example", 24, None).await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut rng = StdRng::seed_from_u64(0x4a11 + backend as u64);
    let started = Instant::now();
    let mut real_writes = 0usize;
    let mut hangups = 0usize;
    let mut round = 0usize;
    // Keyed user creations whose client hung up: (key, email).
    let mut keyed = Vec::new();
    // Bounded by rounds and by time: at most 40 s per backend, and 15 s for
    // sending the abandoned requests again below.
    while round < 300 && started.elapsed() < Duration::from_secs(40) {
        round += 1;
        let mut burst = Vec::new();
        for k in 0..8 {
            let victim = &victims[rng.gen_range(0..victims.len())];
            let request = match rng.gen_range(0..4) {
                0 => http_post(
                    "/api/v1/orgs",
                    "not-a-token",
                    Some(&format!("bogus-{round}-{k}")),
                    &json!({ "name": "Never created" }),
                ),
                1 => {
                    let (key, email) = (format!("key-{round}-{k}"), format!("gone{round}x{k}@hang.example"));
                    let request = http_post(
                        &format!("/api/v1/orgs/{}/users", w.org),
                        &app.admin,
                        Some(&key),
                        &json!({ "email": email }),
                    );
                    keyed.push((key, email));
                    request
                }
                2 => http_post(
                    &format!("/api/v1/orgs/{}/users/{victim}/licenses", w.org),
                    &app.admin,
                    None,
                    &json!({ "add": [{ "product": "meetings" }] }),
                ),
                _ => http_post(
                    &format!("/api/v1/orgs/{}/users/{victim}/licenses", w.org),
                    &app.admin,
                    None,
                    &json!({ "remove": [{ "product": "meetings" }] }),
                ),
            };
            let half = rng.gen_range(0..10) == 0;
            let delay = match rng.gen_range(0..4) {
                0 => Duration::ZERO,
                1 => Duration::from_micros(rng.gen_range(0..300)),
                2 => Duration::from_micros(rng.gen_range(300..3_000)),
                _ => Duration::from_micros(rng.gen_range(3_000..8_000)),
            };
            burst.push(tokio::spawn(hang_up(addr.clone(), request, half, delay)));
            hangups += 1;
        }
        // A real write while the burst is in flight: it must succeed.
        let email = format!("real{round}@hang.example");
        let created = tokio::time::timeout(
            Duration::from_secs(20),
            app.post(&format!("/api/v1/orgs/{}/users", w.org), &app.admin, json!({ "email": email })),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: a real write did not answer within 20 s"));
        assert_eq!(
            created.status.as_u16(),
            201,
            "round {round}: a real write failed after {hangups} hang-ups: {}",
            created.body
        );
        real_writes += 1;
        for h in burst {
            let _ = h.await;
        }
    }
    assert!(real_writes >= 50, "only {real_writes} rounds ran");

    // Once the dust settles: writes still work, the server says it can
    // write, every seat counter equals its rows, and no bogus request left a
    // row behind.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = app
        .post(
            &format!("/api/v1/orgs/{}/users/{}/licenses", w.org, victims[0]),
            &app.admin,
            json!({ "add": [{ "product": "messaging" }] }),
        )
        .await;
    assert!(after.status.is_success() || after.code() == "already_assigned", "{}", after.body);
    // Every keyed request whose client hung up can be sent again with its
    // key: it is replayed or runs now, but a request carried out whose key
    // was freed anyway would run twice and find its email taken.
    // One deadline for them all keeps the test within a minute per backend.
    let deadline = Instant::now() + Duration::from_secs(15);
    for (key, email) in &keyed {
        loop {
            let again = app
                .client
                .post(format!("{}/api/v1/orgs/{}/users", app.url, w.org))
                .bearer_auth(&app.admin)
                .header("idempotency-key", key)
                .json(&json!({ "email": email }))
                .send()
                .await
                .expect("send");
            let status = again.status().as_u16();
            let body = again.text().await.unwrap_or_default();
            // A first run still finishing says so for a moment.
            if status == 409 && body.contains("idempotency_key_in_progress") && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            assert_eq!(status, 201, "{key} sent again: {body}");
            break;
        }
    }
    let ready = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status.as_u16(), 200, "{}", ready.body);
    assert_eq!(app.mismatches().await, 0, "a seat counter disagrees with its rows");
    assert_eq!(app.duplicate_holdings().await, 0);
    let orgs = app.get("/api/v1/orgs?limit=1000", &app.admin).await.ok();
    let names: Vec<&str> = orgs["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert!(!names.contains(&"Never created"), "an unauthenticated request created an org");
    let real_rows = {
        let mut tx = app.store.begin_read().await.expect("read");
        let rows = tx
            .rows("SELECT COUNT(*) AS n FROM users WHERE email LIKE 'real%'", &[])
            .await
            .expect("count");
        rows[0].int("n").expect("count") as usize
    };
    assert_eq!(real_rows, real_writes, "every real write is stored once");
}

/// A writer held by a unit that never finishes makes `/readyz` say so while
/// `/healthz` stays up; once released, `/readyz` is ready again.
async fn readiness_reports_a_writer_that_cannot_write(backend: Backend) {
    let app = spawn(backend).await;
    let ready = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status.as_u16(), 200, "{}", ready.body);
    assert_eq!(ready.body["status"], "ready");
    // Hold the write lock from another connection to the same database.
    let holder = match backend {
        Backend::Sqlite => {
            let mut tx = app.store.begin().await.expect("begin");
            tx.exec("UPDATE products SET name = name", &[]).await.expect("write");
            Some(tx)
        }
        Backend::Postgres => None,
    };
    if let Some(tx) = holder {
        let not_ready = app.call(reqwest::Method::GET, "/readyz", None, None).await;
        assert_eq!(not_ready.status.as_u16(), 503, "{}", not_ready.body);
        assert_eq!(not_ready.code(), "unavailable");
        let live = app.call(reqwest::Method::GET, "/healthz", None, None).await;
        assert_eq!(live.status.as_u16(), 200);
        tx.rollback().await.expect("rollback");
        let again = app.call(reqwest::Method::GET, "/readyz", None, None).await;
        assert_eq!(again.status.as_u16(), 200, "{}", again.body);
    }
}

both_backends!(hanging_up_clients_never_stop_writes, readiness_reports_a_writer_that_cannot_write);
