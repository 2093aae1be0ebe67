//! R-MOVE-2 / R-DEP-2: service data of a family whose last licence went is
//! kept for the product's `retention_days`, then purged. The worker purges
//! periodically; a provider admin can purge now (`POST
//! /api/v1/service-data/purge`). "Now" is the server's clock, so tests move
//! it past a retention period and purge.

use allot_domain::Error;
use allot_store::audit::Actor;
use allot_store::{in_transaction, service_data};

use crate::AppState;

/// Rows purged per transaction: a backlog of millions never holds the writer long.
const PURGE_BATCH: i64 = 1_000;

/// Deletes every row of service data whose retention has ended, recording
/// one `service_data.purge` audit event per user and family. Returns how
/// many rows went.
pub async fn purge_expired(st: &AppState, who: &Actor) -> Result<usize, Error> {
    let now = st.clock.now();
    let mut total = 0;
    loop {
        let purged = in_transaction!(st.store, |tx| {
            let purged = service_data::purge_expired(&mut tx, now, PURGE_BATCH).await?;
            for p in &purged {
                allot_store::audit::record(
                    &mut tx,
                    Some(&p.org),
                    who,
                    "service_data.purge",
                    &format!("user:{}", p.user),
                    Some(&serde_json::json!({ "family": p.family })),
                    None,
                    now,
                )
                .await?;
            }
            Ok(purged.len())
        })?;
        total += purged;
        if (purged as i64) < PURGE_BATCH {
            return Ok(total);
        }
    }
}

/// Deletes stored idempotency keys past their time to live (and
/// reservations abandoned longer ago than that); returns how many went.
pub async fn purge_idempotency_keys(st: &AppState) -> Result<u64, Error> {
    let keep = st.limits.idempotency_ttl.max(st.limits.idempotency_lease);
    let before = st.clock.now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::hours(24));
    let mut total = 0;
    loop {
        let purged = in_transaction!(st.store, |tx| allot_store::tokens::purge_keys(&mut tx, before, PURGE_BATCH).await)?;
        total += purged;
        if (purged as i64) < PURGE_BATCH {
            return Ok(total);
        }
    }
}

/// How often the worker purges: `ALLOT_PURGE_INTERVAL_MS`, default an hour.
pub fn purge_interval() -> std::time::Duration {
    let ms = std::env::var("ALLOT_PURGE_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v: &u64| *v >= 100)
        .unwrap_or(3_600_000);
    std::time::Duration::from_millis(ms)
}
