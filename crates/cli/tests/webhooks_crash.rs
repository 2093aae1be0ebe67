//! Webhooks survive `kill -9`: a real server is killed in the middle of a
//! 100,000-user bulk job while an endpoint is subscribed; after a restart
//! every user's event has arrived at the receiver (verified with the
//! Standard Webhooks library), at least once, with one `webhook-id` per
//! event however often it came. On PostgreSQL two servers share the
//! database: with both alive each event arrives exactly once; when one is
//! killed mid-job, the other finishes the job and nothing is lost.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use allot_store::{Store, StoreOptions};

use common::{call, start, token, url_in, Running};

const USERS: usize = 100_000;

/// Received deliveries: (webhook-id, user) of each verified request, and
/// how many failed verification.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, String)>>>,
    unverified: Arc<Mutex<usize>>,
    secret: Arc<Mutex<Option<String>>>,
}

async fn receive(
    axum::extract::State(r): axum::extract::State<Receiver>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let secret = r.secret.lock().unwrap().clone();
    let verified = secret.is_some_and(|s| standardwebhooks::Webhook::new(&s).and_then(|w| w.verify(&body, &headers)).is_ok());
    if !verified {
        *r.unverified.lock().unwrap() += 1;
        return axum::http::StatusCode::BAD_REQUEST;
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = headers.get("webhook-id").and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    let user = v["data"]["user"].as_str().unwrap_or("").to_string();
    r.got.lock().unwrap().push((id, user));
    axum::http::StatusCode::OK
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let r = Receiver::default();
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (r, url)
    }

    fn users(&self) -> BTreeSet<String> {
        self.got.lock().unwrap().iter().map(|(_, u)| u.clone()).collect()
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

const SEALING: &str = "webhooks-crash-test-sealing-secret-0123456789";

/// `allot serve` on port 0, sending webhooks to loopback, with a short job lease.
fn serve(database: &str) -> (Running, String) {
    let (running, lines) = start(
        &["serve", "--database", database, "--listen", "127.0.0.1:0"],
        &[
            ("ALLOT_JOB_LEASE_MS", "1500"),
            ("ALLOT_JOB_RETRY_MS", "100"),
            ("ALLOT_LOG", "error"),
            ("ALLOT_WEBHOOK_SEALING_SECRET", SEALING),
            ("ALLOT_WEBHOOK_ALLOW_HTTP", "true"),
            ("ALLOT_WEBHOOK_ALLOW_PRIVATE", "true"),
        ],
        |l| l.contains("listening on"),
    );
    (running, url_in(&lines, "listening on"))
}

/// An org with a subscription of `seats` seats of `meetings`, `n` users
/// loaded straight into the database, and an endpoint on the receiver.
async fn setup(database: &str, url: &str, admin: &str, rx: &Receiver, hook: &str, n: usize) -> (String, Store) {
    use reqwest::Method;
    let client = reqwest::Client::new();
    let product = json!({ "code": "meetings", "name": "Meetings", "family": "meetings" });
    call(&client, url, admin, Method::POST, "/api/v1/products", Some(product)).await;
    let org = call(
        &client,
        url,
        admin,
        Method::POST,
        "/api/v1/orgs",
        Some(json!({ "name": "Hooks AB" })),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let items = json!([{ "product": "meetings", "quantity": n + 10 }]);
    call(
        &client,
        url,
        admin,
        Method::POST,
        &format!("/api/v1/orgs/{org}/subscriptions"),
        Some(json!({ "start_date": "2026-01-01", "end_date": "2030-01-01", "items": items })),
    )
    .await;
    let store = Store::open(
        database,
        StoreOptions {
            durable: false,
            max_connections: 4,
        },
    )
    .await
    .expect("open");
    let users: Vec<allot_store::users::User> = (0..n)
        .map(|i| allot_store::users::User::internal(format!("usr_hook{i:07}"), format!("user{i}@hooks.example")))
        .collect();
    let mut tx = store.begin().await.expect("begin");
    allot_store::users::insert_many(&mut tx, &org, &users, chrono::Utc::now())
        .await
        .expect("insert users");
    tx.commit().await.expect("commit");
    let created = call(
        &client,
        url,
        admin,
        Method::POST,
        &format!("/api/v1/orgs/{org}/webhooks"),
        Some(json!({ "url": hook, "events": ["license.assigned"] })),
    )
    .await;
    *rx.secret.lock().unwrap() = Some(created["secret"].as_str().unwrap().to_string());
    (org, store)
}

async fn start_job(url: &str, admin: &str, org: &str) -> String {
    let v = call(
        &reqwest::Client::new(),
        url,
        admin,
        reqwest::Method::POST,
        &format!("/api/v1/orgs/{org}/license-jobs"),
        Some(json!({ "filter": { "email_domain": "hooks.example" }, "add": [{ "product": "meetings" }] })),
    )
    .await;
    v["job"]["id"].as_str().unwrap().to_string()
}

/// Waits until every user's event has arrived; then checks one id per
/// user, the same on every repeat, and that every request verified.
async fn every_user_once_by_id(rx: &Receiver, n: usize, within: Duration) -> BTreeMap<String, BTreeSet<String>> {
    let deadline = Instant::now() + within;
    while rx.users().len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} users' events arrived ({} deliveries)",
            rx.users().len(),
            rx.count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stragglers of a killed batch may still come: give them a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        *rx.unverified.lock().unwrap(),
        0,
        "deliveries failed the Standard Webhooks verification"
    );
    let mut ids_of_user: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut users_of_id: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, user) in rx.got.lock().unwrap().iter() {
        ids_of_user.entry(user.clone()).or_default().insert(id.clone());
        users_of_id.entry(id.clone()).or_default().insert(user.clone());
    }
    assert_eq!(ids_of_user.len(), n);
    let expected: BTreeSet<String> = (0..n).map(|i| format!("usr_hook{i:07}")).collect();
    assert_eq!(
        ids_of_user.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "the events are the job's users'"
    );
    assert!(
        ids_of_user.values().all(|ids| ids.len() == 1),
        "a user's event arrived under two webhook-ids"
    );
    assert!(users_of_id.values().all(|u| u.len() == 1), "one webhook-id for two users");
    ids_of_user
}

/// Waits until the job has done some chunks (their events are committed;
/// few if any have been sent yet).
async fn wait_mid_job(url: &str, admin: &str, job: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = call(&client, url, admin, reqwest::Method::GET, &format!("/api/v1/jobs/{job}"), None).await;
        if j["progress"]["done"].as_i64().unwrap_or(0) > 0 {
            assert!(
                j["progress"]["done"].as_i64().unwrap() < USERS as i64,
                "the job ended before the kill; the test needs more users"
            );
            return;
        }
        assert!(Instant::now() < deadline, "the job never started: {j}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_job_ended(url: &str, admin: &str, job: &str) -> Value {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let j = call(&client, url, admin, reqwest::Method::GET, &format!("/api/v1/jobs/{job}"), None).await;
        if !matches!(j["state"].as_str(), Some("queued" | "running")) {
            return j;
        }
        assert!(Instant::now() < deadline, "the job did not end: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn killed_mid_job_loses_no_event(database: &str) {
    let admin = token(database);
    let (rx, hook) = Receiver::start().await;
    let (server, url) = serve(database);
    let (org, _store) = setup(database, &url, &admin, &rx, &hook, USERS).await;
    let job = start_job(&url, &admin, &org).await;
    wait_mid_job(&url, &admin, &job).await;
    drop(server); // SIGKILL: no shutdown code runs
    let before_restart = rx.count();
    assert!(
        before_restart < USERS,
        "every event arrived before the kill; the test needs more users"
    );
    let (_server, url) = serve(database);
    let j = wait_job_ended(&url, &admin, &job).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    every_user_once_by_id(&rx, USERS, Duration::from_secs(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_webhooks_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hooks-crash.db");
    killed_mid_job_loses_no_event(db.to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_webhooks_survive_kill_9() {
    let Some((_cluster, url)) = common::postgres_database("hookscrash") else {
        return;
    };
    killed_mid_job_loses_no_event(&url).await;
}

/// Two servers on one PostgreSQL database: a job's events each arrive
/// exactly once while both live; then one is killed in the middle of a
/// second job and the other delivers everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_the_deliveries() {
    let Some((_cluster, database)) = common::postgres_database("hookstwo") else {
        return;
    };
    let admin = token(&database);
    let (rx, hook) = Receiver::start().await;
    let (a, url_a) = serve(&database);
    let (_b, url_b) = serve(&database);
    let (org, _store) = setup(&database, &url_a, &admin, &rx, &hook, USERS).await;
    // Normal case: a job of 20,000 users (those of one email prefix range are not selectable: use a list).
    let first: Vec<String> = (0..20_000).map(|i| format!("usr_hook{i:07}")).collect();
    let v = call(
        &reqwest::Client::new(),
        &url_b,
        &admin,
        reqwest::Method::POST,
        &format!("/api/v1/orgs/{org}/license-jobs"),
        Some(json!({ "users": first, "add": [{ "product": "meetings" }] })),
    )
    .await;
    let job = v["job"]["id"].as_str().unwrap().to_string();
    assert_eq!(wait_job_ended(&url_b, &admin, &job).await["state"], "succeeded");
    every_user_once_by_id(&rx, 20_000, Duration::from_secs(300)).await;
    assert_eq!(rx.count(), 20_000, "with both servers alive, each event arrives once");
    // Then the rest, with server A killed mid-way.
    let job = start_job(&url_a, &admin, &org).await;
    wait_mid_job(&url_a, &admin, &job).await;
    drop(a);
    let j = wait_job_ended(&url_b, &admin, &job).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    every_user_once_by_id(&rx, USERS, Duration::from_secs(600)).await;
}
