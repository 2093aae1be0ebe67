//! The users a console session has selected in an org. The selection is
//! kept here, not in the browser, so that it survives paging and can hold
//! every user that matches a filter; a row names the session by the hash
//! its cookie's secret has in `admin_sessions`, and goes when the session
//! ends.

use crate::db::{StoreError, Tx};
use crate::users::{User, UserFilter};
use crate::{args, Val};

/// Adds the users with these ids (those of the org; others are skipped).
pub async fn add(tx: &mut Tx, session: &str, org: &str, users: &[String]) -> Result<(), StoreError> {
    if users.is_empty() {
        return Ok(());
    }
    let mut values: Vec<Val> = vec![Val::from(session), Val::from(org)];
    let marks: Vec<String> = users
        .iter()
        .map(|u| {
            values.push(Val::from(u.as_str()));
            format!("${}", values.len())
        })
        .collect();
    let conflict = "ON CONFLICT (session_hash, org_id, user_id) DO NOTHING";
    tx.exec(
        &format!(
            "INSERT INTO console_selections (session_hash, org_id, user_id) \
             SELECT $1, org_id, id FROM users WHERE org_id = $2 AND id IN ({}) {conflict}",
            marks.join(", ")
        ),
        &values,
    )
    .await?;
    Ok(())
}

/// Adds every user of the org that matches `f` (one statement, however many).
pub async fn add_matching(tx: &mut Tx, session: &str, org: &str, f: &UserFilter) -> Result<(), StoreError> {
    let search = crate::users::plan_search(tx, f).await?;
    let (clauses, values) = crate::users::filter_clauses(f, search.as_ref(), vec![Val::from(session), Val::from(org)]);
    tx.exec(
        &format!(
            "INSERT INTO console_selections (session_hash, org_id, user_id) \
             SELECT $1, org_id, id FROM users WHERE {}org_id = $2{clauses} \
             ON CONFLICT (session_hash, org_id, user_id) DO NOTHING",
            crate::users::fts_first(search.as_ref())
        ),
        &values,
    )
    .await?;
    Ok(())
}

/// Takes the users with these ids out of the selection.
pub async fn remove(tx: &mut Tx, session: &str, org: &str, users: &[String]) -> Result<(), StoreError> {
    if users.is_empty() {
        return Ok(());
    }
    let mut values: Vec<Val> = vec![Val::from(session), Val::from(org)];
    let marks: Vec<String> = users
        .iter()
        .map(|u| {
            values.push(Val::from(u.as_str()));
            format!("${}", values.len())
        })
        .collect();
    tx.exec(
        &format!(
            "DELETE FROM console_selections WHERE session_hash = $1 AND org_id = $2 AND user_id IN ({})",
            marks.join(", ")
        ),
        &values,
    )
    .await?;
    Ok(())
}

/// Empties the session's selection in the org.
pub async fn clear(tx: &mut Tx, session: &str, org: &str) -> Result<(), StoreError> {
    tx.exec(
        "DELETE FROM console_selections WHERE session_hash = $1 AND org_id = $2",
        args![session, org],
    )
    .await?;
    Ok(())
}

pub async fn count(tx: &mut Tx, session: &str, org: &str) -> Result<i64, StoreError> {
    Ok(tx
        .opt_row(
            "SELECT COUNT(*) AS n FROM console_selections WHERE session_hash = $1 AND org_id = $2",
            args![session, org],
        )
        .await?
        .map(|r| r.int("n"))
        .transpose()?
        .unwrap_or(0))
}

/// Which of these ids are selected.
pub async fn which(tx: &mut Tx, session: &str, org: &str, users: &[String]) -> Result<Vec<String>, StoreError> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let mut values: Vec<Val> = vec![Val::from(session), Val::from(org)];
    let marks: Vec<String> = users
        .iter()
        .map(|u| {
            values.push(Val::from(u.as_str()));
            format!("${}", values.len())
        })
        .collect();
    let rows = tx
        .rows(
            &format!(
                "SELECT user_id FROM console_selections WHERE session_hash = $1 AND org_id = $2 AND user_id IN ({})",
                marks.join(", ")
            ),
            &values,
        )
        .await?;
    rows.iter().map(|r| r.text("user_id")).collect()
}

/// A page of the selected users in id order, after `after`: one
/// statement for the page, one for its users' sites and groups.
pub async fn list(tx: &mut Tx, session: &str, org: &str, after: &str, limit: i64) -> Result<Vec<User>, StoreError> {
    let columns = crate::users::COLUMNS
        .split(", ")
        .map(|c| format!("u.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = tx
        .rows(
            &format!(
                "SELECT {columns} FROM console_selections s JOIN users u ON u.org_id = s.org_id AND u.id = s.user_id \
                 WHERE s.session_hash = $1 AND s.org_id = $2 AND s.user_id > $3 ORDER BY s.user_id LIMIT $4"
            ),
            args![session, org, after, limit],
        )
        .await?;
    let mut users: Vec<User> = rows.iter().map(crate::users::user_from).collect::<Result<_, _>>()?;
    crate::users::load_links(tx, org, &mut users).await?;
    Ok(users)
}

/// Every selected user's id, in id order (what a bulk change is given).
pub async fn all_ids(tx: &mut Tx, session: &str, org: &str) -> Result<Vec<String>, StoreError> {
    let rows = tx
        .rows(
            "SELECT user_id FROM console_selections WHERE session_hash = $1 AND org_id = $2 ORDER BY user_id",
            args![session, org],
        )
        .await?;
    rows.iter().map(|r| r.text("user_id")).collect()
}

/// The first `limit` selected users by email: (id, email), for the boxes
/// at the top of Manage licenses.
pub async fn first_by_email(tx: &mut Tx, session: &str, org: &str, limit: i64) -> Result<Vec<(String, String)>, StoreError> {
    let rows = tx
        .rows(
            // CROSS JOIN: SQLite then reads the selection first. Otherwise it
            // walks the org's whole email index (to skip the sort) and probes
            // the selection for each of its users. PostgreSQL plans it as a join.
            "SELECT u.id, u.email FROM console_selections s CROSS JOIN users u \
             WHERE s.session_hash = $1 AND s.org_id = $2 AND u.org_id = s.org_id AND u.id = s.user_id \
             ORDER BY u.email_normalized, u.id LIMIT $3",
            args![session, org, limit],
        )
        .await?;
    rows.iter().map(|r| Ok((r.text("id")?, r.text("email")?))).collect()
}

/// Per subscription item, how many of the selected users hold it: one
/// grouped read, whatever the selection's size.
pub async fn holder_counts(tx: &mut Tx, session: &str, org: &str) -> Result<Vec<(String, String, i64)>, StoreError> {
    // The selection first, then each selected user's few rows by the
    // primary key. SQLite, left to itself, takes the covering pool index
    // instead and reads the org's every assignment for each selected user;
    // `INDEXED BY` names the key (a SQLite clause: PostgreSQL plans the
    // join from its statistics).
    let assignments = match tx.backend() {
        crate::Backend::Sqlite => "assignments a INDEXED BY sqlite_autoindex_assignments_1",
        crate::Backend::Postgres => "assignments a",
    };
    let rows = tx
        .rows(
            &format!(
                "SELECT a.subscription_id, a.product, COUNT(*) AS n FROM console_selections s CROSS JOIN {assignments} \
                 WHERE s.session_hash = $1 AND s.org_id = $2 AND a.org_id = s.org_id AND a.user_id = s.user_id \
                 GROUP BY a.subscription_id, a.product"
            ),
            args![session, org],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.text("subscription_id")?, r.text("product")?, r.int("n")?)))
        .collect()
}

/// The first `limit` selected users (by id) that hold `product` on `subscription`.
pub async fn holders_of(
    tx: &mut Tx,
    session: &str,
    org: &str,
    product: &str,
    subscription: &str,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let rows = tx
        .rows(
            "SELECT a.user_id FROM assignments a JOIN console_selections s \
               ON s.session_hash = $1 AND s.org_id = a.org_id AND s.user_id = a.user_id \
             WHERE a.org_id = $2 AND a.subscription_id = $3 AND a.product = $4 ORDER BY a.user_id LIMIT $5",
            args![session, org, subscription, product, limit],
        )
        .await?;
    rows.iter().map(|r| r.text("user_id")).collect()
}

/// How many of the selected users hold `product` on `subscription`: read
/// from the pool's side (its holders, each looked up in the selection),
/// so a product nobody holds yet costs nothing, however many are selected.
pub async fn pool_holder_count(tx: &mut Tx, session: &str, org: &str, product: &str, subscription: &str) -> Result<i64, StoreError> {
    Ok(tx
        .opt_row(
            "SELECT COUNT(*) AS n FROM assignments a JOIN console_selections s \
               ON s.session_hash = $1 AND s.org_id = a.org_id AND s.user_id = a.user_id \
             WHERE a.org_id = $2 AND a.subscription_id = $3 AND a.product = $4",
            args![session, org, subscription, product],
        )
        .await?
        .map(|r| r.int("n"))
        .transpose()?
        .unwrap_or(0))
}
