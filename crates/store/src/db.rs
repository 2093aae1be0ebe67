//! The store's engine room, one code base for SQLite and PostgreSQL:
//! opening a database ([`Store::open`]: the connection pools, SQLite's one
//! writer and PostgreSQL's lanes, the migrations) and handing out
//! transactions. The parts live in modules of their own: values and rows
//! (`values.rs`), errors (`error.rs`), transactions and statements
//! (`tx.rs`), retries and ids (`retry.rs`); this module re-exports them so
//! that `crate::db::X` names each.

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::changes::ChangeFeed;
use crate::shelf::Shelf;
use crate::writer::{Writer, WriterConn};

pub use crate::error::StoreError;
pub use crate::retry::{backoff, finish, new_id, Outcome};
pub(crate) use crate::tx::BULK_ROWS_PER_STATEMENT;
pub use crate::tx::{PreparedRows, Tx};
pub use crate::values::{Backend, Row, Val};
pub(crate) use crate::values::{Cell, PackedCell};

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// SQLite only: `synchronous=FULL` (durable: a commit survives power loss)
    /// when true, `NORMAL` (may lose the last commits on power loss, never
    /// corrupts) when false.
    pub durable: bool,
    pub max_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durable: true,
            max_connections: 16,
        }
    }
}

#[derive(Clone)]
enum Pools {
    /// SQLite allows one writer at a time, so Allot keeps exactly one write
    /// connection, shared by queued units of work through group commit
    /// (see `writer.rs`), and a pool of readers, which WAL lets run beside it.
    Sqlite {
        writer: Arc<Writer>,
        reader: SqlitePool,
        shelf: Arc<Shelf<sqlx::Sqlite>>,
    },
    /// A pool for reads and general writes, and per-org lanes (group-committed
    /// writers, see `writer.rs`) for the hot path of licence changes.
    Postgres {
        pool: PgPool,
        lanes: Arc<Vec<Arc<Writer>>>,
        shelf: Arc<Shelf<sqlx::Postgres>>,
    },
}

/// How long opening waits for PostgreSQL to answer before saying it did not.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a pooled PostgreSQL connection may sit idle before it is
/// checked with a ping when handed out again.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// One connection to PostgreSQL before the pool is built: a server that is
/// down or unreachable is named (host and port) within seconds, instead of
/// the pool retrying for its whole acquire timeout.
async fn check_postgres_reachable(connect: &PgConnectOptions) -> Result<(), StoreError> {
    use sqlx::ConnectOptions;
    let at = format!("{}:{}", connect.get_host(), connect.get_port());
    match tokio::time::timeout(CONNECT_TIMEOUT, connect.connect()).await {
        Err(_) => Err(StoreError::Open(format!(
            "PostgreSQL at {at} did not answer within {} s.",
            CONNECT_TIMEOUT.as_secs()
        ))),
        Ok(Err(sqlx::Error::Io(e))) => Err(StoreError::Open(format!("PostgreSQL at {at} cannot be reached: {e}."))),
        Ok(Err(sqlx::Error::Database(e))) => Err(StoreError::Open(format!(
            "PostgreSQL at {at} refused the connection: {}.",
            e.message()
        ))),
        Ok(Err(e)) => Err(StoreError::Open(format!("cannot connect to PostgreSQL at {at}: {e}."))),
        Ok(Ok(c)) => {
            let _ = sqlx::Connection::close(c).await;
            Ok(())
        }
    }
}

/// A SQLite database's file must be in a directory that exists (the file
/// itself is created when missing).
fn check_sqlite_path(path: &str) -> Result<(), StoreError> {
    if path == ":memory:" || path.starts_with("file:") {
        return Ok(());
    }
    let p = std::path::Path::new(path);
    if p.is_dir() {
        return Err(StoreError::Open(format!("{path} is a directory, not a database file.")));
    }
    match p.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => Err(StoreError::Open(format!(
            "the directory {} does not exist (create it, or give another path for the database).",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// Why SQLite could not open `path`, in words.
fn sqlite_open_error(path: &str, e: StoreError) -> StoreError {
    match e {
        StoreError::Db(what) if what.starts_with("26:") => StoreError::Open(format!("{path} is not a SQLite database (or is damaged).")),
        StoreError::Db(what) if what.starts_with("14:") => StoreError::Open(format!("{path} cannot be opened: {what}.")),
        StoreError::Db(what) => StoreError::Open(format!("{path} cannot be opened as a SQLite database: {what}.")),
        other => other,
    }
}

#[derive(Clone)]
pub struct Store {
    pools: Pools,
    /// What this process's commits changed, for the entitlement index.
    feed: Arc<ChangeFeed>,
    /// PostgreSQL: this process's row and connection, so that the others
    /// can tell when it died (see `presence.rs`).
    presence: Option<Arc<crate::presence::Presence>>,
}

impl Store {
    /// Opens `postgres://…` URLs with PostgreSQL and anything else as a SQLite
    /// file path (or `sqlite:` URL), creating the file if needed, then migrates.
    pub async fn open(database: &str, opts: StoreOptions) -> Result<Store, StoreError> {
        Store::open_migrated_to(database, opts, i64::MAX).await
    }

    /// [`Store::open`], applying the migrations up to `last` only: for tests
    /// that upgrade a database of an older schema.
    #[doc(hidden)]
    pub async fn open_migrated_to(database: &str, opts: StoreOptions, last: i64) -> Result<Store, StoreError> {
        let feed = ChangeFeed::new();
        let mut pg_connect = None;
        let mut store = if database.starts_with("postgres://") || database.starts_with("postgresql://") {
            let connect = PgConnectOptions::from_str(database)
                .map_err(|e| StoreError::Open(format!("{database} is not a PostgreSQL URL Allot can use: {e}")))?
                // Every connection names this process: others tell by them
                // whether it is alive (see `presence.rs`).
                .application_name(&crate::presence::connection_name(&feed.origin));
            check_postgres_reachable(&connect).await?;
            pg_connect = Some(connect.clone());
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(Duration::from_secs(30))
                // sqlx pings every connection it hands out: one more round
                // trip for every read, the only one of an authenticated GET
                // but for its query (reading one user: 13,300/s with it,
                // 15,100/s without). A connection idle for a second is still
                // pinged; one the server ended within that second fails the
                // one read it is handed to, and is then closed.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= IDLE_BEFORE_PING {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                .connect_with(connect.clone())
                .await?;
            feed.start_notifier(pool.clone());
            let lanes = (0..(opts.max_connections / 2).max(2))
                .map(|_| Writer::new(WriterConn::Postgres(None, Box::new(connect.clone())), feed.clone()))
                .collect();
            Store {
                pools: Pools::Postgres {
                    pool,
                    lanes: Arc::new(lanes),
                    shelf: Arc::new(Shelf::new(opts.max_connections as usize / 2, Some(IDLE_BEFORE_PING))),
                },
                feed,
                presence: None,
            }
        } else {
            let path = database
                .strip_prefix("sqlite://")
                .or_else(|| database.strip_prefix("sqlite:"))
                .unwrap_or(database);
            let connect = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(if opts.durable {
                    SqliteSynchronous::Full
                } else {
                    SqliteSynchronous::Normal
                })
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .pragma("cache_size", "-65536")
                // Checkpoint after ~100 MB of WAL instead of SQLite's 4 MB: a
                // bulk job commits every 5,000 users and would otherwise copy
                // pages back (and fsync the file) every few chunks, often the
                // same index pages again. 100k users: 1.40 s -> 1.30 s at
                // 10,000 pages; once chunks stopped rewriting 5,000 version
                // rows, 25,000 pages measured best (BENCHMARKS.md). A commit
                // that crosses it pays for the checkpoint (~0.1-0.2 s).
                .pragma("wal_autocheckpoint", "25000");
            check_sqlite_path(path)?;
            let writer = Writer::new(
                crate::writer::connect(&connect).await.map_err(|e| sqlite_open_error(path, e))?,
                feed.clone(),
            );
            // Readers keep a smaller page cache each: there are many of them,
            // the OS caches the file anyway, and 64 MB apiece let a job that
            // reads a million users grow the process past a gigabyte.
            let reader = SqlitePoolOptions::new()
                .max_connections(opts.max_connections.max(2))
                .acquire_timeout(Duration::from_secs(30))
                // A file opened in this process does not go away as a
                // server's connection can; sqlx's ping before every read is
                // a hop to the connection's thread and back for nothing.
                .test_before_acquire(false)
                .connect_with(connect.read_only(true).pragma("cache_size", "-8192"))
                .await?;
            Store {
                pools: Pools::Sqlite {
                    writer,
                    reader,
                    // A file opened in this process does not go away as a
                    // server's connection can: no check before reuse.
                    shelf: Arc::new(Shelf::new(opts.max_connections.max(2) as usize / 2, None)),
                },
                feed,
                presence: None,
            }
        };
        crate::migrations::migrate(&store, last).await?;
        if let Some(connect) = pg_connect.filter(|_| last >= crate::migrations::PROCESSES_VERSION) {
            store.presence = Some(Arc::new(crate::presence::enter(&connect, &store.feed.origin).await?));
        }
        Ok(store)
    }

    /// What this process's commits change (see `crate::changes`).
    pub fn change_feed(&self) -> &Arc<ChangeFeed> {
        &self.feed
    }

    /// PostgreSQL: starts forwarding the other processes' change
    /// notifications to this process's feed (listening before it returns),
    /// and marks this process as one that listens. `None` on SQLite, which
    /// one process serves.
    pub async fn follow_others(&self) -> Result<Option<tokio::task::JoinHandle<()>>, StoreError> {
        match &self.pools {
            Pools::Postgres { pool, .. } => {
                let listener = crate::changes::follow_others(pool.clone(), self.feed.clone()).await?;
                if let Some(p) = &self.presence {
                    if let Err(e) = p.listen(pool).await {
                        listener.abort();
                        return Err(e);
                    }
                }
                Ok(Some(listener))
            }
            Pools::Sqlite { .. } => Ok(None),
        }
    }

    /// PostgreSQL: tells the listening processes that this one listens
    /// too; each answers with a welcome (`Fed::Welcome`) once it announces
    /// its commits.
    pub async fn say_hello(&self) -> Result<(), StoreError> {
        match &self.pools {
            Pools::Postgres { pool, .. } => crate::changes::say_hello(pool, &self.feed.origin).await,
            Pools::Sqlite { .. } => Ok(()),
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pools {
            Pools::Sqlite { .. } => Backend::Sqlite,
            Pools::Postgres { .. } => Backend::Postgres,
        }
    }

    /// A write transaction. On SQLite, a unit of the group-committed writer
    /// transaction (begun IMMEDIATE, so it never fails half-way with BUSY).
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match &self.pools {
            Pools::Sqlite { writer, .. } => Tx::Unit(writer.begin_unit().await?),
            Pools::Postgres { pool, .. } => Tx::Postgres(crate::tx::PgTx {
                tx: pool.begin().await?,
                changes: Default::default(),
                feed: Some(self.feed.clone()),
            }),
        })
    }

    /// A write transaction for a unit of work that touches only `org_id`'s
    /// rows (a licence change): on PostgreSQL it joins the org's lane, where
    /// concurrent units share one group commit instead of queueing on the
    /// seat counter's row lock. On SQLite it is `begin()`.
    pub async fn begin_in_org(&self, org_id: &str) -> Result<Tx, StoreError> {
        match &self.pools {
            Pools::Postgres { lanes, .. } => {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                org_id.hash(&mut h);
                let lane = &lanes[(h.finish() % lanes.len() as u64) as usize];
                Ok(Tx::Unit(lane.begin_unit().await?))
            }
            Pools::Sqlite { .. } => self.begin().await,
        }
    }

    /// A read transaction: a consistent snapshot for several queries.
    pub async fn begin_read(&self) -> Result<Tx, StoreError> {
        Ok(match &self.pools {
            Pools::Sqlite { reader, .. } => Tx::Sqlite(reader.begin().await?),
            Pools::Postgres { pool, .. } => Tx::Postgres(crate::tx::PgTx {
                tx: pool.begin_with("BEGIN READ ONLY").await?,
                changes: Default::default(),
                feed: None,
            }),
        })
    }

    /// A read transaction whose every statement sees the same snapshot
    /// (PostgreSQL's REPEATABLE READ; a SQLite read transaction is one).
    pub async fn begin_snapshot(&self) -> Result<Tx, StoreError> {
        Ok(match &self.pools {
            Pools::Sqlite { reader, .. } => Tx::Sqlite(reader.begin().await?),
            Pools::Postgres { pool, .. } => Tx::Postgres(crate::tx::PgTx {
                tx: pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?,
                changes: Default::default(),
                feed: None,
            }),
        })
    }

    /// A connection for reads that need no consistent snapshot across
    /// statements (one round trip each, no BEGIN/COMMIT). It comes from
    /// the shelf when one waits there, and goes back to it (see
    /// `shelf.rs`).
    pub async fn read_conn(&self) -> Result<Tx, StoreError> {
        Ok(match &self.pools {
            Pools::Sqlite { reader, shelf, .. } => Tx::SqliteConn(shelf.lend(reader).await?),
            Pools::Postgres { pool, shelf, .. } => Tx::PostgresConn(shelf.lend(pool).await?),
        })
    }

    /// Runs raw SQL with no transaction (benchmark baselines, admin tasks).
    pub async fn raw_execute(&self, sql: &str) -> Result<(), StoreError> {
        match &self.pools {
            Pools::Sqlite { writer, .. } => {
                let mut unit = writer.begin_unit().await?;
                let WriterConn::Sqlite(conn) = unit.conn()? else {
                    return Err(StoreError::Db("the SQLite writer holds a PostgreSQL connection".into()));
                };
                let done = sqlx::raw_sql(sql).execute(conn).await;
                match done {
                    Ok(_) => unit.commit().await?,
                    Err(e) => {
                        unit.rollback().await?;
                        return Err(e.into());
                    }
                }
            }
            Pools::Postgres { pool, .. } => {
                sqlx::raw_sql(sql).execute(pool).await?;
            }
        }
        Ok(())
    }

    /// How many units of work are queued behind the group-committed writers
    /// now (SQLite's one writer, or PostgreSQL's lanes): for tests that must
    /// see a write waiting before they let the writer go.
    #[doc(hidden)]
    pub fn writer_waiters(&self) -> usize {
        match &self.pools {
            Pools::Sqlite { writer, .. } => writer.waiting(),
            Pools::Postgres { lanes, .. } => lanes.iter().map(|l| l.waiting()).sum(),
        }
    }

    /// The connection pools now, for metrics: (pool, open connections, idle ones).
    pub fn pool_stats(&self) -> Vec<(&'static str, u32, usize)> {
        match &self.pools {
            Pools::Sqlite { reader, shelf, .. } => vec![("sqlite_readers", reader.size(), reader.num_idle() + shelf.len())],
            Pools::Postgres { pool, shelf, .. } => vec![("postgres", pool.size(), pool.num_idle() + shelf.len())],
        }
    }

    /// Units of work queued behind the group-committed writers (metrics).
    pub fn writer_queue_depth(&self) -> usize {
        self.writer_waiters()
    }

    /// Whether the database answers and can be written to now, within
    /// `within`: SQLite's writer begins a unit (taking the write lock) and
    /// undoes it; PostgreSQL begins a transaction that is given a
    /// transaction id (refused by a read-only server) and rolls it back.
    pub async fn probe_writable(&self, within: Duration) -> Result<(), StoreError> {
        match &self.pools {
            Pools::Sqlite { writer, .. } => writer.probe(within).await,
            Pools::Postgres { pool, .. } => {
                let probe = async {
                    let mut tx = pool.begin().await?;
                    sqlx::query("SELECT txid_current()").execute(&mut *tx).await?;
                    tx.rollback().await?;
                    Ok::<(), StoreError>(())
                };
                tokio::time::timeout(within, probe)
                    .await
                    .map_err(|_| StoreError::Db(format!("PostgreSQL did not begin a write within {} ms", within.as_millis())))?
            }
        }
    }

    pub async fn close(&self) {
        match &self.pools {
            Pools::Sqlite { writer, reader, shelf } => {
                shelf.close();
                reader.close().await;
                if let Err(e) = writer.checkpoint().await {
                    tracing::warn!(error = ?e, "cannot checkpoint the write-ahead log at shutdown");
                }
            }
            Pools::Postgres { pool, lanes, shelf } => {
                for lane in lanes.iter() {
                    lane.flush().await;
                }
                // Every commit announced: the others need not read
                // everything when this process's row goes.
                let clean = self.feed.notifications_sent(Duration::from_secs(5)).await;
                if let Some(p) = &self.presence {
                    p.leave(clean).await;
                }
                shelf.close();
                pool.close().await
            }
        }
    }
}
