//! Licence templates.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::app::jobs::JobQueued;
use crate::app::paging::Paged;
use crate::app::templates::{self, ApplyInput, TemplateInput, TemplatePatch, TemplateView};
use crate::app::{App, Caller};
use crate::extract::{ApiJson, Precondition};
use crate::problem::ApiResult;

use super::{Status, Tagged};

#[utoipa::path(get, path = "/api/v1/orgs/{org}/license-templates", operation_id = "list_license_templates", tag = "templates",
    params(("org" = String, Path, description = "The organisation's id")),
    responses((status = 200, description = "The organisation's licence templates, oldest first", body = Paged<TemplateView>)))]
pub async fn list_license_templates(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<Paged<TemplateView>>> {
    Ok(Json(templates::list_license_templates(&app, &caller, &org).await?))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/license-templates", operation_id = "create_license_template", tag = "templates",
    params(("org" = String, Path, description = "The organisation's id")), request_body = TemplateInput,
    responses((status = 201, description = "Created", body = TemplateView, headers(("ETag" = String, description = "The template's etag")))))]
pub async fn create_license_template(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiJson(input): ApiJson<TemplateInput>,
) -> ApiResult<Tagged<TemplateView>> {
    Ok(Tagged(
        StatusCode::CREATED,
        templates::create_license_template(&app, &caller, &org, input).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/license-templates/{tpl}", operation_id = "get_license_template", tag = "templates",
    params(("org" = String, Path, description = "The organisation's id"), ("tpl" = String, Path, description = "The template's id")),
    responses((status = 200, description = "The template", body = TemplateView, headers(("ETag" = String, description = "The template's etag")))))]
pub async fn get_license_template(
    State(app): State<App>,
    caller: Caller,
    Path((org, tpl)): Path<(String, String)>,
) -> ApiResult<Tagged<TemplateView>> {
    Ok(Tagged(
        StatusCode::OK,
        templates::get_license_template(&app, &caller, &org, &tpl).await?,
    ))
}

#[utoipa::path(patch, path = "/api/v1/orgs/{org}/license-templates/{tpl}", operation_id = "update_license_template", tag = "templates",
    params(("org" = String, Path, description = "The organisation's id"), ("tpl" = String, Path, description = "The template's id"),
           ("If-Match" = Option<String>, Header, description = "Change only if the template's etag is still this")),
    request_body = TemplatePatch,
    responses((status = 200, description = "Updated", body = TemplateView, headers(("ETag" = String, description = "The template's new etag")))))]
pub async fn update_license_template(
    State(app): State<App>,
    caller: Caller,
    Path((org, tpl)): Path<(String, String)>,
    Precondition(if_match): Precondition,
    ApiJson(patch): ApiJson<TemplatePatch>,
) -> ApiResult<Tagged<TemplateView>> {
    Ok(Tagged(
        StatusCode::OK,
        templates::update_license_template(&app, &caller, &org, &tpl, patch, &if_match).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/license-templates/{tpl}", operation_id = "delete_license_template", tag = "templates",
    params(("org" = String, Path, description = "The organisation's id"), ("tpl" = String, Path, description = "The template's id"),
           ("If-Match" = Option<String>, Header, description = "Delete only if the template's etag is still this")),
    responses((status = 204, description = "Deleted; the licences it gave stay")))]
pub async fn delete_license_template(
    State(app): State<App>,
    caller: Caller,
    Path((org, tpl)): Path<(String, String)>,
    Precondition(if_match): Precondition,
) -> ApiResult<StatusCode> {
    templates::delete_license_template(&app, &caller, &org, &tpl, &if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/license-templates/{tpl}/apply", operation_id = "apply_license_template", tag = "templates",
    params(("org" = String, Path, description = "The organisation's id"), ("tpl" = String, Path, description = "The template's id")),
    request_body = ApplyInput,
    responses((status = 202, description = "A template_apply job over the template's users (the org's, or the group's members)", body = JobQueued)))]
pub async fn apply_license_template(
    State(app): State<App>,
    caller: Caller,
    Path((org, tpl)): Path<(String, String)>,
    ApiJson(input): ApiJson<ApplyInput>,
) -> ApiResult<Status<JobQueued>> {
    let job = templates::apply_license_template(&app, &caller, &org, &tpl, input).await?;
    Ok(Status(StatusCode::ACCEPTED, JobQueued { job }))
}
