//! `allot bench`: Allot measured next to a baseline in the same run.
//!
//! `licenses`: single-user licence changes over HTTP from concurrent clients,
//! (a) all on one pool, (b) spread over many pools, against the same guarded
//! counter update plus insert issued straight to a fresh database of the
//! same kind with raw sqlx (no HTTP, no Allot code).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Subcommand;
use futures::future::join_all;

use allot_domain::access::Role;
use allot_domain::status::{ProvisioningStatus, SubscriptionFacts};
use allot_server::clock::{Clock, SystemClock};
use allot_server::AppState;
use allot_store::subscriptions::{Item, Subscription};
use allot_store::tenants::Org;
use allot_store::users::User;
use allot_store::{in_transaction, new_id, Store, StoreError, StoreOptions};

use crate::anyhow_lite::{msg, Result};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The users CSV of N users exported over HTTP, then imported moving
    /// everyone to another subscription (dry run, then for real) vs. the
    /// same rows read and written directly.
    Csv {
        /// sqlite, postgres or all.
        #[arg(long, default_value = "all")]
        backend: String,
        /// Comma-separated user counts; one run each.
        #[arg(long, default_value = "100000", value_delimiter = ',')]
        users: Vec<usize>,
    },
    /// A partner's customer list filtered by two subscription statuses,
    /// first page, p50/p99 over HTTP vs. an unfiltered page read directly.
    Customers {
        /// sqlite, postgres or all.
        #[arg(long, default_value = "all")]
        backend: String,
        #[arg(long, default_value_t = 10_000)]
        customers: usize,
        #[arg(long, default_value_t = 50_000)]
        subscriptions: usize,
        /// Requests per filter (after 20 to warm up).
        #[arg(long, default_value_t = 500)]
        requests: usize,
    },
    /// One org of N users: lookups by email vs. by id (p50/p99), and reads
    /// of one user under load vs. /healthz from the same connections.
    Users {
        /// sqlite, postgres or all.
        #[arg(long, default_value = "all")]
        backend: String,
        #[arg(long, default_value_t = 100_000)]
        users: usize,
        /// Sequential lookups (after 20 to warm up).
        #[arg(long, default_value_t = 500)]
        requests: usize,
        /// Concurrent connections of the load phase.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds each load measurement lasts.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// The console's pages (Users with a search, a user's summary, Edit
    /// licenses) vs. the same data through the JSON API, with their bytes;
    /// then a search among a million users, substring index vs. scan.
    Ui {
        /// sqlite, postgres or all.
        #[arg(long, default_value = "all")]
        backend: String,
        /// Users of the org whose pages are asked for.
        #[arg(long, default_value_t = 100_000)]
        users: usize,
        /// Users of the org searched.
        #[arg(long, default_value_t = 1_000_000)]
        search_users: usize,
        /// Sequential requests per page (after 20 to warm up).
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Customers of the partner whose Customers page is asked for.
        #[arg(long, default_value_t = 10_000)]
        customers: usize,
        /// Subscriptions of those customers in all.
        #[arg(long, default_value_t = 50_000)]
        subscriptions: usize,
        /// Jobs of every user started from the console, each beside one created through the API (1 to 4).
        #[arg(long, default_value_t = 3)]
        job_pairs: usize,
        /// pages, search, bulk (Customers, Manage licenses, the job page, jobs of every user) or all.
        #[arg(long, default_value = "all")]
        part: String,
    },
    /// Single-user licence changes over HTTP vs. raw guarded update + insert.
    Licenses {
        /// sqlite, postgres or all.
        #[arg(long, default_value = "all")]
        backend: String,
        /// hot (one pool), spread (many pools) or all.
        #[arg(long, default_value = "all")]
        scenario: String,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Changes each client makes (each to a user of its own).
        #[arg(long, default_value_t = 150)]
        changes_per_client: usize,
        /// Pools in the spread scenario (one org and subscription each).
        #[arg(long, default_value_t = 1000)]
        pools: usize,
    },
    /// Entitlement checks over HTTP (single and in batches of 100) vs.
    /// `GET /healthz`, one indexed SQL query per question, and the index
    /// alone; the index's memory.
    Check {
        /// sqlite, postgres or all.
        #[arg(long, default_value = "all")]
        backend: String,
        #[arg(long, default_value_t = 100_000)]
        users: usize,
        #[arg(long, default_value_t = 100)]
        orgs: usize,
        /// Products (of 5) each user holds.
        #[arg(long, default_value_t = 3)]
        licenses_per_user: usize,
        /// Keep-alive connections of the load generator.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds each measured run lasts.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Pin the load generator to these CPUs (`taskset -c` syntax, one
        /// `wrk` thread per CPU), as if it ran on another machine; start
        /// the bench itself under `taskset -c` with the others.
        #[arg(long)]
        load_cpus: Option<String>,
    },
    /// One licence change planned in memory (user with 10 licences, 200
    /// products) vs. a seats-only check of the same change.
    Planner,
    /// One product to N users by a bulk job over HTTP vs. the same rows
    /// inserted in one transaction.
    Bulk {
        /// sqlite, postgres or all.
        #[arg(long, default_value = "all")]
        backend: String,
        /// Comma-separated user counts; one run each.
        #[arg(long, default_value = "100000", value_delimiter = ',')]
        users: Vec<usize>,
    },
    /// A bulk job with and without a subscribed webhook endpoint on a local
    /// receiver: the job's time, the time until its last event is
    /// delivered, deliveries per second, commit-to-delivery latency while
    /// the receiver keeps up, and the outbox's size on disk.
    /// SCIM: users created through SCIM beside the JSON API, lookups by
    /// userName, and group membership PATCHes on a group with a template.
    Scim {
        /// sqlite, postgres or all.
        #[arg(long, default_value = "all")]
        backend: String,
        /// Users created through each of the JSON API and SCIM.
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        /// Users already in the org (so that lookups search 100,000 by default).
        #[arg(long, default_value_t = 80_000)]
        preload: usize,
        /// SCIM lookups by userName.
        #[arg(long, default_value_t = 10_000)]
        lookups: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
    },
    Webhooks {
        /// sqlite, postgres or all.
        #[arg(long, default_value = "all")]
        backend: String,
        /// Users the bulk job gives a licence to.
        #[arg(long, default_value_t = 100_000)]
        users: usize,
        /// Single changes timed from commit to delivery (at a pace the receiver keeps up with).
        #[arg(long, default_value_t = 1_000)]
        changes: usize,
    },
}

pub async fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Planner => crate::bench_planner::run()?,
        BenchCommand::Check {
            backend,
            users,
            orgs,
            licenses_per_user,
            connections,
            seconds,
            load_cpus,
        } => {
            crate::bench_check::run(
                &backend,
                crate::bench_check::CheckBench {
                    users,
                    orgs,
                    licenses_per_user,
                    connections,
                    seconds,
                    load_cpus,
                },
            )
            .await?
        }
        BenchCommand::Bulk { backend, users } => crate::bench_bulk::run(&backend, &users).await?,
        BenchCommand::Scim {
            backend,
            users,
            preload,
            lookups,
            clients,
        } => crate::bench_scim::run(&backend, users, preload, lookups, clients).await?,
        BenchCommand::Webhooks { backend, users, changes } => crate::bench_webhooks::run(&backend, users, changes).await?,
        BenchCommand::Csv { backend, users } => crate::bench_csv::run(&backend, &users).await?,
        BenchCommand::Users {
            backend,
            users,
            requests,
            connections,
            seconds,
        } => crate::bench_users::run(&backend, users, requests, connections, seconds).await?,
        BenchCommand::Ui {
            backend,
            users,
            search_users,
            requests,
            customers,
            subscriptions,
            job_pairs,
            part,
        } => {
            crate::bench_ui::run(
                &backend,
                crate::bench_ui::UiBench {
                    users,
                    search_users,
                    requests,
                    customers,
                    subscriptions,
                    job_pairs,
                    part,
                },
            )
            .await?
        }
        BenchCommand::Customers {
            backend,
            customers,
            subscriptions,
            requests,
        } => crate::bench_customers::run(&backend, customers, subscriptions, requests).await?,
        BenchCommand::Licenses {
            backend,
            scenario,
            clients,
            changes_per_client,
            pools,
        } => {
            let backends: Vec<&str> = match backend.as_str() {
                "all" => vec!["sqlite", "postgres"],
                "sqlite" | "postgres" => vec![backend.as_str()],
                other => return Err(msg(format!("unknown backend {other:?}: sqlite, postgres or all"))),
            };
            let scenarios: Vec<(&str, usize)> = match scenario.as_str() {
                "all" => vec![("hot", 1), ("spread", pools)],
                "hot" => vec![("hot", 1)],
                "spread" => vec![("spread", pools)],
                other => return Err(msg(format!("unknown scenario {other:?}: hot, spread or all"))),
            };
            if clients == 0 || changes_per_client == 0 || pools == 0 {
                return Err(msg("clients, changes-per-client and pools must be at least 1"));
            }
            println!(
                "allot bench licenses: {clients} clients x {changes_per_client} changes, durable commits, {} cores",
                num_cpus()
            );
            println!();
            println!(
                "| backend | scenario | Allot changes/s | p50 ms | p99 ms | baseline changes/s | p50 ms | p99 ms | Allot / baseline | batched baseline changes/s | p50 ms | p99 ms | Allot / batched | CPU µs per change: Allot / baseline | first change of each client, slowest ms: Allot / baseline |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
            let mut databases = FreshDatabases::for_backends(&backends)?;
            for b in &backends {
                for (name, pool_count) in &scenarios {
                    let (allot_db, base_db, batched_db) = (
                        databases.fresh(b, "bench")?,
                        databases.fresh(b, "bench")?,
                        databases.fresh(b, "bench")?,
                    );
                    let allot = bench_allot(&allot_db, *pool_count, clients, changes_per_client).await?;
                    let base = bench_baseline(&base_db, *pool_count, clients, changes_per_client).await?;
                    let batched = bench_baseline_batched(&batched_db, *pool_count, clients, changes_per_client).await?;
                    println!(
                        "| {b} | {name} ({pool_count} pool{}) | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.0}% | {:.0} | {:.1} | {:.1} | {:.0}% | {} | {:.0} / {:.0} |",
                        if *pool_count == 1 { "" } else { "s" },
                        allot.rate,
                        allot.p50,
                        allot.p99,
                        base.rate,
                        base.p50,
                        base.p99,
                        100.0 * allot.rate / base.rate,
                        batched.rate,
                        batched.p50,
                        batched.p99,
                        100.0 * allot.rate / batched.rate,
                        match (allot.cpu_us, base.cpu_us) {
                            (Some(a), Some(b)) => format!("{a:.0} / {b:.0} ({:.1}x)", a / b),
                            _ => "-".into(),
                        },
                        allot.first_max,
                        base.first_max
                    );
                }
            }
        }
    }
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

struct Figures {
    rate: f64,
    p50: f64,
    p99: f64,
    /// The slowest of the clients' first changes, in ms (see [`figures`]).
    first_max: f64,
    /// The whole machine's busy CPU time per change, in microseconds (see
    /// [`MachineCpu`]).
    cpu_us: Option<f64>,
}

/// The machine's CPU time counters (Linux `/proc/stat`), to tell what a
/// change costs in CPU: on a small, shared machine the changes per second
/// of a run swing with what else runs, while the CPU time a change takes
/// (the database's processes, the server and the load generator together)
/// holds much steadier, and it is what the throughput of a CPU-bound run
/// comes down to.
#[derive(Clone, Copy)]
struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    /// `None` where `/proc/stat` cannot be read (not Linux).
    fn now() -> Option<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        // user nice system idle iowait irq softirq steal ...
        let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
        let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
        let total: u64 = ticks.iter().take(8).sum();
        Some(MachineCpu { busy: total - idle, total })
    }

    /// Busy CPU microseconds per change from `start` to now, over `elapsed`.
    fn per_change(start: Option<MachineCpu>, elapsed: Duration, changes: usize) -> Option<f64> {
        let (start, end) = (start?, MachineCpu::now()?);
        let total = end.total.checked_sub(start.total).filter(|t| *t > 0)?;
        let busy_share = end.busy.saturating_sub(start.busy) as f64 / total as f64;
        let cpu_seconds = busy_share * num_cpus() as f64 * elapsed.as_secs_f64();
        (changes > 0).then(|| cpu_seconds * 1e6 / changes as f64)
    }
}

/// The figures of a run from each client's latencies in order. Each
/// client's first change is the server's first contact with that client
/// (and, just after a start, with cold caches, fresh database connections
/// and statements not prepared yet on them): the first 64 changes of a
/// PostgreSQL run took 170-300 ms against a p50 of 25 ms, about 0.7% of a
/// run of 9,600 and so most of its p99. They count in the rate; the
/// percentiles are those of the changes after them, and their slowest is
/// shown on its own (`first_max`), for Allot and the baselines alike.
fn figures(per_client: Vec<Vec<Duration>>, elapsed: Duration, cpu_start: Option<MachineCpu>) -> Figures {
    let changes: usize = per_client.iter().map(Vec::len).sum();
    let cpu_us = MachineCpu::per_change(cpu_start, elapsed, changes);
    let first_max = per_client.iter().filter_map(|c| c.first()).max().copied().unwrap_or_default();
    let mut latencies: Vec<Duration> = per_client.into_iter().flat_map(|c| c.into_iter().skip(1)).collect();
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    Figures {
        rate: changes as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
        first_max: first_max.as_secs_f64() * 1000.0,
        cpu_us,
    }
}

/// A small deterministic generator, so that every run of a benchmark asks
/// the same questions.
pub(crate) struct Lcg(pub u64);

impl Lcg {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }

    /// An index below `n`.
    pub(crate) fn pick(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
}

/// A product without rules for benchmarks.
pub fn seat_product(code: &str) -> std::result::Result<allot_domain::catalogue::Product, allot_domain::Error> {
    Ok(allot_domain::catalogue::Product {
        code: allot_domain::types::ProductCode::parse(code)?,
        name: format!("Seat {code}"),
        family: allot_domain::types::ProductCode::parse(code)?,
        features: vec![],
        rules: Default::default(),
        properties: Default::default(),
        retention_days: 0,
    })
}

/// An org with one active, provisioned subscription of `quantity` seats of `product`.
pub fn seat_pool(
    name: &str,
    product: &str,
    quantity: i64,
    now: chrono::DateTime<chrono::Utc>,
    today: chrono::NaiveDate,
) -> (Org, Subscription) {
    let org = Org {
        id: new_id("org"),
        name: name.to_string(),
        partner: None,
        default_usage_location: None,
        payment_method_on_file: false,
        self_service_purchase: false,
        keep_licenses_on_deactivation: false,
        created_at: allot_store::ts(now),
    };
    let sub = Subscription {
        org: org.id.clone(),
        id: new_id("sub"),
        external_ref: None,
        partner: None,
        facts: SubscriptionFacts {
            trial: false,
            start_date: today - chrono::Duration::days(1),
            end_date: today + chrono::Duration::days(365),
            suspended: false,
            cancelled: false,
        },
        items: vec![Item {
            product: product.to_string(),
            quantity,
            consumed: 0,
            provisioning_status: ProvisioningStatus::Provisioned,
        }],
    };
    (org, sub)
}

/// Orgs with one subscription of one product each, and the users who will
/// each get one seat: `(org, user)` per change, dealt round-robin over pools.
async fn setup(store: &Store, pools: usize, total: usize) -> Result<Vec<(String, String, String)>> {
    let now = SystemClock.now();
    let today = SystemClock.today();
    in_transaction!(store, |tx| {
        if allot_store::catalogue::get(&mut tx, "bench-seat").await?.is_none() {
            allot_store::catalogue::insert(&mut tx, &seat_product("bench-seat")?, now).await?;
        }
        Ok::<_, StoreError>(())
    })
    .map_err(|e| msg(e.detail))?;
    let per_pool = total.div_ceil(pools);
    let mut targets = Vec::with_capacity(total);
    let mut orgs = Vec::new();
    for chunk in (0..pools).collect::<Vec<_>>().chunks(100) {
        let made = in_transaction!(store, |tx| {
            let mut made = Vec::new();
            for i in chunk {
                let (org, sub) = seat_pool(&format!("Bench {i}"), "bench-seat", per_pool as i64, now, today);
                allot_store::tenants::insert_org(&mut tx, &org, now).await?;
                allot_store::subscriptions::insert(&mut tx, &sub, now).await?;
                let mut users = Vec::new();
                for u in 0..per_pool {
                    let user = User::internal(new_id("usr"), format!("u{u}@org{i}.example"));
                    allot_store::users::insert(&mut tx, &org.id, &user, now).await?;
                    users.push(user.id);
                }
                made.push((org.id, sub.id, users));
            }
            Ok::<_, StoreError>(made)
        })
        .map_err(|e| msg(e.detail))?;
        orgs.extend(made);
    }
    for k in 0..per_pool {
        for (org, sub, users) in &orgs {
            if targets.len() < total {
                targets.push((org.clone(), sub.clone(), users[k].clone()));
            }
        }
    }
    Ok(targets)
}

/// Fresh databases for a benchmark's runs: SQLite files in a temporary
/// directory, or databases of one throwaway PostgreSQL cluster, started only
/// when a PostgreSQL backend is asked for.
pub struct FreshDatabases {
    pg: Option<allot_pgtemp::PgCluster>,
    tmp: tempfile::TempDir,
    made: usize,
}

impl FreshDatabases {
    pub fn for_backends(backends: &[&str]) -> Result<FreshDatabases> {
        let pg = if backends.contains(&"postgres") {
            Some(allot_pgtemp::PgCluster::start(true).map_err(|e| msg(format!("cannot start PostgreSQL: {e}")))?)
        } else {
            None
        };
        Ok(FreshDatabases {
            pg,
            tmp: tempfile::tempdir()?,
            made: 0,
        })
    }

    /// The temporary directory (benchmarks keep their files there too).
    pub fn dir(&self) -> &std::path::Path {
        self.tmp.path()
    }

    /// A new, empty database of `backend`, named `<prefix><n>`.
    pub fn fresh(&mut self, backend: &str, prefix: &str) -> Result<String> {
        self.made += 1;
        let name = format!("{prefix}{}", self.made);
        Ok(match (backend, &self.pg) {
            ("postgres", Some(c)) => c.create_database(&name).map_err(msg)?,
            _ => self.tmp.path().join(format!("{name}.db")).to_string_lossy().to_string(),
        })
    }
}

/// The backends a `--backend` value names.
pub fn backends_of(backend: &str) -> Result<Vec<&'static str>> {
    match backend {
        "all" => Ok(vec!["sqlite", "postgres"]),
        "sqlite" => Ok(vec!["sqlite"]),
        "postgres" => Ok(vec!["postgres"]),
        other => Err(msg(format!("unknown backend {other:?}: sqlite, postgres or all"))),
    }
}

/// A server with its job worker on a local port of this process, over a store.
pub struct InProcessServer {
    pub url: String,
    /// The application the server runs (its entitlement index, ...).
    pub app: allot_server::AppState,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl InProcessServer {
    pub async fn start(store: &Store) -> Result<InProcessServer> {
        InProcessServer::start_with(store, allot_server::Config::default()).await
    }

    /// [`InProcessServer::start`] with a configuration of its own.
    pub async fn start_with(store: &Store, config: allot_server::Config) -> Result<InProcessServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = allot_server::AppState::new(store.clone(), std::sync::Arc::new(allot_server::clock::SystemClock), config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = state.clone();
        let task = tokio::spawn(allot_server::serve(state, listener, async move {
            let _ = stopped.await;
        }));
        // A server reads its entitlement index at start-up; measurements
        // begin once it has (as they would on a server that has been up).
        let started = std::time::Instant::now();
        while !app.entitlements.is_ready() && started.elapsed() < std::time::Duration::from_secs(600) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(InProcessServer { url, app, stop, task })
    }

    /// Stops the server and waits for it (and its worker) to end.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Opens the bench store at `database` (durable, as a server runs it) with
/// `max_connections` in its pool.
pub async fn open_store(database: &str, max_connections: u32) -> Result<Store> {
    Store::open(
        database,
        StoreOptions {
            durable: true,
            max_connections,
        },
    )
    .await
    .map_err(|e| msg(allot_domain::Error::from(e).detail))
}

/// Deals targets to clients: client c gets every clients-th target.
fn deal<T: Clone>(targets: &[T], clients: usize) -> Vec<Vec<T>> {
    (0..clients)
        .map(|c| targets.iter().skip(c).step_by(clients).cloned().collect())
        .collect()
}

async fn bench_allot(database: &str, pools: usize, clients: usize, per_client: usize) -> Result<Figures> {
    let store = open_store(database, 32).await?;
    let targets = setup(&store, pools, clients * per_client).await?;
    let token = allot_server::auth::create_token(&store, Role::ProviderAdmin, None, None, Some("bench"), SystemClock.now())
        .await
        .map_err(|e| msg(e.detail))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::new(store.clone(), Arc::new(SystemClock), allot_server::Config::default());
    let server = tokio::spawn(allot_server::serve(state, listener, async move {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::builder().pool_max_idle_per_host(clients).build()?;
    // The clock starts once the server says it is ready, as a load balancer
    // would send it traffic: its start is not a change's latency.
    wait_until_ready(&client, addr).await?;
    let cpu_start = MachineCpu::now();
    let started = Instant::now();
    let runs = deal(&targets, clients).into_iter().map(|mine| {
        let client = client.clone();
        let token = token.clone();
        async move {
            let mut lat = Vec::with_capacity(mine.len());
            let mut failed = 0usize;
            for (org, _sub, user) in mine {
                let t = Instant::now();
                let r = client
                    .post(format!("http://{addr}/api/v1/orgs/{org}/users/{user}/licenses"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({ "add": [{ "product": "bench-seat" }] }))
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().is_success() => lat.push(t.elapsed()),
                    Ok(resp) => {
                        failed += 1;
                        if failed < 3 {
                            eprintln!("change refused: {} {}", resp.status(), resp.text().await.unwrap_or_default());
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("request failed: {e}");
                    }
                }
            }
            (lat, failed)
        }
    });
    let results = join_all(runs).await;
    let elapsed = started.elapsed();
    let failed: usize = results.iter().map(|r| r.1).sum();
    let latencies: Vec<Vec<Duration>> = results.into_iter().map(|r| r.0).collect();
    let _ = stop_tx.send(());
    let _ = server.await;
    let mut tx = store.begin_read().await.map_err(|e| msg(allot_domain::Error::from(e).detail))?;
    let bad = allot_store::subscriptions::counter_mismatches(&mut tx)
        .await
        .map_err(|e| msg(allot_domain::Error::from(e).detail))?;
    drop(tx);
    store.close().await;
    if failed > 0 || !bad.is_empty() {
        return Err(msg(format!(
            "{failed} changes failed and {} pools disagree with their assignments",
            bad.len()
        )));
    }
    Ok(figures(latencies, elapsed, cpu_start))
}

/// Waits until `GET /readyz` answers 200 (at most 30 s).
async fn wait_until_ready(client: &reqwest::Client, addr: std::net::SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("http://{addr}/readyz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(msg("the server did not become ready within 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A baseline's database: Allot's migration and setup create the same
/// schema and rows as Allot's run gets; the baseline then measures raw
/// statements on it. Returns the (org, subscription, user) targets.
async fn baseline_database(database: &str, pools: usize, total: usize) -> Result<Vec<(String, String, String)>> {
    let store = open_store(database, 4).await?;
    let targets = setup(&store, pools, total).await?;
    store.close().await;
    Ok(targets)
}

/// The baseline: the same rows and the same guarded counter, straight to the
/// database with raw sqlx. SQLite gets what Allot gives it (one writer
/// connection, WAL, synchronous=FULL, BEGIN IMMEDIATE); PostgreSQL a pool of
/// as many connections as clients.
async fn bench_baseline(database: &str, pools: usize, clients: usize, per_client: usize) -> Result<Figures> {
    // Allot's migration and setup only create the same schema and rows; the
    // measured statements below are raw sqlx.
    let targets = baseline_database(database, pools, clients * per_client).await?;
    const INSERT: &str = "INSERT INTO assignments (org_id, user_id, product, subscription_id, properties, assigned_at) VALUES ($1, $2, 'bench-seat', $3, '{}', $4)";
    const TAKE: &str = "UPDATE subscription_items SET consumed = consumed + 1 WHERE org_id = $1 AND subscription_id = $2 AND product = 'bench-seat' AND consumed + 1 <= quantity";
    let now = allot_store::ts(SystemClock.now());
    let started;
    let cpu_start;
    let results: Vec<(Vec<Duration>, usize)>;
    if database.starts_with("postgres") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(clients as u32)
            .connect(database)
            .await?;
        cpu_start = MachineCpu::now();
        started = Instant::now();
        results = join_all(deal(&targets, clients).into_iter().map(|mine| {
            let pool = pool.clone();
            let now = now.clone();
            async move {
                let mut lat = Vec::new();
                let mut failed = 0;
                for (org, sub, user) in mine {
                    let t = Instant::now();
                    let ok: std::result::Result<bool, sqlx::Error> = async {
                        let mut tx = pool.begin().await?;
                        sqlx::query(INSERT)
                            .bind(&org)
                            .bind(&user)
                            .bind(&sub)
                            .bind(&now)
                            .execute(&mut *tx)
                            .await?;
                        let took = sqlx::query(TAKE).bind(&org).bind(&sub).execute(&mut *tx).await?.rows_affected() == 1;
                        tx.commit().await?;
                        Ok(took)
                    }
                    .await;
                    match ok {
                        Ok(true) => lat.push(t.elapsed()),
                        _ => failed += 1,
                    }
                }
                (lat, failed)
            }
        }))
        .await;
        pool.close().await;
    } else {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(database)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?;
        cpu_start = MachineCpu::now();
        started = Instant::now();
        results = join_all(deal(&targets, clients).into_iter().map(|mine| {
            let pool = pool.clone();
            let now = now.clone();
            async move {
                let mut lat = Vec::new();
                let mut failed = 0;
                for (org, sub, user) in mine {
                    let t = Instant::now();
                    let ok: std::result::Result<bool, sqlx::Error> = async {
                        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                        sqlx::query(INSERT)
                            .bind(&org)
                            .bind(&user)
                            .bind(&sub)
                            .bind(&now)
                            .execute(&mut *tx)
                            .await?;
                        let took = sqlx::query(TAKE).bind(&org).bind(&sub).execute(&mut *tx).await?.rows_affected() == 1;
                        tx.commit().await?;
                        Ok(took)
                    }
                    .await;
                    match ok {
                        Ok(true) => lat.push(t.elapsed()),
                        _ => failed += 1,
                    }
                }
                (lat, failed)
            }
        }))
        .await;
        pool.close().await;
    }
    let elapsed = started.elapsed();
    let failed: usize = results.iter().map(|r| r.1).sum();
    if failed > 0 {
        return Err(msg(format!("{failed} baseline changes failed")));
    }
    Ok(figures(results.into_iter().map(|r| r.0).collect(), elapsed, cpu_start))
}

/// One change for a batching writer: the target and where to say whether
/// its seat was taken.
type BatchedChange = (
    (String, String, String),
    tokio::sync::oneshot::Sender<std::result::Result<bool, String>>,
);

/// A writer that batches the baseline's statements the way Allot's group
/// commit does: whatever changes are queued (up to 256) share one
/// transaction, each in its own SAVEPOINT, and are answered after the one
/// COMMIT. Generic over the engine; only the statements are run.
async fn batching_writer<DB>(
    mut conn: DB::Connection,
    begin: &'static str,
    affected: fn(&DB::QueryResult) -> u64,
    now: String,
    mut queue: tokio::sync::mpsc::Receiver<BatchedChange>,
) where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    const INSERT: &str = "INSERT INTO assignments (org_id, user_id, product, subscription_id, properties, assigned_at) VALUES ($1, $2, 'bench-seat', $3, '{}', $4)";
    const TAKE: &str = "UPDATE subscription_items SET consumed = consumed + 1 WHERE org_id = $1 AND subscription_id = $2 AND product = 'bench-seat' AND consumed + 1 <= quantity";
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match queue.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let mut taken = Vec::with_capacity(batch.len());
        let done: std::result::Result<(), sqlx::Error> = async {
            sqlx::raw_sql(begin).execute(&mut conn).await?;
            for ((org, sub, user), _) in &batch {
                sqlx::raw_sql("SAVEPOINT change").execute(&mut conn).await?;
                sqlx::query(INSERT)
                    .bind(org.clone())
                    .bind(user.clone())
                    .bind(sub.clone())
                    .bind(now.clone())
                    .execute(&mut conn)
                    .await?;
                let took = affected(&sqlx::query(TAKE).bind(org.clone()).bind(sub.clone()).execute(&mut conn).await?) == 1;
                if !took {
                    sqlx::raw_sql("ROLLBACK TO change").execute(&mut conn).await?;
                }
                sqlx::raw_sql("RELEASE change").execute(&mut conn).await?;
                taken.push(took);
            }
            sqlx::raw_sql("COMMIT").execute(&mut conn).await?;
            Ok(())
        }
        .await;
        match done {
            Ok(()) => {
                for ((_, tell), took) in batch.into_iter().zip(taken) {
                    let _ = tell.send(Ok(took));
                }
            }
            Err(e) => {
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut conn).await;
                for (_, tell) in batch {
                    let _ = tell.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// The second baseline: the same statements as [`bench_baseline`], batched
/// per commit as Allot batches them (one writer on SQLite; on PostgreSQL as
/// many lanes as Allot opens, orgs routed to them by hash), so that the
/// ratio shows what Allot's own work costs, not what group commit saves.
async fn bench_baseline_batched(database: &str, pools: usize, clients: usize, per_client: usize) -> Result<Figures> {
    let targets = baseline_database(database, pools, clients * per_client).await?;
    let now = allot_store::ts(SystemClock.now());
    let mut lanes = Vec::new();
    // The writers run as futures of this task, not spawned: sqlx's generic
    // executor bounds are not provably `Send` for every lifetime, so the
    // writers are not `Send` futures either.
    let mut writers: Vec<futures::future::LocalBoxFuture<'static, ()>> = Vec::new();
    if database.starts_with("postgres") {
        use sqlx::Connection;
        // As many lanes as Allot's store opens with the 32 connections its bench uses.
        for _ in 0..16 {
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            let conn = sqlx::PgConnection::connect(database).await?;
            writers.push(Box::pin(batching_writer::<sqlx::Postgres>(
                conn,
                "BEGIN",
                |r| r.rows_affected(),
                now.clone(),
                rx,
            )));
            lanes.push(tx);
        }
    } else {
        use sqlx::ConnectOptions;
        let conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(database)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .connect()
            .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        writers.push(Box::pin(batching_writer::<sqlx::Sqlite>(
            conn,
            "BEGIN IMMEDIATE",
            |r| r.rows_affected(),
            now.clone(),
            rx,
        )));
        lanes.push(tx);
    }
    let cpu_start = MachineCpu::now();
    let started = Instant::now();
    let clients_done = async move {
        let lane_of = |org: &str| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            org.hash(&mut h);
            (h.finish() % lanes.len() as u64) as usize
        };
        let results: Vec<(Vec<Duration>, usize)> = join_all(deal(&targets, clients).into_iter().map(|mine| {
            let lanes = &lanes;
            async move {
                let mut lat = Vec::new();
                let mut failed = 0;
                for (org, sub, user) in mine {
                    let t = Instant::now();
                    let lane = &lanes[lane_of(&org)];
                    let (tell, told) = tokio::sync::oneshot::channel();
                    let sent = lane.send(((org, sub, user), tell)).await.is_ok();
                    match (sent, told.await) {
                        (true, Ok(Ok(true))) => lat.push(t.elapsed()),
                        _ => failed += 1,
                    }
                }
                (lat, failed)
            }
        }))
        .await;
        // The writers end when their queues close.
        drop(lanes);
        (results, started.elapsed())
    };
    let ((results, elapsed), _) = futures::join!(clients_done, join_all(writers));
    let failed: usize = results.iter().map(|r| r.1).sum();
    if failed > 0 {
        return Err(msg(format!("{failed} batched baseline changes failed")));
    }
    Ok(figures(results.into_iter().map(|r| r.0).collect(), elapsed, cpu_start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn busy_cpu_time_per_change_is_measured() {
        let start = MachineCpu::now();
        assert!(start.is_some(), "/proc/stat is readable on Linux");
        let began = Instant::now();
        // Keep a core busy for a while: at least that much CPU time passes.
        let mut x = 0u64;
        while began.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let per_change = MachineCpu::per_change(start, began.elapsed(), 1000).expect("measured");
        // 300 ms of one core over 1,000 changes is at least ~300 µs each
        // (the clock ticks at 100 Hz, hence the margin).
        assert!(per_change > 150.0, "{per_change} µs per change");
        assert_eq!(MachineCpu::per_change(start, began.elapsed(), 0), None);
        assert_eq!(MachineCpu::per_change(None, began.elapsed(), 10), None);
    }
}
