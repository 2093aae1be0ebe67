//! Partners, organisations, sites and groups.

use serde::Serialize;

use allot_domain::{Code, Error};

use crate::db::{new_id, Row, StoreError, Tx};
use crate::{args, ts};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partner {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub partner: Option<String>,
    pub default_usage_location: Option<String>,
    pub payment_method_on_file: bool,
    pub self_service_purchase: bool,
    /// An identity provider's deactivation (SCIM `active: false`) keeps the
    /// user's licences instead of releasing them.
    pub keep_licenses_on_deactivation: bool,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Site {
    pub id: String,
    pub url: String,
    pub attendee_accounts_enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    pub id: String,
    pub name: String,
}

fn partner_from(r: &Row) -> Result<Partner, StoreError> {
    Ok(Partner {
        id: r.text("id")?,
        name: r.text("name")?,
        created_at: r.text("created_at")?,
    })
}

pub async fn list_partners(tx: &mut Tx, only: Option<&str>, after: Option<&str>, limit: i64) -> Result<Vec<Partner>, StoreError> {
    let mut q = crate::filtered::Filtered::new(
        "SELECT id, name, created_at FROM partners WHERE id > $1",
        args![after.unwrap_or("")].to_vec(),
    );
    q.and("id = ?", only).then(" ORDER BY id LIMIT ?", limit);
    let rows = tx.rows(&q.sql, &q.args).await?;
    rows.iter().map(partner_from).collect()
}

pub async fn get_partner(tx: &mut Tx, id: &str) -> Result<Option<Partner>, StoreError> {
    tx.opt_row("SELECT id, name, created_at FROM partners WHERE id = $1", args![id])
        .await?
        .as_ref()
        .map(partner_from)
        .transpose()
}

pub async fn insert_partner(tx: &mut Tx, name: &str, now: chrono::DateTime<chrono::Utc>) -> Result<Partner, StoreError> {
    let p = Partner {
        id: new_id("ptn"),
        name: name.to_string(),
        created_at: ts(now),
    };
    tx.exec(
        "INSERT INTO partners (id, name, created_at) VALUES ($1, $2, $3)",
        args![&p.id, &p.name, &p.created_at],
    )
    .await?;
    Ok(p)
}

pub(crate) const ORG_COLUMNS: &str =
    "id, name, partner_id, default_usage_location, payment_method_on_file, self_service_purchase, keep_licenses_on_deactivation, created_at";

pub(crate) fn org_from(r: &Row) -> Result<Org, StoreError> {
    Ok(Org {
        id: r.text("id")?,
        name: r.text("name")?,
        partner: r.opt_text("partner_id")?,
        default_usage_location: r.opt_text("default_usage_location")?,
        payment_method_on_file: r.bool("payment_method_on_file")?,
        self_service_purchase: r.bool("self_service_purchase")?,
        keep_licenses_on_deactivation: r.bool("keep_licenses_on_deactivation")?,
        created_at: r.text("created_at")?,
    })
}

/// Which orgs a listing may show: all (provider), one partner's, or one org.
#[derive(Debug, Clone, Default)]
pub struct OrgScope {
    pub partner: Option<String>,
    pub org: Option<String>,
}

pub async fn list_orgs(tx: &mut Tx, scope: &OrgScope, after: Option<&str>, limit: i64) -> Result<Vec<Org>, StoreError> {
    let mut q = crate::filtered::Filtered::new(
        format!("SELECT {ORG_COLUMNS} FROM orgs WHERE id > $1"),
        args![after.unwrap_or("")].to_vec(),
    );
    q.and("partner_id = ?", scope.partner.as_deref())
        .and("id = ?", scope.org.as_deref())
        .then(" ORDER BY id LIMIT ?", limit);
    let rows = tx.rows(&q.sql, &q.args).await?;
    rows.iter().map(org_from).collect()
}

pub async fn get_org(tx: &mut Tx, id: &str) -> Result<Option<Org>, StoreError> {
    tx.opt_row(&format!("SELECT {ORG_COLUMNS} FROM orgs WHERE id = $1"), args![id])
        .await?
        .as_ref()
        .map(org_from)
        .transpose()
}

pub async fn insert_org(tx: &mut Tx, org: &Org, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    tx.exec(
        &format!("INSERT INTO orgs ({ORG_COLUMNS}, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)"),
        args![
            &org.id,
            &org.name,
            org.partner.as_deref(),
            org.default_usage_location.as_deref(),
            org.payment_method_on_file,
            org.self_service_purchase,
            org.keep_licenses_on_deactivation,
            ts(now)
        ],
    )
    .await?;
    tx.note(|c| c.subscriptions(&org.id));
    Ok(())
}

pub async fn update_org(tx: &mut Tx, org: &Org, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE orgs SET name = $2, partner_id = $3, default_usage_location = $4, payment_method_on_file = $5, self_service_purchase = $6, \
         keep_licenses_on_deactivation = $7, updated_at = $8 WHERE id = $1",
        args![
            &org.id,
            &org.name,
            org.partner.as_deref(),
            org.default_usage_location.as_deref(),
            org.payment_method_on_file,
            org.self_service_purchase,
            org.keep_licenses_on_deactivation,
            ts(now)
        ],
    )
    .await?;
    // Servers that cached the org (its partner decides who sees it) drop it.
    crate::cache_versions::bump(tx, crate::cache_versions::Cached::Orgs).await
}

fn site_from(r: &crate::Row) -> Result<Site, StoreError> {
    Ok(Site {
        id: r.text("id")?,
        url: r.text("url")?,
        attendee_accounts_enabled: r.bool("attendee_accounts_enabled")?,
    })
}

pub async fn list_sites(tx: &mut Tx, org: &str) -> Result<Vec<Site>, StoreError> {
    let rows = tx
        .rows(
            "SELECT id, url, attendee_accounts_enabled FROM sites WHERE org_id = $1 ORDER BY id",
            args![org],
        )
        .await?;
    rows.iter().map(site_from).collect()
}

/// The org's sites among `ids` (others are not the org's, or do not exist).
pub async fn sites_by_ids(tx: &mut Tx, org: &str, ids: &[&str]) -> Result<Vec<Site>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT id, url, attendee_accounts_enabled FROM sites WHERE org_id = $1 AND {}",
        tx.any_of("id", 2)
    );
    tx.rows(&sql, &[crate::Val::from(org), crate::Val::texts(ids)])
        .await?
        .iter()
        .map(site_from)
        .collect()
}

pub async fn insert_site(
    tx: &mut Tx,
    org: &str,
    url: &str,
    attendee: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Site, StoreError> {
    let site = Site {
        id: new_id("site"),
        url: url.to_string(),
        attendee_accounts_enabled: attendee,
    };
    tx.exec(
        "INSERT INTO sites (org_id, id, url, attendee_accounts_enabled, created_at) VALUES ($1, $2, $3, $4, $5)",
        args![org, &site.id, &site.url, attendee, ts(now)],
    )
    .await?;
    Ok(site)
}

pub async fn list_groups(tx: &mut Tx, org: &str) -> Result<Vec<Group>, StoreError> {
    let rows = tx
        .rows("SELECT id, name FROM org_groups WHERE org_id = $1 ORDER BY id", args![org])
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Group {
                id: r.text("id")?,
                name: r.text("name")?,
            })
        })
        .collect()
}

fn group_name_taken(e: StoreError, name: &str) -> StoreError {
    match e {
        StoreError::Unique(_) => Error::new(
            Code::Conflict,
            format!("A group named \"{name}\" already exists in this organisation."),
        )
        .into(),
        other => other,
    }
}

pub async fn insert_group(tx: &mut Tx, org: &str, name: &str, now: chrono::DateTime<chrono::Utc>) -> Result<Group, StoreError> {
    let g = Group {
        id: new_id("grp"),
        name: name.to_string(),
    };
    tx.exec(
        "INSERT INTO org_groups (org_id, id, name, created_at) VALUES ($1, $2, $3, $4)",
        args![org, &g.id, &g.name, ts(now)],
    )
    .await
    .map_err(|e| group_name_taken(e, name))?;
    Ok(g)
}

pub async fn get_group(tx: &mut Tx, org: &str, id: &str) -> Result<Option<Group>, StoreError> {
    tx.opt_row("SELECT id, name FROM org_groups WHERE org_id = $1 AND id = $2", args![org, id])
        .await?
        .map(|r| {
            Ok(Group {
                id: r.text("id")?,
                name: r.text("name")?,
            })
        })
        .transpose()
}

/// Renames a group; a name another group of the org has is a conflict.
pub async fn rename_group(tx: &mut Tx, org: &str, id: &str, name: &str, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE org_groups SET name = $3, updated_at = $4 WHERE org_id = $1 AND id = $2",
        args![org, id, name, ts(now)],
    )
    .await
    .map_err(|e| group_name_taken(e, name))?;
    Ok(())
}

/// Deletes a group, its members leaving it. Refused (conflict) while a
/// licence template is scoped to it: the template would lose its users.
pub async fn delete_group(tx: &mut Tx, org: &str, group: &str) -> Result<(), StoreError> {
    let scoped = tx
        .opt_row(
            "SELECT 1 AS one FROM license_templates WHERE org_id = $1 AND group_id = $2",
            args![org, group],
        )
        .await?
        .is_some();
    if scoped {
        return Err(Error::new(
            Code::Conflict,
            format!("A licence template is scoped to group {group}: delete the template or change its scope first."),
        )
        .into());
    }
    tx.exec("DELETE FROM group_members WHERE org_id = $1 AND group_id = $2", args![org, group])
        .await?;
    tx.exec("DELETE FROM org_groups WHERE org_id = $1 AND id = $2", args![org, group])
        .await?;
    Ok(())
}
