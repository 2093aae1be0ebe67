//! Reads for the entitlement index: who holds what, with the facts a check
//! needs (user status, subscription facts, item provisioning), for every
//! org at start-up, or for named users and orgs after a change (see
//! `crate::changes`). Two plain queries per read (rows, then licences),
//! joined in memory.

use std::collections::HashMap;

use allot_domain::status::{ProvisioningStatus, SubscriptionFacts};
use allot_domain::types::UserStatus;

use crate::args;
use crate::db::{StoreError, Tx, Val};

/// A user as a check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub org: String,
    pub id: String,
    /// Lower-cased: users are named by email case-insensitively.
    pub email: String,
    pub status: UserStatus,
    /// (product, subscription) of every licence the user holds.
    pub licenses: Vec<(String, String)>,
    /// The user's licence version (orders notes; see `crate::changes`).
    pub version: i64,
}

/// A subscription as a check needs it, with its items' provisioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRow {
    pub org: String,
    pub id: String,
    pub facts: SubscriptionFacts,
    /// (product, provisioning status) of each item.
    pub items: Vec<(String, ProvisioningStatus)>,
}

/// Which users to read.
pub enum Users<'a> {
    /// Every user of one org.
    Org(&'a str),
    /// Some users of one org (a few thousand at most per call).
    Some(&'a str, &'a [String]),
    /// At most `limit` users after (org, id) in (org, id) order, with
    /// their licences: a start-up read in pages, so that the rows of a
    /// million users are never in memory at once.
    Page { after: (&'a str, &'a str), limit: i64 },
}

/// The users asked for, with their licences. A named user that does not
/// exist (deleted) is simply absent.
pub async fn users(tx: &mut Tx, which: Users<'_>) -> Result<Vec<UserRow>, StoreError> {
    let (user_rows, license_rows) = match which {
        Users::Org(org) => (
            tx.rows(
                "SELECT u.org_id, u.id, u.email_normalized, u.status, v.version FROM users u LEFT JOIN license_versions v ON v.org_id = u.org_id AND v.user_id = u.id WHERE u.org_id = $1",
                args![org],
            )
            .await?,
            tx.rows(
                "SELECT org_id, user_id, product, subscription_id FROM assignments WHERE org_id = $1",
                args![org],
            )
            .await?,
        ),
        Users::Page { after: (org, id), limit } => {
            let users = tx
                .rows(
                    "SELECT u.org_id, u.id, u.email_normalized, u.status, v.version FROM users u \
                     LEFT JOIN license_versions v ON v.org_id = u.org_id AND v.user_id = u.id \
                     WHERE (u.org_id, u.id) > ($1, $2) ORDER BY u.org_id, u.id LIMIT $3",
                    args![org, id, limit],
                )
                .await?;
            let licenses = match users.last() {
                None => Vec::new(),
                Some(last) => {
                    let (last_org, last_id) = (last.text("org_id")?, last.text("id")?);
                    // The page's range of the assignments' primary key.
                    tx.rows(
                        "SELECT org_id, user_id, product, subscription_id FROM assignments \
                         WHERE (org_id, user_id) > ($1, $2) AND (org_id, user_id) <= ($3, $4)",
                        args![org, id, last_org.as_str(), last_id.as_str()],
                    )
                    .await?
                }
            };
            (users, licenses)
        }
        Users::Some(_, []) => return Ok(Vec::new()),
        Users::Some(org, ids) => {
            let users_sql = format!(
                "SELECT u.org_id, u.id, u.email_normalized, u.status, v.version FROM users u \
                 LEFT JOIN license_versions v ON v.org_id = u.org_id AND v.user_id = u.id WHERE u.org_id = $1 AND {}",
                tx.any_of("u.id", 2)
            );
            let licenses_sql = format!(
                "SELECT org_id, user_id, product, subscription_id FROM assignments WHERE org_id = $1 AND {}",
                tx.any_of("user_id", 2)
            );
            let vals = [Val::from(org), Val::texts(ids)];
            (tx.rows(&users_sql, &vals).await?, tx.rows(&licenses_sql, &vals).await?)
        }
    };
    let mut out = Vec::with_capacity(user_rows.len());
    let mut at: HashMap<(String, String), usize> = HashMap::with_capacity(user_rows.len());
    for r in &user_rows {
        let org = r.text("org_id")?;
        let id = r.text("id")?;
        at.insert((org.clone(), id.clone()), out.len());
        out.push(UserRow {
            org,
            id,
            email: r.text("email_normalized")?,
            status: crate::users::status_of(&r.text("status")?)?,
            licenses: Vec::new(),
            version: if r.cell_is_null("version") { 0 } else { r.int("version")? },
        });
    }
    for r in &license_rows {
        let key = (r.text("org_id")?, r.text("user_id")?);
        if let Some(&i) = at.get(&key) {
            out[i].licenses.push((r.text("product")?, r.text("subscription_id")?));
        }
    }
    Ok(out)
}

/// The subscriptions of one org, or of every org (`None`), with their items.
pub async fn subscriptions(tx: &mut Tx, org: Option<&str>) -> Result<Vec<SubscriptionRow>, StoreError> {
    let cols = crate::subscriptions::SUB_COLUMNS;
    let (subs, items) = match org {
        None => (
            tx.rows(&format!("SELECT {cols} FROM subscriptions"), &[]).await?,
            tx.rows(
                "SELECT org_id, subscription_id, product, provisioning_status FROM subscription_items",
                &[],
            )
            .await?,
        ),
        Some(org) => (
            tx.rows(&format!("SELECT {cols} FROM subscriptions WHERE org_id = $1"), args![org])
                .await?,
            tx.rows(
                "SELECT org_id, subscription_id, product, provisioning_status FROM subscription_items WHERE org_id = $1",
                args![org],
            )
            .await?,
        ),
    };
    let mut out = Vec::with_capacity(subs.len());
    let mut at: HashMap<(String, String), usize> = HashMap::with_capacity(subs.len());
    for r in &subs {
        let s = crate::subscriptions::sub_from(r)?;
        at.insert((s.org.clone(), s.id.clone()), out.len());
        out.push(SubscriptionRow {
            org: s.org,
            id: s.id,
            facts: s.facts,
            items: Vec::new(),
        });
    }
    for r in &items {
        let key = (r.text("org_id")?, r.text("subscription_id")?);
        if let Some(&i) = at.get(&key) {
            out[i].items.push((
                r.text("product")?,
                crate::subscriptions::provisioning(&r.text("provisioning_status")?)?,
            ));
        }
    }
    Ok(out)
}

/// Every org's id.
pub async fn org_ids(tx: &mut Tx) -> Result<Vec<String>, StoreError> {
    tx.rows("SELECT id FROM orgs", &[]).await?.iter().map(|r| r.text("id")).collect()
}
