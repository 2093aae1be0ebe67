//! Licence usage: the last day each user used each product, as recorded
//! by entitlement checks that answered yes, and what it says about idle
//! seats. The server buffers the records and writes them in batches (at
//! most once per user, product and day); here they are upserted, never
//! moved back in time.
//!
//! A holder is *active* in a window when it used the product on a day of
//! the window, *idle* when it did not and held the seat since before the
//! window began (a seat given yesterday is not idle yet), and otherwise
//! *recently assigned*.

use chrono::NaiveDate;

use crate::db::{StoreError, Tx};
use crate::{args, Val};

/// Records per statement (4 parameters each).
const ROWS_PER_STATEMENT: usize = 250;

/// One record: `user` used `product` of `org` on `day`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Used {
    pub org: String,
    pub user: String,
    pub product: String,
    pub day: NaiveDate,
}

fn day_text(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// Upserts `records`: a later day replaces an earlier one, never the reverse.
pub async fn record(tx: &mut Tx, records: &[Used]) -> Result<(), StoreError> {
    for chunk in records.chunks(ROWS_PER_STATEMENT) {
        let mut values = Vec::with_capacity(chunk.len());
        let mut vals: Vec<Val> = Vec::with_capacity(chunk.len() * 4);
        for (i, r) in chunk.iter().enumerate() {
            let n = i * 4;
            values.push(format!("(${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4));
            vals.extend([
                Val::from(r.org.as_str()),
                Val::from(r.user.as_str()),
                Val::from(r.product.as_str()),
                Val::from(day_text(r.day)),
            ]);
        }
        tx.exec(
            &format!(
                "INSERT INTO license_usage (org_id, user_id, product, last_used_on) VALUES {} \
                 ON CONFLICT (org_id, user_id, product) DO UPDATE SET last_used_on = excluded.last_used_on \
                 WHERE license_usage.last_used_on < excluded.last_used_on",
                values.join(", ")
            ),
            &vals,
        )
        .await?;
    }
    Ok(())
}

/// Holders of one product on one subscription, by use in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCount {
    pub product: String,
    pub subscription: String,
    pub holders: i64,
    pub active: i64,
    pub idle: i64,
}

/// Every item of the org's subscriptions with its holders counted: active
/// (used on or after `since`), idle (not, and assigned before `since`).
pub async fn summary(tx: &mut Tx, org: &str, since: NaiveDate) -> Result<Vec<UsageCount>, StoreError> {
    let since = day_text(since);
    // `assigned_at` is a timestamp: any of `since`'s day sorts after the
    // bare date, so `< since` means assigned on an earlier day.
    let rows = tx
        .rows(
            "SELECT i.product, i.subscription_id, COUNT(a.user_id) AS holders, \
               COALESCE(SUM(CASE WHEN l.last_used_on >= $2 THEN 1 ELSE 0 END), 0) AS active, \
               COALESCE(SUM(CASE WHEN a.user_id IS NOT NULL AND (l.last_used_on IS NULL OR l.last_used_on < $2) \
                                  AND a.assigned_at < $2 THEN 1 ELSE 0 END), 0) AS idle \
             FROM subscription_items i \
             LEFT JOIN assignments a ON a.org_id = i.org_id AND a.subscription_id = i.subscription_id AND a.product = i.product \
             LEFT JOIN license_usage l ON l.org_id = a.org_id AND l.user_id = a.user_id AND l.product = a.product \
             WHERE i.org_id = $1 \
             GROUP BY i.product, i.subscription_id \
             ORDER BY i.product, i.subscription_id",
            args![org, since.as_str()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(UsageCount {
                product: r.text("product")?,
                subscription: r.text("subscription_id")?,
                holders: r.int("holders")?,
                active: r.int("active")?,
                idle: r.int("idle")?,
            })
        })
        .collect()
}

/// Narrows a user filter (`u`: the users table) to holders of `product`
/// idle on it since `since` (see the module's words).
pub(crate) fn and_idle_holder(q: &mut crate::filtered::Filtered, product: &str, since: NaiveDate) {
    let product = q.bind(product);
    let since = q.bind(day_text(since));
    q.sql.push_str(&format!(
        " AND EXISTS (SELECT 1 FROM assignments h WHERE h.org_id = u.org_id AND h.user_id = u.id \
           AND h.product = {product} AND h.assigned_at < {since} AND NOT EXISTS (SELECT 1 FROM license_usage l \
           WHERE l.org_id = h.org_id AND l.user_id = h.user_id AND l.product = h.product AND l.last_used_on >= {since}))"
    ));
}
