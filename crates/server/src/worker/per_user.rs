//! Jobs whose every user gets a change of its own, derived at run time from
//! what the user holds then: a CSV import (`csv_import`: each row says
//! TRUE/FALSE per item; a row whose email is unknown creates the user, who
//! then gets the org's licence template) and applying a licence template to
//! existing users (`template_apply`). Each chunk is one transaction; each
//! row or user applies fully or not at all, through the one planner.

use std::collections::HashMap;

use allot_domain::bulk::JobKind;
use allot_domain::bulk::{Outcome, UserResult};
use allot_domain::catalogue::Product;
use allot_domain::planner::{plan_in_batch, Held, LicenseChange, LicensePlan, OrgFacts, Pool};
use allot_domain::sheet::{row_change, ImportRequest, SheetRow};
use allot_domain::templates::{template_change, TemplateApplyRequest, TemplateLicense};
use allot_domain::types::{ProductCode, UserKind, UserStatus};
use allot_domain::{Code, Error};
use allot_store::audit::Actor;
use allot_store::jobs::{self, Job};
use allot_store::licenses::{self, PlannedUser};
use allot_store::webhooks::Reach;
use allot_store::{catalogue, in_transaction, new_id, subscriptions, templates, tenants, users, StoreError, Tx};

use super::chunks::{self, ChunkRun, ChunkWork};
use super::Lease;
use crate::app::facts::{org_facts, user_facts};
use crate::app::App as AppState;

/// Whether jobs of this kind are carried out here.
pub fn is_per_user_kind(kind: JobKind) -> bool {
    matches!(kind, JobKind::CsvImport | JobKind::TemplateApply)
}

enum Work {
    Import(ImportRequest),
    Template(TemplateApplyRequest),
}

impl Work {
    fn dry_run(&self) -> bool {
        match self {
            Work::Import(r) => r.dry_run,
            Work::Template(r) => r.dry_run,
        }
    }
}

pub(crate) struct Setting {
    work: Work,
    catalogue: HashMap<ProductCode, Product>,
    org_facts: OrgFacts,
    pool_products: Vec<ProductCode>,
    /// The template a user created by an import gets (the org's: a new user is in no group).
    new_user_template: Option<Vec<TemplateLicense>>,
    actor: Actor,
}

async fn load_setting(st: &AppState, job: &Job) -> Result<Setting, Error> {
    let unreadable = |e: serde_json::Error| Error::internal(format!("job {} has an unreadable request: {e}", job.id));
    let work = if job.kind == JobKind::CsvImport {
        Work::Import(serde_json::from_str(&job.request).map_err(unreadable)?)
    } else {
        Work::Template(serde_json::from_str(&job.request).map_err(unreadable)?)
    };
    let mut rd = st.store.read_conn().await?;
    let catalogue = catalogue::all(&mut rd).await?;
    let org = tenants::get_org(&mut rd, &job.org)
        .await?
        .ok_or_else(|| Error::not_found(format!("Organisation {}", job.org)))?;
    let org_facts = org_facts(&org, tenants::list_sites(&mut rd, &job.org).await?);
    let new_user_template = match &work {
        Work::Import(_) => templates::choose(&templates::list(&mut rd, &job.org).await?, &[]).map(|t| t.licenses.clone()),
        Work::Template(_) => None,
    };
    let mut pool_products: Vec<ProductCode> = match &work {
        Work::Import(r) => r.columns.iter().map(|c| c.product.clone()).collect(),
        Work::Template(r) => r.licenses.iter().map(|l| l.product.clone()).collect(),
    };
    pool_products.extend(new_user_template.iter().flatten().map(|l| l.product.clone()));
    pool_products.sort();
    pool_products.dedup();
    Ok(Setting {
        work,
        catalogue,
        org_facts,
        pool_products,
        new_user_template,
        actor: Actor {
            actor: job.created_by.clone(),
            request_id: Some(format!("job:{}", job.id)),
        },
    })
}

/// Carries out a `csv_import` or `template_apply` job as far as it goes.
pub async fn run(st: &AppState, owner: &Lease, job: Job) -> Result<(), Error> {
    let setting = match load_setting(st, &job).await {
        Ok(s) => s,
        Err(e) => return chunks::fail(st, &job, &e).await,
    };
    let job = if setting.work.dry_run() {
        chunks::restart_dry_run(st, job).await?
    } else {
        job
    };
    let pending = {
        let mut rd = st.store.read_conn().await?;
        jobs::pending_chunks(&mut rd, &job.org, &job.id).await?
    };
    let ran = if setting.work.dry_run() {
        chunks::run_dry(st, &job, owner, &setting, pending).await?
    } else {
        chunks::run_in_order(st, &job, owner, &setting, pending).await?
    };
    if ran == ChunkRun::Cancelled {
        return chunks::finish_cancelled(st, &job).await;
    }
    let state = chunks::end_state(st, &job).await?;
    let now = st.clock.now();
    in_transaction!(st.store, |tx| jobs::finish(&mut tx, &job.org, &job.id, state, None, now).await)
}

impl ChunkWork for Setting {
    type Plans = Planned;

    async fn pools(&self, tx: &mut Tx, job: &Job) -> Result<Vec<Pool>, StoreError> {
        pools(tx, job, self).await
    }

    /// The rows' users are found (by email for an import) and locked
    /// inside `plan_chunk`, before what they hold is read.
    async fn plan_locked(&self, tx: &mut Tx, job: &Job, entries: &[String], today: chrono::NaiveDate) -> Result<Planned, StoreError> {
        let mut pools = pools(tx, job, self).await?;
        plan_chunk(tx, job, self, entries, &mut pools, today, true).await
    }

    async fn plan_on(
        &self,
        tx: &mut Tx,
        job: &Job,
        entries: &[String],
        pools: &mut [Pool],
        today: chrono::NaiveDate,
    ) -> Result<Planned, StoreError> {
        plan_chunk(tx, job, self, entries, pools, today, false).await
    }

    fn results(plans: &Planned) -> &[UserResult] {
        &plans.results
    }

    async fn apply(&self, tx: &mut Tx, job: &Job, plans: &Planned, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
        apply(tx, job, self, plans, now).await
    }
}

async fn pools(tx: &mut Tx, job: &Job, setting: &Setting) -> Result<Vec<Pool>, StoreError> {
    let codes: Vec<&ProductCode> = setting.pool_products.iter().collect();
    subscriptions::pools_for(tx, &job.org, &codes).await
}

/// One chunk planned: results in entry order, users to create, plans to apply.
pub(crate) struct Planned {
    results: Vec<UserResult>,
    new_users: Vec<users::User>,
    plans: Vec<(String, Vec<Held>, LicensePlan)>,
}

/// A user an import creates: the row's attributes, the defaults otherwise
/// (an external user is pending until accepting, as through the API).
fn new_user(row: &SheetRow) -> users::User {
    let kind = row.kind.unwrap_or(UserKind::Internal);
    let status = row.status.unwrap_or(UserStatus::initial(kind));
    users::User {
        id: new_id("usr"),
        email: row.email.clone(),
        display_name: row.display_name.clone().unwrap_or_default(),
        kind,
        status,
        usage_location: row.usage_location.clone(),
        site_admin_of: Vec::new(),
        groups: Vec::new(),
    }
}

/// A new user's change: the row's, plus the template's licences of the
/// families the row does not speak of (the row wins).
fn with_template(
    row_change: Option<LicenseChange>,
    row: &SheetRow,
    setting: &Setting,
    columns: &[allot_domain::sheet::ItemColumn],
) -> Option<LicenseChange> {
    let family = |p: &ProductCode| setting.catalogue.get(p).map(|x| x.family.clone());
    let Some(template) = &setting.new_user_template else {
        return row_change;
    };
    let row_families: Vec<_> = row.cells.iter().filter_map(|(i, _)| family(&columns[*i].product)).collect();
    let mut change = row_change.unwrap_or_default();
    for t in template {
        if family(&t.product).is_some_and(|f| row_families.contains(&f)) || change.add.iter().any(|a| a.product == t.product) {
            continue;
        }
        change.add.push(allot_domain::planner::AddLicense {
            product: t.product.clone(),
            subscription: t.subscription.clone(),
            properties: Default::default(),
        });
    }
    (!change.add.is_empty() || !change.remove.is_empty()).then_some(change)
}

#[allow(clippy::too_many_arguments)]
async fn plan_chunk(
    tx: &mut Tx,
    job: &Job,
    setting: &Setting,
    entries: &[String],
    pools: &mut [Pool],
    today: chrono::NaiveDate,
    lock: bool,
) -> Result<Planned, StoreError> {
    let unreadable = |e: serde_json::Error| StoreError::Db(format!("job {} has an unreadable row: {e}", job.id));
    // Who each entry is: an existing user's id, or an import row to match by email.
    let rows: Vec<SheetRow> = match &setting.work {
        Work::Import(_) => entries
            .iter()
            .map(|e| serde_json::from_str(e).map_err(unreadable))
            .collect::<Result<_, _>>()?,
        Work::Template(_) => Vec::new(),
    };
    let ids: Vec<String> = match &setting.work {
        Work::Import(_) => {
            let emails: Vec<String> = rows.iter().map(SheetRow::normalized_email).collect();
            users::ids_by_emails(tx, &job.org, &emails).await?
        }
        Work::Template(_) => entries.to_vec(),
    };
    if lock {
        // Lock first, then read: a single change planned before this chunk
        // fails its version claim and plans again afterwards.
        users::lock_licenses(tx, &job.org, &ids).await?;
    }
    let stored: HashMap<String, users::User> = users::many(tx, &job.org, &ids)
        .await?
        .into_iter()
        .map(|u| (u.id.clone(), u))
        .collect();
    let by_email: HashMap<String, &users::User> = stored.values().map(|u| (u.email.to_lowercase(), u)).collect();
    let mut held_by_user = licenses::of_users(tx, &job.org, &ids).await?;
    let mut queue_billed = allot_store::queues::billed_of(tx, &job.org, &ids).await?;
    let mut out = Planned {
        results: Vec::with_capacity(entries.len()),
        new_users: Vec::new(),
        plans: Vec::new(),
    };
    for (i, entry) in entries.iter().enumerate() {
        // Who: a stored user, or (an import row with an unknown email) one made now.
        let (user, created, row) = match &setting.work {
            Work::Import(_) => {
                let row = &rows[i];
                match by_email.get(&row.normalized_email()) {
                    Some(u) => ((*u).clone(), false, Some(row)),
                    None => (new_user(row), true, Some(row)),
                }
            }
            Work::Template(_) => match stored.get(entry) {
                Some(u) => (u.clone(), false, None),
                None => {
                    out.results.push(UserResult::user_gone(entry));
                    continue;
                }
            },
        };
        let held: Vec<Held> = held_by_user
            .remove(&user.id)
            .map(|v| v.into_iter().map(|a| a.held).collect())
            .unwrap_or_default();
        // What: derived from what the user holds now.
        let change = match &setting.work {
            Work::Import(req) => {
                let row = &rows[i];
                let change = row_change(row, &req.columns, &held, req.mode, &setting.catalogue);
                if created {
                    with_template(change, row, setting, &req.columns)
                } else {
                    change
                }
            }
            Work::Template(req) => template_change(&req.licenses, &held, req.retain_existing),
        };
        let label = |mut r: UserResult| {
            r.email = Some(user.email.clone());
            r.row = row.map(|r| r.row);
            r
        };
        let Some(change) = change else {
            if created {
                out.new_users.push(user.clone());
                out.results.push(label(UserResult {
                    outcome: Outcome::Ok,
                    message: Some(format!("Created {} (no licences).", user.email)),
                    ..UserResult::skipped(&user.id, None, "")
                }));
            } else {
                out.results.push(label(UserResult::skipped(
                    &user.id,
                    None,
                    format!("{} already has what was asked.", user.email),
                )));
            }
            continue;
        };
        let facts = user_facts(user.clone(), queue_billed.remove(&user.id).unwrap_or_default());
        match plan_in_batch(&facts, &setting.org_facts, &held, &setting.catalogue, pools, today, &change) {
            Ok(plan) => {
                let mut r = label(UserResult::ok(&user.id, &plan));
                if created {
                    r.message = Some(format!("Created {}.", user.email));
                    out.new_users.push(user.clone());
                }
                out.results.push(r);
                out.plans.push((user.id.clone(), held, plan));
            }
            Err(violations) => {
                let mut r = label(UserResult::error(&user.id, &violations));
                if created {
                    // Not created: the row applies fully or not at all.
                    r.user = String::new();
                }
                out.results.push(r);
            }
        }
    }
    Ok(out)
}

async fn apply(tx: &mut Tx, job: &Job, setting: &Setting, planned: &Planned, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    if !planned.new_users.is_empty() {
        users::insert_many(tx, &job.org, &planned.new_users, now)
            .await
            .map_err(|e| match e {
                // Created by someone else since the chunk was read: plan it again.
                StoreError::Domain(d) if d.code == Code::EmailTaken => {
                    StoreError::Replan("an imported email was taken concurrently".into())
                }
                other => other,
            })?;
        let events = planned
            .new_users
            .iter()
            .map(|u| (format!("user:{}", u.id), None, serde_json::to_string(u).ok()))
            .collect();
        allot_store::audit::record_many(tx, &job.org, &setting.actor, "user.create", events, now).await?;
    }
    let users: Vec<PlannedUser<'_>> = planned
        .plans
        .iter()
        .map(|(u, before, plan)| PlannedUser { user: u, before, plan })
        .collect();
    if let Err(full) = licenses::apply_plans(tx, &job.org, &users, &setting.catalogue, now).await? {
        return Err(StoreError::Replan(format!(
            "pool {} of {} filled concurrently",
            full.subscription, full.product
        )));
    }
    licenses::record_changes(tx, &job.org, &users, &setting.actor, now, Reach::Unknown).await?;
    // A template applied gives what it added: a group's template takes it
    // back when the user leaves the group (see `app::group_licenses`).
    if let Work::Template(req) = &setting.work {
        let given: Vec<(&str, &str)> = planned
            .plans
            .iter()
            .flat_map(|(user, before, plan)| {
                plan.take
                    .iter()
                    .filter(|h| req.licenses.iter().any(|t| t.product == h.product))
                    .filter(move |h| !before.iter().any(|b| b.product == h.product))
                    .map(move |h| (user.as_str(), h.product.as_str()))
            })
            .collect();
        allot_store::grants::record_many(tx, &job.org, &req.template, &given).await?;
    }
    Ok(())
}
