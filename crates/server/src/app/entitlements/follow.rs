//! Keeps the entitlement index exact: a full read at start-up, then every
//! change this process commits (published by the store right after its
//! COMMIT, before the committing call answers) and every change another
//! process commits (PostgreSQL notifications), read back from the database
//! and applied. One task does it all, one read at a time, so a later read
//! never loses to an earlier one.
//!
//! Other processes' notifications carry their org's sequence number. One
//! that skips a number (a notification lost), or a listening connection
//! lost and back, makes this process read the org, or everything, again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::Duration;

use allot_store::changes::{Changes, Fed};
use allot_store::entitlements::{self as rows, Users};
use allot_store::{catalogue, Store, StoreError};

use super::index::IndexState;
use super::Entitlements;
use crate::app::App;

/// Users read per statement when named (the list is one parameter).
const USERS_PER_READ: usize = 5_000;

/// Reads everything, in one snapshot, with every org's sequence number.
pub(crate) async fn full_load(store: &Store) -> Result<(IndexState, BTreeMap<String, i64>), StoreError> {
    let mut tx = store.begin_snapshot().await?;
    let seqs = allot_store::changes::sequences(&mut tx).await?;
    let products = catalogue::all(&mut tx).await?;
    let orgs = rows::org_ids(&mut tx).await?;
    let subs = rows::subscriptions(&mut tx, None).await?;
    let users = rows::users(&mut tx, Users::All).await?;
    tx.rollback().await?;
    let mut state = IndexState::default();
    let products: Vec<_> = products.into_values().collect();
    state.replace_catalogue(&products);
    state.replace_subscriptions(&orgs, &subs);
    state.put_users(&users);
    Ok((state, seqs))
}

/// Reads what `changes` names and applies it.
async fn apply(store: &Store, ent: &Entitlements, changes: &Changes) -> Result<(), StoreError> {
    if changes.everything {
        let read_from = ent.index.read().touched();
        let (state, seqs) = full_load(store).await?;
        ent.index.write().replace_with(state, read_from);
        *ent.seqs.lock().unwrap_or_else(|p| p.into_inner()) = seqs.into_iter().collect();
        ent.full_loads.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    let read_from = ent.index.read().touched();
    let mut tx = store.begin_snapshot().await?;
    let products = if changes.catalogue {
        Some(catalogue::all(&mut tx).await?.into_values().collect::<Vec<_>>())
    } else {
        None
    };
    let mut subs = Vec::new();
    for org in &changes.subscriptions {
        subs.extend(rows::subscriptions(&mut tx, Some(org)).await?);
    }
    let mut all_users = Vec::new();
    for org in &changes.all_users {
        all_users.push((org, rows::users(&mut tx, Users::Org(org)).await?));
    }
    let mut named = Vec::new();
    for (org, ids) in &changes.users {
        let ids: Vec<String> = ids.iter().cloned().collect();
        let mut read = Vec::new();
        for part in ids.chunks(USERS_PER_READ) {
            read.extend(rows::users(&mut tx, Users::Some(org, part)).await?);
        }
        named.push((org, ids, read));
    }
    tx.rollback().await?;
    let mut state = ent.index.write();
    if let Some(products) = &products {
        state.replace_catalogue(products);
    }
    if !changes.subscriptions.is_empty() {
        let orgs: Vec<String> = changes.subscriptions.iter().cloned().collect();
        state.replace_subscriptions(&orgs, &subs);
    }
    for (org, rows) in &all_users {
        state.replace_all_users(org, rows, read_from);
    }
    for (org, ids, rows) in &named {
        state.replace_users(org, ids, rows, read_from);
    }
    // Licence notes never come here: the committing task applies them, or
    // turns them into reads of their users (`ChangeFeed::publish`).
    drop(state);
    Ok(())
}

/// What one notification asks for, given the org's last sequence number
/// seen: nothing (seen already, or this process's own), its changes, or
/// the whole org (a number was skipped).
fn notice_changes(seqs: &mut HashMap<String, i64>, n: allot_store::changes::Notice) -> Changes {
    let last = seqs.get(&n.org).copied().unwrap_or(0);
    if n.seq <= last {
        return Changes::default();
    }
    seqs.insert(n.org.clone(), n.seq);
    if n.seq > last + 1 {
        tracing::warn!(org = %n.org, last, seq = n.seq, "an entitlement notification was missed; reading the org again");
        let mut c = Changes::default();
        if n.org.is_empty() {
            c.catalogue();
        } else {
            c.all_users(&n.org);
            c.subscriptions(&n.org);
        }
        return c;
    }
    if n.own {
        // Published here at its commit, and applied then.
        return Changes::default();
    }
    n.changes
}

/// Runs until the store's feed closes (the task is aborted at shutdown).
pub async fn keep_exact(app: App) {
    let ent = app.entitlements.clone();
    let Some(mut rx) = ent.take_receiver() else {
        tracing::error!("the entitlement index is already followed by another task");
        return;
    };
    let feed = app.store.change_feed().clone();
    // Listen first (PostgreSQL), then read: nothing committed in between is missed.
    let _listener = loop {
        match app.store.follow_others().await {
            Ok(l) => break l.map(AbortOnDrop),
            Err(e) => {
                tracing::error!(error = ?e, "cannot listen for other servers' changes; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        match full_load(&app.store).await {
            Ok((state, seqs)) => {
                ent.index.swap(state);
                *ent.seqs.lock().unwrap_or_else(|p| p.into_inner()) = seqs.into_iter().collect();
                break;
            }
            Err(e) => {
                tracing::error!(error = ?e, "cannot read the entitlements; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    feed.set_live(true);
    ent.set_ready();
    while let Some(first) = rx.recv().await {
        let mut changes = Changes::default();
        let mut ticket = 0u64;
        let mut take = |fed: Fed, changes: &mut Changes| match fed {
            Fed::Local { ticket: t, changes: c } => {
                ticket = ticket.max(t);
                changes.merge(c);
            }
            Fed::Notice(n) => {
                let mut seqs = ent.seqs.lock().unwrap_or_else(|p| p.into_inner());
                changes.merge(notice_changes(&mut seqs, n));
            }
            Fed::Reconnected => changes.everything = true,
        };
        take(first, &mut changes);
        // Whatever queued meanwhile is read together.
        let mut more = 0;
        while more < 10_000 {
            match rx.try_recv() {
                Ok(fed) => take(fed, &mut changes),
                Err(_) => break,
            }
            more += 1;
        }
        let mut attempt = 0u32;
        while !changes.is_empty() {
            match apply(&app.store, &ent, &changes).await {
                Ok(()) => break,
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(error = ?e, attempt, "cannot read changed entitlements; trying again");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt.min(20)))).await;
                }
            }
        }
        feed.applied(ticket);
    }
    feed.set_live(false);
}

/// Stops the listener with the task that keeps the index.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allot_store::changes::Notice;

    fn notice(org: &str, seq: i64, own: bool) -> Notice {
        let mut changes = Changes::default();
        changes.user(org, "usr_1");
        Notice {
            own,
            org: org.into(),
            seq,
            changes,
        }
    }

    #[test]
    fn notifications_in_sequence_are_applied_seen_ones_skipped_and_a_gap_reads_the_org() {
        let mut seqs = HashMap::from([("org_a".to_string(), 4)]);
        assert!(notice_changes(&mut seqs, notice("org_a", 3, false)).is_empty());
        assert!(notice_changes(&mut seqs, notice("org_a", 4, false)).is_empty());
        let c = notice_changes(&mut seqs, notice("org_a", 5, false));
        assert_eq!(c.users.len(), 1);
        // Own notifications move the number on without a read.
        assert!(notice_changes(&mut seqs, notice("org_a", 6, true)).is_empty());
        let gap = notice_changes(&mut seqs, notice("org_a", 8, false));
        assert!(gap.all_users.contains("org_a") && gap.subscriptions.contains("org_a"));
        assert_eq!(seqs["org_a"], 8);
        // An org never seen starts at 1.
        assert_eq!(notice_changes(&mut seqs, notice("org_b", 1, false)).users.len(), 1);
    }
}
