//! Products of the catalogue (provider-wide, not tenant-owned).

use std::collections::HashMap;

use allot_domain::catalogue::Product;
use allot_domain::types::ProductCode;
use allot_domain::Error;

use crate::db::{Row, StoreError, Tx, Val};
use crate::{args, ts};

const COLUMNS: &str = "code, name, family, features, rules, properties, retention_days";

fn json_col<T: serde::de::DeserializeOwned>(row: &Row, i: &str) -> Result<T, StoreError> {
    serde_json::from_str(&row.text(i)?).map_err(|e| StoreError::Db(format!("stored JSON in column {i} is unreadable: {e}")))
}

fn product_from(row: &Row) -> Result<Product, StoreError> {
    let code = ProductCode::parse(&row.text("code")?).map_err(|e| StoreError::Db(e.detail))?;
    let family = ProductCode::parse(&row.text("family")?).map_err(|e| StoreError::Db(e.detail))?;
    Ok(Product {
        code,
        name: row.text("name")?,
        family,
        features: json_col(row, "features")?,
        rules: json_col(row, "rules")?,
        properties: json_col(row, "properties")?,
        retention_days: u32::try_from(row.int("retention_days")?).unwrap_or(0),
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Serializing plain data structs (strings, vectors, maps with string keys) cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

pub async fn list(tx: &mut Tx, after: Option<&str>, limit: i64) -> Result<Vec<Product>, StoreError> {
    let rows = tx
        .rows(
            &format!("SELECT {COLUMNS} FROM products WHERE code > $1 ORDER BY code LIMIT $2"),
            args![after.unwrap_or(""), limit],
        )
        .await?;
    rows.iter().map(product_from).collect()
}

pub async fn get(tx: &mut Tx, code: &str) -> Result<Option<Product>, StoreError> {
    tx.opt_row(&format!("SELECT {COLUMNS} FROM products WHERE code = $1"), args![code])
        .await?
        .as_ref()
        .map(product_from)
        .transpose()
}

pub async fn all(tx: &mut Tx) -> Result<HashMap<ProductCode, Product>, StoreError> {
    let rows = tx.rows(&format!("SELECT {COLUMNS} FROM products"), &[]).await?;
    rows.iter().map(|r| product_from(r).map(|p| (p.code.clone(), p))).collect()
}

/// `(condition, values)` for `org_id = $1 AND <column> IN <ids>`: the ids
/// are one list parameter, `$2` (see [`Tx::any_of`]).
pub(crate) fn in_list(tx: &Tx, column: &str, org: &str, ids: &[String]) -> (String, Vec<Val>) {
    (tx.any_of(column, 2), vec![Val::from(org), Val::texts(ids)])
}

pub async fn by_codes(tx: &mut Tx, codes: &[&ProductCode]) -> Result<HashMap<ProductCode, Product>, StoreError> {
    if codes.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!("SELECT {COLUMNS} FROM products WHERE {}", tx.any_of("code", 1));
    let codes: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
    let rows = tx.rows(&sql, &[Val::texts(&codes)]).await?;
    rows.iter().map(|r| product_from(r).map(|p| (p.code.clone(), p))).collect()
}

/// The products named and, transitively, every product they require: what
/// the planner needs to add required products and to check removals.
pub async fn with_requirements(tx: &mut Tx, codes: &[&ProductCode]) -> Result<HashMap<ProductCode, Product>, StoreError> {
    let mut found = by_codes(tx, codes).await?;
    loop {
        let missing: Vec<ProductCode> = found
            .values()
            .flat_map(|p| p.rules.requires.iter())
            .filter(|c| !found.contains_key(*c))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            return Ok(found);
        }
        let refs: Vec<&ProductCode> = missing.iter().collect();
        let more = by_codes(tx, &refs).await?;
        if more.is_empty() {
            // Named but absent: the catalogue validation prevents it; the planner reports it.
            return Ok(found);
        }
        found.extend(more);
    }
}

pub async fn insert(tx: &mut Tx, p: &Product, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    let r = tx
        .exec(
            &format!("INSERT INTO products ({COLUMNS}, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)"),
            args![
                p.code.as_str(),
                p.name.trim(),
                p.family.as_str(),
                to_json(&p.features),
                to_json(&p.rules),
                to_json(&p.properties),
                i64::from(p.retention_days),
                ts(now)
            ],
        )
        .await;
    match r {
        Err(StoreError::Unique(_)) => Err(Error::new(
            allot_domain::Code::Conflict,
            format!("A product with code {} already exists.", p.code),
        )
        .into()),
        Err(e) => Err(e),
        // Servers that cached the catalogue read it again.
        Ok(_) => crate::cache_versions::bump(tx, crate::cache_versions::Cached::Catalogue).await,
    }
}

pub async fn update(tx: &mut Tx, p: &Product, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE products SET name = $2, family = $3, features = $4, rules = $5, properties = $6, retention_days = $7, updated_at = $8 WHERE code = $1",
        args![
            p.code.as_str(),
            p.name.trim(),
            p.family.as_str(),
            to_json(&p.features),
            to_json(&p.rules),
            to_json(&p.properties),
            i64::from(p.retention_days),
            ts(now)
        ],
    )
    .await?;
    crate::cache_versions::bump(tx, crate::cache_versions::Cached::Catalogue).await
}
