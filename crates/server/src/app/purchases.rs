//! Purchase requests: an org super admin with a payment method on file asks
//! for more seats; the request stays pending until the provider or the
//! org's partner fulfils it (the quantity grows, the request records who and
//! when) or rejects it. Where buying is not possible, the answer says why
//! and whom to contact.

use serde::{Deserialize, Serialize};

use allot_domain::access::Action;
use allot_domain::types::ProductCode;
use allot_domain::{Code, Error};
use allot_store::purchases::{self, PurchaseRequest};
use allot_store::tenants::{self, Org};
use allot_store::{audit, catalogue, in_transaction, new_id, subscriptions, ts, StoreError, Tx};

use super::audit::snapshot;
use super::paging::{PageQuery, Paged};
use super::{App, Caller};

/// The most seats one request may ask for.
pub const MAX_PURCHASE: i64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PurchaseState {
    Pending,
    Fulfilled,
    Rejected,
}

impl PurchaseState {
    pub fn as_str(&self) -> &'static str {
        match self {
            PurchaseState::Pending => "pending",
            PurchaseState::Fulfilled => "fulfilled",
            PurchaseState::Rejected => "rejected",
        }
    }
}

/// A purchase request as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PurchaseView {
    pub id: String,
    pub org: String,
    pub product: String,
    pub quantity: i64,
    /// The subscription asked for, if any.
    pub subscription: Option<String>,
    #[schema(value_type = PurchaseState)]
    pub state: String,
    pub requested_by: String,
    pub requested_at: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    /// The subscription whose quantity grew.
    pub fulfilled_subscription: Option<String>,
    /// Why it was rejected.
    pub reason: Option<String>,
}

impl From<PurchaseRequest> for PurchaseView {
    fn from(p: PurchaseRequest) -> Self {
        PurchaseView {
            id: p.id,
            org: p.org,
            product: p.product,
            quantity: p.quantity,
            subscription: p.subscription,
            state: p.state,
            requested_by: p.requested_by,
            requested_at: p.requested_at,
            decided_by: p.decided_by,
            decided_at: p.decided_at,
            fulfilled_subscription: p.fulfilled_subscription,
            reason: p.reason,
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseInput {
    pub product: ProductCode,
    #[serde(deserialize_with = "super::whole::i64")]
    #[schema(minimum = 1, maximum = 100_000)]
    pub quantity: i64,
    /// The subscription the seats should go to.
    #[serde(default)]
    pub subscription: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FulfilInput {
    /// Where the seats go when the request named no subscription.
    #[serde(default)]
    pub subscription: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectInput {
    #[serde(default)]
    #[schema(
        max_length = 1000,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
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

/// Whom the org's admins contact to buy more seats ("your partner X" or
/// "the provider"), for roles that may not ask themselves.
pub async fn purchase_contact(app: &App, caller: &Caller, org: &str) -> Result<String, Error> {
    let mut rd = app.store.read_conn().await?;
    let org = caller.org(&mut rd, org, Action::ReadOrg).await?;
    Ok(contact(&mut rd, &org).await?)
}

pub async fn list_purchase_requests(app: &App, caller: &Caller, org: &str, q: &PageQuery) -> Result<Paged<PurchaseView>, Error> {
    let page = q.page()?;
    let mut rd = app.store.read_conn().await?;
    let org = caller.org(&mut rd, org, Action::ReadSubscriptions).await?;
    let rows = purchases::list(&mut rd, &org.id, page.after.as_deref(), page.limit + 1).await?;
    Ok(Paged::from_rows(rows, page.limit, |p| p.id.clone()).map(PurchaseView::from))
}

pub async fn create_purchase_request(app: &App, caller: &Caller, org: &str, input: PurchaseInput) -> Result<PurchaseView, Error> {
    if !(1..=MAX_PURCHASE).contains(&input.quantity) {
        return Err(Error::validation(
            "quantity",
            format!("quantity must be between 1 and {MAX_PURCHASE}."),
        ));
    }
    let now = app.clock.now();
    let p = in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::RequestPurchase).await?;
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
            state: PurchaseState::Pending.as_str().into(),
            requested_by: caller.actor().actor,
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
            &caller.actor(),
            "purchase.request",
            &format!("purchase:{}", p.id),
            None,
            snapshot(&p).as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(p)
    })?;
    Ok(p.into())
}

/// Marks a pending request decided, with its audit event (`purchase.fulfil`
/// or `purchase.reject`); a request decided meanwhile by someone else is a
/// conflict and nothing changes.
async fn record_decision(
    tx: &mut Tx,
    caller: &Caller,
    before: &PurchaseRequest,
    state: PurchaseState,
    fulfilled_subscription: Option<&str>,
    reason: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<PurchaseRequest, StoreError> {
    let id = &before.id;
    if !purchases::decide(
        tx,
        before,
        state.as_str(),
        &caller.actor().actor,
        fulfilled_subscription,
        reason,
        now,
    )
    .await?
    {
        return Err(Error::new(Code::Conflict, format!("Purchase request {id} was decided meanwhile.")).into());
    }
    let after = purchases::get(tx, &before.org, id)
        .await?
        .ok_or_else(|| StoreError::Domain(Error::not_found(format!("Purchase request {id}"))))?;
    let action = if state == PurchaseState::Fulfilled {
        "purchase.fulfil"
    } else {
        "purchase.reject"
    };
    audit::record(
        tx,
        Some(&before.org),
        &caller.actor(),
        action,
        &format!("purchase:{id}"),
        snapshot(before).as_ref(),
        snapshot(&after).as_ref(),
        now,
    )
    .await?;
    Ok(after)
}

async fn pending(tx: &mut Tx, org: &str, id: &str) -> Result<PurchaseRequest, StoreError> {
    let p = purchases::get(tx, org, id)
        .await?
        .ok_or_else(|| StoreError::Domain(Error::not_found(format!("Purchase request {}", allot_domain::types::excerpt(id)))))?;
    if p.state != PurchaseState::Pending.as_str() {
        return Err(Error::new(Code::Conflict, format!("Purchase request {id} is already {}.", p.state)).into());
    }
    Ok(p)
}

pub async fn fulfil_purchase_request(app: &App, caller: &Caller, org: &str, id: &str, input: FulfilInput) -> Result<PurchaseView, Error> {
    let now = app.clock.now();
    let p = in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::DecidePurchase).await?;
        let before = pending(&mut tx, &org.id, id).await?;
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
        record_decision(&mut tx, caller, &before, PurchaseState::Fulfilled, Some(&target), None, now).await
    })?;
    Ok(p.into())
}

pub async fn reject_purchase_request(app: &App, caller: &Caller, org: &str, id: &str, input: RejectInput) -> Result<PurchaseView, Error> {
    if let Some(reason) = input.reason.as_deref() {
        allot_domain::types::check_search("reason", reason, 1000)?;
    }
    let now = app.clock.now();
    let p = in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::DecidePurchase).await?;
        let before = pending(&mut tx, &org.id, id).await?;
        record_decision(
            &mut tx,
            caller,
            &before,
            PurchaseState::Rejected,
            None,
            input.reason.as_deref(),
            now,
        )
        .await
    })?;
    Ok(p.into())
}
