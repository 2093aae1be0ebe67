//! Who used what: every entitlement check that answers yes records that
//! the user used the granting products that day, for idle-seat reclaim.
//!
//! Never on the check's path: a check only adds to a buffer in memory (a
//! hash lookup under a lock held for nanoseconds); [`keep_flushing`] writes
//! the buffer every [`crate::Config::usage_flush`] (2 s by default) in
//! batched upserts. A user × product is buffered at most once a day, so
//! the database sees at most one write per user, product and day. What a
//! `kill -9` loses is the buffer: at most one flush interval of first uses.
//!
//! Use case: [`license_usage`] (`GET /orgs/{org}/license-usage`), which
//! flushes this server's buffer first so that it counts its own checks.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use allot_domain::access::Action;
use allot_domain::bulk::{idle_window_start, MAX_IDLE_DAYS};
use allot_domain::Error;
use allot_store::usage::{self, Used};
use allot_store::{in_transaction, StoreError};

use crate::app::{App, Caller};

/// The most records kept while the database cannot be written; beyond
/// it new first uses are dropped (and counted) rather than growing without
/// bound. A million is about 100 MB.
const MAX_PENDING: usize = 1_000_000;

#[derive(Default)]
struct Buffer {
    /// The day `seen` is for; a new day starts an empty set.
    day: Option<NaiveDate>,
    /// Hashes of (org, user, product) recorded today. A collision of two
    /// 64-bit hashes would skip one record for one day, which the next
    /// day's first use repairs.
    seen: HashSet<u64>,
    pending: Vec<Used>,
    dropped: u64,
}

/// The buffer of first uses not yet written.
#[derive(Default)]
pub struct UsageRecorder {
    buffer: Mutex<Buffer>,
    /// Held by a flush from taking the buffer to its commit: a flush waits
    /// for one under way, so that what it reads afterwards (the usage
    /// report) includes what that one took.
    flushing: tokio::sync::Mutex<()>,
}

fn key(org: &str, user: &str, product: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (org, user, product).hash(&mut h);
    h.finish()
}

impl UsageRecorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `user` (an id) used each of `products` on `today`.
    pub fn note<'a>(&self, today: NaiveDate, org: &str, user: &str, products: impl IntoIterator<Item = &'a str>) {
        let mut b = self.lock();
        if b.day != Some(today) {
            b.day = Some(today);
            b.seen.clear();
        }
        for product in products {
            if b.seen.insert(key(org, user, product)) {
                if b.pending.len() >= MAX_PENDING {
                    b.dropped += 1;
                    continue;
                }
                b.pending.push(Used {
                    org: org.to_string(),
                    user: user.to_string(),
                    product: product.to_string(),
                    day: today,
                });
            }
        }
    }

    /// Writes what is buffered; on failure it is kept for the next flush.
    /// Answers how many records were written.
    pub async fn flush(&self, app: &App) -> Result<usize, Error> {
        let _flushing = self.flushing.lock().await;
        let pending = std::mem::take(&mut self.lock().pending);
        if pending.is_empty() {
            return Ok(0);
        }
        let written = in_transaction!(app.store, |tx| {
            usage::record(&mut tx, &pending).await?;
            Ok::<_, StoreError>(())
        });
        match written {
            Ok(()) => Ok(pending.len()),
            Err(e) => {
                let mut b = self.lock();
                let room = MAX_PENDING.saturating_sub(b.pending.len());
                let kept = pending.len().min(room);
                b.dropped += (pending.len() - kept) as u64;
                let mut back: Vec<Used> = pending.into_iter().take(kept).collect();
                back.append(&mut b.pending);
                b.pending = back;
                Err(e)
            }
        }
    }

    /// First uses dropped because the buffer was full (metrics).
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

/// Writes the buffer every `Config::usage_flush` until `stop` resolves,
/// then once more (`serve` stops it at shutdown). A flush under way is
/// never cut short: `stop` is only looked at between flushes.
pub async fn keep_flushing(app: App, stop: tokio::sync::oneshot::Receiver<()>) {
    let mut tick = tokio::time::interval(app.config.usage_flush);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = &mut stop => true,
        };
        if let Err(e) = app.entitlements.usage.flush(&app).await {
            match last {
                false => tracing::warn!(error = %e.detail, "license usage could not be written; kept for the next try"),
                true => tracing::warn!(error = %e.detail, "license usage recorded in the last seconds could not be written"),
            }
        }
        if last {
            return;
        }
    }
}

/// `?idle_days=N` (30 if left out).
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// The window in days, today included: a holder who used the product
    /// in it is active; one who did not, and held it since before it, is idle.
    #[param(minimum = 1, maximum = 3650)]
    pub idle_days: Option<u32>,
}

/// One product of one subscription: its holders by use in the window.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProductUsage {
    pub product: String,
    pub subscription: String,
    /// Users holding a seat.
    pub holders: i64,
    /// Holders who used it in the window.
    pub active: i64,
    /// Holders who did not, and held it since before the window: the
    /// seats a reclaim job (`filter: {"product", "idle_days"}`) would take.
    pub idle: i64,
    /// Holders given the seat within the window who have not used it yet.
    pub recently_assigned: i64,
}

/// The org's licence usage in a window.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LicenseUsage {
    pub org: String,
    pub idle_days: u32,
    /// The window's first day (uses from this day on count).
    pub since: NaiveDate,
    pub items: Vec<ProductUsage>,
}

/// `GET /orgs/{org}/license-usage`.
pub async fn license_usage(app: &App, caller: &Caller, org: &str, q: &UsageQuery) -> Result<LicenseUsage, Error> {
    app.visible_org(caller, org, Action::ReadLicenses).await?;
    let days = q.idle_days.unwrap_or(30);
    if days == 0 || days > MAX_IDLE_DAYS {
        return Err(Error::validation(
            "idle_days",
            format!("idle_days is a number of days from 1 to {MAX_IDLE_DAYS}, not {days}."),
        ));
    }
    // This server's own recent checks count at once.
    app.entitlements.usage.flush(app).await?;
    let since = idle_window_start(app.clock.today(), days);
    let mut rd = app.store.read_conn().await?;
    let counts = usage::summary(&mut rd, org, since).await?;
    Ok(LicenseUsage {
        org: org.to_string(),
        idle_days: days,
        since,
        items: counts
            .into_iter()
            .map(|c| ProductUsage {
                recently_assigned: c.holders - c.active - c.idle,
                product: c.product,
                subscription: c.subscription,
                holders: c.holders,
                active: c.active,
                idle: c.idle,
            })
            .collect(),
    })
}
