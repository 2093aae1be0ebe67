//! API tokens.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::app::paging::{PageQuery, Paged};
use crate::app::tokens::{self, CreatedToken, TokenInput, TokenView};
use crate::app::{App, Caller};
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::ApiResult;

use super::Status;

#[utoipa::path(get, path = "/api/v1/tokens", operation_id = "list_tokens", tag = "tokens", params(PageQuery),
    responses((status = 200, description = "Live tokens in the caller's scope", body = Paged<TokenView>)))]
pub async fn list_tokens(State(app): State<App>, caller: Caller, ApiQuery(q): ApiQuery<PageQuery>) -> ApiResult<Json<Paged<TokenView>>> {
    Ok(Json(tokens::list_tokens(&app, &caller, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/tokens", operation_id = "create_token", tag = "tokens", request_body = TokenInput,
    responses((status = 201, description = "Created; the secret is in `token`, shown only now", body = CreatedToken),
              (status = 404, description = "not_found: the partner or org named is not in the caller's scope")))]
pub async fn create_token(State(app): State<App>, caller: Caller, ApiJson(input): ApiJson<TokenInput>) -> ApiResult<Status<CreatedToken>> {
    Ok(Status(StatusCode::CREATED, tokens::create_token(&app, &caller, input).await?))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{token}", operation_id = "revoke_token", tag = "tokens",
    params(("token" = String, Path, description = "The token's id (not its secret)")),
    responses((status = 204, description = "Revoked: it stops working at once")))]
pub async fn revoke_token(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    tokens::revoke_token(&app, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
