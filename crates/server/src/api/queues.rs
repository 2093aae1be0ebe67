//! Contact-centre queues and their members.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::app::paging::Paged;
use crate::app::queues::{self, LeaveQuery, MemberInput, QueueInput, QueueMembers, QueueView, QueueWithMembers, QueuesLeft};
use crate::app::{App, Caller};
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::ApiResult;

use super::Status;

#[utoipa::path(get, path = "/api/v1/orgs/{org}/queues", operation_id = "list_queues", tag = "queues",
    params(("org" = String, Path, description = "The organisation's id")),
    responses((status = 200, description = "The organisation's contact-centre queues", body = Paged<QueueView>)))]
pub async fn list_queues(State(app): State<App>, caller: Caller, Path(org): Path<String>) -> ApiResult<Json<Paged<QueueView>>> {
    Ok(Json(queues::list_queues(&app, &caller, &org).await?))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/queues", operation_id = "create_queue", tag = "queues",
    params(("org" = String, Path, description = "The organisation's id")), request_body = QueueInput,
    responses((status = 201, description = "Created", body = QueueView)))]
pub async fn create_queue(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiJson(input): ApiJson<QueueInput>,
) -> ApiResult<Status<QueueView>> {
    Ok(Status(StatusCode::CREATED, queues::create_queue(&app, &caller, &org, input).await?))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/queues/{queue}", operation_id = "get_queue", tag = "queues",
    params(("org" = String, Path, description = "The organisation's id"), ("queue" = String, Path, description = "The queue's id")),
    responses((status = 200, description = "The queue with its members", body = QueueWithMembers)))]
pub async fn get_queue(
    State(app): State<App>,
    caller: Caller,
    Path((org, queue)): Path<(String, String)>,
) -> ApiResult<Json<QueueWithMembers>> {
    Ok(Json(queues::get_queue(&app, &caller, &org, &queue).await?))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/queues/{queue}", operation_id = "delete_queue", tag = "queues",
    params(("org" = String, Path, description = "The organisation's id"), ("queue" = String, Path, description = "The queue's id")),
    responses((status = 204, description = "Deleted with its memberships")))]
pub async fn delete_queue(State(app): State<App>, caller: Caller, Path((org, queue)): Path<(String, String)>) -> ApiResult<StatusCode> {
    queues::delete_queue(&app, &caller, &org, &queue).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/queues/{queue}/members", operation_id = "add_queue_member", tag = "queues",
    params(("org" = String, Path, description = "The organisation's id"), ("queue" = String, Path, description = "The queue's id")),
    request_body = MemberInput,
    responses((status = 200, description = "A member (again)", body = QueueMembers)))]
pub async fn add_queue_member(
    State(app): State<App>,
    caller: Caller,
    Path((org, queue)): Path<(String, String)>,
    ApiJson(input): ApiJson<MemberInput>,
) -> ApiResult<Json<QueueMembers>> {
    Ok(Json(queues::add_queue_member(&app, &caller, &org, &queue, input).await?))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/queues/{queue}/members/{user}", operation_id = "remove_queue_member", tag = "queues",
    params(("org" = String, Path, description = "The organisation's id"), ("queue" = String, Path, description = "The queue's id"),
           ("user" = String, Path, description = "The user's id")),
    responses((status = 204, description = "No longer a member")))]
pub async fn remove_queue_member(
    State(app): State<App>,
    caller: Caller,
    Path((org, queue, user)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    queues::remove_queue_member(&app, &caller, &org, &queue, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/users/{user}/queues", operation_id = "list_user_queues", tag = "queues",
    params(("org" = String, Path, description = "The organisation's id"), ("user" = String, Path, description = "The user's id")),
    responses((status = 200, description = "The queues the user is a member of", body = Paged<QueueView>)))]
pub async fn list_user_queues(
    State(app): State<App>,
    caller: Caller,
    Path((org, user)): Path<(String, String)>,
) -> ApiResult<Json<Paged<QueueView>>> {
    Ok(Json(queues::list_user_queues(&app, &caller, &org, &user).await?))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/users/{user}/queues", operation_id = "leave_all_queues", tag = "queues",
    params(("org" = String, Path, description = "The organisation's id"), ("user" = String, Path, description = "The user's id"), LeaveQuery),
    responses((status = 200, description = "Out of every queue (and, if asked, off the licences they billed), in one transaction", body = QueuesLeft)))]
pub async fn leave_all_queues(
    State(app): State<App>,
    caller: Caller,
    Path((org, user)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<LeaveQuery>,
) -> ApiResult<Json<QueuesLeft>> {
    Ok(Json(queues::leave_all_queues(&app, &caller, &org, &user, &q).await?))
}
