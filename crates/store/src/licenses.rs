//! Assignments (seats taken) and the application of a licence plan.

use std::collections::BTreeMap;

use allot_domain::catalogue::Product;
use allot_domain::planner::{Held, LicensePlan, Properties};
use allot_domain::types::ProductCode;

use crate::db::{Row, StoreError, Tx};
use crate::{args, ts};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub held: Held,
    pub assigned_at: String,
}

fn assignment_from(r: &Row) -> Result<Assignment, StoreError> {
    let properties: Properties =
        serde_json::from_str(&r.text(2)?).map_err(|e| StoreError::Db(format!("stored assignment properties are unreadable: {e}")))?;
    Ok(Assignment {
        held: Held {
            product: ProductCode::parse(&r.text(0)?).map_err(|e| StoreError::Db(e.detail))?,
            subscription: r.text(1)?,
            properties,
        },
        assigned_at: r.text(3)?,
    })
}

pub async fn of_user(tx: &mut Tx, org: &str, user: &str) -> Result<Vec<Assignment>, StoreError> {
    let rows = tx
        .rows(
            "SELECT product, subscription_id, properties, assigned_at FROM assignments WHERE org_id = $1 AND user_id = $2 ORDER BY product",
            args![org, user],
        )
        .await?;
    rows.iter().map(assignment_from).collect()
}

/// Why applying a plan stopped: a pool had no free seat left when its guarded
/// counter was updated (another transaction took it after the plan was made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolFull {
    pub subscription: String,
    pub product: ProductCode,
}

/// Applies a plan in the caller's transaction: releases, then takes, each seat
/// through the guarded counter
/// (`consumed = consumed + 1 WHERE consumed + 1 <= quantity`), in a fixed
/// order so that concurrent transactions lock pools in the same order.
/// Service data of the families involved is kept on moves, restored on a
/// re-add within retention and marked for deletion when a family's last
/// licence goes.
pub async fn apply_plan(
    tx: &mut Tx,
    org: &str,
    user: &str,
    plan: &LicensePlan,
    catalogue: &std::collections::HashMap<ProductCode, Product>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Result<(), PoolFull>, StoreError> {
    let now_s = ts(now);
    for h in &plan.release {
        let gone = tx
            .exec(
                "DELETE FROM assignments WHERE org_id = $1 AND user_id = $2 AND product = $3 AND subscription_id = $4",
                args![org, user, h.product.as_str(), &h.subscription],
            )
            .await?;
        if gone != 1 {
            // The plan was made from a snapshot another transaction has since changed.
            return Err(StoreError::Retry(format!("assignment of {} changed concurrently", h.product)));
        }
    }
    for h in &plan.take {
        let props = serde_json::to_string(&h.properties).unwrap_or_else(|_| "{}".into());
        tx.exec(
            "INSERT INTO assignments (org_id, user_id, product, subscription_id, properties, assigned_at) VALUES ($1, $2, $3, $4, $5, $6)",
            args![org, user, h.product.as_str(), &h.subscription, props, &now_s],
        )
        .await
        .map_err(|e| match e {
            StoreError::Unique(w) => StoreError::Retry(format!("assignment of {} added concurrently ({w})", h.product)),
            other => other,
        })?;
    }
    update_service_data(tx, org, user, plan, catalogue, now).await?;

    // Counters last and in key order: on PostgreSQL the row locks they take are
    // held until commit, so keeping them short and ordered avoids deadlocks.
    let mut deltas: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for h in &plan.release {
        *deltas.entry((h.subscription.as_str(), h.product.as_str())).or_default() -= 1;
    }
    for h in &plan.take {
        *deltas.entry((h.subscription.as_str(), h.product.as_str())).or_default() += 1;
    }
    for ((sub, product), delta) in deltas {
        if delta == 0 {
            continue;
        }
        let changed = tx
            .exec(
                "UPDATE subscription_items SET consumed = consumed + $4 \
                 WHERE org_id = $1 AND subscription_id = $2 AND product = $3 AND consumed + $4 <= quantity AND consumed + $4 >= 0",
                args![org, sub, product, delta],
            )
            .await?;
        if changed != 1 {
            let product = ProductCode::parse(product).map_err(|e| StoreError::Db(e.detail))?;
            return Ok(Err(PoolFull {
                subscription: sub.to_string(),
                product,
            }));
        }
    }
    Ok(Ok(()))
}

/// Service data lives per user and family: a move keeps it, the family's last
/// removal starts its retention, a re-add within retention restores it.
async fn update_service_data(
    tx: &mut Tx,
    org: &str,
    user: &str,
    plan: &LicensePlan,
    catalogue: &std::collections::HashMap<ProductCode, Product>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let family = |code: &ProductCode| catalogue.get(code).map(|p| (p.family.clone(), p.retention_days));
    let held_families: Vec<ProductCode> = plan.result.iter().filter_map(|h| family(&h.product).map(|f| f.0)).collect();
    for h in &plan.release {
        let Some((fam, retention)) = family(&h.product) else {
            continue;
        };
        if !held_families.contains(&fam) {
            let until = ts(now + chrono::Duration::days(i64::from(retention)));
            tx.exec(
                "UPDATE service_data SET retain_until = $4, updated_at = $5 WHERE org_id = $1 AND user_id = $2 AND family = $3",
                args![org, user, fam.as_str(), until, ts(now)],
            )
            .await?;
        }
    }
    for h in &plan.take {
        let Some((fam, _)) = family(&h.product) else {
            continue;
        };
        let existing = tx
            .opt_row(
                "SELECT data, retain_until FROM service_data WHERE org_id = $1 AND user_id = $2 AND family = $3",
                args![org, user, fam.as_str()],
            )
            .await?;
        let mut data: BTreeMap<String, String> = match &existing {
            Some(r) => {
                let expired = r.opt_text(1)?.is_some_and(|until| until <= ts(now));
                if expired {
                    BTreeMap::new()
                } else {
                    serde_json::from_str(&r.text(0)?).unwrap_or_default()
                }
            }
            None => BTreeMap::new(),
        };
        for (k, v) in &h.properties {
            let key = serde_json::to_value(k)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            data.insert(key, v.clone());
        }
        let json = serde_json::to_string(&data).unwrap_or_else(|_| "{}".into());
        if existing.is_some() {
            tx.exec(
                "UPDATE service_data SET data = $4, retain_until = NULL, updated_at = $5 WHERE org_id = $1 AND user_id = $2 AND family = $3",
                args![org, user, fam.as_str(), json, ts(now)],
            )
            .await?;
        } else {
            tx.exec(
                "INSERT INTO service_data (org_id, user_id, family, data, retain_until, updated_at) VALUES ($1, $2, $3, $4, NULL, $5)",
                args![org, user, fam.as_str(), json, ts(now)],
            )
            .await?;
        }
    }
    Ok(())
}

/// Releases every seat a user holds (before deleting the user).
pub async fn release_all(tx: &mut Tx, org: &str, user: &str) -> Result<Vec<Held>, StoreError> {
    let held: Vec<Held> = of_user(tx, org, user).await?.into_iter().map(|a| a.held).collect();
    for h in &held {
        tx.exec(
            "DELETE FROM assignments WHERE org_id = $1 AND user_id = $2 AND product = $3",
            args![org, user, h.product.as_str()],
        )
        .await?;
        tx.exec(
            "UPDATE subscription_items SET consumed = consumed - 1 WHERE org_id = $1 AND subscription_id = $2 AND product = $3 AND consumed >= 1",
            args![org, &h.subscription, h.product.as_str()],
        )
        .await?;
    }
    tx.exec("DELETE FROM service_data WHERE org_id = $1 AND user_id = $2", args![org, user])
        .await?;
    Ok(held)
}

pub async fn count_in_pool(tx: &mut Tx, org: &str, sub: &str, product: &str) -> Result<i64, StoreError> {
    let r = tx
        .opt_row(
            "SELECT COUNT(*) FROM assignments WHERE org_id = $1 AND subscription_id = $2 AND product = $3",
            args![org, sub, product],
        )
        .await?;
    match r {
        Some(r) => r.int(0),
        None => Ok(0),
    }
}
