//! Keeps the entitlement index exact: a full read at start-up, then every
//! change this process commits (published by the store right after its
//! COMMIT, before the committing call answers) and every change another
//! process commits (PostgreSQL notifications), read back from the database
//! and applied. One task does it all, one read at a time, so a later read
//! never loses to an earlier one.
//!
//! Other processes' notifications carry their org's sequence number
//! ([`Sequences`]). They are sent right after each COMMIT, so two
//! processes' notifications may arrive out of order: a number skipped is
//! waited for a moment ([`GAP_GRACE`]) before the org is read again. The
//! numbers are also read from the database every [`POLL`], so a change
//! whose process died between its COMMIT and its notification is read
//! within a second all the same. A listening connection lost and back makes
//! this process read everything again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use allot_store::changes::{Changes, Fed};
use allot_store::entitlements::{self as rows, Users};
use allot_store::{catalogue, Store, StoreError};

use super::index::IndexState;
use super::Entitlements;
use crate::app::App;

/// Users read per statement when named (the list is one parameter).
const USERS_PER_READ: usize = 5_000;

/// Users per page of the start-up read.
const USERS_PER_PAGE: i64 = 20_000;

/// Reads everything, in one snapshot, with every org's sequence number.
pub(crate) async fn full_load(store: &Store) -> Result<(IndexState, BTreeMap<String, i64>), StoreError> {
    full_load_in_pages(store, USERS_PER_PAGE).await
}

/// [`full_load`] reading `page` users at a time.
pub(crate) async fn full_load_in_pages(store: &Store, page: i64) -> Result<(IndexState, BTreeMap<String, i64>), StoreError> {
    let mut tx = store.begin_snapshot().await?;
    let seqs = allot_store::changes::sequences(&mut tx).await?;
    let products = catalogue::all(&mut tx).await?;
    let orgs = rows::org_ids(&mut tx).await?;
    let subs = rows::subscriptions(&mut tx, None).await?;
    let mut state = IndexState::default();
    let products: Vec<_> = products.into_values().collect();
    state.replace_catalogue(&products);
    state.replace_subscriptions(&orgs, &subs);
    // Users in pages of the same snapshot: the rows of one page at a time
    // are in memory beside the index, not those of every user.
    let (mut org, mut id) = (String::new(), String::new());
    loop {
        let read = rows::users(
            &mut tx,
            Users::Page {
                after: (&org, &id),
                limit: page.max(1),
            },
        )
        .await?;
        state.put_users(&read);
        match read.last() {
            Some(last) if read.len() as i64 == page.max(1) => (org, id) = (last.org.clone(), last.id.clone()),
            _ => break,
        }
    }
    tx.rollback().await?;
    Ok((state, seqs))
}

/// Reads what `changes` names and applies it.
async fn apply(store: &Store, ent: &Entitlements, changes: &Changes) -> Result<(), StoreError> {
    if changes.everything {
        let read_from = ent.index.read().touched();
        let (state, seqs) = full_load(store).await?;
        ent.index.write().replace_with(state, read_from);
        ent.seqs.lock().unwrap_or_else(|p| p.into_inner()).reset(seqs);
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

/// How long a skipped sequence number is waited for (its notification
/// may be on its way from another process) before the org is read again.
pub(crate) const GAP_GRACE: Duration = Duration::from_millis(300);

/// How often the sequence numbers are read from the database (PostgreSQL).
pub(crate) const POLL: Duration = Duration::from_millis(500);

/// One org's sequence numbers as this process has seen them.
#[derive(Debug, Default)]
struct OrgSeq {
    /// Every number up to this one has been seen (or read past).
    known: i64,
    /// Numbers seen beyond a gap.
    ahead: BTreeSet<i64>,
    /// The highest number the database was seen to hold.
    wanted: i64,
    /// Since when a number is missing.
    gap_since: Option<Instant>,
}

impl OrgSeq {
    fn settle(&mut self, now: Instant) {
        while self.ahead.remove(&(self.known + 1)) {
            self.known += 1;
        }
        if self.ahead.is_empty() && self.wanted <= self.known {
            self.gap_since = None;
        } else {
            self.gap_since.get_or_insert(now);
        }
    }
}

/// Every org's sequence numbers: what a notification asks for, and which
/// orgs waited too long for a number.
#[derive(Debug, Default)]
pub(crate) struct Sequences {
    orgs: HashMap<String, OrgSeq>,
}

impl Sequences {
    /// After a full read: the numbers of its snapshot, nothing missing.
    pub(crate) fn reset(&mut self, seqs: BTreeMap<String, i64>) {
        self.orgs = seqs
            .into_iter()
            .map(|(org, seq)| {
                (
                    org,
                    OrgSeq {
                        known: seq,
                        wanted: seq,
                        ..OrgSeq::default()
                    },
                )
            })
            .collect();
    }

    /// What one notification asks to read: nothing when its number was
    /// seen already or it is this process's own (applied at its commit),
    /// else its changes, whatever its order.
    fn notice(&mut self, n: allot_store::changes::Notice, now: Instant) -> Changes {
        let o = self.orgs.entry(n.org.clone()).or_default();
        if n.seq <= o.known || !o.ahead.insert(n.seq) {
            return Changes::default();
        }
        o.settle(now);
        if n.own {
            return Changes::default();
        }
        n.changes
    }

    /// Numbers this process's own commits took (applied at their commit).
    fn own(&mut self, seqs: Vec<(String, i64)>, now: Instant) {
        for (org, seq) in seqs {
            let o = self.orgs.entry(org).or_default();
            if seq > o.known {
                o.ahead.insert(seq);
                o.settle(now);
            }
        }
    }

    /// The numbers the database holds now: one not yet seen is waited for.
    fn polled(&mut self, seqs: BTreeMap<String, i64>, now: Instant) {
        for (org, seq) in seqs {
            let o = self.orgs.entry(org).or_default();
            o.wanted = o.wanted.max(seq);
            o.settle(now);
        }
    }

    /// The orgs (`""`: the catalogue) missing a number for `grace` or
    /// longer, to read again; they count as caught up.
    fn overdue(&mut self, now: Instant, grace: Duration) -> Changes {
        let mut c = Changes::default();
        for (org, o) in self.orgs.iter_mut() {
            if o.gap_since.is_some_and(|t| now.duration_since(t) >= grace) {
                tracing::warn!(org = %org, known = o.known, "an entitlement notification did not come; reading the org again");
                if org.is_empty() {
                    c.catalogue();
                } else {
                    c.all_users(org);
                    c.subscriptions(org);
                }
                // Every number up to the highest seen is committed (an org's
                // numbers are taken under its row's lock, held to the
                // commit), so the read about to be made sees them all.
                o.known = o.known.max(o.wanted).max(o.ahead.last().copied().unwrap_or(0));
                o.ahead.clear();
                o.gap_since = None;
            }
        }
        c
    }
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
                ent.seqs.lock().unwrap_or_else(|p| p.into_inner()).reset(seqs);
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
    let polls = app.store.backend() == allot_store::Backend::Postgres;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_poll = Instant::now();
    loop {
        let first = tokio::select! {
            fed = rx.recv() => match fed {
                Some(f) => Some(f),
                None => break,
            },
            _ = tick.tick() => None,
        };
        let mut changes = Changes::default();
        let mut ticket = 0u64;
        match first {
            Some(first) => {
                let now = Instant::now();
                let mut take = |fed: Fed, changes: &mut Changes| match fed {
                    Fed::Local { ticket: t, changes: c } => {
                        ticket = ticket.max(t);
                        changes.merge(c);
                    }
                    Fed::Notice(n) => changes.merge(ent.seqs.lock().unwrap_or_else(|p| p.into_inner()).notice(n, now)),
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
            }
            None => {
                if polls && last_poll.elapsed() >= POLL {
                    last_poll = Instant::now();
                    match read_sequences(&app.store).await {
                        Ok(seqs) => ent.seqs.lock().unwrap_or_else(|p| p.into_inner()).polled(seqs, Instant::now()),
                        Err(e) => tracing::warn!(error = ?e, "cannot read the entitlement sequence numbers"),
                    }
                }
                let mut seqs = ent.seqs.lock().unwrap_or_else(|p| p.into_inner());
                // This process's own commits (taken after the poll, so that
                // none it saw in the database is missing here for longer
                // than the commit's few moments).
                seqs.own(feed.take_own_seqs(), Instant::now());
                let overdue = seqs.overdue(Instant::now(), GAP_GRACE);
                drop(seqs);
                let reread = overdue.all_users.len() + usize::from(overdue.catalogue);
                ent.gap_rereads.fetch_add(reread as u64, Ordering::Relaxed);
                changes.merge(overdue);
            }
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

async fn read_sequences(store: &Store) -> Result<BTreeMap<String, i64>, StoreError> {
    let mut rd = store.read_conn().await?;
    allot_store::changes::sequences(&mut rd).await
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
    fn notifications_in_any_order_are_applied_once_and_a_number_that_never_comes_reads_the_org() {
        let t0 = Instant::now();
        let mut seqs = Sequences::default();
        seqs.reset(BTreeMap::from([("org_a".to_string(), 4)]));
        assert!(seqs.notice(notice("org_a", 3, false), t0).is_empty());
        assert!(seqs.notice(notice("org_a", 4, false), t0).is_empty());
        assert_eq!(seqs.notice(notice("org_a", 5, false), t0).users.len(), 1);
        // Own notifications move the number on without a read.
        assert!(seqs.notice(notice("org_a", 6, true), t0).is_empty());
        // 8 without 7: read, and the org is read again once 7 is overdue.
        assert_eq!(seqs.notice(notice("org_a", 8, false), t0).users.len(), 1);
        assert!(seqs.overdue(t0 + GAP_GRACE, GAP_GRACE).all_users.contains("org_a"), "7 is overdue");
        let mut seqs2 = Sequences::default();
        seqs2.reset(BTreeMap::from([("org_a".to_string(), 6)]));
        seqs2.notice(notice("org_a", 8, false), t0);
        assert!(seqs2.overdue(t0 + GAP_GRACE / 2, GAP_GRACE).is_empty(), "still within the grace");
        assert_eq!(seqs2.notice(notice("org_a", 7, false), t0).users.len(), 1);
        assert!(seqs2.notice(notice("org_a", 8, false), t0).is_empty(), "seen already");
        assert!(seqs2.overdue(t0 + GAP_GRACE * 2, GAP_GRACE).is_empty(), "the gap was filled");
        // A number the database holds but no notification brought (its
        // process died after its COMMIT): the org is read after the grace.
        seqs2.polled(BTreeMap::from([("org_a".to_string(), 9), ("".to_string(), 1)]), t0);
        let c = seqs2.overdue(t0 + GAP_GRACE, GAP_GRACE);
        assert!(
            c.all_users.contains("org_a") && c.subscriptions.contains("org_a") && c.catalogue,
            "{c:?}"
        );
        assert!(seqs2.notice(notice("org_a", 9, false), t0).is_empty(), "read past already");
        assert!(seqs2.overdue(t0 + GAP_GRACE * 3, GAP_GRACE).is_empty());
        // This process's own commits count as seen without a notification.
        seqs2.polled(BTreeMap::from([("org_c".to_string(), 2)]), t0);
        seqs2.own(vec![("org_c".to_string(), 1), ("org_c".to_string(), 2)], t0);
        assert!(seqs2.overdue(t0 + GAP_GRACE * 3, GAP_GRACE).is_empty());
        // An org never seen starts at 1.
        assert_eq!(seqs2.notice(notice("org_b", 1, false), t0).users.len(), 1);
        assert!(seqs2.overdue(t0 + GAP_GRACE * 3, GAP_GRACE).is_empty());
    }
}
