//! Everything a deployment may set, in one value built once by the binary
//! (from its flags and environment) and passed down. Nothing below `main`
//! reads the environment: a test builds the `Config` it wants.

use std::time::Duration;

use crate::serve::ConnectionLimits;

/// Sizes and times the server works within.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub limits: Limits,
    pub jobs: JobTimings,
    /// How often the worker purges expired service data and idempotency keys.
    pub purge_interval: Duration,
    /// Requests per second one token may send (see [`RateLimit`]).
    pub rate_limit: RateLimit,
    /// How long shutdown waits for requests in flight before it closes them.
    pub shutdown_grace: Duration,
    /// How long a cached token or catalogue may lag a change made by another
    /// server on the same database (changes made by this one apply at once).
    pub cache_sync: Duration,
    /// How long a console session lasts without being used.
    pub session_idle: Duration,
    /// Offline entitlement tokens: their lifetime and signing keys.
    pub offline_tokens: OfflineTokens,
    /// How often the licence usage that checks recorded in memory is
    /// written (what a `kill -9` can lose).
    pub usage_flush: Duration,
    /// Webhook delivery: which targets are allowed, how secrets are
    /// sealed, the retry schedule's scale and the sender's limits.
    pub webhooks: Webhooks,
}

/// How webhooks are delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhooks {
    /// Whether this process sends webhooks (a process that only serves the
    /// API leaves them to the others sharing its database).
    pub deliver: bool,
    /// `http://` targets and private addresses (both refused by default).
    pub targets: allot_domain::webhooks::TargetPolicy,
    /// Seals the endpoints' signing secrets in the database; without it,
    /// creating an endpoint answers 503 naming the setting.
    pub sealing: Option<SealingSecret>,
    /// Multiplies the retry schedule (1.0 in production; tests shorten it).
    pub retry_scale: f64,
    /// How long one POST may take.
    pub timeout: Duration,
    /// POSTs in flight to one endpoint at most.
    pub per_endpoint: usize,
    /// How often the sender looks for work other processes left (this
    /// process's own commits wake it at once).
    pub poll: Duration,
    /// How long delivered events and their log are kept.
    pub keep_delivered: Duration,
    /// An endpoint whose every attempt failed for this long is disabled.
    pub disable_after: Duration,
    /// How long the old secret keeps signing beside the new one after a rotation.
    pub rotation_overlap: Duration,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            deliver: true,
            targets: Default::default(),
            sealing: None,
            retry_scale: 1.0,
            timeout: Duration::from_secs(15),
            per_endpoint: 16,
            poll: Duration::from_millis(250),
            keep_delivered: Duration::from_secs(7 * 24 * 3600),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            rotation_overlap: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            jobs: JobTimings::default(),
            purge_interval: Duration::from_secs(3600),
            rate_limit: RateLimit::default(),
            shutdown_grace: Duration::from_secs(30),
            cache_sync: Duration::from_millis(500),
            session_idle: Duration::from_secs(2 * 3600),
            offline_tokens: OfflineTokens::default(),
            usage_flush: Duration::from_secs(2),
            webhooks: Webhooks::default(),
        }
    }
}

impl Config {
    /// The defaults with other limits (tests).
    pub fn with_limits(limits: Limits) -> Config {
        Config {
            limits,
            ..Config::default()
        }
    }
}

/// Sizes the server accepts, set per deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest CSV import, in bytes (413 above it).
    pub max_import_bytes: u64,
    /// How long an answer stored for an `Idempotency-Key` is replayed.
    pub idempotency_ttl: Duration,
    /// How long a key stays reserved for a request that neither finished
    /// nor released it (its server died); then another request may take it.
    pub idempotency_lease: Duration,
    /// The largest answer kept for replays; a larger one is not stored.
    pub max_replay_bytes: usize,
    /// Open connections and how long they may idle (see [`crate::serve`]).
    pub connections: ConnectionLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A million users with a dozen item columns is about 100 MB.
            max_import_bytes: 256 * 1024 * 1024,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            idempotency_lease: Duration::from_secs(600),
            // Every answer of a mutating call is far smaller (refusals list
            // at most 100 errors).
            max_replay_bytes: 1024 * 1024,
            connections: ConnectionLimits::default(),
        }
    }
}

/// How the job worker holds and retries jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobTimings {
    /// How long a claimed job stays claimed without its worker renewing it;
    /// then another server's worker takes it over.
    pub lease: Duration,
    /// The delay before a failed run is retried, times the failures so far.
    pub retry: Duration,
}

impl Default for JobTimings {
    fn default() -> Self {
        JobTimings {
            lease: Duration::from_secs(30),
            // A job is given up after about 50 s of failing runs.
            retry: Duration::from_secs(5),
        }
    }
}

/// A token bucket per API token: `per_second` requests on average, up to
/// `burst` at once. Beyond it the answer is 429 `rate_limited` with
/// `Retry-After`. The default is far above what one server answers, so only
/// a deployment that sets it meets it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: 1_000_000.0,
            burst: 1_000_000.0,
        }
    }
}

/// Offline entitlement tokens (EdDSA JWTs a product can check without
/// asking Allot): how long one lives, the issuer it names, and where the
/// private signing keys are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct OfflineTokens {
    pub ttl: Duration,
    /// The `iss` claim.
    pub issuer: String,
    pub keys: KeyCustody,
}

impl Default for OfflineTokens {
    fn default() -> Self {
        OfflineTokens {
            ttl: Duration::from_secs(24 * 3600),
            issuer: "allot".to_string(),
            keys: KeyCustody::Unset,
        }
    }
}

/// Where the private signing keys are kept. The public keys are always in
/// the database (every server publishes the same JWKS).
#[derive(Debug, Clone, PartialEq)]
pub enum KeyCustody {
    /// None configured: a token request answers 503 naming the settings.
    Unset,
    /// In the database, sealed (ChaCha20-Poly1305) with a key derived from
    /// this secret.
    Sealed(SealingSecret),
    /// In this file, one `kid key` line per key (created with mode 0600
    /// when missing). Servers sharing a database must share the file.
    File(std::path::PathBuf),
}

/// The secret that seals private keys in the database. Its `Debug` never
/// shows it, so a logged configuration cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealingSecret(String);

impl SealingSecret {
    /// The shortest secret taken: 32 characters (`openssl rand -base64 32`
    /// gives 44).
    pub const MIN_LEN: usize = 32;

    pub fn new(secret: String) -> Result<SealingSecret, String> {
        if secret.chars().count() < Self::MIN_LEN {
            return Err(format!(
                "the signing key secret must be at least {} characters (try `openssl rand -base64 32`)",
                Self::MIN_LEN
            ));
        }
        Ok(SealingSecret(secret))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SealingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingSecret(<hidden>)")
    }
}
