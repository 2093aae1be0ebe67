//! Retained service data: a family's data is kept for the product's
//! `retention_days` after its last licence went, then purged. The worker
//! purges periodically; a provider admin can purge now. "Now" is the
//! application's clock, so tests move it past a retention period and purge.
//! Stored idempotency keys are purged here too, past their time to live.

use serde::Serialize;

use allot_domain::access::Action;
use allot_domain::Error;
use allot_store::audit::Actor;
use allot_store::{in_transaction, service_data};

use super::{App, Caller};

/// Rows purged per transaction: a backlog of millions never holds the writer long.
const PURGE_BATCH: i64 = 1_000;

/// How much a purge removed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Purged {
    /// Rows of service data deleted.
    pub purged: usize,
}

/// `POST /api/v1/service-data/purge`: the provider purges now.
pub async fn purge_service_data(app: &App, caller: &Caller) -> Result<Purged, Error> {
    caller.require(Action::Maintenance)?;
    Ok(Purged {
        purged: purge_expired(app, &caller.actor()).await?,
    })
}

/// Deletes every row of service data whose retention has ended, recording
/// one `service_data.purge` audit event per user and family. Returns how
/// many rows went.
pub async fn purge_expired(app: &App, who: &Actor) -> Result<usize, Error> {
    let now = app.clock.now();
    let mut total = 0;
    loop {
        let purged = in_transaction!(app.store, |tx| {
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
pub async fn purge_idempotency_keys(app: &App) -> Result<u64, Error> {
    let limits = &app.config.limits;
    let keep = limits.idempotency_ttl.max(limits.idempotency_lease);
    let before = app.clock.now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::hours(24));
    let mut total = 0;
    loop {
        let purged = in_transaction!(app.store, |tx| allot_store::tokens::purge_keys(&mut tx, before, PURGE_BATCH).await)?;
        total += purged;
        if (purged as i64) < PURGE_BATCH {
            return Ok(total);
        }
    }
}
