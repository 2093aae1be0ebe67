//! `per_user` on SQLite: while the one writer writes a chunk, the next is
//! read and planned on a read snapshot, on another core.

use allot_domain::planner::Pool;
use allot_domain::Error;
use allot_store::jobs::{self, Job};
use allot_store::license_epochs::{self, LicenseEpoch};
use allot_store::licenses::{self};
use allot_store::{in_transaction, StoreError};

use super::super::chunks::{self, cancelled, ChunkRun};
use super::super::Lease;
use crate::app::App as AppState;

use super::plan::{plan_chunk, write_chunk, ChunkPlans, ChunkWrite};
use super::{planned_users, Setting};

/// A chunk read and planned on a read snapshot ahead of the writer.
pub(super) struct PlannedAhead {
    pub(super) seq: i64,
    /// The org's licence-write counts the plans were made on.
    pub(super) epoch: LicenseEpoch,
    pub(super) plans: ChunkPlans,
    /// Its audit events and results, built at `now`.
    pub(super) write: ChunkWrite,
    pub(super) now: chrono::DateTime<chrono::Utc>,
    /// The pools as this chunk's plans leave them, for the next chunk.
    pub(super) pools: Vec<Pool>,
}

/// Reads a chunk's users and their licences in one snapshot and plans them
/// against `pools` (read from the snapshot when `None`).
pub(super) async fn plan_ahead(
    st: &AppState,
    job: &Job,
    setting: &Setting,
    seq: i64,
    pools: Option<Vec<Pool>>,
) -> Result<PlannedAhead, Error> {
    let today = st.clock.today();
    let now = st.clock.now();
    let mut rd = st.store.begin_read().await?;
    let epoch = license_epochs::read(&mut rd, &job.org).await?;
    let chunk = jobs::chunk_users(&mut rd, &job.org, &job.id, seq).await?;
    let mut pools = match pools {
        Some(p) => p,
        None => super::pools(&mut rd, job, setting).await?,
    };
    let plans = plan_chunk(&mut rd, job, setting, &chunk, &mut pools, today).await?;
    // On the same snapshot, off the writer's path (the claim of the chunk
    // vouches that no licence write changed these users' rows since).
    let stored = licenses::stored_service_data(&mut rd, &job.org, &planned_users(&plans.apply), &setting.catalogue).await?;
    rd.commit().await?;
    let mut write = ChunkWrite::of(st.store.backend(), job, setting, seq, &plans, now);
    write.seats = write.seats.with_stored_service_data(stored);
    Ok(PlannedAhead {
        seq,
        epoch,
        plans,
        write,
        now,
        pools,
    })
}

/// Writes a chunk planned ahead. Its plans are used when no other licence
/// write of the org landed since its snapshot but this job's previous chunk
/// (`own_last`, see [`license_epochs::claim_chunk_ahead`]) and nobody was
/// refused for want of a seat; otherwise (a single change or another job
/// meanwhile, a refusal for seats that others may have freed since, or a
/// pool that filled meanwhile, which the guarded counters report) the chunk
/// is planned again inside the transaction as `chunks::run_chunk` does. A refusal by
/// the rules thus rests on the same kind of snapshot a single change is
/// refused on, a seat refusal or a seat choice on current counts. Returns
/// the org's count of chunks planned ahead after this one when its plans
/// were used.
pub(super) async fn write_planned(
    st: &AppState,
    job: &Job,
    owner: &Lease,
    setting: &Setting,
    ahead: PlannedAhead,
    own_last: Option<i64>,
) -> Result<Option<i64>, Error> {
    let seq = ahead.seq;
    let mut ahead = Some(ahead);
    let mut spent: Option<ChunkPlans> = None;
    let written = in_transaction!(st.store, |tx| {
        // Only the first attempt may use it: a retry follows a conflict.
        let usable = match ahead.take() {
            Some(a) if a.plans.short_of_seats == 0 => license_epochs::claim_chunk_ahead(&mut tx, &job.org, a.epoch, own_last)
                .await?
                .map(|count| (count, a)),
            _ => None,
        };
        match usable {
            Some((count, a)) => {
                write_chunk(&mut tx, job, owner, setting, &a.plans, a.write, a.now).await?;
                spent = Some(a.plans);
                Ok::<_, StoreError>(Some(count))
            }
            None => {
                tracing::debug!(job = %job.id, seq, "chunk planned again in its transaction");
                chunks::write_chunk_locked(&mut tx, job, owner, setting, seq, st.clock.today(), st.clock.now()).await?;
                Ok(None)
            }
        }
    });
    // Thousands of plans to free: not while holding the writer, nor on the
    // way to writing the next chunk.
    if let Some(plans) = spent {
        tokio::spawn(async move { drop(plans) });
    }
    written
}

/// A chunk being planned ahead on a task of its own, so that its planning
/// runs on another core than the writer's work. Dropped unfinished (the
/// job stopped), the planning is called off: it only reads.
pub(super) struct PlanningAhead {
    pub(super) seq: i64,
    pub(super) task: tokio::task::JoinHandle<Result<PlannedAhead, Error>>,
}

impl PlanningAhead {
    pub(super) fn start(st: &AppState, job: &Job, setting: std::sync::Arc<Setting>, seq: i64, pools: Option<Vec<Pool>>) -> PlanningAhead {
        let (st, job) = (st.clone(), job.clone());
        PlanningAhead {
            seq,
            task: tokio::spawn(async move { plan_ahead(&st, &job, &setting, seq, pools).await }),
        }
    }

    pub(super) async fn finish(mut self) -> Result<PlannedAhead, Error> {
        (&mut self.task)
            .await
            .map_err(|e| Error::internal(format!("planning a chunk ahead stopped: {e}")))?
    }
}

impl Drop for PlanningAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `per_user` on SQLite. One writer, so chunks are written one at a time;
/// while the writer writes one chunk, the next is read and planned on a read
/// connection (the other core), carrying the seat counts on in memory.
/// When a chunk had to be planned again in its transaction, the next one's
/// plan rests on counts that were not written: it is planned again after
/// the write, from fresh counts.
pub(super) async fn run_pipelined(
    st: &AppState,
    job: &Job,
    owner: &Lease,
    setting: &Setting,
    pending: Vec<i64>,
    first_planned: Option<PlanningAhead>,
) -> Result<ChunkRun, Error> {
    let mut queue = pending.into_iter();
    let Some(first) = queue.next() else {
        return Ok(ChunkRun::Done);
    };
    let mut ahead = match first_planned {
        Some(planning) if planning.seq == first => planning.finish().await?,
        _ => plan_ahead(st, job, setting, first, None).await?,
    };
    let mut own_last = None;
    let shared = std::sync::Arc::new(setting.clone());
    loop {
        if cancelled(st, job).await? {
            return Ok(ChunkRun::Cancelled);
        }
        let pools = std::mem::take(&mut ahead.pools);
        let next = queue.next();
        // A task of its own, so that its planning runs on another core
        // than the write's statements are prepared on.
        let read_next = next.map(|seq| PlanningAhead::start(st, job, shared.clone(), seq, Some(pools)));
        let written = write_planned(st, job, owner, setting, ahead, own_last).await;
        let read = match read_next {
            Some(planning) => Some(planning.finish().await),
            None => None,
        };
        own_last = written?;
        ahead = match (read, next) {
            (None, _) | (_, None) => return Ok(ChunkRun::Done),
            (Some(r), Some(_)) if own_last.is_some() => r?,
            (Some(_), Some(seq)) => plan_ahead(st, job, setting, seq, None).await?,
        };
    }
}
