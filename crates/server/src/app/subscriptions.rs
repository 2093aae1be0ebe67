//! Subscriptions with their items (seat pools). `status` is derived for
//! today, never stored. Cancelling one its users still hold would destroy
//! their service data, so it is refused unless they are moved to another
//! subscription first (keeping their data) or removed (`force`); both run as
//! a `subscription_cancel` job that cancels the subscription once empty.
//! An item `awaiting_details` waits for its org's admin to submit what the
//! service needs; submitting moves it to `provisioning`.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::json;

use allot_domain::access::Action;
use allot_domain::bulk::{capacity_violations, move_mapping, Demand, JobKind, JobMode, LicenseJobRequest, MoveSpec, UserFilter};
use allot_domain::planner::RemoveLicense;
use allot_domain::status::{derive_subscription_status, ProvisioningStatus, SubscriptionFacts, SubscriptionStatus};
use allot_domain::types::ProductCode;
use allot_domain::{Code, Error};
use allot_store::subscriptions::{self, Item, Subscription};
use allot_store::{audit, catalogue, in_transaction, new_id, tenants, StoreError};

use super::audit::snapshot;
use super::etag::{self, IfMatch};
use super::jobs::{check_license_job, queue_job, JobView};
use super::paging::{PageQuery, Paged};
use super::{App, Caller};
use super::{ANY_TEXT_PATTERN, TEXT_PATTERN};

/// The most seats one item may hold: more is a typo, not a sale.
pub const MAX_QUANTITY: i64 = 10_000_000;

/// One item (seat pool) of a subscription.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ItemView {
    pub product: String,
    /// Seats bought.
    pub quantity: i64,
    /// Seats held by users.
    pub consumed: i64,
    /// Seats free (may be negative after the quantity was lowered below what is held).
    pub available: i64,
    pub provisioning_status: ProvisioningStatus,
}

/// A subscription as shown: its stored facts, its derived status for
/// today, and its items with their seat counts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SubscriptionView {
    pub id: String,
    pub external_ref: Option<String>,
    pub partner: Option<String>,
    pub trial: bool,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    pub suspended: bool,
    pub cancelled: bool,
    pub status: SubscriptionStatus,
    pub items: Vec<ItemView>,
    /// Changes when the subscription's stored facts or items do (not when
    /// seats are taken or the status moves with the date).
    pub etag: String,
}

/// The stored part of a subscription that its etag covers.
fn subscription_etag(s: &Subscription) -> String {
    let items: Vec<(&str, i64, &str)> = s
        .items
        .iter()
        .map(|i| (i.product.as_str(), i.quantity, i.provisioning_status.as_str()))
        .collect();
    let f = &s.facts;
    etag::of(&json!({
        "external_ref": s.external_ref,
        "partner": s.partner,
        "facts": [f.trial, f.suspended, f.cancelled],
        "dates": [f.start_date.to_string(), f.end_date.to_string()],
        "items": items,
    }))
}

pub fn view(s: &Subscription, today: NaiveDate) -> SubscriptionView {
    SubscriptionView {
        id: s.id.clone(),
        external_ref: s.external_ref.clone(),
        partner: s.partner.clone(),
        trial: s.facts.trial,
        start_date: s.facts.start_date,
        end_date: s.facts.end_date,
        suspended: s.facts.suspended,
        cancelled: s.facts.cancelled,
        status: derive_subscription_status(&s.facts, today),
        items: s
            .items
            .iter()
            .map(|i| ItemView {
                product: i.product.clone(),
                quantity: i.quantity,
                consumed: i.consumed,
                available: i.quantity - i.consumed,
                provisioning_status: i.provisioning_status,
            })
            .collect(),
        etag: subscription_etag(s),
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    pub product: ProductCode,
    /// Seats, 0 to 10,000,000 (default 0 for a new item; unchanged for an existing one).
    #[serde(default, deserialize_with = "super::whole::opt_i64")]
    #[schema(minimum = 0, maximum = 10_000_000)]
    pub quantity: Option<i64>,
    pub provisioning_status: Option<ProvisioningStatus>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionInput {
    #[schema(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub external_ref: Option<String>,
    /// The partner that sold it (default: the org's partner).
    pub partner: Option<String>,
    #[serde(default)]
    pub trial: bool,
    pub start_date: NaiveDate,
    /// After `start_date`.
    pub end_date: NaiveDate,
    #[serde(default)]
    pub suspended: bool,
    #[serde(default)]
    pub cancelled: bool,
    #[serde(default)]
    pub items: Vec<ItemInput>,
}

/// Changes to a subscription. Cancelling goes through `POST .../cancel`,
/// which guards users' seats. Items listed are added or changed.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionPatch {
    #[schema(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub external_ref: Option<String>,
    pub trial: Option<bool>,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    pub suspended: Option<bool>,
    #[serde(default)]
    pub items: Vec<ItemInput>,
}

fn check_quantity(q: i64, i: usize) -> Result<i64, Error> {
    if (0..=MAX_QUANTITY).contains(&q) {
        Ok(q)
    } else {
        Err(Error::validation(
            &format!("items[{i}].quantity"),
            format!("quantity must be between 0 and {MAX_QUANTITY} (got {q})."),
        ))
    }
}

fn check_dates(f: &SubscriptionFacts) -> Result<(), Error> {
    if f.start_date >= f.end_date {
        return Err(Error::validation(
            "end_date",
            format!("end_date {} must come after start_date {}.", f.end_date, f.start_date),
        ));
    }
    Ok(())
}

fn check_ref(r: &Option<String>) -> Result<(), Error> {
    match r {
        Some(s) => allot_domain::types::check_search("external_ref", s, 200),
        None => Ok(()),
    }
}

/// Every item's product must be in the catalogue, and named once.
async fn check_items(tx: &mut allot_store::Tx, items: &[ItemInput]) -> Result<(), StoreError> {
    // One read for all items, not one per item.
    let codes: Vec<&ProductCode> = items.iter().map(|it| &it.product).collect();
    let known = catalogue::by_codes(tx, &codes).await?;
    let mut seen = std::collections::HashSet::new();
    for (i, it) in items.iter().enumerate() {
        if !seen.insert(&it.product) {
            return Err(Error::validation(&format!("items[{i}].product"), format!("{} is listed twice.", it.product)).into());
        }
        if !known.contains_key(&it.product) {
            return Err(Error::validation(
                &format!("items[{i}].product"),
                format!("{} is not a product in the catalogue.", it.product),
            )
            .into());
        }
    }
    Ok(())
}

pub async fn list_subscriptions(app: &App, caller: &Caller, org: &str, q: &PageQuery) -> Result<Paged<SubscriptionView>, Error> {
    let page = q.page()?;
    let today = app.clock.today();
    let org = app.visible_org(caller, org, Action::ReadSubscriptions).await?;
    let mut tx = app.store.read_conn().await?;
    let subs = subscriptions::list(&mut tx, &org.id, page.after.as_deref(), page.limit + 1).await?;
    Ok(Paged::from_rows(subs, page.limit, |s| s.id.clone()).map(|s| view(&s, today)))
}

pub async fn create_subscription(app: &App, caller: &Caller, org: &str, input: SubscriptionInput) -> Result<SubscriptionView, Error> {
    let facts = SubscriptionFacts {
        trial: input.trial,
        start_date: input.start_date,
        end_date: input.end_date,
        suspended: input.suspended,
        cancelled: input.cancelled,
    };
    check_dates(&facts)?;
    check_ref(&input.external_ref)?;
    let items = input
        .items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            Ok(Item {
                product: it.product.to_string(),
                quantity: check_quantity(it.quantity.unwrap_or(0), i)?,
                consumed: 0,
                provisioning_status: it.provisioning_status.unwrap_or(ProvisioningStatus::Provisioned),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let (now, today) = (app.clock.now(), app.clock.today());
    let sub = in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::WriteSubscriptions).await?;
        check_items(&mut tx, &input.items).await?;
        let partner = input.partner.clone().or(org.partner.clone());
        if let Some(p) = &partner {
            if !caller.principal.covers_partner(p) || tenants::get_partner(&mut tx, p).await?.is_none() {
                return Err(Error::not_found(format!("Partner {p}")).into());
            }
        }
        let sub = Subscription {
            org: org.id.clone(),
            id: new_id("sub"),
            external_ref: input.external_ref.clone(),
            partner,
            facts,
            items: items.clone(),
        };
        subscriptions::insert(&mut tx, &sub, now).await?;
        let after = snapshot(&view(&sub, today));
        audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "subscription.create",
            &format!("subscription:{}", sub.id),
            None,
            after.as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(sub)
    })?;
    Ok(view(&sub, today))
}

pub async fn get_subscription(app: &App, caller: &Caller, org: &str, sub: &str) -> Result<SubscriptionView, Error> {
    let org = app.visible_org(caller, org, Action::ReadSubscriptions).await?;
    let mut tx = app.store.read_conn().await?;
    let s = subscriptions::get(&mut tx, &org.id, sub)
        .await?
        .ok_or_else(|| subscriptions::not_found(sub))?;
    Ok(view(&s, app.clock.today()))
}

pub async fn update_subscription(
    app: &App,
    caller: &Caller,
    org: &str,
    sub: &str,
    patch: SubscriptionPatch,
    if_match: &IfMatch,
) -> Result<SubscriptionView, Error> {
    check_ref(&patch.external_ref)?;
    for (i, it) in patch.items.iter().enumerate() {
        if let Some(q) = it.quantity {
            check_quantity(q, i)?;
        }
    }
    let (now, today) = (app.clock.now(), app.clock.today());
    let s = in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::WriteSubscriptions).await?;
        let before = subscriptions::get(&mut tx, &org.id, sub)
            .await?
            .ok_or_else(|| subscriptions::not_found(sub))?;
        check_items(&mut tx, &patch.items).await?;
        let mut s = before.clone();
        if let Some(r) = &patch.external_ref {
            s.external_ref = Some(r.clone());
        }
        if let Some(v) = patch.trial {
            s.facts.trial = v;
        }
        if let Some(v) = patch.start_date {
            s.facts.start_date = v;
        }
        if let Some(v) = patch.end_date {
            s.facts.end_date = v;
        }
        if let Some(v) = patch.suspended {
            s.facts.suspended = v;
        }
        check_dates(&s.facts)?;
        if_match.check(&format!("Subscription {sub}"), &subscription_etag(&before))?;
        subscriptions::update(&mut tx, &s, now).await?;
        for it in &patch.items {
            let existing = before.items.iter().find(|x| x.product == it.product.as_str());
            let item = Item {
                product: it.product.to_string(),
                quantity: it.quantity.or(existing.map(|e| e.quantity)).unwrap_or(0),
                consumed: existing.map(|e| e.consumed).unwrap_or(0),
                provisioning_status: it
                    .provisioning_status
                    .or(existing.map(|e| e.provisioning_status))
                    .unwrap_or(ProvisioningStatus::Provisioned),
            };
            subscriptions::upsert_item(&mut tx, &org.id, &s.id, &item).await?;
        }
        let s = subscriptions::get(&mut tx, &org.id, sub)
            .await?
            .ok_or_else(|| subscriptions::not_found(sub))?;
        let (b, a) = (snapshot(&view(&before, today)), snapshot(&view(&s, today)));
        audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "subscription.update",
            &format!("subscription:{}", s.id),
            b.as_ref(),
            a.as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(s)
    })?;
    Ok(view(&s, today))
}

// ---- cancelling

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Move every holder to this subscription first, keeping their service data.
    #[serde(default)]
    pub move_users_to: Option<String>,
    /// Remove every holder's licences of it first (their service data enters retention).
    #[serde(default)]
    pub force: bool,
}

/// What a cancel request did.
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// Cancelled now (nobody held its seats), or it already was.
    Cancelled(SubscriptionView),
    /// A job moves or removes the holders, then cancels it.
    Queued(JobView),
}

fn products_of(s: &Subscription) -> Vec<ProductCode> {
    s.items.iter().filter_map(|i| ProductCode::parse(&i.product).ok()).collect()
}

pub async fn cancel_subscription(app: &App, caller: &Caller, org: &str, sub: &str, req: CancelRequest) -> Result<CancelOutcome, Error> {
    let (now, today) = (app.clock.now(), app.clock.today());
    let mut rd = app.store.read_conn().await?;
    let org = caller.org(&mut rd, org, Action::WriteSubscriptions).await?;
    let s = subscriptions::get(&mut rd, &org.id, sub)
        .await?
        .ok_or_else(|| subscriptions::not_found(sub))?;
    if req.force && req.move_users_to.is_some() {
        return Err(Error::validation("force", "Give move_users_to or force, not both."));
    }
    // The target is checked whatever happens next: a made-up id is refused
    // even when nobody needs moving (the caller's intent was wrong).
    if let Some(target) = &req.move_users_to {
        if target == sub {
            return Err(Error::validation(
                "move_users_to",
                "A subscription cannot move its users to itself.",
            ));
        }
        let t = subscriptions::get(&mut rd, &org.id, target)
            .await?
            .ok_or_else(|| subscriptions::not_found(target))?;
        if t.facts.cancelled {
            return Err(Error::validation(
                "move_users_to",
                format!("Subscription {target} is cancelled: it cannot take users."),
            ));
        }
    }
    if s.facts.cancelled {
        return Ok(CancelOutcome::Cancelled(view(&s, today)));
    }
    let holders = subscriptions::holders(&mut rd, &org.id, sub).await?;
    if holders == 0 {
        drop(rd);
        let s = in_transaction!(app.store, |tx| {
            if let Some(taken) = subscriptions::cancel_if_empty(&mut tx, &org.id, sub, now).await? {
                return Err(StoreError::Domain(has_users(sub, taken)));
            }
            audit::record(
                &mut tx,
                Some(&org.id),
                &caller.actor(),
                "subscription.cancel",
                &format!("subscription:{sub}"),
                Some(&json!({ "cancelled": false })),
                Some(&json!({ "cancelled": true })),
                now,
            )
            .await?;
            subscriptions::get(&mut tx, &org.id, sub)
                .await?
                .ok_or_else(|| StoreError::Domain(subscriptions::not_found(sub)))
        })?;
        return Ok(CancelOutcome::Cancelled(view(&s, today)));
    }
    let filter = Some(UserFilter {
        subscription: Some(sub.to_string()),
        ..UserFilter::default()
    });
    let change = match (&req.move_users_to, req.force) {
        (Some(target), _) => LicenseJobRequest {
            filter,
            move_: Some(MoveSpec {
                product: None,
                from_subscription: sub.to_string(),
                to_subscription: target.clone(),
            }),
            mode: JobMode::PerUser,
            ..LicenseJobRequest::default()
        },
        (None, true) => LicenseJobRequest {
            filter,
            remove: products_of(&s)
                .into_iter()
                .map(|product| RemoveLicense {
                    product,
                    subscription: Some(sub.to_string()),
                })
                .collect(),
            mode: JobMode::PerUser,
            ..LicenseJobRequest::default()
        },
        (None, false) => return Err(has_users(sub, holders)),
    };
    change.validate()?;
    check_license_job(&mut rd, &org.id, &change).await?;
    if let Some(target) = &req.move_users_to {
        check_target_capacity(&mut rd, &org.id, &s, target, today).await?;
    }
    drop(rd);
    let job = queue_job(app, caller, &org.id, JobKind::SubscriptionCancel, &change, Some(sub)).await?;
    Ok(CancelOutcome::Queued(JobView::of(&job)))
}

fn has_users(sub: &str, n: i64) -> Error {
    Error::new(
        Code::SubscriptionHasUsers,
        format!(
            "{n} users hold seats of subscription {sub}. Cancelling it now would take their licences and, after the retention period, \
             their service data (phone numbers, voicemail, settings). Move them with {{\"move_users_to\": \"<subscription id>\"}}, \
             which keeps their data, or remove them with {{\"force\": true}}."
        ),
    )
}

/// Before anything is queued: every product moving needs as many free
/// seats on the target as it has holders on the source.
async fn check_target_capacity(
    rd: &mut allot_store::Tx,
    org: &str,
    source: &Subscription,
    target: &str,
    today: NaiveDate,
) -> Result<(), Error> {
    let cat = catalogue::all(rd).await?;
    let to = subscriptions::get(rd, org, target)
        .await?
        .ok_or_else(|| subscriptions::not_found(target))?;
    let spec = MoveSpec {
        product: None,
        from_subscription: source.id.clone(),
        to_subscription: target.to_string(),
    };
    let mapping = move_mapping(&spec, &products_of(source), &products_of(&to), &cat)?;
    let codes: Vec<&ProductCode> = mapping.iter().map(|(_, t)| t).collect();
    let pools = subscriptions::pools_for(rd, org, &codes).await?;
    let mut demands: Vec<Demand> = Vec::new();
    for (from, to_product) in &mapping {
        let needed = source
            .items
            .iter()
            .find(|i| i.product == from.as_str())
            .map(|i| i.consumed)
            .unwrap_or(0);
        let free = pools
            .iter()
            .find(|p| &p.product == to_product && p.subscription == target && p.assignable(today))
            .map(|p| (p.quantity - p.consumed).max(0))
            .unwrap_or(0);
        match demands.iter_mut().find(|d| &d.product == to_product) {
            // Two source products of one family moving onto one product.
            Some(d) => d.needed += needed,
            None => demands.push(Demand {
                product: to_product.clone(),
                subscription: Some(target.to_string()),
                needed,
                free,
            }),
        }
    }
    let refused = capacity_violations(&demands, &cat);
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Error::rejected(refused))
    }
}

// ---- provisioning details

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetailsInput {
    /// What the service needs (a domain, a number range, ...): 1 to 50
    /// entries, names of 1 to 100 characters, values of at most 1,000.
    #[schema(schema_with = details_schema)]
    pub details: BTreeMap<String, String>,
}

/// `details` in the OpenAPI document: what the check below accepts.
fn details_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .min_properties(Some(1))
        .max_properties(Some(50))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(100))
                .pattern(Some(TEXT_PATTERN)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(1000))
                .pattern(Some(ANY_TEXT_PATTERN))
                .into(),
        )))
        .build()
}

pub async fn submit_provisioning_details(
    app: &App,
    caller: &Caller,
    org: &str,
    sub: &str,
    product: &str,
    input: DetailsInput,
) -> Result<SubscriptionView, Error> {
    if input.details.is_empty() || input.details.len() > 50 {
        return Err(Error::validation("details", "details must hold 1 to 50 entries."));
    }
    if let Some((k, _)) = input.details.iter().find(|(k, v)| {
        allot_domain::types::check_text("name", k, 100).is_err()
            || v.chars().count() > 1000
            || v.chars().any(allot_domain::types::is_forbidden_in_text)
    }) {
        return Err(Error::validation(
            &format!("details.{}", allot_domain::types::excerpt(k)),
            "Each detail needs a name of 1 to 100 characters and a value of at most 1000.",
        ));
    }
    let (now, today) = (app.clock.now(), app.clock.today());
    let details = serde_json::to_string(&input.details).map_err(|e| Error::internal(format!("cannot store the details: {e}")))?;
    let s = in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::SubmitProvisioningDetails).await?;
        let before = subscriptions::get(&mut tx, &org.id, sub)
            .await?
            .ok_or_else(|| StoreError::Domain(subscriptions::not_found(sub)))?;
        let Some(item) = before.items.iter().find(|i| i.product == product) else {
            return Err(Error::not_found(format!("Product {product} on subscription {sub}")).into());
        };
        if !subscriptions::submit_details(&mut tx, &org.id, sub, product, &details).await? {
            return Err(Error::new(
                Code::Conflict,
                format!(
                    "{product} on subscription {sub} is {}, not awaiting details: there is nothing to submit.",
                    item.provisioning_status.as_str()
                ),
            )
            .into());
        }
        audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "subscription.provisioning_details",
            &format!("subscription:{sub}"),
            Some(&json!({ "product": product, "provisioning_status": "awaiting_details" })),
            Some(&json!({ "product": product, "provisioning_status": "provisioning", "details": input.details })),
            now,
        )
        .await?;
        subscriptions::get(&mut tx, &org.id, sub)
            .await?
            .ok_or_else(|| StoreError::Domain(subscriptions::not_found(sub)))
    })?;
    Ok(view(&s, today))
}

/// How many users hold seats of a subscription (what a cancel would take
/// from them, or move).
pub async fn count_subscription_holders(app: &App, caller: &Caller, org: &str, sub: &str) -> Result<i64, Error> {
    let mut rd = app.store.read_conn().await?;
    let org = caller.org(&mut rd, org, Action::ReadSubscriptions).await?;
    subscriptions::get(&mut rd, &org.id, sub)
        .await?
        .ok_or_else(|| subscriptions::not_found(sub))?;
    Ok(subscriptions::holders(&mut rd, &org.id, sub).await?)
}
