//! Carrying out a bulk licence job: resolve its users, check capacity before
//! anything is written, then plan every user with the one planner
//! and apply chunk by chunk (`per_user`) or all at once (`all_or_nothing`).

use std::collections::{BTreeMap, HashMap, HashSet};

use allot_domain::bulk::{
    capacity_violations, change_for_user, move_mapping, CancelJobRequest, Demand, JobKind, JobMode, JobState, LicenseJobRequest, Outcome,
    UserResult,
};
use allot_domain::catalogue::Product;
use allot_domain::planner::{count_plan_in, plan_license_change, Held, LicensePlan, OrgFacts, PlanInput, Pool};
use allot_domain::types::ProductCode;
use allot_domain::{Code, Error};
use allot_store::audit::Actor;
use allot_store::jobs::{self, ChunkDone, Job, PackedResults};
use allot_store::licence_epochs::{self, LicenceEpoch};
use allot_store::licenses::{self, PlannedUser};
use allot_store::{catalogue, in_transaction, subscriptions, tenants, ts, users, Backend, StoreError, Tx};

use super::{now_ms, Lease};
use crate::app::facts::{org_facts, user_facts};
use crate::app::jobs::JobError;
use crate::app::App as AppState;

pub use crate::app::jobs::CHUNK_USERS;

/// Chunks a filter job's resolution writes per commit: fewer commits (each
/// a WAL flush) while a few chunks' ids in memory stay small.
const RESOLVE_CHUNKS_PER_COMMIT: usize = 4;

/// Chunks of a `per_user` job in progress at once on PostgreSQL: while one
/// chunk waits for its commit (the WAL flush) or a lock, the others plan and
/// write on their own connections: 100,000 users went from 10.4 s with one
/// chunk at a time to 4.2-6.4 s with two to four (`allot bench bulk`).
/// SQLite has one writer, so more chunks would only queue behind it; there
/// the next chunk is read and planned while the writer writes one
/// (`run_pipelined`).
const CHUNKS_IN_FLIGHT_POSTGRES: usize = 3;

/// What every chunk of one job plans with, read once.
#[derive(Clone)]
struct Setting {
    req: LicenseJobRequest,
    catalogue: HashMap<ProductCode, Product>,
    org_facts: OrgFacts,
    /// Products whose pools the plans may take seats from.
    pool_products: Vec<ProductCode>,
    mapping: Vec<(ProductCode, ProductCode)>,
    actor: Actor,
    /// A `subscription_cancel` job: the subscription cancelled once empty.
    then_cancel: Option<String>,
}

/// A job's stored request: a licence change, and for a `subscription_cancel`
/// job the subscription it empties.
fn parse_request(job: &Job) -> Result<(LicenseJobRequest, Option<String>), Error> {
    let unreadable = |e: serde_json::Error| Error::internal(format!("job {} has an unreadable request: {e}", job.id));
    if job.kind == JobKind::SubscriptionCancel {
        let r: CancelJobRequest = serde_json::from_str(&job.request).map_err(unreadable)?;
        Ok((r.change, Some(r.subscription)))
    } else {
        Ok((serde_json::from_str(&job.request).map_err(unreadable)?, None))
    }
}

async fn load_setting(st: &AppState, job: &Job) -> Result<Setting, Error> {
    let (req, then_cancel) = parse_request(job)?;
    let mut rd = st.store.read_conn().await?;
    let catalogue = catalogue::all(&mut rd).await?;
    let org = tenants::get_org(&mut rd, &job.org)
        .await?
        .ok_or_else(|| Error::not_found(format!("Organisation {}", job.org)))?;
    let sites = tenants::list_sites(&mut rd, &job.org).await?;
    let org_facts = org_facts(&org, sites);
    let mapping = match &req.move_ {
        Some(spec) => {
            let items = |sub: Option<subscriptions::Subscription>| -> Vec<ProductCode> {
                sub.map(|s| s.items.iter().filter_map(|i| ProductCode::parse(&i.product).ok()).collect())
                    .unwrap_or_default()
            };
            let from = items(subscriptions::get(&mut rd, &job.org, &spec.from_subscription).await?);
            let to = items(subscriptions::get(&mut rd, &job.org, &spec.to_subscription).await?);
            move_mapping(spec, &from, &to, &catalogue)?
        }
        None => Vec::new(),
    };
    let mut pool_products: Vec<ProductCode> = req.add.iter().map(|a| a.product.clone()).collect();
    pool_products.extend(mapping.iter().map(|(_, to)| to.clone()));
    if req.add_required {
        pool_products.extend(catalogue.keys().cloned());
    }
    let mut seen = HashSet::new();
    pool_products.retain(|p| seen.insert(p.clone()));
    Ok(Setting {
        req,
        catalogue,
        org_facts,
        pool_products,
        mapping,
        actor: Actor {
            actor: job.created_by.clone(),
            request_id: Some(format!("job:{}", job.id)),
        },
        then_cancel,
    })
}

/// Carries out one job as far as it goes; returns when it has ended, was
/// taken by another worker, or an error stops it (it resumes later).
pub async fn run(st: &AppState, owner: &Lease, org: &str, id: &str) -> Result<(), Error> {
    if !renew(st, owner, org, id).await? {
        return Ok(());
    }
    let job = {
        let mut rd = st.store.read_conn().await?;
        jobs::get(&mut rd, org, id)
            .await?
            .ok_or_else(|| Error::not_found(format!("Job {id}")))?
    };
    if super::per_user::is_per_user_kind(job.kind) {
        return super::per_user::run(st, owner, job).await;
    }
    let setting = match load_setting(st, &job).await {
        Ok(s) => s,
        Err(e) => return fail(st, &job, &e).await,
    };
    let mut job = job;
    let mut first_planned = None;
    if !job.resolved {
        // A per_user job on SQLite plans its chunks ahead of the writer
        // (`run_pipelined`): its first chunk is planned while the rest of
        // the filter resolves.
        let plan_first = st.store.backend() == Backend::Sqlite && setting.req.mode == JobMode::PerUser && !setting.req.dry_run;
        first_planned = resolve(st, &job, owner, &setting, plan_first).await?;
        job = reload(st, &job).await?;
    }
    if setting.req.dry_run && job.done > 0 {
        // A dry run's seat arithmetic lives in memory: start it over.
        in_transaction!(st.store, |tx| jobs::reset_progress(&mut tx, org, id).await)?;
        job = reload(st, &job).await?;
    }
    if job.done == 0 {
        let refused = capacity_check(st, &job, &setting).await?;
        if !refused.is_empty() {
            return refuse_whole_job(st, &job, owner, refused).await;
        }
    }
    match setting.req.mode {
        JobMode::AllOrNothing => run_all_or_nothing(st, &job, owner, &setting).await,
        JobMode::PerUser => run_per_user(st, &job, owner, &setting, first_planned).await,
    }
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
    let mut rd = st.store.read_conn().await?;
    jobs::get(&mut rd, &job.org, &job.id)
        .await?
        .ok_or_else(|| Error::not_found(format!("Job {}", job.id)))
}

async fn renew(st: &AppState, owner: &Lease, org: &str, id: &str) -> Result<bool, Error> {
    let now = ts(st.clock.now());
    in_transaction!(st.store, |tx| {
        let t = now_ms();
        jobs::take_lease(&mut tx, org, id, owner, t, t + owner.millis, &now).await
    })
}

/// Ends a job whose runs kept failing (see `MAX_FAILED_RUNS`): `failed`,
/// with the last error; chunks already done stay done.
pub(super) async fn give_up(st: &AppState, org: &str, id: &str, runs: u32, last: &Error) -> Result<(), Error> {
    let job = {
        let mut rd = st.store.read_conn().await?;
        jobs::get(&mut rd, org, id)
            .await?
            .ok_or_else(|| Error::not_found(format!("Job {id}")))?
    };
    let e = Error::new(
        last.code,
        format!("The job failed {runs} times in a row and was given up: {}", last.detail),
    );
    fail(st, &job, &e).await
}

/// A job that cannot run at all (its move names a subscription that no
/// longer fits, say) ends `failed` with the reason.
pub(super) async fn fail(st: &AppState, job: &Job, e: &Error) -> Result<(), Error> {
    let error = JobError::of(e).to_stored();
    let now = st.clock.now();
    in_transaction!(st.store, |tx| jobs::finish(
        &mut tx,
        &job.org,
        &job.id,
        JobState::Failed,
        Some(error.clone()),
        now
    )
    .await)
}

/// Splits a filter's users into chunks (the list of a `users` job was split
/// when it was created). The users are those matching when the job starts.
/// A few chunks in memory at a time (`RESOLVE_CHUNKS_PER_COMMIT`), written
/// as they are read; the first commit drops the chunks of a resolution a
/// restart interrupted, and the last marks the job resolved. With
/// `plan_first`, the first chunk is stored alone and starts being planned
/// ahead at once, while the rest resolves; no licence is written before the
/// whole job is resolved and its capacity checked.
async fn resolve(st: &AppState, job: &Job, owner: &Lease, setting: &Setting, plan_first: bool) -> Result<Option<PlanningAhead>, Error> {
    let Some(filter) = &setting.req.filter else {
        return Err(Error::internal(format!("job {} has neither users nor filter", job.id)));
    };
    let mut after = String::new();
    let (mut seq, mut total) = (0i64, 0i64);
    let mut pages: Vec<Vec<String>> = Vec::with_capacity(RESOLVE_CHUNKS_PER_COMMIT);
    let mut first_planned = None;
    loop {
        let page = {
            let mut rd = st.store.read_conn().await?;
            users::ids_matching(&mut rd, &job.org, filter, &after, CHUNK_USERS as i64).await?
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
async fn capacity_check(st: &AppState, job: &Job, setting: &Setting) -> Result<Vec<allot_domain::Violation>, Error> {
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
async fn refuse_whole_job(st: &AppState, job: &Job, owner: &Lease, refused: Vec<allot_domain::Violation>) -> Result<(), Error> {
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

/// Plans of one chunk: the results in user order, and the users to apply.
struct ChunkPlans {
    results: Vec<UserResult>,
    /// (user, licences before, plan) of the users whose change is allowed.
    apply: Vec<(String, Vec<Held>, LicensePlan)>,
    /// Users refused (among other reasons or only) for want of a seat.
    short_of_seats: usize,
}

/// Plans every user of a chunk against `pools`, which it updates as seats
/// are taken and released so that later users see earlier users' seats.
async fn plan_chunk(
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
            out.results.push(UserResult::error(
                uid,
                &[allot_domain::Violation::new(
                    Code::NotFound,
                    format!("User {uid} no longer exists."),
                )],
            ));
            continue;
        };
        let held: Vec<Held> = held_by_user
            .remove(uid)
            .map(|v| v.into_iter().map(|a| a.held).collect())
            .unwrap_or_default();
        let Some(change) = change_for_user(&setting.req, &held, &setting.mapping) else {
            out.results.push(UserResult::skipped(
                uid,
                None,
                format!("{} already has what this job asks for.", u.email),
            ));
            continue;
        };
        let user = user_facts(u, queue_billed.remove(uid).unwrap_or_default());
        let input = PlanInput {
            user: &user,
            org: &setting.org_facts,
            held: &held,
            catalogue: &setting.catalogue,
            pools,
            today,
        };
        match plan_license_change(&input, &change) {
            Ok(plan) => {
                count_plan_in(pools, &plan);
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

/// Users refused among results.
fn refusals(results: &[UserResult]) -> i64 {
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

fn planned_users(plans: &[(String, Vec<Held>, LicensePlan)]) -> Vec<PlannedUser<'_>> {
    plans
        .iter()
        .map(|(u, before, plan)| PlannedUser { user: u, before, plan })
        .collect()
}

/// Takes and releases the planned seats (`seats` built from `plans`). A
/// full pool means the chunk was planned against counts someone else
/// changed since: plan it again.
async fn apply_seats(
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
struct ChunkWrite {
    seats: licenses::SeatChanges,
    events: licenses::ChangeEvents,
    record: ChunkRecord,
}

impl ChunkWrite {
    fn of(backend: Backend, job: &Job, setting: &Setting, seq: i64, plans: &ChunkPlans, now: chrono::DateTime<chrono::Utc>) -> ChunkWrite {
        let planned = planned_users(&plans.apply);
        ChunkWrite {
            seats: licenses::seat_changes(backend, &job.org, &planned, now),
            events: licenses::change_events(backend, &job.org, &planned, &setting.actor, now),
            record: ChunkRecord::of(seq, &plans.results),
        }
    }
}

async fn pools(tx: &mut Tx, job: &Job, setting: &Setting) -> Result<Vec<Pool>, StoreError> {
    let codes: Vec<&ProductCode> = setting.pool_products.iter().collect();
    subscriptions::pools_for(tx, &job.org, &codes).await
}

async fn cancelled(st: &AppState, job: &Job) -> Result<bool, Error> {
    let mut rd = st.store.read_conn().await?;
    Ok(jobs::cancel_requested(&mut rd, &job.org, &job.id).await?)
}

async fn end(st: &AppState, job: &Job, setting: &Setting) -> Result<(), Error> {
    let done = reload(st, job).await?;
    let state = if done.failed > 0 {
        JobState::CompletedWithErrors
    } else {
        JobState::Succeeded
    };
    let now = st.clock.now();
    let Some(sub) = setting.then_cancel.as_deref().filter(|_| !setting.req.dry_run) else {
        return in_transaction!(st.store, |tx| jobs::finish(&mut tx, &job.org, &job.id, state, None, now).await);
    };
    // A cancel job: the subscription is cancelled in the job's finishing
    // transaction if no seat of it is taken any more (users that failed may
    // have lost their seat some other way meanwhile).
    let left = in_transaction!(st.store, |tx| {
        let left = subscriptions::cancel_if_empty(&mut tx, &job.org, sub, now).await?;
        match left {
            None => {
                allot_store::audit::record(
                    &mut tx,
                    Some(&job.org),
                    &setting.actor,
                    "subscription.cancel",
                    &format!("subscription:{sub}"),
                    Some(&serde_json::json!({ "cancelled": false })),
                    Some(&serde_json::json!({ "cancelled": true, "job": job.id })),
                    now,
                )
                .await?;
                jobs::finish(&mut tx, &job.org, &job.id, state, None, now).await?;
            }
            Some(n) => {
                let error = JobError {
                    code: Code::SubscriptionHasUsers,
                    message: format!("Subscription {sub} was not cancelled: {n} seats of it are still taken. See the job's results for the users that could not be moved or removed."),
                    errors: Vec::new(),
                    seats_taken: Some(n),
                }
                .to_stored();
                jobs::finish(&mut tx, &job.org, &job.id, JobState::CompletedWithErrors, Some(error), now).await?;
            }
        }
        Ok::<_, StoreError>(left)
    })?;
    if let Some(n) = left {
        tracing::info!(job = %job.id, subscription = sub, seats_taken = n, "cancel job ended without cancelling");
    }
    Ok(())
}

/// `per_user`: each chunk in its own transaction; each user all or nothing.
async fn run_per_user(
    st: &AppState,
    job: &Job,
    owner: &Lease,
    setting: &Setting,
    first_planned: Option<PlanningAhead>,
) -> Result<(), Error> {
    use futures::StreamExt;
    let pending = {
        let mut rd = st.store.read_conn().await?;
        jobs::pending_chunks(&mut rd, &job.org, &job.id).await?
    };
    if setting.req.dry_run {
        return run_dry(st, job, owner, setting, pending).await;
    }
    let stopped = match st.store.backend() {
        Backend::Sqlite => run_pipelined(st, job, owner, setting, pending, first_planned).await? == ChunkRun::Cancelled,
        Backend::Postgres => {
            let mut chunks = futures::stream::iter(pending)
                .map(|seq| run_chunk(st, job, owner, setting, seq))
                .buffer_unordered(CHUNKS_IN_FLIGHT_POSTGRES);
            let mut stopped = false;
            while let Some(ran) = chunks.next().await {
                stopped |= ran? == ChunkRun::Cancelled;
            }
            stopped
        }
    };
    if stopped {
        let now = st.clock.now();
        return in_transaction!(st.store, |tx| jobs::finish(
            &mut tx,
            &job.org,
            &job.id,
            JobState::Cancelled,
            None,
            now
        )
        .await);
    }
    end(st, job, setting).await
}

#[derive(Debug, PartialEq, Eq)]
enum ChunkRun {
    Done,
    Cancelled,
}

/// One chunk of a `per_user` job, planned and applied in one transaction.
async fn run_chunk(st: &AppState, job: &Job, owner: &Lease, setting: &Setting, seq: i64) -> Result<ChunkRun, Error> {
    if cancelled(st, job).await? {
        return Ok(ChunkRun::Cancelled);
    }
    let today = st.clock.today();
    let now = st.clock.now();
    in_transaction!(st.store, |tx| write_chunk_locked(&mut tx, job, owner, setting, seq, today, now)
        .await)?;
    Ok(ChunkRun::Done)
}

/// A chunk locked, read, planned and written in the caller's transaction.
async fn write_chunk_locked(
    tx: &mut Tx,
    job: &Job,
    owner: &Lease,
    setting: &Setting,
    seq: i64,
    today: chrono::NaiveDate,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let chunk = jobs::chunk_users(tx, &job.org, &job.id, seq).await?;
    let plans = plan_locked(tx, job, setting, &chunk, today).await?;
    let write = ChunkWrite::of(tx.backend(), job, setting, seq, &plans, now);
    write_chunk(tx, job, owner, setting, &plans, write, now).await
}

/// Plans a chunk inside the write transaction: lock first, then read, so a
/// single change planned before this chunk fails its version claim and
/// plans again afterwards, and the plans see current seats.
async fn plan_locked(
    tx: &mut Tx,
    job: &Job,
    setting: &Setting,
    chunk: &[String],
    today: chrono::NaiveDate,
) -> Result<ChunkPlans, StoreError> {
    users::lock_licences(tx, &job.org, chunk).await?;
    let mut pools = pools(tx, job, setting).await?;
    plan_chunk(tx, job, setting, chunk, &mut pools, today).await
}

/// Applies a chunk's plans and records its audit events, results and
/// progress (`write` built from the same plans, at `now`), renewing the
/// job's lease.
async fn write_chunk(
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
async fn apply_chunk(
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

/// A chunk read and planned on a read snapshot ahead of the writer.
struct PlannedAhead {
    seq: i64,
    /// The org's licence-write counts the plans were made on.
    epoch: LicenceEpoch,
    plans: ChunkPlans,
    /// Its audit events and results, built at `now`.
    write: ChunkWrite,
    now: chrono::DateTime<chrono::Utc>,
    /// The pools as this chunk's plans leave them, for the next chunk.
    pools: Vec<Pool>,
}

/// Reads a chunk's users and their licences in one snapshot and plans them
/// against `pools` (read from the snapshot when `None`).
async fn plan_ahead(st: &AppState, job: &Job, setting: &Setting, seq: i64, pools: Option<Vec<Pool>>) -> Result<PlannedAhead, Error> {
    let today = st.clock.today();
    let now = st.clock.now();
    let mut rd = st.store.begin_read().await?;
    let epoch = licence_epochs::read(&mut rd, &job.org).await?;
    let chunk = jobs::chunk_users(&mut rd, &job.org, &job.id, seq).await?;
    let mut pools = match pools {
        Some(p) => p,
        None => self::pools(&mut rd, job, setting).await?,
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
/// (`own_last`, see [`licence_epochs::claim_chunk_ahead`]) and nobody was
/// refused for want of a seat; otherwise (a single change or another job
/// meanwhile, a refusal for seats that others may have freed since, or a
/// pool that filled meanwhile, which the guarded counters report) the chunk
/// is planned again inside the transaction as `run_chunk` does. A refusal by
/// the rules thus rests on the same kind of snapshot a single change is
/// refused on, a seat refusal or a seat choice on current counts. Returns
/// the org's count of chunks planned ahead after this one when its plans
/// were used.
async fn write_planned(
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
            Some(a) if a.plans.short_of_seats == 0 => licence_epochs::claim_chunk_ahead(&mut tx, &job.org, a.epoch, own_last)
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
                write_chunk_locked(&mut tx, job, owner, setting, seq, st.clock.today(), st.clock.now()).await?;
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
struct PlanningAhead {
    seq: i64,
    task: tokio::task::JoinHandle<Result<PlannedAhead, Error>>,
}

impl PlanningAhead {
    fn start(st: &AppState, job: &Job, setting: std::sync::Arc<Setting>, seq: i64, pools: Option<Vec<Pool>>) -> PlanningAhead {
        let (st, job) = (st.clone(), job.clone());
        PlanningAhead {
            seq,
            task: tokio::spawn(async move { plan_ahead(&st, &job, &setting, seq, pools).await }),
        }
    }

    async fn finish(mut self) -> Result<PlannedAhead, Error> {
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
async fn run_pipelined(
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

/// A `per_user` dry run: writes nothing but results, so its seat arithmetic
/// carries from chunk to chunk in memory, one chunk after the other.
async fn run_dry(st: &AppState, job: &Job, owner: &Lease, setting: &Setting, pending: Vec<i64>) -> Result<(), Error> {
    let mut dry_pools: Option<Vec<Pool>> = None;
    for seq in pending {
        if cancelled(st, job).await? {
            let now = st.clock.now();
            return in_transaction!(st.store, |tx| jobs::finish(
                &mut tx,
                &job.org,
                &job.id,
                JobState::Cancelled,
                None,
                now
            )
            .await);
        }
        let today = st.clock.today();
        let now = st.clock.now();
        let mut rd = st.store.read_conn().await?;
        if dry_pools.is_none() {
            dry_pools = Some(pools(&mut rd, job, setting).await?);
        }
        let chunk = jobs::chunk_users(&mut rd, &job.org, &job.id, seq).await?;
        let pools = dry_pools.as_mut().ok_or_else(|| Error::internal("dry-run pools were not read"))?;
        let plans = plan_chunk(&mut rd, job, setting, &chunk, pools, today).await?;
        drop(rd);
        in_transaction!(st.store, |tx| {
            keep_lease(&mut tx, job, owner, now).await?;
            record_chunk(&mut tx, job, owner, seq, &plans.results).await
        })?;
    }
    end(st, job, setting).await
}

/// Plans every user of the job in `tx` and, when all are allowed and it is
/// not a dry run, applies them and marks every chunk done. Returns how many
/// were refused and, when nothing was applied, the plans for the results.
async fn plan_and_apply_all(
    tx: &mut Tx,
    job: &Job,
    owner: &Lease,
    setting: &Setting,
    today: chrono::NaiveDate,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(i64, Vec<(i64, ChunkPlans)>), StoreError> {
    let dry = setting.req.dry_run;
    keep_lease(tx, job, owner, now).await?;
    let chunks = jobs::all_chunk_users(tx, &job.org, &job.id).await?;
    let mut pools = pools(tx, job, setting).await?;
    let mut all: Vec<(i64, ChunkPlans)> = Vec::with_capacity(chunks.len());
    for (seq, chunk) in &chunks {
        if !dry {
            users::lock_licences(tx, &job.org, chunk).await?;
        }
        all.push((*seq, plan_chunk(tx, job, setting, chunk, &mut pools, today).await?));
    }
    let refused: i64 = all.iter().map(|(_, p)| refusals(&p.results)).sum();
    if refused > 0 || dry {
        return Ok((refused, all));
    }
    // The lease was renewed above, in this same transaction.
    for (seq, plans) in &all {
        let write = ChunkWrite::of(tx.backend(), job, setting, *seq, plans, now);
        apply_chunk(tx, job, setting, plans, write, now)
            .await?
            .store(tx, job, owner)
            .await?;
    }
    Ok((0, Vec::new()))
}

/// `all_or_nothing`: every user planned in one transaction; any refusal and
/// nothing is applied (the others are reported as skipped).
async fn run_all_or_nothing(st: &AppState, job: &Job, owner: &Lease, setting: &Setting) -> Result<(), Error> {
    let today = st.clock.today();
    let now = st.clock.now();
    let dry = setting.req.dry_run;
    // Not `in_transaction!`: a refused job must roll back (the user locks
    // included) yet keep its plans for the results.
    let mut attempt = 0u32;
    let outcome = loop {
        let mut tx = st.store.begin().await?;
        let result = plan_and_apply_all(&mut tx, job, owner, setting, today, now).await;
        match result {
            Ok((refused, all)) if refused > 0 || dry => {
                tx.rollback().await?;
                break (refused, all);
            }
            other => match allot_store::finish(tx, other).await {
                allot_store::Outcome::Done(r) => break r?,
                allot_store::Outcome::Retry(e) => {
                    attempt += 1;
                    if attempt > 8 {
                        return Err(e.into());
                    }
                    allot_store::backoff(attempt).await;
                }
            },
        }
    };
    let (refused, all) = outcome;
    if refused == 0 && !dry {
        return end(st, job, setting).await;
    }
    // Refused (or a dry run): write the results alone, in their own transaction.
    in_transaction!(st.store, |tx| {
        for (seq, plans) in &all {
            let results: Vec<UserResult> = plans
                .results
                .iter()
                .map(|r| {
                    if refused > 0 && r.outcome != Outcome::Error {
                        UserResult::skipped(
                            &r.user,
                            Some("not_applied"),
                            format!("Not applied: the job is all or nothing and {refused} users were refused."),
                        )
                    } else {
                        r.clone()
                    }
                })
                .collect();
            record_chunk(&mut tx, job, owner, *seq, &results).await?;
        }
        let (state, error) = if refused > 0 {
            let e = Error::new(
                Code::ValidationFailed,
                format!("{refused} users were refused; the job is all or nothing, so nothing was changed."),
            );
            (JobState::Failed, Some(JobError::of(&e).to_stored()))
        } else {
            (JobState::Succeeded, None)
        };
        jobs::finish(&mut tx, &job.org, &job.id, state, error.clone(), now).await
    })
}
