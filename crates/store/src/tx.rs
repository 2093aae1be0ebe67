//! A transaction or a plain connection ([`Tx`]): statements run with `$n`
//! placeholders on both engines (rewritten as anonymous `?` for SQLite), rows
//! read back as [`Row`]s, many rows inserted with one statement
//! ([`PreparedRows`]).

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, Row as _, TypeInfo, ValueRef};
use std::borrow::Cow;

use std::sync::Arc;

use crate::changes::{ChangeFeed, Changes};
use crate::db::{Backend, Cell, PackedCell, Row, StoreError, Val};
use crate::shelf::Kept;
use crate::values::ColumnNames;
use crate::writer::{WriteUnit, WriterConn};

/// A transaction, or (for reads that need no snapshot) a plain connection.
pub enum Tx {
    /// A unit of work in a group-committed write transaction (SQLite's one
    /// writer, or a PostgreSQL lane).
    Unit(WriteUnit),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(PgTx),
    SqliteConn(Kept<sqlx::Sqlite>),
    PostgresConn(Kept<sqlx::Postgres>),
}

/// A PostgreSQL transaction of the pool, with what its writes changed
/// (published when it commits, see `crate::changes`).
pub struct PgTx {
    pub(crate) tx: sqlx::Transaction<'static, sqlx::Postgres>,
    pub(crate) changes: Changes,
    /// `None` for a read-only transaction.
    pub(crate) feed: Option<Arc<ChangeFeed>>,
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
                // Unsettled until the statement has finished: an error
                // (`?` in `$body`) or a drop half-way leaves it so.
                t.settled = false;
                let result = {
                    let $c: &mut sqlx::SqliteConnection = t.conn();
                    let $to_row = sqlite_row;
                    $body
                };
                t.settled = true;
                result
            }
            Tx::Postgres(t) => {
                let $c: &mut sqlx::PgConnection = &mut *t.tx;
                let $to_row = pg_row;
                $body
            }
            Tx::PostgresConn(t) => {
                t.settled = false;
                let result = {
                    let $c: &mut sqlx::PgConnection = t.conn();
                    let $to_row = pg_row;
                    $body
                };
                t.settled = true;
                result
            }
        }
    };
}

macro_rules! bind_all {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = BindVal::bind_val(q, a);
        }
        q
    }};
}

/// Binds one [`Val`] the way its engine takes it.
trait BindVal: Sized {
    fn bind_val(self, v: &Val) -> Self;
}

impl<'q> BindVal for sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    fn bind_val(self, v: &Val) -> Self {
        match v {
            Val::Int(v) => self.bind(*v),
            Val::Text(s) => self.bind(s.clone()),
            Val::Bool(b) => self.bind(*b),
            Val::NullInt => self.bind(None::<i64>),
            Val::NullText => self.bind(None::<String>),
            list => self.bind(json_list(list)),
        }
    }
}

impl<'q> BindVal for sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    fn bind_val(self, v: &Val) -> Self {
        match v {
            Val::Int(v) => self.bind(*v),
            Val::Text(s) => self.bind(s.clone()),
            Val::Bool(b) => self.bind(*b),
            Val::NullInt => self.bind(None::<i64>),
            Val::NullText => self.bind(None::<String>),
            Val::Texts(v) => self.bind(v.clone()),
            Val::Ints(v) => self.bind(v.clone()),
            Val::Bools(v) => self.bind(v.clone()),
        }
    }
}

/// A list value as SQLite reads it: a JSON array (a scalar as itself).
fn json_list(v: &Val) -> String {
    let mut json = String::from("[");
    let mut item = |i: usize, v: Val| {
        if i > 0 {
            json.push(',');
        }
        push_json_value(&mut json, &v);
    };
    match v {
        Val::Texts(l) => l.iter().enumerate().for_each(|(i, x)| item(i, Val::from(x.clone()))),
        Val::Ints(l) => l.iter().enumerate().for_each(|(i, x)| item(i, Val::from(*x))),
        Val::Bools(l) => l
            .iter()
            .enumerate()
            .for_each(|(i, x)| item(i, x.map(Val::Bool).unwrap_or(Val::NullInt))),
        scalar => item(0, scalar.clone()),
    }
    json.push(']');
    json
}

/// Appends `v` to `json` as a JSON value (booleans as SQLite's 0/1).
fn push_json_value(json: &mut String, v: &Val) {
    match v {
        Val::Int(n) => json.push_str(&n.to_string()),
        Val::Bool(b) => json.push_str(if *b { "1" } else { "0" }),
        Val::NullInt | Val::NullText => json.push_str("null"),
        list @ (Val::Texts(_) | Val::Ints(_) | Val::Bools(_)) => json.push_str(&json_list(list)),
        Val::Text(t) => push_json_string(json, t),
    }
}

/// `t` as a JSON string. Copies the runs between characters to escape
/// whole: a bulk job's audit rows carry their licence states as JSON text.
fn push_json_string(json: &mut String, t: &str) {
    json.push('"');
    let mut run = 0;
    for (i, b) in t.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b if b < 0x20 => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices end on character boundaries.
        json.push_str(&t[run..i]);
        if escaped.is_empty() {
            json.push_str(&format!("\\u{b:04x}"));
        } else {
            json.push_str(escaped);
        }
        run = i + 1;
    }
    json.push_str(&t[run..]);
    json.push('"');
}

/// Rewrites `$N` parameters as anonymous `?` ones, repeating each argument
/// in the order the parameters appear.
///
/// Why: SQLite finds a named parameter (`$7`, `?7`) by a linear scan of the
/// statement's parameter names, and sqlx asks for every parameter's name
/// when it binds, so binding n named parameters costs O(n²). A 500-row
/// multi-row INSERT has thousands; a 100,000-user bulk job spent two thirds
/// of its time in `sqlite3_bind_parameter_name`. Anonymous parameters have
/// no names to scan. Text in quotes and comments is copied unchanged.
fn anonymous_params<'a>(sql: &'a str, args: &'a [Val]) -> (Cow<'a, str>, Cow<'a, [Val]>) {
    if !sql.contains('$') {
        return (Cow::Borrowed(sql), Cow::Borrowed(args));
    }
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    // The argument each `?` binds, by index (None: NULL).
    let mut picks: Vec<Option<usize>> = Vec::with_capacity(args.len());
    let mut copied = 0; // bytes of `sql` already in `out`
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                // To the closing quote; a doubled quote is two adjacent strings here.
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += 1;
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'$' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                // A number past the arguments (or too long to parse) binds
                // NULL, as SQLite does with an unbound parameter.
                let n: usize = sql[start + 1..i].parse().unwrap_or(0);
                picks.push(n.checked_sub(1).filter(|k| *k < args.len()));
                out.push_str(&sql[copied..start]);
                out.push('?');
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
    // `$1, $2, ...` each once and in order (a multi-row INSERT's are): the
    // arguments bind as they are, without copying lists of thousands.
    let in_order = picks.len() == args.len() && picks.iter().enumerate().all(|(i, p)| *p == Some(i));
    if in_order {
        return (Cow::Owned(out), Cow::Borrowed(args));
    }
    let vals = picks
        .iter()
        .map(|p| p.and_then(|k| args.get(k)).cloned().unwrap_or(Val::NullText))
        .collect();
    (Cow::Owned(out), Cow::Owned(vals))
}

/// The column names of a result, from its first row.
fn names_of<R: sqlx::Row>(r: &R) -> ColumnNames {
    r.columns().iter().map(|c| Box::from(c.name())).collect::<Vec<_>>().into()
}

fn sqlite_row(r: &SqliteRow, names: &ColumnNames) -> Result<Row, StoreError> {
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
    Ok(Row {
        cells,
        names: names.clone(),
    })
}

fn pg_row(r: &PgRow, names: &ColumnNames) -> Result<Row, StoreError> {
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
    Ok(Row {
        cells,
        names: names.clone(),
    })
}

impl Tx {
    pub fn backend(&self) -> Backend {
        match self {
            Tx::Unit(u) if u.is_postgres() => Backend::Postgres,
            Tx::Unit(_) | Tx::Sqlite(_) | Tx::SqliteConn(_) => Backend::Sqlite,
            Tx::Postgres(_) | Tx::PostgresConn(_) => Backend::Postgres,
        }
    }

    /// Defers counting a versioned licence write of `org` to the commit of
    /// the writer's shared transaction; `false` when this is not a unit of
    /// it (the caller then counts it at once).
    pub(crate) fn defer_versioned_write(&mut self, org: &str) -> Result<bool, StoreError> {
        match self {
            Tx::Unit(u) if !u.is_postgres() => u.defer_versioned_write(org).map(|()| true),
            _ => Ok(false),
        }
    }

    /// Notes what this transaction's writes changed, for the entitlement
    /// index (see `crate::changes`); kept only if the writes are.
    pub(crate) fn note(&mut self, f: impl FnOnce(&mut Changes)) {
        match self {
            Tx::Unit(u) => u.note(f),
            Tx::Postgres(t) => f(&mut t.changes),
            // Read-only: nothing to note.
            Tx::Sqlite(_) | Tx::SqliteConn(_) | Tx::PostgresConn(_) => {}
        }
    }

    /// Whether a versioned licence write of `org` in this transaction is
    /// still to be counted (see [`Tx::defer_versioned_write`]).
    pub(crate) fn versioned_write_pending(&self, org: &str) -> bool {
        match self {
            Tx::Unit(u) => u.versioned_write_pending(org),
            _ => false,
        }
    }

    /// The statement as this engine binds it fastest (see [`anonymous_params`]).
    fn for_engine<'a>(&self, sql: &'a str, args: &'a [Val]) -> (Cow<'a, str>, Cow<'a, [Val]>) {
        match self.backend() {
            Backend::Sqlite => anonymous_params(sql, args),
            Backend::Postgres => (Cow::Borrowed(sql), Cow::Borrowed(args)),
        }
    }

    /// Whether the statement is worth keeping prepared on its connection.
    /// Not on PostgreSQL when a list parameter is long (a job's chunk of
    /// thousands of users): a statement prepared on a connection is given a
    /// generic plan after its fifth run there, and a generic plan cannot know
    /// how long the list is. For a chunk of 5,000 users it read an org's
    /// assignments by the wrong index and tested each row against the whole
    /// list (a DELETE took 1.2-2.0 s instead of ~20 ms, measured with
    /// `bench csv --backend postgres`). An unnamed statement is planned for
    /// the values it is bound to, every time; planning is cheap next to a
    /// statement over thousands of rows. (Forcing custom plans for the whole
    /// transaction instead, `plan_cache_mode`, also replans every foreign
    /// key check: 3-4x slower inserts, measured.)
    fn keeps_plan(&self, args: &[Val]) -> bool {
        const LONG_LIST: usize = 64;
        self.backend() == Backend::Sqlite
            || !args.iter().any(|a| match a {
                Val::Texts(v) => v.len() > LONG_LIST,
                Val::Ints(v) => v.len() > LONG_LIST,
                Val::Bools(v) => v.len() > LONG_LIST,
                _ => false,
            })
    }

    /// Executes a statement; returns the number of rows it affected.
    pub async fn exec(&mut self, sql: &str, args: &[Val]) -> Result<u64, StoreError> {
        let (sql, args) = self.for_engine(sql, args);
        let (sql, args) = (sql.as_ref(), args.as_ref());
        let keep = self.keeps_plan(args);
        Ok(with_conn!(self, |c, _to_row| bind_all!(sqlx::query(sql), args)
            .persistent(keep)
            .execute(c)
            .await?
            .rows_affected()))
    }

    pub async fn rows(&mut self, sql: &str, args: &[Val]) -> Result<Vec<Row>, StoreError> {
        let (sql, args) = self.for_engine(sql, args);
        let (sql, args) = (sql.as_ref(), args.as_ref());
        let keep = self.keeps_plan(args);
        with_conn!(self, |c, to_row| {
            let rows = bind_all!(sqlx::query(sql), args).persistent(keep).fetch_all(c).await?;
            let names = rows.first().map(names_of).unwrap_or_else(|| Vec::new().into());
            rows.iter().map(|r| to_row(r, &names)).collect()
        })
    }

    pub async fn opt_row(&mut self, sql: &str, args: &[Val]) -> Result<Option<Row>, StoreError> {
        let (sql, args) = self.for_engine(sql, args);
        let (sql, args) = (sql.as_ref(), args.as_ref());
        let keep = self.keeps_plan(args);
        with_conn!(self, |c, to_row| bind_all!(sqlx::query(sql), args)
            .persistent(keep)
            .fetch_optional(c)
            .await?
            .as_ref()
            .map(|r| to_row(r, &names_of(r)))
            .transpose())
    }

    /// Many rows at once: `SELECT <columns> <rest>`, where `rest` is the
    /// FROM clause onwards and each column a plain (or qualified) column
    /// name. Rows come back in no particular order.
    ///
    /// Why: sqlx copies every SQLite cell into its own allocation and hands
    /// rows over from its worker thread one by one, about 10 µs for a row of
    /// six columns, which made reading a chunk of 2,000 users cost more than
    /// planning them. On SQLite the rows are packed into one JSON array by
    /// the database and unpacked here. On PostgreSQL packing with
    /// `json_agg` measured no faster than reading the rows, so it does not.
    pub async fn rows_packed(&mut self, columns: &[&str], rest: &str, args: &[Val]) -> Result<Vec<Row>, StoreError> {
        let cols = columns.join(", ");
        if self.backend() == Backend::Postgres {
            return self.rows(&format!("SELECT {cols} {rest}"), args).await;
        }
        // Named c0, c1, ... inside, so that qualified columns (`u.id`) and
        // lists given as one string ("id, email") both work outside.
        let each: Vec<&str> = columns.iter().flat_map(|c| c.split(',')).map(str::trim).collect();
        let inner: Vec<String> = each.iter().enumerate().map(|(i, c)| format!("{c} AS c{i}")).collect();
        let outer: Vec<String> = (0..each.len()).map(|i| format!("c{i}")).collect();
        let packed = self
            .opt_row(
                &format!(
                    "SELECT json_group_array(json_array({})) AS packed FROM (SELECT {} {rest})",
                    outer.join(", "),
                    inner.join(", ")
                ),
                args,
            )
            .await?;
        let Some(json) = packed.map(|r| r.opt_text("packed")).transpose()?.flatten() else {
            return Ok(Vec::new());
        };
        let rows: Vec<Vec<PackedCell>> =
            serde_json::from_str(&json).map_err(|e| StoreError::Db(format!("packed rows do not parse: {e}")))?;
        // Named as the columns are outside: the part after a table's alias
        // (`u.id` is `id`), or the name given with AS.
        let names: ColumnNames = each
            .iter()
            .map(|c| {
                let lower = c.to_ascii_lowercase();
                let name = match lower.rfind(" as ") {
                    Some(k) => &c[k + 4..],
                    None => c.rsplit('.').next().unwrap_or(c),
                };
                Box::from(name.trim())
            })
            .collect::<Vec<_>>()
            .into();
        Ok(rows
            .into_iter()
            .map(|cells| Row {
                cells: cells.into_iter().map(|c| c.0).collect(),
                names: names.clone(),
            })
            .collect())
    }

    /// `INSERT INTO <head> ...` of many rows (all of one width), in
    /// statements of up to [`BULK_ROWS_PER_STATEMENT`] rows.
    ///
    /// A column with the same value in every row of a statement (the org,
    /// the time, the actor) is bound once. The others travel as list
    /// parameters: one JSON array unpacked by `json_each` on SQLite, one
    /// array per column unpacked by `unnest` on PostgreSQL. Thousands of
    /// values thus cost a few binds, not thousands of per-value argument
    /// copies (and on SQLite an O(n²) parameter lookup).
    pub async fn insert_rows(&mut self, head: &str, rows: Vec<Vec<Val>>) -> Result<(), StoreError> {
        let prepared = PreparedRows::new(self.backend(), head, &rows);
        self.insert_prepared(prepared).await
    }

    /// Runs the statements of a [`PreparedRows`] (made for this engine).
    pub async fn insert_prepared(&mut self, prepared: PreparedRows) -> Result<(), StoreError> {
        if prepared.backend != self.backend() {
            return Err(StoreError::Db("rows prepared for another engine".into()));
        }
        for (sql, args) in &prepared.statements {
            self.exec(sql, args).await?;
        }
        Ok(())
    }

    /// [`Tx::insert_prepared`], answering how many rows were inserted
    /// (a conditional insert may insert none).
    pub async fn insert_prepared_counted(&mut self, prepared: PreparedRows) -> Result<u64, StoreError> {
        if prepared.backend != self.backend() {
            return Err(StoreError::Db("rows prepared for another engine".into()));
        }
        let mut n = 0;
        for (sql, args) in &prepared.statements {
            n += self.exec(sql, args).await?;
        }
        Ok(n)
    }

    /// `<column> IN` the list parameter `$n` (a [`Val::Texts`]): `= ANY($n)`
    /// on PostgreSQL, `IN (SELECT value FROM json_each($n))` on SQLite. One
    /// parameter however long the list, so chunks of thousands of ids need
    /// no batching and bind in one step.
    pub fn any_of(&self, column: &str, n: usize) -> String {
        match self.backend() {
            Backend::Postgres => format!("{column} = ANY(${n})"),
            Backend::Sqlite => format!("{column} IN (SELECT value FROM json_each(${n}))"),
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
            Tx::Postgres(t) => commit_postgres(t).await?,
            Tx::SqliteConn(_) | Tx::PostgresConn(_) => {}
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        match self {
            Tx::Unit(u) => u.rollback().await?,
            Tx::Sqlite(tx) => tx.rollback().await?,
            Tx::Postgres(t) => t.tx.rollback().await?,
            Tx::SqliteConn(_) | Tx::PostgresConn(_) => {}
        }
        Ok(())
    }
}

/// Commits a pool transaction. One that changed what entitlements depend
/// on is committed, announced to the other processes and published in a task of
/// its own: a caller that goes away during the COMMIT cannot leave a
/// committed change unpublished.
async fn commit_postgres(t: PgTx) -> Result<(), StoreError> {
    let PgTx { tx, changes, feed } = t;
    let Some(feed) = feed.filter(|_| !changes.is_empty()) else {
        tx.commit().await?;
        return Ok(());
    };
    let publisher = feed.clone();
    let task = tokio::spawn(async move {
        tx.commit().await?;
        publisher.notify_later(&changes);
        Ok::<_, StoreError>(publisher.publish(changes))
    });
    let ticket = task.await.map_err(|e| StoreError::Db(format!("the commit stopped: {e}")))??;
    feed.wait(ticket).await;
    Ok(())
}

/// The statements of a multi-row INSERT with their arguments, built for one
/// engine apart from any transaction (see [`Tx::insert_rows`]): a bulk job
/// builds the next chunk's while the writer writes the current one.
pub struct PreparedRows {
    backend: Backend,
    statements: Vec<(String, Vec<Val>)>,
}

impl PreparedRows {
    pub fn new(backend: Backend, head: &str, rows: &[Vec<Val>]) -> PreparedRows {
        PreparedRows::with_shared(backend, head, &[], rows)
    }

    /// [`PreparedRows::new`] for rows whose first columns hold the same
    /// values in every row (the org, the time, the actor): `shared` gives
    /// them once and each row holds only the columns after them, so a bulk
    /// job does not clone and compare them thousands of times.
    pub fn with_shared<'a>(backend: Backend, head: &str, shared: &'a [Val], rows: &'a [Vec<Val>]) -> PreparedRows {
        PreparedRows::with_shared_select(backend, head, shared, rows, &[], None)
    }

    /// [`PreparedRows::with_shared`] with more: `extra` expressions for the
    /// last columns of `head` (after the given ones), and a `condition`
    /// the rows are inserted under (all or none). In both, `{N}` stands for
    /// the value of the given column N (shared ones first), e.g.
    /// `(SELECT email FROM users WHERE id = {5})`. Rows keep their order.
    pub fn with_shared_select<'a>(
        backend: Backend,
        head: &str,
        shared: &'a [Val],
        rows: &'a [Vec<Val>],
        extra: &[&str],
        condition: Option<&str>,
    ) -> PreparedRows {
        let k = shared.len();
        let width = k + rows.first().map_or(0, Vec::len);
        let (table, columns) = head.split_once('(').unwrap_or((head, ""));
        let pg = backend == Backend::Postgres;
        let mut statements = Vec::new();
        for batch in rows.chunks(BULK_ROWS_PER_STATEMENT) {
            let get = |r: &'a [Val], j: usize| value_at(shared, r, j);
            let cell = |r: &'a [Val], j: usize| get(r, j).cloned().unwrap_or(Val::NullText);
            let constant: Vec<bool> = (0..width)
                .map(|j| j < k || batch.iter().all(|r| get(r, j) == get(&batch[0], j)))
                .collect();
            let varying: Vec<usize> = (0..width).filter(|&j| !constant[j]).collect();
            let mut args: Vec<Val> = Vec::new();
            let mut picks: Vec<String> = Vec::with_capacity(width);
            for (j, &same) in constant.iter().enumerate() {
                if same {
                    args.push(cell(&batch[0], j));
                    picks.push(format!("${}", args.len()));
                } else {
                    let k = varying.iter().position(|&v| v == j).unwrap_or(0);
                    picks.push(match (pg, varying.len()) {
                        (true, _) => format!("u.c{k}"),
                        // Qualified: an extra select may hold a json_each of its own.
                        (false, 1) => "src.value".into(),
                        (false, _) => format!("src.value->>{k}"),
                    });
                }
            }
            let source = if varying.is_empty() {
                // Every row alike (a single row, say).
                format!("(VALUES {}) AS n", vec!["(1)"; batch.len()].join(", "))
            } else if pg {
                let mut arrays = Vec::with_capacity(varying.len());
                for &j in &varying {
                    args.push(column_list(batch.iter().map(|r| cell(r, j))));
                    arrays.push(format!("${}", args.len()));
                }
                let names: Vec<String> = (0..varying.len()).map(|k| format!("c{k}")).collect();
                format!("unnest({}) AS u({})", arrays.join(", "), names.join(", "))
            } else {
                let mut json = String::with_capacity(batch.len() * varying.len() * 24);
                json.push('[');
                for (i, row) in batch.iter().enumerate() {
                    if i > 0 {
                        json.push(',');
                    }
                    if varying.len() > 1 {
                        json.push('[');
                    }
                    for (n, &j) in varying.iter().enumerate() {
                        if n > 0 {
                            json.push(',');
                        }
                        push_json_value(&mut json, get(row, j).unwrap_or(&Val::NullText));
                    }
                    if varying.len() > 1 {
                        json.push(']');
                    }
                }
                json.push(']');
                args.push(Val::Text(json));
                format!("json_each(${}) AS src", args.len())
            };
            let fill = |template: &str| {
                let mut out = template.to_string();
                // Highest first, so that `{1}` does not match inside `{12}`.
                for (j, pick) in picks.iter().enumerate().rev() {
                    out = out.replace(&format!("{{{j}}}"), pick);
                }
                out
            };
            let mut select: Vec<String> = picks.clone();
            select.extend(extra.iter().map(|e| fill(e)));
            let mut sql = format!("INSERT INTO {table}({columns} SELECT {} FROM {source}", select.join(", "));
            if let Some(c) = condition {
                sql.push_str(" WHERE ");
                sql.push_str(&fill(c));
            }
            statements.push(match backend {
                // Rewritten now, not when run (see `anonymous_params`).
                Backend::Sqlite => match anonymous_params(&sql, &args) {
                    (Cow::Owned(anon), Cow::Borrowed(_)) => (anon, args),
                    (anon, vals) => (anon.into_owned(), vals.into_owned()),
                },
                Backend::Postgres => (sql, args),
            });
        }
        PreparedRows { backend, statements }
    }
}

/// Column `j` of a row given as `shared` columns followed by `row`'s own.
fn value_at<'a>(shared: &'a [Val], row: &'a [Val], j: usize) -> Option<&'a Val> {
    match j.checked_sub(shared.len()) {
        None => shared.get(j),
        Some(own) => row.get(own),
    }
}

/// Rows per statement of [`Tx::insert_rows`]: its few list parameters have
/// no engine limit; this bounds the memory of one statement.
pub(crate) const BULK_ROWS_PER_STATEMENT: usize = 5_000;

/// One column's values as a typed list parameter (the type of its first
/// non-null value; PostgreSQL needs the array typed even when it has nulls).
fn column_list(values: impl Iterator<Item = Val>) -> Val {
    let values: Vec<Val> = values.collect();
    match values.iter().find(|v| !matches!(v, Val::NullInt | Val::NullText)) {
        Some(Val::Int(_)) => Val::Ints(
            values
                .into_iter()
                .map(|v| if let Val::Int(i) = v { Some(i) } else { None })
                .collect(),
        ),
        Some(Val::Bool(_)) => Val::Bools(
            values
                .into_iter()
                .map(|v| if let Val::Bool(b) = v { Some(b) } else { None })
                .collect(),
        ),
        _ => Val::Texts(
            values
                .into_iter()
                .map(|v| if let Val::Text(t) = v { Some(t) } else { None })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_parameters_become_anonymous_in_order_of_appearance() {
        let args = [Val::Int(1), Val::Text("b".into()), Val::Int(3)];
        let (sql, vals) = anonymous_params("SELECT $2, $1 FROM t WHERE a = $2 AND b = $3", &args);
        assert_eq!(sql, "SELECT ?, ? FROM t WHERE a = ? AND b = ?");
        assert_eq!(
            vals.as_ref(),
            &[Val::Text("b".into()), Val::Int(1), Val::Text("b".into()), Val::Int(3)]
        );
    }

    #[test]
    fn quoted_text_and_comments_are_left_alone() {
        let args = [Val::Int(7)];
        let (sql, vals) = anonymous_params("SELECT '$1', \"$1\", $1 -- $1\nFROM t WHERE x LIKE $1 ESCAPE '\\'", &args);
        assert_eq!(sql, "SELECT '$1', \"$1\", ? -- $1\nFROM t WHERE x LIKE ? ESCAPE '\\'");
        assert_eq!(vals.len(), 2);
    }

    #[test]
    fn statements_without_parameters_are_borrowed_and_missing_ones_bind_null() {
        let (sql, _) = anonymous_params("SELECT 1", &[]);
        assert!(matches!(sql, Cow::Borrowed(_)));
        let (sql, vals) = anonymous_params("SELECT $1, $9, $99999999999999999999999", &[Val::Int(1)]);
        assert_eq!(sql, "SELECT ?, ?, ?");
        assert_eq!(vals.as_ref(), &[Val::Int(1), Val::NullText, Val::NullText]);
    }

    #[test]
    fn arguments_used_once_in_order_are_bound_without_a_copy() {
        let args = [Val::Int(1), Val::Text("a long list".into())];
        let (sql, vals) = anonymous_params("INSERT INTO t (a, b) SELECT $1, value FROM json_each($2)", &args);
        assert_eq!(sql, "INSERT INTO t (a, b) SELECT ?, value FROM json_each(?)");
        assert!(matches!(vals, Cow::Borrowed(_)));
        assert_eq!(vals.as_ref(), &args);
        // One argument fewer used than given: copied, in the order used.
        let (_, vals) = anonymous_params("SELECT $1", &args);
        assert!(matches!(vals, Cow::Owned(_)));
        assert_eq!(vals.as_ref(), &[Val::Int(1)]);
    }

    #[test]
    fn prepared_rows_are_rewritten_for_sqlite_once() {
        let rows: Vec<Vec<Val>> = (0..3).map(|i| vec![Val::from("org"), Val::Int(i)]).collect();
        let lite = PreparedRows::new(Backend::Sqlite, "t (org, n)", &rows);
        assert_eq!(lite.statements.len(), 1);
        assert_eq!(
            lite.statements[0].0,
            "INSERT INTO t (org, n) SELECT ?, src.value FROM json_each(?) AS src"
        );
        assert_eq!(lite.statements[0].1, vec![Val::from("org"), Val::Text("[0,1,2]".into())]);
        let pg = PreparedRows::new(Backend::Postgres, "t (org, n)", &rows);
        assert_eq!(
            pg.statements[0].0,
            "INSERT INTO t (org, n) SELECT $1, u.c0 FROM unnest($2) AS u(c0)"
        );
    }

    #[test]
    fn shared_columns_prepare_the_same_statements_as_full_rows() {
        let shared = [Val::from("org"), Val::from("2026-11-30")];
        let own: Vec<Vec<Val>> = (0..3).map(|i| vec![Val::Int(i), Val::Text(format!("say \"{i}\""))]).collect();
        let full: Vec<Vec<Val>> = own.iter().map(|r| shared.iter().chain(r).cloned().collect()).collect();
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let a = PreparedRows::with_shared(backend, "t (org, at, n, s)", &shared, &own);
            let b = PreparedRows::new(backend, "t (org, at, n, s)", &full);
            assert_eq!(a.statements, b.statements, "{backend:?}");
        }
        // A shared column is bound once even when there is a single row.
        let one = PreparedRows::with_shared(Backend::Sqlite, "t (org, at, n, s)", &shared, &own[..1]);
        assert_eq!(one.statements[0].1[0], Val::from("org"));
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_control_characters() {
        let text = "plain {\"a\":[1]} back\\slash\nline\ttab\u{1}bell é € 😀";
        let mut json = String::new();
        push_json_string(&mut json, text);
        assert_eq!(serde_json::from_str::<String>(&json).unwrap(), text);
        assert!(
            json.contains("\\u0001") && json.contains("\\u000a") && json.contains("é € 😀"),
            "{json}"
        );
        let mut empty = String::new();
        push_json_string(&mut empty, "");
        assert_eq!(empty, "\"\"");
    }
}
