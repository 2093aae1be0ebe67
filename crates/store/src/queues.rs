//! Contact-centre queues and their members. A queue bills one
//! product for each member: a member holds that product's licence, and the
//! licence cannot be removed while the user is a member of any such queue.

use std::collections::HashMap;

use serde::Serialize;

use allot_domain::planner::QueueHold;
use allot_domain::types::ProductCode;

use crate::db::{Row, StoreError, Tx, Val};
use crate::{args, ts};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Queue {
    pub id: String,
    pub name: String,
    /// `call`, `outbound` or `inbox`.
    pub kind: String,
    /// The product each member is billed for.
    pub product: String,
    pub created_at: String,
}

const COLUMNS: &str = "id, name, kind, product, created_at";

fn from(r: &Row) -> Result<Queue, StoreError> {
    Ok(Queue {
        id: r.text("id")?,
        name: r.text("name")?,
        kind: r.text("kind")?,
        product: r.text("product")?,
        created_at: r.text("created_at")?,
    })
}

pub async fn insert(tx: &mut Tx, org: &str, q: &Queue) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO queues (org_id, id, name, kind, product, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        args![org, &q.id, &q.name, &q.kind, &q.product, &q.created_at],
    )
    .await?;
    Ok(())
}

pub async fn list(tx: &mut Tx, org: &str) -> Result<Vec<Queue>, StoreError> {
    tx.rows(
        &format!("SELECT {COLUMNS} FROM queues WHERE org_id = $1 ORDER BY name, id"),
        args![org],
    )
    .await?
    .iter()
    .map(from)
    .collect()
}

pub async fn get(tx: &mut Tx, org: &str, id: &str) -> Result<Option<Queue>, StoreError> {
    tx.opt_row(
        &format!("SELECT {COLUMNS} FROM queues WHERE org_id = $1 AND id = $2"),
        args![org, id],
    )
    .await?
    .map(|r| from(&r))
    .transpose()
}

/// Deletes a queue and its memberships.
pub async fn delete(tx: &mut Tx, org: &str, id: &str) -> Result<u64, StoreError> {
    tx.exec("DELETE FROM queue_members WHERE org_id = $1 AND queue_id = $2", args![org, id])
        .await?;
    tx.exec("DELETE FROM queues WHERE org_id = $1 AND id = $2", args![org, id]).await
}

pub async fn members(tx: &mut Tx, org: &str, queue: &str) -> Result<Vec<String>, StoreError> {
    tx.rows(
        "SELECT user_id FROM queue_members WHERE org_id = $1 AND queue_id = $2 ORDER BY user_id",
        args![org, queue],
    )
    .await?
    .iter()
    .map(|r| r.text("user_id"))
    .collect()
}

/// Adds a member; false when the user already was one.
pub async fn add_member(tx: &mut Tx, org: &str, queue: &str, user: &str, now: chrono::DateTime<chrono::Utc>) -> Result<bool, StoreError> {
    match tx
        .exec(
            "INSERT INTO queue_members (org_id, queue_id, user_id, added_at) VALUES ($1, $2, $3, $4)",
            args![org, queue, user, ts(now)],
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::Unique(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

pub async fn remove_member(tx: &mut Tx, org: &str, queue: &str, user: &str) -> Result<bool, StoreError> {
    Ok(tx
        .exec(
            "DELETE FROM queue_members WHERE org_id = $1 AND queue_id = $2 AND user_id = $3",
            args![org, queue, user],
        )
        .await?
        == 1)
}

/// The queues a user is a member of.
pub async fn of_user(tx: &mut Tx, org: &str, user: &str) -> Result<Vec<Queue>, StoreError> {
    tx.rows(
        "SELECT q.id, q.name, q.kind, q.product, q.created_at FROM queue_members m JOIN queues q ON q.org_id = m.org_id AND q.id = m.queue_id \
         WHERE m.org_id = $1 AND m.user_id = $2 ORDER BY q.name, q.id",
        args![org, user],
    )
    .await?
    .iter()
    .map(from)
    .collect()
}

/// Removes a user from every queue; returns the queues left.
pub async fn remove_from_all(tx: &mut Tx, org: &str, user: &str) -> Result<Vec<Queue>, StoreError> {
    let queues = of_user(tx, org, user).await?;
    tx.exec("DELETE FROM queue_members WHERE org_id = $1 AND user_id = $2", args![org, user])
        .await?;
    Ok(queues)
}

/// For the planner: each user's queue memberships and the products they bill.
pub async fn billed_of(tx: &mut Tx, org: &str, users: &[String]) -> Result<HashMap<String, Vec<QueueHold>>, StoreError> {
    let mut out: HashMap<String, Vec<QueueHold>> = HashMap::new();
    if users.is_empty() {
        return Ok(out);
    }
    let rows = tx
        .rows(
            &format!(
                "SELECT m.user_id, q.product, q.name FROM queue_members m JOIN queues q ON q.org_id = m.org_id AND q.id = m.queue_id \
                 WHERE m.org_id = $1 AND {} ORDER BY q.name",
                tx.any_of("m.user_id", 2)
            ),
            &[Val::from(org), Val::texts(users)],
        )
        .await?;
    for r in &rows {
        out.entry(r.text("user_id")?).or_default().push(QueueHold {
            product: ProductCode::parse(&r.text("product")?).map_err(|e| StoreError::Db(e.detail))?,
            queue: r.text("name")?,
        });
    }
    Ok(out)
}
