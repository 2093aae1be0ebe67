//! Subscriptions, cancelling one, and the provisioning details of an item.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::app::jobs::JobQueued;
use crate::app::paging::{PageQuery, Paged};
use crate::app::subscriptions::{self, CancelOutcome, CancelRequest, DetailsInput, SubscriptionInput, SubscriptionPatch, SubscriptionView};
use crate::app::{App, Caller};
use crate::extract::{ApiJson, ApiJsonOrEmpty, ApiQuery, Precondition};
use crate::problem::ApiResult;

use super::{Status, Tagged};

#[utoipa::path(get, path = "/api/v1/orgs/{org}/subscriptions", operation_id = "list_subscriptions", tag = "subscriptions",
    params(("org" = String, Path, description = "The organisation's id"), PageQuery),
    responses((status = 200, description = "Subscriptions with their derived status", body = Paged<SubscriptionView>)))]
pub async fn list_subscriptions(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Paged<SubscriptionView>>> {
    Ok(Json(subscriptions::list_subscriptions(&app, &caller, &org, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/subscriptions", operation_id = "create_subscription", tag = "subscriptions",
    params(("org" = String, Path, description = "The organisation's id")), request_body = SubscriptionInput,
    responses((status = 201, description = "Created", body = SubscriptionView, headers(("ETag" = String, description = "The subscription's etag")))))]
pub async fn create_subscription(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiJson(input): ApiJson<SubscriptionInput>,
) -> ApiResult<Tagged<SubscriptionView>> {
    Ok(Tagged(
        StatusCode::CREATED,
        subscriptions::create_subscription(&app, &caller, &org, input).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/subscriptions/{sub}", operation_id = "get_subscription", tag = "subscriptions",
    params(("org" = String, Path, description = "The organisation's id"), ("sub" = String, Path, description = "The subscription's id")),
    responses((status = 200, description = "The subscription", body = SubscriptionView, headers(("ETag" = String, description = "The subscription's etag")))))]
pub async fn get_subscription(
    State(app): State<App>,
    caller: Caller,
    Path((org, sub)): Path<(String, String)>,
) -> ApiResult<Tagged<SubscriptionView>> {
    Ok(Tagged(
        StatusCode::OK,
        subscriptions::get_subscription(&app, &caller, &org, &sub).await?,
    ))
}

#[utoipa::path(patch, path = "/api/v1/orgs/{org}/subscriptions/{sub}", operation_id = "update_subscription", tag = "subscriptions",
    params(("org" = String, Path, description = "The organisation's id"), ("sub" = String, Path, description = "The subscription's id"),
           ("If-Match" = Option<String>, Header, description = "Change only if the subscription's etag is still this")),
    request_body = SubscriptionPatch,
    responses((status = 200, description = "Updated", body = SubscriptionView, headers(("ETag" = String, description = "The subscription's new etag")))))]
pub async fn update_subscription(
    State(app): State<App>,
    caller: Caller,
    Path((org, sub)): Path<(String, String)>,
    Precondition(if_match): Precondition,
    ApiJson(patch): ApiJson<SubscriptionPatch>,
) -> ApiResult<Tagged<SubscriptionView>> {
    Ok(Tagged(
        StatusCode::OK,
        subscriptions::update_subscription(&app, &caller, &org, &sub, patch, &if_match).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/subscriptions/{sub}/cancel", operation_id = "cancel_subscription", tag = "subscriptions",
    params(("org" = String, Path, description = "The organisation's id"), ("sub" = String, Path, description = "The subscription's id")),
    request_body(content = Option<CancelRequest>, description = "Optional: how to empty a subscription users still hold"),
    responses((status = 200, description = "Cancelled (or already cancelled)", body = SubscriptionView),
              (status = 202, description = "A job moves or removes the holders, then cancels it", body = JobQueued),
              (status = 409, description = "subscription_has_users: users hold its seats")))]
pub async fn cancel_subscription(
    State(app): State<App>,
    caller: Caller,
    Path((org, sub)): Path<(String, String)>,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<CancelRequest>,
) -> ApiResult<Response> {
    Ok(match subscriptions::cancel_subscription(&app, &caller, &org, &sub, req).await? {
        CancelOutcome::Cancelled(s) => Json(s).into_response(),
        CancelOutcome::Queued(job) => Status(StatusCode::ACCEPTED, JobQueued { job }).into_response(),
    })
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/subscriptions/{sub}/items/{product}/provisioning-details",
    operation_id = "submit_provisioning_details", tag = "subscriptions",
    params(("org" = String, Path, description = "The organisation's id"), ("sub" = String, Path, description = "The subscription's id"),
           ("product" = String, Path, description = "The item's product code")),
    request_body = DetailsInput,
    responses((status = 200, description = "The item moved to provisioning", body = SubscriptionView),
              (status = 409, description = "conflict: the item is not awaiting details")))]
pub async fn submit_provisioning_details(
    State(app): State<App>,
    caller: Caller,
    Path((org, sub, product)): Path<(String, String, String)>,
    ApiJson(input): ApiJson<DetailsInput>,
) -> ApiResult<Json<SubscriptionView>> {
    Ok(Json(
        subscriptions::submit_provisioning_details(&app, &caller, &org, &sub, &product, input).await?,
    ))
}
