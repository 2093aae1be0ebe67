//! Which processes have a PostgreSQL database open, so that the others can
//! tell when one died without announcing what it committed last.
//!
//! A process announces its commits right after them ([`crate::changes`]);
//! the one way to lose an announcement is to die between a COMMIT and its
//! NOTIFY. Rather than numbering every transaction (a row bumped per
//! commit cost a fifth of PostgreSQL's changes per second), each process
//! writes one row when it opens the database ([`enter`]), keeps one
//! connection named after it for as long as it lives, and names every
//! other connection after itself too (`application_name`). A process whose
//! presence connection is gone and whose other connections are gone or idle
//! for a moment (so no COMMIT of its own can still be under way) died; a
//! reader that sees it ([`processes`]) reads everything again, once.
//! A process that closes its store cleanly sends what waits and removes its
//! row ([`Presence::leave`]): nothing to read again then.
//!
//! A process that follows the others' commits (a server) marks its row
//! `listening` ([`Presence::listen`]): a server that sees no other listener
//! announces nothing (see `changes.rs`, `Announcing`).
//!
//! The row is durable, so a process that wrote and died between two looks
//! is still seen. Rows of processes gone for a while are removed by the
//! others ([`forget_long_gone`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;
use tokio::sync::oneshot;

use crate::db::StoreError;

/// A process's connections are named `{NAME_PREFIX}{origin}`; its presence
/// connection `{NAME_PREFIX}{origin}{PRESENCE_SUFFIX}` (`application_name`).
const NAME_PREFIX: &str = "allot ";
const PRESENCE_SUFFIX: &str = " presence";

/// The `application_name` of a process's connections.
pub(crate) fn connection_name(origin: &str) -> String {
    format!("{NAME_PREFIX}{origin}")
}

/// The `application_name` of its presence connection.
fn presence_name(origin: &str) -> String {
    format!("{NAME_PREFIX}{origin}{PRESENCE_SUFFIX}")
}

/// How long a dead process's idle connections must have been idle before
/// its death counts as settled (a COMMIT it sent just before dying is
/// executed well within it).
const SETTLED_AFTER: &str = "2 seconds";

/// How often the presence connection is checked (and made again).
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long after a process was first seen gone its row is removed.
const FORGET_AFTER: chrono::Duration = chrono::Duration::minutes(10);

/// This process's presence: its row and the connection that keeps it.
pub struct Presence {
    origin: String,
    /// Whether this process listens (kept when the row is written again).
    listening: Arc<AtomicBool>,
    stop: std::sync::Mutex<Option<oneshot::Sender<bool>>>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Writes this process's row and keeps its presence connection until
/// [`Presence::leave`] (or the process's end).
pub(crate) async fn enter(connect: &PgConnectOptions, origin: &str) -> Result<Presence, StoreError> {
    let listening = Arc::new(AtomicBool::new(false));
    let conn = present(connect, origin, false).await?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(keep(conn, connect.clone(), origin.to_string(), listening.clone(), stopped));
    Ok(Presence {
        origin: origin.to_string(),
        listening,
        stop: std::sync::Mutex::new(Some(stop)),
        task: tokio::sync::Mutex::new(Some(task)),
    })
}

/// Opens the presence connection and (again) writes the row.
async fn present(connect: &PgConnectOptions, origin: &str, listening: bool) -> Result<PgConnection, sqlx::Error> {
    // Over TCP, the database notices a host that vanished within seconds
    // rather than the system's two hours (ignored on a Unix socket). Set at
    // connection start: sent as one prepared statement, three SETs were
    // refused ("cannot insert multiple commands") and never took effect.
    let options = connect.clone().application_name(&presence_name(origin)).options([
        ("tcp_keepalives_idle", "5"),
        ("tcp_keepalives_interval", "2"),
        ("tcp_keepalives_count", "3"),
    ]);
    let mut conn = PgConnection::connect_with(&options).await?;
    sqlx::query(
        "INSERT INTO processes (origin, started_at, listening) VALUES ($1, $2, $3) \
         ON CONFLICT (origin) DO UPDATE SET gone_at = NULL, listening = $3",
    )
    .bind(origin)
    .bind(crate::ts(chrono::Utc::now()))
    .bind(listening)
    .execute(&mut conn)
    .await?;
    Ok(conn)
}

async fn keep(
    conn: PgConnection,
    connect: PgConnectOptions,
    origin: String,
    listening: Arc<AtomicBool>,
    mut stopped: oneshot::Receiver<bool>,
) {
    let mut conn = Some(conn);
    loop {
        tokio::select! {
            leave = &mut stopped => {
                if let (Ok(true), Some(c)) = (leave, conn.as_mut()) {
                    if let Err(e) = sqlx::query("DELETE FROM processes WHERE origin = $1").bind(&origin).execute(&mut *c).await {
                        tracing::warn!(error = ?e, "cannot remove this process's row; the others will read everything once");
                    }
                }
                if let Some(c) = conn {
                    let _ = c.close().await;
                }
                return;
            }
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let alive = match conn.as_mut() {
            Some(c) => c.ping().await.is_ok(),
            None => false,
        };
        if !alive {
            // Gone (the database restarted, a network cut): others may have
            // counted this process dead meanwhile, which only costs them a
            // read; the row comes back with the connection.
            conn = match present(&connect, &origin, listening.load(Ordering::SeqCst)).await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = ?e, "cannot keep this process's presence in the database; trying again");
                    None
                }
            };
        }
    }
}

impl Presence {
    /// Marks this process as one that listens to the others' notifications.
    pub(crate) async fn listen(&self, pool: &sqlx::PgPool) -> Result<(), StoreError> {
        self.listening.store(true, Ordering::SeqCst);
        sqlx::query("UPDATE processes SET listening = TRUE WHERE origin = $1")
            .bind(&self.origin)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Ends the presence: removes the row when `clean` (every commit was
    /// announced), else leaves it for the others to see this process gone.
    pub(crate) async fn leave(&self, clean: bool) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(clean);
        }
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// A process with the database open, as another one sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub origin: String,
    /// It follows the others' commits (a server).
    pub listening: bool,
    /// Dead and settled: whatever it committed is in the database, and it
    /// may not have announced all of it.
    pub gone: bool,
}

/// Every process but `me` that has a row, and whether it is gone.
pub async fn processes(conn: &mut crate::Tx, me: &str) -> Result<Vec<Process>, StoreError> {
    // The names are built as `connection_name` and `presence_name` build them.
    let sql = format!(
        "SELECT p.origin, p.listening, \
           (NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = $2 || p.origin || $3) \
            AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = $2 || p.origin \
                 AND NOT (COALESCE(a.state, 'active') LIKE 'idle%' AND a.state_change < now() - interval '{SETTLED_AFTER}'))) AS gone \
         FROM processes p WHERE p.origin <> $1"
    );
    let rows = conn.rows(&sql, crate::args![me, NAME_PREFIX, PRESENCE_SUFFIX]).await?;
    rows.iter()
        .map(|r| {
            Ok(Process {
                origin: r.text("origin")?,
                listening: r.bool("listening")?,
                gone: r.bool("gone")?,
            })
        })
        .collect()
}

/// Notes when processes were first seen gone, and removes the rows of those
/// gone for longer than [`FORGET_AFTER`] (every reader has long read
/// everything again by then).
pub async fn forget_long_gone(tx: &mut crate::Tx, gone: &[String], now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    let sql = format!(
        "UPDATE processes SET gone_at = $2 WHERE {} AND gone_at IS NULL",
        tx.any_of("origin", 1)
    );
    tx.exec(&sql, &[crate::Val::texts(gone), crate::Val::from(crate::ts(now))]).await?;
    tx.exec(
        "DELETE FROM processes WHERE gone_at IS NOT NULL AND gone_at < $1",
        crate::args![crate::ts(now - FORGET_AFTER)],
    )
    .await?;
    Ok(())
}
