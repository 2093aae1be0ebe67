//! Purchase requests (R-SUB-5, R-ROLE-2): an org super admin with a payment
//! method on file asks for more seats; the request stays pending until the
//! provider or the org's partner fulfils it (the quantity grows, the request
//! records who and when) or rejects it. Where buying is not possible, the
//! answer says why and whom to contact.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use allot_domain::access::Action;
use allot_domain::types::ProductCode;
use allot_domain::{Code, Error};
use allot_store::purchases::{self, PurchaseRequest};
use allot_store::tenants::{self, Org};
use allot_store::{audit, catalogue, in_transaction, new_id, subscriptions, ts, StoreError, Tx};

use crate::auth::Ctx;
use crate::extract::{paged, ApiJson, ApiJsonOrEmpty, ApiQuery, PageQuery};
use crate::problem::ApiResult;
use crate::AppState;

/// The most seats one request may ask for.
pub const MAX_PURCHASE: i64 = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseInput {
    pub product: ProductCode,
    pub quantity: i64,
    #[serde(default)]
    pub subscription: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FulfilInput {
    /// Where the seats go when the request named no subscription.
    #[serde(default)]
    pub subscription: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectInput {
    #[serde(default)]
    pub reason: Option<String>,
}

/// Whom an org's admins contact to buy: its partner, else the provider.
pub async fn contact(tx: &mut Tx, org: &Org) -> Result<String, StoreError> {
    Ok(match &org.partner {
        Some(p) => match tenants::get_partner(tx, p).await? {
            Some(partner) => format!("your partner {}", partner.name),
            None => "your partner".to_string(),
        },
        None => "the provider".to_string(),
    })
}

fn view(p: &PurchaseRequest) -> Value {
    json!(p)
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/purchase-requests", tag = "purchases", params(("org" = String, Path), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "The org's purchase requests")))]
pub async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(org): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Value>> {
    let page = q.page()?;
    let mut rd = st.store.read_conn().await?;
    let org = ctx.org(&mut rd, &org, Action::ReadSubscriptions).await?;
    let rows = purchases::list(&mut rd, &org.id, page.after.as_deref(), page.limit + 1).await?;
    Ok(Json(paged(rows, page.limit, |p| p.id.clone())))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/purchase-requests", tag = "purchases", params(("org" = String, Path)),
    responses((status = 201, description = "Pending"), (status = 403, description = "payment_method_required, self_service_purchase_disabled or not a super admin")))]
pub async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(org): Path<String>,
    ApiJson(input): ApiJson<PurchaseInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !(1..=MAX_PURCHASE).contains(&input.quantity) {
        return Err(Error::validation("quantity", format!("quantity must be between 1 and {MAX_PURCHASE}.")).into());
    }
    let now = st.clock.now();
    let p = in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::RequestPurchase).await?;
        let who = contact(&mut tx, &org).await?;
        if !org.self_service_purchase {
            return Err(Error::new(
                Code::SelfServicePurchaseDisabled,
                format!("Licences cannot be bought here for {}: contact {who} to buy more.", org.name),
            )
            .into());
        }
        if !org.payment_method_on_file {
            return Err(Error::new(
                Code::PaymentMethodRequired,
                format!("{} has no payment method on file: add one, or contact {who} to buy more.", org.name),
            )
            .into());
        }
        if catalogue::get(&mut tx, input.product.as_str()).await?.is_none() {
            return Err(Error::validation("product", format!("{} is not a product in the catalogue.", input.product)).into());
        }
        if let Some(s) = &input.subscription {
            let sub = subscriptions::get(&mut tx, &org.id, s)
                .await?
                .ok_or_else(|| StoreError::Domain(subscriptions::not_found(s)))?;
            if sub.facts.cancelled {
                return Err(Error::validation("subscription", format!("Subscription {s} is cancelled.")).into());
            }
        }
        let p = PurchaseRequest {
            id: new_id("pur"),
            org: org.id.clone(),
            product: input.product.to_string(),
            quantity: input.quantity,
            subscription: input.subscription.clone(),
            state: "pending".into(),
            requested_by: ctx.actor().actor,
            requested_at: ts(now),
            decided_by: None,
            decided_at: None,
            fulfilled_subscription: None,
            reason: None,
        };
        purchases::insert(&mut tx, &p).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "purchase.request",
            &format!("purchase:{}", p.id),
            None,
            Some(&view(&p)),
            now,
        )
        .await?;
        Ok::<_, StoreError>(p)
    })?;
    Ok((StatusCode::CREATED, Json(view(&p))))
}

/// Marks a pending request decided, with its audit event (`purchase.fulfil`
/// or `purchase.reject`); a request decided meanwhile by someone else is a
/// conflict and nothing changes.
async fn record_decision(
    tx: &mut Tx,
    ctx: &Ctx,
    before: &PurchaseRequest,
    state: &str,
    fulfilled_subscription: Option<&str>,
    reason: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<PurchaseRequest, StoreError> {
    let id = &before.id;
    if !purchases::decide(tx, before, state, &ctx.actor().actor, fulfilled_subscription, reason, now).await? {
        return Err(Error::new(Code::Conflict, format!("Purchase request {id} was decided meanwhile.")).into());
    }
    let after = purchases::get(tx, &before.org, id)
        .await?
        .ok_or_else(|| StoreError::Domain(Error::not_found(format!("Purchase request {id}"))))?;
    let action = if state == "fulfilled" {
        "purchase.fulfil"
    } else {
        "purchase.reject"
    };
    audit::record(
        tx,
        Some(&before.org),
        &ctx.actor(),
        action,
        &format!("purchase:{id}"),
        Some(&view(before)),
        Some(&view(&after)),
        now,
    )
    .await?;
    Ok(after)
}

async fn pending(tx: &mut Tx, org: &str, id: &str) -> Result<PurchaseRequest, StoreError> {
    let p = purchases::get(tx, org, id)
        .await?
        .ok_or_else(|| StoreError::Domain(Error::not_found(format!("Purchase request {id}"))))?;
    if p.state != "pending" {
        return Err(Error::new(Code::Conflict, format!("Purchase request {id} is already {}.", p.state)).into());
    }
    Ok(p)
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/purchase-requests/{id}/fulfil", tag = "purchases", params(("org" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "Fulfilled: the seats were added"), (status = 409, description = "Not pending")))]
pub async fn fulfil(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((org, id)): Path<(String, String)>,
    ApiJsonOrEmpty(input): ApiJsonOrEmpty<FulfilInput>,
) -> ApiResult<Json<Value>> {
    let now = st.clock.now();
    let p = in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::DecidePurchase).await?;
        let before = pending(&mut tx, &org.id, &id).await?;
        // Where the seats go: as asked, else as the decider says, else the
        // org's one live subscription carrying the product.
        let target = match before.subscription.clone().or(input.subscription.clone()) {
            Some(s) => {
                let sub = subscriptions::get(&mut tx, &org.id, &s)
                    .await?
                    .ok_or_else(|| StoreError::Domain(subscriptions::not_found(&s)))?;
                if sub.facts.cancelled {
                    return Err(Error::validation("subscription", format!("Subscription {s} is cancelled.")).into());
                }
                s
            }
            None => {
                let code = ProductCode::parse(&before.product)?;
                let carrying: Vec<String> = subscriptions::pools_for(&mut tx, &org.id, &[&code])
                    .await?
                    .into_iter()
                    .filter(|p| !p.subscription_facts.cancelled)
                    .map(|p| p.subscription)
                    .collect();
                match carrying.as_slice() {
                    [one] => one.clone(),
                    [] => {
                        return Err(Error::validation(
                            "subscription",
                            format!(
                                "No subscription of {} carries {}: name the subscription the seats go to.",
                                org.name, before.product
                            ),
                        )
                        .into())
                    }
                    _ => {
                        return Err(Error::validation(
                            "subscription",
                            format!(
                                "{} subscriptions carry {}: name the one the seats go to.",
                                carrying.len(),
                                before.product
                            ),
                        )
                        .into())
                    }
                }
            }
        };
        subscriptions::add_seats(
            &mut tx,
            &org.id,
            &target,
            &before.product,
            before.quantity,
            super::subscriptions::MAX_QUANTITY,
        )
        .await?;
        record_decision(&mut tx, &ctx, &before, "fulfilled", Some(&target), None, now).await
    })?;
    Ok(Json(view(&p)))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/purchase-requests/{id}/reject", tag = "purchases", params(("org" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "Rejected"), (status = 409, description = "Not pending")))]
pub async fn reject(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((org, id)): Path<(String, String)>,
    ApiJsonOrEmpty(input): ApiJsonOrEmpty<RejectInput>,
) -> ApiResult<Json<Value>> {
    if let Some(reason) = input.reason.as_deref().filter(|r| !r.trim().is_empty()) {
        allot_domain::types::check_text("reason", reason, 1000)?;
    }
    let now = st.clock.now();
    let p = in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::DecidePurchase).await?;
        let before = pending(&mut tx, &org.id, &id).await?;
        record_decision(&mut tx, &ctx, &before, "rejected", None, input.reason.as_deref(), now).await
    })?;
    Ok(Json(view(&p)))
}
