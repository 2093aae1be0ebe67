//! One chunk planned with the one planner (every user against the pools,
//! which carry earlier users' seats), and written: seats, audit events,
//! results.

use std::collections::HashMap;

use allot_domain::bulk::{change_for_user, UserResult};
use allot_domain::planner::{plan_in_batch, Held, LicensePlan, Pool};
use allot_domain::Code;
use allot_store::jobs::Job;
use allot_store::licenses::{self};
use allot_store::webhooks::Reach;
use allot_store::{users, Backend, StoreError, Tx};

use super::super::chunks::{keep_lease, ChunkRecord, ChunkWork};
use super::super::Lease;
use crate::app::facts::user_facts;

use super::{planned_users, pools, Setting};

/// Plans of one chunk: the results in user order, and the users to apply.
pub(crate) struct ChunkPlans {
    pub(crate) results: Vec<UserResult>,
    /// (user, licences before, plan) of the users whose change is allowed.
    pub(crate) apply: Vec<(String, Vec<Held>, LicensePlan)>,
    /// Users refused (among other reasons or only) for want of a seat.
    pub(crate) short_of_seats: usize,
}

/// Plans every user of a chunk against `pools`, which it updates as seats
/// are taken and released so that later users see earlier users' seats.
pub(super) async fn plan_chunk(
    tx: &mut Tx,
    job: &Job,
    setting: &Setting,
    chunk: &[String],
    pools: &mut [Pool],
    today: chrono::NaiveDate,
) -> Result<ChunkPlans, StoreError> {
    let mut facts: HashMap<String, users::User> = users::many(tx, &job.org, chunk)
        .await?
        .into_iter()
        .map(|u| (u.id.clone(), u))
        .collect();
    let mut held_by_user = licenses::of_users(tx, &job.org, chunk).await?;
    let mut queue_billed = allot_store::queues::billed_of(tx, &job.org, chunk).await?;
    let mut out = ChunkPlans {
        results: Vec::with_capacity(chunk.len()),
        apply: Vec::new(),
        short_of_seats: 0,
    };
    for uid in chunk {
        // Taken, not cloned: a chunk lists each user once (a job refuses a
        // list with a user twice; a filter yields each user once).
        let Some(u) = facts.remove(uid) else {
            out.results.push(UserResult::user_gone(uid));
            continue;
        };
        let held: Vec<Held> = held_by_user
            .remove(uid)
            .map(|v| v.into_iter().map(|a| a.held).collect())
            .unwrap_or_default();
        let Some(change) = change_for_user(&setting.req, &held, &setting.mapping) else {
            let mut r = UserResult::skipped(uid, None, format!("{} already has what this job asks for.", u.email));
            r.email = Some(u.email);
            out.results.push(r);
            continue;
        };
        let user = user_facts(u, queue_billed.remove(uid).unwrap_or_default());
        match plan_in_batch(&user, &setting.org_facts, &held, &setting.catalogue, pools, today, &change) {
            Ok(plan) => {
                let mut r = UserResult::ok(uid, &plan);
                r.email = Some(user.email);
                out.results.push(r);
                out.apply.push((uid.clone(), held, plan));
            }
            Err(violations) => {
                if violations.iter().any(|v| v.code == Code::SeatsExhausted) {
                    out.short_of_seats += 1;
                }
                let mut r = UserResult::error(uid, &violations);
                r.email = Some(user.email);
                out.results.push(r);
            }
        }
    }
    Ok(out)
}

/// Takes and releases the planned seats (`seats` built from `plans`). A
/// full pool means the chunk was planned against counts someone else
/// changed since: plan it again.
pub(super) async fn apply_seats(
    tx: &mut Tx,
    job: &Job,
    setting: &Setting,
    plans: &[(String, Vec<Held>, LicensePlan)],
    seats: licenses::SeatChanges,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let planned = planned_users(plans);
    match licenses::apply_seat_changes(tx, &job.org, seats, &planned, &setting.catalogue, now).await? {
        Ok(()) => Ok(()),
        Err(full) => Err(StoreError::Replan(format!(
            "pool {} of {} filled concurrently",
            full.subscription, full.product
        ))),
    }
}

/// Everything a chunk writes, as statements built from its plans before
/// the write: its seats, audit events and results.
pub(super) struct ChunkWrite {
    pub(super) seats: licenses::SeatChanges,
    pub(super) events: licenses::ChangeEvents,
    pub(super) record: ChunkRecord,
}

impl ChunkWrite {
    pub(super) fn of(
        backend: Backend,
        job: &Job,
        setting: &Setting,
        seq: i64,
        plans: &ChunkPlans,
        now: chrono::DateTime<chrono::Utc>,
    ) -> ChunkWrite {
        let planned = planned_users(&plans.apply);
        ChunkWrite {
            seats: licenses::seat_changes(backend, &job.org, &planned, now),
            events: licenses::change_events(backend, &job.org, &planned, &setting.actor, now, Reach::Unknown),
            record: ChunkRecord::of(seq, &plans.results),
        }
    }
}

/// Applies a chunk's plans and records its audit events, results and
/// progress (`write` built from the same plans, at `now`), renewing the
/// job's lease.
pub(super) async fn write_chunk(
    tx: &mut Tx,
    job: &Job,
    owner: &Lease,
    setting: &Setting,
    plans: &ChunkPlans,
    write: ChunkWrite,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let record = apply_chunk(tx, job, setting, plans, write, now).await?;
    // The job's row last: on PostgreSQL the chunks in flight share it, so
    // its lock is held only from here to the commit.
    keep_lease(tx, job, owner, now).await?;
    record.store(tx, job, owner).await
}

/// Applies a chunk's plans and records its audit events; returns its
/// results, still to be stored.
pub(super) async fn apply_chunk(
    tx: &mut Tx,
    job: &Job,
    setting: &Setting,
    plans: &ChunkPlans,
    write: ChunkWrite,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<ChunkRecord, StoreError> {
    apply_seats(tx, job, setting, &plans.apply, write.seats, now).await?;
    licenses::record_events(tx, write.events).await?;
    Ok(write.record)
}

impl ChunkWork for Setting {
    type Plans = ChunkPlans;

    async fn pools(&self, tx: &mut Tx, job: &Job) -> Result<Vec<Pool>, StoreError> {
        pools(tx, job, self).await
    }

    /// Lock first, then read: the plans see current seats.
    async fn plan_locked(&self, tx: &mut Tx, job: &Job, entries: &[String], today: chrono::NaiveDate) -> Result<ChunkPlans, StoreError> {
        users::lock_licenses(tx, &job.org, entries).await?;
        let mut pools = pools(tx, job, self).await?;
        plan_chunk(tx, job, self, entries, &mut pools, today).await
    }

    async fn plan_on(
        &self,
        tx: &mut Tx,
        job: &Job,
        entries: &[String],
        pools: &mut [Pool],
        today: chrono::NaiveDate,
    ) -> Result<ChunkPlans, StoreError> {
        plan_chunk(tx, job, self, entries, pools, today).await
    }

    fn results(plans: &ChunkPlans) -> &[UserResult] {
        &plans.results
    }

    async fn apply(&self, tx: &mut Tx, job: &Job, plans: &ChunkPlans, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
        let planned = planned_users(&plans.apply);
        let seats = licenses::seat_changes(tx.backend(), &job.org, &planned, now);
        let events = licenses::change_events(tx.backend(), &job.org, &planned, &self.actor, now, Reach::Unknown);
        apply_seats(tx, job, self, &plans.apply, seats, now).await?;
        licenses::record_events(tx, events).await
    }
}
