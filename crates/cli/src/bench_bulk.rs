//! `allot bench bulk`: one product assigned to N users by a bulk job through
//! the HTTP API (job created → job finished), against a baseline in the same
//! run: the same assignment rows inserted in one transaction straight into a
//! database of the same kind (multi-row INSERT, plus the counter update).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use allot_domain::access::Role;
use allot_server::clock::{Clock, SystemClock};
use allot_store::users::User;
use allot_store::{in_transaction, Store, Val};

use crate::anyhow_lite::{msg, Result};
use crate::bench::{seat_pool, seat_product};

const ROWS_PER_STATEMENT: usize = 500;

/// A product, an org with one subscription of `n` seats and `n` users, loaded
/// with multi-row inserts (setup, not measured). Returns (org, subscription).
async fn setup(store: &Store, n: usize) -> Result<(String, String)> {
    let now = SystemClock.now();
    let (org, sub) = seat_pool("Bulk Bench", "bulk-seat", n as i64, now, SystemClock.today());
    // Users made a batch at a time: the setup's memory should not be
    // mistaken for the job's.
    let user = |i: usize| User::internal(format!("usr_{i:08}"), format!("user{i}@bulk.example"));
    in_transaction!(store, |tx| {
        allot_store::catalogue::insert(&mut tx, &seat_product("bulk-seat")?, now).await?;
        allot_store::tenants::insert_org(&mut tx, &org, now).await?;
        allot_store::subscriptions::insert(&mut tx, &sub, now).await?;
        for start in (0..n).step_by(10_000) {
            let batch: Vec<User> = (start..(start + 10_000).min(n)).map(user).collect();
            allot_store::users::insert_many(&mut tx, &org.id, &batch, now).await?;
        }
        Ok::<(), allot_store::StoreError>(())
    })
    .map_err(|e| msg(e.detail))?;
    Ok((org.id, sub.id))
}

/// A fresh store at `database` with `n` users to give seats to.
pub(crate) async fn prepared(database: &str, n: usize, max_connections: u32) -> Result<(Store, String, String)> {
    let store = crate::bench::open_store(database, max_connections).await?;
    let (org, sub) = setup(&store, n).await?;
    settle(database).await?;
    Ok((store, org, sub))
}

/// SQLite: copies the setup's WAL into the database file, so that neither
/// the job nor the baseline pays for checkpointing the setup's rows.
pub(crate) async fn settle(database: &str) -> Result<()> {
    if database.starts_with("postgres") {
        return Ok(());
    }
    use sqlx::{ConnectOptions, Connection};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(database)
        .connect()
        .await
        .map_err(|e| msg(format!("cannot open {database}: {e}")))?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .map_err(|e| msg(format!("cannot checkpoint {database}: {e}")))?;
    conn.close().await.map_err(|e| msg(e.to_string()))?;
    Ok(())
}

/// The job through the API: POST, then poll until it has ended.
/// Sends a request and reads its JSON answer.
pub(crate) async fn json_of(request: reqwest::RequestBuilder) -> Result<Value> {
    let response = request.send().await.map_err(|e| msg(e.to_string()))?;
    response.json().await.map_err(|e| msg(e.to_string()))
}

/// What one job through the API measured.
struct AllotRun {
    /// The job that removes the product from the same users again.
    removal: Duration,
    elapsed: Duration,
    /// RSS when the job began, MB.
    rss_before: Option<f64>,
    /// CPU time of the whole process (server and client) during the job.
    cpu: Option<f64>,
}

async fn allot_run(database: &str, n: usize) -> Result<AllotRun> {
    let (store, org, _sub) = prepared(database, n, 16).await?;
    let token = allot_server::auth::create_token(&store, Role::ProviderAdmin, None, None, None, SystemClock.now())
        .await
        .map_err(|e| msg(e.detail))?;
    let server = crate::bench::InProcessServer::start(&store).await?;
    let url = server.url.clone();
    let client = reqwest::Client::new();
    // The peak RSS reported is the job's: forget the setup's high-water mark.
    reset_peak_rss();
    let rss_before = rss_now_mb();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let created = json_of(
        client
            .post(format!("{url}/api/v1/orgs/{org}/license-jobs"))
            .bearer_auth(&token)
            .json(&json!({ "filter": { "email_domain": "bulk.example" }, "add": [{ "product": "bulk-seat" }] })),
    )
    .await?;
    let id = created["job"]["id"]
        .as_str()
        .ok_or_else(|| msg(format!("no job was created: {created}")))?
        .to_string();
    let job = loop {
        let j = json_of(client.get(format!("{url}/api/v1/jobs/{id}")).bearer_auth(&token)).await?;
        if !matches!(j["state"].as_str(), Some("queued" | "running")) {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let elapsed = started.elapsed();
    let cpu = cpu_seconds().zip(cpu_before).map(|(after, before)| after - before);
    // Then the same users lose it again: the removal path.
    let removing = Instant::now();
    let created = json_of(
        client
            .post(format!("{url}/api/v1/orgs/{org}/license-jobs"))
            .bearer_auth(&token)
            .json(&json!({ "filter": { "email_domain": "bulk.example" }, "remove": [{ "product": "bulk-seat" }] })),
    )
    .await?;
    let id = created["job"]["id"]
        .as_str()
        .ok_or_else(|| msg(format!("no removal job was created: {created}")))?
        .to_string();
    let removed = loop {
        let j = json_of(client.get(format!("{url}/api/v1/jobs/{id}")).bearer_auth(&token)).await?;
        if !matches!(j["state"].as_str(), Some("queued" | "running")) {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let removal = removing.elapsed();
    if removed["state"] != "succeeded" {
        return Err(msg(format!("the removal job did not do its work: {removed}")));
    }
    server.stop().await;
    let mut rd = store.begin_read().await.map_err(|e| msg(format!("{e:?}")))?;
    let mismatches = allot_store::subscriptions::counter_mismatches(&mut rd)
        .await
        .map_err(|e| msg(format!("{e:?}")))?;
    if job["state"] != "succeeded" || !mismatches.is_empty() {
        return Err(msg(format!("the bulk job did not do its work: {job}; mismatches {mismatches:?}")));
    }
    drop(rd);
    store.close().await;
    Ok(AllotRun {
        elapsed,
        rss_before,
        cpu,
        removal,
    })
}

/// The same rows straight into the database: one transaction, multi-row
/// INSERTs of the assignment rows and one guarded counter update.
async fn baseline_run(database: &str, n: usize) -> Result<Duration> {
    let (store, org, sub) = prepared(database, n, 4).await?;
    let stamp = allot_store::ts(SystemClock.now());
    let started = Instant::now();
    let mut tx = store.begin().await.map_err(|e| msg(format!("{e:?}")))?;
    for start in (0..n).step_by(ROWS_PER_STATEMENT) {
        let end = (start + ROWS_PER_STATEMENT).min(n);
        let mut sql = String::from("INSERT INTO assignments (org_id, user_id, product, subscription_id, properties, assigned_at) VALUES ");
        let mut vals = Vec::with_capacity((end - start) * 4);
        for (k, i) in (start..end).enumerate() {
            if k > 0 {
                sql.push_str(", ");
            }
            let b = k * 4;
            sql.push_str(&format!("(${}, ${}, 'bulk-seat', ${}, '{{}}', ${})", b + 1, b + 2, b + 3, b + 4));
            vals.extend([
                Val::from(&org),
                Val::Text(format!("usr_{i:08}")),
                Val::from(&sub),
                Val::from(&stamp),
            ]);
        }
        tx.exec(&sql, &vals).await.map_err(|e| msg(format!("{e:?}")))?;
    }
    tx.exec(
        "UPDATE subscription_items SET consumed = consumed + $3 WHERE org_id = $1 AND subscription_id = $2 AND consumed + $3 <= quantity",
        &[Val::from(&org), Val::from(&sub), Val::Int(n as i64)],
    )
    .await
    .map_err(|e| msg(format!("{e:?}")))?;
    tx.commit().await.map_err(|e| msg(format!("{e:?}")))?;
    let elapsed = started.elapsed();
    store.close().await;
    Ok(elapsed)
}

/// Resets the process's peak RSS to its current RSS (Linux; elsewhere the
/// figure stays the whole process's peak).
pub(crate) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size of this process since the last reset (Linux), in MB.
pub(crate) fn peak_rss_mb() -> Option<f64> {
    rss_field_mb("VmHWM:")
}

/// Resident set size now (Linux), in MB.
pub(crate) fn rss_now_mb() -> Option<f64> {
    rss_field_mb("VmRSS:")
}

/// User plus system CPU time of this process, all threads (Linux), in
/// seconds: how much of the machine's cores a run kept busy.
pub(crate) fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // utime and stime, in USER_HZ ticks (100 per second on Linux, whatever the kernel's HZ).
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

fn rss_field_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub async fn run(backend: &str, users: &[usize]) -> Result<()> {
    let backends = crate::bench::backends_of(backend)?;
    println!("allot bench bulk: one product to N users by one job over HTTP, durable commits, job created -> job finished; then a job that removes it from them");
    println!();
    println!("| backend | users | Allot s | users/s | baseline s | Allot / baseline | RSS at job start MB | peak RSS during job MB | CPU s during job | removal job s |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut databases = crate::bench::FreshDatabases::for_backends(&backends)?;
    for b in &backends {
        for &n in users {
            let (allot_db, base_db) = (databases.fresh(b, "bulk")?, databases.fresh(b, "bulk")?);
            let run = allot_run(&allot_db, n).await?;
            let rss = peak_rss_mb();
            let base = baseline_run(&base_db, n).await?;
            let allot = run.elapsed.as_secs_f64();
            println!(
                "| {b} | {n} | {allot:.2} | {:.0} | {:.2} | {:.1}x | {} | {} | {} | {:.2} |",
                n as f64 / allot,
                base.as_secs_f64(),
                allot / base.as_secs_f64(),
                run.rss_before.map_or("?".to_string(), |r| format!("{r:.0}")),
                rss.map_or("?".to_string(), |r| format!("{r:.0}")),
                run.cpu.map_or("?".to_string(), |c| format!("{c:.2}")),
                run.removal.as_secs_f64()
            );
        }
    }
    Ok(())
}
