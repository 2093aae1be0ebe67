//! Keeps the entitlement index exact: a full read at start-up, then every
//! change this process commits (published by the store right after its
//! COMMIT, before the committing call answers) and every change another
//! process commits (PostgreSQL notifications), read back from the database
//! and applied. One task does it all, one read at a time, so a later read
//! never loses to an earlier one.
//!
//! Other processes' notifications name what they changed; they are sent
//! right after each COMMIT and applied as they come (each is a read, so
//! their order does not matter). The one way to miss one is for its process
//! to die between its COMMIT and its NOTIFY: every [`POLL`], this process
//! looks at the others' presence (`allot_store::presence`), and one newly
//! gone makes it read everything again. A listening connection lost and
//! back makes it read everything too.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use allot_store::changes::{Changes, Fed};
use allot_store::entitlements::{self as rows, Users};
use allot_store::presence::Process;
use allot_store::{catalogue, Store, StoreError};

use super::index::IndexState;
use super::Entitlements;
use crate::app::App;

/// Users read per statement when named (the list is one parameter).
const USERS_PER_READ: usize = 5_000;

/// Users per page of the start-up read.
const USERS_PER_PAGE: i64 = 20_000;

/// Reads everything, in one snapshot.
pub(crate) async fn full_load(store: &Store) -> Result<IndexState, StoreError> {
    full_load_in_pages(store, USERS_PER_PAGE).await
}

/// [`full_load`] reading `page` users at a time.
pub(crate) async fn full_load_in_pages(store: &Store, page: i64) -> Result<IndexState, StoreError> {
    let mut tx = store.begin_snapshot().await?;
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
    Ok(state)
}

/// Reads what `changes` names and applies it.
async fn apply(store: &Store, ent: &Entitlements, changes: &Changes) -> Result<(), StoreError> {
    if changes.everything {
        let read_from = ent.index.read().touched();
        let state = full_load(store).await?;
        ent.index.write().replace_with(state, read_from);
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

/// Each other process's last notification number heard.
#[derive(Debug, Default)]
struct Numbers {
    last: std::collections::HashMap<String, u64>,
}

/// What one notification's number says.
#[derive(Debug, PartialEq, Eq)]
enum Numbered {
    /// The next one (or the first heard from that process): apply it.
    Next,
    /// Heard already (a send retried after its answer was lost): nothing new.
    Again,
    /// One or more were skipped: read everything.
    AfterGap,
}

impl Numbers {
    fn heard(&mut self, from: &str, number: u64) -> Numbered {
        let Some(last) = self.last.get_mut(from) else {
            self.last.insert(from.to_string(), number);
            return Numbered::Next;
        };
        if number <= *last {
            return Numbered::Again;
        }
        let gap = number > *last + 1;
        *last = number;
        if gap {
            Numbered::AfterGap
        } else {
            Numbered::Next
        }
    }
}

/// How often the rows of gone processes are tidied, while there are any.
const TIDY_EVERY: Duration = Duration::from_secs(60);

/// How often the other processes' presence is looked at (PostgreSQL).
pub(crate) const POLL: Duration = Duration::from_millis(500);

/// The other processes found gone, and read for already.
#[derive(Debug, Default)]
struct Peers {
    read_for: HashSet<String>,
}

impl Peers {
    /// Processes gone since the last look (each once): whatever they
    /// committed is in the database now, but perhaps not announced.
    /// One seen alive again (its connection was cut, not the process) is
    /// watched as any other.
    fn newly_gone(&mut self, seen: &[Process]) -> Vec<String> {
        let mut new = Vec::new();
        for p in seen {
            if !p.gone {
                self.read_for.remove(&p.origin);
            } else if self.read_for.insert(p.origin.clone()) {
                new.push(p.origin.clone());
            }
        }
        // Rows removed (long gone, or left cleanly) are no longer remembered.
        self.read_for.retain(|o| seen.iter().any(|p| &p.origin == o));
        new
    }
}

/// The other processes and whether they are gone (none on SQLite).
async fn look_at_processes(store: &Store) -> Result<Vec<Process>, StoreError> {
    if store.backend() != allot_store::Backend::Postgres {
        return Ok(Vec::new());
    }
    let mut rd = store.read_conn().await?;
    allot_store::presence::processes(&mut rd, &store.change_feed().origin).await
}

/// How long a starting process waits for the listeners' welcomes before
/// it reads (one that answers later makes it read everything again).
const WELCOME_WAIT: Duration = Duration::from_secs(3);

/// Says hello to `listeners` and waits (at most [`WELCOME_WAIT`]) until each
/// has answered; returns those that did not. What the feed brings
/// meanwhile was committed before the full read about to be made.
async fn greet(
    store: &Store,
    feed: &allot_store::changes::ChangeFeed,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Fed>,
    mut listeners: HashSet<String>,
) -> HashSet<String> {
    if listeners.is_empty() {
        return listeners;
    }
    // Not greeted, a listener may stay silent for good: no reading before.
    while let Err(e) = store.say_hello().await {
        tracing::error!(error = ?e, "cannot greet the other servers; trying again");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let deadline = tokio::time::Instant::now() + WELCOME_WAIT;
    let mut ticket = 0;
    while !listeners.is_empty() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Fed::Welcome { from })) => {
                listeners.remove(&from);
            }
            Ok(Some(Fed::Local { ticket: t, .. })) => ticket = ticket.max(t),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    feed.applied(ticket);
    if !listeners.is_empty() {
        tracing::warn!(servers = ?listeners, "some servers did not answer the greeting in time; reading again when they do");
    }
    listeners
}

/// Records when gone processes were first seen gone and removes the rows
/// of those long gone.
async fn tidy_processes(store: &Store, gone: Vec<String>) {
    let now = chrono::Utc::now();
    let result = allot_store::in_transaction!(store, |tx| {
        allot_store::presence::forget_long_gone(&mut tx, &gone, now).await?;
        Ok::<_, StoreError>(())
    });
    if let Err(e) = result {
        tracing::warn!(error = ?e, "cannot tidy the table of processes");
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
    // Processes gone already: the full read below sees all they committed.
    let mut peers = Peers::default();
    let listeners: HashSet<String> = loop {
        match look_at_processes(&app.store).await {
            Ok(seen) => {
                peers.newly_gone(&seen);
                break seen.into_iter().filter(|p| p.listening && !p.gone).map(|p| p.origin).collect();
            }
            Err(e) => {
                tracing::error!(error = ?e, "cannot see the other processes; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    // A listener that saw no other may be announcing nothing: each is
    // greeted, and read from once it answers (it announces from then on).
    let mut late = greet(&app.store, &feed, &mut rx, listeners).await;
    loop {
        match full_load(&app.store).await {
            Ok(state) => {
                ent.index.swap(state);
                break;
            }
            Err(e) => {
                tracing::error!(error = ?e, "cannot read the entitlements; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    // Committers wait for the reader from now on; what they queued while
    // the full read ran is applied before the index answers anyone (a
    // check right after a commit of this process must see it).
    feed.set_live(true);
    let mut ready = false;
    let polls = app.store.backend() == allot_store::Backend::Postgres;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_poll = Instant::now();
    let mut last_tidy: Option<Instant> = None;
    let mut numbers = Numbers::default();
    loop {
        let first = if ready {
            tokio::select! {
                fed = rx.recv() => match fed {
                    Some(f) => Some(f),
                    None => break,
                },
                _ = tick.tick() => None,
            }
        } else {
            rx.try_recv().ok()
        };
        let mut changes = Changes::default();
        let mut ticket = 0u64;
        match first {
            Some(first) => {
                let mut take = |fed: Fed, changes: &mut Changes| match fed {
                    Fed::Local { ticket: t, changes: c } => {
                        ticket = ticket.max(t);
                        changes.merge(c);
                    }
                    Fed::Notice(n) => match numbers.heard(&n.from, n.number) {
                        Numbered::Next => changes.merge(n.changes),
                        Numbered::Again => {}
                        Numbered::AfterGap => {
                            tracing::warn!(from = %n.from, number = n.number, "a notification was skipped; reading every entitlement again");
                            changes.everything = true;
                        }
                    },
                    Fed::Reconnected => changes.everything = true,
                    // It may have committed unannounced after the full read began.
                    Fed::Welcome { from } => changes.everything |= late.remove(&from),
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
                    let hellos = feed.hellos();
                    match look_at_processes(&app.store).await {
                        Ok(seen) => {
                            // Nobody else to tell: commits go unannounced (a
                            // listener that starts says hello first).
                            if seen.iter().any(|p| p.listening && !p.gone) {
                                feed.others_listen();
                            } else {
                                feed.alone_unless_greeted(hellos);
                            }
                            let gone = peers.newly_gone(&seen);
                            if !gone.is_empty() {
                                tracing::warn!(processes = ?gone, "another process died; reading every entitlement again");
                                changes.everything = true;
                            }
                            if seen.iter().any(|p| p.gone) && last_tidy.is_none_or(|t| t.elapsed() >= TIDY_EVERY) {
                                last_tidy = Some(Instant::now());
                                tidy_processes(&app.store, seen.into_iter().filter(|p| p.gone).map(|p| p.origin).collect()).await;
                            }
                        }
                        Err(e) => tracing::warn!(error = ?e, "cannot see the other processes"),
                    }
                }
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
        if !ready && rx.is_empty() {
            ent.set_ready();
            ready = true;
        }
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

    fn seen(list: &[(&str, bool)]) -> Vec<Process> {
        list.iter()
            .map(|(o, gone)| Process {
                origin: o.to_string(),
                listening: true,
                gone: *gone,
            })
            .collect()
    }

    #[test]
    fn numbers_in_order_are_applied_repeats_skipped_and_a_gap_reads_everything() {
        let mut n = Numbers::default();
        assert_eq!(n.heard("a", 7), Numbered::Next, "the first heard is the start");
        assert_eq!(n.heard("a", 8), Numbered::Next);
        assert_eq!(n.heard("a", 8), Numbered::Again);
        assert_eq!(n.heard("b", 1), Numbered::Next, "per process");
        assert_eq!(n.heard("a", 10), Numbered::AfterGap);
        assert_eq!(n.heard("a", 11), Numbered::Next);
    }

    #[test]
    fn a_process_gone_is_read_for_once_and_again_after_it_came_back_and_went() {
        let mut peers = Peers::default();
        // At start-up: gone already, covered by the full read.
        assert_eq!(peers.newly_gone(&seen(&[("a", true), ("b", false)])), vec!["a".to_string()]);
        assert!(peers.newly_gone(&seen(&[("a", true), ("b", false)])).is_empty(), "once");
        assert_eq!(peers.newly_gone(&seen(&[("a", true), ("b", true)])), vec!["b".to_string()]);
        // b's connection came back (its row too), then went for good.
        assert!(peers.newly_gone(&seen(&[("a", true), ("b", false)])).is_empty());
        assert_eq!(peers.newly_gone(&seen(&[("a", true), ("b", true)])), vec!["b".to_string()]);
        // a's row removed, then an origin of that name (none ever is) would count anew.
        assert!(peers.newly_gone(&seen(&[("b", true)])).is_empty());
        assert_eq!(peers.newly_gone(&seen(&[("a", true)])), vec!["a".to_string()]);
    }
}
