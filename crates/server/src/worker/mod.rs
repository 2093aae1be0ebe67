//! The job worker: claims durable jobs and carries them out chunk by chunk.
//!
//! Each server runs one worker. It claims a job with a lease (so two servers
//! on one database never work on the same job), renews the lease with every
//! chunk, and resumes jobs whose worker died (`kill -9`) once their lease has
//! run out. A chunk's changes, its results and the job's progress commit in
//! one transaction: a restart redoes no user and loses none. A run that fails
//! is retried after a growing delay; after [`MAX_FAILED_RUNS`] in a row the
//! job ends `failed` with the error, rather than being retried forever.

pub(crate) mod license_job;
pub mod per_user;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Notify;

use allot_store::{in_transaction, jobs, Store};

use crate::AppState;

pub use license_job::CHUNK_USERS;

/// Wakes the worker when a job is created in this process.
fn signal() -> &'static Notify {
    static SIGNAL: OnceLock<Notify> = OnceLock::new();
    SIGNAL.get_or_init(Notify::new)
}

pub fn job_created() {
    signal().notify_one();
}

/// How long a claimed job stays claimed without the worker renewing it.
/// `ALLOT_JOB_LEASE_MS` shortens it (the crash tests use 1,500 ms).
pub fn lease_ms() -> i64 {
    std::env::var("ALLOT_JOB_LEASE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v: &i64| *v >= 100)
        .unwrap_or(30_000)
}

/// Wall-clock milliseconds for leases (not the business clock tests move).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs of one job that may fail in a row (in this worker) before the job
/// ends `failed` with the last error, instead of being retried forever.
pub const MAX_FAILED_RUNS: u32 = 5;

/// The delay before a failed run is retried, times the failures so far:
/// by default 5 s, so a job is given up after about 50 s of failing runs.
/// `ALLOT_JOB_RETRY_MS` changes it (the tests use 100 ms).
fn retry_ms() -> i64 {
    std::env::var("ALLOT_JOB_RETRY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v: &i64| *v >= 10)
        .unwrap_or(5_000)
}

/// Runs until the task is aborted.
pub async fn run_worker(state: AppState) {
    let owner = allot_store::new_id("wrk");
    let mut failed_runs: HashMap<String, u32> = HashMap::new();
    let purge_every = crate::retention::purge_interval();
    let mut last_purge: Option<std::time::Instant> = None;
    loop {
        if last_purge.is_none_or(|t| t.elapsed() >= purge_every) {
            last_purge = Some(std::time::Instant::now());
            let system = allot_store::audit::Actor {
                actor: "system:retention".into(),
                request_id: None,
            };
            match crate::retention::purge_expired(&state, &system).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "purged service data whose retention ended"),
                Err(e) => tracing::error!(error = ?e, "cannot purge expired service data; trying again later"),
            }
            match crate::retention::purge_idempotency_keys(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(keys = n, "purged idempotency keys past their time to live"),
                Err(e) => tracing::error!(error = ?e, "cannot purge idempotency keys; trying again later"),
            }
        }
        match next_job(&state.store).await {
            Ok(Some((org, id))) => match license_job::run(&state, &owner, &org, &id).await {
                Ok(()) => {
                    failed_runs.remove(&id);
                }
                Err(e) => {
                    let runs = failed_runs.entry(id.clone()).or_default();
                    *runs += 1;
                    let runs = *runs;
                    if runs >= MAX_FAILED_RUNS {
                        tracing::error!(job = %id, error = ?e, runs, "job failed too many times in a row; giving it up");
                        if let Err(e) = license_job::give_up(&state, &org, &id, runs, &e).await {
                            tracing::error!(job = %id, error = ?e, "cannot mark the job failed; it is retried later");
                        }
                        failed_runs.remove(&id);
                    } else {
                        tracing::error!(job = %id, error = ?e, runs, "job stopped; it is retried");
                        let until = now_ms() + retry_ms() * i64::from(runs);
                        let postponed = in_transaction!(state.store, |tx| jobs::postpone(&mut tx, &org, &id, &owner, until).await);
                        if let Err(e) = postponed {
                            tracing::error!(job = %id, error = ?e, "cannot postpone the job; it resumes when its lease runs out");
                        }
                    }
                }
            },
            Ok(None) => {
                // Nothing claimable: wait for a new job, or look again soon
                // (another server's job whose lease runs out).
                let _ = tokio::time::timeout(Duration::from_millis(250), signal().notified()).await;
            }
            Err(e) => {
                tracing::warn!(error = ?e, "cannot look for jobs");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn next_job(store: &Store) -> Result<Option<(String, String)>, allot_domain::Error> {
    let mut rd = store.read_conn().await?;
    let found = jobs::claimable(&mut rd, now_ms()).await?;
    Ok(found.into_iter().next())
}
