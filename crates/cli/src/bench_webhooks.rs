//! `allot bench webhooks`: what a subscribed webhook endpoint costs a bulk
//! job, and how fast its events arrive.
//!
//! Per backend, in one run:
//! 1. a bulk job giving one product to N users (default 100,000) with no
//!    endpoint (the baseline);
//! 2. the same job on a fresh database of the same kind with one endpoint
//!    subscribed, on a receiver in this process (loopback, allowed by the
//!    bench's configuration) that answers 200 at once: the job's time, the
//!    time until its last event is delivered, deliveries per second;
//! 3. on that server, C single licence changes (removing the licence the
//!    job gave C of the users) from 4 clients, each client pausing 10 ms
//!    between changes (a pace the receiver keeps up with): from the
//!    request's start to the event's arrival, p50 / p99;
//! 4. the outbox and delivery log afterwards: rows, and bytes on disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use allot_domain::access::Role;
use allot_server::clock::{Clock, SystemClock};

use crate::anyhow_lite::{msg, Result};
use crate::bench_bulk::json_of;

/// Arrivals at the receiver: (event type, user, when).
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<(String, String, Instant)>>>);

impl Arrivals {
    fn count(&self) -> usize {
        self.0.lock().map(|a| a.len()).unwrap_or(0)
    }
}

async fn receive(axum::extract::State(a): axum::extract::State<Arrivals>, body: axum::body::Bytes) -> axum::http::StatusCode {
    let at = Instant::now();
    let v = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
    let text = |x: &serde_json::Value| x.as_str().unwrap_or_default().to_string();
    if let Ok(mut got) = a.0.lock() {
        got.push((text(&v["type"]), text(&v["data"]["user"]), at));
    }
    axum::http::StatusCode::OK
}

async fn receiver() -> Result<(String, Arrivals)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let arrivals = Arrivals::default();
    let router = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(arrivals.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok((url, arrivals))
}

fn config() -> Result<allot_server::Config> {
    let mut config = allot_server::Config::default();
    config.webhooks.targets = allot_domain::webhooks::TargetPolicy {
        allow_http: true,
        allow_private: true,
    };
    config.webhooks.sealing =
        Some(allot_server::config::SealingSecret::new(format!("bench-webhook-secret-{}", allot_store::new_id("s"))).map_err(msg)?);
    Ok(config)
}

/// Runs the bulk job over HTTP and waits for it to end; its time.
async fn job(client: &reqwest::Client, url: &str, token: &str, org: &str) -> Result<Duration> {
    let started = Instant::now();
    let created = json_of(
        client
            .post(format!("{url}/api/v1/orgs/{org}/license-jobs"))
            .bearer_auth(token)
            .json(&json!({ "filter": { "email_domain": "bulk.example" }, "add": [{ "product": "bulk-seat" }] })),
    )
    .await?;
    let id = created["job"]["id"]
        .as_str()
        .ok_or_else(|| msg(format!("no job was created: {created}")))?
        .to_string();
    loop {
        let j = json_of(client.get(format!("{url}/api/v1/jobs/{id}")).bearer_auth(token)).await?;
        match j["state"].as_str() {
            Some("queued" | "running") => tokio::time::sleep(Duration::from_millis(5)).await,
            Some("succeeded") => return Ok(started.elapsed()),
            _ => return Err(msg(format!("the bulk job did not succeed: {j}"))),
        }
    }
}

/// What the second run measured.
struct WithEndpoint {
    job: Duration,
    last_delivery: Duration,
    /// From the first event's arrival to the last's.
    sending: Duration,
    latencies: Vec<Duration>,
    rows: (i64, i64, i64),
    bytes: Option<i64>,
}

/// The job alone: with no endpoint, or (`outbox_only`) with one subscribed
/// but this process not sending (what writing the outbox costs the job).
async fn run_job_only(database: &str, n: usize, outbox_only: bool) -> Result<Duration> {
    let (store, org, _) = crate::bench_bulk::prepared(database, n, 16).await?;
    let token = allot_server::auth::create_token(&store, Role::ProviderAdmin, None, None, None, SystemClock.now())
        .await
        .map_err(|e| msg(e.detail))?;
    let mut config = config()?;
    config.webhooks.deliver = !outbox_only;
    let server = crate::bench::InProcessServer::start_with(&store, config).await?;
    let client = reqwest::Client::new();
    if outbox_only {
        let created = json_of(
            client
                .post(format!("{}/api/v1/orgs/{org}/webhooks", server.url))
                .bearer_auth(&token)
                .json(&json!({ "url": "http://127.0.0.1:9/unused", "events": ["license.assigned"] })),
        )
        .await?;
        if created["secret"].as_str().is_none() {
            return Err(msg(format!("the endpoint was not created: {created}")));
        }
    }
    let took = job(&client, &server.url, &token, &org).await?;
    server.stop().await;
    store.close().await;
    Ok(took)
}

async fn run_with(database: &str, n: usize, changes: usize) -> Result<WithEndpoint> {
    let (store, org, _sub) = crate::bench_bulk::prepared(database, n, 16).await?;
    let token = allot_server::auth::create_token(&store, Role::ProviderAdmin, None, None, None, SystemClock.now())
        .await
        .map_err(|e| msg(e.detail))?;
    let (hook_url, arrivals) = receiver().await?;
    let server = crate::bench::InProcessServer::start_with(&store, config()?).await?;
    let client = reqwest::Client::new();
    let url = server.url.clone();
    let created = json_of(
        client
            .post(format!("{url}/api/v1/orgs/{org}/webhooks"))
            .bearer_auth(&token)
            .json(&json!({ "url": hook_url, "events": ["license.assigned", "license.removed"] })),
    )
    .await?;
    if created["secret"].as_str().is_none() {
        return Err(msg(format!("the endpoint was not created: {created}")));
    }
    let started = Instant::now();
    let took = job(&client, &url, &token, &org).await?;
    let deadline = Instant::now() + Duration::from_secs(3600);
    while arrivals.count() < n {
        if Instant::now() > deadline {
            return Err(msg(format!("only {} of {n} events arrived within an hour", arrivals.count())));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let last_delivery = started.elapsed();
    let (first, last) = {
        let got = arrivals.0.lock().map_err(|_| msg("the receiver's lock is poisoned"))?;
        let first = got.iter().map(|(_, _, t)| *t).min().unwrap_or(started);
        let last = got.iter().map(|(_, _, t)| *t).max().unwrap_or(started);
        (first, last)
    };
    // Single changes at a pace the receiver keeps up with.
    let users: Vec<String> = (0..changes.min(n)).map(|i| format!("usr_{i:08}")).collect();
    let changes = users.len();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let mut tasks = Vec::new();
    for part in users.chunks(changes.div_ceil(4).max(1)) {
        let (client, url, token, org, part, sent) = (client.clone(), url.clone(), token.clone(), org.clone(), part.to_vec(), sent.clone());
        tasks.push(tokio::spawn(async move {
            for u in part {
                if let Ok(mut s) = sent.lock() {
                    s.insert(u.clone(), Instant::now());
                }
                let r = client
                    .post(format!("{url}/api/v1/orgs/{org}/users/{u}/licenses"))
                    .bearer_auth(&token)
                    .json(&json!({ "remove": [{ "product": "bulk-seat" }] }))
                    .send()
                    .await
                    .map_err(|e| msg(e.to_string()))?;
                if !r.status().is_success() {
                    return Err(msg(format!("a single change failed: {}", r.text().await.unwrap_or_default())));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<(), crate::anyhow_lite::Error>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| msg(e.to_string()))??;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while arrivals.count() < n + changes {
        if Instant::now() > deadline {
            return Err(msg(format!(
                "only {} of {} single-change events arrived",
                arrivals.count() - n,
                changes
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let latencies: Vec<Duration> = {
        let got = arrivals.0.lock().map_err(|_| msg("the receiver's lock is poisoned"))?;
        let sent = sent.lock().map_err(|_| msg("a lock is poisoned"))?;
        got.iter()
            .filter(|(t, _, _)| t == "license.removed")
            .filter_map(|(_, u, at)| sent.get(u).map(|s| at.saturating_duration_since(*s)))
            .collect()
    };
    server.stop().await;
    let (rows, bytes) = sizes(&store).await?;
    store.close().await;
    Ok(WithEndpoint {
        job: took,
        last_delivery,
        sending: last.saturating_duration_since(first),
        latencies,
        rows,
        bytes,
    })
}

/// Rows of the outbox, deliveries and attempts; their bytes on disk
/// (PostgreSQL's relation sizes with indexes; SQLite's pages, where the
/// build offers `dbstat`).
async fn sizes(store: &allot_store::Store) -> Result<((i64, i64, i64), Option<i64>)> {
    let mut rd = store.begin_read().await.map_err(|e| msg(format!("{e:?}")))?;
    let rows = allot_store::webhooks::sizes(&mut rd).await.map_err(|e| msg(format!("{e:?}")))?;
    let sql = match store.backend() {
        allot_store::Backend::Postgres => {
            "SELECT SUM(pg_total_relation_size(c.oid))::BIGINT AS n FROM pg_class c \
             WHERE c.relkind = 'r' AND c.relname IN ('webhook_events', 'webhook_deliveries', 'webhook_attempts')"
        }
        allot_store::Backend::Sqlite => {
            "SELECT SUM(pgsize) AS n FROM dbstat WHERE name LIKE 'webhook_%' OR name LIKE 'sqlite_autoindex_webhook_%'"
        }
    };
    let bytes = match rd.opt_row(sql, &[]).await {
        Ok(Some(r)) => r.int("n").ok(),
        _ => None,
    };
    Ok((rows, bytes))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(backend: &str, n: usize, changes: usize) -> Result<()> {
    if n == 0 || changes == 0 {
        return Err(msg("--users and --changes must be at least 1"));
    }
    let backends = crate::bench::backends_of(backend)?;
    println!(
        "allot bench webhooks: a bulk job giving one product to {n} users, without and with one subscribed endpoint on a local receiver; then {changes} single changes, 4 clients pausing 10 ms; {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!();
    println!("| backend | job without endpoint s | job, outbox written but not sent s | job with endpoint s | with / without | last event delivered s | deliveries/s (sending) | deliveries/s (job start to last) | commit to delivery p50 / p99 ms | outbox, deliveries, attempts rows | on disk MB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut databases = crate::bench::FreshDatabases::for_backends(&backends)?;
    for b in &backends {
        let without = run_job_only(&databases.fresh(b, "hooks")?, n, false).await?;
        let outbox_only = run_job_only(&databases.fresh(b, "hooks")?, n, true).await?;
        let with = run_with(&databases.fresh(b, "hooks")?, n, changes).await?;
        let mut lat = with.latencies.clone();
        lat.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| {b} | {:.2} | {:.2} | {:.2} | {:.2}x | {:.2} | {:.0} | {:.0} | {:.1} / {:.1} | {}, {}, {} | {} |",
            without.as_secs_f64(),
            outbox_only.as_secs_f64(),
            with.job.as_secs_f64(),
            with.job.as_secs_f64() / without.as_secs_f64(),
            with.last_delivery.as_secs_f64(),
            n as f64 / with.sending.as_secs_f64().max(1e-6),
            n as f64 / with.last_delivery.as_secs_f64(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            with.rows.0,
            with.rows.1,
            with.rows.2,
            with.bytes.map_or("?".to_string(), |b| format!("{:.1}", b as f64 / 1e6)),
        );
    }
    Ok(())
}
