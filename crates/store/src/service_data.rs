//! A user's service data per product family (phone number, extension,
//! voicemail settings, ...): read for display, and purged once the retention
//! that started when the family's last licence went has run out. Writing it
//! is part of applying a licence plan (`licenses::apply_plans`).

use std::collections::BTreeMap;

use crate::db::{StoreError, Tx};
use crate::{args, ts};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyData {
    pub family: String,
    pub data: BTreeMap<String, String>,
    /// Set while the family is held by no licence: the data is deleted after this.
    pub retain_until: Option<String>,
}

/// A user's stored service data, by family; retained data past its time
/// (not yet purged) is left out, as it will never be restored.
pub async fn of_user(tx: &mut Tx, org: &str, user: &str, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<FamilyData>, StoreError> {
    let now_s = ts(now);
    let rows = tx
        .rows(
            "SELECT family, data, retain_until FROM service_data WHERE org_id = $1 AND user_id = $2 ORDER BY family",
            args![org, user],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let retain_until = r.opt_text("retain_until")?;
        if retain_until.as_ref().is_some_and(|u| *u <= now_s) {
            continue;
        }
        let data = serde_json::from_str(&r.text("data")?).map_err(|e| StoreError::Db(format!("stored service data is unreadable: {e}")))?;
        out.push(FamilyData {
            family: r.text("family")?,
            data,
            retain_until,
        });
    }
    Ok(out)
}

/// One purged row: whose data of which family.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    pub org: String,
    pub user: String,
    pub family: String,
}

/// Deletes up to `limit` rows of service data whose retention ended at or
/// before `now`, returning what went (the caller records it in the audit
/// log). One statement: a licence re-added meanwhile has cleared
/// `retain_until`, so its row no longer matches.
pub async fn purge_expired(tx: &mut Tx, now: chrono::DateTime<chrono::Utc>, limit: i64) -> Result<Vec<Purged>, StoreError> {
    let now_s = ts(now);
    let gone = tx
        .rows(
            "DELETE FROM service_data WHERE retain_until IS NOT NULL AND retain_until <= $1 \
             AND (org_id, user_id, family) IN (SELECT org_id, user_id, family FROM service_data \
                 WHERE retain_until IS NOT NULL AND retain_until <= $1 ORDER BY org_id, user_id, family LIMIT $2) \
             RETURNING org_id, user_id, family",
            args![&now_s, limit],
        )
        .await?;
    gone.iter()
        .map(|r| {
            Ok(Purged {
                org: r.text("org_id")?,
                user: r.text("user_id")?,
                family: r.text("family")?,
            })
        })
        .collect()
}
