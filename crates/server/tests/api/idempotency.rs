//! `Idempotency-Key`: nothing is stored for a caller without a live token,
//! big bodies pass, an abandoned request finishes for its retry, a dead
//! server's reservation is taken over, stored answers expire and
//! are purged, and an answer too large to keep is never run twice.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::both_backends;
use crate::kit::*;

both_backends!(
    unauthenticated_keys_write_nothing,
    big_bodies_with_a_key_are_taken,
    an_abandoned_request_finishes_and_its_retry_gets_the_answer,
    stored_answers_expire_and_are_purged,
    answers_too_large_to_keep_are_not_run_twice,
);

async fn key_rows(app: &TestApp) -> i64 {
    let mut tx = app.store.begin_read().await.expect("read");
    tx.rows("SELECT COUNT(*) AS n FROM idempotency_keys", &[]).await.expect("count")[0]
        .int("n")
        .expect("count")
}

async fn keyed(app: &TestApp, path: &str, token: Option<&str>, key: &str, body: serde_json::Value) -> reqwest::Response {
    let mut req = app
        .client
        .post(format!("{}{path}", app.url))
        .header("idempotency-key", key)
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request")
}

async fn unauthenticated_keys_write_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let before = app.snapshot().await;
    for i in 0..40 {
        let bogus = keyed(
            &app,
            "/api/v1/orgs",
            Some(&format!("bogus-{i}")),
            &format!("k{i}"),
            json!({ "name": "X" }),
        )
        .await;
        assert_eq!(bogus.status().as_u16(), 401);
        let none = keyed(&app, "/api/v1/orgs", None, &format!("k{i}"), json!({ "name": "X" })).await;
        assert_eq!(none.status().as_u16(), 401);
    }
    assert_eq!(key_rows(&app).await, 0, "an unauthenticated request stored a key");
    assert_eq!(app.snapshot().await, before);
}

async fn big_bodies_with_a_key_are_taken(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let users = many_users(&app, &w.org, "big", "big.example", 3, None).await;
    // 2 MiB of JSON: a licence job (its route takes up to 64 MiB); the
    // padding is whitespace, which JSON allows.
    let mut body = json!({ "users": users, "add": [{ "product": "meetings" }] }).to_string();
    body.push_str(&" ".repeat(2 * 1024 * 1024));
    let send = || {
        app.client
            .post(format!("{}/api/v1/orgs/{}/license-jobs", app.url, w.org))
            .bearer_auth(&app.admin)
            .header("idempotency-key", "big-job")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
    };
    let first = send().await.expect("send");
    assert_eq!(first.status().as_u16(), 202);
    let first: serde_json::Value = first.json().await.expect("json");
    let again = send().await.expect("send");
    assert_eq!(again.status().as_u16(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: serde_json::Value = again.json().await.expect("json");
    assert_eq!(first["job"]["id"], again["job"]["id"], "the same job, not a second one");
    // A CSV import over 1 MiB with a key (a dry run).
    let mut csv = String::from("email,display_name\n");
    let mut i = 0;
    while csv.len() < 1_300_000 {
        csv.push_str(&format!("person{i}@big.example,Person number {i} of the big import\n"));
        i += 1;
    }
    let import = app
        .client
        .post(format!("{}/api/v1/orgs/{}/imports?mode=add_only&dry_run=true", app.url, w.org))
        .bearer_auth(&app.admin)
        .header("idempotency-key", "big-import")
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("send");
    assert!(import.status().is_success(), "{}", import.status());
    // A body over the route's own limit is still refused.
    let huge = app
        .client
        .post(format!("{}/api/v1/orgs", app.url))
        .bearer_auth(&app.admin)
        .header("idempotency-key", "huge")
        .header("content-type", "application/json")
        .body(format!("{{\"name\": \"x\"}}{}", " ".repeat(2 * 1024 * 1024)))
        .send()
        .await
        .expect("send");
    assert_eq!(huge.status().as_u16(), 413);
}

/// Sends a keyed import whose handler takes a while and hangs up once the key
/// is reserved: the request still finishes (it may have written already, so
/// it must neither stop half-way nor run twice), and a retry with the same
/// key gets its answer (not 409 for ever, not a second job).
async fn an_abandoned_request_finishes_and_its_retry_gets_the_answer(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let mut csv = String::from("email,display_name\n");
    for i in 0..40_000 {
        csv.push_str(&format!("slow{i}@slow.example,Slow {i}\n"));
    }
    let path = format!("/api/v1/orgs/{}/imports?mode=add_only&dry_run=true", w.org);
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: allot.test\r\nAuthorization: Bearer {}\r\nIdempotency-Key: slow\r\nContent-Type: text/csv\r\nContent-Length: {}\r\n\r\n{csv}",
        app.admin,
        csv.len()
    );
    let mut socket = tokio::net::TcpStream::connect(app.url.trim_start_matches("http://"))
        .await
        .expect("connect");
    socket.write_all(request.as_bytes()).await.expect("send");
    // Wait until the key is reserved (its answer not yet stored), then hang up.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut tx = app.store.begin_read().await.expect("read");
        let reserved = tx
            .rows(
                "SELECT COUNT(*) AS n FROM idempotency_keys WHERE idem_key = 'slow' AND status IS NULL",
                &[],
            )
            .await
            .expect("count")[0]
            .int("n")
            .expect("count");
        if reserved == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the key was never reserved");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(socket);
    // The retry says 409 while the first run finishes, then replays it.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let retry = app
            .client
            .post(format!("{}{path}", app.url))
            .bearer_auth(&app.admin)
            .header("idempotency-key", "slow")
            .header("content-type", "text/csv")
            .body(csv.clone())
            .send()
            .await
            .expect("send");
        if retry.status().as_u16() != 409 {
            assert_eq!(retry.status().as_u16(), 202, "{}", retry.status());
            assert_eq!(retry.headers()["idempotent-replayed"], "true", "the first run's answer");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the abandoned key stayed reserved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A reservation left by a server that died is taken over after its lease.
    let mut tx = app.store.begin().await.expect("begin");
    let token_id = {
        let r = tx
            .rows("SELECT id FROM api_tokens ORDER BY created_at LIMIT 1", &[])
            .await
            .expect("token");
        r[0].text("id").expect("id")
    };
    let long_ago = allot_store::ts(today() - chrono::Duration::minutes(11));
    tx.exec(
        "INSERT INTO idempotency_keys (token_id, idem_key, request_hash, status, body, created_at) VALUES ($1, 'dead', 'x', NULL, NULL, $2)",
        allot_store::args![token_id, long_ago],
    )
    .await
    .expect("insert");
    tx.commit().await.expect("commit");
    let taken = keyed(&app, "/api/v1/orgs", Some(&app.admin), "dead", json!({ "name": "After a crash" })).await;
    assert_eq!(taken.status().as_u16(), 201, "a reservation past its lease is taken over");
}

async fn stored_answers_expire_and_are_purged(backend: Backend) {
    let app = spawn(backend).await;
    let first = keyed(&app, "/api/v1/orgs", Some(&app.admin), "daily", json!({ "name": "Day one" })).await;
    assert_eq!(first.status().as_u16(), 201);
    let first: serde_json::Value = first.json().await.expect("json");
    let replay = keyed(&app, "/api/v1/orgs", Some(&app.admin), "daily", json!({ "name": "Day one" })).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    // A day and a minute later the key is free again: the same request runs.
    app.clock.set(today() + chrono::Duration::hours(24) + chrono::Duration::minutes(1));
    let later = keyed(&app, "/api/v1/orgs", Some(&app.admin), "daily", json!({ "name": "Day one" })).await;
    assert_eq!(later.status().as_u16(), 201);
    assert!(later.headers().get("idempotent-replayed").is_none());
    let later: serde_json::Value = later.json().await.expect("json");
    assert_ne!(first["id"], later["id"]);
    // The purge removes keys past their time to live.
    app.clock.set(today() + chrono::Duration::hours(49));
    let st = allot_server::AppState::new(app.store.clone(), app.clock.clone(), allot_server::Config::default());
    let purged = allot_server::app::retention::purge_idempotency_keys(&st).await.expect("purge");
    assert_eq!(purged, 1);
    assert_eq!(key_rows(&app).await, 0);
}

async fn answers_too_large_to_keep_are_not_run_twice(backend: Backend) {
    let limits = allot_server::Limits {
        max_replay_bytes: 64,
        ..Default::default()
    };
    let app = spawn_with_limits(backend, limits).await;
    let body = json!({ "name": "An organisation whose answer is longer than sixty-four bytes" });
    let first = keyed(&app, "/api/v1/orgs", Some(&app.admin), "large", body.clone()).await;
    assert_eq!(first.status().as_u16(), 201);
    let first: serde_json::Value = first.json().await.expect("the whole answer reaches the caller");
    assert_eq!(first["name"], body["name"]);
    let again = keyed(&app, "/api/v1/orgs", Some(&app.admin), "large", body.clone()).await;
    assert_eq!(again.status().as_u16(), 409);
    let again: serde_json::Value = again.json().await.expect("json");
    assert_eq!(again["code"], "conflict");
    assert!(again["detail"].as_str().unwrap_or("").contains("too large to keep"), "{again}");
    let orgs = app.call(Method::GET, "/api/v1/orgs", Some(&app.admin), None).await.ok();
    assert_eq!(orgs["items"].as_array().expect("items").len(), 1, "the request ran once");
}
