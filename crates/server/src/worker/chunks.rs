//! The skeleton every job that works chunk by chunk shares: a chunk is
//! read, planned and written in one transaction, together with its results
//! and the job's progress, renewing the job's lease; a dry run plans each
//! chunk on reads, carries its seat counts to the next chunk in memory, and
//! writes only the results. What a chunk plans and writes is the job's
//! own ([`ChunkWork`]): a bulk licence change (`license_job`), or a change
//! derived per user from an import row or a template (`per_user`).

use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};

use allot_domain::bulk::{JobState, Outcome, UserResult};
use allot_domain::planner::Pool;
use allot_domain::{Code, Error};
use allot_store::jobs::{self, ChunkDone, Job, PackedResults};
use allot_store::{in_transaction, ts, StoreError, Tx};

use super::{now_ms, Lease};
use crate::app::jobs::JobError;
use crate::app::App as AppState;

/// What a job plans and writes for one chunk of its entries (user ids, or
/// import rows).
pub(super) trait ChunkWork: Sync {
    type Plans: Send + Sync;

    /// The pools the plans take seats from, read in `tx`.
    fn pools(&self, tx: &mut Tx, job: &Job) -> impl Future<Output = Result<Vec<Pool>, StoreError>> + Send;

    /// Plans the entries inside a write transaction: locks their users'
    /// licences first and reads what it plans from then, so that a single
    /// change planned before it fails its claim and plans again afterwards.
    fn plan_locked(
        &self,
        tx: &mut Tx,
        job: &Job,
        entries: &[String],
        today: NaiveDate,
    ) -> impl Future<Output = Result<Self::Plans, StoreError>> + Send;

    /// Plans the entries on reads against `pools`, which it updates as
    /// seats are taken and released (a dry run's arithmetic).
    fn plan_on(
        &self,
        tx: &mut Tx,
        job: &Job,
        entries: &[String],
        pools: &mut [Pool],
        today: NaiveDate,
    ) -> impl Future<Output = Result<Self::Plans, StoreError>> + Send;

    /// Every entry's result, in entry order.
    fn results(plans: &Self::Plans) -> &[UserResult];

    /// Writes what the plans change (everything but the results).
    fn apply(&self, tx: &mut Tx, job: &Job, plans: &Self::Plans, now: DateTime<Utc>)
        -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// How running a job's chunks ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ChunkRun {
    Done,
    Cancelled,
}

/// A chunk read, planned (locked) and written in the caller's transaction,
/// with its results and the job's progress.
pub(super) async fn write_chunk_locked<W: ChunkWork>(
    tx: &mut Tx,
    job: &Job,
    owner: &Lease,
    work: &W,
    seq: i64,
    today: NaiveDate,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let entries = jobs::chunk_users(tx, &job.org, &job.id, seq).await?;
    let plans = work.plan_locked(tx, job, &entries, today).await?;
    work.apply(tx, job, &plans, now).await?;
    // The job's row last: on PostgreSQL the chunks in flight share it, so
    // its lock is held only from here to the commit.
    keep_lease(tx, job, owner, now).await?;
    record_chunk(tx, job, owner, seq, W::results(&plans)).await
}

/// One chunk, planned and written in a transaction of its own (unless the
/// job was asked to stop).
pub(super) async fn run_chunk<W: ChunkWork>(st: &AppState, job: &Job, owner: &Lease, work: &W, seq: i64) -> Result<ChunkRun, Error> {
    if cancelled(st, job).await? {
        return Ok(ChunkRun::Cancelled);
    }
    let (today, now) = (st.clock.today(), st.clock.now());
    in_transaction!(st.store, |tx| write_chunk_locked(&mut tx, job, owner, work, seq, today, now).await)?;
    Ok(ChunkRun::Done)
}

/// The chunks one after the other, each in its own transaction.
pub(super) async fn run_in_order<W: ChunkWork>(
    st: &AppState,
    job: &Job,
    owner: &Lease,
    work: &W,
    pending: Vec<i64>,
) -> Result<ChunkRun, Error> {
    for seq in pending {
        if run_chunk(st, job, owner, work, seq).await? == ChunkRun::Cancelled {
            return Ok(ChunkRun::Cancelled);
        }
    }
    Ok(ChunkRun::Done)
}

/// A dry run: writes nothing but results, so its seat arithmetic carries
/// from chunk to chunk in memory, one chunk after the other.
pub(super) async fn run_dry<W: ChunkWork>(st: &AppState, job: &Job, owner: &Lease, work: &W, pending: Vec<i64>) -> Result<ChunkRun, Error> {
    let mut dry_pools: Option<Vec<Pool>> = None;
    for seq in pending {
        if cancelled(st, job).await? {
            return Ok(ChunkRun::Cancelled);
        }
        let (today, now) = (st.clock.today(), st.clock.now());
        let mut rd = st.store.read_conn().await?;
        if dry_pools.is_none() {
            dry_pools = Some(work.pools(&mut rd, job).await?);
        }
        let entries = jobs::chunk_users(&mut rd, &job.org, &job.id, seq).await?;
        let pools = dry_pools.as_mut().ok_or_else(|| Error::internal("dry-run pools were not read"))?;
        let plans = work.plan_on(&mut rd, job, &entries, pools, today).await?;
        drop(rd);
        in_transaction!(st.store, |tx| {
            keep_lease(&mut tx, job, owner, now).await?;
            record_chunk(&mut tx, job, owner, seq, W::results(&plans)).await
        })?;
    }
    Ok(ChunkRun::Done)
}

/// A dry run's seat arithmetic lives in memory: one interrupted (the server
/// stopped) starts over. Returns the job as it is then.
pub(super) async fn restart_dry_run(st: &AppState, job: Job) -> Result<Job, Error> {
    if job.done == 0 {
        return Ok(job);
    }
    in_transaction!(st.store, |tx| jobs::reset_progress(&mut tx, &job.org, &job.id).await)?;
    reload(st, &job).await
}

/// Ends a job `cancelled`.
pub(super) async fn finish_cancelled(st: &AppState, job: &Job) -> Result<(), Error> {
    end(st, job, JobState::Cancelled, None).await
}

/// Ends a job in `state`, with the stored error of a failed one.
async fn end(st: &AppState, job: &Job, state: JobState, error: Option<String>) -> Result<(), Error> {
    let now = st.clock.now();
    in_transaction!(st.store, |tx| jobs::finish(&mut tx, &job.org, &job.id, state, error.clone(), now)
        .await)
}

/// How a job whose chunks all ran ends: with errors if any entry failed.
pub(super) async fn end_state(st: &AppState, job: &Job) -> Result<JobState, Error> {
    let done = reload(st, job).await?;
    Ok(if done.failed > 0 {
        JobState::CompletedWithErrors
    } else {
        JobState::Succeeded
    })
}

/// Renews the lease inside a chunk's transaction; a lost lease (another
/// worker took the job over) aborts the chunk, which then writes nothing.
pub(super) async fn keep_lease(tx: &mut Tx, job: &Job, owner: &Lease, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    let t = now_ms();
    if jobs::take_lease(tx, &job.org, &job.id, owner, t, t + owner.millis, &ts(now)).await? {
        Ok(())
    } else {
        Err(StoreError::Domain(Error::new(Code::Conflict, "the job's lease was lost")))
    }
}

pub(super) async fn reload(st: &AppState, job: &Job) -> Result<Job, Error> {
    load(st, &job.org, &job.id).await
}

async fn load(st: &AppState, org: &str, id: &str) -> Result<Job, Error> {
    let mut rd = st.store.read_conn().await?;
    jobs::get(&mut rd, org, id)
        .await?
        .ok_or_else(|| Error::not_found(format!("Job {id}")))
}

pub(super) async fn renew(st: &AppState, owner: &Lease, org: &str, id: &str) -> Result<bool, Error> {
    let now = ts(st.clock.now());
    in_transaction!(st.store, |tx| {
        let t = now_ms();
        jobs::take_lease(&mut tx, org, id, owner, t, t + owner.millis, &now).await
    })
}

/// Ends a job whose runs kept failing (see `MAX_FAILED_RUNS`): `failed`,
/// with the last error; chunks already done stay done.
pub(super) async fn give_up(st: &AppState, org: &str, id: &str, runs: u32, last: &Error) -> Result<(), Error> {
    let job = load(st, org, id).await?;
    let e = Error::new(
        last.code,
        format!("The job failed {runs} times in a row and was given up: {}", last.detail),
    );
    fail(st, &job, &e).await
}

/// A job that cannot run at all (its move names a subscription that no
/// longer fits, say) ends `failed` with the reason.
pub(super) async fn fail(st: &AppState, job: &Job, e: &Error) -> Result<(), Error> {
    end(st, job, JobState::Failed, Some(JobError::of(e).to_stored())).await
}

/// Users refused among results.
pub(super) fn refusals(results: &[UserResult]) -> i64 {
    results.iter().filter(|r| r.outcome == Outcome::Error).count() as i64
}

/// A chunk's results as stored (serialized, counted), ready to be written.
pub(super) struct ChunkRecord {
    seq: i64,
    results: PackedResults,
    succeeded: i64,
    failed: i64,
    count: i64,
}

impl ChunkRecord {
    /// Succeeded: changed, or already as asked (skipped without a code); a
    /// user skipped for a reason (not applied, cancelled) counts as done only.
    pub(super) fn of(seq: i64, results: &[UserResult]) -> ChunkRecord {
        ChunkRecord {
            seq,
            // Plain structs of strings: serializing them cannot fail.
            results: PackedResults::of_json(&serde_json::to_string(results).unwrap_or_else(|_| "[]".into())),
            succeeded: results
                .iter()
                .filter(|r| r.outcome == Outcome::Ok || (r.outcome == Outcome::Skipped && r.code.is_none()))
                .count() as i64,
            failed: refusals(results),
            count: results.len() as i64,
        }
    }

    /// Stores the results, marks the chunk done and adds it to the job's progress.
    pub(super) async fn store(&self, tx: &mut Tx, job: &Job, owner: &Lease) -> Result<(), StoreError> {
        let chunk = ChunkDone {
            seq: self.seq,
            results: &self.results,
            succeeded: self.succeeded,
            failed: self.failed,
            count: self.count,
        };
        jobs::complete_chunk(tx, &job.org, &job.id, owner, &chunk).await
    }
}

/// Stores a chunk's results, marks it done and adds it to the job's progress.
pub(super) async fn record_chunk(tx: &mut Tx, job: &Job, owner: &Lease, seq: i64, results: &[UserResult]) -> Result<(), StoreError> {
    ChunkRecord::of(seq, results).store(tx, job, owner).await
}

pub(super) async fn cancelled(st: &AppState, job: &Job) -> Result<bool, Error> {
    let mut rd = st.store.read_conn().await?;
    Ok(jobs::cancel_requested(&mut rd, &job.org, &job.id).await?)
}
