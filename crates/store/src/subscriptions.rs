//! Subscriptions and their items (the seat pools).

use chrono::NaiveDate;

use allot_domain::planner::Pool;
use allot_domain::status::{ProvisioningStatus, SubscriptionFacts};
use allot_domain::types::ProductCode;
use allot_domain::{Code, Error};

use crate::db::{Row, StoreError, Tx, Val};
use crate::{args, ts};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub product: String,
    pub quantity: i64,
    pub consumed: i64,
    pub provisioning_status: ProvisioningStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub org: String,
    pub id: String,
    pub external_ref: Option<String>,
    pub partner: Option<String>,
    pub facts: SubscriptionFacts,
    pub items: Vec<Item>,
}

fn date(s: &str) -> Result<NaiveDate, StoreError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|e| StoreError::Db(format!("stored date {s:?} is unreadable: {e}")))
}

pub(crate) fn provisioning(s: &str) -> Result<ProvisioningStatus, StoreError> {
    ProvisioningStatus::parse(s).ok_or_else(|| StoreError::Db(format!("unknown provisioning status {s:?}")))
}

pub(crate) const SUB_COLUMNS: &str = "org_id, id, external_ref, partner_id, trial, start_date, end_date, suspended, cancelled";

pub(crate) fn sub_from(r: &Row) -> Result<Subscription, StoreError> {
    Ok(Subscription {
        org: r.text("org_id")?,
        id: r.text("id")?,
        external_ref: r.opt_text("external_ref")?,
        partner: r.opt_text("partner_id")?,
        facts: SubscriptionFacts {
            trial: r.bool("trial")?,
            start_date: date(&r.text("start_date")?)?,
            end_date: date(&r.text("end_date")?)?,
            suspended: r.bool("suspended")?,
            cancelled: r.bool("cancelled")?,
        },
        items: Vec::new(),
    })
}

fn item_from(r: &Row) -> Result<(String, Item), StoreError> {
    Ok((
        r.text("subscription_id")?,
        Item {
            product: r.text("product")?,
            quantity: r.int("quantity")?,
            consumed: r.int("consumed")?,
            provisioning_status: provisioning(&r.text("provisioning_status")?)?,
        },
    ))
}

pub async fn list(tx: &mut Tx, org: &str, after: Option<&str>, limit: i64) -> Result<Vec<Subscription>, StoreError> {
    let rows = tx
        .rows(
            &format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3"),
            args![org, after.unwrap_or(""), limit],
        )
        .await?;
    let mut subs: Vec<Subscription> = rows.iter().map(sub_from).collect::<Result<_, _>>()?;
    if let (Some(first), Some(last)) = (subs.first(), subs.last()) {
        let items = tx
            .rows(
                "SELECT subscription_id, product, quantity, consumed, provisioning_status FROM subscription_items \
                 WHERE org_id = $1 AND subscription_id >= $2 AND subscription_id <= $3 ORDER BY subscription_id, product",
                args![org, &first.id, &last.id],
            )
            .await?;
        for r in &items {
            let (sub_id, item) = item_from(r)?;
            if let Some(s) = subs.iter_mut().find(|s| s.id == sub_id) {
                s.items.push(item);
            }
        }
    }
    Ok(subs)
}

pub async fn get(tx: &mut Tx, org: &str, id: &str) -> Result<Option<Subscription>, StoreError> {
    let Some(row) = tx
        .opt_row(
            &format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE org_id = $1 AND id = $2"),
            args![org, id],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut sub = sub_from(&row)?;
    let items = tx
        .rows(
            "SELECT subscription_id, product, quantity, consumed, provisioning_status FROM subscription_items WHERE org_id = $1 AND subscription_id = $2 ORDER BY product",
            args![org, id],
        )
        .await?;
    sub.items = items.iter().map(|r| item_from(r).map(|(_, i)| i)).collect::<Result<_, _>>()?;
    Ok(Some(sub))
}

pub async fn insert(tx: &mut Tx, sub: &Subscription, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    let f = &sub.facts;
    tx.exec(
        &format!("INSERT INTO subscriptions ({SUB_COLUMNS}, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)"),
        args![
            &sub.org,
            &sub.id,
            sub.external_ref.as_deref(),
            sub.partner.as_deref(),
            f.trial,
            f.start_date.to_string(),
            f.end_date.to_string(),
            f.suspended,
            f.cancelled,
            ts(now)
        ],
    )
    .await?;
    tx.note(|c| c.subscriptions(&sub.org));
    for item in &sub.items {
        upsert_item(tx, &sub.org, &sub.id, item).await?;
    }
    Ok(())
}

pub async fn update(tx: &mut Tx, sub: &Subscription, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    let f = &sub.facts;
    tx.exec(
        "UPDATE subscriptions SET external_ref = $3, partner_id = $4, trial = $5, start_date = $6, end_date = $7, suspended = $8, cancelled = $9, updated_at = $10 \
         WHERE org_id = $1 AND id = $2",
        args![
            &sub.org,
            &sub.id,
            sub.external_ref.as_deref(),
            sub.partner.as_deref(),
            f.trial,
            f.start_date.to_string(),
            f.end_date.to_string(),
            f.suspended,
            f.cancelled,
            ts(now)
        ],
    )
    .await?;
    tx.note(|c| c.subscriptions(&sub.org));
    Ok(())
}

/// Creates an item or changes its quantity and provisioning status. The
/// quantity may not fall below the seats already consumed (the CHECK enforces
/// it; this says so in words).
pub async fn upsert_item(tx: &mut Tx, org: &str, sub: &str, item: &Item) -> Result<(), StoreError> {
    tx.note(|c| c.subscriptions(org));
    let changed = tx
        .exec(
            "UPDATE subscription_items SET quantity = $4, provisioning_status = $5 WHERE org_id = $1 AND subscription_id = $2 AND product = $3 AND consumed <= $4",
            args![org, sub, &item.product, item.quantity, item.provisioning_status.as_str()],
        )
        .await?;
    if changed == 1 {
        return Ok(());
    }
    let existing = tx
        .opt_row(
            "SELECT consumed FROM subscription_items WHERE org_id = $1 AND subscription_id = $2 AND product = $3",
            args![org, sub, &item.product],
        )
        .await?;
    if let Some(row) = existing {
        let consumed = row.int("consumed")?;
        return Err(Error::validation(
            "items.quantity",
            format!(
                "{} seats of {} are assigned on subscription {sub}; the quantity cannot drop to {}.",
                consumed, item.product, item.quantity
            ),
        )
        .into());
    }
    tx.exec(
        "INSERT INTO subscription_items (org_id, subscription_id, product, quantity, consumed, provisioning_status) VALUES ($1, $2, $3, $4, 0, $5)",
        args![org, sub, &item.product, item.quantity, item.provisioning_status.as_str()],
    )
    .await?;
    Ok(())
}

/// The org's pools for some products with their subscriptions' facts, in
/// the order automatic seat choice prefers: the subscription that ends
/// first, then by id.
pub async fn pools_for(tx: &mut Tx, org: &str, products: &[&ProductCode]) -> Result<Vec<Pool>, StoreError> {
    if products.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT i.subscription_id, i.product, i.quantity, i.consumed, i.provisioning_status, \
                s.trial, s.start_date, s.end_date, s.suspended, s.cancelled \
         FROM subscription_items i JOIN subscriptions s ON s.org_id = i.org_id AND s.id = i.subscription_id \
         WHERE i.org_id = $1 AND i.product IN ({})",
        // One parameter per product, not a list parameter (`Tx::any_of`):
        // PostgreSQL plans this read, made before every licence change,
        // better that way (list: 14% fewer changes/s in the spread bench).
        // The products are the catalogue's (callers leave unknown codes
        // out), so they stay far below the engines' parameter limits.
        (2..2 + products.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
    );
    let mut vals = vec![Val::from(org)];
    vals.extend(products.iter().map(|p| Val::from(p.as_str())));
    let rows = tx.rows(&sql, &vals).await?;
    let mut pools = rows
        .iter()
        .map(|r| {
            let facts = SubscriptionFacts {
                trial: r.bool("trial")?,
                start_date: date(&r.text("start_date")?)?,
                end_date: date(&r.text("end_date")?)?,
                suspended: r.bool("suspended")?,
                cancelled: r.bool("cancelled")?,
            };
            Ok(Pool {
                subscription: r.text("subscription_id")?,
                product: ProductCode::parse(&r.text("product")?).map_err(|e| StoreError::Db(e.detail))?,
                quantity: r.int("quantity")?,
                consumed: r.int("consumed")?,
                provisioning: provisioning(&r.text("provisioning_status")?)?,
                subscription_facts: facts,
            })
        })
        .collect::<Result<Vec<Pool>, StoreError>>()?;
    // The soonest-ending subscription first (sorted here rather than by
    // the statement: see `users::license_state`).
    pools.sort_by(|a, b| (a.subscription_facts.end_date, &a.subscription).cmp(&(b.subscription_facts.end_date, &b.subscription)));
    Ok(pools)
}

/// One row per subscription item of the org, for the licences overview.
#[derive(Debug, Clone)]
pub struct LicenseRow {
    pub product: String,
    pub subscription: String,
    pub total: i64,
    pub consumed: i64,
}

pub async fn license_rows(tx: &mut Tx, org: &str) -> Result<Vec<LicenseRow>, StoreError> {
    let rows = tx
        .rows(
            "SELECT product, subscription_id, quantity, consumed FROM subscription_items WHERE org_id = $1 ORDER BY product, subscription_id",
            args![org],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(LicenseRow {
                product: r.text("product")?,
                subscription: r.text("subscription_id")?,
                total: r.int("quantity")?,
                consumed: r.int("consumed")?,
            })
        })
        .collect()
}

/// Pools whose counter disagrees with their assignment rows (should be none).
/// Used by tests and `allot admin check`.
pub async fn counter_mismatches(tx: &mut Tx) -> Result<Vec<(String, String, String, i64, i64)>, StoreError> {
    let rows = tx
        .rows(
            "SELECT i.org_id, i.subscription_id, i.product, i.consumed, \
                    (SELECT COUNT(*) FROM assignments a WHERE a.org_id = i.org_id AND a.subscription_id = i.subscription_id AND a.product = i.product) AS held, \
                    i.quantity \
             FROM subscription_items i",
            &[],
        )
        .await?;
    let mut bad = Vec::new();
    for r in &rows {
        let (consumed, held, quantity) = (r.int("consumed")?, r.int("held")?, r.int("quantity")?);
        if consumed != held || consumed > quantity {
            bad.push((r.text("org_id")?, r.text("subscription_id")?, r.text("product")?, consumed, held));
        }
    }
    Ok(bad)
}

/// How many users hold a seat of a subscription (any of its items).
pub async fn holders(tx: &mut Tx, org: &str, sub: &str) -> Result<i64, StoreError> {
    tx.opt_row(
        "SELECT COUNT(DISTINCT user_id) AS n FROM assignments WHERE org_id = $1 AND subscription_id = $2",
        args![org, sub],
    )
    .await?
    .map(|r| r.int("n"))
    .transpose()
    .map(|n| n.unwrap_or(0))
}

/// Cancels a subscription if no seat of it is taken, deciding on the
/// counters as they are once their rows are locked: a change holding one
/// (PostgreSQL) commits first and is counted. Items are marked cancelled as
/// well, so a take planned before this commit fails its guarded update.
/// Returns the seats still taken when it did not cancel (nothing changed).
pub async fn cancel_if_empty(tx: &mut Tx, org: &str, sub: &str, now: chrono::DateTime<chrono::Utc>) -> Result<Option<i64>, StoreError> {
    // A write that changes nothing, for its row locks.
    tx.exec(
        "UPDATE subscription_items SET cancelled = cancelled WHERE org_id = $1 AND subscription_id = $2",
        args![org, sub],
    )
    .await?;
    let taken = tx
        .opt_row(
            "SELECT CAST(COALESCE(SUM(consumed), 0) AS BIGINT) AS taken FROM subscription_items WHERE org_id = $1 AND subscription_id = $2",
            args![org, sub],
        )
        .await?
        .map(|r| r.int("taken"))
        .transpose()?
        .unwrap_or(0);
    if taken > 0 {
        return Ok(Some(taken));
    }
    tx.exec(
        "UPDATE subscription_items SET cancelled = TRUE WHERE org_id = $1 AND subscription_id = $2",
        args![org, sub],
    )
    .await?;
    tx.exec(
        "UPDATE subscriptions SET cancelled = TRUE, updated_at = $3 WHERE org_id = $1 AND id = $2",
        args![org, sub, ts(now)],
    )
    .await?;
    tx.note(|c| c.subscriptions(org));
    Ok(None)
}

pub fn not_found(id: &str) -> Error {
    Error::new(Code::NotFound, format!("Subscription {id} was not found."))
}

/// Moves an `awaiting_details` item to `provisioning` with the details its
/// org's admin submitted; false (nothing changed) when it was not awaiting.
pub async fn submit_details(tx: &mut Tx, org: &str, sub: &str, product: &str, details: &str) -> Result<bool, StoreError> {
    let changed = tx
        .exec(
            "UPDATE subscription_items SET provisioning_status = 'provisioning', provisioning_details = $4 \
             WHERE org_id = $1 AND subscription_id = $2 AND product = $3 AND provisioning_status = 'awaiting_details'",
            args![org, sub, product, details],
        )
        .await?;
    tx.note(|c| c.subscriptions(org));
    Ok(changed == 1)
}

/// Adds seats to an item (a fulfilled purchase), creating the item if the
/// subscription does not carry the product yet (then `provisioning`: the
/// provider or partner sets it up and marks it provisioned).
/// Adds `n` seats of `product` to a subscription (a new item if it has
/// none), refusing to take an item past `max` seats.
pub async fn add_seats(tx: &mut Tx, org: &str, sub: &str, product: &str, n: i64, max: i64) -> Result<(), StoreError> {
    let changed = tx
        .exec(
            "UPDATE subscription_items SET quantity = quantity + $4 WHERE org_id = $1 AND subscription_id = $2 AND product = $3 AND quantity <= $5 - $4",
            args![org, sub, product, n, max],
        )
        .await?;
    if changed == 0 {
        if let Some(r) = tx
            .opt_row(
                "SELECT quantity FROM subscription_items WHERE org_id = $1 AND subscription_id = $2 AND product = $3",
                args![org, sub, product],
            )
            .await?
        {
            return Err(Error::validation(
                "quantity",
                format!(
                    "Subscription {sub} has {} seats of {product}; {n} more would pass the maximum of {max}.",
                    r.int("quantity")?
                ),
            )
            .into());
        }
        if n > max {
            return Err(Error::validation("quantity", format!("{n} seats would pass the maximum of {max}.")).into());
        }
        tx.exec(
            "INSERT INTO subscription_items (org_id, subscription_id, product, quantity, consumed, provisioning_status) VALUES ($1, $2, $3, $4, 0, 'provisioning')",
            args![org, sub, product, n],
        )
        .await?;
        tx.note(|c| c.subscriptions(org));
    }
    Ok(())
}
