//! How a plan made outside SQLite's writer learns that the licences it was
//! planned from have changed since.
//!
//! A licence change is planned on a read snapshot and written later by the
//! one writer; two kinds of write can land in between:
//!
//! - A **versioned** write bumps each changed user's licence version: a
//!   single change, a batch planned inside its own transaction
//!   ([`crate::users::lock_licenses`]), a user's deletion. A single change
//!   planned earlier fails its version claim.
//! - A bulk chunk **planned ahead** (read and planned while the writer wrote
//!   the previous chunk) leaves the versions alone: claiming 5,000 of them
//!   per chunk was a fifth of the writer's time.
//!
//! On SQLite each org counts both kinds in one row, in the writes' own
//! transactions (versioned writes once per org and shared transaction of
//! the writer, just before its COMMIT, so that a single change adds no
//! statement to the writer's path). A single change is written only if no
//! chunk planned ahead was written since its snapshot (its version claim
//! checks the count; else it plans again inside the writer's transaction);
//! a chunk planned ahead is written only if neither a versioned write nor
//! another chunk was written since its snapshot, except its own job's
//! previous chunk (else it is planned again under its users' versions).
//! Chunks and single changes thus never pass each other unseen, and no
//! chunk has to bump a version per user.
//!
//! PostgreSQL plans every chunk inside its transaction, under the row locks
//! of its users' versions, so there the counts stay at zero and every check
//! passes: the per-user versions and row locks are the whole protocol.

use crate::args;
use crate::db::{Backend, StoreError, Tx};

/// An org's licence-write counts as one snapshot saw them (zero for an org
/// that has had no write yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LicenseEpoch {
    /// Writes that bumped the versions of the users they changed.
    pub versioned: i64,
    /// Bulk chunks written from plans made ahead.
    pub ahead: i64,
}

/// The org's counts in `tx`'s snapshot.
pub async fn read(tx: &mut Tx, org: &str) -> Result<LicenseEpoch, StoreError> {
    if tx.backend() == Backend::Postgres {
        return Ok(LicenseEpoch::default());
    }
    Ok(
        match tx
            .opt_row("SELECT versioned, ahead FROM license_epochs WHERE org_id = $1", args![org])
            .await?
        {
            Some(r) => LicenseEpoch {
                versioned: r.int("versioned")?,
                ahead: r.int("ahead")?,
            },
            None => LicenseEpoch::default(),
        },
    )
}

/// One more versioned write of the org `?1` (SQLite only, hence `?1`).
pub(crate) const COUNT_VERSIONED_WRITE: &str = "INSERT INTO license_epochs (org_id, versioned, ahead) VALUES (?1, 1, 0) \
     ON CONFLICT (org_id) DO UPDATE SET versioned = license_epochs.versioned + 1";

/// Counts a versioned write of the org's licences in the write's own
/// transaction, so that a chunk planned ahead of it is planned again. In a
/// unit of SQLite's shared write transaction it is counted once per org
/// just before the COMMIT (a single change then adds no statement to the
/// writer's path); a chunk in the same transaction sees it as pending.
pub async fn note_versioned_write(tx: &mut Tx, org: &str) -> Result<(), StoreError> {
    if tx.backend() == Backend::Postgres || tx.defer_versioned_write(org)? {
        return Ok(());
    }
    tx.exec(COUNT_VERSIONED_WRITE, args![org]).await?;
    Ok(())
}

/// Whether a bulk chunk planned ahead was written since a snapshot that
/// saw `seen_ahead` of them (then a single change planned on that snapshot
/// must plan again).
pub async fn chunk_written_since(tx: &mut Tx, org: &str, seen_ahead: i64) -> Result<bool, StoreError> {
    Ok(read(tx, org).await?.ahead != seen_ahead)
}

/// Claims the right to write a chunk planned ahead on snapshot `seen`, and
/// counts it. `own_last` is the `ahead` count this job's previous chunk left
/// (that chunk was being written while this one was planned, on other
/// users, with its seats carried over in memory). Returns the new count, or
/// `None` when another licence write landed since the snapshot and the
/// chunk must be planned again in its transaction. PostgreSQL does not plan
/// ahead: there it is always `None`.
pub async fn claim_chunk_ahead(tx: &mut Tx, org: &str, seen: LicenseEpoch, own_last: Option<i64>) -> Result<Option<i64>, StoreError> {
    if tx.backend() == Backend::Postgres || tx.versioned_write_pending(org) {
        return Ok(None);
    }
    let now = read(tx, org).await?;
    let unseen_own = match own_last {
        // The snapshot missed at most that chunk, and nothing came after it.
        Some(last) => now.ahead == last && seen.ahead >= last - 1,
        None => now.ahead == seen.ahead,
    };
    if now.versioned != seen.versioned || !unseen_own {
        return Ok(None);
    }
    tx.exec(
        "INSERT INTO license_epochs (org_id, versioned, ahead) VALUES ($1, 0, 1) \
         ON CONFLICT (org_id) DO UPDATE SET ahead = license_epochs.ahead + 1",
        args![org],
    )
    .await?;
    Ok(Some(now.ahead + 1))
}
