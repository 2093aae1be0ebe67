//! Webhook endpoints: create (the signing secret answered once), list,
//! read, change, delete, rotate the secret, send a test event, list
//! deliveries with their attempts, redeliver one.
//!
//! An endpoint belongs to a scope: the provider (every org's events), a
//! partner (its customers' events) or one org (its own). Who may manage
//! them: provider and partner admins, org super admins
//! (`Action::ManageWebhooks`); an endpoint of another scope is 404 like
//! everything else outside the caller's reach.
//!
//! Secrets are `whsec_` and the base64 of 32 random bytes (Standard
//! Webhooks), sealed in the database with the configured webhook sealing
//! secret (see `super::sealing`), never logged and never shown again.
//! The delivery itself is `crate::worker::webhooks`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use allot_domain::access::Action;
use allot_domain::webhooks::{check_target_url, EventFilter};
use allot_domain::{Code, Error};
use allot_store::webhooks::{self as store, EndpointRow};
use allot_store::{audit, in_transaction, ts, StoreError};

use super::paging::{Page, PageQuery, Paged};
use super::{App, Caller};

/// Where an endpoint lives, from the URL it is addressed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookScope {
    Provider,
    Partner(String),
    Org(String),
}

impl HookScope {
    pub fn key(&self) -> String {
        match self {
            HookScope::Provider => "provider".into(),
            HookScope::Partner(p) => format!("partner:{p}"),
            HookScope::Org(o) => format!("org:{o}"),
        }
    }

    fn org(&self) -> Option<&str> {
        match self {
            HookScope::Org(o) => Some(o),
            _ => None,
        }
    }
}

/// An endpoint as shown: never its secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    /// The event types it receives, or `["*"]` for all.
    pub events: Vec<String>,
    pub enabled: bool,
    pub description: Option<String>,
    pub created_at: String,
    /// Why Allot disabled it (the receiver answered 410 Gone, or every
    /// attempt failed for days); absent when enabled or disabled by an admin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

impl From<&EndpointRow> for WebhookView {
    fn from(e: &EndpointRow) -> Self {
        WebhookView {
            id: e.id.clone(),
            url: e.url.clone(),
            events: e.events.clone(),
            enabled: e.enabled,
            description: e.description.clone(),
            created_at: e.created_at.clone(),
            disabled_reason: e.disabled_reason.clone(),
        }
    }
}

/// A new endpoint and, this once, its signing secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub view: WebhookView,
    /// `whsec_...`: verify `webhook-signature` with it. Shown only now.
    pub secret: String,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// Where events are POSTed: `https://` (plain `http://` and private
    /// addresses only where the server's configuration allows them), no
    /// credentials in it.
    #[schema(min_length = 1, max_length = 2000)]
    pub url: String,
    /// Event types to receive, or `["*"]` for all.
    #[schema(min_items = 1)]
    pub events: Vec<String>,
    /// Whether events are sent (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    #[schema(
        max_length = 500,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub description: Option<String>,
}

/// Fields to change; those left out stay.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 2000)]
    pub url: Option<String>,
    #[serde(default)]
    #[schema(min_items = 1)]
    pub events: Option<Vec<String>>,
    /// Enabling an endpoint Allot disabled sends the events kept meanwhile.
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    #[schema(
        max_length = 500,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub description: Option<String>,
}

/// A rotated secret: the new one (shown only now); the old one keeps
/// signing beside it until `previous_valid_until`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RotatedSecret {
    pub secret: String,
    pub previous_valid_until: String,
}

/// A delivery queued to be sent now (a test event, or one sent again).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryQueued {
    /// The delivery to look for in `deliveries`.
    pub delivery: String,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    pub attempt: i64,
    pub at: String,
    /// The receiver's HTTP status; absent when no answer came.
    pub status: Option<i64>,
    /// Why no answer came (timeout, refused address, ...).
    pub error: Option<String>,
    pub latency_ms: i64,
    /// The first kilobyte of the answer's body.
    pub response: Option<String>,
}

/// One event sent (or to be sent) to one endpoint.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: String,
    /// The `webhook-id` header: the same on every attempt and redelivery.
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (the retry schedule used up).
    pub state: String,
    pub attempts: i64,
    /// When the next attempt is due (pending ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
    pub attempt_log: Vec<AttemptView>,
}

/// The wall clock. Delivery runs on real time, not the business clock
/// (which tests move and freeze): receivers check `webhook-timestamp`
/// against their own clocks, and leases and retries are real waits.
pub(crate) fn wall_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// `(host, port)` of a URL, for resolving it.
pub(crate) fn host_and_port(url: &str) -> Option<(String, u16)> {
    let u = reqwest::Url::parse(url).ok()?;
    let host = u.host_str()?.trim_start_matches('[').trim_end_matches(']').to_string();
    Some((host, u.port_or_known_default()?))
}

/// What the endpoints' secrets are sealed for (see `super::sealing`).
const SEALED_FOR: &str = "allot webhook-secret sealing v1";

fn not_found(id: &str) -> Error {
    Error::not_found(format!("Webhook {}", allot_domain::types::excerpt(id)))
}

fn no_sealing() -> Error {
    Error::new(
        Code::Unavailable,
        "Webhooks are not configured on this server: set ALLOT_WEBHOOK_SEALING_SECRET (at least 32 characters), \
         which seals the endpoints' signing secrets in the database.",
    )
}

/// A new `whsec_` secret and its raw bytes.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

fn seal(app: &App, id: &str, secret: &str) -> Result<String, Error> {
    let key = app.config.webhooks.sealing.as_ref().ok_or_else(no_sealing)?;
    super::sealing::seal(key, SEALED_FOR, id, secret.as_bytes()).ok_or_else(|| Error::internal("sealing a webhook secret failed"))
}

/// The endpoint's signing secrets now: the current one, and the one
/// before a rotation while it still signs. (Used by the sender.)
pub(crate) fn secrets(app: &App, e: &EndpointRow, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<Vec<u8>>, Error> {
    let key = app.config.webhooks.sealing.as_ref().ok_or_else(no_sealing)?;
    let open = |sealed: &str| -> Result<Vec<u8>, Error> {
        let text = super::sealing::unseal(key, SEALED_FOR, &e.id, sealed).ok_or_else(|| {
            Error::new(
                Code::Unavailable,
                format!(
                    "The secret of webhook {} cannot be unsealed with the configured ALLOT_WEBHOOK_SEALING_SECRET.",
                    e.id
                ),
            )
        })?;
        let text = String::from_utf8(text).map_err(|_| Error::internal("a sealed webhook secret is not text"))?;
        STANDARD
            .decode(text.trim_start_matches("whsec_"))
            .map_err(|_| Error::internal("a sealed webhook secret is not base64"))
    };
    let mut out = vec![open(&e.secret_sealed)?];
    if let (Some(old), Some(until)) = (&e.old_secret_sealed, &e.old_secret_until) {
        if *until > ts(now) {
            out.push(open(old)?);
        }
    }
    Ok(out)
}

/// Checks the caller may manage `scope`'s webhooks: the tenant first (404
/// outside the caller's reach), then the role (403).
async fn check_scope(app: &App, caller: &Caller, scope: &HookScope) -> Result<(), Error> {
    match scope {
        HookScope::Provider => caller.require(Action::ManageProviderWebhooks),
        HookScope::Partner(p) => {
            caller.partner(p, Action::ManageWebhooks)?;
            let mut rd = app.store.read_conn().await?;
            allot_store::tenants::get_partner(&mut rd, p)
                .await?
                .ok_or_else(|| Error::not_found(format!("Partner {}", allot_domain::types::excerpt(p))))?;
            Ok(())
        }
        HookScope::Org(o) => {
            let mut rd = app.store.read_conn().await?;
            caller.org(&mut rd, o, Action::ManageWebhooks).await?;
            Ok(())
        }
    }
}

/// The endpoint `id` of `scope` (404 when it is another scope's).
async fn load(app: &App, caller: &Caller, scope: &HookScope, id: &str) -> Result<EndpointRow, Error> {
    check_scope(app, caller, scope).await?;
    let mut rd = app.store.read_conn().await?;
    store::endpoint(&mut rd, id)
        .await?
        .filter(|e| e.scope_key == scope.key())
        .ok_or_else(|| not_found(id))
}

fn check_description(d: &Option<String>) -> Result<(), Error> {
    if let Some(d) = d {
        allot_domain::types::check_text("description", d, 500)?;
    }
    Ok(())
}

/// Checks the URL's text, then where its host resolves (when it does:
/// a receiver not set up yet is not refused, the sender checks again).
async fn check_url(app: &App, url: &str) -> Result<(), Error> {
    let policy = app.config.webhooks.targets;
    check_target_url(url, policy)?;
    if policy.allow_private {
        return Ok(());
    }
    if let Some((host, port)) = host_and_port(url) {
        let lookup = tokio::time::timeout(std::time::Duration::from_secs(2), tokio::net::lookup_host((host.as_str(), port))).await;
        if let Ok(Ok(addrs)) = lookup {
            if let Some(a) = addrs.into_iter().find(|a| !allot_domain::webhooks::is_public(a.ip())) {
                return Err(Error::validation(
                    "url",
                    format!(
                        "url's host {host} resolves to {}, a private, loopback or reserved address; webhooks go to public addresses only.",
                        a.ip()
                    ),
                ));
            }
        }
    }
    Ok(())
}

pub async fn create_webhook(app: &App, caller: &Caller, scope: &HookScope, input: WebhookInput) -> Result<CreatedWebhook, Error> {
    check_scope(app, caller, scope).await?;
    let events = EventFilter::parse(&input.events)?;
    check_description(&input.description)?;
    check_url(app, &input.url).await?;
    let now = app.clock.now();
    let id = allot_store::new_id("hook");
    let secret = new_secret();
    let row = EndpointRow {
        id: id.clone(),
        scope_key: scope.key(),
        url: input.url.clone(),
        events: events.names(),
        enabled: input.enabled.unwrap_or(true),
        description: input.description.clone(),
        created_at: ts(now),
        updated_at: ts(now),
        disabled_reason: None,
        failing_since: None,
        secret_sealed: seal(app, &id, &secret)?,
        old_secret_sealed: None,
        old_secret_until: None,
    };
    let actor = caller.actor();
    in_transaction!(app.store, |tx| {
        store::insert_endpoint(&mut tx, &row).await?;
        let after = serde_json::json!({ "url": row.url, "events": row.events, "enabled": row.enabled });
        audit::record(
            &mut tx,
            scope.org(),
            &actor,
            "webhook.create",
            &format!("webhook:{id}"),
            None,
            Some(&after),
            now,
        )
        .await?;
        Ok::<_, StoreError>(())
    })?;
    Ok(CreatedWebhook {
        view: WebhookView::from(&row),
        secret,
    })
}

pub async fn list_webhooks(app: &App, caller: &Caller, scope: &HookScope, q: &PageQuery) -> Result<Paged<WebhookView>, Error> {
    check_scope(app, caller, scope).await?;
    let page = q.page()?;
    let mut rd = app.store.read_conn().await?;
    let rows = store::endpoints_of(&mut rd, &scope.key(), page.after.as_deref().unwrap_or(""), page.limit + 1).await?;
    Ok(Paged::from_rows(rows.iter().map(WebhookView::from).collect(), page.limit, |w| {
        w.id.clone()
    }))
}

pub async fn get_webhook(app: &App, caller: &Caller, scope: &HookScope, id: &str) -> Result<WebhookView, Error> {
    Ok(WebhookView::from(&load(app, caller, scope, id).await?))
}

pub async fn update_webhook(app: &App, caller: &Caller, scope: &HookScope, id: &str, patch: WebhookPatch) -> Result<WebhookView, Error> {
    let mut e = load(app, caller, scope, id).await?;
    let before = serde_json::json!({ "url": e.url, "events": e.events, "enabled": e.enabled });
    if let Some(url) = &patch.url {
        check_url(app, url).await?;
        e.url = url.clone();
    }
    if let Some(events) = &patch.events {
        e.events = EventFilter::parse(events)?.names();
    }
    if patch.description.is_some() {
        check_description(&patch.description)?;
        e.description = patch.description.clone();
    }
    let now = app.clock.now();
    let re_enabled = patch.enabled == Some(true) && !e.enabled;
    if let Some(enabled) = patch.enabled {
        e.enabled = enabled;
        if enabled {
            e.disabled_reason = None;
            e.failing_since = None;
        }
    }
    e.updated_at = ts(now);
    let actor = caller.actor();
    in_transaction!(app.store, |tx| {
        // Read again in the transaction: a concurrent delete makes this 404.
        if store::endpoint(&mut tx, id).await?.is_none() {
            return Err(StoreError::from(not_found(id)));
        }
        store::update_endpoint(&mut tx, &e).await?;
        if re_enabled {
            store::requeue_failed(&mut tx, id, wall_now()).await?;
        }
        let after = serde_json::json!({ "url": e.url, "events": e.events, "enabled": e.enabled });
        audit::record(
            &mut tx,
            scope.org(),
            &actor,
            "webhook.update",
            &format!("webhook:{id}"),
            Some(&before),
            Some(&after),
            now,
        )
        .await?;
        Ok::<_, StoreError>(())
    })?;
    app.store.change_feed().outbox.notify_one();
    Ok(WebhookView::from(&e))
}

pub async fn delete_webhook(app: &App, caller: &Caller, scope: &HookScope, id: &str) -> Result<(), Error> {
    load(app, caller, scope, id).await?;
    let now = app.clock.now();
    let actor = caller.actor();
    in_transaction!(app.store, |tx| {
        store::delete_endpoint(&mut tx, id).await?;
        audit::record(
            &mut tx,
            scope.org(),
            &actor,
            "webhook.delete",
            &format!("webhook:{id}"),
            None,
            None,
            now,
        )
        .await?;
        Ok::<_, StoreError>(())
    })?;
    Ok(())
}

pub async fn rotate_webhook_secret(app: &App, caller: &Caller, scope: &HookScope, id: &str) -> Result<RotatedSecret, Error> {
    let mut e = load(app, caller, scope, id).await?;
    let now = app.clock.now();
    // The overlap is real time (the sender compares it with the wall clock).
    let until =
        wall_now() + chrono::Duration::from_std(app.config.webhooks.rotation_overlap).unwrap_or_else(|_| chrono::Duration::hours(24));
    let secret = new_secret();
    e.old_secret_sealed = Some(std::mem::replace(&mut e.secret_sealed, seal(app, id, &secret)?));
    e.old_secret_until = Some(ts(until));
    e.updated_at = ts(now);
    let actor = caller.actor();
    in_transaction!(app.store, |tx| {
        if store::endpoint(&mut tx, id).await?.is_none() {
            return Err(StoreError::from(not_found(id)));
        }
        store::update_endpoint(&mut tx, &e).await?;
        audit::record(
            &mut tx,
            scope.org(),
            &actor,
            "webhook.rotate_secret",
            &format!("webhook:{id}"),
            None,
            None,
            now,
        )
        .await?;
        Ok::<_, StoreError>(())
    })?;
    Ok(RotatedSecret {
        secret,
        previous_valid_until: ts(until),
    })
}

/// The `data` of a `webhook.test` event.
#[derive(Serialize)]
struct TestData<'a> {
    webhook: &'a str,
    message: &'static str,
}

pub async fn test_webhook(app: &App, caller: &Caller, scope: &HookScope, id: &str) -> Result<DeliveryQueued, Error> {
    load(app, caller, scope, id).await?;
    let now = app.clock.now();
    let data = serde_json::to_string(&TestData {
        webhook: id,
        message: "A test event from Allot: your endpoint is reachable and verifies signatures.",
    })
    .map_err(|e| Error::internal(e.to_string()))?;
    let due = wall_now();
    let actor = caller.actor();
    let delivery = in_transaction!(app.store, |tx| {
        let delivery = store::test_event(&mut tx, id, &data, now, due).await?;
        audit::record(
            &mut tx,
            scope.org(),
            &actor,
            "webhook.test",
            &format!("webhook:{id}"),
            None,
            None,
            now,
        )
        .await?;
        Ok::<_, StoreError>(delivery)
    })?;
    Ok(DeliveryQueued { delivery })
}

/// `?limit=&cursor=` of deliveries (newest first).
pub async fn list_deliveries(app: &App, caller: &Caller, scope: &HookScope, id: &str, q: &PageQuery) -> Result<Paged<DeliveryView>, Error> {
    load(app, caller, scope, id).await?;
    let Page { limit, after } = q.page()?;
    let mut rd = app.store.read_conn().await?;
    let rows = store::deliveries(&mut rd, id, after.as_deref(), limit + 1).await?;
    let views = rows
        .into_iter()
        .map(|d| DeliveryView {
            next_attempt_at: (d.state == "pending").then(|| d.next_attempt_at.clone()),
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            state: d.state,
            attempts: d.attempts,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
            attempt_log: d
                .tries
                .into_iter()
                .map(|t| AttemptView {
                    attempt: t.n,
                    at: t.at,
                    status: t.status,
                    error: t.error,
                    latency_ms: t.latency_ms,
                    response: t.response,
                })
                .collect(),
        })
        .collect();
    Ok(Paged::from_rows(views, limit, |d| d.id.clone()))
}

pub async fn redeliver(app: &App, caller: &Caller, scope: &HookScope, id: &str, delivery: &str) -> Result<DeliveryQueued, Error> {
    load(app, caller, scope, id).await?;
    let due = wall_now();
    let now = app.clock.now();
    let actor = caller.actor();
    in_transaction!(app.store, |tx| {
        if !store::redeliver(&mut tx, id, delivery, due).await? {
            return Err(StoreError::from(Error::not_found(format!(
                "Delivery {}",
                allot_domain::types::excerpt(delivery)
            ))));
        }
        let target = format!("webhook:{id}");
        let after = serde_json::json!({ "delivery": delivery });
        audit::record(&mut tx, scope.org(), &actor, "webhook.redeliver", &target, None, Some(&after), now).await?;
        Ok::<_, StoreError>(())
    })?;
    app.store.change_feed().outbox.notify_one();
    Ok(DeliveryQueued {
        delivery: delivery.to_string(),
    })
}

/// `license.removed` events for licences released without a plan (a user
/// deleted), in the caller's transaction; the same data as a plan's.
pub(crate) async fn record_released(
    tx: &mut allot_store::Tx,
    org: &str,
    user: &str,
    email: &str,
    released: &[allot_domain::planner::Held],
    actor: &allot_store::audit::Actor,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let mut data = Vec::new();
    for h in released {
        let properties = serde_json::to_string(&h.properties).map_err(|e| StoreError::Db(e.to_string()))?;
        let properties = serde_json::value::RawValue::from_string(properties).map_err(|e| StoreError::Db(e.to_string()))?;
        let d = store::LicenseEventData {
            org,
            user,
            email: Some(email),
            product: Some(h.product.as_str()),
            subscription: Some(&h.subscription),
            from_subscription: None,
            properties: &properties,
            actor: Some(&actor.actor),
            request_id: actor.request_id.as_deref(),
        };
        data.push(serde_json::to_string(&d).map_err(|e| StoreError::Db(e.to_string()))?);
    }
    let events: Vec<store::NewEvent> = data
        .into_iter()
        .map(|data| store::NewEvent {
            org,
            event_type: "license.removed",
            subject: user,
            data,
        })
        .collect();
    store::record(tx, &events, now).await
}
