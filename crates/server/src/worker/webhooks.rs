//! The webhook sender: turns outbox events into deliveries and POSTs them,
//! signed as Standard Webhooks (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`, one
//! signature per secret while a secret rotates).
//!
//! Each server runs one. It wakes when this process commits events and
//! every `Config::webhooks.poll` for what other processes wrote, then:
//! 1. dispatches: claims events not yet dispatched (PostgreSQL: `FOR
//!    UPDATE SKIP LOCKED`), makes one delivery per endpoint in reach whose
//!    filter wants the type;
//! 2. sends: claims due deliveries with a lease (the earliest pending per
//!    endpoint and subject only, so a user's events arrive in commit
//!    order), POSTs them with at most `per_endpoint` in flight per
//!    endpoint and a timeout, renews the lease while they run, and records
//!    every attempt in one transaction per batch. 2xx is delivered; 410
//!    disables the endpoint; anything else is retried on the schedule
//!    (`allot_domain::webhooks::retry_delay`), `Retry-After` respected.
//!
//! While this process runs a bulk job, the sender waits (up to 30 s in a
//! row) and sends its events after: the job's writes go first.
//!
//! A killed server's claims come back when their lease runs out (on
//! SQLite, which one process owns, at the next start): a delivery is sent
//! at least once, with the same `webhook-id` each time.
//!
//! Targets: the address a host resolves to is checked before connecting
//! (no private, loopback or link-local address unless allowed, so DNS
//! cannot smuggle one in), and redirects are never followed (a 3xx is a
//! failed attempt).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use allot_domain::webhooks::{retry_delay, EventFilter, EventType};
use allot_store::webhooks::{self as store, Attempt, Claimed, EndpointRow, EventRow, NewDelivery, Outcome};
use allot_store::{in_transaction, Backend, StoreError};

use crate::app::webhooks::{host_and_port, wall_now};
use crate::app::App;

/// Outbox rows and the events they hold (a grouped licence row holds up
/// to a thousand users) dispatched per transaction; deliveries claimed
/// per batch.
const DISPATCH_ROWS: i64 = 1_000;
const DISPATCH_EVENTS: i64 = 5_000;
const SEND_BATCH: i64 = 512;

/// How long the sender waits for this process's bulk job before it sends
/// beside it anyway (a job of a million users takes a few seconds).
const YIELD_AT_MOST: Duration = Duration::from_secs(30);

/// The most of an answer kept in the delivery log.
const RESPONSE_KEPT: usize = 1024;

/// Resolves names for the webhook client, refusing (unless allowed)
/// every answer that is not a public address.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| allot_domain::webhooks::is_public(a.ip()))
                .collect();
            if public.is_empty() {
                let shown = addrs.first().map(|a| a.ip().to_string()).unwrap_or_else(|| "nothing".into());
                return Err(format!("{host} resolves to {shown}, not a public address (refused)").into());
            }
            let it: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(it)
        })
    }
}

fn client(app: &App) -> Result<reqwest::Client, reqwest::Error> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(app.config.webhooks.timeout)
        .connect_timeout(app.config.webhooks.timeout)
        .pool_max_idle_per_host(app.config.webhooks.per_endpoint)
        .user_agent(concat!("Allot-Webhooks/", env!("CARGO_PKG_VERSION")));
    if !app.config.webhooks.targets.allow_private {
        b = b.dns_resolver(Arc::new(PublicOnly));
    }
    b.build()
}

/// The body of a delivery: `{"type", "timestamp", "data"}`. Built from
/// the stored event alone, so every attempt sends the same bytes.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: &'a str,
    data: &'a serde_json::value::RawValue,
}

pub(crate) fn body_of(e: &EventRow) -> Result<String, String> {
    let raw =
        |s: &str| serde_json::value::RawValue::from_string(s.to_string()).map_err(|err| format!("event {} holds bad JSON: {err}", e.id));
    let data = match &e.data {
        Some(d) => raw(d)?,
        None => {
            let properties = raw(e.properties.as_deref().unwrap_or("{}"))?;
            let d = allot_store::webhooks::LicenseEventData {
                org: &e.org_id,
                user: &e.subject,
                email: e.email.as_deref(),
                product: e.product.as_deref(),
                subscription: e.subscription_id.as_deref(),
                from_subscription: e.from_subscription.as_deref(),
                properties: &properties,
                actor: e.actor.as_deref(),
                request_id: e.request_id.as_deref(),
            };
            raw(&serde_json::to_string(&d).map_err(|err| err.to_string())?)?
        }
    };
    serde_json::to_string(&Body {
        event_type: &e.event_type,
        timestamp: &e.occurred_at,
        data: &data,
    })
    .map_err(|err| err.to_string())
}

/// `webhook-signature`: `v1,<sig>` per secret, space-separated.
pub(crate) fn signature(secrets: &[Vec<u8>], id: &str, timestamp: i64, body: &str) -> String {
    secrets
        .iter()
        .filter_map(|secret| {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body.as_bytes());
            Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether an endpoint (with its filter, parsed once per batch) wants an
/// event of its org (with the org's partner) and type.
fn wants(e: &EndpointRow, filter: &EventFilter, ev: &EventRow) -> bool {
    let in_reach = e.scope_key == "provider"
        || e.scope_key == format!("org:{}", ev.org_id)
        || ev.partner_id.as_ref().is_some_and(|p| e.scope_key == format!("partner:{p}"));
    in_reach && EventType::parse(&ev.event_type).is_some_and(|t| filter.wants(t))
}

/// Dispatches what waits; returns how many events it dispatched.
pub async fn dispatch(app: &App) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let now = wall_now();
        let (n, more) = in_transaction!(app.store, |tx| {
            let (events, more) = store::undispatched(&mut tx, DISPATCH_ROWS, DISPATCH_EVENTS).await?;
            if events.is_empty() {
                return Ok::<_, StoreError>((0, false));
            }
            // Each endpoint's filter parsed once per batch (a stored filter that no longer parses wants nothing).
            let endpoints: Vec<(EndpointRow, EventFilter)> = store::all_endpoints(&mut tx)
                .await?
                .into_iter()
                .filter_map(|e| EventFilter::parse(&e.events).ok().map(|f| (e, f)))
                .collect();
            let mut deliveries = Vec::new();
            for ev in &events {
                let wanted: Vec<&EndpointRow> = endpoints.iter().filter(|(e, f)| wants(e, f, ev)).map(|(e, _)| e).collect();
                if wanted.is_empty() {
                    continue;
                }
                for (index, one) in ev.expand()? {
                    for e in &wanted {
                        deliveries.push(NewDelivery {
                            id: allot_store::new_id("dlv"),
                            endpoint_id: e.id.clone(),
                            event_seq: ev.seq,
                            event_index: index,
                            subject: one.subject.clone(),
                        });
                    }
                }
            }
            let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
            store::dispatch(&mut tx, &seqs, &deliveries, now).await?;
            Ok((events.len(), more))
        })
        .map_err(|e| StoreError::Db(e.detail))?;
        total += n;
        if !more {
            return Ok(total);
        }
    }
}

/// What one POST came to.
struct Sent {
    claimed: Claimed,
    at: chrono::DateTime<chrono::Utc>,
    status: Option<u16>,
    error: Option<String>,
    latency: Duration,
    response: Option<String>,
    retry_after: Option<Duration>,
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    secrets: &[Vec<u8>],
    body: &str,
    app: &App,
) -> (Option<u16>, Option<String>, Option<String>, Option<Duration>) {
    if let Some((host, _)) = host_and_port(url) {
        // A literal address is not resolved: check it here (the configuration may have changed since it was accepted).
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            if !app.config.webhooks.targets.allow_private && !allot_domain::webhooks::is_public(ip) {
                return (None, Some(format!("{ip} is not a public address (refused)")), None, None);
            }
        }
    }
    let timestamp = wall_now().timestamp();
    let request = http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature(secrets, id, timestamp, body))
        .body(body.to_string());
    match request.send().await {
        Err(e) => (None, Some(describe(&e)), None, None),
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, wall_now()));
            let mut kept: Vec<u8> = Vec::new();
            while kept.len() < RESPONSE_KEPT {
                match resp.chunk().await {
                    Ok(Some(c)) => kept.extend_from_slice(&c[..c.len().min(RESPONSE_KEPT - kept.len())]),
                    _ => break,
                }
            }
            (Some(status), None, Some(String::from_utf8_lossy(&kept).into_owned()), retry_after)
        }
    }
}

/// An error as the delivery log shows it (its chain, without the URL's query).
fn describe(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out.chars().take(500).collect()
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(v: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs.min(24 * 3600)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    (at.with_timezone(&chrono::Utc) - now)
        .to_std()
        .ok()
        .map(|d| d.min(Duration::from_secs(24 * 3600)))
}

/// Claims a batch and sends it; returns how many were attempted.
pub async fn send_due(app: &App, http: &reqwest::Client) -> Result<usize, StoreError> {
    let cfg = &app.config.webhooks;
    let lease = cfg.timeout * 2 + Duration::from_secs(5);
    let now = wall_now();
    let until = now + chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::seconds(60));
    let claimed =
        in_transaction!(app.store, |tx| store::claim_due(&mut tx, now, until, SEND_BATCH).await).map_err(|e| StoreError::Db(e.detail))?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let (events, endpoints) = {
        let mut rd = app.store.read_conn().await?;
        let mut seqs: Vec<i64> = claimed.iter().map(|c| c.event_seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        // A grouped row is expanded once per batch, into the events of its users.
        let mut events: HashMap<(i64, i64), EventRow> = HashMap::new();
        for row in store::events(&mut rd, &seqs).await? {
            for (index, one) in row.expand()? {
                events.insert((row.seq, index), one);
            }
        }
        let endpoints: HashMap<String, EndpointRow> = store::all_endpoints(&mut rd)
            .await?
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        (events, endpoints)
    };
    let mut per_endpoint: BTreeMap<String, Vec<Claimed>> = BTreeMap::new();
    for c in &claimed {
        per_endpoint.entry(c.endpoint_id.clone()).or_default().push(c.clone());
    }
    let sends = per_endpoint.into_iter().map(|(endpoint_id, batch)| {
        let endpoint = endpoints.get(&endpoint_id).cloned();
        let events = &events;
        async move {
            let Some(endpoint) = endpoint else { return Vec::new() };
            let secrets = match crate::app::webhooks::secrets(app, &endpoint, wall_now()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(webhook = %endpoint.id, error = %e.detail, "cannot open the endpoint's secret; its deliveries wait");
                    return Vec::new();
                }
            };
            futures::stream::iter(batch)
                .map(|c| {
                    let (secrets, endpoint) = (&secrets, &endpoint);
                    async move {
                        let at = wall_now();
                        let started = Instant::now();
                        let (status, error, response, retry_after) = match events.get(&(c.event_seq, c.event_index)).map(body_of) {
                            Some(Ok(body)) => {
                                let id = events.get(&(c.event_seq, c.event_index)).map(|e| e.id.as_str()).unwrap_or_default();
                                post(http, &endpoint.url, id, secrets, &body, app).await
                            }
                            Some(Err(e)) => (None, Some(e), None, None),
                            None => (None, Some("the event is gone".into()), None, None),
                        };
                        Sent {
                            claimed: c,
                            at,
                            status,
                            error,
                            latency: started.elapsed(),
                            response,
                            retry_after,
                        }
                    }
                })
                .buffer_unordered(cfg.per_endpoint.max(1))
                .collect::<Vec<Sent>>()
                .await
        }
    });
    // While the batch runs, its lease is renewed (a slow receiver must not let another server send it too).
    let ids: Vec<String> = claimed.iter().map(|c| c.id.clone()).collect();
    let all = futures::future::join_all(sends);
    tokio::pin!(all);
    let mut renew = tokio::time::interval(lease / 3);
    renew.tick().await;
    let results: Vec<Sent> = loop {
        tokio::select! {
            done = &mut all => break done.into_iter().flatten().collect(),
            _ = renew.tick() => {
                let until = wall_now() + chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::seconds(60));
                let renewed = in_transaction!(app.store, |tx| store::renew_leases(&mut tx, &ids, until).await);
                if let Err(e) = renewed {
                    tracing::warn!(error = %e.detail, "cannot renew webhook delivery leases; another server may send them too");
                }
            }
        }
    };
    let mut gone: Vec<String> = Vec::new();
    let attempts: Vec<Attempt> = results
        .into_iter()
        .map(|s| {
            let n = s.claimed.attempts + 1;
            let outcome = match s.status {
                Some(code) if (200..300).contains(&code) => Outcome::Delivered,
                _ => {
                    if s.status == Some(410) {
                        gone.push(s.claimed.endpoint_id.clone());
                    }
                    let honoured = if matches!(s.status, Some(429) | Some(503)) {
                        s.retry_after
                    } else {
                        None
                    };
                    match retry_delay(n as u32, cfg.retry_scale, rand::random::<f64>(), honoured) {
                        Some(wait) => {
                            Outcome::RetryAt(s.at + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::hours(10)))
                        }
                        None => Outcome::Failed,
                    }
                }
            };
            Attempt {
                delivery_id: s.claimed.id,
                endpoint_id: s.claimed.endpoint_id,
                n,
                at: s.at,
                status: s.status,
                error: s.error,
                latency_ms: s.latency.as_millis().try_into().unwrap_or(i64::MAX),
                response: s.response,
                outcome,
            }
        })
        .collect();
    let count = attempts.len();
    let now = wall_now();
    in_transaction!(app.store, |tx| {
        store::record_attempts(&mut tx, &attempts).await?;
        for endpoint in &gone {
            store::disable(&mut tx, endpoint, "The receiver answered 410 Gone.", now).await?;
        }
        Ok::<_, StoreError>(())
    })
    .map_err(|e| StoreError::Db(e.detail))?;
    Ok(count)
}

/// Disables endpoints whose every attempt has failed for too long.
async fn disable_failing(app: &App) -> Result<(), StoreError> {
    let now = wall_now();
    let since = now - chrono::Duration::from_std(app.config.webhooks.disable_after).unwrap_or_else(|_| chrono::Duration::days(5));
    let days = app.config.webhooks.disable_after.as_secs() / 86_400;
    in_transaction!(app.store, |tx| {
        for id in store::failing_since_before(&mut tx, since).await? {
            let reason = format!("Every delivery failed for {days} days in a row; its events are kept: enable it again to receive them.");
            tracing::warn!(webhook = %id, "disabling a webhook endpoint that has failed for days");
            store::disable(&mut tx, &id, &reason, now).await?;
        }
        Ok::<_, StoreError>(())
    })
    .map_err(|e| StoreError::Db(e.detail))
}

/// Compares every subscription's status, derived for today, with the one
/// last announced; a change writes `subscription.status_changed` (a
/// subscription seen for the first time is noted without an event: its
/// `subscription.created` said it). The sender runs it at start-up and
/// every hour; returns how many changes it announced.
pub async fn scan_subscription_statuses(app: &App) -> Result<usize, StoreError> {
    let today = app.clock.today();
    let mut after = (String::new(), String::new());
    let mut announced = 0;
    loop {
        let page = {
            let mut rd = app.store.read_conn().await?;
            store::subscription_statuses(&mut rd, &after, 1_000).await?
        };
        let Some(last) = page.last() else { return Ok(announced) };
        after = (last.org.clone(), last.id.clone());
        let moved: Vec<(&store::Announced, &'static str)> = page
            .iter()
            .map(|a| (a, allot_domain::status::derive_subscription_status(&a.facts, today).as_str()))
            .filter(|(a, now)| a.announced.as_deref() != Some(*now))
            .collect();
        if !moved.is_empty() {
            let now = app.clock.now();
            announced += in_transaction!(app.store, |tx| {
                let mut n = 0;
                for (a, to) in &moved {
                    if store::announce_status(&mut tx, &a.org, &a.id, a.announced.as_deref(), to, now).await? && a.announced.is_some() {
                        n += 1;
                    }
                }
                Ok::<_, StoreError>(n)
            })
            .map_err(|e| StoreError::Db(e.detail))?;
        }
        if page.len() < 1_000 {
            return Ok(announced);
        }
    }
}

/// Runs until the task is aborted.
pub async fn run(app: App) {
    let http = match client(&app) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client; webhooks are not sent");
            return;
        }
    };
    if app.store.backend() == Backend::Sqlite {
        // One process owns a SQLite database: leases left by an earlier run (killed) are void.
        if let Err(e) = in_transaction!(app.store, |tx| store::release_all_leases(&mut tx).await) {
            tracing::warn!(error = %e.detail, "cannot release the webhook leases of an earlier run; they run out by themselves");
        }
    }
    let feed = app.store.change_feed().clone();
    let mut last_housekeeping: Option<Instant> = None;
    let mut last_scan: Option<Instant> = None;
    let mut yielding: Option<Instant> = None;
    loop {
        if last_scan.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            last_scan = Some(Instant::now());
            match scan_subscription_statuses(&app).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(subscriptions = n, "announced subscription status changes"),
                Err(e) => tracing::warn!(error = ?e, "cannot compare subscription statuses; trying again in an hour"),
            }
        }
        if last_housekeeping.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            last_housekeeping = Some(Instant::now());
            if let Err(e) = disable_failing(&app).await {
                tracing::warn!(error = ?e, "cannot check failing webhook endpoints");
            }
            let keep = chrono::Duration::from_std(app.config.webhooks.keep_delivered).unwrap_or_else(|_| chrono::Duration::days(7));
            let before = wall_now() - keep;
            match in_transaction!(app.store, |tx| store::purge_delivered(&mut tx, before).await) {
                Ok(0) => {}
                Ok(n) => tracing::info!(deliveries = n, "purged delivered webhook events past their keeping time"),
                Err(e) => tracing::warn!(error = %e.detail, "cannot purge delivered webhook events"),
            }
        }
        // A bulk job of this process writes first: on two cores and (on
        // SQLite) one writer, sending beside it slows it by half. Its
        // events wait meanwhile, at most `YIELD_AT_MOST` in a row.
        if app.job_running.load(std::sync::atomic::Ordering::SeqCst) {
            let since = *yielding.get_or_insert_with(Instant::now);
            if since.elapsed() < YIELD_AT_MOST {
                tokio::time::sleep(app.config.webhooks.poll.min(Duration::from_millis(100))).await;
                continue;
            }
        } else {
            yielding = None;
        }
        let mut busy = false;
        match dispatch(&app).await {
            Ok(n) => busy |= n > 0,
            Err(e) => tracing::warn!(error = ?e, "cannot dispatch webhook events; trying again"),
        }
        match send_due(&app, &http).await {
            Ok(n) => busy |= n > 0,
            Err(e) => tracing::warn!(error = ?e, "cannot send webhook deliveries; trying again"),
        }
        if !busy {
            let _ = tokio::time::timeout(app.config.webhooks.poll, feed.outbox.notified()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("999999", now), Some(Duration::from_secs(24 * 3600)));
    }

    #[test]
    fn a_signature_per_secret() {
        let one = signature(&[b"k1".to_vec()], "msg_1", 1_700_000_000, "{}");
        let two = signature(&[b"k1".to_vec(), b"k2".to_vec()], "msg_1", 1_700_000_000, "{}");
        assert!(one.starts_with("v1,") && !one.contains(' '));
        assert!(two.starts_with(&format!("{one} v1,")));
        assert_ne!(one, signature(&[b"k1".to_vec()], "msg_2", 1_700_000_000, "{}"));
    }

    #[test]
    fn hosts_and_ports() {
        assert_eq!(host_and_port("https://a.example/x"), Some(("a.example".into(), 443)));
        assert_eq!(host_and_port("http://127.0.0.1:9000/x"), Some(("127.0.0.1".into(), 9000)));
        assert_eq!(host_and_port("https://[::1]:8443/"), Some(("::1".into(), 8443)));
    }
}
