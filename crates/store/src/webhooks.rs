//! Webhooks as rows: endpoints, the outbox of events, deliveries and their
//! attempts. What an event means and how it is signed and sent is the
//! server's business; this module only stores, claims and records.
//!
//! The outbox: every change that makes an event inserts its row in the
//! change's own transaction (so no committed change lacks its event, and a
//! rolled-back one has none), and only when an endpoint exists in the
//! org's reach (the provider's, its partner's or its own): without one the
//! insert selects nothing and costs one statement. Licence events are
//! grouped: one row holds the users of a change alike but for its user
//! (`licenses::outbox_rows`), and [`EventRow::expand`] gives each user its
//! own event and `webhook-id`. A dispatcher turns each
//! event into one delivery per endpoint that wants it; a sender claims due
//! deliveries with a lease (so several processes share the work and a
//! killed one's claims come back when the lease runs out), only the
//! earliest still pending per endpoint and subject, so a subject's events
//! arrive in the order they were written.

use serde::Serialize;

use crate::db::{Backend, PreparedRows, Row, StoreError, Tx, Val};
use crate::{args, ts};

/// The condition under which an org's events are written: an endpoint in
/// its reach exists. `{0}` is the org (see [`PreparedRows::with_shared_select`]).
pub(crate) const IN_REACH: &str = "EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.scope_key = 'provider' \
     OR w.scope_key = 'org:' || {0} \
     OR w.scope_key = (SELECT 'partner:' || o.partner_id FROM orgs o WHERE o.id = {0}))";

/// Whether a webhook endpoint reaches an org, as a write transaction knows
/// it: `Known` when a statement of the transaction already asked
/// ([`IN_REACH`], e.g. the licence version claim), so the outbox insert can
/// be left out when none does; `Unknown` writes the outbox rows under the
/// condition itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Unknown,
    Known(bool),
}

/// An endpoint's row. `events` is the JSON list as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRow {
    pub id: String,
    /// `provider`, `partner:<id>` or `org:<id>`.
    pub scope_key: String,
    pub url: String,
    pub events: Vec<String>,
    pub enabled: bool,
    pub description: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub disabled_reason: Option<String>,
    /// Since when every attempt has failed (cleared by a success).
    pub failing_since: Option<String>,
    pub secret_sealed: String,
    /// The secret before the last rotation, still signing beside the new
    /// one until `old_secret_until`.
    pub old_secret_sealed: Option<String>,
    pub old_secret_until: Option<String>,
}

const ENDPOINT_COLUMNS: &str = "id, scope_key, url, events, enabled, description, created_at, updated_at, disabled_reason, \
     failing_since, secret_sealed, old_secret_sealed, old_secret_until";

fn endpoint_row(r: &Row) -> Result<EndpointRow, StoreError> {
    Ok(EndpointRow {
        id: r.text("id")?,
        scope_key: r.text("scope_key")?,
        url: r.text("url")?,
        events: serde_json::from_str(&r.text("events")?)
            .map_err(|e| StoreError::Db(format!("an endpoint's events are unreadable: {e}")))?,
        enabled: r.bool("enabled")?,
        description: r.opt_text("description")?,
        created_at: r.text("created_at")?,
        updated_at: r.text("updated_at")?,
        disabled_reason: r.opt_text("disabled_reason")?,
        failing_since: r.opt_text("failing_since")?,
        secret_sealed: r.text("secret_sealed")?,
        old_secret_sealed: r.opt_text("old_secret_sealed")?,
        old_secret_until: r.opt_text("old_secret_until")?,
    })
}

fn events_json(events: &[String]) -> String {
    // A list of strings: serializing it cannot fail.
    serde_json::to_string(events).unwrap_or_else(|_| "[]".into())
}

pub async fn insert_endpoint(tx: &mut Tx, e: &EndpointRow) -> Result<(), StoreError> {
    tx.exec(
        &format!("INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"),
        args![
            &e.id,
            &e.scope_key,
            &e.url,
            events_json(&e.events),
            e.enabled,
            e.description.as_deref(),
            &e.created_at,
            &e.updated_at,
            e.disabled_reason.as_deref(),
            e.failing_since.as_deref(),
            &e.secret_sealed,
            e.old_secret_sealed.as_deref(),
            e.old_secret_until.as_deref()
        ],
    )
    .await?;
    Ok(())
}

/// Writes every field of an endpoint but its id, scope and creation time.
pub async fn update_endpoint(tx: &mut Tx, e: &EndpointRow) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE webhook_endpoints SET url = $2, events = $3, enabled = $4, description = $5, updated_at = $6, disabled_reason = $7, \
         failing_since = $8, secret_sealed = $9, old_secret_sealed = $10, old_secret_until = $11 WHERE id = $1",
        args![
            &e.id,
            &e.url,
            events_json(&e.events),
            e.enabled,
            e.description.as_deref(),
            &e.updated_at,
            e.disabled_reason.as_deref(),
            e.failing_since.as_deref(),
            &e.secret_sealed,
            e.old_secret_sealed.as_deref(),
            e.old_secret_until.as_deref()
        ],
    )
    .await?;
    Ok(())
}

pub async fn endpoint(tx: &mut Tx, id: &str) -> Result<Option<EndpointRow>, StoreError> {
    tx.opt_row(
        &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"),
        args![id],
    )
    .await?
    .map(|r| endpoint_row(&r))
    .transpose()
}

/// A scope's endpoints in id order, after `after`.
pub async fn endpoints_of(tx: &mut Tx, scope_key: &str, after: &str, limit: i64) -> Result<Vec<EndpointRow>, StoreError> {
    tx.rows(
        &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE scope_key = $1 AND id > $2 ORDER BY id LIMIT $3"),
        args![scope_key, after, limit],
    )
    .await?
    .iter()
    .map(endpoint_row)
    .collect()
}

/// Every endpoint (the dispatcher matches events against them; there are few).
pub async fn all_endpoints(tx: &mut Tx) -> Result<Vec<EndpointRow>, StoreError> {
    tx.rows(&format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY id"), args![])
        .await?
        .iter()
        .map(endpoint_row)
        .collect()
}

/// Removes an endpoint with its deliveries and their attempts.
pub async fn delete_endpoint(tx: &mut Tx, id: &str) -> Result<(), StoreError> {
    tx.exec(
        "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE endpoint_id = $1)",
        args![id],
    )
    .await?;
    tx.exec("DELETE FROM webhook_deliveries WHERE endpoint_id = $1", args![id]).await?;
    tx.exec("DELETE FROM webhook_endpoints WHERE id = $1", args![id]).await?;
    Ok(())
}

/// Failed deliveries of an endpoint go back to pending, due now (it was
/// enabled again: the events kept while it was disabled are delivered).
pub async fn requeue_failed(tx: &mut Tx, endpoint: &str, now: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
    tx.exec(
        "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = $2, leased_until = NULL WHERE endpoint_id = $1 AND state = 'failed'",
        args![endpoint, ts(now)],
    )
    .await
}

/// The webhook event type of an audited action, for the actions that
/// make one (licence changes make theirs from the plan: see `licenses.rs`).
/// Every path that changes users, subscriptions or purchase requests is
/// audited in its transaction, so recording the event beside the audit
/// row covers each of them.
pub fn event_of_action(action: &str) -> Option<&'static str> {
    Some(match action {
        "user.create" => "user.created",
        "user.update" => "user.updated",
        "user.delete" => "user.deleted",
        "subscription.create" => "subscription.created",
        "subscription.update" | "subscription.provisioning_details" => "subscription.updated",
        "subscription.cancel" => "subscription.cancelled",
        "purchase.request" => "purchase_request.created",
        "purchase.fulfil" => "purchase_request.fulfilled",
        "purchase.reject" => "purchase_request.rejected",
        _ => return None,
    })
}

/// The `data` of an event made from an audited change: the org, the
/// object's id under its kind (`user`, `subscription`, `purchase_request`),
/// its state after the change (before it, for a deletion), the state
/// before (updates), who and which request.
#[derive(Serialize)]
struct ChangeData<'a> {
    org: &'a str,
    #[serde(flatten)]
    subject: std::collections::BTreeMap<&'a str, &'a str>,
    state: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<&'a serde_json::Value>,
    actor: &'a str,
    request_id: Option<&'a str>,
}

pub(crate) fn change_data(
    org: &str,
    target: &str,
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
    who: &crate::audit::Actor,
) -> String {
    let (kind, id) = target.split_once(':').unwrap_or(("object", target));
    let kind = if kind == "purchase" { "purchase_request" } else { kind };
    let data = ChangeData {
        org,
        subject: std::collections::BTreeMap::from([(kind, id)]),
        state: after.or(before),
        previous: after.and(before),
        actor: &who.actor,
        request_id: who.request_id.as_deref(),
    };
    // Strings and JSON values: serializing them cannot fail.
    serde_json::to_string(&data).unwrap_or_else(|_| "{}".into())
}

/// A licence event's `data`, the one shape for every path (built from the
/// outbox row's columns by the sender, or directly where a licence goes
/// without a plan: a user deleted).
#[derive(Serialize)]
pub struct LicenseEventData<'a> {
    pub org: &'a str,
    pub user: &'a str,
    pub email: Option<&'a str>,
    pub product: Option<&'a str>,
    pub subscription: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_subscription: Option<&'a str>,
    pub properties: &'a serde_json::value::RawValue,
    pub actor: Option<&'a str>,
    pub request_id: Option<&'a str>,
}

/// An event that is not a licence change: its `data` already as JSON text.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub org: &'a str,
    pub event_type: &'a str,
    /// Whose events keep their order: the user's or the object's id.
    pub subject: &'a str,
    pub data: String,
}

/// Writes events in the caller's transaction, when an endpoint is in the
/// org's reach (see the module's note). Returns nothing: whether they were
/// written depends on the endpoints, not on the caller.
pub async fn record(tx: &mut Tx, events: &[NewEvent<'_>], now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    let mut written = 0;
    // One statement per run of events of one org (a CSV import's users
    // come together), not one per event.
    for run in events.chunk_by(|a, b| a.org == b.org) {
        let rows: Vec<Vec<Val>> = run
            .iter()
            .map(|e| {
                vec![
                    Val::Text(crate::db::new_id("msg")),
                    Val::from(e.event_type),
                    Val::from(e.subject),
                    Val::Text(e.data.clone()),
                ]
            })
            .collect();
        let prepared = PreparedRows::with_shared_select(
            tx.backend(),
            "webhook_events (org_id, occurred_at, id, type, subject, data)",
            &[Val::from(run[0].org), Val::Text(ts(now))],
            &rows,
            &[],
            Some(IN_REACH),
        );
        written += tx.insert_prepared_counted(prepared).await?;
    }
    if written > 0 {
        tx.note(|c| c.webhook_events = true);
    }
    Ok(())
}

/// An event as the dispatcher and the sender read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub seq: i64,
    pub id: String,
    pub org_id: String,
    /// The org's partner, when it has one (for partner endpoints).
    pub partner_id: Option<String>,
    pub event_type: String,
    pub subject: String,
    pub occurred_at: String,
    pub email: Option<String>,
    pub product: Option<String>,
    pub subscription_id: Option<String>,
    pub from_subscription: Option<String>,
    pub properties: Option<String>,
    pub actor: Option<String>,
    pub request_id: Option<String>,
    pub data: Option<String>,
    /// A grouped licence event (see `licenses::outbox_rows`): its users,
    /// a JSON list, and their emails, a JSON object. `None` for an event
    /// of one subject.
    pub subjects: Option<String>,
    pub emails: Option<String>,
}

impl EventRow {
    /// The events this row holds, by position: the row itself for an
    /// event of one subject (position 0); for a grouped row one event per
    /// user, with its own `webhook-id` (the row's id and the position).
    pub fn expand(&self) -> Result<Vec<(i64, EventRow)>, StoreError> {
        let Some(subjects) = &self.subjects else {
            return Ok(vec![(0, self.clone())]);
        };
        let bad = |e: serde_json::Error| StoreError::Db(format!("event {} holds bad JSON: {e}", self.id));
        let users: Vec<String> = serde_json::from_str(subjects).map_err(bad)?;
        let emails: std::collections::HashMap<String, Option<String>> = match self.emails.as_deref() {
            Some(e) => serde_json::from_str(e).map_err(bad)?,
            None => Default::default(),
        };
        // The row without its lists, cloned per user (not the lists with it).
        let template = EventRow {
            subjects: None,
            emails: None,
            ..self.clone()
        };
        Ok(users
            .into_iter()
            .enumerate()
            .map(|(i, user)| {
                let one = EventRow {
                    id: member_id(&self.id, i as i64),
                    email: emails.get(&user).cloned().flatten(),
                    subject: user,
                    ..template.clone()
                };
                (i as i64, one)
            })
            .collect())
    }
}

/// The `webhook-id` of a grouped row's event at `index` (the delivery
/// list builds the same in SQL: `DELIVERY_COLUMNS`).
fn member_id(row: &str, index: i64) -> String {
    format!("{row}_{index}")
}

const EVENT_COLUMNS: &str =
    "e.seq, e.id, e.org_id, o.partner_id, e.type, e.subject, e.occurred_at, e.email, e.product, e.subscription_id, \
     e.from_subscription, e.properties, e.actor, e.request_id, e.data, e.subjects, e.emails";

fn event_row(r: &Row) -> Result<EventRow, StoreError> {
    Ok(EventRow {
        seq: r.int("seq")?,
        id: r.text("id")?,
        org_id: r.text("org_id")?,
        partner_id: r.opt_text("partner_id")?,
        event_type: r.text("type")?,
        subject: r.text("subject")?,
        occurred_at: r.text("occurred_at")?,
        email: r.opt_text("email")?,
        product: r.opt_text("product")?,
        subscription_id: r.opt_text("subscription_id")?,
        from_subscription: r.opt_text("from_subscription")?,
        properties: r.opt_text("properties")?,
        actor: r.opt_text("actor")?,
        request_id: r.opt_text("request_id")?,
        data: r.opt_text("data")?,
        subjects: r.opt_text("subjects")?,
        emails: r.opt_text("emails")?,
    })
}

/// Claims the events not yet dispatched, oldest first: at most `limit`
/// rows, and no more rows than hold `budget` events once expanded (a
/// grouped row holds up to a thousand; at least one row is claimed).
/// Also says whether more may wait.
///
/// The engines differ here. PostgreSQL numbers rows when they are
/// inserted, not when they commit, so a lower number may commit later:
/// each event is flagged `dispatched` (a partial index holds the others),
/// the rows stay locked until the caller commits, and rows other
/// dispatchers hold are skipped. SQLite's one writer commits in number
/// order, so a cursor (`webhook_dispatched.seq`) says what was dispatched:
/// nothing is written per event, and no index. (`dispatched` is set only
/// on test events, which are delivered at once.)
pub async fn undispatched(tx: &mut Tx, limit: i64, budget: i64) -> Result<(Vec<EventRow>, bool), StoreError> {
    let sql = match tx.backend() {
        Backend::Postgres => {
            "SELECT e.seq, COALESCE(e.weight, 1) AS weight FROM webhook_events e \
             WHERE e.dispatched = FALSE ORDER BY e.seq LIMIT $1 FOR UPDATE OF e SKIP LOCKED"
        }
        Backend::Sqlite => {
            "SELECT e.seq, COALESCE(e.weight, 1) AS weight FROM webhook_events e \
             WHERE e.seq > (SELECT seq FROM webhook_dispatched WHERE id = 1) AND e.dispatched = FALSE ORDER BY e.seq LIMIT $1"
        }
    };
    let mut seqs = Vec::new();
    let mut total = 0;
    let rows = tx.rows(sql, args![limit]).await?;
    let more = rows.len() as i64 == limit;
    for r in &rows {
        let weight = r.int("weight")?;
        if !seqs.is_empty() && total + weight > budget {
            break;
        }
        total += weight;
        seqs.push(r.int("seq")?);
    }
    let more = more || seqs.len() < rows.len();
    Ok((events(tx, &seqs).await?, more))
}

/// The events of these numbers.
pub async fn events(tx: &mut Tx, seqs: &[i64]) -> Result<Vec<EventRow>, StoreError> {
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let list = tx.any_of("e.seq", 1);
    tx.rows(
        &format!("SELECT {EVENT_COLUMNS} FROM webhook_events e LEFT JOIN orgs o ON o.id = e.org_id WHERE {list} ORDER BY e.seq"),
        &[Val::Ints(seqs.iter().map(|s| Some(*s)).collect())],
    )
    .await?
    .iter()
    .map(event_row)
    .collect()
}

/// One delivery to make: an event to an endpoint.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    pub endpoint_id: String,
    pub event_seq: i64,
    /// The user's position in a grouped event (0 otherwise).
    pub event_index: i64,
    pub subject: String,
}

/// Records the dispatch of `seqs`: their deliveries, due at `now`, and the
/// events marked dispatched.
pub async fn dispatch(tx: &mut Tx, seqs: &[i64], deliveries: &[NewDelivery], now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    let now_s = ts(now);
    let rows: Vec<Vec<Val>> = deliveries
        .iter()
        .map(|d| {
            vec![
                Val::from(&d.id),
                Val::from(&d.endpoint_id),
                Val::Int(d.event_seq),
                Val::Int(d.event_index),
                Val::from(&d.subject),
            ]
        })
        .collect();
    if !rows.is_empty() {
        let prepared = PreparedRows::with_shared(
            tx.backend(),
            "webhook_deliveries (state, next_attempt_at, created_at, id, endpoint_id, event_seq, event_index, subject)",
            &[Val::from("pending"), Val::from(&now_s), Val::from(&now_s)],
            &rows,
        );
        tx.insert_prepared(prepared).await?;
    }
    match (tx.backend(), seqs.iter().max()) {
        (_, None) => {}
        (Backend::Postgres, Some(_)) => {
            let list = tx.any_of("seq", 1);
            tx.exec(
                &format!("UPDATE webhook_events SET dispatched = TRUE WHERE {list}"),
                &[Val::Ints(seqs.iter().map(|s| Some(*s)).collect())],
            )
            .await?;
        }
        (Backend::Sqlite, Some(last)) => {
            tx.exec("UPDATE webhook_dispatched SET seq = $1 WHERE id = 1 AND seq < $1", args![*last])
                .await?;
        }
    }
    Ok(())
}

/// A claimed delivery: send it, then [`record_attempts`].
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub endpoint_id: String,
    pub event_seq: i64,
    /// The user's position in a grouped event (0 otherwise).
    pub event_index: i64,
    /// Attempts made before this one.
    pub attempts: i64,
}

/// Claims up to `limit` due deliveries to enabled endpoints until
/// `lease_until`: for each endpoint and subject only the earliest still
/// pending (a later event waits for it), oldest first.
pub async fn claim_due(
    tx: &mut Tx,
    now: chrono::DateTime<chrono::Utc>,
    lease_until: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> Result<Vec<Claimed>, StoreError> {
    let lock = match tx.backend() {
        Backend::Postgres => " FOR UPDATE OF d SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let now_s = ts(now);
    let rows = tx
        .rows(
            &format!(
                "SELECT d.id, d.endpoint_id, d.event_seq, d.event_index, d.attempts FROM webhook_deliveries d \
                 JOIN webhook_endpoints w ON w.id = d.endpoint_id AND w.enabled = TRUE \
                 WHERE d.state = 'pending' AND d.next_attempt_at <= $1 AND (d.leased_until IS NULL OR d.leased_until < $1) \
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.endpoint_id = d.endpoint_id AND p.subject = d.subject \
                     AND p.event_seq < d.event_seq AND p.state = 'pending') \
                 ORDER BY d.event_seq, d.event_index LIMIT $2{lock}"
            ),
            args![&now_s, limit],
        )
        .await?;
    let claimed: Vec<Claimed> = rows
        .iter()
        .map(|r| {
            Ok(Claimed {
                id: r.text("id")?,
                endpoint_id: r.text("endpoint_id")?,
                event_seq: r.int("event_seq")?,
                event_index: r.int("event_index")?,
                attempts: r.int("attempts")?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    if !claimed.is_empty() {
        let ids: Vec<&str> = claimed.iter().map(|c| c.id.as_str()).collect();
        let list = tx.any_of("id", 2);
        tx.exec(
            &format!("UPDATE webhook_deliveries SET leased_until = $1 WHERE {list}"),
            &[Val::Text(ts(lease_until)), Val::texts(&ids)],
        )
        .await?;
    }
    Ok(claimed)
}

/// How one attempt went.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub delivery_id: String,
    pub endpoint_id: String,
    /// This attempt's number (1 for the first).
    pub n: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: i64,
    /// The first kilobyte of the answer.
    pub response: Option<String>,
    /// What becomes of the delivery.
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered,
    RetryAt(chrono::DateTime<chrono::Utc>),
    /// The schedule is used up.
    Failed,
}

/// Records attempts and their deliveries' new state (a batch, one
/// transaction), and clears or starts each endpoint's failing streak.
pub async fn record_attempts(tx: &mut Tx, attempts: &[Attempt]) -> Result<(), StoreError> {
    if attempts.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<Val>> = attempts
        .iter()
        .map(|a| {
            vec![
                Val::from(&a.delivery_id),
                Val::Int(a.n),
                Val::Text(ts(a.at)),
                a.status.map(|s| Val::Int(i64::from(s))).unwrap_or(Val::NullInt),
                Val::from(a.error.as_deref()),
                Val::Int(a.latency_ms),
                Val::from(a.response.as_deref()),
            ]
        })
        .collect();
    tx.insert_rows("webhook_attempts (delivery_id, n, at, status, error, latency_ms, response)", rows)
        .await?;
    let delivered: Vec<&Attempt> = attempts.iter().filter(|a| a.outcome == Outcome::Delivered).collect();
    // Delivered ones in one statement per batch (their time is close enough: each attempt's own is in its row).
    if let Some(last) = delivered.iter().map(|a| a.at).max() {
        let ids: Vec<&str> = delivered.iter().map(|a| a.delivery_id.as_str()).collect();
        let list = tx.any_of("id", 2);
        tx.exec(
            &format!(
                "UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1, delivered_at = $1, leased_until = NULL, last_status = 200 WHERE {list}"
            ),
            &[Val::Text(ts(last)), Val::texts(&ids)],
        )
        .await?;
    }
    for a in attempts.iter().filter(|a| a.outcome != Outcome::Delivered) {
        let (state, next) = match &a.outcome {
            Outcome::RetryAt(t) => ("pending", ts(*t)),
            _ => ("failed", ts(a.at)),
        };
        tx.exec(
            "UPDATE webhook_deliveries SET state = $2, attempts = attempts + 1, next_attempt_at = $3, leased_until = NULL, last_status = $4 WHERE id = $1",
            args![
                &a.delivery_id,
                state,
                next,
                a.status.map(|s| Val::Int(i64::from(s))).unwrap_or(Val::NullInt)
            ],
        )
        .await?;
    }
    // Each endpoint's streak: a success ends it, a failure starts it.
    let mut endpoints: std::collections::BTreeMap<&str, (bool, chrono::DateTime<chrono::Utc>)> = Default::default();
    for a in attempts {
        let e = endpoints.entry(&a.endpoint_id).or_insert((false, a.at));
        e.0 |= a.outcome == Outcome::Delivered;
        e.1 = e.1.min(a.at);
    }
    for (endpoint, (any_success, first)) in endpoints {
        if any_success {
            tx.exec(
                "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
                args![endpoint],
            )
            .await?;
        } else {
            tx.exec(
                "UPDATE webhook_endpoints SET failing_since = $2 WHERE id = $1 AND failing_since IS NULL",
                args![endpoint, ts(first)],
            )
            .await?;
        }
    }
    Ok(())
}

/// Disables an endpoint with a reason (410 Gone, or failing too long).
pub async fn disable(tx: &mut Tx, endpoint: &str, reason: &str, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $2, updated_at = $3 WHERE id = $1",
        args![endpoint, reason, ts(now)],
    )
    .await?;
    Ok(())
}

/// Endpoints enabled and failing since before `since`.
pub async fn failing_since_before(tx: &mut Tx, since: chrono::DateTime<chrono::Utc>) -> Result<Vec<String>, StoreError> {
    tx.rows(
        "SELECT id FROM webhook_endpoints WHERE enabled = TRUE AND failing_since IS NOT NULL AND failing_since < $1",
        args![ts(since)],
    )
    .await?
    .iter()
    .map(|r| r.text("id"))
    .collect()
}

/// A delivery as listed, with its attempts.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: String,
    pub created_at: String,
    pub delivered_at: Option<String>,
    pub last_status: Option<i64>,
    pub tries: Vec<AttemptRow>,
}

#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub n: i64,
    pub at: String,
    pub status: Option<i64>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub response: Option<String>,
}

const DELIVERY_COLUMNS: &str = "d.id, d.endpoint_id, \
     CASE WHEN e.subjects IS NULL THEN e.id ELSE e.id || '_' || CAST(d.event_index AS TEXT) END AS event_id, e.type, d.state, d.attempts, d.next_attempt_at, d.created_at, \
     d.delivered_at, d.last_status";

fn delivery_row(r: &Row) -> Result<DeliveryRow, StoreError> {
    Ok(DeliveryRow {
        id: r.text("id")?,
        endpoint_id: r.text("endpoint_id")?,
        event_id: r.text("event_id")?,
        event_type: r.text("type")?,
        state: r.text("state")?,
        attempts: r.int("attempts")?,
        next_attempt_at: r.text("next_attempt_at")?,
        created_at: r.text("created_at")?,
        delivered_at: r.opt_text("delivered_at")?,
        last_status: if r.cell_is_null("last_status") {
            None
        } else {
            Some(r.int("last_status")?)
        },
        tries: Vec::new(),
    })
}

/// An endpoint's deliveries, newest first, before `before` (an id), with
/// their attempts.
pub async fn deliveries(tx: &mut Tx, endpoint: &str, before: Option<&str>, limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
    let rows = tx
        .rows(
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq \
                 WHERE d.endpoint_id = $1 AND ($2 = '' OR d.id < $2) ORDER BY d.id DESC LIMIT $3"
            ),
            args![endpoint, before.unwrap_or(""), limit],
        )
        .await?;
    let mut out: Vec<DeliveryRow> = rows.iter().map(delivery_row).collect::<Result<_, _>>()?;
    if out.is_empty() {
        return Ok(out);
    }
    let ids: Vec<&str> = out.iter().map(|d| d.id.as_str()).collect();
    let list = tx.any_of("delivery_id", 1);
    let tries = tx
        .rows(
            &format!(
                "SELECT delivery_id, n, at, status, error, latency_ms, response FROM webhook_attempts WHERE {list} ORDER BY delivery_id, n"
            ),
            &[Val::texts(&ids)],
        )
        .await?;
    for t in &tries {
        let id = t.text("delivery_id")?;
        if let Some(d) = out.iter_mut().find(|d| d.id == id) {
            d.tries.push(AttemptRow {
                n: t.int("n")?,
                at: t.text("at")?,
                status: if t.cell_is_null("status") { None } else { Some(t.int("status")?) },
                error: t.opt_text("error")?,
                latency_ms: t.int("latency_ms")?,
                response: t.opt_text("response")?,
            });
        }
    }
    Ok(out)
}

/// Sends a delivery again (same event, same `webhook-id`): pending and due
/// now. False when the endpoint has no such delivery.
pub async fn redeliver(tx: &mut Tx, endpoint: &str, delivery: &str, now: chrono::DateTime<chrono::Utc>) -> Result<bool, StoreError> {
    let n = tx
        .exec(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = $3, leased_until = NULL WHERE endpoint_id = $1 AND id = $2",
            args![endpoint, delivery, ts(now)],
        )
        .await?;
    Ok(n == 1)
}

/// A `webhook.test` event for one endpoint, delivered at once (no outbox
/// scope: it is not an org's change).
pub async fn test_event(
    tx: &mut Tx,
    endpoint: &str,
    data: &str,
    now: chrono::DateTime<chrono::Utc>,
    due: chrono::DateTime<chrono::Utc>,
) -> Result<String, StoreError> {
    let id = crate::db::new_id("msg");
    let now_s = ts(now);
    let due_s = ts(due);
    let seq = tx
        .opt_row(
            "INSERT INTO webhook_events (id, org_id, type, subject, occurred_at, data, dispatched) VALUES ($1, '', 'webhook.test', $2, $3, $4, TRUE) RETURNING seq",
            args![&id, endpoint, &now_s, data],
        )
        .await?
        .map(|r| r.int("seq"))
        .transpose()?
        .ok_or_else(|| StoreError::Db("the test event just written is missing".into()))?;
    let delivery = crate::db::new_id("dlv");
    tx.exec(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event_seq, subject, state, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, 'pending', $5, $5)",
        args![&delivery, endpoint, seq, endpoint, &due_s],
    )
    .await?;
    tx.note(|c| c.webhook_events = true);
    Ok(delivery)
}

/// Deletes delivered deliveries older than `before` with their attempts,
/// then events dispatched with no delivery left. Returns deliveries purged.
pub async fn purge_delivered(tx: &mut Tx, before: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
    let b = ts(before);
    tx.exec(
        "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE state = 'delivered' AND delivered_at < $1)",
        args![&b],
    )
    .await?;
    let n = tx
        .exec(
            "DELETE FROM webhook_deliveries WHERE state = 'delivered' AND delivered_at < $1",
            args![&b],
        )
        .await?;
    tx.exec(
        "DELETE FROM webhook_events WHERE (dispatched = TRUE OR seq <= (SELECT seq FROM webhook_dispatched WHERE id = 1)) AND occurred_at < $1 \
         AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_seq = webhook_events.seq)",
        args![&b],
    )
    .await?;
    Ok(n)
}

/// Rows in the outbox and the delivery log (for the benchmark and metrics).
pub async fn sizes(tx: &mut Tx) -> Result<(i64, i64, i64), StoreError> {
    let n = |t: &'static str| format!("SELECT COUNT(*) AS n FROM {t}");
    let events = tx
        .opt_row(&n("webhook_events"), args![])
        .await?
        .map(|r| r.int("n"))
        .transpose()?
        .unwrap_or(0);
    let deliveries = tx
        .opt_row(&n("webhook_deliveries"), args![])
        .await?
        .map(|r| r.int("n"))
        .transpose()?
        .unwrap_or(0);
    let attempts = tx
        .opt_row(&n("webhook_attempts"), args![])
        .await?
        .map(|r| r.int("n"))
        .transpose()?
        .unwrap_or(0);
    Ok((events, deliveries, attempts))
}

/// Extends the lease of claimed deliveries (a batch still being sent).
pub async fn renew_leases(tx: &mut Tx, ids: &[String], until: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    let list = tx.any_of("id", 2);
    tx.exec(
        &format!("UPDATE webhook_deliveries SET leased_until = $1 WHERE state = 'pending' AND leased_until IS NOT NULL AND {list}"),
        &[Val::Text(ts(until)), Val::texts(ids)],
    )
    .await?;
    Ok(())
}

/// Voids every lease (SQLite at start: the process that held them is gone).
pub async fn release_all_leases(tx: &mut Tx) -> Result<u64, StoreError> {
    tx.exec(
        "UPDATE webhook_deliveries SET leased_until = NULL WHERE leased_until IS NOT NULL",
        args![],
    )
    .await
}

/// A subscription's facts with the status last announced for it.
#[derive(Debug, Clone)]
pub struct Announced {
    pub org: String,
    pub id: String,
    pub facts: allot_domain::status::SubscriptionFacts,
    pub announced: Option<String>,
}

/// A page of every org's subscriptions in (org, id) order after `after`,
/// with the status last announced.
pub async fn subscription_statuses(tx: &mut Tx, after: &(String, String), limit: i64) -> Result<Vec<Announced>, StoreError> {
    let rows = tx
        .rows(
            "SELECT s.org_id, s.id, s.external_ref, s.partner_id, s.trial, s.start_date, s.end_date, s.suspended, s.cancelled, a.status AS announced \
             FROM subscriptions s LEFT JOIN webhook_subscription_status a ON a.org_id = s.org_id AND a.subscription_id = s.id \
             WHERE s.org_id > $1 OR (s.org_id = $1 AND s.id > $2) ORDER BY s.org_id, s.id LIMIT $3",
            args![&after.0, &after.1, limit],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let s = crate::subscriptions::sub_from(r)?;
            Ok(Announced {
                org: s.org,
                id: s.id,
                facts: s.facts,
                announced: r.opt_text("announced")?,
            })
        })
        .collect()
}

/// Records that `sub`'s status is now `to` (it was `from`, `None` when
/// never announced) and, for a change, writes `subscription.status_changed`
/// in the same transaction. Only the first of several servers scanning at
/// once gets to (the row is changed only from `from`); false for the others.
pub async fn announce_status(
    tx: &mut Tx,
    org: &str,
    sub: &str,
    from: Option<&str>,
    to: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, StoreError> {
    let changed = match from {
        None => {
            tx.exec(
                "INSERT INTO webhook_subscription_status (org_id, subscription_id, status) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                args![org, sub, to],
            )
            .await?
        }
        Some(from) => {
            tx.exec(
                "UPDATE webhook_subscription_status SET status = $4 WHERE org_id = $1 AND subscription_id = $2 AND status = $3",
                args![org, sub, from, to],
            )
            .await?
        }
    };
    if changed != 1 {
        return Ok(false);
    }
    if let Some(from) = from {
        #[derive(Serialize)]
        struct StatusChanged<'a> {
            org: &'a str,
            subscription: &'a str,
            from: &'a str,
            to: &'a str,
        }
        // Four strings: serializing them cannot fail.
        let data = serde_json::to_string(&StatusChanged {
            org,
            subscription: sub,
            from,
            to,
        })
        .unwrap_or_default();
        record(
            tx,
            &[NewEvent {
                org,
                event_type: "subscription.status_changed",
                subject: sub,
                data,
            }],
            now,
        )
        .await?;
    }
    Ok(true)
}
