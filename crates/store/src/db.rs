use rand::Rng;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Column, Row as _, TypeInfo, ValueRef};
use std::str::FromStr;
use std::sync::Arc;

use crate::writer::{WriteUnit, Writer, WriterConn};
use std::time::Duration;

use allot_domain::{Code, Error};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A value bound to a query. Nulls carry their type because PostgreSQL must
/// know a parameter's type even when it is null.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(i64),
    Text(String),
    Bool(bool),
    NullInt,
    NullText,
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}
impl From<bool> for Val {
    fn from(v: bool) -> Self {
        Val::Bool(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(v.to_string())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(v)
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Self {
        Val::Text(v.clone())
    }
}
impl From<Option<String>> for Val {
    fn from(v: Option<String>) -> Self {
        v.map(Val::Text).unwrap_or(Val::NullText)
    }
}
impl From<Option<&str>> for Val {
    fn from(v: Option<&str>) -> Self {
        v.map(|s| Val::Text(s.to_string())).unwrap_or(Val::NullText)
    }
}
impl From<Option<i64>> for Val {
    fn from(v: Option<i64>) -> Self {
        v.map(Val::Int).unwrap_or(Val::NullInt)
    }
}

/// `args![a, b, c]` builds the argument list of a query.
#[macro_export]
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::Val::from($v)),*][..] };
}

#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
}

/// One result row, read by column index (queries name their columns).
#[derive(Debug, Clone, PartialEq)]
pub struct Row(Vec<Option<Cell>>);

impl Row {
    fn cell(&self, i: usize) -> Result<&Option<Cell>, StoreError> {
        self.0.get(i).ok_or_else(|| StoreError::Db(format!("column {i} missing from row")))
    }
    pub fn text(&self, i: usize) -> Result<String, StoreError> {
        self.opt_text(i)?.ok_or_else(|| StoreError::Db(format!("column {i} is null")))
    }
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self.cell(i)? {
            None => Ok(None),
            Some(Cell::Text(s)) => Ok(Some(s.clone())),
            Some(other) => Err(StoreError::Db(format!("column {i}: expected text, found {other:?}"))),
        }
    }
    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        match self.cell(i)? {
            Some(Cell::Int(v)) => Ok(*v),
            Some(Cell::Float(f)) if f.fract() == 0.0 => Ok(*f as i64),
            other => Err(StoreError::Db(format!("column {i}: expected integer, found {other:?}"))),
        }
    }
    pub fn cell_is_null(&self, i: usize) -> bool {
        matches!(self.0.get(i), Some(None) | None)
    }
    pub fn bool(&self, i: usize) -> Result<bool, StoreError> {
        match self.cell(i)? {
            Some(Cell::Bool(b)) => Ok(*b),
            // SQLite keeps booleans as 0/1.
            Some(Cell::Int(v)) => Ok(*v != 0),
            other => Err(StoreError::Db(format!("column {i}: expected boolean, found {other:?}"))),
        }
    }
}

/// What can go wrong below the domain.
#[derive(Debug)]
pub enum StoreError {
    /// A refusal the use case decided (seats, rules, not found...).
    Domain(Error),
    /// A unique constraint; the text names the constraint or columns.
    Unique(String),
    /// A CHECK or foreign-key constraint.
    Constraint(String),
    /// Serialization failure, deadlock or busy database: run the unit again.
    Retry(String),
    Db(String),
}

impl StoreError {
    pub fn is_retry(&self) -> bool {
        matches!(self, StoreError::Retry(_))
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        StoreError::Domain(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Domain(e) => e,
            StoreError::Unique(what) => Error::new(Code::Conflict, format!("That conflicts with an existing record ({what}).")),
            StoreError::Constraint(what) => {
                tracing::error!(%what, "constraint violated");
                Error::new(Code::Conflict, "The change would break a database constraint and was not applied.")
            }
            StoreError::Retry(what) => Error::new(Code::Conflict, format!("The database stayed busy; try again ({what}).")),
            StoreError::Db(what) => {
                tracing::error!(%what, "database error");
                Error::internal("A database error occurred; nothing was changed.")
            }
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let msg = db.message().to_string();
            let what = db.constraint().map(str::to_string).unwrap_or_else(|| msg.clone());
            return match code.as_str() {
                // PostgreSQL SQLSTATEs
                "23505" => StoreError::Unique(what),
                "23514" | "23503" => StoreError::Constraint(what),
                "40001" | "40P01" => StoreError::Retry(msg),
                // SQLite extended result codes: UNIQUE, PRIMARYKEY; CHECK, FOREIGNKEY; BUSY, LOCKED
                "2067" | "1555" => StoreError::Unique(what),
                "275" | "787" => StoreError::Constraint(what),
                "5" | "6" | "517" | "261" | "262" => StoreError::Retry(msg),
                _ => StoreError::Db(format!("{code}: {msg}")),
            };
        }
        match e {
            sqlx::Error::PoolTimedOut => StoreError::Retry("pool timed out".into()),
            other => StoreError::Db(other.to_string()),
        }
    }
}

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
    Sqlite { writer: Arc<Writer>, reader: SqlitePool },
    /// A pool for reads and general writes, and per-org lanes (group-committed
    /// writers, see `writer.rs`) for the hot path of licence changes.
    Postgres { pool: PgPool, lanes: Arc<Vec<Arc<Writer>>> },
}

#[derive(Clone)]
pub struct Store {
    pools: Pools,
}

impl Store {
    /// Opens `postgres://…` URLs with PostgreSQL and anything else as a SQLite
    /// file path (or `sqlite:` URL), creating the file if needed, then migrates.
    pub async fn open(database: &str, opts: StoreOptions) -> Result<Store, StoreError> {
        let store = if database.starts_with("postgres://") || database.starts_with("postgresql://") {
            let connect = PgConnectOptions::from_str(database)?;
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(connect.clone())
                .await?;
            let lanes = (0..(opts.max_connections / 2).max(2))
                .map(|_| Writer::new(WriterConn::Postgres(None, Box::new(connect.clone()))))
                .collect();
            Store {
                pools: Pools::Postgres {
                    pool,
                    lanes: Arc::new(lanes),
                },
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
                .pragma("cache_size", "-65536");
            let writer = Writer::new(crate::writer::connect(&connect).await?);
            let reader = SqlitePoolOptions::new()
                .max_connections(opts.max_connections.max(2))
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(connect.read_only(true))
                .await?;
            Store {
                pools: Pools::Sqlite { writer, reader },
            }
        };
        crate::migrations::migrate(&store).await?;
        Ok(store)
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
            Pools::Postgres { pool, .. } => Tx::Postgres(pool.begin().await?),
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
            Pools::Postgres { pool, .. } => Tx::Postgres(pool.begin_with("BEGIN READ ONLY").await?),
        })
    }

    /// A connection for reads that need no consistent snapshot across
    /// statements (one round trip each, no BEGIN/COMMIT).
    pub async fn read_conn(&self) -> Result<Tx, StoreError> {
        Ok(match &self.pools {
            Pools::Sqlite { reader, .. } => Tx::SqliteConn(reader.acquire().await?),
            Pools::Postgres { pool, .. } => Tx::PostgresConn(pool.acquire().await?),
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

    pub async fn close(&self) {
        match &self.pools {
            Pools::Sqlite { writer, reader } => {
                writer.flush().await;
                reader.close().await;
            }
            Pools::Postgres { pool, lanes } => {
                for lane in lanes.iter() {
                    lane.flush().await;
                }
                pool.close().await
            }
        }
    }
}

/// A transaction, or (for reads that need no snapshot) a plain connection.
pub enum Tx {
    /// A unit of work in a group-committed write transaction (SQLite's one
    /// writer, or a PostgreSQL lane).
    Unit(WriteUnit),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    SqliteConn(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    PostgresConn(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

/// Runs `$body` with `$c` bound to the engine's connection (inside the
/// transaction, or the plain connection) and `$to_row` to its row converter.
macro_rules! with_conn {
    ($tx:expr, |$c:ident, $to_row:ident| $body:expr) => {
        match $tx {
            Tx::Unit(u) => match u.conn()? {
                WriterConn::Sqlite(c) => {
                    let $c: &mut sqlx::SqliteConnection = c;
                    let $to_row = sqlite_row;
                    $body
                }
                WriterConn::Postgres(Some(c), _) => {
                    let $c: &mut sqlx::PgConnection = c;
                    let $to_row = pg_row;
                    $body
                }
                WriterConn::Postgres(None, _) => return Err(StoreError::Retry("the lane's connection was lost".into())),
            },
            Tx::Sqlite(t) => {
                let $c: &mut sqlx::SqliteConnection = &mut **t;
                let $to_row = sqlite_row;
                $body
            }
            Tx::SqliteConn(t) => {
                let $c: &mut sqlx::SqliteConnection = &mut **t;
                let $to_row = sqlite_row;
                $body
            }
            Tx::Postgres(t) => {
                let $c: &mut sqlx::PgConnection = &mut **t;
                let $to_row = pg_row;
                $body
            }
            Tx::PostgresConn(t) => {
                let $c: &mut sqlx::PgConnection = &mut **t;
                let $to_row = pg_row;
                $body
            }
        }
    };
}

macro_rules! bind_all {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Val::Int(v) => q.bind(*v),
                Val::Text(s) => q.bind(s.clone()),
                Val::Bool(b) => q.bind(*b),
                Val::NullInt => q.bind(None::<i64>),
                Val::NullText => q.bind(None::<String>),
            };
        }
        q
    }};
}

fn sqlite_row(r: &SqliteRow) -> Result<Row, StoreError> {
    let mut cells = Vec::with_capacity(r.len());
    for i in 0..r.len() {
        let raw = r.try_get_raw(i)?;
        if raw.is_null() {
            cells.push(None);
            continue;
        }
        // SQLite is dynamically typed: read the value's own storage class.
        let kind = raw.type_info().name().to_string();
        cells.push(Some(match kind.as_str() {
            "INTEGER" | "BOOLEAN" | "INT" | "BIGINT" => Cell::Int(r.try_get_unchecked::<i64, _>(i)?),
            "REAL" | "FLOAT" | "DOUBLE" => Cell::Float(r.try_get_unchecked::<f64, _>(i)?),
            _ => Cell::Text(r.try_get_unchecked::<String, _>(i)?),
        }));
    }
    Ok(Row(cells))
}

fn pg_row(r: &PgRow) -> Result<Row, StoreError> {
    let mut cells = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let cell = match col.type_info().name() {
            "INT8" => r.try_get::<Option<i64>, _>(i)?.map(Cell::Int),
            "INT4" => r.try_get::<Option<i32>, _>(i)?.map(|v| Cell::Int(v.into())),
            "INT2" => r.try_get::<Option<i16>, _>(i)?.map(|v| Cell::Int(v.into())),
            "BOOL" => r.try_get::<Option<bool>, _>(i)?.map(Cell::Bool),
            "FLOAT8" => r.try_get::<Option<f64>, _>(i)?.map(Cell::Float),
            "FLOAT4" => r.try_get::<Option<f32>, _>(i)?.map(|v| Cell::Float(v.into())),
            _ => r.try_get::<Option<String>, _>(i)?.map(Cell::Text),
        };
        cells.push(cell);
    }
    Ok(Row(cells))
}

impl Tx {
    pub fn backend(&self) -> Backend {
        match self {
            Tx::Unit(u) if u.is_postgres() => Backend::Postgres,
            Tx::Unit(_) | Tx::Sqlite(_) | Tx::SqliteConn(_) => Backend::Sqlite,
            Tx::Postgres(_) | Tx::PostgresConn(_) => Backend::Postgres,
        }
    }

    /// Executes a statement; returns the number of rows it affected.
    pub async fn exec(&mut self, sql: &str, args: &[Val]) -> Result<u64, StoreError> {
        Ok(with_conn!(self, |c, _to_row| bind_all!(sqlx::query(sql), args)
            .execute(c)
            .await?
            .rows_affected()))
    }

    pub async fn rows(&mut self, sql: &str, args: &[Val]) -> Result<Vec<Row>, StoreError> {
        with_conn!(self, |c, to_row| bind_all!(sqlx::query(sql), args)
            .fetch_all(c)
            .await?
            .iter()
            .map(to_row)
            .collect())
    }

    pub async fn opt_row(&mut self, sql: &str, args: &[Val]) -> Result<Option<Row>, StoreError> {
        with_conn!(self, |c, to_row| bind_all!(sqlx::query(sql), args)
            .fetch_optional(c)
            .await?
            .as_ref()
            .map(to_row)
            .transpose())
    }

    /// `INSERT INTO <head> VALUES (...), (...)`: the rows (all of one width)
    /// go in multi-row statements of [`ROWS_PER_STATEMENT`] rows.
    pub async fn insert_rows(&mut self, head: &str, rows: Vec<Vec<Val>>) -> Result<(), StoreError> {
        let width = rows.first().map_or(0, Vec::len);
        let mut rows = rows.into_iter();
        loop {
            let batch: Vec<Vec<Val>> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
            if batch.is_empty() {
                return Ok(());
            }
            let mut sql = String::with_capacity(head.len() + 20 + batch.len() * width * 6);
            sql.push_str("INSERT INTO ");
            sql.push_str(head);
            sql.push_str(" VALUES ");
            let mut vals = Vec::with_capacity(batch.len() * width);
            for (i, row) in batch.into_iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                for j in 0..width {
                    if j > 0 {
                        sql.push_str(", ");
                    }
                    sql.push('$');
                    sql.push_str(&(i * width + j + 1).to_string());
                }
                sql.push(')');
                vals.extend(row);
            }
            self.exec(&sql, &vals).await?;
        }
    }

    pub async fn raw(&mut self, sql: &str) -> Result<(), StoreError> {
        with_conn!(self, |c, _to_row| sqlx::raw_sql(sql).execute(c).await.map(|_| ())?);
        Ok(())
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Unit(u) => u.commit().await?,
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
            Tx::SqliteConn(_) | Tx::PostgresConn(_) => {}
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        match self {
            Tx::Unit(u) => u.rollback().await?,
            Tx::Sqlite(tx) => tx.rollback().await?,
            Tx::Postgres(tx) => tx.rollback().await?,
            Tx::SqliteConn(_) | Tx::PostgresConn(_) => {}
        }
        Ok(())
    }
}

/// Rows at a time in a multi-row statement or `IN` list: well under every
/// engine's limit on parameters (SQLite 32,766; PostgreSQL 65,535).
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

/// How a unit of work ended: done (committed or refused), or to be run again.
pub enum Outcome<T> {
    Done(Result<T, Error>),
    Retry(StoreError),
}

/// Commits a successful unit of work, rolls back a failed one, and says
/// whether the failure is worth another attempt.
pub async fn finish<T>(tx: Tx, result: Result<T, StoreError>) -> Outcome<T> {
    match result {
        Ok(v) => match tx.commit().await {
            Ok(()) => Outcome::Done(Ok(v)),
            Err(e) if e.is_retry() => Outcome::Retry(e),
            Err(e) => Outcome::Done(Err(e.into())),
        },
        Err(e) => {
            if let Err(rb) = tx.rollback().await {
                tracing::warn!(error = ?rb, "rollback failed");
            }
            if e.is_retry() {
                Outcome::Retry(e)
            } else {
                Outcome::Done(Err(e.into()))
            }
        }
    }
}

/// Exponential backoff with jitter between attempts of a unit of work.
pub async fn backoff(attempt: u32) {
    let base = 2u64.saturating_pow(attempt.min(8));
    let jitter = rand::thread_rng().gen_range(0..=base);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

/// Runs `$body` (an expression using `$tx: &mut Tx` and `?` on
/// `StoreError`s) in one write transaction, retrying the whole unit on
/// serialization failures, deadlocks and busy errors. Evaluates to
/// `Result<T, allot_domain::Error>`.
#[macro_export]
macro_rules! in_transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            let mut $tx = match $store.begin().await {
                Ok(tx) => tx,
                Err(e) if e.is_retry() && attempt < 8 => {
                    attempt += 1;
                    $crate::backoff(attempt).await;
                    continue;
                }
                Err(e) => break Err(allot_domain::Error::from(e)),
            };
            let result = async { $body }.await;
            match $crate::finish($tx, result).await {
                $crate::Outcome::Done(r) => break r,
                $crate::Outcome::Retry(e) => {
                    attempt += 1;
                    if attempt > 8 {
                        break Err(allot_domain::Error::from(e));
                    }
                    $crate::backoff(attempt).await;
                }
            }
        }
    }};
}

/// A new opaque id: a prefix, then 10 characters of milliseconds and 16 random
/// characters in Crockford base32, so ids sort by creation time (which keyset
/// pagination relies on) and are unguessable.
pub fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    for i in (0..10).rev() {
        out.push(ALPHABET[((millis >> (i * 5)) & 31) as usize] as char);
    }
    let mut rng = rand::thread_rng();
    for _ in 0..16 {
        out.push(ALPHABET[rng.gen_range(0..32)] as char);
    }
    out
}
