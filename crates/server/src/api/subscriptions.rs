//! Subscriptions with their items; `status` is derived for today, never stored.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use allot_domain::access::Action;
use allot_domain::status::{derive_subscription_status, ProvisioningStatus, SubscriptionFacts, SubscriptionStatus};
use allot_domain::types::ProductCode;
use allot_domain::Error;
use allot_store::subscriptions::{self, Item, Subscription};
use allot_store::{audit, catalogue, in_transaction, new_id, tenants, StoreError};

use crate::auth::Ctx;
use crate::extract::{paged, ApiJson, ApiQuery, PageQuery};
use crate::problem::ApiResult;
use crate::AppState;

/// The most seats one item may hold: more is a typo, not a sale.
pub const MAX_QUANTITY: i64 = 10_000_000;

#[derive(Debug, Serialize)]
pub struct ItemView {
    pub product: String,
    pub quantity: i64,
    pub consumed: i64,
    pub available: i64,
    pub provisioning_status: ProvisioningStatus,
}

#[derive(Debug, Serialize)]
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
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    pub product: ProductCode,
    pub quantity: Option<i64>,
    pub provisioning_status: Option<ProvisioningStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionInput {
    pub external_ref: Option<String>,
    pub partner: Option<String>,
    #[serde(default)]
    pub trial: bool,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    #[serde(default)]
    pub suspended: bool,
    #[serde(default)]
    pub cancelled: bool,
    #[serde(default)]
    pub items: Vec<ItemInput>,
}

/// PATCH body. Cancelling goes through `POST .../cancel`, which guards users' seats.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionPatch {
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
        Some(s) if s.len() > 200 => Err(Error::validation("external_ref", "external_ref may have at most 200 characters.")),
        _ => Ok(()),
    }
}

/// Every item's product must be in the catalogue, and named once.
async fn check_items(tx: &mut allot_store::Tx, items: &[ItemInput]) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::new();
    for (i, it) in items.iter().enumerate() {
        if !seen.insert(&it.product) {
            return Err(Error::validation(&format!("items[{i}].product"), format!("{} is listed twice.", it.product)).into());
        }
        if catalogue::get(tx, it.product.as_str()).await?.is_none() {
            return Err(Error::validation(
                &format!("items[{i}].product"),
                format!("{} is not a product in the catalogue.", it.product),
            )
            .into());
        }
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/subscriptions", tag = "subscriptions", params(("org" = String, Path), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "Subscriptions with derived status")))]
pub async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(org): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Value>> {
    let page = q.page()?;
    let today = st.clock.today();
    let mut tx = st.store.begin_read().await?;
    let org = ctx.org(&mut tx, &org, Action::ReadSubscriptions).await?;
    let subs = subscriptions::list(&mut tx, &org.id, page.after.as_deref(), page.limit + 1).await?;
    let views: Vec<SubscriptionView> = subs.iter().map(|s| view(s, today)).collect();
    Ok(Json(paged(views, page.limit, |s| s.id.clone())))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/subscriptions", tag = "subscriptions", params(("org" = String, Path)),
    responses((status = 201, description = "Created"), (status = 422, description = "Invalid")))]
pub async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(org): Path<String>,
    ApiJson(input): ApiJson<SubscriptionInput>,
) -> ApiResult<(StatusCode, Json<SubscriptionView>)> {
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
    let (now, today) = (st.clock.now(), st.clock.today());
    let sub = in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::WriteSubscriptions).await?;
        check_items(&mut tx, &input.items).await?;
        let partner = input.partner.clone().or(org.partner.clone());
        if let Some(p) = &partner {
            if !ctx.principal.covers_partner(p) || tenants::get_partner(&mut tx, p).await?.is_none() {
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
        let after = serde_json::to_value(view(&sub, today)).ok();
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "subscription.create",
            &format!("subscription:{}", sub.id),
            None,
            after.as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(sub)
    })?;
    Ok((StatusCode::CREATED, Json(view(&sub, today))))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/subscriptions/{sub}", tag = "subscriptions", params(("org" = String, Path), ("sub" = String, Path)),
    responses((status = 200, description = "The subscription"), (status = 404, description = "Not found")))]
pub async fn get(State(st): State<AppState>, ctx: Ctx, Path((org, sub)): Path<(String, String)>) -> ApiResult<Json<SubscriptionView>> {
    let mut tx = st.store.begin_read().await?;
    let org = ctx.org(&mut tx, &org, Action::ReadSubscriptions).await?;
    let s = subscriptions::get(&mut tx, &org.id, &sub)
        .await?
        .ok_or_else(|| subscriptions::not_found(&sub))?;
    Ok(Json(view(&s, st.clock.today())))
}

#[utoipa::path(patch, path = "/api/v1/orgs/{org}/subscriptions/{sub}", tag = "subscriptions", params(("org" = String, Path), ("sub" = String, Path)),
    responses((status = 200, description = "Updated"), (status = 422, description = "Invalid")))]
pub async fn patch(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((org, sub)): Path<(String, String)>,
    ApiJson(patch): ApiJson<SubscriptionPatch>,
) -> ApiResult<Json<SubscriptionView>> {
    check_ref(&patch.external_ref)?;
    for (i, it) in patch.items.iter().enumerate() {
        if let Some(q) = it.quantity {
            check_quantity(q, i)?;
        }
    }
    let (now, today) = (st.clock.now(), st.clock.today());
    let s = in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::WriteSubscriptions).await?;
        let before = subscriptions::get(&mut tx, &org.id, &sub)
            .await?
            .ok_or_else(|| subscriptions::not_found(&sub))?;
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
        let s = subscriptions::get(&mut tx, &org.id, &sub)
            .await?
            .ok_or_else(|| subscriptions::not_found(&sub))?;
        let (b, a) = (
            serde_json::to_value(view(&before, today)).ok(),
            serde_json::to_value(view(&s, today)).ok(),
        );
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "subscription.update",
            &format!("subscription:{}", s.id),
            b.as_ref(),
            a.as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(s)
    })?;
    Ok(Json(view(&s, today)))
}
