//! The org's audit log: read only (nothing in Allot edits or deletes it).

use serde::{Deserialize, Serialize};

use allot_domain::access::Action;
use allot_domain::Error;
use allot_store::audit::{self, AuditEvent, AuditFilter};

use super::paging::{Page, Paged};
use super::{App, Caller};

/// What the audit log records of an object before or after a change. The
/// wire and store types serialise infallibly (derived, string keys); were
/// one ever to fail, the event is still written, without that side, rather
/// than the change being refused for its log entry.
pub(crate) fn snapshot<T: Serialize>(v: &T) -> Option<serde_json::Value> {
    serde_json::to_value(v).ok()
}

/// The audit log's filters and page.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    #[param(pattern = "^[A-Za-z0-9_-]{1,200}$")]
    pub cursor: Option<String>,
    /// Events at or after this time (RFC 3339).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this actor (`token:<id>`, `system:...`).
    #[param(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub actor: Option<String>,
    /// Only this action (`user.create`, `license.assign`, ...).
    #[param(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub action: Option<String>,
}

/// One change, who made it, and the state before and after.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEventView {
    pub id: String,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    /// The request that made the change (`job:<id>` for a job's changes).
    pub request_id: Option<String>,
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> Self {
        AuditEventView {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            target: e.target,
            before: e.before,
            after: e.after,
            request_id: e.request_id,
        }
    }
}

pub async fn list_audit_events(app: &App, caller: &Caller, org: &str, q: &AuditQuery) -> Result<Paged<AuditEventView>, Error> {
    let page = Page::of(q.limit, q.cursor.as_deref())?;
    for (field, v) in [("actor", &q.actor), ("action", &q.action)] {
        if let Some(v) = v {
            allot_domain::types::check_search(field, v, 200)?;
        }
    }
    let filter = AuditFilter {
        since: q.since.map(allot_store::ts),
        actor: q.actor.clone(),
        action: q.action.clone(),
    };
    let mut tx = app.store.begin_read().await?;
    let org = caller.org(&mut tx, org, Action::ReadAudit).await?;
    let rows = audit::list(&mut tx, &org.id, &filter, page.after.as_deref(), page.limit + 1).await?;
    Ok(Paged::from_rows(rows, page.limit, |e| e.id.clone()).map(AuditEventView::from))
}
