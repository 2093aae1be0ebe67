//! The audit log and the provider's housekeeping.

use axum::extract::{Path, State};
use axum::Json;

use crate::app::audit::{self, AuditEventView, AuditQuery};
use crate::app::paging::Paged;
use crate::app::retention::{self, Purged};
use crate::app::{App, Caller};
use crate::extract::ApiQuery;
use crate::problem::ApiResult;

#[utoipa::path(get, path = "/api/v1/orgs/{org}/audit-events", operation_id = "list_audit_events", tag = "audit",
    params(("org" = String, Path, description = "The organisation's id"), AuditQuery),
    responses((status = 200, description = "Audit events, oldest first", body = Paged<AuditEventView>)))]
pub async fn list_audit_events(
    State(app): State<App>,
    caller: Caller,
    Path(org): Path<String>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Paged<AuditEventView>>> {
    Ok(Json(audit::list_audit_events(&app, &caller, &org, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/service-data/purge", operation_id = "purge_service_data", tag = "licenses",
    responses((status = 200, description = "Service data whose retention ended is deleted now; answers how many rows went", body = Purged)))]
pub async fn purge_service_data(State(app): State<App>, caller: Caller) -> ApiResult<Json<Purged>> {
    Ok(Json(retention::purge_service_data(&app, &caller).await?))
}
