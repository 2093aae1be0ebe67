//! Connections for plain reads, kept between reads outside sqlx's pool.
//!
//! Why: sqlx pings every connection given back to its pool (in a task it
//! spawns), a second hop to the database for every read: to SQLite's
//! connection thread and back, or a round trip to PostgreSQL. Reading one
//! user is a single statement, so the ping was half of what it asked of
//! the database. A [`Kept`] connection goes back on the [`Shelf`] instead,
//! and the next plain read takes it from there.
//!
//! What the ping was for is kept another way:
//! - a connection whose statement did not finish (an error, or the request
//!   dropped mid-statement: a client that hung up) is not shelved; it goes
//!   back to sqlx, whose ping flushes or closes it;
//! - a PostgreSQL connection that sat on the shelf for a second or more is
//!   pinged before it is used again (the server may have ended it);
//! - plain reads hold at most half the pool (lent and shelved together),
//!   so shelved connections never keep a transaction waiting on the pool;
//!   readers are served in the order they asked, as sqlx's queue serves.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::StoreError;

/// How long a plain read waits for a connection before it is told the
/// database stayed busy (sqlx's pool waits as long for its own).
const LEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The connections of plain reads: at most `share` of them at once, lent in
/// the order asked (a fair semaphore, as sqlx's own queue is), and idle ones
/// kept here, most recently used last.
pub(crate) struct Shelf<DB: sqlx::Database> {
    idle: Mutex<ShelfState<DB>>,
    lendable: Arc<Semaphore>,
    /// PostgreSQL: a connection idle for this long is pinged before it is
    /// lent again (the server may have ended it). SQLite: `None`.
    ping_after: Option<Duration>,
}

struct ShelfState<DB: sqlx::Database> {
    conns: Vec<(PoolConnection<DB>, Instant)>,
    /// Once the store closes, connections go back to sqlx (which closes
    /// them): its pool's `close` waits for every one it handed out.
    closed: bool,
}

impl<DB: sqlx::Database> Shelf<DB> {
    /// Plain reads may hold `share` of the pool's connections (in use or
    /// shelved); the rest stay free for transactions.
    pub(crate) fn new(share: usize, ping_after: Option<Duration>) -> Shelf<DB> {
        Shelf {
            idle: Mutex::new(ShelfState {
                conns: Vec::new(),
                closed: false,
            }),
            lendable: Arc::new(Semaphore::new(share.max(1))),
            ping_after,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ShelfState<DB>> {
        // A panic while the lock was held cannot leave the list half
        // changed (push and pop only), so a poisoned lock is still good.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection for plain reads: a shelved one when there is one, else
    /// a new one from `pool`. Connections of plain reads (lent or shelved)
    /// never outnumber the permits, since one is taken from `pool` only by
    /// a permit holder who found the shelf empty.
    pub(crate) async fn lend(self: &Arc<Self>, pool: &sqlx::Pool<DB>) -> Result<Kept<DB>, StoreError> {
        let permit = tokio::time::timeout(LEND_TIMEOUT, self.lendable.clone().acquire_owned())
            .await
            .map_err(|_| StoreError::from(sqlx::Error::PoolTimedOut))?
            .map_err(|_| StoreError::from(sqlx::Error::PoolClosed))?;
        loop {
            let shelved = self.state().conns.pop();
            let Some((mut conn, since)) = shelved else {
                let conn = pool.acquire().await?;
                return Ok(Kept::new(conn, self.clone(), permit));
            };
            let stale = self.ping_after.is_some_and(|after| since.elapsed() >= after);
            if !stale || sqlx::Connection::ping(&mut *conn).await.is_ok() {
                return Ok(Kept::new(conn, self.clone(), permit));
            }
            // Ended by the server: dropped, sqlx closes it (its own ping on
            // return fails too).
        }
    }

    fn put(&self, conn: PoolConnection<DB>) {
        let mut s = self.state();
        if !s.closed {
            s.conns.push((conn, Instant::now()));
        }
        // Otherwise `conn` drops here: back to sqlx's pool.
    }

    pub(crate) fn len(&self) -> usize {
        self.state().conns.len()
    }

    /// Gives every connection back to sqlx's pool, and every later one too.
    pub(crate) fn close(&self) {
        let all = {
            let mut s = self.state();
            s.closed = true;
            std::mem::take(&mut s.conns)
        };
        drop(all);
    }
}

/// A connection lent for plain reads: back on its [`Shelf`] when dropped,
/// unless a statement on it did not finish.
pub struct Kept<DB: sqlx::Database> {
    conn: Option<PoolConnection<DB>>,
    shelf: Arc<Shelf<DB>>,
    /// Released after the connection is shelved (fields drop after `drop`),
    /// so the next reader finds it there.
    _permit: OwnedSemaphorePermit,
    /// False while a statement runs: a read dropped half-way (or failed)
    /// leaves it false, and the connection goes to sqlx to be checked.
    pub(crate) settled: bool,
}

impl<DB: sqlx::Database> Kept<DB> {
    fn new(conn: PoolConnection<DB>, shelf: Arc<Shelf<DB>>, permit: OwnedSemaphorePermit) -> Kept<DB> {
        Kept {
            conn: Some(conn),
            shelf,
            _permit: permit,
            settled: true,
        }
    }

    pub(crate) fn conn(&mut self) -> &mut DB::Connection {
        // `conn` is `Some` from `new` until `drop`, the only place that
        // takes it.
        self.conn.as_deref_mut().expect("a kept connection is present until dropped")
    }
}

impl<DB: sqlx::Database> Drop for Kept<DB> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.settled {
                self.shelf.put(conn);
            }
        }
    }
}
