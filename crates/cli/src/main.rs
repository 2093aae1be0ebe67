//! `allot`: the one binary. See `allot --help`.

mod bench;
mod bench_bulk;
mod bench_csv;
mod bench_customers;
mod bench_planner;
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
        Store::open(&self.database, opts)
            .await
            .map_err(|e| anyhow_lite::msg(format!("cannot open database {}: {}", self.database, allot_domain::Error::from(e))))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (migrates the database first).
    Serve {
        #[command(flatten)]
        db: DbArgs,
        /// Address and port to listen on.
        #[arg(long, env = "ALLOT_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
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
    },
    /// Measure Allot against a baseline in the same run (see BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
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
    /// Revoke an API token by its id (tok_...): it stops working at once.
    RevokeToken {
        #[command(flatten)]
        db: DbArgs,
        /// The token's id, as listed by GET /api/v1/tokens (not its secret).
        #[arg(long)]
        id: String,
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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

pub(crate) async fn bind(listen: &str) -> anyhow_lite::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow_lite::msg(format!("cannot listen on {listen}: {e}")))
}

async fn run(cli: Cli) -> anyhow_lite::Result<()> {
    match cli.command {
        Command::Serve { db, listen } => {
            let store = db.open().await?;
            let listener = bind(&listen).await?;
            println!("Allot is listening on http://{} (database {})", listener.local_addr()?, db.database);
            let state = AppState {
                store,
                clock: Arc::new(SystemClock),
                limits: allot_server::Limits::from_env(),
            };
            allot_server::serve(state, listener, shutdown_signal()).await?;
        }
        Command::Migrate { db } => {
            db.open().await?;
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
            .await
            .map_err(|e| anyhow_lite::msg(e.detail))?;
            eprintln!("Created a {} token. It is shown only now; store it safely.", role.as_str());
            println!("{token}");
        }
        Command::Admin {
            command: AdminCommand::RevokeToken { db, id },
        } => {
            let store = db.open().await?;
            let revoked = allot_server::api::tokens::revoke_as_operator(&store, &id, SystemClock.now())
                .await
                .map_err(|e| anyhow_lite::msg(e.detail))?;
            store.close().await;
            if !revoked {
                return Err(anyhow_lite::msg(format!("no live token has the id {id:?}")));
            }
            println!("revoked token {id}");
        }
        Command::Admin {
            command: AdminCommand::Check { db },
        } => {
            let store = db.open().await?;
            let mut tx = store.begin_read().await.map_err(allot_domain::Error::from)?;
            let bad = allot_store::subscriptions::counter_mismatches(&mut tx)
                .await
                .map_err(allot_domain::Error::from)?;
            if bad.is_empty() {
                println!("ok: every pool's consumed count equals its assignments");
            } else {
                for (org, sub, product, consumed, held) in &bad {
                    println!("MISMATCH org {org} subscription {sub} product {product}: consumed {consumed}, assignments {held}");
                }
                return Err(anyhow_lite::msg(format!("{} pools disagree with their assignments", bad.len())));
            }
        }
        Command::Demo { database, listen } => demo::run(&database, &listen).await?,
        Command::Bench { command } => bench::run(command).await?,
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
