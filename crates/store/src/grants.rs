//! Which licence template gave a user which licence (`license_grants`), so
//! that leaving a group takes back what its template gave and nothing else.
//! A licence with no grant was given directly and stays. The rows go with
//! the licence when it is removed (see `licenses::apply_seat_changes`), with
//! the user and with the template; a move between subscriptions keeps them.

use crate::args;
use crate::db::{StoreError, Tx, Val};

/// One licence a template gave a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub product: String,
    pub template: String,
}

/// Records that `template` gives the user each of `products` (a grant
/// already there stays as it is).
pub async fn record(tx: &mut Tx, org: &str, user: &str, template: &str, products: &[&str]) -> Result<(), StoreError> {
    for product in products {
        tx.exec(
            "INSERT INTO license_grants (org_id, user_id, product, template_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (org_id, user_id, product, template_id) DO NOTHING",
            args![org, user, *product, template],
        )
        .await?;
    }
    Ok(())
}

/// The grants of a user's licences.
pub async fn of_user(tx: &mut Tx, org: &str, user: &str) -> Result<Vec<Grant>, StoreError> {
    let rows = tx
        .rows(
            "SELECT product, template_id FROM license_grants WHERE org_id = $1 AND user_id = $2 ORDER BY product, template_id",
            args![org, user],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Grant {
                product: r.text("product")?,
                template: r.text("template_id")?,
            })
        })
        .collect()
}

/// Takes back one template's grants of a user's licences (the licences
/// themselves are the caller's to remove).
pub async fn revoke(tx: &mut Tx, org: &str, user: &str, templates: &[String]) -> Result<(), StoreError> {
    if templates.is_empty() {
        return Ok(());
    }
    tx.exec(
        &format!(
            "DELETE FROM license_grants WHERE org_id = $1 AND user_id = $2 AND {}",
            tx.any_of("template_id", 3)
        ),
        &[Val::from(org), Val::from(user), Val::texts(templates)],
    )
    .await?;
    Ok(())
}

/// The grants of a product's licence of these users go (the licence went).
pub async fn drop_for(tx: &mut Tx, org: &str, product: &str, users: &[String]) -> Result<(), StoreError> {
    tx.exec(
        &format!(
            "DELETE FROM license_grants WHERE org_id = $1 AND product = $2 AND {}",
            tx.any_of("user_id", 3)
        ),
        &[Val::from(org), Val::from(product), Val::texts(users)],
    )
    .await?;
    Ok(())
}

/// Records that `template` gives each (user, product), in multi-row
/// INSERTs (a template applied to many users by a job), if the template
/// still exists. The pairs are licences the template has just added, so
/// none has a grant of it yet.
pub async fn record_many(tx: &mut Tx, org: &str, template: &str, pairs: &[(&str, &str)]) -> Result<(), StoreError> {
    if pairs.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<Val>> = pairs.iter().map(|(u, p)| vec![Val::from(*u), Val::from(*p)]).collect();
    let shared = [Val::from(org), Val::from(template)];
    // Under the template's existence: one deleted since the job began
    // leaves its licences as given directly, as a deletion does.
    let prepared = crate::PreparedRows::with_shared_select(
        tx.backend(),
        "license_grants (org_id, template_id, user_id, product)",
        &shared,
        &rows,
        &[],
        Some("EXISTS (SELECT 1 FROM license_templates t WHERE t.org_id = {0} AND t.id = {1})"),
    );
    tx.insert_prepared(prepared).await
}
