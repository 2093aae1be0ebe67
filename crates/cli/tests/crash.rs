//! A bulk job survives `kill -9`: a real server is killed in the middle of a
//! job, a new one resumes it, and afterwards every pool's counter equals its
//! rows, no user holds a product twice, and every targeted user was done
//! exactly once. On SQLite and on PostgreSQL. The same for a CSV import
//! that creates users. And a job that fails on every run ends `failed` with
//! its error instead of being retried forever.

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use allot_store::{Store, StoreOptions, Val};

use common::{call, start, token, url_in, Running};

const USERS: usize = 100_000;

/// `allot serve` on port 0 with a short job lease and retry delay; returns
/// it and its URL.
fn serve(database: &str) -> (Running, String) {
    let (running, lines) = start(
        &["serve", "--database", database, "--listen", "127.0.0.1:0"],
        &[
            ("ALLOT_JOB_LEASE_MS", "1500"),
            ("ALLOT_JOB_RETRY_MS", "100"),
            ("ALLOT_LOG", "error"),
        ],
        |l| l.contains("listening on"),
    );
    (running, url_in(&lines, "listening on"))
}

/// Loads `n` users straight into the database, as an import would.
async fn load_users(store: &Store, org: &str, n: usize) {
    let users: Vec<allot_store::users::User> = (0..n)
        .map(|i| allot_store::users::User::internal(format!("usr_crash{i:07}"), format!("user{i}@crash.example")))
        .collect();
    let mut tx = store.begin().await.expect("begin");
    allot_store::users::insert_many(&mut tx, org, &users, chrono::Utc::now())
        .await
        .expect("insert users");
    tx.commit().await.expect("commit");
}

async fn one_int(store: &Store, sql: &str, args: &[Val]) -> i64 {
    let mut tx = store.begin_read().await.expect("read");
    tx.rows(sql, args).await.expect("query")[0].int("n").expect("int")
}

/// A messaging product, an org named `name` and a subscription with `seats`
/// seats of it, made through the API. Returns (org, subscription).
async fn messaging_org(client: &reqwest::Client, url: &str, admin: &str, name: &str, seats: i64) -> (String, String) {
    use reqwest::Method;
    let product = json!({ "code": "messaging", "name": "Messaging", "family": "messaging" });
    call(client, url, admin, Method::POST, "/api/v1/products", Some(product)).await;
    let org = call(client, url, admin, Method::POST, "/api/v1/orgs", Some(json!({ "name": name }))).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let items = json!([{ "product": "messaging", "quantity": seats }]);
    let subscription = json!({ "start_date": "2026-01-01", "end_date": "2030-01-01", "items": items });
    let sub = call(
        client,
        url,
        admin,
        Method::POST,
        &format!("/api/v1/orgs/{org}/subscriptions"),
        Some(subscription),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    (org, sub)
}

/// Waits until a job has done some chunks, kills its server with `kill -9`
/// (SIGKILL: no shutdown code runs), checks that the job was left running
/// half-way, starts a new server and waits until it has resumed and ended
/// the job. Returns the job's last view.
async fn kill_mid_job_and_resume(database: &str, store: &Store, admin: &str, server: (Running, String), job: &str, total: usize) -> Value {
    use reqwest::Method;
    let client = reqwest::Client::new();
    let (server, url) = server;
    let deadline = Instant::now() + Duration::from_secs(120);
    let done_before = loop {
        let j = call(&client, &url, admin, Method::GET, &format!("/api/v1/jobs/{job}"), None).await;
        let done = j["progress"]["done"].as_i64().unwrap();
        if done > 0 {
            break done;
        }
        assert!(Instant::now() < deadline, "the job never started: {j}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    drop(server);
    let progress = one_int(store, "SELECT done AS n FROM jobs WHERE id = $1", &[Val::from(job)]).await;
    assert!(
        progress < total as i64,
        "the job finished before the kill ({done_before} then {progress}); the crash test needs more users"
    );
    let state: String = {
        let mut tx = store.begin_read().await.unwrap();
        tx.rows("SELECT state FROM jobs WHERE id = $1", &[Val::from(job)]).await.unwrap()[0]
            .text("state")
            .unwrap()
    };
    assert_eq!(state, "running", "killed mid-way");
    // A new server resumes it once the dead one's lease runs out.
    let (_server, url) = serve(database);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let j = call(&client, &url, admin, Method::GET, &format!("/api/v1/jobs/{job}"), None).await;
        if !matches!(j["state"].as_str(), Some("queued" | "running")) {
            return j;
        }
        assert!(Instant::now() < deadline, "the job was not resumed: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn killed_mid_job_resumes(database: &str) {
    let admin = token(database);
    let (server, url) = serve(database);
    let client = reqwest::Client::new();
    use reqwest::Method;
    let (org, sub) = messaging_org(&client, &url, &admin, "Crash AB", USERS as i64 + 10).await;
    let store = Store::open(
        database,
        StoreOptions {
            durable: false,
            max_connections: 4,
        },
    )
    .await
    .expect("open");
    load_users(&store, &org, USERS).await;

    let job = call(
        &client,
        &url,
        &admin,
        Method::POST,
        &format!("/api/v1/orgs/{org}/license-jobs"),
        Some(json!({ "filter": { "email_domain": "crash.example" }, "add": [{ "product": "messaging" }] })),
    )
    .await["job"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let finished = kill_mid_job_and_resume(database, &store, &admin, (server, url), &job, USERS).await;
    assert_eq!(finished["state"], "succeeded", "{finished}");
    assert_eq!(
        finished["progress"],
        json!({ "done": USERS, "total": USERS, "succeeded": USERS, "failed": 0 })
    );

    // Invariants.
    let mut tx = store.begin_read().await.unwrap();
    let mismatches = allot_store::subscriptions::counter_mismatches(&mut tx).await.unwrap();
    assert!(mismatches.is_empty(), "counters differ from rows: {mismatches:?}");
    drop(tx);
    let org_v = Val::from(&org);
    let seats = one_int(
        &store,
        "SELECT COUNT(*) AS n FROM assignments WHERE org_id = $1",
        std::slice::from_ref(&org_v),
    )
    .await;
    let holders = one_int(
        &store,
        "SELECT COUNT(DISTINCT user_id) AS n FROM assignments WHERE org_id = $1",
        std::slice::from_ref(&org_v),
    )
    .await;
    assert_eq!((seats, holders), (USERS as i64, USERS as i64), "every user holds exactly one seat");
    let consumed = one_int(
        &store,
        "SELECT consumed AS n FROM subscription_items WHERE org_id = $1 AND subscription_id = $2",
        &[org_v.clone(), Val::from(&sub)],
    )
    .await;
    assert_eq!(consumed, USERS as i64);
    // Exactly once: one audit event per user for this job, no user twice.
    let request = Val::Text(format!("job:{job}"));
    let events = one_int(
        &store,
        "SELECT COUNT(*) AS n FROM audit_events WHERE org_id = $1 AND request_id = $2 AND action = 'license.change'",
        &[org_v.clone(), request.clone()],
    )
    .await;
    let targets = one_int(
        &store,
        "SELECT COUNT(DISTINCT target) AS n FROM audit_events WHERE org_id = $1 AND request_id = $2 AND action = 'license.change'",
        &[org_v.clone(), request],
    )
    .await;
    assert_eq!((events, targets), (USERS as i64, USERS as i64), "every user processed exactly once");
    let unfinished = one_int(
        &store,
        "SELECT COUNT(*) AS n FROM job_chunks WHERE org_id = $1 AND done = FALSE",
        std::slice::from_ref(&org_v),
    )
    .await;
    assert_eq!(unfinished, 0);
    store.close().await;
}

/// Rows of the import crash test: each creates a user and gives it a seat.
const IMPORT_ROWS: usize = 40_000;

/// A CSV import killed half-way: the resumed job creates every user and
/// gives every seat exactly once.
async fn killed_mid_import_resumes(database: &str) {
    let admin = token(database);
    let server = serve(database);
    let client = reqwest::Client::new();
    let (org, sub) = messaging_org(&client, &server.1, &admin, "Import Crash AB", IMPORT_ROWS as i64).await;
    let store = Store::open(
        database,
        StoreOptions {
            durable: false,
            max_connections: 4,
        },
    )
    .await
    .expect("open");
    let mut file = format!("email,messaging [{sub}]\n");
    for i in 0..IMPORT_ROWS {
        file.push_str(&format!("new{i}@import.example,TRUE\n"));
    }
    let resp = client
        .post(format!("{}/api/v1/orgs/{org}/imports?mode=add_only", server.1))
        .bearer_auth(&admin)
        .header("content-type", "text/csv")
        .body(file)
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status().as_u16(), 202);
    let job = resp.json::<Value>().await.unwrap()["job"]["id"].as_str().unwrap().to_string();
    let finished = kill_mid_job_and_resume(database, &store, &admin, server, &job, IMPORT_ROWS).await;
    assert_eq!(finished["state"], "succeeded", "{finished}");
    assert_eq!(
        finished["progress"],
        json!({ "done": IMPORT_ROWS, "total": IMPORT_ROWS, "succeeded": IMPORT_ROWS, "failed": 0 })
    );
    let org_v = Val::from(&org);
    let n = IMPORT_ROWS as i64;
    let users = one_int(
        &store,
        "SELECT COUNT(*) AS n FROM users WHERE org_id = $1",
        std::slice::from_ref(&org_v),
    )
    .await;
    let seats = one_int(
        &store,
        "SELECT COUNT(*) AS n FROM assignments WHERE org_id = $1",
        std::slice::from_ref(&org_v),
    )
    .await;
    assert_eq!((users, seats), (n, n), "every row created its user and seat once");
    let request = Val::Text(format!("job:{job}"));
    for action in ["user.create", "license.change"] {
        let events = one_int(
            &store,
            "SELECT COUNT(*) AS n FROM audit_events WHERE org_id = $1 AND request_id = $2 AND action = $3",
            &[org_v.clone(), request.clone(), Val::from(action)],
        )
        .await;
        assert_eq!(events, n, "{action} once per row");
    }
    let mut tx = store.begin_read().await.unwrap();
    assert!(allot_store::subscriptions::counter_mismatches(&mut tx).await.unwrap().is_empty());
    drop(tx);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_import_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("import-crash.db");
    killed_mid_import_resumes(db.to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_import_survives_kill_9() {
    let Some((_cluster, url)) = common::postgres_database("importcrash") else {
        return;
    };
    killed_mid_import_resumes(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_job_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    killed_mid_job_resumes(db.to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_job_survives_kill_9() {
    let Some((_cluster, url)) = common::postgres_database("crash") else {
        return;
    };
    killed_mid_job_resumes(&url).await;
}

/// A job whose chunk cannot be read (a damaged row) fails on every run: the
/// worker retries it a few times, then ends it `failed` with the error, and
/// the server goes on serving other jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_failing_ends_failed() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("failing.db");
    let database = db.to_str().unwrap();
    let admin = token(database);
    let (_server, url) = serve(database);
    let client = reqwest::Client::new();
    let (org, _sub) = messaging_org(&client, &url, &admin, "Failing AB", 10).await;
    let store = Store::open(
        database,
        StoreOptions {
            durable: true,
            max_connections: 2,
        },
    )
    .await
    .expect("store");
    load_users(&store, &org, 4).await;
    let users: Vec<String> = (0..4).map(|i| format!("usr_crash{i:07}")).collect();
    let wait_for = |id: String| {
        let (client, url, admin) = (client.clone(), url.clone(), admin.clone());
        async move {
            let started = Instant::now();
            loop {
                let j = call(&client, &url, &admin, Method::GET, &format!("/api/v1/jobs/{id}"), None).await;
                if !matches!(j["state"].as_str(), Some("queued" | "running")) {
                    return j;
                }
                assert!(started.elapsed() < Duration::from_secs(60), "the job never ended: {j}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // A healthy job first, to copy its stored request.
    let good = call(
        &client,
        &url,
        &admin,
        Method::POST,
        &format!("/api/v1/orgs/{org}/license-jobs"),
        Some(json!({ "users": users[..2], "add": [{ "product": "messaging" }] })),
    )
    .await["job"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(wait_for(good.clone()).await["state"], "succeeded");
    // The same job again under a new id, with its one chunk damaged.
    let bad = format!("{good}x");
    {
        let mut tx = store.begin().await.expect("begin");
        tx.exec(
            "INSERT INTO jobs (org_id, id, kind, state, request, created_by, created_at, resolved, chunks, total, done, succeeded, failed, cancel_requested, lease_until) \
             SELECT org_id, $2, kind, 'queued', request, created_by, created_at, TRUE, 1, 2, 0, 0, 0, FALSE, 0 FROM jobs WHERE id = $1",
            &[Val::from(good.as_str()), Val::from(bad.as_str())],
        )
        .await
        .expect("copy the job");
        tx.exec(
            "INSERT INTO job_chunks (org_id, job_id, seq, users, done) VALUES ($1, $2, 0, 'not a list of users', FALSE)",
            &[Val::from(org.as_str()), Val::from(bad.as_str())],
        )
        .await
        .expect("damaged chunk");
        tx.commit().await.expect("commit");
    }
    let j = wait_for(bad.clone()).await;
    assert_eq!(j["state"], "failed", "{j}");
    let text = j.to_string();
    assert!(text.contains("failed 5 times in a row"), "the error says why: {j}");
    // Nothing of it was applied, and the server still runs jobs.
    assert_eq!(one_int(&store, "SELECT COUNT(*) AS n FROM assignments", &[]).await, 2);
    let after = call(
        &client,
        &url,
        &admin,
        Method::POST,
        &format!("/api/v1/orgs/{org}/license-jobs"),
        Some(json!({ "users": users[2..], "add": [{ "product": "messaging" }] })),
    )
    .await["job"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(wait_for(after).await["state"], "succeeded");
    assert_eq!(one_int(&store, "SELECT COUNT(*) AS n FROM assignments", &[]).await, 4);
    store.close().await;
}
