//! The job worker: claims durable jobs and carries them out chunk by chunk.
//!
//! Each server runs one worker. It claims a job with a lease (so two servers
//! on one database never work on the same job), renews the lease with every
//! chunk, and resumes jobs whose worker died (`kill -9`) once their lease has
//! run out. A chunk's changes, its results and the job's progress commit in
//! one transaction: a restart redoes no user and loses none. A run that fails
//! is retried after a growing delay; after [`MAX_FAILED_RUNS`] in a row the
//! job ends `failed` with the error, rather than being retried forever.
//! Stopped at shutdown, the worker gives its leases back, so that another
//! server resumes its jobs at once instead of when the lease runs out.
//!
//! The worker decides nothing about licences itself: it plans with the
//! domain's planner and reads the store through the same adapters as the
//! use cases (`crate::app`).

mod chunks;
pub(crate) mod license_job;
pub mod per_user;
pub mod webhooks;

use std::collections::HashMap;
use std::time::Duration;

use allot_store::{in_transaction, jobs, Store};

use crate::app::App;

pub use license_job::CHUNK_USERS;

/// The worker's hold on the jobs it claims: its id (a job's `lease_owner`)
/// and how long a claim lasts without renewal. Derefs to the id, which is
/// what the store's lease calls take.
#[derive(Debug, Clone)]
pub struct Lease {
    id: String,
    pub millis: i64,
}

impl std::ops::Deref for Lease {
    type Target = str;
    fn deref(&self) -> &str {
        &self.id
    }
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

/// A running worker.
pub struct Worker {
    app: App,
    lease: Lease,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    pub fn start(app: App) -> Worker {
        let lease = Lease {
            id: allot_store::new_id("wrk"),
            millis: app.config.jobs.lease.as_millis().try_into().unwrap_or(i64::MAX),
        };
        let task = tokio::spawn(run_worker(app.clone(), lease.clone()));
        Worker { app, lease, task }
    }

    /// Stops the worker (a chunk it was writing is rolled back, as after a
    /// crash) and gives back its leases, so that any server picks its jobs
    /// up at once.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        let released = in_transaction!(self.app.store, |tx| jobs::release_leases(&mut tx, &self.lease).await);
        match released {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "gave back the leases of unfinished jobs"),
            Err(e) => tracing::error!(error = ?e, "cannot give back job leases; they run out by themselves"),
        }
    }
}

/// Runs a job with `App::job_running` set (cleared however the run ends,
/// or if the task is aborted).
async fn running<T>(app: &App, run: impl std::future::Future<Output = T>) -> T {
    struct Running<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for Running<'_> {
        fn drop(&mut self) {
            self.0.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }
    app.job_running.store(true, std::sync::atomic::Ordering::SeqCst);
    let _running = Running(&app.job_running);
    run.await
}

/// Runs until the task is aborted.
async fn run_worker(app: App, lease: Lease) {
    let mut failed_runs: HashMap<String, u32> = HashMap::new();
    let purge_every = app.config.purge_interval;
    let retry_ms: i64 = app.config.jobs.retry.as_millis().try_into().unwrap_or(i64::MAX);
    let mut last_purge: Option<std::time::Instant> = None;
    loop {
        if last_purge.is_none_or(|t| t.elapsed() >= purge_every) {
            last_purge = Some(std::time::Instant::now());
            let system = allot_store::audit::Actor {
                actor: "system:retention".into(),
                request_id: None,
            };
            match crate::app::retention::purge_expired(&app, &system).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "purged service data whose retention ended"),
                Err(e) => tracing::error!(error = ?e, "cannot purge expired service data; trying again later"),
            }
            match crate::app::retention::purge_idempotency_keys(&app).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(keys = n, "purged idempotency keys past their time to live"),
                Err(e) => tracing::error!(error = ?e, "cannot purge idempotency keys; trying again later"),
            }
            match crate::app::admins::end_idle_sessions(&app).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, "ended console sessions idle too long"),
                Err(e) => tracing::error!(error = ?e, "cannot end idle console sessions; trying again later"),
            }
        }
        match next_job(&app.store).await {
            Ok(Some((org, id))) => match running(&app, license_job::run(&app, &lease, &org, &id)).await {
                Ok(()) => {
                    failed_runs.remove(&id);
                }
                Err(e) => {
                    let runs = failed_runs.entry(id.clone()).or_default();
                    *runs += 1;
                    let runs = *runs;
                    if runs >= MAX_FAILED_RUNS {
                        tracing::error!(job = %id, error = ?e, runs, "job failed too many times in a row; giving it up");
                        if let Err(e) = chunks::give_up(&app, &org, &id, runs, &e).await {
                            tracing::error!(job = %id, error = ?e, "cannot mark the job failed; it is retried later");
                        }
                        failed_runs.remove(&id);
                    } else {
                        tracing::error!(job = %id, error = ?e, runs, "job stopped; it is retried");
                        let until = now_ms() + retry_ms.saturating_mul(i64::from(runs));
                        let postponed = in_transaction!(app.store, |tx| jobs::postpone(&mut tx, &org, &id, &lease, until).await);
                        if let Err(e) = postponed {
                            tracing::error!(job = %id, error = ?e, "cannot postpone the job; it resumes when its lease runs out");
                        }
                    }
                }
            },
            Ok(None) => {
                // Nothing claimable: wait for a new job, or look again soon
                // (another server's job whose lease runs out).
                let _ = tokio::time::timeout(Duration::from_millis(250), app.jobs_queued.notified()).await;
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
