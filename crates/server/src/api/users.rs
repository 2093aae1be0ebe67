//! Users of an org.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::app::paging::Paged;
use crate::app::users::{self, CreatedUser, UserInput, UserPatch, UserQuery, UserView};
use crate::app::{App, Caller};
use crate::extract::{ApiJson, ApiQuery, Precondition};
use crate::problem::ApiResult;

use super::Tagged;

#[utoipa::path(get, path = "/api/v1/orgs/{org}/users", operation_id = "list_users", tag = "users",
    params(("org" = String, Path, description = "The organisation's id"), UserQuery),
    responses((status = 200, description = "Users in id order", body = Paged<UserView>)))]
pub async fn list_users(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> ApiResult<Json<Paged<UserView>>> {
    Ok(Json(users::list_users(&app, &caller, &org, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/users", operation_id = "create_user", tag = "users",
    params(("org" = String, Path, description = "The organisation's id")), request_body = UserInput,
    responses((status = 201, description = "Created, with what its licence template gave it", body = CreatedUser,
               headers(("ETag" = String, description = "The user's etag"))),
              (status = 409, description = "email_taken: another user of the organisation has that email")))]
pub async fn create_user(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiJson(input): ApiJson<UserInput>,
) -> ApiResult<Tagged<CreatedUser>> {
    Ok(Tagged(StatusCode::CREATED, users::create_user(&app, &caller, &org, input).await?))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/users/{user}", operation_id = "get_user", tag = "users",
    params(("org" = String, Path, description = "The organisation's id"), ("user" = String, Path, description = "The user's id")),
    responses((status = 200, description = "The user", body = UserView, headers(("ETag" = String, description = "The user's etag")))))]
pub async fn get_user(State(app): State<App>, caller: Caller, Path((org, user)): Path<(String, String)>) -> ApiResult<Tagged<UserView>> {
    Ok(Tagged(StatusCode::OK, users::get_user(&app, &caller, &org, &user).await?))
}

#[utoipa::path(patch, path = "/api/v1/orgs/{org}/users/{user}", operation_id = "update_user", tag = "users",
    params(("org" = String, Path, description = "The organisation's id"), ("user" = String, Path, description = "The user's id"),
           ("If-Match" = Option<String>, Header, description = "Change only if the user's etag is still this")),
    request_body = UserPatch,
    responses((status = 200, description = "Updated", body = UserView, headers(("ETag" = String, description = "The user's new etag"))),
              (status = 409, description = "email_taken: another user of the organisation has that email")))]
pub async fn update_user(
    State(app): State<App>,
    caller: Caller,
    Path((org, user)): Path<(String, String)>,
    Precondition(if_match): Precondition,
    ApiJson(patch): ApiJson<UserPatch>,
) -> ApiResult<Tagged<UserView>> {
    Ok(Tagged(
        StatusCode::OK,
        users::update_user(&app, &caller, &org, &user, patch, &if_match).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/users/{user}", operation_id = "delete_user", tag = "users",
    params(("org" = String, Path, description = "The organisation's id"), ("user" = String, Path, description = "The user's id"),
           ("If-Match" = Option<String>, Header, description = "Delete only if the user's etag is still this")),
    responses((status = 204, description = "Deleted; the user's seats are released")))]
pub async fn delete_user(
    State(app): State<App>,
    caller: Caller,
    Path((org, user)): Path<(String, String)>,
    Precondition(if_match): Precondition,
) -> ApiResult<StatusCode> {
    users::delete_user(&app, &caller, &org, &user, &if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
