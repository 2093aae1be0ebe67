//! Licences: an org's seats and one user's licences, and the atomic change.

use axum::extract::{Path, State};
use axum::Json;

use allot_domain::planner::LicenseChange;

use crate::app::licenses::{self, LicenseChangeResult, OverviewRow, UserLicenses};
use crate::app::paging::Paged;
use crate::app::{App, Caller};
use crate::extract::ApiJson;
use crate::problem::ApiResult;

#[utoipa::path(get, path = "/api/v1/orgs/{org}/licenses", operation_id = "list_org_licenses", tag = "licenses",
    params(("org" = String, Path, description = "The organisation's id")),
    responses((status = 200, description = "One row per subscription item: total, consumed, available, features", body = Paged<OverviewRow>)))]
pub async fn list_org_licenses(State(app): State<App>, caller: Caller, Path(org): Path<String>) -> ApiResult<Json<Paged<OverviewRow>>> {
    Ok(Json(licenses::list_org_licenses(&app, &caller, &org).await?))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/users/{user}/licenses", operation_id = "list_user_licenses", tag = "licenses",
    params(("org" = String, Path, description = "The organisation's id"), ("user" = String, Path, description = "The user's id")),
    responses((status = 200, description = "The user's licences and retained service data", body = UserLicenses)))]
pub async fn list_user_licenses(
    State(app): State<App>,
    caller: Caller,
    Path((org, user)): Path<(String, String)>,
) -> ApiResult<Json<UserLicenses>> {
    Ok(Json(licenses::list_user_licenses(&app, &caller, &org, &user).await?))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/users/{user}/licenses", operation_id = "change_user_licenses", tag = "licenses",
    params(("org" = String, Path, description = "The organisation's id"), ("user" = String, Path, description = "The user's id")),
    request_body = LicenseChange,
    responses((status = 200, description = "Applied; the user's licences after the change", body = LicenseChangeResult),
              (status = 409, description = "conflict: what the change was planned from kept changing; try again"),
              (status = 422, description = "Refused with every reason (seats_exhausted, requires_product, ...); nothing changed")))]
pub async fn change_user_licenses(
    State(app): State<App>,
    caller: Caller,
    Path((org, user)): Path<(String, String)>,
    ApiJson(change): ApiJson<LicenseChange>,
) -> ApiResult<Json<LicenseChangeResult>> {
    Ok(Json(licenses::change_user_licenses(&app, &caller, &org, &user, change).await?))
}
