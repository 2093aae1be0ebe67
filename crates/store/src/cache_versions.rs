//! Versions of what servers cache. A change to API tokens, the catalogue
//! or an organisation bumps its version in the same transaction; every server polls
//! [`all`] (a tiny read) and drops a cache whose version moved, so a revoked
//! token or a changed product takes effect on every server sharing the
//! database within the polling interval, and at once on the server that made
//! the change (it drops its own cache after the commit).

use crate::args;
use crate::db::{StoreError, Tx};

/// A cache kept by servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cached {
    Tokens,
    Catalogue,
    Orgs,
}

impl Cached {
    pub fn as_str(&self) -> &'static str {
        match self {
            Cached::Tokens => "tokens",
            Cached::Catalogue => "catalogue",
            Cached::Orgs => "orgs",
        }
    }
}

/// Marks `what` changed, inside the changing transaction.
pub async fn bump(tx: &mut Tx, what: Cached) -> Result<(), StoreError> {
    if what == Cached::Catalogue {
        tx.note(|c| c.catalogue());
    }
    tx.exec(
        "UPDATE cache_versions SET version = version + 1 WHERE name = $1",
        args![what.as_str()],
    )
    .await?;
    Ok(())
}

/// The versions of every cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Versions {
    pub tokens: i64,
    pub catalogue: i64,
    pub orgs: i64,
}

/// The current versions.
pub async fn all(tx: &mut Tx) -> Result<Versions, StoreError> {
    let rows = tx.rows("SELECT name, version FROM cache_versions", &[]).await?;
    let mut v = Versions::default();
    for r in &rows {
        match r.text("name")?.as_str() {
            "tokens" => v.tokens = r.int("version")?,
            "catalogue" => v.catalogue = r.int("version")?,
            "orgs" => v.orgs = r.int("version")?,
            _ => {}
        }
    }
    Ok(v)
}
