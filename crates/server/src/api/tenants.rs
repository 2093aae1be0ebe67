//! Partners, organisations, sites and groups.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::app::paging::{PageQuery, Paged};
use crate::app::scim::IdentityProvisioning;
use crate::app::tenants::{
    self, GroupInput, GroupPatch, GroupView, OrgInput, OrgPatch, OrgView, PartnerInput, PartnerView, SiteInput, SiteView,
};
use crate::app::{App, Caller};
use crate::extract::{ApiJson, ApiQuery, Precondition};
use crate::problem::ApiResult;

use super::{Status, Tagged};

#[utoipa::path(get, path = "/api/v1/partners", operation_id = "list_partners", tag = "partners", params(PageQuery),
    responses((status = 200, description = "Partners in the caller's scope", body = Paged<PartnerView>)))]
pub async fn list_partners(
    State(app): State<App>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Paged<PartnerView>>> {
    Ok(Json(tenants::list_partners(&app, &caller, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/partners", operation_id = "create_partner", tag = "partners", request_body = PartnerInput,
    responses((status = 201, description = "Created", body = PartnerView)))]
pub async fn create_partner(
    State(app): State<App>,
    caller: Caller,
    ApiJson(input): ApiJson<PartnerInput>,
) -> ApiResult<Status<PartnerView>> {
    Ok(Status(StatusCode::CREATED, tenants::create_partner(&app, &caller, input).await?))
}

#[utoipa::path(get, path = "/api/v1/partners/{partner}", operation_id = "get_partner", tag = "partners",
    params(("partner" = String, Path, description = "The partner's id")),
    responses((status = 200, description = "The partner", body = PartnerView)))]
pub async fn get_partner(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<PartnerView>> {
    Ok(Json(tenants::get_partner(&app, &caller, &id).await?))
}

#[utoipa::path(get, path = "/api/v1/orgs", operation_id = "list_orgs", tag = "orgs", params(PageQuery),
    responses((status = 200, description = "Organisations in the caller's scope", body = Paged<OrgView>)))]
pub async fn list_orgs(State(app): State<App>, caller: Caller, ApiQuery(q): ApiQuery<PageQuery>) -> ApiResult<Json<Paged<OrgView>>> {
    Ok(Json(tenants::list_orgs(&app, &caller, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/orgs", operation_id = "create_org", tag = "orgs", request_body = OrgInput,
    responses((status = 201, description = "Created", body = OrgView, headers(("ETag" = String, description = "The organisation's etag"))),
              (status = 404, description = "not_found: the partner named is not in the caller's scope")))]
pub async fn create_org(State(app): State<App>, caller: Caller, ApiJson(input): ApiJson<OrgInput>) -> ApiResult<Tagged<OrgView>> {
    Ok(Tagged(StatusCode::CREATED, tenants::create_org(&app, &caller, input).await?))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}", operation_id = "get_org", tag = "orgs",
    params(("org" = String, Path, description = "The organisation's id")),
    responses((status = 200, description = "The organisation", body = OrgView, headers(("ETag" = String, description = "The organisation's etag")))))]
pub async fn get_org(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> ApiResult<Tagged<OrgView>> {
    Ok(Tagged(StatusCode::OK, tenants::get_org(&app, &caller, &id).await?))
}

#[utoipa::path(patch, path = "/api/v1/orgs/{org}", operation_id = "update_org", tag = "orgs",
    params(("org" = String, Path, description = "The organisation's id"),
           ("If-Match" = Option<String>, Header, description = "Change only if the organisation's etag is still this")),
    request_body = OrgPatch,
    responses((status = 200, description = "Updated", body = OrgView, headers(("ETag" = String, description = "The organisation's new etag")))))]
pub async fn update_org(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    Precondition(if_match): Precondition,
    ApiJson(patch): ApiJson<OrgPatch>,
) -> ApiResult<Tagged<OrgView>> {
    Ok(Tagged(
        StatusCode::OK,
        tenants::update_org(&app, &caller, &id, patch, &if_match).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/sites", operation_id = "list_sites", tag = "orgs",
    params(("org" = String, Path, description = "The organisation's id")),
    responses((status = 200, description = "The organisation's sites", body = Paged<SiteView>)))]
pub async fn list_sites(State(app): State<App>, caller: Caller, Path(org): Path<String>) -> ApiResult<Json<Paged<SiteView>>> {
    Ok(Json(tenants::list_sites(&app, &caller, &org).await?))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/sites", operation_id = "create_site", tag = "orgs",
    params(("org" = String, Path, description = "The organisation's id")), request_body = SiteInput,
    responses((status = 201, description = "Created; the address stored with its scheme", body = SiteView)))]
pub async fn create_site(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiJson(input): ApiJson<SiteInput>,
) -> ApiResult<Status<SiteView>> {
    Ok(Status(StatusCode::CREATED, tenants::create_site(&app, &caller, &org, input).await?))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/groups", operation_id = "list_groups", tag = "orgs",
    params(("org" = String, Path, description = "The organisation's id")),
    responses((status = 200, description = "The organisation's groups", body = Paged<GroupView>)))]
pub async fn list_groups(State(app): State<App>, caller: Caller, Path(org): Path<String>) -> ApiResult<Json<Paged<GroupView>>> {
    Ok(Json(tenants::list_groups(&app, &caller, &org).await?))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/groups", operation_id = "create_group", tag = "orgs",
    params(("org" = String, Path, description = "The organisation's id")), request_body = GroupInput,
    responses((status = 201, description = "Created", body = GroupView),
              (status = 409, description = "conflict: the organisation has a group of that name")))]
pub async fn create_group(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiJson(input): ApiJson<GroupInput>,
) -> ApiResult<Status<GroupView>> {
    Ok(Status(
        StatusCode::CREATED,
        tenants::create_group(&app, &caller, &org, input).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/groups/{group}", operation_id = "get_group", tag = "orgs",
    params(("org" = String, Path, description = "The organisation's id"), ("group" = String, Path, description = "The group's id")),
    responses((status = 200, description = "The group", body = GroupView)))]
pub async fn get_group(State(app): State<App>, caller: Caller, Path((org, group)): Path<(String, String)>) -> ApiResult<Json<GroupView>> {
    Ok(Json(tenants::get_group(&app, &caller, &org, &group).await?))
}

#[utoipa::path(patch, path = "/api/v1/orgs/{org}/groups/{group}", operation_id = "update_group", tag = "orgs",
    params(("org" = String, Path, description = "The organisation's id"), ("group" = String, Path, description = "The group's id")),
    request_body = GroupPatch,
    responses((status = 200, description = "Renamed", body = GroupView),
              (status = 409, description = "conflict: the organisation has a group of that name")))]
pub async fn update_group(
    State(app): State<App>,
    caller: Caller,
    Path((org, group)): Path<(String, String)>,
    ApiJson(patch): ApiJson<GroupPatch>,
) -> ApiResult<Json<GroupView>> {
    Ok(Json(tenants::update_group(&app, &caller, &org, &group, patch).await?))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/groups/{group}", operation_id = "delete_group", tag = "orgs",
    params(("org" = String, Path, description = "The organisation's id"), ("group" = String, Path, description = "The group's id")),
    responses((status = 204, description = "Deleted; its members left it"),
              (status = 409, description = "conflict: a licence template is scoped to the group")))]
pub async fn delete_group(State(app): State<App>, caller: Caller, Path((org, group)): Path<(String, String)>) -> ApiResult<StatusCode> {
    tenants::delete_group(&app, &caller, &org, &group).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/identity-provisioning", operation_id = "get_identity_provisioning", tag = "orgs",
    params(("org" = String, Path, description = "The organisation's id")),
    responses((status = 200, description = "The org's SCIM base path, last sync, SCIM tokens and latest errors (for those who manage its tokens)", body = IdentityProvisioning)))]
pub async fn get_identity_provisioning(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<IdentityProvisioning>> {
    Ok(Json(crate::app::scim::identity_provisioning(&app, &caller, &org).await?))
}
