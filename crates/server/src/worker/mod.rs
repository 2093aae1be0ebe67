//! The job worker: claims durable jobs and carries them out chunk by chunk.
//!
//! Each server runs one worker. It claims a job with a lease (so two servers
//! on one database never work on the same job), renews the lease with every
//! chunk, and resumes jobs whose worker died (`kill -9`) once their lease has
//! run out. A chunk's changes, its results and the job's progress commit in
//! one transaction: a restart redoes no user and loses none.

mod license_job;

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Notify;

use allot_store::{jobs, Store};

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

/// Runs until the task is aborted.
pub async fn run_worker(state: AppState) {
    let owner = allot_store::new_id("wrk");
    loop {
        match next_job(&state.store).await {
            Ok(Some((org, id))) => {
                if let Err(e) = license_job::run(&state, &owner, &org, &id).await {
                    tracing::error!(job = %id, error = ?e, "job stopped; it resumes when its lease runs out");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
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
