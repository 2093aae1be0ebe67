//! Test kit: a real server on port 0 with a fresh database per test.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, TimeZone, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use allot_domain::access::Role;
use allot_server::clock::ManualClock;
use allot_server::AppState;
use allot_store::{Store, StoreOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `mod $name { sqlite, postgres }` tests from `async fn $name(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name($crate::kit::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if $crate::kit::postgres_available() {
                    super::$name($crate::kit::Backend::Postgres).await
                }
            }
        }
    )*};
}

static CLUSTER: OnceLock<Option<allot_pgtemp::PgCluster>> = OnceLock::new();

fn cluster() -> Option<&'static allot_pgtemp::PgCluster> {
    CLUSTER
        .get_or_init(|| {
            if std::env::var("ALLOT_TEST_DATABASE_URL").is_ok() {
                return None;
            }
            match allot_pgtemp::PgCluster::start(false) {
                Ok(c) => Some(c),
                // A PostgreSQL test that did nothing must not pass silently:
                // it fails unless the skip is asked for by name.
                Err(e) if allot_pgtemp::skip_allowed() => {
                    eprintln!("SKIPPING PostgreSQL tests (ALLOT_SKIP_POSTGRES=1): {e}");
                    None
                }
                Err(e) => panic!(
                    "PostgreSQL cannot be started ({e}). Install Debian's postgresql package, set ALLOT_TEST_DATABASE_URL, or set ALLOT_SKIP_POSTGRES=1 to skip these tests outside CI."
                ),
            }
        })
        .as_ref()
}

/// The throwaway cluster's log; `None` on a server given by
/// `ALLOT_TEST_DATABASE_URL` (whose log is not ours to read).
pub fn postgres_server_log() -> Option<String> {
    cluster().map(|c| c.server_log())
}

pub fn postgres_available() -> bool {
    std::env::var("ALLOT_TEST_DATABASE_URL").is_ok() || cluster().is_some()
}

static DB_COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A database URL for one test: a SQLite file in a temp dir, or a new
/// database in the throwaway cluster (or in `$ALLOT_TEST_DATABASE_URL`'s server).
pub fn fresh_database(backend: Backend, dir: &tempfile::TempDir) -> String {
    match backend {
        Backend::Sqlite => dir.path().join("allot.db").to_string_lossy().to_string(),
        Backend::Postgres => {
            let n = DB_COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let name = format!("t{}_{n}", std::process::id());
            if let Ok(url) = std::env::var("ALLOT_TEST_DATABASE_URL") {
                // Use the given server; create a database per test through psql-free SQL.
                let base = url.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(url.clone());
                let admin = std::process::Command::new("psql")
                    .arg(&url)
                    .arg("-c")
                    .arg(format!("CREATE DATABASE \"{name}\""))
                    .output();
                assert!(
                    admin.map(|o| o.status.success()).unwrap_or(false),
                    "cannot create a test database on ALLOT_TEST_DATABASE_URL"
                );
                format!("{base}/{name}")
            } else {
                cluster()
                    .expect("PostgreSQL cluster")
                    .create_database(&name)
                    .expect("create database")
            }
        }
    }
}

pub struct TestApp {
    /// The application the server runs (for its metrics, or a second listener).
    pub app: AppState,
    pub url: String,
    pub client: reqwest::Client,
    pub store: Store,
    pub clock: Arc<ManualClock>,
    pub admin: String,
    /// The database's path (SQLite) or URL (PostgreSQL).
    pub database: String,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub fn day(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).single().expect("valid date")
}

/// "Today" in every test unless a test moves the clock.
pub fn today() -> DateTime<Utc> {
    day(2026, 6, 15)
}

pub async fn spawn(backend: Backend) -> TestApp {
    spawn_with_limits(backend, Default::default()).await
}

pub async fn spawn_with_limits(backend: Backend, limits: allot_server::Limits) -> TestApp {
    let mut config = allot_server::Config::with_limits(limits);
    config.offline_tokens.keys = sealed_keys();
    config.webhooks.sealing = Some(sealing_secret());
    spawn_with_config(backend, config).await
}

/// A fresh secret that seals webhook secrets in the test's database.
pub fn sealing_secret() -> allot_server::config::SealingSecret {
    allot_server::config::SealingSecret::new(format!("webhook-test-secret-{}", allot_store::new_id("s"))).expect("long enough")
}

/// Offline-token keys sealed in the test's database with a fresh secret.
pub fn sealed_keys() -> allot_server::config::KeyCustody {
    let secret = format!("test-secret-{}", allot_store::new_id("s"));
    allot_server::config::KeyCustody::Sealed(allot_server::config::SealingSecret::new(secret).expect("long enough"))
}

pub async fn spawn_with_config(backend: Backend, config: allot_server::Config) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = fresh_database(backend, &dir);
    let store = Store::open(
        &database,
        StoreOptions {
            durable: false,
            max_connections: 16,
        },
    )
    .await
    .expect("open store");
    let clock = Arc::new(ManualClock::new(today()));
    let admin = allot_server::auth::create_token(&store, Role::ProviderAdmin, None, None, None, today())
        .await
        .expect("token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::new(store.clone(), clock.clone(), config);
    let app = state.clone();
    tokio::spawn(allot_server::serve(state, listener, async move {
        let _ = stopped.await;
    }));
    TestApp {
        app,
        url,
        client: reqwest::Client::new(),
        store,
        clock,
        admin,
        database,
        _dir: dir,
        _stop: stop,
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    #[track_caller]
    pub fn ok(self) -> Value {
        assert!(self.status.is_success(), "expected success, got {}: {}", self.status, self.body);
        self.body
    }
    #[track_caller]
    pub fn problem(&self, status: u16, code: &str) {
        assert_eq!((self.status.as_u16(), self.code()), (status, code), "body: {}", self.body);
    }
}

impl TestApp {
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        self.send(method, path, token, &[], body).await
    }
    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(token), Some(body)).await
    }
    /// Sends a request with extra headers (`If-Match`, `x-request-id`, ...).
    pub async fn send(&self, method: Method, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: Option<Value>) -> Resp {
        let mut req = self.client.request(method, format!("{}{}", self.url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp { status, body, headers }
    }

    /// Sends a raw body with a content type (for malformed input).
    /// A new connection each time: the server may close one early (413).
    pub async fn raw(&self, method: Method, path: &str, token: &str, content_type: &str, body: Vec<u8>) -> Resp {
        let resp = reqwest::Client::new()
            .request(method, format!("{}{}", self.url, path))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        Resp {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        }
    }

    pub async fn token(&self, role: Role, partner: Option<&str>, org: Option<&str>) -> String {
        allot_server::auth::create_token(&self.store, role, partner, org, None, today())
            .await
            .expect("token")
    }

    /// Everything a refused call must leave as it was: every row of every
    /// table, every column, as the database holds them. The tables and
    /// columns are read from the schema, so a new one is covered without
    /// touching this. Left out: the migration log, the servers' presence
    /// rows, and a token's `last_used_at` (a refused call still used its
    /// token).
    ///
    /// The licence uses buffered so far are written first: the flusher
    /// writes them on its own every few seconds, and one landing between two
    /// snapshots would look like a change made by the call in between.
    pub async fn snapshot(&self) -> Vec<String> {
        self.app.entitlements.usage.flush(&self.app).await.expect("usage flush");
        let mut tx = self.store.begin_read().await.expect("read");
        let postgres = tx.backend() == allot_store::Backend::Postgres;
        let tables_sql = if postgres {
            "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1"
        } else {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1"
        };
        let tables: Vec<String> = tx
            .rows(tables_sql, &[])
            .await
            .expect("tables")
            .iter()
            .map(|r| r.text("name").expect("name"))
            .filter(|t| t != "allot_migrations")
            // Which server processes have the database open (PostgreSQL):
            // kept by each server's background task, not by any call.
            .filter(|t| t != "processes")
            // A SCIM request refused is recorded there on purpose, for the
            // org's identity provisioning page (scim.rs checks what is).
            .filter(|t| t != "scim_errors")
            // The status last announced for each subscription: written only
            // by the webhook sender's scan (at its start, then hourly), never
            // by a call; a scan that starts late, under load, records the
            // subscriptions a test made meanwhile between two snapshots.
            .filter(|t| t != "webhook_subscription_status")
            // SQLite's substring index of users (a virtual table and its
            // shadow tables of blobs): derived from `users`, which is compared.
            .filter(|t| !t.starts_with("users_search"))
            .collect();
        assert!(tables.len() >= 20, "the schema lists only {tables:?}");
        let mut out = Vec::new();
        for t in &tables {
            let columns_sql = if postgres {
                "SELECT column_name AS name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
            } else {
                "SELECT name FROM pragma_table_info($1) ORDER BY cid"
            };
            let columns: Vec<String> = tx
                .rows(columns_sql, allot_store::args![t.as_str()])
                .await
                .expect("columns")
                .iter()
                .map(|r| r.text("name").expect("name"))
                .filter(|c| !(t == "api_tokens" && c == "last_used_at"))
                .collect();
            let list = columns.join(", ");
            let row_sql = if postgres {
                format!("SELECT j FROM (SELECT json_build_array({list})::text AS j FROM {t}) x ORDER BY j")
            } else {
                format!("SELECT j FROM (SELECT json_array({list}) AS j FROM {t}) ORDER BY j")
            };
            let rows = tx.rows(&row_sql, &[]).await.expect("rows");
            out.push(format!("{t}: {} rows ({list})", rows.len()));
            for r in rows {
                out.push(format!("{t} {}", r.text("j").expect("row")));
            }
        }
        out
    }

    /// Pools whose counter disagrees with their assignment rows.
    pub async fn mismatches(&self) -> usize {
        let mut tx = self.store.begin_read().await.expect("read");
        allot_store::subscriptions::counter_mismatches(&mut tx).await.expect("check").len()
    }

    /// (User, product) pairs held more than once.
    pub async fn duplicate_holdings(&self) -> i64 {
        let mut tx = self.store.begin_read().await.expect("read");
        let n = tx
            .rows(
                "SELECT COUNT(*) AS n FROM (SELECT user_id, product FROM assignments GROUP BY user_id, product HAVING COUNT(*) > 1) d",
                &[],
            )
            .await
            .expect("duplicates");
        n[0].int("n").expect("count")
    }
}

/// A small world: the calling/meetings catalogue, a partner with a customer
/// org holding one subscription, and helpers to add more.
pub struct World {
    pub partner: String,
    pub org: String,
    pub sub: String,
}

/// A product without rules; calling products take the calling properties.
pub async fn product(app: &TestApp, code: &str, family: &str) {
    let properties = if family == "calling" {
        json!({ "location": "optional", "phone_number": "optional", "extension": "optional" })
    } else {
        json!({})
    };
    app.post(
        "/api/v1/products",
        &app.admin,
        json!({ "code": code, "name": code.replace('-', " "), "family": family, "features": [family], "properties": properties }),
    )
    .await
    .ok();
}

pub async fn org(app: &TestApp, name: &str, partner: Option<&str>) -> String {
    app.post("/api/v1/orgs", &app.admin, json!({ "name": name, "partner": partner }))
        .await
        .ok()["id"]
        .as_str()
        .expect("id")
        .to_string()
}

pub async fn subscription(app: &TestApp, org: &str, items: Value) -> String {
    app.post(
        &format!("/api/v1/orgs/{org}/subscriptions"),
        &app.admin,
        json!({ "start_date": "2026-01-01", "end_date": "2027-01-01", "items": items }),
    )
    .await
    .ok()["id"]
        .as_str()
        .expect("id")
        .to_string()
}

pub async fn user(app: &TestApp, org: &str, email: &str) -> String {
    app.post(&format!("/api/v1/orgs/{org}/users"), &app.admin, json!({ "email": email }))
        .await
        .ok()["id"]
        .as_str()
        .expect("id")
        .to_string()
}

pub async fn world(app: &TestApp) -> World {
    for (c, f) in [
        ("calling-standard", "calling"),
        ("calling-professional", "calling"),
        ("meetings", "meetings"),
        ("messaging", "messaging"),
    ] {
        product(app, c, f).await;
    }
    let partner = app.post("/api/v1/partners", &app.admin, json!({ "name": "Partner A" })).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let org = org(app, "Customer A", Some(&partner)).await;
    let sub = subscription(
        app,
        &org,
        json!([{ "product": "calling-professional", "quantity": 10 }, { "product": "meetings", "quantity": 10 }, { "product": "messaging", "quantity": 1 }]),
    )
    .await;
    World { partner, org, sub }
}

/// Inserts `n` users straight into the database (as a data load would),
/// emails `<prefix><i>@<domain>`; returns their ids in order.
pub async fn many_users(app: &TestApp, org: &str, prefix: &str, domain: &str, n: usize, location: Option<&str>) -> Vec<String> {
    let users: Vec<allot_store::users::User> = (0..n)
        .map(|i| allot_store::users::User {
            usage_location: location.map(str::to_string),
            ..allot_store::users::User::internal(format!("usr_{prefix}{i:07}"), format!("{prefix}{i}@{domain}"))
        })
        .collect();
    let mut tx = app.store.begin().await.expect("begin");
    allot_store::users::insert_many(&mut tx, org, &users, today())
        .await
        .expect("insert users");
    tx.commit().await.expect("commit");
    users.into_iter().map(|u| u.id).collect()
}

/// Creates a licence job as the provider admin (202) and returns its id,
/// without waiting for it.
pub async fn start_job(app: &TestApp, org: &str, body: Value) -> String {
    let r = app.post(&format!("/api/v1/orgs/{org}/license-jobs"), &app.admin, body).await;
    assert_eq!(r.status.as_u16(), 202, "{}", r.body);
    r.body["job"]["id"].as_str().expect("a job id").to_string()
}

/// Polls a job until it has ended; returns its last view.
pub async fn finished_job(app: &TestApp, id: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let j = app.get(&format!("/api/v1/jobs/{id}"), &app.admin).await.ok();
        let state = j["state"].as_str().unwrap_or("");
        if !matches!(state, "queued" | "running") {
            return j;
        }
        assert!(std::time::Instant::now() < deadline, "job {id} did not finish: {j}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Every result of a job (all pages).
pub async fn job_results(app: &TestApp, id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app
            .get(&format!("/api/v1/jobs/{id}/results?limit=700&cursor={cursor}"), &app.admin)
            .await
            .ok();
        out.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return out,
        }
    }
}

/// Seats and assignments only: what a refused or dry-run job must not change.
pub async fn license_state(app: &TestApp) -> Vec<String> {
    app.snapshot()
        .await
        .into_iter()
        .filter(|l| {
            let table = l.split([' ', ':']).next().unwrap_or("");
            matches!(table, "subscription_items" | "assignments" | "service_data")
        })
        .collect()
}

/// A user's stored service data of one family, straight from the database:
/// (data as JSON, retain_until), or None when there is no row.
pub async fn stored_service_data(app: &TestApp, org: &str, user: &str, family: &str) -> Option<(serde_json::Value, Option<String>)> {
    let mut tx = app.store.begin_read().await.expect("read");
    let rows = tx
        .rows(
            "SELECT data, retain_until FROM service_data WHERE org_id = $1 AND user_id = $2 AND family = $3",
            allot_store::args![org, user, family],
        )
        .await
        .expect("service data");
    let row = rows.first()?;
    let data = serde_json::from_str(&row.text("data").expect("data")).expect("data is JSON");
    Some((data, row.opt_text("retain_until").expect("retain_until")))
}
