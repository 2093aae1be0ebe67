//! Licences: the org's overview, one user's licences, and the atomic change.

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashSet;

use allot_domain::access::Action;
use allot_domain::planner::{
    plan_license_change, Held, LicenseChange, PlanInput, Properties, UserFacts,
};
use allot_domain::types::{ProductCode, UserKind, UserStatus};
use allot_domain::{Code, Error};
use allot_store::{audit, catalogue, in_transaction, licenses, subscriptions, users, StoreError};

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
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/licenses", tag = "licenses", params(("org" = String, Path)),
    responses((status = 200, description = "One row per subscription item: total, consumed, available, features")))]
pub async fn overview(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(org): Path<String>,
) -> ApiResult<Json<Value>> {
    let mut tx = st.store.begin_read().await?;
    let org = ctx.org(&mut tx, &org, Action::ReadLicenses).await?;
    let rows = subscriptions::license_rows(&mut tx, &org.id).await?;
    let cat = catalogue::all(&mut tx).await?;
    let items: Vec<OverviewRow> = rows
        .into_iter()
        .map(|r| {
            let p = ProductCode::parse(&r.product)
                .ok()
                .and_then(|c| cat.get(&c));
            OverviewRow {
                name: p
                    .map(|p| p.name.clone())
                    .unwrap_or_else(|| r.product.clone()),
                features: p.map(|p| p.features.clone()).unwrap_or_default(),
                available: r.total - r.consumed,
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
pub async fn of_user(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((org, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let mut tx = st.store.begin_read().await?;
    let org = ctx.org(&mut tx, &org, Action::ReadLicenses).await?;
    // Which licences a person holds is user data (sales agents may not read it).
    ctx.require(Action::ReadUsers)?;
    users::get(&mut tx, &org.id, &user)
        .await?
        .ok_or_else(|| Error::not_found(format!("User {user}")))?;
    let items = views(licenses::of_user(&mut tx, &org.id, &user).await?);
    Ok(Json(json!({ "items": items })))
}

/// The atomic single-user licence change: plan it (pure), then apply it in one
/// transaction whose guarded counters are the final word on seats.
pub async fn change_licenses(
    st: &AppState,
    ctx: &Ctx,
    org_id: &str,
    user_id: &str,
    change: &LicenseChange,
) -> Result<Vec<LicenseView>, Error> {
    let (now, today) = (st.clock.now(), st.clock.today());
    in_transaction!(st.store, |tx| {
        let org = ctx.org(&mut tx, org_id, Action::WriteLicenses).await?;
        let user = users::get_for_update(&mut tx, &org.id, user_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("User {user_id}")))?;
        let held: Vec<Held> = licenses::of_user(&mut tx, &org.id, &user.id)
            .await?
            .into_iter()
            .map(|a| a.held)
            .collect();
        let mut codes: Vec<&ProductCode> = change
            .add
            .iter()
            .map(|a| &a.product)
            .chain(change.remove.iter().map(|r| &r.product))
            .chain(held.iter().map(|h| &h.product))
            .collect();
        let mut seen = HashSet::new();
        codes.retain(|c| seen.insert(*c));
        let cat = catalogue::by_codes(&mut tx, &codes).await?;
        let added: Vec<&ProductCode> = change.add.iter().map(|a| &a.product).collect();
        let pools = subscriptions::pools_for(&mut tx, &org.id, &added, today).await?;
        let facts = UserFacts {
            id: user.id.clone(),
            email: user.email.clone(),
            kind: UserKind::parse(&user.kind).unwrap_or(UserKind::Internal),
            status: UserStatus::parse(&user.status).unwrap_or(UserStatus::Active),
        };
        let plan = plan_license_change(
            &PlanInput {
                user: &facts,
                held: &held,
                catalogue: &cat,
                pools: &pools,
            },
            change,
        )
        .map_err(Error::rejected)?;
        if let Err(full) =
            licenses::apply_plan(&mut tx, &org.id, &user.id, &plan, &cat, now).await?
        {
            let named = change
                .add
                .iter()
                .any(|a| a.product == full.product && a.subscription.is_some());
            if !named {
                // The seat chosen from a snapshot went to someone else first: plan again on fresh counts.
                return Err(StoreError::Retry(format!(
                    "pool {} of {} filled concurrently",
                    full.subscription, full.product
                )));
            }
            let name = cat
                .get(&full.product)
                .map(|p| p.name.clone())
                .unwrap_or_else(|| full.product.to_string());
            return Err(Error::rejected(vec![allot_domain::Violation::new(
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
        let after = licenses::of_user(&mut tx, &org.id, &user.id).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &ctx.actor(),
            "license.change",
            &format!("user:{}", user.id),
            Some(&json!({ "licenses": held })),
            Some(&json!({ "licenses": plan.result, "moved_families": plan.moved_families })),
            now,
        )
        .await?;
        Ok::<_, StoreError>(views(after))
    })
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
    Ok(Json(json!({ "items": items })))
}
