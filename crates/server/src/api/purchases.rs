//! Purchase requests.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::app::paging::{PageQuery, Paged};
use crate::app::purchases::{self, FulfilInput, PurchaseInput, PurchaseView, RejectInput};
use crate::app::{App, Caller};
use crate::extract::{ApiJson, ApiJsonOrEmpty, ApiQuery};
use crate::problem::ApiResult;

use super::Status;

#[utoipa::path(get, path = "/api/v1/orgs/{org}/purchase-requests", operation_id = "list_purchase_requests", tag = "purchases",
    params(("org" = String, Path, description = "The organisation's id"), PageQuery),
    responses((status = 200, description = "The organisation's purchase requests", body = Paged<PurchaseView>)))]
pub async fn list_purchase_requests(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Paged<PurchaseView>>> {
    Ok(Json(purchases::list_purchase_requests(&app, &caller, &org, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/purchase-requests", operation_id = "create_purchase_request", tag = "purchases",
    params(("org" = String, Path, description = "The organisation's id")), request_body = PurchaseInput,
    responses((status = 201, description = "Pending", body = PurchaseView),
              (status = 403, description = "payment_method_required, self_service_purchase_disabled (with whom to contact), or forbidden")))]
pub async fn create_purchase_request(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiJson(input): ApiJson<PurchaseInput>,
) -> ApiResult<Status<PurchaseView>> {
    Ok(Status(
        StatusCode::CREATED,
        purchases::create_purchase_request(&app, &caller, &org, input).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/purchase-requests/{id}/fulfil", operation_id = "fulfil_purchase_request", tag = "purchases",
    params(("org" = String, Path, description = "The organisation's id"), ("id" = String, Path, description = "The request's id")),
    request_body(content = Option<FulfilInput>, description = "Optional: the subscription the seats go to"),
    responses((status = 200, description = "Fulfilled: the seats were added", body = PurchaseView),
              (status = 409, description = "conflict: the request is not pending")))]
pub async fn fulfil_purchase_request(
    State(app): State<App>,
    caller: Caller,
    Path((org, id)): Path<(String, String)>,
    ApiJsonOrEmpty(input): ApiJsonOrEmpty<FulfilInput>,
) -> ApiResult<Json<PurchaseView>> {
    Ok(Json(purchases::fulfil_purchase_request(&app, &caller, &org, &id, input).await?))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/purchase-requests/{id}/reject", operation_id = "reject_purchase_request", tag = "purchases",
    params(("org" = String, Path, description = "The organisation's id"), ("id" = String, Path, description = "The request's id")),
    request_body(content = Option<RejectInput>, description = "Optional: why"),
    responses((status = 200, description = "Rejected", body = PurchaseView),
              (status = 409, description = "conflict: the request is not pending")))]
pub async fn reject_purchase_request(
    State(app): State<App>,
    caller: Caller,
    Path((org, id)): Path<(String, String)>,
    ApiJsonOrEmpty(input): ApiJsonOrEmpty<RejectInput>,
) -> ApiResult<Json<PurchaseView>> {
    Ok(Json(purchases::reject_purchase_request(&app, &caller, &org, &id, input).await?))
}
