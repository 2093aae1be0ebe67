//! Housekeeping of retained service data.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use allot_domain::access::Action;

use crate::auth::Ctx;
use crate::problem::ApiResult;
use crate::AppState;

#[utoipa::path(post, path = "/api/v1/service-data/purge", tag = "licenses",
    responses((status = 200, description = "Service data whose retention ended is deleted now; answers how many rows went")))]
pub async fn purge(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    ctx.require(Action::Maintenance)?;
    let purged = crate::retention::purge_expired(&st, &ctx.actor()).await?;
    Ok(Json(json!({ "purged": purged })))
}
