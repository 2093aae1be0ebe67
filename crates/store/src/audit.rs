//! The audit log: append-only; nothing in Allot updates or deletes it.

use serde::Serialize;

use crate::db::{new_id, StoreError, Tx};
use crate::{args, ts};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    pub id: String,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub request_id: Option<String>,
}

/// Who did it and under which request: passed to every mutation.
#[derive(Debug, Clone)]
pub struct Actor {
    pub actor: String,
    pub request_id: Option<String>,
}

#[allow(clippy::too_many_arguments)]
pub async fn record(
    tx: &mut Tx,
    org: Option<&str>,
    who: &Actor,
    action: &str,
    target: &str,
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO audit_events (org_id, id, at, actor, action, target, before_state, after_state, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        args![
            org.unwrap_or(""),
            new_id("evt"),
            ts(now),
            &who.actor,
            action,
            target,
            before.map(|v| v.to_string()),
            after.map(|v| v.to_string()),
            who.request_id.as_deref()
        ],
    )
    .await?;
    if let (Some(org), Some(event_type)) = (org, crate::webhooks::event_of_action(action)) {
        let data = crate::webhooks::change_data(org, target, before, after, who);
        crate::webhooks::record(
            tx,
            &[crate::webhooks::NewEvent {
                org,
                event_type,
                subject: subject_of(target),
                data,
            }],
            now,
        )
        .await?;
    }
    Ok(())
}

/// The id in an audit target (`user:<id>` -> `<id>`).
fn subject_of(target: &str) -> &str {
    target.split_once(':').map_or(target, |(_, id)| id)
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
}

pub async fn list(tx: &mut Tx, org: &str, f: &AuditFilter, after: Option<&str>, limit: i64) -> Result<Vec<AuditEvent>, StoreError> {
    let mut q = crate::filtered::Filtered::new(
        "SELECT id, at, actor, action, target, before_state, after_state, request_id FROM audit_events \
         WHERE org_id = $1 AND id > $2",
        args![org, after.unwrap_or("")].to_vec(),
    );
    q.and("at >= ?", f.since.clone())
        .and("actor = ?", f.actor.clone())
        .and("action = ?", f.action.clone())
        .then(" ORDER BY id LIMIT ?", limit);
    let rows = tx.rows(&q.sql, &q.args).await?;
    let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
    rows.iter()
        .map(|r| {
            Ok(AuditEvent {
                id: r.text("id")?,
                at: r.text("at")?,
                actor: r.text("actor")?,
                action: r.text("action")?,
                target: r.text("target")?,
                before: json(r.opt_text("before_state")?),
                after: json(r.opt_text("after_state")?),
                request_id: r.opt_text("request_id")?,
            })
        })
        .collect()
}

/// Many events of one action in multi-row statements: (target, before, after).
pub async fn record_many(
    tx: &mut Tx,
    org: &str,
    who: &Actor,
    action: &str,
    events: Vec<(String, Option<String>, Option<String>)>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let at = ts(now);
    // What the webhook events of these changes are made from (none for most actions).
    let webhook_sources: Vec<(String, Option<String>, Option<String>)> = if crate::webhooks::event_of_action(action).is_some() {
        events.clone()
    } else {
        Vec::new()
    };
    let rows: Vec<Vec<crate::db::Val>> = events
        .into_iter()
        .map(|(target, before, after)| {
            use crate::db::Val;
            vec![
                Val::from(org),
                Val::Text(new_id("evt")),
                Val::from(&at),
                Val::from(&who.actor),
                Val::from(action),
                Val::Text(target),
                before.map(Val::Text).unwrap_or(Val::NullText),
                after.map(Val::Text).unwrap_or(Val::NullText),
                Val::from(who.request_id.as_deref()),
            ]
        })
        .collect();
    tx.insert_rows(
        "audit_events (org_id, id, at, actor, action, target, before_state, after_state, request_id)",
        rows,
    )
    .await?;
    if let Some(event_type) = crate::webhooks::event_of_action(action) {
        let parse = |t: &Option<String>| t.as_deref().and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok());
        let data: Vec<(String, String)> = webhook_sources
            .iter()
            .map(|(target, before, after)| {
                (
                    subject_of(target).to_string(),
                    crate::webhooks::change_data(org, target, parse(before).as_ref(), parse(after).as_ref(), who),
                )
            })
            .collect();
        let events: Vec<crate::webhooks::NewEvent> = data
            .iter()
            .map(|(subject, data)| crate::webhooks::NewEvent {
                org,
                event_type,
                subject,
                data: data.clone(),
            })
            .collect();
        crate::webhooks::record(tx, &events, now).await?;
    }
    Ok(())
}
