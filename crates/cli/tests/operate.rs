//! Operating the binary: start-up errors that name their cause, the
//! catalogue applied from a file, and a graceful stop on SIGTERM (requests
//! in flight finish, job leases are given back so another server resumes at
//! once, SQLite's log is checkpointed, the exit code is 0).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use allot_store::{Store, StoreOptions, Val};

use common::{call, start, token, url_in, Running, BIN};

fn run(args: &[&str]) -> (bool, String, String, Duration) {
    let started = Instant::now();
    let out = Command::new(BIN).args(args).env("ALLOT_LOG", "error").output().expect("run allot");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
        started.elapsed(),
    )
}

#[test]
fn start_up_errors_name_their_cause() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("allot.db");
    let (ok, _, err, _) = run(&["migrate", "--database", missing.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("does not exist") && err.contains("no-such-dir"), "{err}");
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"this is not a database, just some text that is long enough to be read").unwrap();
    let (ok, _, err, _) = run(&["migrate", "--database", junk.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("is not a SQLite database"), "{err}");
    let (ok, _, err, _) = run(&["migrate", "--database", dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("is a directory"), "{err}");
    // A PostgreSQL nobody listens for: named, within seconds.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://allot@127.0.0.1:{port}/allot");
    let (ok, _, err, took) = run(&["migrate", "--database", &url]);
    assert!(!ok);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("cannot be reached"),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // Flags out of range are refused before anything starts.
    let (ok, _, err, _) = run(&["serve", "--database", junk.to_str().unwrap(), "--rate-limit", "0"]);
    assert!(!ok);
    assert!(err.contains("--rate-limit"), "{err}");
}

#[test]
fn the_catalogue_is_applied_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("allot.db");
    let db = db.to_str().unwrap();
    let file = dir.path().join("catalogue.json");
    let doc = json!({ "products": [
        { "code": "calling-professional", "name": "Calling Professional", "family": "calling",
          "rules": { "requires": ["ucm-registration"] } },
        { "code": "ucm-registration", "name": "UCM Registration", "family": "ucm" }
    ]});
    std::fs::write(&file, doc.to_string()).unwrap();
    let f = file.to_str().unwrap();
    let (ok, out, err, _) = run(&["catalogue", "apply", "--database", db, f, "--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.contains("would be created: calling-professional, ucm-registration"), "{out}");
    let (ok, out, err, _) = run(&["catalogue", "apply", "--database", db, f]);
    assert!(ok, "{err}");
    assert!(out.contains("created: calling-professional, ucm-registration"), "{out}");
    let (ok, out, _, _) = run(&["catalogue", "apply", "--database", db, f, "--dry-run"]);
    assert!(ok);
    assert!(out.contains("left alone: calling-professional, ucm-registration"), "{out}");
    // A broken document: refused with the field, nothing applied.
    std::fs::write(
        &file,
        json!({ "products": [{ "code": "x", "name": "", "family": "x" }] }).to_string(),
    )
    .unwrap();
    let (ok, _, err, _) = run(&["catalogue", "apply", "--database", db, f]);
    assert!(!ok);
    assert!(err.contains("products[0].name"), "{err}");
    std::fs::write(&file, b"{ not json").unwrap();
    let (ok, _, err, _) = run(&["catalogue", "apply", "--database", db, f]);
    assert!(!ok);
    assert!(err.contains("is not a catalogue document"), "{err}");
}

/// `allot serve` on port 0 with the default 30 s job lease.
fn serve(database: &str) -> (Running, String) {
    let (running, lines) = start(
        &[
            "serve",
            "--database",
            database,
            "--listen",
            "127.0.0.1:0",
            "--shutdown-grace-secs",
            "20",
        ],
        &[("ALLOT_LOG", "error")],
        |l| l.contains("listening on"),
    );
    (running, url_in(&lines, "listening on"))
}

const USERS: usize = 60_000;

/// An org with `USERS` users (loaded straight into the database) and a
/// subscription with a seat for each; returns the org.
async fn big_org(client: &reqwest::Client, url: &str, admin: &str, store: &Store) -> String {
    use reqwest::Method;
    let product = json!({ "code": "messaging", "name": "Messaging", "family": "messaging" });
    call(client, url, admin, Method::POST, "/api/v1/products", Some(product)).await;
    let org = call(client, url, admin, Method::POST, "/api/v1/orgs", Some(json!({ "name": "Stop AB" }))).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let items = json!([{ "product": "messaging", "quantity": USERS }]);
    let subscription = json!({ "start_date": "2026-01-01", "end_date": "2030-01-01", "items": items });
    call(
        client,
        url,
        admin,
        Method::POST,
        &format!("/api/v1/orgs/{org}/subscriptions"),
        Some(subscription),
    )
    .await;
    let users: Vec<allot_store::users::User> = (0..USERS)
        .map(|i| allot_store::users::User::internal(format!("usr_stop{i:07}"), format!("user{i}@stop.example")))
        .collect();
    let mut tx = store.begin().await.expect("begin");
    allot_store::users::insert_many(&mut tx, &org, &users, chrono::Utc::now())
        .await
        .expect("insert users");
    tx.commit().await.expect("commit");
    org
}

fn sigterm(server: &Running) {
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits for the process to exit; its exit status.
fn wait_exit(mut server: Running, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = server.0.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the server did not stop within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn job_progress(store: &Store, job: &str) -> (String, i64, i64) {
    let mut tx = store.begin_read().await.expect("read");
    let r = tx
        .rows("SELECT state, done, lease_until FROM jobs WHERE id = $1", &[Val::from(job)])
        .await
        .expect("job");
    (
        r[0].text("state").unwrap(),
        r[0].int("done").unwrap(),
        r[0].int("lease_until").unwrap(),
    )
}

/// SIGTERM mid-job: the answer being streamed completes, the process exits
/// 0, the job's lease is given back (not left for 30 s), another server
/// resumes the job at once, and SQLite's log is checkpointed.
async fn stops_gracefully(database: &str, second_server_running_first: bool) {
    let admin = token(database);
    let store = Store::open(
        database,
        StoreOptions {
            durable: false,
            max_connections: 4,
        },
    )
    .await
    .expect("open");
    let (first, url) = serve(database);
    let client = reqwest::Client::new();
    let org = big_org(&client, &url, &admin, &store).await;
    // A download in flight: the users file, read slowly.
    let mut download = client
        .get(format!("{url}/api/v1/orgs/{org}/users.csv"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("export");
    assert_eq!(download.status().as_u16(), 200);
    let first_part = download.chunk().await.expect("chunk").expect("some bytes");
    let job = call(
        &client,
        &url,
        &admin,
        reqwest::Method::POST,
        &format!("/api/v1/orgs/{org}/license-jobs"),
        Some(json!({ "filter": { "email_domain": "stop.example" }, "add": [{ "product": "messaging" }] })),
    )
    .await["job"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Let it start on the first server.
    let deadline = Instant::now() + Duration::from_secs(60);
    while job_progress(&store, &job).await.1 == 0 {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // On PostgreSQL, a second server shares the database, its worker idle.
    let second = second_server_running_first.then(|| serve(database));
    sigterm(&first);
    // The download still completes: every user's line, nothing cut off.
    let mut text = String::from_utf8(first_part.to_vec()).unwrap();
    while let Some(part) = download.chunk().await.expect("the download finishes after SIGTERM") {
        text.push_str(std::str::from_utf8(&part).unwrap());
    }
    assert_eq!(text.lines().count(), USERS + 1, "header and every user");
    let status = wait_exit(first, Duration::from_secs(30));
    assert!(status.success(), "exit {status:?}");
    let stopped_at = Instant::now();
    let (state, done, lease_until) = job_progress(&store, &job).await;
    if state == "running" && second.is_none() {
        assert_eq!(lease_until, 0, "the stopped server gave its lease back");
    }
    if database.ends_with(".db") {
        let wal = std::fs::metadata(format!("{database}-wal")).map(|m| m.len()).unwrap_or(0);
        // Other connections (this test's store) may still write to the log,
        // but the server's writes were checkpointed into the file.
        assert!(wal < 1 << 20, "the log was left at {wal} bytes");
    }
    // Another server resumes the job at once, not after the 30 s lease.
    let second = second.unwrap_or_else(|| serve(database));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (state, now_done, _) = job_progress(&store, &job).await;
        if state == "succeeded" || now_done > done {
            break;
        }
        assert!(Instant::now() < deadline, "the job was not resumed ({state}, {now_done})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resumed_after = stopped_at.elapsed();
    assert!(
        resumed_after < Duration::from_secs(10),
        "resumed after {resumed_after:?}: the lease was not given back"
    );
    loop {
        let (state, _, _) = job_progress(&store, &job).await;
        if state != "running" && state != "queued" {
            assert_eq!(state, "succeeded");
            break;
        }
        assert!(Instant::now() < deadline, "the job did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tx = store.begin_read().await.unwrap();
    assert!(allot_store::subscriptions::counter_mismatches(&mut tx).await.unwrap().is_empty());
    drop(tx);
    sigterm(&second.0);
    assert!(wait_exit(second.0, Duration::from_secs(30)).success());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("stop.db");
    stops_gracefully(db.to_str().unwrap(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stops_gracefully_and_the_other_server_resumes_at_once() {
    let Some((_cluster, url)) = common::postgres_database("stop") else {
        return;
    };
    stops_gracefully(&url, true).await;
}

async fn status_of(client: &reqwest::Client, url: &str, token: &str, path: &str) -> (u16, Value) {
    let r = client.get(format!("{url}{path}")).bearer_auth(token).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until `check` holds (polling every 20 ms) and returns how long that took.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what} did not happen within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two servers on one database, each caching tokens and the catalogue: a
/// product changed through one, a token revoked through it (or at the
/// command line), and the other follows within a second.
async fn caches_follow_other_servers(database: &str) {
    use reqwest::Method;
    let admin = token(database);
    let (_a, a) = serve(database);
    let (_b, b) = serve(database);
    let client = reqwest::Client::new();
    let product = json!({ "code": "messaging", "name": "Messaging", "family": "messaging" });
    call(&client, &a, &admin, Method::POST, "/api/v1/products", Some(product)).await;
    let org = call(
        &client,
        &a,
        &admin,
        Method::POST,
        "/api/v1/orgs",
        Some(json!({ "name": "Cache AB" })),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let items = json!([{ "product": "messaging", "quantity": 5 }]);
    let sub = json!({ "start_date": "2026-01-01", "end_date": "2030-01-01", "items": items });
    call(
        &client,
        &a,
        &admin,
        Method::POST,
        &format!("/api/v1/orgs/{org}/subscriptions"),
        Some(sub),
    )
    .await;
    // B reads (and caches) the catalogue through the licences overview.
    let overview = format!("/api/v1/orgs/{org}/licenses");
    let (_, v) = status_of(&client, &b, &admin, &overview).await;
    assert_eq!(v["items"][0]["name"], "Messaging");
    call(
        &client,
        &a,
        &admin,
        Method::PATCH,
        "/api/v1/products/messaging",
        Some(json!({ "name": "Messaging Pro" })),
    )
    .await;
    // At once on A...
    let (_, v) = status_of(&client, &a, &admin, &overview).await;
    assert_eq!(v["items"][0]["name"], "Messaging Pro");
    // ...and within a second on B.
    let took = within(Duration::from_secs(1), "B seeing the renamed product", || {
        let (client, b, admin, overview) = (client.clone(), b.clone(), admin.clone(), overview.clone());
        async move { status_of(&client, &b, &admin, &overview).await.1["items"][0]["name"] == "Messaging Pro" }
    })
    .await;
    eprintln!("catalogue change seen by the other server after {took:?}");
    // A token B has cached, revoked through A: at once on A, within a second on B.
    let doomed = call(
        &client,
        &a,
        &admin,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({ "role": "org_read_only", "org": org })),
    )
    .await;
    let (doomed_id, doomed) = (
        doomed["id"].as_str().unwrap().to_string(),
        doomed["token"].as_str().unwrap().to_string(),
    );
    assert_eq!(status_of(&client, &b, &doomed, &overview).await.0, 200);
    let r = client
        .delete(format!("{a}/api/v1/tokens/{doomed_id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(status_of(&client, &a, &doomed, &overview).await.0, 401);
    let took = within(Duration::from_secs(1), "B refusing the revoked token", || {
        let (client, b, doomed, overview) = (client.clone(), b.clone(), doomed.clone(), overview.clone());
        async move { status_of(&client, &b, &doomed, &overview).await.0 == 401 }
    })
    .await;
    eprintln!("revocation seen by the other server after {took:?}");
    // Revoked at the command line: both servers refuse it within a second.
    let other = call(
        &client,
        &a,
        &admin,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({ "role": "org_read_only", "org": org })),
    )
    .await;
    let (other_id, other) = (
        other["id"].as_str().unwrap().to_string(),
        other["token"].as_str().unwrap().to_string(),
    );
    for url in [&a, &b] {
        assert_eq!(status_of(&client, url, &other, &overview).await.0, 200);
    }
    let (ok, _, err, _) = run(&["admin", "revoke-token", "--database", database, "--id", &other_id]);
    assert!(ok, "{err}");
    for url in [&a, &b] {
        within(
            Duration::from_secs(1),
            "a server refusing the token revoked at the command line",
            || {
                let (client, url, other, overview) = (client.clone(), url.clone(), other.clone(), overview.clone());
                async move { status_of(&client, &url, &other, &overview).await.0 == 401 }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_caches_follow_other_servers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("caches.db");
    caches_follow_other_servers(db.to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_caches_follow_other_servers() {
    let Some((_cluster, url)) = common::postgres_database("caches") else {
        return;
    };
    caches_follow_other_servers(&url).await;
}
