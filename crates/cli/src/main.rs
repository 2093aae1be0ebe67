//! `allot`: the one binary. See `allot --help`.

mod bench;
mod bench_bulk;
mod bench_check;
mod bench_csv;
mod bench_customers;
mod bench_planner;
mod bench_scim;
mod bench_ui;
mod bench_ui_bulk;
mod bench_users;
mod bench_webhooks;
mod demo;

/// A bulk job allocates and frees millions of short strings and rows across
/// threads; with the system allocator, malloc and free were a sixth of a
/// 100,000-user job's CPU time (`perf`, BENCHMARKS.md). Built with
/// `no_thp` (workspace Cargo.toml): with transparent huge pages, the kernel
/// zeroed 2 MB pages for memory mimalloc had just returned, 5-7% of the
/// job's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;

use clap::{Parser, Subcommand};

use allot_domain::access::Role;
use allot_server::clock::{Clock, SystemClock};
use allot_server::AppState;
use allot_store::{Store, StoreOptions};

#[derive(Parser)]
#[command(name = "allot", version, about = "Allot: licence and subscription administration server", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct DbArgs {
    /// SQLite file path (created if missing) or a postgres:// URL.
    #[arg(long, env = "ALLOT_DATABASE", default_value = "./allot.db")]
    database: String,
    /// SQLite only: commit with synchronous=NORMAL instead of FULL (faster;
    /// the last commits may be lost on power loss, the file is never corrupted).
    #[arg(long)]
    no_durable_commits: bool,
}

impl DbArgs {
    async fn open(&self) -> anyhow_lite::Result<Store> {
        let opts = StoreOptions {
            durable: !self.no_durable_commits,
            ..Default::default()
        };
        Store::open(&self.database, opts).await.map_err(|e| {
            anyhow_lite::msg(format!(
                "cannot open database {}: {}",
                self.database,
                allot_domain::Error::from(e).detail
            ))
        })
    }
}

/// Where the private keys that sign offline entitlement tokens are kept.
#[derive(clap::Args, Clone)]
struct KeyArgs {
    /// Seal the private signing keys in the database with a key derived
    /// from this secret (at least 32 characters). Prefer the environment
    /// variable: a command line is visible to other users of the machine.
    #[arg(
        long,
        env = "ALLOT_SIGNING_KEY_SECRET",
        hide_env_values = true,
        conflicts_with = "signing_key_file"
    )]
    signing_key_secret: Option<String>,
    /// Keep the private signing keys in this file instead (created with
    /// mode 0600; servers sharing a database must share it).
    #[arg(long, env = "ALLOT_SIGNING_KEY_FILE")]
    signing_key_file: Option<std::path::PathBuf>,
}

impl KeyArgs {
    fn custody(&self) -> anyhow_lite::Result<allot_server::config::KeyCustody> {
        use allot_server::config::{KeyCustody, SealingSecret};
        Ok(match (&self.signing_key_secret, &self.signing_key_file) {
            (Some(secret), None) => KeyCustody::Sealed(SealingSecret::new(secret.clone()).map_err(anyhow_lite::msg)?),
            (None, Some(path)) => KeyCustody::File(path.clone()),
            (None, None) => KeyCustody::Unset,
            (Some(_), Some(_)) => return Err(anyhow_lite::msg("give --signing-key-secret or --signing-key-file, not both")),
        })
    }
}

/// How `allot serve` (and `allot demo`) serves: every setting of
/// `allot_server::Config`, from a flag or its environment variable.
#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// Serve Prometheus metrics at /metrics on this address (not served if left out).
    #[arg(long, env = "ALLOT_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Seconds shutdown (SIGTERM, SIGINT) waits for requests in flight.
    #[arg(long, env = "ALLOT_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    shutdown_grace_secs: u64,
    /// Requests per second one API token may send (a burst of as many is allowed).
    #[arg(long, env = "ALLOT_RATE_LIMIT", default_value_t = 1_000_000.0)]
    rate_limit: f64,
    /// The largest CSV import, in bytes.
    #[arg(long, env = "ALLOT_MAX_IMPORT_BYTES", default_value_t = 256 * 1024 * 1024)]
    max_import_bytes: u64,
    /// How long an answer stored for an Idempotency-Key is replayed.
    #[arg(long, env = "ALLOT_IDEMPOTENCY_TTL_SECS", default_value_t = 24 * 3600)]
    idempotency_ttl_secs: u64,
    /// How long a key stays reserved by a request that never finished.
    #[arg(long, env = "ALLOT_IDEMPOTENCY_LEASE_SECS", default_value_t = 600)]
    idempotency_lease_secs: u64,
    /// Open connections at most (lowered to what the file limit allows).
    #[arg(long, env = "ALLOT_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Milliseconds a connection may take to send a request head (or idle between requests).
    #[arg(long, env = "ALLOT_HEADER_TIMEOUT_MS", default_value_t = 15_000)]
    header_timeout_ms: u64,
    /// Milliseconds a request body may stall.
    #[arg(long, env = "ALLOT_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    body_timeout_ms: u64,
    /// Milliseconds a claimed job stays claimed without renewal.
    #[arg(long, env = "ALLOT_JOB_LEASE_MS", default_value_t = 30_000)]
    job_lease_ms: u64,
    /// Milliseconds before a failed job run is retried (times the failures so far).
    #[arg(long, env = "ALLOT_JOB_RETRY_MS", default_value_t = 5_000)]
    job_retry_ms: u64,
    /// Milliseconds between purges of expired service data and idempotency keys.
    #[arg(long, env = "ALLOT_PURGE_INTERVAL_MS", default_value_t = 3_600_000)]
    purge_interval_ms: u64,
    /// Seconds an offline entitlement token is valid.
    #[arg(long, env = "ALLOT_OFFLINE_TOKEN_TTL_SECS", default_value_t = 24 * 3600)]
    offline_token_ttl_secs: u64,
    /// The `iss` claim of offline entitlement tokens.
    #[arg(long, env = "ALLOT_TOKEN_ISSUER", default_value = "allot")]
    token_issuer: String,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    webhooks: WebhookArgs,
}

/// How webhooks are sent.
#[derive(clap::Args, Clone)]
struct WebhookArgs {
    /// Seals the webhook endpoints' signing secrets in the database (at
    /// least 32 characters; without it, endpoints cannot be created).
    /// Prefer the environment variable.
    #[arg(long, env = "ALLOT_WEBHOOK_SEALING_SECRET", hide_env_values = true)]
    webhook_sealing_secret: Option<String>,
    /// Allow plain http:// webhook targets (https only by default).
    #[arg(long, env = "ALLOT_WEBHOOK_ALLOW_HTTP")]
    webhook_allow_http: bool,
    /// Allow webhook targets on private, loopback and link-local addresses
    /// (refused by default, also after DNS resolution).
    #[arg(long, env = "ALLOT_WEBHOOK_ALLOW_PRIVATE")]
    webhook_allow_private: bool,
    /// Multiplies the retry schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h).
    #[arg(long, env = "ALLOT_WEBHOOK_RETRY_SCALE", default_value_t = 1.0)]
    webhook_retry_scale: f64,
    /// Do not send webhooks from this process (other processes sharing the
    /// database send them).
    #[arg(long, env = "ALLOT_NO_WEBHOOK_DELIVERY")]
    no_webhook_delivery: bool,
    /// Days delivered events and their delivery log are kept.
    #[arg(long, env = "ALLOT_WEBHOOK_KEEP_DAYS", default_value_t = 7)]
    webhook_keep_days: u64,
}

impl WebhookArgs {
    fn config(&self) -> anyhow_lite::Result<allot_server::config::Webhooks> {
        if !(self.webhook_retry_scale.is_finite() && self.webhook_retry_scale > 0.0) {
            return Err(anyhow_lite::msg(format!(
                "--webhook-retry-scale must be a positive number (got {})",
                self.webhook_retry_scale
            )));
        }
        let sealing = self
            .webhook_sealing_secret
            .clone()
            .map(allot_server::config::SealingSecret::new)
            .transpose()
            .map_err(|e| anyhow_lite::msg(format!("ALLOT_WEBHOOK_SEALING_SECRET: {e}")))?;
        Ok(allot_server::config::Webhooks {
            deliver: !self.no_webhook_delivery,
            targets: allot_domain::webhooks::TargetPolicy {
                allow_http: self.webhook_allow_http,
                allow_private: self.webhook_allow_private,
            },
            sealing,
            retry_scale: self.webhook_retry_scale,
            keep_delivered: std::time::Duration::from_secs(self.webhook_keep_days.max(1) * 86_400),
            ..Default::default()
        })
    }
}

impl ServeArgs {
    /// The one configuration of the server, checked.
    fn config(&self) -> anyhow_lite::Result<allot_server::Config> {
        use std::time::Duration;
        let at_least = |name: &str, v: u64, min: u64| {
            if v < min {
                Err(anyhow_lite::msg(format!("--{name} must be at least {min} (got {v})")))
            } else {
                Ok(v)
            }
        };
        if !(self.rate_limit.is_finite() && self.rate_limit > 0.0) {
            return Err(anyhow_lite::msg(format!(
                "--rate-limit must be a positive number (got {})",
                self.rate_limit
            )));
        }
        Ok(allot_server::Config {
            limits: allot_server::Limits {
                max_import_bytes: self.max_import_bytes,
                idempotency_ttl: Duration::from_secs(at_least("idempotency-ttl-secs", self.idempotency_ttl_secs, 1)?),
                idempotency_lease: Duration::from_secs(at_least("idempotency-lease-secs", self.idempotency_lease_secs, 1)?),
                max_replay_bytes: allot_server::Limits::default().max_replay_bytes,
                connections: allot_server::serve::ConnectionLimits {
                    max_connections: at_least("max-connections", self.max_connections as u64, 1)? as usize,
                    header_timeout: Duration::from_millis(at_least("header-timeout-ms", self.header_timeout_ms, 100)?),
                    body_timeout: Duration::from_millis(at_least("body-timeout-ms", self.body_timeout_ms, 100)?),
                },
            },
            jobs: allot_server::config::JobTimings {
                lease: Duration::from_millis(at_least("job-lease-ms", self.job_lease_ms, 100)?),
                retry: Duration::from_millis(at_least("job-retry-ms", self.job_retry_ms, 10)?),
            },
            purge_interval: Duration::from_millis(at_least("purge-interval-ms", self.purge_interval_ms, 100)?),
            rate_limit: allot_server::config::RateLimit {
                per_second: self.rate_limit,
                burst: self.rate_limit.max(1.0),
            },
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            offline_tokens: allot_server::config::OfflineTokens {
                ttl: Duration::from_secs(at_least("offline-token-ttl-secs", self.offline_token_ttl_secs, 60)?),
                issuer: self.token_issuer.clone(),
                keys: self.keys.custody()?,
            },
            webhooks: self.webhooks.config()?,
            ..allot_server::Config::default()
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (migrates the database first). SIGTERM or SIGINT
    /// stops it gracefully: requests in flight finish, job leases are given
    /// back, the database is closed; then it exits 0.
    Serve {
        #[command(flatten)]
        db: DbArgs,
        /// Address and port to listen on.
        #[arg(long, env = "ALLOT_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Administrative tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Create a demo database (catalogue, 2 partners, 40 customers, ~2,000
    /// users with licences) and serve it; prints the URL and an admin token.
    Demo {
        /// Demo database; seeded only if it holds no catalogue yet.
        #[arg(long, default_value = "./allot-demo.db")]
        database: String,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// The catalogue as one JSON document.
    Catalogue {
        #[command(subcommand)]
        command: CatalogueCommand,
    },
    /// Print the OpenAPI document of this build's HTTP API (the repository
    /// keeps it as openapi.json: `allot openapi > openapi.json`).
    Openapi,
    /// Measure Allot against a baseline in the same run (see BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Subcommand)]
enum CatalogueCommand {
    /// Apply a catalogue document ({"products": [...]}, as PUT
    /// /api/v1/catalogue takes it): checked as a whole, then applied in one
    /// transaction. Prints what was created, changed and left alone.
    Apply {
        #[command(flatten)]
        db: DbArgs,
        /// The JSON file.
        file: std::path::PathBuf,
        /// Only say what would change.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an API token; prints it alone on the last line (shown once,
    /// stored only as a hash).
    CreateToken {
        #[command(flatten)]
        db: DbArgs,
        /// provider_admin, partner_admin, partner_sales, partner_helpdesk,
        /// org_super_admin, org_admin, org_user_admin, org_support, org_read_only
        #[arg(long)]
        role: String,
        /// The partner a partner_* token is bound to.
        #[arg(long)]
        partner: Option<String>,
        /// The org an org_* token is bound to.
        #[arg(long)]
        org: Option<String>,
        /// A note saying what the token is for.
        #[arg(long)]
        label: Option<String>,
    },
    /// Create a console admin account (the first provider admin, say);
    /// prints the account's id on the last line. The password comes from
    /// standard input (--password-stdin) or ALLOT_ADMIN_PASSWORD, never
    /// from the command line, where other users of the machine can read it.
    CreateAdmin {
        #[command(flatten)]
        db: DbArgs,
        /// The email the admin signs in with.
        #[arg(long)]
        email: String,
        /// provider_admin, partner_admin, ..., org_read_only (as for tokens).
        #[arg(long)]
        role: String,
        /// The partner a partner_* admin is bound to.
        #[arg(long)]
        partner: Option<String>,
        /// The org an org_* admin is bound to.
        #[arg(long)]
        org: Option<String>,
        /// The name shown in the console (the email if not given).
        #[arg(long)]
        name: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Revoke an API token by its id (tok_...): it stops working at once.
    RevokeToken {
        #[command(flatten)]
        db: DbArgs,
        /// The token's id, as listed by GET /api/v1/tokens (not its secret).
        #[arg(long)]
        id: String,
    },
    /// Rebuild SQLite's index for searching users from the users table (run
    /// it after a VACUUM, which may renumber the rows the index names).
    /// PostgreSQL's is an ordinary index: nothing to do.
    RebuildSearchIndex {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Make a new key sign offline entitlement tokens from now on. The old
    /// key stays published in /.well-known/jwks.json until the last token
    /// it signed has expired. Give the same key settings as `allot serve`.
    RotateSigningKey {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Check invariants: every pool's consumed count equals its assignment rows.
    Check {
        #[command(flatten)]
        db: DbArgs,
    },
}

/// A tiny error type for the binary: a message for the operator.
mod anyhow_lite {
    pub struct Error(pub String);
    pub type Result<T> = std::result::Result<T, Error>;
    pub fn msg(s: impl Into<String>) -> Error {
        Error(s.into())
    }
    impl<E: std::fmt::Display> From<E> for Error {
        fn from(e: E) -> Self {
            Error(e.to_string())
        }
    }
}

fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("ALLOT_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in log files.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server gracefully");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}

/// Serves until SIGTERM or SIGINT, with the metrics on their own address
/// when one is given.
pub(crate) async fn serve_until_signal(
    app: AppState,
    listener: tokio::net::TcpListener,
    metrics_listen: Option<&str>,
) -> anyhow_lite::Result<()> {
    let metrics = match metrics_listen {
        Some(addr) => {
            let l = bind(addr).await?;
            println!("Metrics at http://{}/metrics", l.local_addr()?);
            Some(tokio::spawn(allot_server::serve_metrics(app.clone(), l)))
        }
        None => None,
    };
    allot_server::serve(app, listener, shutdown_signal()).await?;
    if let Some(m) = metrics {
        m.abort();
    }
    Ok(())
}

pub(crate) async fn bind(listen: &str) -> anyhow_lite::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow_lite::msg(format!("cannot listen on {listen}: {e}")))
}

async fn run(cli: Cli) -> anyhow_lite::Result<()> {
    match cli.command {
        Command::Serve { db, listen, serve } => {
            let config = serve.config()?;
            let store = db.open().await?;
            let listener = bind(&listen).await?;
            println!("Allot is listening on http://{} (database {})", listener.local_addr()?, db.database);
            let app = AppState::new(store.clone(), Arc::new(SystemClock), config);
            serve_until_signal(app, listener, serve.metrics_listen.as_deref()).await?;
            store.close().await;
            println!("Allot stopped");
        }
        Command::Migrate { db } => {
            // Closed, not dropped: a process that leaves cleanly tells the
            // servers on the database so (see the store's `presence.rs`).
            db.open().await?.close().await;
            println!("database {} is up to date", db.database);
        }
        Command::Admin {
            command:
                AdminCommand::CreateToken {
                    db,
                    role,
                    partner,
                    org,
                    label,
                },
        } => {
            let role = Role::parse(&role)
                .ok_or_else(|| anyhow_lite::msg(format!("unknown role {role:?}; see allot admin create-token --help")))?;
            let store = db.open().await?;
            let token = allot_server::auth::create_token(
                &store,
                role,
                partner.as_deref(),
                org.as_deref(),
                label.as_deref(),
                SystemClock.now(),
            )
            .await;
            store.close().await;
            let token = token.map_err(|e| anyhow_lite::msg(e.detail))?;
            eprintln!("Created a {} token. It is shown only now; store it safely.", role.as_str());
            println!("{token}");
        }
        Command::Admin {
            command:
                AdminCommand::CreateAdmin {
                    db,
                    email,
                    role,
                    partner,
                    org,
                    name,
                    password_stdin,
                },
        } => {
            let role = Role::parse(&role)
                .ok_or_else(|| anyhow_lite::msg(format!("unknown role {role:?}; see allot admin create-admin --help")))?;
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                line.trim_end_matches(['\r', '\n']).to_string()
            } else {
                // Read here, in main, like every other setting.
                std::env::var("ALLOT_ADMIN_PASSWORD").map_err(|_| {
                    anyhow_lite::msg("give the password on standard input with --password-stdin, or in ALLOT_ADMIN_PASSWORD")
                })?
            };
            let store = db.open().await?;
            let spec = allot_server::app::admins::AdminSpec {
                email: &email,
                display_name: name.as_deref(),
                role,
                partner: partner.as_deref(),
                org: org.as_deref(),
            };
            let made = allot_server::app::admins::create_admin_as_operator(&store, &spec, &password, SystemClock.now()).await;
            store.close().await;
            let admin = made.map_err(|e| anyhow_lite::msg(e.detail))?;
            eprintln!("Created the {} account {}.", admin.role.as_str(), admin.email);
            println!("{}", admin.id);
        }
        Command::Admin {
            command: AdminCommand::RevokeToken { db, id },
        } => {
            let store = db.open().await?;
            let revoked = allot_server::app::tokens::revoke_as_operator(&store, &id, SystemClock.now())
                .await
                .map_err(|e| anyhow_lite::msg(e.detail))?;
            store.close().await;
            if !revoked {
                return Err(anyhow_lite::msg(format!("no live token has the id {id:?}")));
            }
            println!("revoked token {id}");
        }
        Command::Admin {
            command: AdminCommand::RebuildSearchIndex { db },
        } => {
            let store = db.open().await?;
            let n = async {
                let mut tx = store.begin().await?;
                let n = allot_store::users::rebuild_search_index(&mut tx).await?;
                tx.commit().await?;
                Ok::<_, allot_store::StoreError>(n)
            }
            .await;
            store.close().await;
            let n = n.map_err(|e| anyhow_lite::msg(format!("{e:?}")))?;
            println!("indexed {n} users for search");
        }
        Command::Admin {
            command: AdminCommand::Check { db },
        } => {
            let store = db.open().await?;
            let bad = async {
                let mut tx = store.begin_read().await?;
                allot_store::subscriptions::counter_mismatches(&mut tx).await
            }
            .await;
            store.close().await;
            let bad = bad.map_err(allot_domain::Error::from)?;
            if bad.is_empty() {
                println!("ok: every pool's consumed count equals its assignments");
            } else {
                for (org, sub, product, consumed, held) in &bad {
                    println!("MISMATCH org {org} subscription {sub} product {product}: consumed {consumed}, assignments {held}");
                }
                return Err(anyhow_lite::msg(format!("{} pools disagree with their assignments", bad.len())));
            }
        }
        Command::Admin {
            command: AdminCommand::RotateSigningKey { db, keys },
        } => {
            let custody = keys.custody()?;
            if custody == allot_server::config::KeyCustody::Unset {
                return Err(anyhow_lite::msg(
                    "name where the keys are kept: ALLOT_SIGNING_KEY_SECRET or ALLOT_SIGNING_KEY_FILE, as for allot serve",
                ));
            }
            let store = db.open().await?;
            let rotated = allot_server::app::signing::rotate_signing_key(&store, &custody, SystemClock.now()).await;
            store.close().await;
            let rotated = rotated.map_err(|e| anyhow_lite::msg(e.detail))?;
            match (&rotated.old_kid, &rotated.old_published_until) {
                (Some(old), Some(until)) => eprintln!("Retired {old}; it stays in the JWKS until {until}."),
                (Some(old), None) => eprintln!("Retired {old}; it signed no token and leaves the JWKS now."),
                (None, _) => eprintln!("There was no signing key yet."),
            }
            println!("{}", rotated.new_kid);
        }
        Command::Demo { database, listen, serve } => {
            let mut config = serve.config()?;
            // The demo signs offline tokens out of the box, with a key file
            // beside its database.
            if config.offline_tokens.keys == allot_server::config::KeyCustody::Unset {
                config.offline_tokens.keys = allot_server::config::KeyCustody::File(format!("{database}.signing-keys").into());
            }
            // And it seals webhook secrets out of the box, with a secret
            // kept beside its database (made on the first start).
            if config.webhooks.sealing.is_none() {
                config.webhooks.sealing = Some(demo::webhook_sealing_secret(&database)?);
            }
            demo::run(&database, &listen, config, serve.metrics_listen.as_deref()).await?
        }
        Command::Bench { command } => bench::run(command).await?,
        Command::Catalogue {
            command: CatalogueCommand::Apply { db, file, dry_run },
        } => {
            let text = std::fs::read_to_string(&file).map_err(|e| anyhow_lite::msg(format!("cannot read {}: {e}", file.display())))?;
            let doc: allot_server::app::catalogue::CatalogueDocument = serde_json::from_str(&text)
                .map_err(|e| anyhow_lite::msg(format!("{} is not a catalogue document: {e}", file.display())))?;
            let store = db.open().await?;
            let app = AppState::new(store.clone(), Arc::new(SystemClock), allot_server::Config::default());
            let caller = allot_server::app::Caller::operator("cli");
            let result = allot_server::app::catalogue::apply_catalogue(&app, &caller, doc, dry_run).await;
            store.close().await;
            let changes = result.map_err(|e| {
                let reasons: Vec<String> = e
                    .violations
                    .iter()
                    .map(|v| format!("  {}: {}", v.field.as_deref().unwrap_or("-"), v.message))
                    .collect();
                anyhow_lite::msg(format!("{}\n{}", e.detail, reasons.join("\n")))
            })?;
            let list = |v: &[allot_domain::types::ProductCode]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
                }
            };
            let verb = if dry_run { "would be " } else { "" };
            println!("{verb}created: {}", list(&changes.created));
            println!("{verb}changed: {}", list(&changes.changed));
            println!("left alone: {}", list(&changes.left_alone));
        }
        Command::Openapi => {
            let doc = allot_server::openapi()
                .to_pretty_json()
                .map_err(|e| anyhow_lite::msg(format!("cannot write the document: {e}")))?;
            println!("{doc}");
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(anyhow_lite::Error(msg)) = rt.block_on(run(cli)) {
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
