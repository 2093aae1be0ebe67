//! What committed transactions changed, for readers that keep a copy in
//! memory (the entitlement index): a change feed that is exact at commit.
//!
//! Every store function that writes a row an entitlement depends on (a
//! user, a licence, a subscription or its items, a product) notes what it
//! changed in its transaction ([`Changes`]: these users of that org, the
//! whole org, or the catalogue). What a unit of work noted is kept only if
//! the unit is: an undone SAVEPOINT or a rolled-back transaction takes its
//! notes with it. Right after the COMMIT, in the task that committed (no
//! request owns it, so a client hanging up cannot skip it), the notes are
//! published on this process's [`ChangeFeed`] with a ticket, and the
//! committing call waits until the reader has applied that ticket before
//! it answers. So a change a caller was told about is already in the copy.
//!
//! Other processes learn of it through PostgreSQL: right after the COMMIT,
//! one task per process sends what waits as `NOTIFY allot_entitlements`
//! ([`notify_others`]), packed, and keeps trying until it is sent. A
//! listener ([`follow_others`]) passes them on. Each process numbers the
//! notifications it sends (in memory: nothing is written per transaction),
//! so a reader that sees a number skipped reads everything again; but a
//! notification is lost only when its process dies between the COMMIT and
//! the NOTIFY, and other processes see that death instead
//! ([`crate::presence`]) and read everything again. A lost listening
//! connection means everything too.
//!
//! The notes name *what* to read again, not what changed: the reader reads
//! those rows back from the database, one read at a time, so the order in
//! which notes arrive never matters (a later read sees at least as much).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::db::StoreError;

/// The PostgreSQL channel the notes travel on between processes.
pub const CHANNEL: &str = "allot_entitlements";

/// The org key of catalogue changes (products are provider-wide).
const CATALOGUE_KEY: &str = "";

/// A NOTIFY payload may be at most 8,000 bytes; a note naming more users
/// than fit says "the whole org" instead.
const MAX_PAYLOAD: usize = 7_000;

/// What a transaction changed that a copy of the entitlements depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Users whose row or licences changed, per org.
    pub users: BTreeMap<String, BTreeSet<String>>,
    /// Orgs whose every user is to be read again (too many to name).
    pub all_users: BTreeSet<String>,
    /// Orgs whose subscriptions or items changed (or that are new).
    pub subscriptions: BTreeSet<String>,
    /// Products changed.
    pub catalogue: bool,
    /// Anything may have changed (a lost notification): read everything.
    pub everything: bool,
    /// Users whose licences the transaction set, with the licences they
    /// hold after it, per org: applied as they are, without a read.
    pub licenses: BTreeMap<String, BTreeMap<String, LicensesNow>>,
    /// Licence versions the transaction moved to, per org and user
    /// (PostgreSQL orders what it applies by them; see [`LicensesNow::version`]).
    pub versions: BTreeMap<String, std::collections::HashMap<String, i64>>,
    /// Webhook events were written (the sender is woken at the commit).
    pub webhook_events: bool,
}

/// A user's licences after a committed change: (product, subscription).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LicensesNow {
    /// The user's licence version after the change, when the transaction
    /// claimed it. Committing processes may publish out of commit order on
    /// PostgreSQL (several connections); a version no newer than the one
    /// the reader holds is then skipped. `None`: in commit order (SQLite's
    /// one writer), applied as it comes.
    pub version: Option<i64>,
    pub held: Vec<(String, String)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
            && self.all_users.is_empty()
            && self.subscriptions.is_empty()
            && !self.catalogue
            && !self.everything
            && self.licenses.is_empty()
            && !self.webhook_events
    }

    /// The transaction moved the user's licence version to `version`.
    pub fn claimed(&mut self, org: &str, user: &str, version: i64) {
        match self.versions.get_mut(org) {
            Some(m) => {
                m.insert(user.to_string(), version);
            }
            None => {
                self.versions
                    .insert(org.to_string(), std::collections::HashMap::from([(user.to_string(), version)]));
            }
        }
    }

    /// The user holds `held` after the transaction.
    pub fn licenses_now(&mut self, org: &str, user: &str, held: Vec<(String, String)>) {
        // Most bulk chunks claim no versions (SQLite plans them ahead): no key to build then.
        let version = self.versions.get(org).and_then(|m| m.get(user)).copied();
        let now = LicensesNow { version, held };
        match self.licenses.get_mut(org) {
            Some(users) => {
                users.insert(user.to_string(), now);
            }
            None => {
                self.licenses.insert(org.to_string(), BTreeMap::from([(user.to_string(), now)]));
            }
        }
    }

    pub fn user(&mut self, org: &str, user: &str) {
        if self.all_users.contains(org) {
            return;
        }
        match self.users.get_mut(org) {
            Some(set) => {
                if !set.contains(user) {
                    set.insert(user.to_string());
                }
            }
            None => {
                self.users.insert(org.to_string(), BTreeSet::from([user.to_string()]));
            }
        }
    }

    pub fn users<'a>(&mut self, org: &str, users: impl IntoIterator<Item = &'a str>) {
        for u in users {
            self.user(org, u);
        }
    }

    pub fn all_users(&mut self, org: &str) {
        self.users.remove(org);
        self.all_users.insert(org.to_string());
    }

    pub fn subscriptions(&mut self, org: &str) {
        if !self.subscriptions.contains(org) {
            self.subscriptions.insert(org.to_string());
        }
    }

    pub fn catalogue(&mut self) {
        self.catalogue = true;
    }

    pub fn merge(&mut self, other: Changes) {
        // The first unit of a batch: taken as it is, nothing re-inserted.
        if self.is_empty() && self.versions.is_empty() {
            *self = other;
            return;
        }
        for (org, users) in other.versions {
            self.versions.entry(org).or_default().extend(users);
        }
        for (org, users) in other.licenses {
            let mine = self.licenses.entry(org).or_default();
            for (user, now) in users {
                // The later note wins, unless both carry versions and it is older.
                match mine.get(&user) {
                    Some(LicensesNow { version: Some(v), .. }) if now.version.is_some_and(|n| n <= *v) => {}
                    _ => {
                        mine.insert(user, now);
                    }
                }
            }
        }
        self.catalogue |= other.catalogue;
        self.everything |= other.everything;
        self.webhook_events |= other.webhook_events;
        self.subscriptions.extend(other.subscriptions);
        for org in other.all_users {
            self.all_users(&org);
        }
        for (org, users) in other.users {
            if self.all_users.contains(&org) {
                continue;
            }
            self.users.entry(org).or_default().extend(users);
        }
    }

    /// One NOTIFY body per org key (`""` for the catalogue), in key order:
    /// `{flags}:{users}`, where the flags are `c` (catalogue) and `s`
    /// (subscriptions), and the users are ids joined by commas, or `*` for
    /// every user of the org (also when the ids would not fit).
    pub(crate) fn payloads(&self) -> Vec<(String, String)> {
        let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
        if self.catalogue {
            out.entry(CATALOGUE_KEY.to_string()).or_default().0.push('c');
        }
        for org in &self.subscriptions {
            out.entry(org.clone()).or_default().0.push('s');
        }
        for org in &self.all_users {
            out.entry(org.clone()).or_default().1 = "*".to_string();
        }
        let mut named: BTreeMap<&String, BTreeSet<&String>> = BTreeMap::new();
        for (org, users) in &self.users {
            named.entry(org).or_default().extend(users);
        }
        for (org, users) in &self.licenses {
            named.entry(org).or_default().extend(users.keys());
        }
        for (org, users) in named {
            if self.all_users.contains(org) {
                continue;
            }
            let mut list = String::new();
            for u in users {
                if !list.is_empty() {
                    list.push(',');
                }
                list.push_str(u);
                if list.len() > MAX_PAYLOAD {
                    list = "*".to_string();
                    break;
                }
            }
            out.entry(org.clone()).or_default().1 = list;
        }
        out.into_iter()
            .map(|(org, (flags, users))| (org, format!("{flags}:{users}")))
            .collect()
    }
}

/// A notification: which process sent it and what its commits changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The sending process's origin ([`ChangeFeed::origin`]).
    pub from: String,
    /// Its number among the notifications that process sent (1, 2, ...):
    /// a reader that sees one skipped reads everything again.
    pub number: u64,
    pub changes: Changes,
}

impl Notice {
    /// Parses one notification, `origin#number;org|body;org|body...` (the
    /// orgs of one or more commits); `None` for anything else.
    pub fn parse(payload: &str) -> Option<Notice> {
        let mut parts = payload.split(';');
        let (from, number) = parts.next()?.split_once('#')?;
        if from.is_empty() || from.contains('|') {
            return None;
        }
        let number: u64 = number.parse().ok().filter(|n| *n > 0)?;
        let from = from.to_string();
        let mut changes = Changes::default();
        let mut any = false;
        for part in parts {
            changes.merge(Notice::parse_one(part)?);
            any = true;
        }
        any.then_some(Notice { from, number, changes })
    }

    /// `org|body`.
    fn parse_one(part: &str) -> Option<Changes> {
        let (org, body) = part.split_once('|')?;
        let (flags, users) = body.split_once(':')?;
        let mut changes = Changes::default();
        for f in flags.chars() {
            match f {
                'c' => changes.catalogue(),
                's' => changes.subscriptions(org),
                _ => return None,
            }
        }
        match users {
            "*" => changes.all_users(org),
            ids => changes.users(org, ids.split(',').filter(|s| !s.is_empty())),
        }
        Some(changes)
    }
}

/// What a listener hears on [`CHANNEL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// What another process's commits changed.
    Changes(Notice),
    /// A process starting to follow: `origin;!hello`.
    Hello { from: String },
    /// A process that will announce its commits from now on, to the one
    /// that said hello: `origin;!welcome|to`.
    Welcome { from: String, to: String },
}

impl Heard {
    /// The payload of a hello or a welcome (notes are packed by [`pack`]).
    fn payload(&self) -> Option<String> {
        match self {
            Heard::Hello { from } => Some(format!("{from};!hello")),
            Heard::Welcome { from, to } => Some(format!("{from};!welcome|{to}")),
            Heard::Changes(_) => None,
        }
    }

    /// Sends a hello or a welcome on [`CHANNEL`].
    async fn send(&self, pool: &sqlx::PgPool) -> Result<(), StoreError> {
        let Some(payload) = self.payload() else { return Ok(()) };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(pool)
            .await?;
        Ok(())
    }

    pub fn parse(payload: &str) -> Option<Heard> {
        match payload.split_once(";!") {
            Some((from, "hello")) if !from.is_empty() && !from.contains(';') => Some(Heard::Hello { from: from.to_string() }),
            Some((from, rest)) if !from.is_empty() && !from.contains(';') => {
                let to = rest.strip_prefix("welcome|").filter(|t| !t.is_empty())?;
                Some(Heard::Welcome {
                    from: from.to_string(),
                    to: to.to_string(),
                })
            }
            _ => Notice::parse(payload).map(Heard::Changes),
        }
    }
}

/// Whether this process announces its commits: always, unless its reader
/// saw no other process listening ([`ChangeFeed::alone_unless_greeted`]);
/// a hello heard since makes it announce again.
#[derive(Debug)]
struct Announcing {
    others: bool,
    hellos: u64,
}

/// What the feed hands its reader.
#[derive(Debug)]
pub enum Fed {
    /// Changes committed by this process; apply, then mark `ticket` applied.
    Local { ticket: u64, changes: Changes },
    /// Another process's notification (PostgreSQL).
    Notice(Notice),
    /// The listening connection was lost and is back: notifications may have
    /// been missed, so everything is read again.
    Reconnected,
    /// A process answered this one's hello ([`ChangeFeed::say_hello`]): it
    /// announces every commit from now on.
    Welcome { from: String },
}

/// This process's feed of committed changes (one per [`crate::Store`]).
pub struct ChangeFeed {
    /// Rung when a transaction that wrote webhook events commits in this
    /// process (the webhook sender waits on it between its polls).
    pub outbox: tokio::sync::Notify,
    /// Names this process in notifications, so it skips its own.
    pub origin: String,
    sender: Mutex<Option<mpsc::UnboundedSender<Fed>>>,
    published: AtomicU64,
    applied: watch::Sender<u64>,
    /// Whether a reader is applying (before it starts, committers do not
    /// wait: its first full read will see their changes).
    live: AtomicBool,
    /// Applies licence notes at once, in the committing task (see
    /// [`ChangeFeed::apply_licenses_with`]).
    sink: std::sync::OnceLock<LicenseSink>,
    /// PostgreSQL: the notifications to send after commits ([`notify_others`]).
    notifier: std::sync::OnceLock<mpsc::UnboundedSender<Vec<String>>>,
    /// Commits handed to the notifier, and how many of them it has sent
    /// (so that a process leaving sends what waits first).
    notes_queued: AtomicU64,
    notes_sent: Arc<watch::Sender<u64>>,
    /// Whether anyone else listens (see [`Announcing`]).
    announcing: Arc<Mutex<Announcing>>,
}

/// Applies what users hold after a commit: (org → user → licences).
pub type LicenseSink = Box<dyn Fn(&BTreeMap<String, BTreeMap<String, LicensesNow>>) + Send + Sync>;

/// How long a committing call waits for the reader before answering
/// anyway (a reader stuck on a failing database must not stop writes).
const MAX_WAIT: Duration = Duration::from_secs(5);

impl ChangeFeed {
    pub(crate) fn new() -> Arc<ChangeFeed> {
        Arc::new(ChangeFeed {
            origin: crate::new_id("proc"),
            sender: Mutex::new(None),
            published: AtomicU64::new(0),
            applied: watch::channel(0).0,
            live: AtomicBool::new(false),
            sink: std::sync::OnceLock::new(),
            notifier: std::sync::OnceLock::new(),
            notes_queued: AtomicU64::new(0),
            notes_sent: Arc::new(watch::channel(0).0),
            announcing: Arc::new(Mutex::new(Announcing { others: true, hellos: 0 })),
            outbox: tokio::sync::Notify::new(),
        })
    }

    /// PostgreSQL: starts the task that sends notifications after commits.
    pub(crate) fn start_notifier(&self, pool: sqlx::PgPool) {
        let (tx, rx) = mpsc::unbounded_channel();
        if self.notifier.set(tx).is_ok() {
            tokio::spawn(notify_others(
                pool,
                self.origin.clone(),
                self.notes_sent.clone(),
                self.announcing.clone(),
                rx,
            ));
        }
    }

    /// Tells the other processes what a committed transaction changed.
    pub(crate) fn notify_later(&self, changes: &Changes) {
        let Some(notifier) = self.notifier.get() else { return };
        let parts: Vec<String> = changes.payloads().into_iter().map(|(org, body)| format!("{org}|{body}")).collect();
        if parts.is_empty() {
            return;
        }
        self.notes_queued.fetch_add(1, Ordering::SeqCst);
        if notifier.send(parts).is_err() {
            self.notes_sent.send_modify(|n| *n += 1);
        }
    }

    /// Hellos heard so far (read before looking for other listeners).
    pub fn hellos(&self) -> u64 {
        self.announcing.lock().unwrap_or_else(|p| p.into_inner()).hellos
    }

    /// The reader looked (after `hellos_before` hellos) and saw no other
    /// process listening: commits go unannounced, unless a hello came
    /// meanwhile. A process that starts to listen says hello first and waits
    /// for the welcome, which is sent only once this process announces again.
    pub fn alone_unless_greeted(&self, hellos_before: u64) {
        let mut a = self.announcing.lock().unwrap_or_else(|p| p.into_inner());
        if a.hellos == hellos_before {
            a.others = false;
        }
    }

    /// Another process listens: commits are announced.
    pub fn others_listen(&self) {
        self.announcing.lock().unwrap_or_else(|p| p.into_inner()).others = true;
    }

    /// Whether commits are announced now.
    pub fn announces(&self) -> bool {
        self.announcing.lock().unwrap_or_else(|p| p.into_inner()).others
    }

    /// Heard a hello: announce from now on.
    fn greeted(&self) {
        let mut a = self.announcing.lock().unwrap_or_else(|p| p.into_inner());
        a.hellos += 1;
        a.others = true;
    }

    /// Waits until every commit announced so far has been sent (at most
    /// `limit`); whether they were.
    pub(crate) async fn notifications_sent(&self, limit: Duration) -> bool {
        let queued = self.notes_queued.load(Ordering::SeqCst);
        let mut rx = self.notes_sent.subscribe();
        let sent = tokio::time::timeout(limit, rx.wait_for(|n| *n >= queued)).await.is_ok();
        sent
    }

    /// Takes the feed's receiving end (once per process: the entitlement
    /// index). Changes committed from now on are sent to it.
    pub fn subscribe(&self) -> Option<mpsc::UnboundedReceiver<Fed>> {
        let mut sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        if sender.is_some() {
            return None;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        *sender = Some(tx);
        Some(rx)
    }

    /// The reader is applying: committers wait for it from now on.
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::SeqCst);
    }

    /// Has licence notes applied by `sink` in the committing task itself,
    /// once the reader is live: the hot path of licence changes then needs
    /// no hop to the reader's task (a busy runtime made that hop cost a
    /// third of the single changes' throughput). Set once.
    pub fn apply_licenses_with(&self, sink: LicenseSink) -> bool {
        self.sink.set(sink).is_ok()
    }

    /// Publishes committed changes; the ticket to wait for, if anyone reads.
    /// Licence notes are applied here (live) or turned into reads of those
    /// users (before the reader's first full read, whose snapshot may be
    /// older or newer than them).
    pub(crate) fn publish(&self, mut changes: Changes) -> Option<u64> {
        if std::mem::take(&mut changes.webhook_events) {
            self.outbox.notify_one();
        }
        if changes.is_empty() {
            return None;
        }
        match self.sink.get() {
            Some(sink) if self.live.load(Ordering::SeqCst) => {
                if !changes.licenses.is_empty() {
                    sink(&changes.licenses);
                    changes.licenses.clear();
                }
            }
            _ => {
                for (org, users) in std::mem::take(&mut changes.licenses) {
                    changes.users(&org, users.keys().map(String::as_str));
                }
            }
        }
        if changes.is_empty() {
            return None;
        }
        // Tickets are taken and sent under one lock, so they arrive in order.
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        let s = sender.as_ref()?;
        let ticket = self.published.fetch_add(1, Ordering::SeqCst) + 1;
        s.send(Fed::Local { ticket, changes }).ok()?;
        Some(ticket)
    }

    /// Passes a notification (or a reconnection) on to the reader.
    pub(crate) fn forward(&self, fed: Fed) -> bool {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        sender.as_ref().is_some_and(|s| s.send(fed).is_ok())
    }

    /// The reader has applied every ticket up to `ticket`.
    pub fn applied(&self, ticket: u64) {
        self.applied.send_if_modified(|a| {
            if ticket > *a {
                *a = ticket;
                true
            } else {
                false
            }
        });
    }

    /// Waits until `ticket` is applied (at most [`MAX_WAIT`]).
    pub(crate) async fn wait(&self, ticket: Option<u64>) {
        let Some(ticket) = ticket else { return };
        if !self.live.load(Ordering::SeqCst) {
            return;
        }
        let mut rx = self.applied.subscribe();
        if tokio::time::timeout(MAX_WAIT, rx.wait_for(|a| *a >= ticket)).await.is_err() {
            tracing::warn!(ticket, "the entitlement index did not apply a commit within 5 s; answering anyway");
        }
    }
}

/// Packs notification parts (`org|body`, one commit's orgs after
/// another) into as few payloads as fit, each `origin#number;part;part...`,
/// numbered from `first`.
fn pack(origin: &str, first: u64, parts: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for part in parts {
        if !current.is_empty() && current.len() + 1 + part.len() > MAX_PAYLOAD + 900 {
            out.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current = format!("{origin}#{}", first + out.len() as u64);
        }
        current.push(';');
        current.push_str(part);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The notifier: sends what commits changed, after their COMMIT, packing
/// whatever queued meanwhile into one statement of few notifications.
///
/// Not inside the committing transaction: PostgreSQL serializes the commits
/// of every transaction that notifies (a lock held through the commit's
/// flush), which cost a tenth of the changes per second over many orgs.
/// Nor numbered in it: a counter row bumped by every transaction cost a
/// fifth; the numbers are this task's own, per payload sent. A notification
/// not sent is retried until it is (a process alive but cut off from the
/// database commits nothing meanwhile either); one lost with its process is
/// covered by [`crate::presence`].
async fn notify_others(
    pool: sqlx::PgPool,
    origin: String,
    sent: Arc<watch::Sender<u64>>,
    announcing: Arc<Mutex<Announcing>>,
    mut rx: mpsc::UnboundedReceiver<Vec<String>>,
) {
    let q = |s: &str| s.replace('\'', "''");
    // The number of the next notification (sent ones only: a reader that
    // starts listening takes the first it hears as its start).
    let mut next = 1u64;
    while let Some(first) = rx.recv().await {
        let mut parts = first;
        let mut commits = 1u64;
        while parts.len() < 5_000 {
            match rx.try_recv() {
                Ok(more) => {
                    parts.extend(more);
                    commits += 1;
                }
                Err(_) => break,
            }
        }
        // Decided after the COMMIT: a process that said hello before it
        // was welcomed reads after this commit anyway (see `Announcing`).
        if !announcing.lock().unwrap_or_else(|p| p.into_inner()).others {
            sent.send_modify(|n| *n += commits);
            continue;
        }
        let payloads = pack(&origin, next, &parts);
        let calls: Vec<String> = payloads.iter().map(|p| format!("pg_notify('{CHANNEL}', '{}')", q(p))).collect();
        // Nothing to make durable: a NOTIFY is delivered at its commit, and
        // a crash of the database reconnects every listener anyway.
        let sql = format!("SET LOCAL synchronous_commit = off; SELECT {}", calls.join(", "));
        let mut attempt = 0u64;
        loop {
            match sqlx::Executor::execute(&pool, sql.as_str()).await {
                Ok(_) => {
                    next += payloads.len() as u64;
                    break;
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(error = ?e, attempt, "entitlement notifications could not be sent; trying again");
                    tokio::time::sleep(Duration::from_millis(50 * attempt.min(20))).await;
                }
            }
        }
        sent.send_modify(|n| *n += commits);
    }
}

/// PostgreSQL: tells every listening process that this one listens now
/// (each answers [`Fed::Welcome`] once it announces its commits).
pub(crate) async fn say_hello(pool: &sqlx::PgPool, origin: &str) -> Result<(), StoreError> {
    Heard::Hello { from: origin.to_string() }.send(pool).await
}

/// PostgreSQL: listens on [`CHANNEL`] and forwards every notification to
/// the feed's reader until the feed has none. Starts listening before it
/// returns, so nothing committed after this call is missed. A connection
/// lost is connected again; the reader is then told to read everything
/// (what was sent meanwhile is unknown).
pub(crate) async fn follow_others(pool: sqlx::PgPool, feed: Arc<ChangeFeed>) -> Result<tokio::task::JoinHandle<()>, StoreError> {
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    failures = 0;
                    let forwarded = match Heard::parse(n.payload()) {
                        // This process's own commits were applied as they committed.
                        Some(Heard::Changes(notice)) if notice.from == feed.origin => true,
                        Some(Heard::Changes(notice)) => feed.forward(Fed::Notice(notice)),
                        Some(Heard::Hello { from }) if from != feed.origin => {
                            // Announcing before welcoming: every commit of
                            // this process from the welcome on is announced.
                            feed.greeted();
                            let welcome = Heard::Welcome {
                                from: feed.origin.clone(),
                                to: from,
                            };
                            if let Err(e) = welcome.send(&pool).await {
                                tracing::warn!(error = ?e, "cannot welcome a process that started to listen");
                            }
                            true
                        }
                        Some(Heard::Welcome { from, to }) if to == feed.origin => feed.forward(Fed::Welcome { from }),
                        Some(_) => true,
                        None => {
                            tracing::warn!(payload = n.payload(), "an entitlement notification could not be read");
                            true
                        }
                    };
                    if !forwarded {
                        return;
                    }
                }
                // Lost and connected again (sqlx listens again on reconnect).
                Ok(None) => {
                    tracing::warn!("the entitlement listener lost its connection; reloading the index");
                    if !feed.forward(Fed::Reconnected) {
                        return;
                    }
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    // The connection may be unusable: a new listener, then a full read.
                    failures += 1;
                    tracing::warn!(error = ?e, "the entitlement listener failed; listening again");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(20)))).await;
                    let fresh = async {
                        let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
                        l.listen(CHANNEL).await?;
                        Ok::<_, sqlx::Error>(l)
                    };
                    match fresh.await {
                        Ok(l) => {
                            listener = l;
                            if !feed.forward(Fed::Reconnected) {
                                return;
                            }
                        }
                        Err(sqlx::Error::PoolClosed) => return,
                        Err(e) => tracing::warn!(error = ?e, "the entitlement listener cannot listen yet"),
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_round_trips_through_its_payload() {
        let mut c = Changes::default();
        c.user("org_a", "usr_1");
        c.user("org_a", "usr_2");
        c.subscriptions("org_a");
        c.subscriptions("org_b");
        c.all_users("org_d");
        c.catalogue();
        let parts: Vec<String> = c.payloads().iter().map(|(org, body)| format!("{org}|{body}")).collect();
        let n = Notice::parse(&format!("proc_x#7;{}", parts.join(";"))).expect("parses");
        assert_eq!((n.from.as_str(), n.number), ("proc_x", 7));
        assert_eq!(n.changes, c);
    }

    #[test]
    fn every_user_subsumes_named_users_and_too_many_users_become_every_user() {
        let mut c = Changes::default();
        c.user("org_a", "usr_1");
        c.all_users("org_a");
        c.user("org_a", "usr_2");
        assert!(c.users.is_empty());
        let mut many = Changes::default();
        let ids: Vec<String> = (0..1000).map(|i| format!("usr_{i:026}")).collect();
        many.users("org_c", ids.iter().map(String::as_str));
        assert_eq!(many.payloads(), vec![("org_c".to_string(), ":*".to_string())]);
    }

    #[test]
    fn many_commits_pack_into_few_notifications_each_within_the_limit() {
        let parts: Vec<String> = (0..3000).map(|i| format!("org_{i:026}|:usr_{i:026}")).collect();
        let sent = pack("proc_x", 41, &parts);
        assert!(sent.len() > 1 && sent.len() < 30, "{} notifications", sent.len());
        assert!(sent.iter().all(|p| p.len() < 8000));
        let mut back = Changes::default();
        for (i, p) in sent.iter().enumerate() {
            let n = Notice::parse(p).expect("parses");
            assert_eq!((n.from.as_str(), n.number), ("proc_x", 41 + i as u64), "numbered in order");
            back.merge(n.changes);
        }
        assert_eq!(back.users.len(), 3000);
        assert!(back
            .users
            .get(&format!("org_{:026}", 2999))
            .is_some_and(|u| u.contains(&format!("usr_{:026}", 2999))));
        // A part as long as a note gets (a list of users near the limit) fits alone.
        let long = format!("org_a|:{}", "u".repeat(MAX_PAYLOAD + 20));
        assert!(pack("proc_x", 1, &[long.clone(), long]).iter().all(|p| p.len() < 8000));
        // Quotes in ids travel as they are (the SQL literal doubles them).
        let mut q = Changes::default();
        q.user("org_'a", "usr_1");
        let n = Notice::parse(&pack("proc_x", 1, &["org_'a|:usr_1".to_string()])[0]).expect("parses");
        assert_eq!(n.changes, q);
    }

    #[test]
    fn hellos_and_welcomes_are_told_from_notes() {
        assert_eq!(Heard::parse("proc_a;!hello"), Some(Heard::Hello { from: "proc_a".into() }));
        assert_eq!(
            Heard::parse("proc_b;!welcome|proc_a"),
            Some(Heard::Welcome {
                from: "proc_b".into(),
                to: "proc_a".into()
            })
        );
        assert_eq!(Heard::parse("proc_b;!welcome|"), None);
        assert_eq!(Heard::parse("proc_b;!bye"), None);
        assert_eq!(Heard::parse(";!hello"), None);
        for h in [
            Heard::Hello { from: "proc_a".into() },
            Heard::Welcome {
                from: "proc_b".into(),
                to: "proc_a".into(),
            },
        ] {
            assert_eq!(Heard::parse(&h.payload().expect("a payload")), Some(h), "round trip");
        }
        assert!(matches!(Heard::parse("proc_b#3;org|s:"), Some(Heard::Changes(n)) if n.from == "proc_b" && n.number == 3));
    }

    #[test]
    fn a_hello_heard_while_looking_keeps_the_process_announcing() {
        let feed = ChangeFeed::new();
        assert!(feed.announces(), "announcing until a reader looked");
        let before = feed.hellos();
        feed.greeted();
        feed.alone_unless_greeted(before);
        assert!(feed.announces(), "a hello came while the reader looked");
        feed.alone_unless_greeted(feed.hellos());
        assert!(!feed.announces());
        feed.greeted();
        assert!(feed.announces());
    }

    #[test]
    fn a_payload_that_is_not_a_note_is_refused() {
        assert_eq!(Notice::parse("nonsense"), None);
        assert_eq!(Notice::parse("p"), None);
        assert_eq!(Notice::parse("p#1;org|x:*"), None);
        assert_eq!(Notice::parse("p#1;org"), None);
        assert_eq!(Notice::parse("p|1;org|s:*"), None);
        assert_eq!(Notice::parse("p;org|s:*"), None, "unnumbered");
        assert_eq!(Notice::parse("p#0;org|s:*"), None);
        assert_eq!(Notice::parse("p#x;org|s:*"), None);
        assert!(Notice::parse("p#2;org|s:*;org_b|:usr_1").is_some_and(|n| n.changes.subscriptions.len() == 1 && n.changes.users.len() == 1));
    }
}
