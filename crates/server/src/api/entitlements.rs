//! Entitlement checks: the SaaS product asks whether users may use features.

use axum::extract::{Path, State};
use axum::Json;

use axum::http::header;
use axum::response::IntoResponse;

use crate::app::entitlements::usage::{self, LicenseUsage, UsageQuery};
use crate::app::entitlements::{self, CheckInput, EntitlementCheck, EntitlementToken, Evaluations, EvaluationsInput, UserEntitlementsView};
use crate::app::signing::{self, JwkSet};
use crate::app::{App, Caller};
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::ApiResult;

#[utoipa::path(post, path = "/api/v1/orgs/{org}/entitlements/check", operation_id = "check_entitlement", tag = "entitlements",
    params(("org" = String, Path, description = "The organisation's id")),
    request_body = CheckInput,
    responses((status = 200, description = "Whether the user may use the feature (or product) now, and why; an unknown user or feature is an answer, `allowed: false`", body = EntitlementCheck)))]
pub async fn check_entitlement(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiJson(input): ApiJson<CheckInput>,
) -> ApiResult<Json<EntitlementCheck>> {
    Ok(Json(entitlements::check_entitlement(&app, &caller, &org, &input).await?))
}

#[utoipa::path(post, path = "/api/v1/entitlements/evaluations", operation_id = "evaluate_entitlements", tag = "entitlements",
    request_body = EvaluationsInput,
    responses((status = 200, description = "One answer per question, in the same order (at most 1,000 questions)", body = Evaluations)))]
pub async fn evaluate_entitlements(
    State(app): State<App>,
    caller: Caller,
    ApiJson(input): ApiJson<EvaluationsInput>,
) -> ApiResult<Json<Evaluations>> {
    Ok(Json(entitlements::evaluate_entitlements(&app, &caller, &input).await?))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/users/{user}/entitlements", operation_id = "list_user_entitlements", tag = "entitlements",
    params(("org" = String, Path, description = "The organisation's id"), ("user" = String, Path, description = "The user's id or email")),
    responses((status = 200, description = "Every feature and product the user may use today, with what grants each", body = UserEntitlementsView)))]
pub async fn list_user_entitlements(
    State(app): State<App>,
    caller: Caller,
    Path((org, user)): Path<(String, String)>,
) -> ApiResult<Json<UserEntitlementsView>> {
    Ok(Json(entitlements::list_user_entitlements(&app, &caller, &org, &user).await?))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/users/{user}/entitlement-token", operation_id = "issue_entitlement_token", tag = "entitlements",
    params(("org" = String, Path, description = "The organisation's id"), ("user" = String, Path, description = "The user's id or email")),
    responses(
        (status = 200, description = "A JWT signed with Ed25519 naming what the user may use now, for a product that must work offline; verify it with the keys at `/.well-known/jwks.json`", body = EntitlementToken),
        (status = 503, description = "unavailable: this server has no signing key configured, or cannot open it")))]
pub async fn issue_entitlement_token(
    State(app): State<App>,
    caller: Caller,
    Path((org, user)): Path<(String, String)>,
) -> ApiResult<Json<EntitlementToken>> {
    Ok(Json(entitlements::issue_entitlement_token(&app, &caller, &org, &user).await?))
}

#[utoipa::path(get, path = "/.well-known/jwks.json", operation_id = "get_jwks", tag = "entitlements", security(()),
    responses((status = 200, description = "The public keys that verify offline entitlement tokens: the signing key, and each retired key until the last token it signed has expired", body = JwkSet)))]
pub async fn get_jwks(State(app): State<App>) -> ApiResult<impl IntoResponse> {
    let keys = signing::publish_jwks(&app).await?;
    // Verifiers may cache the set a few minutes; after a rotation they
    // meet an unknown kid and fetch it again.
    Ok(([(header::CACHE_CONTROL, "public, max-age=300")], Json(keys)))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/license-usage", operation_id = "get_license_usage", tag = "entitlements",
    params(("org" = String, Path, description = "The organisation's id"), UsageQuery),
    responses((status = 200, description = "Per product and subscription: holders, those who used it in the window (an entitlement check answered yes), the idle ones and those given the seat within the window", body = LicenseUsage)))]
pub async fn get_license_usage(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Json<LicenseUsage>> {
    Ok(Json(usage::license_usage(&app, &caller, &org, &q).await?))
}
