//! Licences: the org's overview, one user's licences, and the atomic change.

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

use allot_domain::access::Action;
use allot_domain::catalogue::Product;
use allot_domain::catalogue::PropertyName;
use allot_domain::planner::{
    plan_license_change, Held, LicenseChange, LicensePlan, OrgFacts, PlanInput, Pool, Properties, QueueHold, SiteFacts, UserFacts,
};
use allot_domain::types::{CountryCode, ProductCode, UserKind, UserStatus};
use allot_domain::{Code, Error, Violation};
use allot_store::licence_epochs;
use allot_store::{backoff, catalogue, finish, licenses, subscriptions, tenants, users, Outcome, StoreError, Tx};

use crate::auth::Ctx;
use crate::extract::ApiJson;
use crate::problem::ApiResult;
use crate::AppState;

#[derive(Debug, Serialize)]
pub struct LicenseView {
    pub product: String,
    pub subscription: String,
    pub properties: Properties,
    pub assigned_at: String,
}

#[derive(Debug, Serialize)]
pub struct OverviewRow {
    pub product: String,
    pub name: String,
    pub subscription: String,
    pub total: i64,
    pub consumed: i64,
    pub available: i64,
    pub features: Vec<String>,
    /// Set when no seat is free: where more can be bought (R-SUB-5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buy_more: Option<Value>,
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/licenses", tag = "licenses", params(("org" = String, Path)),
    responses((status = 200, description = "One row per subscription item: total, consumed, available, features")))]
pub async fn overview(State(st): State<AppState>, ctx: Ctx, Path(org): Path<String>) -> ApiResult<Json<Value>> {
    let mut tx = st.store.begin_read().await?;
    let org = ctx.org(&mut tx, &org, Action::ReadLicenses).await?;
    let rows = subscriptions::license_rows(&mut tx, &org.id).await?;
    let cat = catalogue::all(&mut tx).await?;
    // Where more seats come from: a purchase request here, or the partner / provider.
    let buy_more = if org.self_service_purchase && org.payment_method_on_file {
        json!({ "purchase_request": true, "path": format!("/api/v1/orgs/{}/purchase-requests", org.id),
                "message": "An org super admin can request more seats here." })
    } else {
        let who = super::purchases::contact(&mut tx, &org).await?;
        json!({ "purchase_request": false, "contact": who, "message": format!("Contact {who} to buy more seats.") })
    };
    let items: Vec<OverviewRow> = rows
        .into_iter()
        .map(|r| {
            let p = ProductCode::parse(&r.product).ok().and_then(|c| cat.get(&c));
            OverviewRow {
                name: p.map(|p| p.name.clone()).unwrap_or_else(|| r.product.clone()),
                features: p.map(|p| p.features.clone()).unwrap_or_default(),
                available: r.total - r.consumed,
                buy_more: (r.total - r.consumed <= 0).then(|| buy_more.clone()),
                product: r.product,
                subscription: r.subscription,
                total: r.total,
                consumed: r.consumed,
            }
        })
        .collect();
    Ok(Json(json!({ "items": items, "next_cursor": null })))
}

fn views(assignments: Vec<licenses::Assignment>) -> Vec<LicenseView> {
    assignments
        .into_iter()
        .map(|a| LicenseView {
            product: a.held.product.to_string(),
            subscription: a.held.subscription,
            properties: a.held.properties,
            assigned_at: a.assigned_at,
        })
        .collect()
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/users/{user}/licenses", tag = "licenses", params(("org" = String, Path), ("user" = String, Path)),
    responses((status = 200, description = "The user's licences")))]
pub async fn of_user(State(st): State<AppState>, ctx: Ctx, Path((org, user)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    let mut tx = st.store.begin_read().await?;
    let org = ctx.org(&mut tx, &org, Action::ReadLicenses).await?;
    // Which licences a person holds is user data (sales agents may not read it).
    ctx.require(Action::ReadUsers)?;
    users::get(&mut tx, &org.id, &user)
        .await?
        .ok_or_else(|| Error::not_found(format!("User {user}")))?;
    let items = views(licenses::of_user(&mut tx, &org.id, &user).await?);
    // Per family: kept across moves, and while retained after the last licence went.
    let service_data: Vec<Value> = allot_store::service_data::of_user(&mut tx, &org.id, &user, st.clock.now())
        .await?
        .into_iter()
        .map(|f| json!({ "family": f.family, "data": f.data, "retain_until": f.retain_until }))
        .collect();
    Ok(Json(json!({ "items": items, "service_data": service_data })))
}

/// A stored user as the planner sees it (`site_admin_of` as loaded), with
/// the queues whose product it is billed for.
pub(crate) fn user_facts(u: users::User, queue_billed: Vec<QueueHold>) -> UserFacts {
    UserFacts {
        queue_billed,
        kind: UserKind::parse(&u.kind).unwrap_or(UserKind::Internal),
        status: UserStatus::parse(&u.status).unwrap_or(UserStatus::Active),
        usage_location: u.usage_location.as_deref().and_then(|c| CountryCode::parse(c).ok()),
        id: u.id,
        email: u.email,
        site_admin_of: u.site_admin_of,
    }
}

/// A stored org and (some of) its sites as the planner sees them.
pub(crate) fn org_facts(org: &tenants::Org, sites: Vec<tenants::Site>) -> OrgFacts {
    OrgFacts {
        default_usage_location: org.default_usage_location.as_deref().and_then(|c| CountryCode::parse(c).ok()),
        sites: sites
            .into_iter()
            .map(|s| SiteFacts {
                id: s.id,
                attendee_accounts_enabled: s.attendee_accounts_enabled,
            })
            .collect(),
    }
}

/// What a licence change is planned from, read without holding the write lock.
struct Snapshot {
    org: String,
    org_facts: OrgFacts,
    user: UserFacts,
    version: i64,
    /// The org's count of bulk chunks written from plans made ahead, read
    /// with the version (see `allot_store::licence_epochs`).
    chunks_ahead: i64,
    assignments: Vec<licenses::Assignment>,
    catalogue: HashMap<ProductCode, Product>,
    pools: Vec<Pool>,
}

/// The caller has checked scope and role for `org`.
async fn read_snapshot(rd: &mut Tx, org: &tenants::Org, user_id: &str, change: &LicenseChange) -> Result<Snapshot, Error> {
    // First: a change landing between this and the reads below (no
    // snapshot isolation on a read connection) then only makes the claim fail.
    let (user, version, chunks_ahead) = users::licence_state(rd, &org.id, user_id)
        .await?
        .ok_or_else(|| Error::not_found(format!("User {user_id}")))?;
    let assignments = licenses::of_user(rd, &org.id, &user.id).await?;
    let mut codes: Vec<&ProductCode> = change
        .add
        .iter()
        .map(|a| &a.product)
        .chain(change.remove.iter().map(|r| &r.product))
        .chain(assignments.iter().map(|a| &a.held.product))
        .collect();
    let mut seen = HashSet::new();
    codes.retain(|c| seen.insert(*c));
    let catalogue = catalogue::with_requirements(rd, &codes).await?;
    // Pools for what is added and, when asked to, for what that requires.
    let mut pool_products: Vec<&ProductCode> = change.add.iter().map(|a| &a.product).collect();
    if change.add_required {
        pool_products.extend(catalogue.values().map(|p| &p.code));
    }
    let mut seen = HashSet::new();
    pool_products.retain(|c| seen.insert(*c));
    let pools = subscriptions::pools_for(rd, &org.id, &pool_products).await?;
    // Sites and site-admin roles matter only to site properties: read them only then.
    let site_ids: Vec<&str> = change
        .add
        .iter()
        .flat_map(|a| a.properties.get(&PropertyName::Site))
        .chain(assignments.iter().flat_map(|a| a.held.properties.get(&PropertyName::Site)))
        .map(String::as_str)
        .collect();
    let sites = tenants::sites_by_ids(rd, &org.id, &site_ids).await?;
    let site_admin_of = if site_ids.is_empty() {
        Vec::new()
    } else {
        users::site_admin_of(rd, &org.id, &user.id).await?
    };
    // Queue memberships matter only to removals.
    let queue_billed = if change.remove.is_empty() {
        Vec::new()
    } else {
        allot_store::queues::billed_of(rd, &org.id, std::slice::from_ref(&user.id))
            .await?
            .remove(&user.id)
            .unwrap_or_default()
    };
    let user = user_facts(users::User { site_admin_of, ..user }, queue_billed);
    let org_facts = org_facts(org, sites);
    Ok(Snapshot {
        org: org.id.clone(),
        org_facts,
        user,
        version,
        chunks_ahead,
        assignments,
        catalogue,
        pools,
    })
}

/// Applies a plan made from `snap`: claims the user's licence version (a
/// concurrent change of the same user, or a bulk chunk written since, makes
/// the whole attempt start over), then takes and releases seats through the
/// guarded counters.
async fn write_plan(
    tx: &mut Tx,
    who: &allot_store::audit::Actor,
    snap: &Snapshot,
    plan: &LicensePlan,
    change: &LicenseChange,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (org, user) = (&snap.org, &snap.user);
    users::claim_licence_version(tx, org, &user.id, snap.version, snap.chunks_ahead).await?;
    let before: Vec<Held> = snap.assignments.iter().map(|a| a.held.clone()).collect();
    let planned = [licenses::PlannedUser {
        user: &user.id,
        before: &before,
        plan,
    }];
    if let Err(full) = licenses::apply_plans(tx, org, &planned, &snap.catalogue, now).await? {
        let named = change.add.iter().any(|a| a.product == full.product && a.subscription.is_some());
        if !named {
            // The seat chosen from the snapshot went to someone else first: plan again on fresh counts.
            return Err(StoreError::Retry(format!(
                "pool {} of {} filled concurrently",
                full.subscription, full.product
            )));
        }
        let name = snap
            .catalogue
            .get(&full.product)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| full.product.to_string());
        return Err(Error::rejected(vec![Violation::new(
            Code::SeatsExhausted,
            format!(
                "{} cannot get {name}: all seats of subscription {} are taken.",
                user.email, full.subscription
            ),
        )
        .user(user.email.clone())
        .product(full.product.as_str())
        .subscription(full.subscription.clone())])
        .into());
    }
    licenses::record_changes(tx, org, &planned, who, now).await
}

/// A change of one user planned and written inside the caller's
/// transaction, by the same snapshot, planner and guarded write as a single
/// change: for a change that is part of a larger write (a new user's
/// template, leaving every queue). `Ok(Err)` is the planner's refusal, with
/// nothing written. The caller has checked scope and role.
pub(crate) async fn change_within(
    tx: &mut Tx,
    org: &tenants::Org,
    user_id: &str,
    change: &LicenseChange,
    who: &allot_store::audit::Actor,
    today: chrono::NaiveDate,
    now: DateTime<Utc>,
) -> Result<Result<LicensePlan, Vec<Violation>>, StoreError> {
    let snap = read_snapshot(tx, org, user_id, change).await?;
    match plan_for(&snap, change, today) {
        Err(refused) => Ok(Err(refused)),
        Ok(plan) => {
            write_plan(tx, who, &snap, &plan, change, now).await?;
            Ok(Ok(plan))
        }
    }
}

/// Failed attempts after which a change plans under the user's row lock.
const OPTIMISTIC_ATTEMPTS: u32 = 3;

/// The atomic single-user licence change: read a snapshot, plan it (pure),
/// then apply it in one short transaction whose guards (the user's licence
/// version, the seat counters, the assignment keys) are the final word. A
/// stale snapshot starts the attempt over; nothing is ever half-applied.
///
/// Under a stream of bulk chunks taking the same user, an optimistic
/// attempt can lose every race (each chunk moves the user's version on
/// before the claim lands, or the org's lane deadlocks with a chunk). After
/// [`OPTIMISTIC_ATTEMPTS`] the change runs in a transaction of its own,
/// locks the user's row first, waiting for any chunk holding it, then reads
/// and plans inside that transaction, where nobody can overtake it.
pub async fn change_licenses(
    st: &AppState,
    ctx: &Ctx,
    org_id: &str,
    user_id: &str,
    change: &LicenseChange,
) -> Result<Vec<LicenseView>, Error> {
    let mut attempt = 0u32;
    loop {
        let now = st.clock.now();
        let today = st.clock.today();
        let (tx, result) = if attempt < OPTIMISTIC_ATTEMPTS {
            let (org, snap) = {
                let mut rd = st.store.read_conn().await?;
                let org = ctx.org(&mut rd, org_id, Action::WriteLicenses).await?;
                let snap = read_snapshot(&mut rd, &org, user_id, change).await?;
                (org, snap)
            };
            let plan = plan_for(&snap, change, today).map_err(Error::rejected)?;
            let mut tx = st.store.begin_in_org(&snap.org).await?;
            let result = async {
                match write_plan(&mut tx, &ctx.actor(), &snap, &plan, change, now).await {
                    Ok(()) => Ok((snap, plan)),
                    // A bulk chunk planned ahead was written meanwhile
                    // (SQLite): plan again here, where the writer's
                    // transaction sees it. Starting over would queue behind
                    // the job's next chunk and meet the same again. Only a
                    // failed claim gets here, and it wrote nothing: a claim
                    // that went through has checked the chunk count.
                    Err(StoreError::Retry(_)) if licence_epochs::chunk_written_since(&mut tx, &org.id, snap.chunks_ahead).await? => {
                        let snap = read_snapshot(&mut tx, &org, user_id, change).await?;
                        let plan = plan_for(&snap, change, today).map_err(Error::rejected)?;
                        write_plan(&mut tx, &ctx.actor(), &snap, &plan, change, now).await?;
                        Ok((snap, plan))
                    }
                    Err(e) => Err(e),
                }
            }
            .await;
            (tx, result)
        } else {
            // Not the org's lane: a lane's shared transaction may already
            // hold a seat counter that a bulk chunk holding this user waits
            // for, and waiting for the user there would close the circle
            // (PostgreSQL reports a deadlock). Alone, it only waits.
            let mut tx = st.store.begin().await?;
            let result = async {
                // Scope first: nothing is locked in another tenant's org.
                let org = ctx.org(&mut tx, org_id, Action::WriteLicenses).await?;
                users::lock_licences(&mut tx, org_id, &[user_id.to_string()]).await?;
                let snap = read_snapshot(&mut tx, &org, user_id, change).await?;
                let plan = plan_for(&snap, change, today).map_err(Error::rejected)?;
                write_plan(&mut tx, &ctx.actor(), &snap, &plan, change, now).await?;
                Ok((snap, plan))
            }
            .await;
            (tx, result)
        };
        match finish(tx, result).await {
            Outcome::Done(r) => {
                let (snap, plan) = r?;
                // A family taken again may have had its properties restored
                // from its retained service data by the store: then the
                // stored licences are the answer, not the plan's.
                let family = |code: &ProductCode| snap.catalogue.get(code).map(|p| p.family.clone());
                let restorable = plan.take.iter().any(|h| {
                    let held_before = snap.assignments.iter().any(|a| family(&a.held.product) == family(&h.product));
                    !held_before
                        && snap
                            .catalogue
                            .get(&h.product)
                            .is_some_and(|p| p.properties.keys().any(|k| !h.properties.contains_key(k)))
                });
                if restorable {
                    let mut rd = st.store.read_conn().await?;
                    return Ok(views(allot_store::licenses::of_user(&mut rd, org_id, user_id).await?));
                }
                let assigned_at = |h: &Held| {
                    snap.assignments
                        .iter()
                        .find(|a| a.held == *h)
                        .map(|a| a.assigned_at.clone())
                        .unwrap_or_else(|| allot_store::ts(now))
                };
                return Ok(plan
                    .result
                    .iter()
                    .map(|h| LicenseView {
                        product: h.product.to_string(),
                        subscription: h.subscription.clone(),
                        properties: h.properties.clone(),
                        assigned_at: assigned_at(h),
                    })
                    .collect());
            }
            Outcome::Retry(e) => {
                attempt += 1;
                if attempt > 12 {
                    return Err(e.into());
                }
                backoff(attempt.min(OPTIMISTIC_ATTEMPTS)).await;
            }
        }
    }
}

/// The plan of `change` for the snapshot's user.
fn plan_for(snap: &Snapshot, change: &LicenseChange, today: chrono::NaiveDate) -> Result<LicensePlan, Vec<Violation>> {
    let held: Vec<Held> = snap.assignments.iter().map(|a| a.held.clone()).collect();
    let input = PlanInput {
        user: &snap.user,
        org: &snap.org_facts,
        held: &held,
        catalogue: &snap.catalogue,
        pools: &snap.pools,
        today,
    };
    plan_license_change(&input, change)
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/users/{user}/licenses", tag = "licenses", params(("org" = String, Path), ("user" = String, Path)),
    responses((status = 200, description = "Applied; the user's licences after the change"),
              (status = 422, description = "Refused with every reason; nothing changed")))]
pub async fn change(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((org, user)): Path<(String, String)>,
    ApiJson(change): ApiJson<LicenseChange>,
) -> ApiResult<Json<Value>> {
    let items = change_licenses(&st, &ctx, &org, &user, &change).await?;
    // R-DEP-1: a removal can leave a licence billed by queue memberships
    // (the contact-centre licence stays when the phone licence goes): say so.
    let warnings = if change.remove.is_empty() {
        Vec::new()
    } else {
        let mut rd = st.store.read_conn().await?;
        super::queues::still_billed(&mut rd, &org, &user, &items).await?
    };
    let mut body = json!({ "items": items });
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    Ok(Json(body))
}
