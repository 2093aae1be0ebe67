//! The use-case layer: one function per thing a caller can do
//! (`change_user_licenses`, `create_license_job`, `cancel_subscription`,
//! `import_users_csv`, ...). Each takes the application ([`App`]: store,
//! clock, configuration), the caller ([`Caller`]: principal and request
//! id) and a typed input, and answers a typed output or the domain error.
//! Scope and role checks, transactions and their retries, the audit record
//! and job queueing happen here, once.
//!
//! Everything that lets people or products in hangs off this layer: the
//! JSON API (`crate::api`), the worker (`crate::worker`), and the console
//! and integrations to come. This layer knows nothing of HTTP: no axum type
//! appears here (a test reads these sources to keep it so).
//!
//! The input and output types are also the wire types of the JSON API: they
//! derive `serde` and `utoipa::ToSchema`, so the OpenAPI document describes
//! exactly what these functions take and give.

pub mod access;
pub mod admins;
pub mod audit;
pub mod cache;
pub mod catalogue;
pub mod customers;
pub mod entitlements;
pub mod etag;
pub mod facts;
pub mod group_licenses;
pub mod jobs;
pub mod licenses;
pub mod manage;
pub mod paging;
pub mod purchases;
pub mod queues;
pub mod retention;
pub mod scim;
pub(crate) mod sealing;
pub mod sheets;
pub mod signing;
pub mod subscriptions;
pub mod templates;
pub mod tenants;
pub mod tokens;
pub mod users;
pub mod webhooks;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use allot_store::Store;

use crate::clock::Clock;
use crate::config::Config;

pub use access::Caller;

/// A one-line free text as `allot_domain::types::check_text` accepts it
/// (before trimming): no control or text-direction characters, and not
/// blank. For the OpenAPI document.
pub const TEXT_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$";

/// Deserializes a whole number that JSON may write as `2` or `2.0` (JSON
/// Schema's `integer` allows both); `2.5` is refused.
pub(crate) mod whole {
    use serde::{Deserialize, Deserializer};

    fn of<'de, D: Deserializer<'de>>(v: serde_json::Number) -> Result<i64, D::Error> {
        if let Some(i) = v.as_i64() {
            return Ok(i);
        }
        match v.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
            _ => Err(serde::de::Error::custom(format!("expected a whole number, not {v}"))),
        }
    }

    pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        of::<D>(serde_json::Number::deserialize(d)?)
    }

    pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?.map(of::<D>).transpose()
    }

    pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let v = of::<D>(serde_json::Number::deserialize(d)?)?;
        u32::try_from(v).map_err(|_| serde::de::Error::custom(format!("expected a whole number from 0 to {}, not {v}", u32::MAX)))
    }

    pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        match Option::<serde_json::Number>::deserialize(d)? {
            None => Ok(None),
            Some(n) => {
                let v = of::<D>(n)?;
                u32::try_from(v)
                    .map(Some)
                    .map_err(|_| serde::de::Error::custom(format!("expected a whole number from 0 to {}, not {v}", u32::MAX)))
            }
        }
    }
}

/// Text that may be empty but holds no control or text-direction characters.
pub const ANY_TEXT_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$";

/// The application: what every use case runs against. A handle: every
/// request clones it (axum's state, the middleware), so it is one `Arc`
/// around [`AppParts`] rather than a dozen of them (cloning and dropping
/// the dozen cost 6% of a server answering one user's GET, measured with
/// `perf` under `allot bench users`).
#[derive(Clone)]
pub struct App(Arc<AppParts>);

impl std::ops::Deref for App {
    type Target = AppParts;
    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// What an [`App`] holds.
pub struct AppParts {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<Config>,
    /// Wakes this process's job worker when a job is queued here.
    pub(crate) jobs_queued: Arc<Notify>,
    /// Whether this process's job worker is running a job now (the webhook
    /// sender lets it write first, see `crate::worker::webhooks`).
    pub(crate) job_running: Arc<AtomicBool>,
    /// What the HTTP layer counts (requests, latencies), read by `/metrics`.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Per-token request budgets.
    pub(crate) rate: Arc<crate::ratelimit::RateLimiter>,
    /// Set once shutdown has begun (`/readyz` then answers 503).
    shutting_down: Arc<AtomicBool>,
    /// Tokens and the catalogue, kept exact (see [`cache`]).
    pub(crate) caches: Arc<cache::Caches>,
    /// Failed console sign-ins, to slow guessing down.
    pub(crate) sign_ins: Arc<admins::SignInThrottle>,
    /// Who holds what, in memory, for entitlement checks (kept exact by
    /// `entitlements::follow::keep_exact`, which `serve` runs).
    pub entitlements: Arc<entitlements::Entitlements>,
    /// The key that signs offline entitlement tokens (see [`signing`]).
    pub(crate) signer: Arc<signing::Signer>,
}

impl App {
    pub fn new(store: Store, clock: Arc<dyn Clock>, config: Config) -> App {
        let rate = crate::ratelimit::RateLimiter::new(config.rate_limit);
        let entitlements = entitlements::Entitlements::new(&store);
        App(Arc::new(AppParts {
            entitlements,
            signer: Arc::new(signing::Signer::default()),
            store,
            clock,
            config: Arc::new(config),
            jobs_queued: Arc::new(Notify::new()),
            job_running: Arc::new(AtomicBool::new(false)),
            metrics: Arc::new(crate::metrics::Metrics::default()),
            rate: Arc::new(rate),
            shutting_down: Arc::new(AtomicBool::new(false)),
            caches: Arc::new(cache::Caches::default()),
            sign_ins: Arc::new(admins::SignInThrottle::default()),
        }))
    }

    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Tells the worker that a job waits.
    pub(crate) fn job_queued(&self) {
        self.jobs_queued.notify_one();
    }
}
