//! R-SUB-3: an item `awaiting_details` waits for its org's admin to submit
//! what the service needs (a domain, a number range, ...); submitting moves it
//! to `provisioning`, and the provider or partner finishes the set-up.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use allot_domain::access::Action;
use allot_domain::{Code, Error};
use allot_store::{audit, in_transaction, subscriptions, StoreError};

use super::subscriptions::{view, SubscriptionView};
use crate::auth::Ctx;
use crate::extract::ApiJson;
use crate::problem::ApiResult;
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailsInput {
    pub details: BTreeMap<String, String>,
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/subscriptions/{sub}/items/{product}/provisioning-details", tag = "subscriptions",
    params(("org" = String, Path), ("sub" = String, Path), ("product" = String, Path)),
    responses((status = 200, description = "The item moved to provisioning"), (status = 409, description = "The item is not awaiting details")))]
pub async fn submit(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((org, sub, product)): Path<(String, String, String)>,
    ApiJson(input): ApiJson<DetailsInput>,
) -> ApiResult<Json<SubscriptionView>> {
    if input.details.is_empty() || input.details.len() > 50 {
        return Err(Error::validation("details", "details must hold 1 to 50 entries.").into());
    }
    if let Some((k, _)) = input.details.iter().find(|(k, v)| {
        allot_domain::types::check_text("name", k, 100).is_err()
            || v.chars().count() > 1000
            || v.chars().any(allot_domain::types::is_forbidden_in_text)
    }) {
        return Err(Error::validation(
            &format!("details.{k}"),
            "Each detail needs a name of 1 to 100 characters and a value of at most 1000.",
        )
        .into());
    }
    let (now, today) = (st.clock.now(), st.clock.today());
    let details = serde_json::to_string(&input.details).map_err(|e| Error::internal(format!("cannot store the details: {e}")))?;
    let s = in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, &org, Action::SubmitProvisioningDetails).await?;
        let before = subscriptions::get(&mut tx, &org.id, &sub)
            .await?
            .ok_or_else(|| StoreError::Domain(subscriptions::not_found(&sub)))?;
        let Some(item) = before.items.iter().find(|i| i.product == product) else {
            return Err(Error::not_found(format!("Product {product} on subscription {sub}")).into());
        };
        if !subscriptions::submit_details(&mut tx, &org.id, &sub, &product, &details).await? {
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
            &ctx.actor(),
            "subscription.provisioning_details",
            &format!("subscription:{sub}"),
            Some(&json!({ "product": product, "provisioning_status": "awaiting_details" })),
            Some(&json!({ "product": product, "provisioning_status": "provisioning", "details": input.details })),
            now,
        )
        .await?;
        subscriptions::get(&mut tx, &org.id, &sub)
            .await?
            .ok_or_else(|| StoreError::Domain(subscriptions::not_found(&sub)))
    })?;
    Ok(Json(view(&s, today)))
}
