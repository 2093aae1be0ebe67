//! Carrying out a bulk licence job: resolve its users ([`resolve`]), check
//! capacity before anything is written, then plan every user with the one
//! planner ([`plan`]) and apply chunk by chunk (`per_user`: on PostgreSQL
//! several chunks at once, on SQLite each chunk planned ahead of the writer,
//! [`ahead`]) or all at once ([`all_or_nothing`]).

mod ahead;
mod all_or_nothing;
mod plan;
mod resolve;

use std::collections::{HashMap, HashSet};

use allot_domain::bulk::{move_mapping, CancelJobRequest, JobKind, JobMode, JobState, LicenseJobRequest};
use allot_domain::catalogue::Product;
use allot_domain::planner::{Held, LicensePlan, OrgFacts, Pool};
use allot_domain::types::ProductCode;
use allot_domain::{Code, Error};
use allot_store::audit::Actor;
use allot_store::jobs::{self, Job};
use allot_store::licenses::PlannedUser;
use allot_store::{catalogue, in_transaction, subscriptions, tenants, Backend, StoreError, Tx};

use super::chunks::{self, fail, reload, renew, ChunkRun};
use super::Lease;
use crate::app::facts::org_facts;
use crate::app::jobs::JobError;
use crate::app::App as AppState;

pub use crate::app::jobs::CHUNK_USERS;

use ahead::{run_pipelined, PlanningAhead};
use all_or_nothing::run_all_or_nothing;
use resolve::{capacity_check, refuse_whole_job, resolve};

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
pub(super) struct Setting {
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
    if setting.req.dry_run {
        job = chunks::restart_dry_run(st, job).await?;
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

fn planned_users(plans: &[(String, Vec<Held>, LicensePlan)]) -> Vec<PlannedUser<'_>> {
    plans
        .iter()
        .map(|(u, before, plan)| PlannedUser { user: u, before, plan })
        .collect()
}

async fn pools(tx: &mut Tx, job: &Job, setting: &Setting) -> Result<Vec<Pool>, StoreError> {
    let codes: Vec<&ProductCode> = setting.pool_products.iter().collect();
    subscriptions::pools_for(tx, &job.org, &codes).await
}

async fn end(st: &AppState, job: &Job, setting: &Setting) -> Result<(), Error> {
    let state = chunks::end_state(st, job).await?;
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
    let stopped = match st.store.backend() {
        _ if setting.req.dry_run => chunks::run_dry(st, job, owner, setting, pending).await? == ChunkRun::Cancelled,
        Backend::Sqlite => run_pipelined(st, job, owner, setting, pending, first_planned).await? == ChunkRun::Cancelled,
        Backend::Postgres => {
            let mut chunks = futures::stream::iter(pending)
                .map(|seq| chunks::run_chunk(st, job, owner, setting, seq))
                .buffer_unordered(CHUNKS_IN_FLIGHT_POSTGRES);
            let mut stopped = false;
            while let Some(ran) = chunks.next().await {
                stopped |= ran? == ChunkRun::Cancelled;
            }
            stopped
        }
    };
    if stopped {
        return chunks::finish_cancelled(st, job).await;
    }
    end(st, job, setting).await
}
