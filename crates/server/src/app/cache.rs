//! What every request or change would otherwise read again: a token's
//! principal, the catalogue, and organisations. Kept exact:
//!
//! - A change made through this server (a token revoked, a product created
//!   or changed, an org changed) drops the cache right after its commit.
//! - Every such change also bumps a version in the database in its own
//!   transaction (`allot_store::cache_versions`); [`sync_caches`] polls the
//!   versions every `Config::cache_sync` (0.5 s) and drops a cache whose
//!   version moved, so a change made by another server sharing the database
//!   (or by `allot admin revoke-token`) takes effect here within a second.
//! - A token's expiry is checked against the clock on every use.
//!
//! Only live tokens are cached (an unknown token is looked up each time), so
//! the cache holds at most the tokens that exist.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

use allot_domain::access::{Action, Principal};
use allot_domain::catalogue::Product;
use allot_domain::types::ProductCode;
use allot_domain::Error;
use allot_store::cache_versions::{self, Versions};
use allot_store::tenants::Org;

use super::{App, Caller};

/// A live token as last read.
#[derive(Debug, Clone)]
pub struct CachedToken {
    pub principal: Principal,
    pub expires_at: Option<DateTime<Utc>>,
    /// When its use was last written down (RFC 3339), to write it again
    /// only every few minutes.
    pub last_used_at: Option<String>,
}

/// A cached value with its generation, bumped whenever the value is
/// dropped: a value read from the database before a drop must not be cached
/// after it (it may be the very value the drop was for).
#[derive(Default)]
struct Generational<T> {
    value: RwLock<T>,
    generation: AtomicU64,
}

// A poisoned lock only means a thread panicked while holding it; the values
// are still consistent (every write replaces or clears whole entries).
impl<T: Default> Generational<T> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, T> {
        self.value.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, T> {
        self.value.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation to pass to [`Generational::remember`]: taken before
    /// the value is read from the database.
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Stores what was read at `generation` with `put`, unless the value
    /// was dropped since.
    fn remember(&self, generation: u64, put: impl FnOnce(&mut T)) {
        let mut value = self.write();
        if self.generation() == generation {
            put(&mut value);
        }
    }

    fn clear(&self) {
        let mut value = self.write();
        self.generation.fetch_add(1, Ordering::SeqCst);
        *value = T::default();
    }
}

#[derive(Default)]
pub struct Caches {
    /// Live tokens by hash.
    tokens: Generational<HashMap<String, CachedToken>>,
    catalogue: Generational<Option<Arc<HashMap<ProductCode, Product>>>>,
    /// Organisations by id (their partner decides who may see them).
    orgs: Generational<HashMap<String, Org>>,
    /// The versions last seen.
    seen: RwLock<Option<Versions>>,
}

impl Caches {
    /// The cached principal of a token (by its hash), if it is cached and
    /// has not expired at `now`.
    pub fn token(&self, hash: &str, now: DateTime<Utc>) -> Option<CachedToken> {
        let cached = self.tokens.read().get(hash).cloned()?;
        if cached.expires_at.is_some_and(|t| t <= now) {
            self.tokens.write().remove(hash);
            return None;
        }
        Some(cached)
    }

    /// The generation to pass to [`Caches::remember_token`]: taken before
    /// the token is read from the database.
    pub fn tokens_generation(&self) -> u64 {
        self.tokens.generation()
    }

    /// Caches a token read at `generation`, unless the cache was dropped since.
    pub fn remember_token(&self, hash: String, token: CachedToken, generation: u64) {
        self.tokens.remember(generation, |tokens| {
            tokens.insert(hash, token);
        });
    }

    /// Notes that a token's use was written down.
    pub fn note_token_use(&self, hash: &str, at: String) {
        if let Some(t) = self.tokens.write().get_mut(hash) {
            t.last_used_at = Some(at);
        }
    }

    /// Drops every cached token (one was revoked).
    pub fn tokens_changed(&self) {
        self.tokens.clear();
    }

    pub fn catalogue(&self) -> Option<Arc<HashMap<ProductCode, Product>>> {
        self.catalogue.read().clone()
    }

    /// Drops the catalogue (a product was created or changed).
    pub fn catalogue_changed(&self) {
        self.catalogue.clear();
    }

    /// Drops every cached organisation (one was changed).
    pub fn orgs_changed(&self) {
        self.orgs.clear();
    }

    /// Drops everything (the versions cannot be read: better slow than stale).
    fn drop_all(&self) {
        self.tokens_changed();
        self.catalogue_changed();
        self.orgs_changed();
    }

    /// Drops what another server changed since the last look.
    fn apply_versions(&self, now: Versions) {
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        match *seen {
            Some(before) => {
                if now.tokens != before.tokens {
                    self.tokens_changed();
                }
                if now.catalogue != before.catalogue {
                    self.catalogue_changed();
                }
                if now.orgs != before.orgs {
                    self.orgs_changed();
                }
            }
            // First look: whatever was cached before it may predate it.
            None => self.drop_all(),
        }
        *seen = Some(now);
    }
}

impl App {
    /// The whole catalogue, from the cache or read (and cached) now.
    pub async fn catalogue(&self) -> Result<Arc<HashMap<ProductCode, Product>>, Error> {
        if let Some(c) = self.caches.catalogue() {
            return Ok(c);
        }
        let generation = self.caches.catalogue.generation();
        let mut rd = self.store.read_conn().await?;
        let c = Arc::new(allot_store::catalogue::all(&mut rd).await?);
        self.caches.catalogue.remember(generation, |cached| *cached = Some(c.clone()));
        Ok(c)
    }

    /// An organisation the caller may see, checked as `Caller::org` does,
    /// read through the cache: for reads (writes read the org inside their
    /// transaction).
    pub async fn visible_org(&self, caller: &Caller, org_id: &str, action: Action) -> Result<Org, Error> {
        let cached = self.caches.orgs.read().get(org_id).cloned();
        let org = match cached {
            Some(o) => Some(o),
            None => {
                let generation = self.caches.orgs.generation();
                let mut rd = self.store.read_conn().await?;
                let found = allot_store::tenants::get_org(&mut rd, org_id).await?;
                if let Some(o) = &found {
                    self.caches.orgs.remember(generation, |orgs| {
                        orgs.insert(o.id.clone(), o.clone());
                    });
                }
                found
            }
        };
        caller.check_org(org, org_id, action)
    }

    /// Reads the cache versions once and drops what moved.
    pub async fn sync_caches_once(&self) -> Result<(), Error> {
        let mut rd = self.store.read_conn().await?;
        let versions = cache_versions::all(&mut rd).await?;
        drop(rd);
        self.caches.apply_versions(versions);
        Ok(())
    }
}

/// Polls the cache versions until the task is dropped.
pub async fn sync_caches(app: App) {
    let every = app.config.cache_sync.max(Duration::from_millis(10));
    loop {
        if let Err(e) = app.sync_caches_once().await {
            // Stale caches are worse than slow requests: drop them.
            app.caches.drop_all();
            tracing::warn!(error = %e, "cannot read the cache versions; caches dropped");
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_read_before_a_drop_is_not_cached_after_it() {
        let cache: Generational<HashMap<String, u32>> = Generational::default();
        let before = cache.generation();
        cache.clear();
        cache.remember(before, |m| {
            m.insert("stale".into(), 1);
        });
        assert!(cache.read().is_empty(), "a value read before the drop was cached");
        let now = cache.generation();
        cache.remember(now, |m| {
            m.insert("fresh".into(), 2);
        });
        assert_eq!(cache.read().get("fresh"), Some(&2));
        cache.clear();
        assert!(cache.read().is_empty(), "clear keeps values");
    }
}
