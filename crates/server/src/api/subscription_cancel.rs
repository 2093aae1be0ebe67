//! Cancelling a subscription (R-SUB-6, seed 001): cancelling first would
//! destroy its users' service data, so it is refused while users hold its
//! seats unless they are moved to another subscription (`move_users_to`,
//! keeping their data) or removed (`force`, their data enters retention).
//! Both run as a job of kind `subscription_cancel` through the planner; the
//! job cancels the subscription when nobody holds a seat of it any more.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use allot_domain::access::Action;
use allot_domain::bulk::{capacity_violations, move_mapping, Demand, JobMode, LicenseJobRequest, MoveSpec, UserFilter};
use allot_domain::planner::RemoveLicense;
use allot_domain::types::ProductCode;
use allot_domain::{Code, Error};
use allot_store::subscriptions::{self, Subscription};
use allot_store::{audit, catalogue, in_transaction, StoreError};

use super::jobs::{check_license_job, job_view, queue_job};
use super::subscriptions::view;
use crate::auth::Ctx;
use crate::extract::ApiJsonOrEmpty;
use crate::problem::ApiResult;
use crate::worker::license_job::CANCEL_JOB_KIND;
use crate::AppState;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Move every holder to this subscription first, keeping service data.
    #[serde(default)]
    pub move_users_to: Option<String>,
    /// Remove every holder's licences of it first.
    #[serde(default)]
    pub force: bool,
}

fn products_of(s: &Subscription) -> Vec<ProductCode> {
    s.items.iter().filter_map(|i| ProductCode::parse(&i.product).ok()).collect()
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/subscriptions/{sub}/cancel", tag = "subscriptions",
    params(("org" = String, Path), ("sub" = String, Path)),
    responses((status = 200, description = "Cancelled (or already cancelled)"),
               (status = 202, description = "A job moves or removes the holders, then cancels it"),
               (status = 409, description = "subscription_has_users: users hold its seats"),
               (status = 422, description = "The target subscription cannot take them")))]
pub async fn cancel(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((org, sub)): Path<(String, String)>,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<CancelRequest>,
) -> ApiResult<Response> {
    let (now, today) = (st.clock.now(), st.clock.today());
    let mut rd = st.store.read_conn().await?;
    let org = ctx.org(&mut rd, &org, Action::WriteSubscriptions).await?;
    let s = subscriptions::get(&mut rd, &org.id, &sub)
        .await?
        .ok_or_else(|| subscriptions::not_found(&sub))?;
    if req.force && req.move_users_to.is_some() {
        return Err(Error::validation("force", "Give move_users_to or force, not both.").into());
    }
    // The target is checked whatever happens next: a made-up id is refused
    // even when nobody needs moving (the caller's intent was wrong).
    if let Some(target) = &req.move_users_to {
        if *target == sub {
            return Err(Error::validation("move_users_to", "A subscription cannot move its users to itself.").into());
        }
        let t = subscriptions::get(&mut rd, &org.id, target)
            .await?
            .ok_or_else(|| subscriptions::not_found(target))?;
        if t.facts.cancelled {
            return Err(Error::validation(
                "move_users_to",
                format!("Subscription {target} is cancelled: it cannot take users."),
            )
            .into());
        }
    }
    if s.facts.cancelled {
        return Ok(Json(view(&s, today)).into_response());
    }
    let holders = subscriptions::holders(&mut rd, &org.id, &sub).await?;
    if holders == 0 {
        drop(rd);
        let s = in_transaction!(st.store, |tx| {
            if let Some(taken) = subscriptions::cancel_if_empty(&mut tx, &org.id, &sub, now).await? {
                return Err(StoreError::Domain(has_users(&sub, taken)));
            }
            audit::record(
                &mut tx,
                Some(&org.id),
                &ctx.actor(),
                "subscription.cancel",
                &format!("subscription:{sub}"),
                Some(&json!({ "cancelled": false })),
                Some(&json!({ "cancelled": true })),
                now,
            )
            .await?;
            subscriptions::get(&mut tx, &org.id, &sub)
                .await?
                .ok_or_else(|| StoreError::Domain(subscriptions::not_found(&sub)))
        })?;
        return Ok(Json(view(&s, today)).into_response());
    }
    let filter = Some(UserFilter {
        subscription: Some(sub.clone()),
        ..UserFilter::default()
    });
    let change = match (&req.move_users_to, req.force) {
        (Some(target), _) => {
            if *target == sub {
                return Err(Error::validation("move_users_to", "A subscription cannot move its users to itself.").into());
            }
            LicenseJobRequest {
                filter,
                move_: Some(MoveSpec {
                    product: None,
                    from_subscription: sub.clone(),
                    to_subscription: target.clone(),
                }),
                mode: JobMode::PerUser,
                ..LicenseJobRequest::default()
            }
        }
        (None, true) => LicenseJobRequest {
            filter,
            remove: products_of(&s)
                .into_iter()
                .map(|product| RemoveLicense {
                    product,
                    subscription: Some(sub.clone()),
                })
                .collect(),
            mode: JobMode::PerUser,
            ..LicenseJobRequest::default()
        },
        (None, false) => return Err(has_users(&sub, holders).into()),
    };
    change.validate()?;
    check_license_job(&mut rd, &org.id, &change).await?;
    if let Some(target) = &req.move_users_to {
        check_target_capacity(&mut rd, &org.id, &s, target, today).await?;
    }
    drop(rd);
    let job = queue_job(&st, &ctx, &org.id, CANCEL_JOB_KIND, &change, Some(&sub)).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job": job_view(&job) }))).into_response())
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

/// R-BULK-3 before anything is queued: every product moving needs as many
/// free seats on the target as it has holders on the source.
async fn check_target_capacity(
    rd: &mut allot_store::Tx,
    org: &str,
    source: &Subscription,
    target: &str,
    today: chrono::NaiveDate,
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
