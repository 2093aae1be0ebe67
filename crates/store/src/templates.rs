//! Licence templates of an org.

use allot_domain::templates::TemplateLicense;

use crate::db::{Row, StoreError, Tx};
use crate::{args, ts};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub org: String,
    pub id: String,
    pub name: String,
    /// None: the whole org; else the members of this group.
    pub group: Option<String>,
    pub enabled: bool,
    pub licenses: Vec<TemplateLicense>,
    pub created_at: String,
    pub updated_at: String,
}

const COLUMNS: &str = "org_id, id, name, group_id, enabled, licenses, created_at, updated_at";

fn template_from(r: &Row) -> Result<Template, StoreError> {
    Ok(Template {
        org: r.text("org_id")?,
        id: r.text("id")?,
        name: r.text("name")?,
        group: r.opt_text("group_id")?,
        enabled: r.bool("enabled")?,
        licenses: serde_json::from_str(&r.text("licenses")?)
            .map_err(|e| StoreError::Db(format!("a stored template is unreadable: {e}")))?,
        created_at: r.text("created_at")?,
        updated_at: r.text("updated_at")?,
    })
}

fn licenses_json(t: &Template) -> String {
    // A list of plain structs of strings: serializing it cannot fail.
    serde_json::to_string(&t.licenses).unwrap_or_else(|_| "[]".into())
}

/// The org's templates, oldest first.
pub async fn list(tx: &mut Tx, org: &str) -> Result<Vec<Template>, StoreError> {
    tx.rows(
        &format!("SELECT {COLUMNS} FROM license_templates WHERE org_id = $1 ORDER BY created_at, id"),
        args![org],
    )
    .await?
    .iter()
    .map(template_from)
    .collect()
}

pub async fn get(tx: &mut Tx, org: &str, id: &str) -> Result<Option<Template>, StoreError> {
    tx.opt_row(
        &format!("SELECT {COLUMNS} FROM license_templates WHERE org_id = $1 AND id = $2"),
        args![org, id],
    )
    .await?
    .map(|r| template_from(&r))
    .transpose()
}

pub async fn insert(tx: &mut Tx, t: &Template) -> Result<(), StoreError> {
    tx.exec(
        &format!("INSERT INTO license_templates ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
        args![
            &t.org,
            &t.id,
            &t.name,
            t.group.as_deref(),
            t.enabled,
            licenses_json(t),
            &t.created_at,
            &t.updated_at
        ],
    )
    .await?;
    Ok(())
}

pub async fn update(tx: &mut Tx, t: &Template, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE license_templates SET name = $3, group_id = $4, enabled = $5, licenses = $6, updated_at = $7 WHERE org_id = $1 AND id = $2",
        args![&t.org, &t.id, &t.name, t.group.as_deref(), t.enabled, licenses_json(t), ts(now)],
    )
    .await?;
    Ok(())
}

pub async fn delete(tx: &mut Tx, org: &str, id: &str) -> Result<u64, StoreError> {
    tx.exec("DELETE FROM license_templates WHERE org_id = $1 AND id = $2", args![org, id])
        .await
}

/// The template a new user gets: an enabled template of one of the user's
/// groups wins over the org's; among several, the oldest.
pub fn choose<'a>(templates: &'a [Template], groups: &[String]) -> Option<&'a Template> {
    let enabled = || templates.iter().filter(|t| t.enabled);
    enabled()
        .find(|t| t.group.as_ref().is_some_and(|g| groups.contains(g)))
        .or_else(|| enabled().find(|t| t.group.is_none()))
}
