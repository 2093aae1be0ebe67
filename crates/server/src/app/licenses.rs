//! Licences: an org's seats per subscription item, one user's licences,
//! and the atomic change of one user's licences (all of it or none).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use allot_domain::access::Action;
use allot_domain::catalogue::{Product, PropertyName};
use allot_domain::planner::{plan_license_change, Held, LicenseChange, LicensePlan, OrgFacts, PlanInput, Pool, Properties, UserFacts};
use allot_domain::types::ProductCode;
use allot_domain::{Code, Error, Violation};
use allot_store::{backoff, catalogue, finish, license_epochs, licenses, subscriptions, tenants, users, Outcome, StoreError, Tx};

use super::facts::{org_facts, user_facts};
use super::paging::Paged;
use super::queues::{still_billed, BillingWarning};
use super::{App, Caller};

/// A licence a user holds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LicenseView {
    pub product: String,
    pub subscription: String,
    #[schema(value_type = allot_domain::planner::PropertiesSchema)]
    pub properties: Properties,
    pub assigned_at: String,
}

/// Where more seats come from when none is free.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BuyMore {
    /// Whether an org super admin can request more seats in Allot.
    pub purchase_request: bool,
    /// Where to send the purchase request, when one can be made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Whom to contact otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    pub message: String,
}

/// One subscription item of an org, with its seats.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OverviewRow {
    pub product: String,
    pub name: String,
    pub subscription: String,
    pub total: i64,
    pub consumed: i64,
    pub available: i64,
    pub features: Vec<String>,
    /// Set when no seat is free: where more can be bought.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buy_more: Option<BuyMore>,
}

/// The org's seats: one row per subscription item.
pub async fn list_org_licenses(app: &App, caller: &Caller, org: &str) -> Result<Paged<OverviewRow>, Error> {
    let org = app.visible_org(caller, org, Action::ReadLicenses).await?;
    // Before the connection is taken: on a miss the catalogue is read on a
    // connection of its own, and plain reads hold a bounded share of the
    // pool (a request holding one while waiting for another could wait on
    // itself).
    let cat = app.catalogue().await?;
    let mut tx = app.store.read_conn().await?;
    let rows = subscriptions::license_rows(&mut tx, &org.id).await?;
    let buy_more = if org.self_service_purchase && org.payment_method_on_file {
        BuyMore {
            purchase_request: true,
            path: Some(format!("/api/v1/orgs/{}/purchase-requests", org.id)),
            contact: None,
            message: "An org super admin can request more seats here.".into(),
        }
    } else {
        let who = super::purchases::contact(&mut tx, &org).await?;
        BuyMore {
            purchase_request: false,
            path: None,
            message: format!("Contact {who} to buy more seats."),
            contact: Some(who),
        }
    };
    let items = rows
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
    Ok(Paged::all(items))
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

/// A family's service data, kept across moves and for a while after the
/// family's last licence went.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceDataView {
    pub family: String,
    /// What the service keeps for the user (a phone number, settings, ...).
    pub data: std::collections::BTreeMap<String, String>,
    /// When it is deleted, if no licence of the family is held again before.
    pub retain_until: Option<String>,
}

/// One user's licences and retained service data.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserLicenses {
    pub items: Vec<LicenseView>,
    pub service_data: Vec<ServiceDataView>,
}

pub async fn list_user_licenses(app: &App, caller: &Caller, org: &str, user: &str) -> Result<UserLicenses, Error> {
    let org = app.visible_org(caller, org, Action::ReadLicenses).await?;
    let mut tx = app.store.read_conn().await?;
    // Which licences a person holds is user data (sales agents may not read it).
    caller.require(Action::ReadUsers)?;
    users::get(&mut tx, &org.id, user)
        .await?
        .ok_or_else(|| Error::not_found(format!("User {}", allot_domain::types::excerpt(user))))?;
    let items = views(licenses::of_user(&mut tx, &org.id, user).await?);
    let service_data = allot_store::service_data::of_user(&mut tx, &org.id, user, app.clock.now())
        .await?
        .into_iter()
        .map(|f| ServiceDataView {
            family: f.family,
            data: f.data,
            retain_until: f.retain_until,
        })
        .collect();
    Ok(UserLicenses { items, service_data })
}

/// What a licence change of one user is planned from, read without holding
/// the write lock.
struct Snapshot {
    org: String,
    org_facts: OrgFacts,
    user: UserFacts,
    version: i64,
    /// The org's count of bulk chunks written from plans made ahead, read
    /// with the version (see `allot_store::license_epochs`).
    chunks_ahead: i64,
    /// Whether the user has service data stored (read with the version).
    has_service_data: bool,
    assignments: Vec<licenses::Assignment>,
    /// The licences of `assignments`, as the planner and the write take them.
    held: Vec<Held>,
    catalogue: HashMap<ProductCode, Product>,
    pools: Vec<Pool>,
}

/// The products named and, transitively, every product they require, out
/// of the whole catalogue: what the planner needs to add required products
/// and to check removals.
fn with_requirements(all: &HashMap<ProductCode, Product>, codes: &[&ProductCode]) -> HashMap<ProductCode, Product> {
    let mut found: HashMap<ProductCode, Product> = HashMap::new();
    let mut todo: Vec<&ProductCode> = codes.to_vec();
    while let Some(code) = todo.pop() {
        if found.contains_key(code) {
            continue;
        }
        // A code not in the catalogue is left out: the planner reports it.
        if let Some(p) = all.get(code) {
            todo.extend(p.rules.requires.iter());
            found.insert(code.clone(), p.clone());
        }
    }
    found
}

/// The caller has checked scope and role for `org`. `catalogue`: the whole
/// catalogue when the caller has it (cached), else the products needed are
/// read in `rd`.
async fn read_snapshot(
    rd: &mut Tx,
    org: &tenants::Org,
    user_id: &str,
    change: &LicenseChange,
    catalogue: Option<&HashMap<ProductCode, Product>>,
) -> Result<Snapshot, Error> {
    // First: a change landing between this and the reads below (no
    // snapshot isolation on a read connection) then only makes the claim fail.
    let users::LicenseState {
        user,
        version,
        chunks_ahead,
        has_service_data,
        assignments,
    } = users::license_state(rd, &org.id, user_id)
        .await?
        .ok_or_else(|| Error::not_found(format!("User {}", allot_domain::types::excerpt(user_id))))?;
    let mut codes: Vec<&ProductCode> = change
        .add
        .iter()
        .map(|a| &a.product)
        .chain(change.remove.iter().map(|r| &r.product))
        .chain(assignments.iter().map(|a| &a.held.product))
        .collect();
    let mut seen = HashSet::new();
    codes.retain(|c| seen.insert(*c));
    let catalogue = match catalogue {
        Some(all) => with_requirements(all, &codes),
        None => catalogue::with_requirements(rd, &codes).await?,
    };
    // Pools for what is added and, when asked to, for what that requires;
    // a code not in the catalogue has none (the planner refuses it).
    let mut pool_products: Vec<&ProductCode> = change
        .add
        .iter()
        .map(|a| &a.product)
        .filter(|code| catalogue.contains_key(*code))
        .collect();
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
        has_service_data,
        held: assignments.iter().map(|a| a.held.clone()).collect(),
        assignments,
        catalogue,
        pools,
    })
}

/// The user's planned change, with the stored service data it may touch,
/// read on the snapshot's connection (outside the org's lane when planned
/// optimistically): the version claim in [`write_plan`] vouches that
/// neither changed since. A user with none stored needs no read.
struct Planned {
    plan: LicensePlan,
    stored: licenses::StoredServiceData,
}

/// `Ok(Err)` is the planner's refusal.
async fn plan_with_service_data(
    rd: &mut Tx,
    snap: &Snapshot,
    change: &LicenseChange,
    today: chrono::NaiveDate,
) -> Result<Result<Planned, Vec<Violation>>, StoreError> {
    let plan = match plan_for(snap, change, today) {
        Ok(plan) => plan,
        Err(refused) => return Ok(Err(refused)),
    };
    let planned = [licenses::PlannedUser {
        user: &snap.user.id,
        before: &snap.held,
        plan: &plan,
    }];
    let stored = if snap.has_service_data {
        licenses::stored_service_data(rd, &snap.org, &planned, &snap.catalogue).await?
    } else {
        licenses::nothing_stored(&planned, &snap.catalogue)
    };
    Ok(Ok(Planned { plan, stored }))
}

/// Applies a plan made from `snap`: claims the user's licence version (a
/// concurrent change of the same user, or a bulk chunk written since, makes
/// the whole attempt start over), then takes and releases seats through the
/// guarded counters.
async fn write_plan(
    tx: &mut Tx,
    who: &allot_store::audit::Actor,
    snap: &Snapshot,
    planned_change: Planned,
    change: &LicenseChange,
    now: DateTime<Utc>,
) -> Result<LicensePlan, StoreError> {
    let (org, user) = (&snap.org, &snap.user);
    let Planned { plan, stored } = planned_change;
    let reach = users::claim_license_version(tx, org, &user.id, snap.version, snap.chunks_ahead).await?;
    let planned = [licenses::PlannedUser {
        user: &user.id,
        before: &snap.held,
        plan: &plan,
    }];
    let seats = licenses::seat_changes(tx.backend(), org, &planned, now).with_stored_service_data(stored);
    if let Err(full) = licenses::apply_seat_changes(tx, org, seats, &planned, &snap.catalogue, now).await? {
        let named = change.add.iter().any(|a| a.product == full.product && a.subscription.is_some());
        if !named {
            // The seat chosen from the snapshot went to someone else first: plan again on fresh counts.
            return Err(StoreError::Replan(format!(
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
    licenses::record_changes(tx, org, &planned, who, now, reach).await?;
    Ok(plan)
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
    let snap = read_snapshot(tx, org, user_id, change, None).await?;
    match plan_with_service_data(tx, &snap, change, today).await? {
        Err(refused) => Ok(Err(refused)),
        Ok(planned) => Ok(Ok(write_plan(tx, who, &snap, planned, change, now).await?)),
    }
}

/// Failed attempts after which a change plans under the user's row lock.
const OPTIMISTIC_ATTEMPTS: u32 = 3;

/// The user's licences after a change, and what the caller should know.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LicenseChangeResult {
    pub items: Vec<LicenseView>,
    /// Licences a removal left in place because queue memberships bill them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<BillingWarning>,
}

/// The atomic change of one user's licences. A removal that leaves a
/// licence billed by queue memberships (the contact-centre licence stays
/// when the phone licence goes) answers with a warning.
pub async fn change_user_licenses(
    app: &App,
    caller: &Caller,
    org: &str,
    user: &str,
    change: LicenseChange,
) -> Result<LicenseChangeResult, Error> {
    let items = apply_license_change(app, caller, org, user, &change).await?;
    let warnings = if change.remove.is_empty() {
        Vec::new()
    } else {
        let mut rd = app.store.read_conn().await?;
        still_billed(&mut rd, org, user, &items).await?
    };
    Ok(LicenseChangeResult { items, warnings })
}

/// Read a snapshot, plan it (pure), then apply it in one short transaction
/// whose guards (the user's licence version, the seat counters, the
/// assignment keys) are the final word. A stale snapshot starts the attempt
/// over; nothing is ever half-applied.
///
/// Under a stream of bulk chunks taking the same user, an optimistic
/// attempt can lose every race (each chunk moves the user's version on
/// before the claim lands, or the org's lane deadlocks with a chunk). After
/// [`OPTIMISTIC_ATTEMPTS`] the change runs in a transaction of its own,
/// locks the user's row first, waiting for any chunk holding it, then reads
/// and plans inside that transaction, where nobody can overtake it.
async fn apply_license_change(
    app: &App,
    caller: &Caller,
    org_id: &str,
    user_id: &str,
    change: &LicenseChange,
) -> Result<Vec<LicenseView>, Error> {
    let mut attempt = 0u32;
    loop {
        let now = app.clock.now();
        let today = app.clock.today();
        let (tx, result) = if attempt < OPTIMISTIC_ATTEMPTS {
            let catalogue = app.catalogue().await?;
            let org = app.visible_org(caller, org_id, Action::WriteLicenses).await?;
            let (snap, planned) = {
                let mut rd = app.store.read_conn().await?;
                let snap = read_snapshot(&mut rd, &org, user_id, change, Some(&catalogue)).await?;
                let planned = plan_with_service_data(&mut rd, &snap, change, today)
                    .await?
                    .map_err(Error::rejected)?;
                (snap, planned)
            };
            let mut tx = app.store.begin_in_org(&snap.org).await?;
            let result = async {
                match write_plan(&mut tx, &caller.actor(), &snap, planned, change, now).await {
                    Ok(plan) => Ok((snap, plan)),
                    // A bulk chunk planned ahead was written meanwhile
                    // (SQLite): plan again here, where the writer's
                    // transaction sees it. Starting over would queue behind
                    // the job's next chunk and meet the same again. Only a
                    // failed claim gets here, and it wrote nothing: a claim
                    // that went through has checked the chunk count.
                    Err(StoreError::Replan(_)) if license_epochs::chunk_written_since(&mut tx, &org.id, snap.chunks_ahead).await? => {
                        let snap = read_snapshot(&mut tx, &org, user_id, change, Some(&catalogue)).await?;
                        let planned = plan_with_service_data(&mut tx, &snap, change, today)
                            .await?
                            .map_err(Error::rejected)?;
                        let plan = write_plan(&mut tx, &caller.actor(), &snap, planned, change, now).await?;
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
            let mut tx = app.store.begin().await?;
            let result = async {
                // Scope first: nothing is locked in another tenant's org.
                let org = caller.org(&mut tx, org_id, Action::WriteLicenses).await?;
                users::lock_licenses(&mut tx, org_id, &[user_id.to_string()]).await?;
                let snap = read_snapshot(&mut tx, &org, user_id, change, None).await?;
                let planned = plan_with_service_data(&mut tx, &snap, change, today)
                    .await?
                    .map_err(Error::rejected)?;
                let plan = write_plan(&mut tx, &caller.actor(), &snap, planned, change, now).await?;
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
                    let mut rd = app.store.read_conn().await?;
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
    let input = PlanInput {
        user: &snap.user,
        org: &snap.org_facts,
        held: &snap.held,
        catalogue: &snap.catalogue,
        pools: &snap.pools,
        today,
    };
    plan_license_change(&input, change)
}
