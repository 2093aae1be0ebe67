//! The org's audit log (read only: nothing in Allot edits or deletes it).

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use allot_domain::access::Action;
use allot_store::audit::{self, AuditFilter};

use crate::auth::Ctx;
use crate::extract::{paged, ApiQuery, PageQuery};
use crate::problem::ApiResult;
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub actor: Option<String>,
    pub action: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/audit-events", tag = "audit",
    params(("org" = String, Path), ("since" = Option<String>, Query), ("actor" = Option<String>, Query), ("action" = Option<String>, Query),
           ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "Audit events, oldest first")))]
pub async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(org): Path<String>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Value>> {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor.clone(),
    }
    .page()?;
    let filter = AuditFilter {
        since: q.since.map(allot_store::ts),
        actor: q.actor.clone(),
        action: q.action.clone(),
    };
    let mut tx = st.store.begin_read().await?;
    let org = ctx.org(&mut tx, &org, Action::ReadAudit).await?;
    let rows = audit::list(&mut tx, &org.id, &filter, page.after.as_deref(), page.limit + 1).await?;
    Ok(Json(paged(rows, page.limit, |e| e.id.clone())))
}
