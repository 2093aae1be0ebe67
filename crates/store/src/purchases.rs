//! Purchase requests: pending until the provider or the org's
//! partner fulfils (the seats are added) or rejects them.

use serde::Serialize;

use crate::db::{Row, StoreError, Tx};
use crate::{args, ts};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PurchaseRequest {
    pub id: String,
    pub org: String,
    pub product: String,
    pub quantity: i64,
    /// The subscription asked for, if any.
    pub subscription: Option<String>,
    pub state: String,
    pub requested_by: String,
    pub requested_at: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    /// The subscription whose quantity grew.
    pub fulfilled_subscription: Option<String>,
    /// Why it was rejected.
    pub reason: Option<String>,
}

const COLUMNS: &str =
    "org_id, id, product, quantity, subscription_id, state, requested_by, requested_at, decided_by, decided_at, fulfilled_subscription, reason";

fn from(r: &Row) -> Result<PurchaseRequest, StoreError> {
    Ok(PurchaseRequest {
        org: r.text("org_id")?,
        id: r.text("id")?,
        product: r.text("product")?,
        quantity: r.int("quantity")?,
        subscription: r.opt_text("subscription_id")?,
        state: r.text("state")?,
        requested_by: r.text("requested_by")?,
        requested_at: r.text("requested_at")?,
        decided_by: r.opt_text("decided_by")?,
        decided_at: r.opt_text("decided_at")?,
        fulfilled_subscription: r.opt_text("fulfilled_subscription")?,
        reason: r.opt_text("reason")?,
    })
}

pub async fn insert(tx: &mut Tx, p: &PurchaseRequest) -> Result<(), StoreError> {
    tx.exec(
        &format!("INSERT INTO purchase_requests ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, NULL, NULL)"),
        args![
            &p.org,
            &p.id,
            &p.product,
            p.quantity,
            p.subscription.as_deref(),
            &p.state,
            &p.requested_by,
            &p.requested_at
        ],
    )
    .await?;
    Ok(())
}

pub async fn list(tx: &mut Tx, org: &str, after: Option<&str>, limit: i64) -> Result<Vec<PurchaseRequest>, StoreError> {
    tx.rows(
        &format!("SELECT {COLUMNS} FROM purchase_requests WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3"),
        args![org, after.unwrap_or(""), limit],
    )
    .await?
    .iter()
    .map(from)
    .collect()
}

pub async fn get(tx: &mut Tx, org: &str, id: &str) -> Result<Option<PurchaseRequest>, StoreError> {
    tx.opt_row(
        &format!("SELECT {COLUMNS} FROM purchase_requests WHERE org_id = $1 AND id = $2"),
        args![org, id],
    )
    .await?
    .map(|r| from(&r))
    .transpose()
}

/// Decides a pending request; false when it was no longer pending (decided
/// by someone else meanwhile), in which case nothing changed.
pub async fn decide(
    tx: &mut Tx,
    p: &PurchaseRequest,
    state: &str,
    by: &str,
    fulfilled_subscription: Option<&str>,
    reason: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, StoreError> {
    let changed = tx
        .exec(
            "UPDATE purchase_requests SET state = $3, decided_by = $4, decided_at = $5, fulfilled_subscription = $6, reason = $7 \
             WHERE org_id = $1 AND id = $2 AND state = 'pending'",
            args![&p.org, &p.id, state, by, ts(now), fulfilled_subscription, reason],
        )
        .await?;
    Ok(changed == 1)
}
