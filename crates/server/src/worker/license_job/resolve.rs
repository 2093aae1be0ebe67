//! A filter job's users, found when it starts, and the capacity check
//! that refuses a job as a whole before anything is written.

use std::collections::BTreeMap;

use allot_domain::bulk::{capacity_violations, Demand, JobState, UserResult};
use allot_domain::planner::Held;
use allot_domain::types::ProductCode;
use allot_domain::Error;
use allot_store::jobs::{self, Job};
use allot_store::licenses::{self};
use allot_store::{in_transaction, subscriptions, users, StoreError};

use super::super::chunks::{keep_lease, record_chunk};
use super::super::Lease;
use crate::app::jobs::JobError;
use crate::app::App as AppState;

use super::ahead::PlanningAhead;
use super::{Setting, CHUNK_USERS};

/// Chunks a filter job's resolution writes per commit: fewer commits (each
/// a WAL flush) while a few chunks' ids in memory stay small.
pub(super) const RESOLVE_CHUNKS_PER_COMMIT: usize = 4;

/// Splits a filter's users into chunks (the list of a `users` job was split
/// when it was created). The users are those matching when the job starts.
/// A few chunks in memory at a time (`RESOLVE_CHUNKS_PER_COMMIT`), written
/// as they are read; the first commit drops the chunks of a resolution a
/// restart interrupted, and the last marks the job resolved. With
/// `plan_first`, the first chunk is stored alone and starts being planned
/// ahead at once, while the rest resolves; no licence is written before the
/// whole job is resolved and its capacity checked.
pub(super) async fn resolve(
    st: &AppState,
    job: &Job,
    owner: &Lease,
    setting: &Setting,
    plan_first: bool,
) -> Result<Option<PlanningAhead>, Error> {
    let Some(filter) = &setting.req.filter else {
        return Err(Error::internal(format!("job {} has neither users nor filter", job.id)));
    };
    let mut after = String::new();
    let (mut seq, mut total) = (0i64, 0i64);
    let mut pages: Vec<Vec<String>> = Vec::with_capacity(RESOLVE_CHUNKS_PER_COMMIT);
    let mut first_planned = None;
    // An idle window ends on the day the job starts.
    let today = st.clock.today();
    loop {
        let page = {
            let mut rd = st.store.read_conn().await?;
            users::ids_matching(&mut rd, &job.org, filter, today, &after, CHUNK_USERS as i64).await?
        };
        let last_page = page.len() < CHUNK_USERS;
        if let Some(last) = page.last() {
            after = last.clone();
            total += page.len() as i64;
            pages.push(page);
        }
        // The first chunk is stored alone when it is to be planned at once.
        let batch_full = pages.len() == RESOLVE_CHUNKS_PER_COMMIT || (seq == 0 && plan_first);
        if last_page || batch_full {
            let now = st.clock.now();
            let first_batch = seq == 0;
            in_transaction!(st.store, |tx| {
                // Renewed with every commit: resolving a million users outlasts a short lease.
                keep_lease(&mut tx, job, owner, now).await?;
                if first_batch {
                    // Chunks of a resolution that a restart interrupted.
                    jobs::delete_chunks(&mut tx, &job.org, &job.id).await?;
                }
                jobs::insert_chunks(&mut tx, &job.org, &job.id, seq, &pages).await?;
                if last_page {
                    jobs::set_resolved(&mut tx, &job.org, &job.id, seq + pages.len() as i64, total).await?;
                }
                Ok::<_, StoreError>(())
            })?;
            if first_batch && plan_first && !pages.is_empty() {
                first_planned = Some(PlanningAhead::start(st, job, std::sync::Arc::new(setting.clone()), 0, None));
            }
            seq += pages.len() as i64;
            pages.clear();
        }
        if last_page {
            break;
        }
    }
    Ok(first_planned)
}

/// Each product's seats needed against its free seats, before
/// anything is written. Counting who already holds a product is only needed
/// when the job has more users than there are free seats.
pub(super) async fn capacity_check(st: &AppState, job: &Job, setting: &Setting) -> Result<Vec<allot_domain::Violation>, Error> {
    let req = &setting.req;
    let today = st.clock.today();
    let mut rd = st.store.read_conn().await?;
    let codes: Vec<&ProductCode> = setting.pool_products.iter().collect();
    let pools = subscriptions::pools_for(&mut rd, &job.org, &codes).await?;
    let free_of = |product: &ProductCode, sub: Option<&str>| -> i64 {
        pools
            .iter()
            .filter(|p| &p.product == product && sub.is_none_or(|s| s == p.subscription) && p.assignable(today))
            .map(|p| (p.quantity - p.consumed).max(0))
            .sum()
    };
    // (product, subscription named or not) → free seats.
    let mut wanted: Vec<(ProductCode, Option<String>, i64)> = req
        .add
        .iter()
        .map(|a| {
            (
                a.product.clone(),
                a.subscription.clone(),
                free_of(&a.product, a.subscription.as_deref()),
            )
        })
        .collect();
    if let Some(spec) = &req.move_ {
        for (_, to) in &setting.mapping {
            wanted.push((
                to.clone(),
                Some(spec.to_subscription.clone()),
                free_of(to, Some(&spec.to_subscription)),
            ));
        }
    }
    if wanted.iter().all(|(_, _, free)| *free >= job.total) {
        return Ok(Vec::new());
    }
    // Count exactly: users not holding an added product need a seat; a move
    // needs one per user holding the product on the source subscription.
    let mut needed: BTreeMap<(ProductCode, Option<String>), i64> = BTreeMap::new();
    for (_, users_of_chunk) in jobs::all_chunk_users(&mut rd, &job.org, &job.id).await? {
        let held = licenses::of_users(&mut rd, &job.org, &users_of_chunk).await?;
        for u in &users_of_chunk {
            let h: Vec<Held> = held.get(u).map(|v| v.iter().map(|a| a.held.clone()).collect()).unwrap_or_default();
            for a in &req.add {
                if !h.iter().any(|x| x.product == a.product) {
                    *needed.entry((a.product.clone(), a.subscription.clone())).or_default() += 1;
                }
            }
            if let Some(spec) = &req.move_ {
                for (from, to) in &setting.mapping {
                    if h.iter().any(|x| &x.product == from && x.subscription == spec.from_subscription) {
                        *needed.entry((to.clone(), Some(spec.to_subscription.clone()))).or_default() += 1;
                    }
                }
            }
        }
    }
    let demands: Vec<Demand> = wanted
        .into_iter()
        .map(|(product, subscription, free)| Demand {
            needed: needed.get(&(product.clone(), subscription.clone())).copied().unwrap_or(0),
            product,
            subscription,
            free,
        })
        .collect();
    Ok(capacity_violations(&demands, &setting.catalogue))
}

/// The whole job is refused: every user's result says why, nothing else is written.
pub(super) async fn refuse_whole_job(st: &AppState, job: &Job, owner: &Lease, refused: Vec<allot_domain::Violation>) -> Result<(), Error> {
    let e = Error::rejected(refused);
    let error = JobError::of(&e).to_stored();
    let message = e.violations.iter().map(|v| v.message.as_str()).collect::<Vec<_>>().join(" ");
    let now = st.clock.now();
    let chunks = {
        let mut rd = st.store.read_conn().await?;
        jobs::all_chunk_users(&mut rd, &job.org, &job.id).await?
    };
    in_transaction!(st.store, |tx| {
        for (seq, users_of_chunk) in &chunks {
            let results: Vec<UserResult> = users_of_chunk
                .iter()
                .map(|u| UserResult {
                    code: Some(e.code.as_str().to_string()),
                    message: Some(message.clone()),
                    ..UserResult::error(u, &[])
                })
                .collect();
            record_chunk(&mut tx, job, owner, *seq, &results).await?;
        }
        jobs::finish(&mut tx, &job.org, &job.id, JobState::Failed, Some(error.clone()), now).await
    })
}
