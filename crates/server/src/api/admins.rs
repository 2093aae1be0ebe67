//! Admin accounts: the people who sign in to the console, invited within
//! the inviter's scope.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::app::admins::{self, AdminInvite, AdminListQuery, AdminUpdate, AdminView, InvitedAdmin};
use crate::app::paging::Paged;
use crate::app::{App, Caller};
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::ApiResult;

use super::Status;

#[utoipa::path(get, path = "/api/v1/admins", operation_id = "list_admins", tag = "admins", params(AdminListQuery),
    responses((status = 200, description = "Admin accounts in the caller's scope", body = Paged<AdminView>)))]
pub async fn list_admins(
    State(app): State<App>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AdminListQuery>,
) -> ApiResult<Json<Paged<AdminView>>> {
    let page = crate::app::paging::Page::of(q.limit, q.cursor.as_deref())?;
    Ok(Json(admins::list_admins(&app, &caller, &q.of(), &page).await?))
}

#[utoipa::path(post, path = "/api/v1/admins", operation_id = "invite_admin", tag = "admins", request_body = AdminInvite,
    responses((status = 201, description = "Invited; the link in `invitation` sets the password and is shown only now", body = InvitedAdmin),
              (status = 404, description = "not_found: the partner or org named is not in the caller's scope"),
              (status = 409, description = "conflict: an admin with that email exists")))]
pub async fn invite_admin(State(app): State<App>, caller: Caller, ApiJson(input): ApiJson<AdminInvite>) -> ApiResult<Status<InvitedAdmin>> {
    Ok(Status(StatusCode::CREATED, admins::invite_admin(&app, &caller, input).await?))
}

#[utoipa::path(get, path = "/api/v1/admins/{admin}", operation_id = "get_admin", tag = "admins",
    params(("admin" = String, Path, description = "The admin's id")),
    responses((status = 200, description = "The admin account", body = AdminView)))]
pub async fn get_admin(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<AdminView>> {
    Ok(Json(admins::get_admin(&app, &caller, &id).await?))
}

#[utoipa::path(patch, path = "/api/v1/admins/{admin}", operation_id = "update_admin", tag = "admins",
    params(("admin" = String, Path, description = "The admin's id")), request_body = AdminUpdate,
    responses((status = 200, description = "Changed; a new role applies from the admin's next click", body = AdminView),
              (status = 409, description = "conflict: nobody changes their own role")))]
pub async fn update_admin(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<AdminUpdate>,
) -> ApiResult<Json<AdminView>> {
    Ok(Json(admins::update_admin(&app, &caller, &id, input).await?))
}

#[utoipa::path(delete, path = "/api/v1/admins/{admin}", operation_id = "remove_admin", tag = "admins",
    params(("admin" = String, Path, description = "The admin's id")),
    responses((status = 204, description = "Removed: their sessions end at once"),
              (status = 409, description = "conflict: nobody removes their own account")))]
pub async fn remove_admin(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    admins::remove_admin(&app, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/admins/{admin}/invitation", operation_id = "reinvite_admin", tag = "admins",
    params(("admin" = String, Path, description = "The admin's id")),
    responses((status = 201, description = "A new link; earlier ones stop working. Shown only now", body = InvitedAdmin),
              (status = 409, description = "conflict: the admin has accepted their invitation already")))]
pub async fn reinvite_admin(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> ApiResult<Status<InvitedAdmin>> {
    Ok(Status(StatusCode::CREATED, admins::reinvite_admin(&app, &caller, &id).await?))
}
