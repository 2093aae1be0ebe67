//! Assignments (seats taken) and the application of a licence plan.

use std::collections::BTreeMap;

use allot_domain::catalogue::Product;
use allot_domain::planner::{Held, LicensePlan, Properties};
use allot_domain::types::ProductCode;

use crate::db::{Backend, PreparedRows, Row, StoreError, Tx, Val};
use crate::{args, ts};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub held: Held,
    pub assigned_at: String,
}

pub(crate) fn assignment_from(r: &Row) -> Result<Assignment, StoreError> {
    let properties: Properties = serde_json::from_str(&r.text("properties")?)
        .map_err(|e| StoreError::Db(format!("stored assignment properties are unreadable: {e}")))?;
    Ok(Assignment {
        held: Held {
            product: ProductCode::parse(&r.text("product")?).map_err(|e| StoreError::Db(e.detail))?,
            subscription: r.text("subscription_id")?,
            properties,
        },
        assigned_at: r.text("assigned_at")?,
    })
}

pub async fn of_user(tx: &mut Tx, org: &str, user: &str) -> Result<Vec<Assignment>, StoreError> {
    let rows = tx
        .rows(
            "SELECT product, subscription_id, properties, assigned_at FROM assignments WHERE org_id = $1 AND user_id = $2 ORDER BY product",
            args![org, user],
        )
        .await?;
    rows.iter().map(assignment_from).collect()
}

/// Releases every seat a user holds (before deleting the user).
pub async fn release_all(tx: &mut Tx, org: &str, user: &str) -> Result<Vec<Held>, StoreError> {
    let held: Vec<Held> = of_user(tx, org, user).await?.into_iter().map(|a| a.held).collect();
    for h in &held {
        tx.exec(
            "DELETE FROM assignments WHERE org_id = $1 AND user_id = $2 AND product = $3",
            args![org, user, h.product.as_str()],
        )
        .await?;
        tx.exec(
            "UPDATE subscription_items SET consumed = consumed - 1 WHERE org_id = $1 AND subscription_id = $2 AND product = $3 AND consumed >= 1",
            args![org, &h.subscription, h.product.as_str()],
        )
        .await?;
    }
    tx.exec("DELETE FROM service_data WHERE org_id = $1 AND user_id = $2", args![org, user])
        .await?;
    tx.exec("DELETE FROM license_grants WHERE org_id = $1 AND user_id = $2", args![org, user])
        .await?;
    tx.note(|c| c.user(org, user));
    Ok(held)
}

pub async fn count_in_pool(tx: &mut Tx, org: &str, sub: &str, product: &str) -> Result<i64, StoreError> {
    let r = tx
        .opt_row(
            "SELECT COUNT(*) AS n FROM assignments WHERE org_id = $1 AND subscription_id = $2 AND product = $3",
            args![org, sub, product],
        )
        .await?;
    match r {
        Some(r) => r.int("n"),
        None => Ok(0),
    }
}

/// The licences of many users at once (one query per call; callers pass a
/// chunk of at most a few thousand ids).
pub async fn of_users(tx: &mut Tx, org: &str, users: &[String]) -> Result<std::collections::HashMap<String, Vec<Assignment>>, StoreError> {
    let mut out: std::collections::HashMap<String, Vec<Assignment>> = std::collections::HashMap::new();
    if users.is_empty() {
        return Ok(out);
    }
    let (users_in, vals) = crate::catalogue::in_list(tx, "user_id", org, users);
    let rows = tx
        .rows_packed(
            &["product", "subscription_id", "properties", "assigned_at", "user_id"],
            &format!("FROM assignments WHERE org_id = $1 AND {users_in}"),
            &vals,
        )
        .await?;
    for r in &rows {
        out.entry(r.text("user_id")?).or_default().push(assignment_from(r)?);
    }
    // Each user's licences in product order.
    for held in out.values_mut() {
        held.sort_by(|a, b| a.held.product.cmp(&b.held.product));
    }
    Ok(out)
}

/// One user's part of a batch: whose plan, and the licence set before it.
pub struct PlannedUser<'a> {
    pub user: &'a str,
    pub before: &'a [Held],
    pub plan: &'a LicensePlan,
}

/// Why applying a plan stopped: a pool had no free seat left when its guarded
/// counter was updated (another transaction took it after the plan was made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolFull {
    pub subscription: String,
    pub product: ProductCode,
}

/// Applies the plans of one or many users in the caller's transaction with
/// batched statements: releases and takes of assignment rows, service data
/// kept on moves, restored on a re-add within retention and retained when a
/// family's last licence goes, and each pool's seat counter moved once by
/// the guarded update (`consumed = consumed + n WHERE consumed + n <=
/// quantity`). The caller has claimed the users' licence versions, so a
/// vanished or duplicate row means the plan is stale (`Retry`); a full pool
/// is returned for the caller to judge.
pub async fn apply_plans(
    tx: &mut Tx,
    org: &str,
    planned: &[PlannedUser<'_>],
    catalogue: &std::collections::HashMap<ProductCode, Product>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Result<(), PoolFull>, StoreError> {
    let seats = seat_changes(tx.backend(), org, planned, now);
    apply_seat_changes(tx, org, seats, planned, catalogue, now).await
}

/// The seat writes of a batch of plans as statements, built apart from any
/// transaction (a bulk job builds the next chunk's while the writer writes
/// the current one); [`apply_seat_changes`] runs them.
pub struct SeatChanges {
    /// Users released from each pool (subscription, product).
    releases: BTreeMap<(String, String), Vec<String>>,
    /// The assignment rows taken.
    takes: PreparedRows,
    /// Each pool's seats taken minus released, in key order.
    deltas: BTreeMap<(String, String), i64>,
    /// Users whose licence of each product goes (released and not taken
    /// again: not a move): the templates' grants of it go with it.
    dropped: BTreeMap<String, Vec<String>>,
    /// The stored service data the takes may touch, when read ahead of the
    /// write (see [`SeatChanges::with_stored_service_data`]).
    stored: Option<StoredServiceData>,
}

impl SeatChanges {
    /// Uses service data read on the snapshot the plans were made on,
    /// instead of reading it in the write transaction. Only for plans whose
    /// users' licences nobody can have changed since (a chunk whose
    /// snapshot `license_epochs` vouches for); the one thing that may have
    /// changed, a row purged after its retention ended, is handled when
    /// written. `stored` must have been read for the same plans: the
    /// service-data changes worked out with it are the ones written.
    pub fn with_stored_service_data(mut self, stored: StoredServiceData) -> SeatChanges {
        self.stored = Some(stored);
        self
    }
}

pub fn seat_changes(backend: Backend, org: &str, planned: &[PlannedUser<'_>], now: chrono::DateTime<chrono::Utc>) -> SeatChanges {
    let now_s = ts(now);
    let pool = |h: &Held| (h.subscription.clone(), h.product.as_str().to_string());
    let mut releases: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut deltas: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut dropped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in planned {
        for h in &p.plan.release {
            releases.entry(pool(h)).or_default().push(p.user.to_string());
            *deltas.entry(pool(h)).or_default() -= 1;
            if !p.plan.result.iter().any(|r| r.product == h.product) {
                dropped.entry(h.product.as_str().to_string()).or_default().push(p.user.to_string());
            }
        }
        for h in &p.plan.take {
            *deltas.entry(pool(h)).or_default() += 1;
        }
    }
    let takes: Vec<Vec<Val>> = planned
        .iter()
        .flat_map(|p| {
            p.plan.take.iter().map(|h| {
                let properties = if h.properties.is_empty() {
                    "{}".to_string()
                } else {
                    serde_json::to_string(&h.properties).unwrap_or_else(|_| "{}".into())
                };
                vec![
                    Val::from(p.user),
                    Val::from(h.product.as_str()),
                    Val::from(&h.subscription),
                    Val::Text(properties),
                ]
            })
        })
        .collect();
    SeatChanges {
        releases,
        takes: PreparedRows::with_shared(
            backend,
            "assignments (org_id, assigned_at, user_id, product, subscription_id, properties)",
            &[Val::from(org), Val::Text(now_s)],
            &takes,
        ),
        deltas,
        dropped,
        stored: None,
    }
}

/// Runs [`SeatChanges`] made from `planned` (see [`apply_plans`]).
pub async fn apply_seat_changes(
    tx: &mut Tx,
    org: &str,
    seats: SeatChanges,
    planned: &[PlannedUser<'_>],
    catalogue: &std::collections::HashMap<ProductCode, Product>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Result<(), PoolFull>, StoreError> {
    if planned.is_empty() {
        return Ok(Ok(()));
    }
    // What each user holds now, for the entitlement index (no read back).
    tx.note(|c| {
        for p in planned.iter().filter(|p| !p.plan.is_empty()) {
            let held = p
                .plan
                .result
                .iter()
                .map(|h| (h.product.as_str().to_string(), h.subscription.clone()))
                .collect();
            c.licenses_now(org, p.user, held);
        }
    });
    // Releases, grouped by pool: one DELETE per pool and batch of users.
    for ((sub, product), users) in &seats.releases {
        let gone = tx
            .exec(
                &format!(
                    "DELETE FROM assignments WHERE org_id = $1 AND subscription_id = $2 AND product = $3 AND {}",
                    tx.any_of("user_id", 4)
                ),
                &[Val::from(org), Val::from(sub), Val::from(product), Val::texts(users)],
            )
            .await?;
        if gone != users.len() as u64 {
            return Err(StoreError::Replan(format!("assignments of {product} changed concurrently")));
        }
    }
    for (product, users) in &seats.dropped {
        crate::grants::drop_for(tx, org, product, users).await?;
    }
    // Takes: multi-row INSERTs.
    tx.insert_prepared(seats.takes).await.map_err(|e| match e {
        StoreError::Unique(w) => StoreError::Replan(format!("an assignment was added concurrently ({w})")),
        other => other,
    })?;
    update_service_data_many(tx, org, planned, catalogue, now, seats.stored).await?;
    // Counters last, once per pool, in key order: on PostgreSQL the row locks
    // they take are held until commit, so keeping them short and ordered
    // avoids deadlocks.
    for ((sub, product), delta) in seats.deltas {
        if delta == 0 {
            continue;
        }
        let changed = tx
            .exec(
                "UPDATE subscription_items SET consumed = consumed + $4 \
                 WHERE org_id = $1 AND subscription_id = $2 AND product = $3 AND consumed + $4 <= quantity AND consumed + $4 >= 0 \
                 AND ($4 < 0 OR NOT cancelled)",
                args![org, &sub, &product, delta],
            )
            .await?;
        if changed != 1 {
            let product = ProductCode::parse(&product).map_err(|e| StoreError::Db(e.detail))?;
            return Ok(Err(PoolFull {
                subscription: sub,
                product,
            }));
        }
    }
    Ok(Ok(()))
}

/// A licence change's audit states, serialized from borrowed fields (no
/// intermediate JSON tree: a job writes one pair per user).
#[derive(serde::Serialize)]
struct BeforeState<'a> {
    licenses: &'a [Held],
}

#[derive(serde::Serialize)]
struct AfterState<'a> {
    licenses: &'a [Held],
    moved_families: &'a [ProductCode],
    auto_added: &'a [ProductCode],
}

fn json_text<T: serde::Serialize>(v: &T) -> String {
    // Plain structs of strings and lists: serializing them cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

/// The audit events of applied plans, built (and their states serialized)
/// before the write, for [`record_events`]: a bulk job builds the next
/// chunk's while the writer writes the current one.
pub struct ChangeEvents {
    audit: PreparedRows,
    /// The webhook events (`license.assigned`, `.removed`, `.moved`), one
    /// per user and product, written only when an endpoint is in reach.
    outbox: Option<PreparedRows>,
}

/// One `license.change` per user with the licences before and after, and
/// the webhook events unless the transaction already knows that no
/// endpoint reaches the org (`reach`: then none are built or written).
pub fn change_events(
    backend: Backend,
    org: &str,
    planned: &[PlannedUser<'_>],
    who: &crate::audit::Actor,
    now: chrono::DateTime<chrono::Utc>,
    reach: crate::webhooks::Reach,
) -> ChangeEvents {
    let shared = [
        Val::from(org),
        Val::Text(ts(now)),
        Val::from(&who.actor),
        Val::from("license.change"),
        Val::from(who.request_id.as_deref()),
    ];
    // The users of a bulk job mostly go from the same licences to the same
    // licences: a state equal to the previous user's is copied, not
    // serialized again.
    let mut before_seen: Option<(&[Held], String)> = None;
    let mut after_seen: Option<(&LicensePlan, String)> = None;
    let rows: Vec<Vec<Val>> = planned
        .iter()
        .map(|p| {
            let before = match &before_seen {
                Some((held, text)) if *held == p.before => text.clone(),
                _ => {
                    let text = json_text(&BeforeState { licenses: p.before });
                    before_seen = Some((p.before, text.clone()));
                    text
                }
            };
            let same_after = |seen: &LicensePlan| {
                seen.result == p.plan.result && seen.moved_families == p.plan.moved_families && seen.auto_added == p.plan.auto_added
            };
            let after = match &after_seen {
                Some((plan, text)) if same_after(plan) => text.clone(),
                _ => {
                    let text = json_text(&AfterState {
                        licenses: &p.plan.result,
                        moved_families: &p.plan.moved_families,
                        auto_added: &p.plan.auto_added,
                    });
                    after_seen = Some((p.plan, text.clone()));
                    text
                }
            };
            vec![
                Val::Text(crate::db::new_id("evt")),
                Val::Text(format!("user:{}", p.user)),
                Val::Text(before),
                Val::Text(after),
            ]
        })
        .collect();
    ChangeEvents {
        audit: PreparedRows::with_shared(
            backend,
            "audit_events (org_id, at, actor, action, request_id, id, target, before_state, after_state)",
            &shared,
            &rows,
        ),
        outbox: match reach {
            crate::webhooks::Reach::Known(false) => None,
            _ => outbox_rows(backend, org, planned, who, now),
        },
    }
}

/// The most users one outbox row holds (see [`outbox_rows`]).
const USERS_PER_OUTBOX_ROW: usize = 1_000;

/// The webhook events of applied plans, grouped: one outbox row per event
/// alike but for its user (type, product, subscription, from, properties)
/// holds the users as a JSON list (`subjects`, `weight` of them) and their
/// emails (`emails`, an object read in the same statement). A bulk job's
/// chunk writes a handful of rows instead of one per user, which is most
/// of what the outbox cost the job; the sender expands a row into one
/// event per user (`webhook-id` = the row's id and the user's position).
///
/// A user's k-th event goes in a row of rank k, and rows are written rank
/// by rank: a user's events keep their order (removed before assigned).
fn outbox_rows(
    backend: Backend,
    org: &str,
    planned: &[PlannedUser<'_>],
    who: &crate::audit::Actor,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<PreparedRows> {
    struct Group<'p> {
        rank: usize,
        first: usize,
        kind: &'static str,
        held: &'p Held,
        from_subscription: Option<&'p str>,
        users: Vec<&'p str>,
    }
    /// (rank, kind, product, subscription, from, properties): events alike but for their user.
    type Alike<'p> = (usize, &'static str, &'p str, &'p str, Option<&'p str>, &'p Properties);
    let mut groups: Vec<Group<'_>> = Vec::new();
    // Each kind of event → its group still filling.
    let mut open: std::collections::HashMap<Alike<'_>, usize> = std::collections::HashMap::new();
    for (n, p) in planned.iter().enumerate() {
        for (rank, e) in allot_domain::webhooks::license_events(p.plan).into_iter().enumerate() {
            let kind = e.kind.as_str();
            let key = (
                rank,
                kind,
                e.held.product.as_str(),
                e.held.subscription.as_str(),
                e.from_subscription,
                &e.held.properties,
            );
            match open.get(&key) {
                Some(&g) if groups[g].users.len() < USERS_PER_OUTBOX_ROW => groups[g].users.push(p.user),
                _ => {
                    open.insert(key, groups.len());
                    groups.push(Group {
                        rank,
                        first: n,
                        kind,
                        held: e.held,
                        from_subscription: e.from_subscription,
                        users: vec![p.user],
                    });
                }
            }
        }
    }
    if groups.is_empty() {
        return None;
    }
    groups.sort_by_key(|g| (g.rank, g.first));
    let rows: Vec<Vec<Val>> = groups
        .iter()
        .map(|g| {
            let properties = if g.held.properties.is_empty() {
                "{}".to_string()
            } else {
                json_text(&g.held.properties)
            };
            vec![
                Val::Text(crate::db::new_id("msg")),
                Val::from(g.kind),
                Val::from(g.held.product.as_str()),
                Val::from(&g.held.subscription),
                Val::from(g.from_subscription),
                Val::Text(properties),
                Val::Text(json_text(&g.users)),
                Val::Int(g.users.len() as i64),
            ]
        })
        .collect();
    let shared = [
        Val::from(org),
        Val::Text(ts(now)),
        Val::from(&who.actor),
        Val::from(who.request_id.as_deref()),
    ];
    // `subject` names the row's first user: the column is not null, and
    // the sender takes each user from `subjects`.
    let first_subject = match backend {
        Backend::Sqlite => "({10}) ->> 0",
        Backend::Postgres => "(({10})::json ->> 0)",
    };
    let emails = match backend {
        Backend::Sqlite => {
            "(SELECT json_group_object(usr.id, usr.email) FROM users usr \
              WHERE usr.org_id = {0} AND usr.id IN (SELECT value FROM json_each({10})))"
        }
        Backend::Postgres => {
            "(SELECT json_object_agg(usr.id, usr.email)::text FROM users usr \
              WHERE usr.org_id = {0} AND usr.id IN (SELECT json_array_elements_text(({10})::json)))"
        }
    };
    Some(PreparedRows::with_shared_select(
        backend,
        "webhook_events (org_id, occurred_at, actor, request_id, id, type, product, subscription_id, from_subscription, properties, subjects, weight, subject, emails)",
        &shared,
        &rows,
        &[first_subject, emails],
        Some(crate::webhooks::IN_REACH),
    ))
}

/// Writes events built by [`change_events`], in multi-row statements: the
/// audit log's and the webhook outbox's.
pub async fn record_events(tx: &mut Tx, events: ChangeEvents) -> Result<(), StoreError> {
    tx.insert_prepared(events.audit).await?;
    if let Some(outbox) = events.outbox {
        if tx.insert_prepared_counted(outbox).await? > 0 {
            tx.note(|c| c.webhook_events = true);
        }
    }
    Ok(())
}

/// The audit and webhook events of applied plans (see [`change_events`]).
pub async fn record_changes(
    tx: &mut Tx,
    org: &str,
    planned: &[PlannedUser<'_>],
    who: &crate::audit::Actor,
    now: chrono::DateTime<chrono::Utc>,
    reach: crate::webhooks::Reach,
) -> Result<(), StoreError> {
    record_events(tx, change_events(tx.backend(), org, planned, who, now, reach)).await
}

/// Stored service data rows a batch's takes may touch, (data,
/// retain_until) by family and user, with the batch's service-data changes
/// they were read for (worked out once, off the writer's path when read
/// ahead).
pub struct StoredServiceData {
    changes: ServiceDataChanges,
    rows: StoredRows,
}

/// By family, then user (looked up without building a key).
type StoredRows = std::collections::HashMap<String, std::collections::HashMap<String, (String, Option<String>)>>;

/// What a batch of plans does to service data.
struct ServiceDataChanges {
    /// Users whose family's last licence goes, by (family, retention days).
    retain: BTreeMap<(String, u32), Vec<String>>,
    /// Takes that may touch a stored row: (user, family, properties given,
    /// product taken).
    taken: Vec<(String, String, Properties, ProductCode)>,
}

fn service_data_changes(planned: &[PlannedUser<'_>], catalogue: &std::collections::HashMap<ProductCode, Product>) -> ServiceDataChanges {
    let family = |code: &ProductCode| catalogue.get(code).map(|p| (p.family.as_str(), p.retention_days));
    let mut retain: BTreeMap<(String, u32), Vec<String>> = BTreeMap::new();
    let mut taken: Vec<(String, String, Properties, ProductCode)> = Vec::new();
    for p in planned {
        let held_after: Vec<&str> = p.plan.result.iter().filter_map(|h| family(&h.product).map(|f| f.0)).collect();
        for h in &p.plan.release {
            if let Some((fam, days)) = family(&h.product) {
                if !held_after.contains(&fam) {
                    retain.entry((fam.to_string(), days)).or_default().push(p.user.to_string());
                }
            }
        }
        let held_before: Vec<&str> = p.before.iter().filter_map(|h| family(&h.product).map(|f| f.0)).collect();
        for h in &p.plan.take {
            if let Some((fam, _)) = family(&h.product) {
                // A family held before and after with no new properties: its row is untouched (a move).
                if held_before.contains(&fam) && h.properties.is_empty() {
                    continue;
                }
                taken.push((p.user.to_string(), fam.to_string(), h.properties.clone(), h.product.clone()));
            }
        }
    }
    ServiceDataChanges { retain, taken }
}

/// The stored rows the takes of `planned` may touch (read ahead of the
/// write: see [`SeatChanges::with_stored_service_data`]).
pub async fn stored_service_data(
    tx: &mut Tx,
    org: &str,
    planned: &[PlannedUser<'_>],
    catalogue: &std::collections::HashMap<ProductCode, Product>,
) -> Result<StoredServiceData, StoreError> {
    let changes = service_data_changes(planned, catalogue);
    let rows = read_stored_rows(tx, org, &changes.taken).await?;
    Ok(StoredServiceData { changes, rows })
}

/// The service-data changes of `planned` for users known to have no
/// service data stored (nothing to read: see [`SeatChanges::with_stored_service_data`]).
pub fn nothing_stored(planned: &[PlannedUser<'_>], catalogue: &std::collections::HashMap<ProductCode, Product>) -> StoredServiceData {
    StoredServiceData {
        changes: service_data_changes(planned, catalogue),
        rows: StoredRows::new(),
    }
}

/// Stored rows of the families taken, read once per family.
async fn read_stored_rows(tx: &mut Tx, org: &str, taken: &[(String, String, Properties, ProductCode)]) -> Result<StoredRows, StoreError> {
    let mut by_family: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (user, fam, _, _) in taken {
        by_family.entry(fam).or_default().push(user);
    }
    let mut stored = StoredRows::new();
    for (fam, users) in &by_family {
        for r in tx
            .rows_packed(
                &["user_id", "data", "retain_until"],
                &format!(
                    "FROM service_data WHERE org_id = $1 AND family = $2 AND {}",
                    tx.any_of("user_id", 3)
                ),
                &[Val::from(org), Val::from(*fam), Val::texts(users)],
            )
            .await?
        {
            stored
                .entry(fam.to_string())
                .or_default()
                .insert(r.text("user_id")?, (r.text("data")?, r.opt_text("retain_until")?));
        }
    }
    Ok(stored)
}

/// Service data per user and family: families whose last licence
/// goes start their retention; a family taken keeps (or, within retention,
/// gets back) its data, merged with the properties given. A family taken
/// with no properties and no stored data needs no row: absent means empty.
/// `stored` is read here unless it was read ahead.
async fn update_service_data_many(
    tx: &mut Tx,
    org: &str,
    planned: &[PlannedUser<'_>],
    catalogue: &std::collections::HashMap<ProductCode, Product>,
    now: chrono::DateTime<chrono::Utc>,
    stored: Option<StoredServiceData>,
) -> Result<(), StoreError> {
    let now_s = ts(now);
    let (changes, read_ahead) = match stored {
        Some(s) => (s.changes, Some(s.rows)),
        None => (service_data_changes(planned, catalogue), None),
    };
    for ((fam, days), users) in &changes.retain {
        let until = ts(now + chrono::Duration::days(i64::from(*days)));
        tx.exec(
            &format!(
                "UPDATE service_data SET retain_until = $3, updated_at = $4 WHERE org_id = $1 AND family = $2 AND {}",
                tx.any_of("user_id", 5)
            ),
            &[
                Val::from(org),
                Val::from(fam),
                Val::from(&until),
                Val::from(&now_s),
                Val::texts(users),
            ],
        )
        .await?;
    }
    if changes.taken.is_empty() {
        return Ok(());
    }
    let stored = match read_ahead {
        Some(rows) => rows,
        None => read_stored_rows(tx, org, &changes.taken).await?,
    };
    let mut inserts: Vec<Vec<Val>> = Vec::new();
    let name_of = |k: &allot_domain::catalogue::PropertyName| {
        serde_json::to_value(k)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    for (user, fam, props, product) in &changes.taken {
        let existing = stored.get(fam.as_str()).and_then(|of_family| of_family.get(user.as_str()));
        if existing.is_none() && props.is_empty() {
            continue;
        }
        let mut data: BTreeMap<String, String> = match existing {
            Some((data, until)) if until.as_ref().is_none_or(|u| *u > now_s) => serde_json::from_str(data).unwrap_or_default(),
            _ => BTreeMap::new(),
        };
        // A family taken again within its retention gets its data back in
        // the licence too: each property the product takes that the change
        // did not name is restored from the stored data.
        let given: BTreeMap<String, String> = props.iter().map(|(k, v)| (name_of(k), v.clone())).collect();
        let mut restored = given.clone();
        if let Some(p) = catalogue.get(product) {
            for name in p.properties.keys().map(name_of) {
                if let (false, Some(v)) = (given.contains_key(&name), data.get(&name)) {
                    restored.insert(name, v.clone());
                }
            }
        }
        if restored.len() > given.len() {
            tx.exec(
                "UPDATE assignments SET properties = $4 WHERE org_id = $1 AND user_id = $2 AND product = $3",
                args![
                    org,
                    user,
                    product.as_str(),
                    serde_json::to_string(&restored).unwrap_or_else(|_| "{}".into())
                ],
            )
            .await?;
        }
        data.extend(given);
        let json = serde_json::to_string(&data).unwrap_or_else(|_| "{}".into());
        // A row read ahead may since have been purged (its retention had
        // ended, so its data was not kept anyway): then it is inserted.
        let updated = match existing {
            Some(_) => {
                tx.exec(
                    "UPDATE service_data SET data = $4, retain_until = NULL, updated_at = $5 WHERE org_id = $1 AND user_id = $2 AND family = $3",
                    args![org, user, fam, &json, &now_s],
                )
                .await?
            }
            None => 0,
        };
        if updated == 0 {
            inserts.push(vec![
                Val::from(org),
                Val::from(user),
                Val::from(fam),
                Val::Text(json),
                Val::NullText,
                Val::from(&now_s),
            ]);
        }
    }
    tx.insert_rows("service_data (org_id, user_id, family, data, retain_until, updated_at)", inserts)
        .await
}
