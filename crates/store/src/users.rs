//! Users of an org, with their site-admin roles and group memberships.

use serde::Serialize;

use allot_domain::types::{UserKind, UserStatus};
use allot_domain::{Code, Error};

use crate::db::{Backend, Row, StoreError, Tx, Val};
use crate::{args, ts};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub kind: UserKind,
    pub status: UserStatus,
    pub usage_location: Option<String>,
    pub site_admin_of: Vec<String>,
    pub groups: Vec<String>,
}

impl User {
    /// An active internal user with no name, location, sites or groups (as
    /// the loaders of tests and benchmarks make them by the thousand).
    pub fn internal(id: String, email: String) -> User {
        User {
            id,
            email,
            display_name: String::new(),
            kind: UserKind::Internal,
            status: UserStatus::Active,
            usage_location: None,
            site_admin_of: vec![],
            groups: vec![],
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub email: Option<String>,
    pub kind: Option<UserKind>,
    pub status: Option<UserStatus>,
    pub q: Option<String>,
    /// Only users holding a licence of this product.
    pub product: Option<String>,
}

/// Where a page of users starts, in id order: pages are found by key, not
/// by offset, so that the last page of 100,000 users costs what the first
/// does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageAt {
    /// The first page.
    First,
    /// The page after this id.
    After(String),
    /// The page before this id.
    Before(String),
    /// The last page.
    Last,
}

pub(crate) const COLUMNS: &str = "id, email, display_name, kind, status, usage_location";

/// A stored kind; one this version does not know is damage (or a newer
/// server's data), refused loudly rather than read as something else.
fn kind_of(s: &str) -> Result<UserKind, StoreError> {
    UserKind::parse(s).ok_or_else(|| StoreError::Db(format!("a stored user has the unknown kind {s:?}")))
}

pub(crate) fn status_of(s: &str) -> Result<UserStatus, StoreError> {
    UserStatus::parse(s).ok_or_else(|| StoreError::Db(format!("a stored user has the unknown status {s:?}")))
}

pub(crate) fn user_from(r: &Row) -> Result<User, StoreError> {
    Ok(User {
        id: r.text("id")?,
        email: r.text("email")?,
        display_name: r.text("display_name")?,
        kind: kind_of(&r.text("kind")?)?,
        status: status_of(&r.text("status")?)?,
        usage_location: r.opt_text("usage_location")?,
        site_admin_of: Vec::new(),
        groups: Vec::new(),
    })
}

pub(crate) async fn load_links(tx: &mut Tx, org: &str, users: &mut [User]) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (users.first().map(|u| u.id.clone()), users.last().map(|u| u.id.clone())) else {
        return Ok(());
    };
    for (sql, is_admin) in [
        (
            "SELECT user_id, site_id AS link FROM user_site_admins WHERE org_id = $1 AND user_id >= $2 AND user_id <= $3 ORDER BY site_id",
            true,
        ),
        (
            "SELECT user_id, group_id AS link FROM group_members WHERE org_id = $1 AND user_id >= $2 AND user_id <= $3 ORDER BY group_id",
            false,
        ),
    ] {
        for r in tx.rows(sql, args![org, &first, &last]).await? {
            let uid = r.text("user_id")?;
            if let Some(u) = users.iter_mut().find(|u| u.id == uid) {
                if is_admin {
                    u.site_admin_of.push(r.text("link")?);
                } else {
                    u.groups.push(r.text("link")?);
                }
            }
        }
    }
    Ok(())
}

/// Users of an org in id order. The `q` filter matches email or display name
/// case-insensitively; `email` matches exactly (case-insensitively).
/// `kind=external` lists the external users who hold a licence: one whose
/// last licence is removed drops off that list but still exists.
pub async fn list(tx: &mut Tx, org: &str, f: &UserFilter, after: Option<&str>, limit: i64) -> Result<Vec<User>, StoreError> {
    list_at(tx, org, f, &PageAt::After(after.unwrap_or("").to_string()), limit).await
}

/// How a search for text in emails and names runs: through the substring
/// index (SQLite FTS5 with the trigram tokenizer, PostgreSQL `pg_trgm`) or,
/// for text under 3 characters (no trigram to look up) and for text that
/// thousands of users hold (the first page fills at once), as a scan.
/// Every candidate the index gives is checked with the scan's `LIKE` too,
/// so the index can only make a search faster, never answer another user.
#[derive(Debug, Clone)]
pub(crate) enum Search {
    /// `LIKE` on the email and the name.
    Scan { pattern: String },
    /// SQLite: rows whose rowid the FTS5 phrase finds.
    Fts { phrase: String, pattern: String },
    /// PostgreSQL: the trigram index on the combined text, asked for the
    /// longest run of letters and digits in the text (`index_pattern`),
    /// the whole text then checked row by row. Fewer, longer trigrams: the
    /// index reads less (for `user123456@bench` among a million users,
    /// whose `@bench` every user shares, 8 ms instead of 25 ms).
    Trigram { index_pattern: String, pattern: String },
}

/// The longest run of letters and digits in `text` (the first of equal
/// ones), if it has at least 3 characters.
fn longest_run(text: &str) -> Option<&str> {
    text.split(|c: char| !c.is_alphanumeric())
        .fold(None, |best: Option<&str>, run| match best {
            Some(b) if b.chars().count() >= run.chars().count() => Some(b),
            _ => Some(run),
        })
        .filter(|r| r.chars().count() >= 3)
}

/// Index matches beyond which a search scans instead (see [`Search`]).
const DENSE_MATCHES: i64 = 2000;

/// The search `f` asks for, if any.
pub(crate) async fn plan_search(tx: &mut Tx, f: &UserFilter) -> Result<Option<Search>, StoreError> {
    let Some(q) = f.q.as_ref() else { return Ok(None) };
    let lowered = q.to_lowercase();
    let pattern = format!("%{}%", crate::escape_like(&lowered));
    if lowered.chars().count() < 3 {
        return Ok(Some(Search::Scan { pattern }));
    }
    match tx.backend() {
        Backend::Postgres => {
            let run = longest_run(&lowered).unwrap_or(&lowered);
            let index_pattern = format!("%{}%", crate::escape_like(run));
            Ok(Some(Search::Trigram { index_pattern, pattern }))
        }
        Backend::Sqlite => {
            // An FTS5 phrase: the text quoted, its quotes doubled.
            let phrase = format!("\"{}\"", lowered.replace('"', "\"\""));
            let found = tx
                .opt_row(
                    "SELECT COUNT(*) AS n FROM (SELECT rowid FROM users_search WHERE users_search MATCH $1 LIMIT $2)",
                    args![phrase.as_str(), DENSE_MATCHES],
                )
                .await?
                .map(|r| r.int("n"))
                .transpose()?
                .unwrap_or(0);
            if found >= DENSE_MATCHES {
                Ok(Some(Search::Scan { pattern }))
            } else {
                Ok(Some(Search::Fts { phrase, pattern }))
            }
        }
    }
}

/// The ` AND ...` clauses of a filter, numbered after `leading` (the
/// statement's own arguments), and all the arguments.
pub(crate) fn filter_clauses(f: &UserFilter, search: Option<&Search>, leading: Vec<crate::Val>) -> (String, Vec<crate::Val>) {
    let mut q = crate::filtered::Filtered::new(String::new(), leading);
    q.and("email_normalized = ?", f.email.as_ref().map(|e| e.to_lowercase()))
        .and("kind = ?", f.kind.map(|k| k.as_str()))
        .and("status = ?", f.status.map(|s| s.as_str()))
        .and(
            "EXISTS (SELECT 1 FROM assignments a WHERE a.org_id = users.org_id AND a.user_id = users.id AND a.product = ?)",
            f.product.as_deref(),
        );
    if f.kind == Some(UserKind::External) {
        q.sql
            .push_str(" AND EXISTS (SELECT 1 FROM assignments a WHERE a.org_id = users.org_id AND a.user_id = users.id)");
    }
    let like = "(email_normalized LIKE ? ESCAPE '\\' OR LOWER(display_name) LIKE ? ESCAPE '\\')";
    match search {
        None => {}
        Some(Search::Scan { pattern }) => {
            q.and(like, Some(pattern.as_str()));
        }
        Some(Search::Fts { phrase, pattern }) => {
            q.and(
                "users.rowid IN (SELECT rowid FROM users_search WHERE users_search MATCH ?)",
                Some(phrase.as_str()),
            )
            .and(like, Some(pattern.as_str()));
        }
        Some(Search::Trigram { index_pattern, pattern }) => {
            // The index finds candidates by the run; the scan's own test,
            // which no index serves, keeps exactly the users that match.
            q.and(&format!("{SEARCH_TEXT} LIKE ? ESCAPE '\\'"), Some(index_pattern.as_str()))
                .and(like, Some(pattern.as_str()));
        }
    }
    (q.sql, q.args)
}

/// `+` before a column keeps SQLite from reading users through the index
/// of that column: with an FTS5 search, the few rows the search finds are
/// read by rowid and sorted, instead of every user of the org in id order
/// being tested against them (3 ms instead of 112 ms among 1,000,000).
pub(crate) fn fts_first(search: Option<&Search>) -> &'static str {
    match search {
        Some(Search::Fts { .. }) => "+",
        _ => "",
    }
}

/// What the PostgreSQL trigram index holds per user: the email and the
/// name, lowercased, apart by a character no search can hold (searches
/// refuse control characters), so that no match spans the two.
const SEARCH_TEXT: &str = "(email_normalized || chr(1) || lower(display_name))";

/// Up to `limit` users matching `f` from `at`, in id order.
pub async fn list_at(tx: &mut Tx, org: &str, f: &UserFilter, at: &PageAt, limit: i64) -> Result<Vec<User>, StoreError> {
    let search = plan_search(tx, f).await?;
    let mut leading = args![org].to_vec();
    let plus = fts_first(search.as_ref());
    let key = match at {
        PageAt::After(id) | PageAt::Before(id) => {
            leading.push(crate::Val::from(id.as_str()));
            let op = if matches!(at, PageAt::After(_)) { ">" } else { "<" };
            format!(" AND {plus}id {op} $2")
        }
        PageAt::First | PageAt::Last => String::new(),
    };
    let (clauses, mut values) = filter_clauses(f, search.as_ref(), leading);
    // Backwards from the end (or from `Before`), then turned round.
    let backwards = matches!(at, PageAt::Before(_) | PageAt::Last);
    values.push(crate::Val::from(limit));
    let sql = format!(
        "SELECT {COLUMNS} FROM users WHERE {plus}org_id = $1{key}{clauses} ORDER BY id{} LIMIT ${}",
        if backwards { " DESC" } else { "" },
        values.len()
    );
    let rows = tx.rows(&sql, &values).await?;
    let mut users: Vec<User> = rows.iter().map(user_from).collect::<Result<_, _>>()?;
    if backwards {
        users.reverse();
    }
    load_links(tx, org, &mut users).await?;
    Ok(users)
}

/// Rebuilds SQLite's substring index of users from the users table (after
/// a `VACUUM`, which may renumber the rowids it is keyed by). PostgreSQL's
/// is an ordinary index and needs nothing.
pub async fn rebuild_search_index(tx: &mut Tx) -> Result<u64, StoreError> {
    if tx.backend() != Backend::Sqlite {
        return Ok(0);
    }
    tx.exec("DELETE FROM users_search", &[]).await?;
    tx.exec(
        "INSERT INTO users_search (rowid, text) SELECT rowid, email_normalized || char(1) || lower(display_name) FROM users",
        &[],
    )
    .await
}

/// One user with its site-admin roles and groups, in one statement (the
/// links aggregated as comma-separated ids: ids hold no commas).
pub async fn get(tx: &mut Tx, org: &str, id: &str) -> Result<Option<User>, StoreError> {
    let links = |table: &str, column: &str| match tx.backend() {
        Backend::Sqlite => format!("(SELECT group_concat({column}, ',') FROM {table} WHERE org_id = $1 AND user_id = $2)"),
        Backend::Postgres => format!("(SELECT string_agg({column}, ',') FROM {table} WHERE org_id = $1 AND user_id = $2)"),
    };
    let sql = format!(
        "SELECT {COLUMNS}, {} AS site_ids, {} AS group_ids FROM users WHERE org_id = $1 AND id = $2",
        links("user_site_admins", "site_id"),
        links("group_members", "group_id")
    );
    let Some(row) = tx.opt_row(&sql, args![org, id]).await? else {
        return Ok(None);
    };
    let mut user = user_from(&row)?;
    let split = |v: Option<String>| -> Vec<String> {
        let mut ids: Vec<String> = v
            .iter()
            .flat_map(|s| s.split(','))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        ids.sort();
        ids
    };
    user.site_admin_of = split(row.opt_text("site_ids")?);
    user.groups = split(row.opt_text("group_ids")?);
    Ok(Some(user))
}

/// The user (without site-admin roles and groups), the version of its
/// licence set and the org's count of bulk chunks written from plans made
/// ahead (see [`crate::license_epochs`]), read together for planning a
/// licence change.
/// What a licence change of one user is planned from, read in one
/// statement: the user, the version of their licence set, the org's count
/// of bulk chunks written from plans made ahead (see
/// [`crate::license_epochs`]), whether any service data is stored for them,
/// and their licences in product order.
pub struct LicenseState {
    pub user: User,
    pub version: i64,
    pub chunks_ahead: i64,
    /// When false, a change of this user need not read service data: none
    /// can appear without moving `version` on.
    pub has_service_data: bool,
    pub assignments: Vec<crate::licenses::Assignment>,
}

pub async fn license_state(tx: &mut Tx, org: &str, id: &str) -> Result<Option<LicenseState>, StoreError> {
    let rows = tx
        .rows(
            &format!(
                "SELECT {COLUMNS}, v.version, COALESCE((SELECT e.ahead FROM license_epochs e WHERE e.org_id = u.org_id), 0) AS ahead, \
                 EXISTS (SELECT 1 FROM service_data s WHERE s.org_id = u.org_id AND s.user_id = u.id) AS has_service_data, \
                 a.product, a.subscription_id, a.properties, a.assigned_at \
                 FROM users u JOIN license_versions v ON v.org_id = u.org_id AND v.user_id = u.id \
                 LEFT JOIN assignments a ON a.org_id = u.org_id AND a.user_id = u.id \
                 WHERE u.org_id = $1 AND u.id = $2"
            ),
            args![org, id],
        )
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut assignments = Vec::with_capacity(rows.len());
    for r in &rows {
        // A user without licences is one row with no assignment columns.
        if !r.cell_is_null("product") {
            assignments.push(crate::licenses::assignment_from(r)?);
        }
    }
    // Sorted here, not by the statement: read before every licence change,
    // a sort node costs PostgreSQL more to set up than the rows do to sort.
    assignments.sort_by(|a, b| a.held.product.cmp(&b.held.product));
    Ok(Some(LicenseState {
        user: user_from(first)?,
        version: first.int("version")?,
        chunks_ahead: first.int("ahead")?,
        has_service_data: first.bool("has_service_data")?,
        assignments,
    }))
}

/// The sites a user administers.
pub async fn site_admin_of(tx: &mut Tx, org: &str, id: &str) -> Result<Vec<String>, StoreError> {
    tx.rows(
        "SELECT site_id FROM user_site_admins WHERE org_id = $1 AND user_id = $2 ORDER BY site_id",
        args![org, id],
    )
    .await?
    .iter()
    .map(|r| r.text("site_id"))
    .collect()
}

/// The licence version claim (see [`claim_license_version`]).
const CLAIM: &str = "UPDATE license_versions SET version = version + 1 WHERE org_id = $1 AND user_id = $2 AND version = $3 \
     AND COALESCE((SELECT ahead FROM license_epochs WHERE org_id = $1), 0) = $4";

/// PostgreSQL's claim, answering too whether a webhook endpoint reaches the
/// org: asked in the transaction's first statement, so that a change no
/// endpoint reaches sends no outbox statement (one round trip less).
static CLAIM_ASKING_REACH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{CLAIM} RETURNING {} AS in_reach", crate::webhooks::IN_REACH.replace("{0}", "$1")));

/// Claims the licence-set version a plan was made from, and counts a
/// versioned write (see [`crate::license_epochs`]). The claim also fails
/// when a bulk chunk planned ahead was written in the org since the plan's
/// snapshot saw `chunks_ahead` of them (SQLite; always 0 on PostgreSQL). On
/// PostgreSQL this also locks the user's version row until commit. A
/// concurrent change that claimed it first makes this a `Retry`: plan
/// again on fresh data. Answers what the claim learnt of the webhook
/// endpoints reaching the org (for [`crate::licenses::record_changes`]).
pub async fn claim_license_version(
    tx: &mut Tx,
    org: &str,
    id: &str,
    version: i64,
    chunks_ahead: i64,
) -> Result<crate::webhooks::Reach, StoreError> {
    let args = args![org, id, version, chunks_ahead];
    let claimed = match tx.backend() {
        Backend::Postgres => tx
            .opt_row(&CLAIM_ASKING_REACH, args)
            .await?
            .map(|row| row.bool("in_reach").map(crate::webhooks::Reach::Known))
            .transpose()?,
        // A statement costs SQLite no round trip: the outbox insert asks
        // itself, and the claim stays a plain UPDATE (answering the
        // question in it cost a fifth more CPU per change, measured).
        Backend::Sqlite => (tx.exec(CLAIM, args).await? == 1).then_some(crate::webhooks::Reach::Unknown),
    };
    if let Some(reach) = claimed {
        tx.note(|c| c.claimed(org, id, version + 1));
        crate::license_epochs::note_versioned_write(tx, org).await?;
        Ok(reach)
    } else {
        Err(StoreError::Replan(format!(
            "the licences of user {id} changed while the change was planned"
        )))
    }
}

/// Reads a user inside a write transaction and, on PostgreSQL, locks the row
/// so that concurrent changes of the same user's licences run one after the
/// other (SQLite already runs one writer at a time).
pub async fn get_for_update(tx: &mut Tx, org: &str, id: &str) -> Result<Option<User>, StoreError> {
    if tx.backend() == Backend::Postgres
        && tx
            .opt_row("SELECT 1 FROM users WHERE org_id = $1 AND id = $2 FOR UPDATE", args![org, id])
            .await?
            .is_none()
    {
        return Ok(None);
    }
    get(tx, org, id).await
}

fn email_taken(email: &str) -> StoreError {
    Error::new(
        Code::EmailTaken,
        format!("A user with email {email} already exists in this organisation."),
    )
    .into()
}

async fn write_links(tx: &mut Tx, org: &str, u: &User) -> Result<(), StoreError> {
    tx.exec("DELETE FROM user_site_admins WHERE org_id = $1 AND user_id = $2", args![org, &u.id])
        .await?;
    tx.exec("DELETE FROM group_members WHERE org_id = $1 AND user_id = $2", args![org, &u.id])
        .await?;
    for site in &u.site_admin_of {
        tx.exec(
            "INSERT INTO user_site_admins (org_id, user_id, site_id) VALUES ($1, $2, $3)",
            args![org, &u.id, site],
        )
        .await?;
    }
    for group in &u.groups {
        tx.exec(
            "INSERT INTO group_members (org_id, group_id, user_id) VALUES ($1, $2, $3)",
            args![org, group, &u.id],
        )
        .await?;
    }
    Ok(())
}

pub async fn insert(tx: &mut Tx, org: &str, u: &User, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    let r = tx
        .exec(
            &format!("INSERT INTO users (org_id, {COLUMNS}, email_normalized, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)"),
            args![org, &u.id, &u.email, &u.display_name, u.kind.as_str(), u.status.as_str(), u.usage_location.as_deref(), u.email.to_lowercase(), ts(now)],
        )
        .await;
    match r {
        Err(StoreError::Unique(_)) => return Err(email_taken(&u.email)),
        other => other?,
    };
    tx.note(|c| c.user(org, &u.id));
    tx.exec(
        "INSERT INTO license_versions (org_id, user_id, version) VALUES ($1, $2, 0)",
        args![org, &u.id],
    )
    .await?;
    write_links(tx, org, u).await
}

/// Many users at once in multi-row statements (imports, loads); site-admin
/// and group links are not written, so give users without them. A taken
/// email refuses the whole batch.
pub async fn insert_many(tx: &mut Tx, org: &str, users: &[User], now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    let now = ts(now);
    // A statement's worth at a time: a million users never become a
    // million argument rows in memory at once.
    for batch in users.chunks(crate::db::BULK_ROWS_PER_STATEMENT) {
        let rows: Vec<Vec<Val>> = batch
            .iter()
            .map(|u| {
                vec![
                    Val::from(org),
                    Val::from(&u.id),
                    Val::from(&u.email),
                    Val::from(&u.display_name),
                    Val::from(u.kind.as_str()),
                    Val::from(u.status.as_str()),
                    Val::from(u.usage_location.as_deref()),
                    Val::Text(u.email.to_lowercase()),
                    Val::from(&now),
                    Val::from(&now),
                ]
            })
            .collect();
        insert_user_rows(tx, rows).await?;
        tx.note(|c| c.users(org, batch.iter().map(|u| u.id.as_str())));
        let versions: Vec<Vec<Val>> = batch.iter().map(|u| vec![Val::from(org), Val::from(&u.id), Val::Int(0)]).collect();
        tx.insert_rows("license_versions (org_id, user_id, version)", versions).await?;
    }
    Ok(())
}

async fn insert_user_rows(tx: &mut Tx, rows: Vec<Vec<Val>>) -> Result<(), StoreError> {
    tx.insert_rows(
        &format!("users (org_id, {COLUMNS}, email_normalized, created_at, updated_at)"),
        rows,
    )
    .await
    .map_err(|e| match e {
        StoreError::Unique(_) => StoreError::Domain(Error::new(
            Code::EmailTaken,
            "An email in the batch is already taken in this organisation.",
        )),
        other => other,
    })
}

pub async fn update(tx: &mut Tx, org: &str, u: &User, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
    let r = tx
        .exec(
            "UPDATE users SET email = $3, email_normalized = $4, display_name = $5, kind = $6, status = $7, usage_location = $8, updated_at = $9 \
             WHERE org_id = $1 AND id = $2",
            args![org, &u.id, &u.email, u.email.to_lowercase(), &u.display_name, u.kind.as_str(), u.status.as_str(), u.usage_location.as_deref(), ts(now)],
        )
        .await;
    match r {
        Err(StoreError::Unique(_)) => return Err(email_taken(&u.email)),
        other => other?,
    };
    tx.note(|c| c.user(org, &u.id));
    write_links(tx, org, u).await
}

/// Deletes a user (its licence version goes with it); a versioned write,
/// so that a chunk planned ahead with this user is planned again.
pub async fn delete(tx: &mut Tx, org: &str, id: &str) -> Result<(), StoreError> {
    tx.exec("DELETE FROM console_selections WHERE org_id = $1 AND user_id = $2", args![org, id])
        .await?;
    tx.exec("DELETE FROM license_usage WHERE org_id = $1 AND user_id = $2", args![org, id])
        .await?;
    tx.exec("DELETE FROM users WHERE org_id = $1 AND id = $2", args![org, id]).await?;
    tx.note(|c| c.user(org, id));
    crate::license_epochs::note_versioned_write(tx, org).await
}

/// Which of the given site ids belong to the org, and which group ids.
pub async fn unknown_links(tx: &mut Tx, org: &str, sites: &[String], groups: &[String]) -> Result<Vec<String>, StoreError> {
    let mut missing = Vec::new();
    for s in sites {
        if tx
            .opt_row("SELECT 1 FROM sites WHERE org_id = $1 AND id = $2", args![org, s])
            .await?
            .is_none()
        {
            missing.push(format!("site {s}"));
        }
    }
    for g in groups {
        if tx
            .opt_row("SELECT 1 FROM org_groups WHERE org_id = $1 AND id = $2", args![org, g])
            .await?
            .is_none()
        {
            missing.push(format!("group {g}"));
        }
    }
    Ok(missing)
}

/// Locks many users' licence sets for a batch: bumps each licence version
/// (on PostgreSQL this row-locks their version rows until commit, so a single change
/// planned earlier fails its version claim and plans again), and counts a
/// versioned write (see [`crate::license_epochs`]). Returns the ids that exist.
pub async fn lock_licenses(tx: &mut Tx, org: &str, ids: &[String]) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let (ids_in, vals) = crate::catalogue::in_list(tx, "user_id", org, ids);
    let locked = tx
        .rows(
            &format!("UPDATE license_versions SET version = version + 1 WHERE org_id = $1 AND {ids_in} RETURNING user_id, version"),
            &vals,
        )
        .await?;
    let mut claimed = Vec::with_capacity(locked.len());
    for r in &locked {
        claimed.push((r.text("user_id")?, r.int("version")?));
    }
    tx.note(|c| {
        for (user, version) in &claimed {
            c.claimed(org, user, *version);
        }
    });
    crate::license_epochs::note_versioned_write(tx, org).await?;
    Ok(locked.len() as u64)
}

/// Many users with the sites each administers (site admins only for those
/// who have any), for planning a batch.
pub async fn many(tx: &mut Tx, org: &str, ids: &[String]) -> Result<Vec<User>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let (ids_in, vals) = crate::catalogue::in_list(tx, "id", org, ids);
    let users_in = tx.any_of("user_id", 2);
    let mut users: Vec<User> = tx
        .rows_packed(&[COLUMNS], &format!("FROM users WHERE org_id = $1 AND {ids_in}"), &vals)
        .await?
        .iter()
        .map(user_from)
        .collect::<Result<_, _>>()?;
    let admins = tx
        .rows(
            &format!("SELECT user_id, site_id FROM user_site_admins WHERE org_id = $1 AND {users_in} ORDER BY site_id"),
            &vals,
        )
        .await?;
    if !admins.is_empty() {
        let mut by_user: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
        for r in &admins {
            by_user.entry(r.text("user_id")?).or_default().push(r.text("site_id")?);
        }
        for u in &mut users {
            if let Some(sites) = by_user.remove(&u.id) {
                u.site_admin_of = sites;
            }
        }
    }
    Ok(users)
}

/// How many of `ids` are users of the org (for refusing a list naming
/// unknown or other tenants' users as a whole).
pub async fn count_existing(tx: &mut Tx, org: &str, ids: &[String]) -> Result<i64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let (ids_in, vals) = crate::catalogue::in_list(tx, "id", org, ids);
    tx.opt_row(&format!("SELECT COUNT(*) AS n FROM users WHERE org_id = $1 AND {ids_in}"), &vals)
        .await?
        .map_or(Ok(0), |r| r.int("n"))
}

/// A user filter's clause: `u` holds the product `?`.
const HOLDS_PRODUCT: &str = "EXISTS (SELECT 1 FROM assignments a WHERE a.org_id = u.org_id AND a.user_id = u.id AND a.product = ?)";

/// A page of user ids matching a bulk filter, in id order after `after`.
/// `today` places an idle window (`filter.idle_days`).
pub async fn ids_matching(
    tx: &mut Tx,
    org: &str,
    filter: &allot_domain::bulk::UserFilter,
    today: chrono::NaiveDate,
    after: &str,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    // Emails hold exactly one `@`, so "ends with @<domain>" is the domain
    // exactly; the domain's LIKE wildcards are escaped (and refused upstream).
    let domain = filter
        .email_domain
        .as_ref()
        .map(|d| format!("%@{}", crate::escape_like(&d.trim_start_matches('@').to_lowercase())));
    let mut q = crate::filtered::Filtered::new("FROM users u WHERE u.org_id = $1 AND u.id > $2", args![org, after].to_vec());
    q.and(
        "EXISTS (SELECT 1 FROM group_members g WHERE g.org_id = u.org_id AND g.group_id = ? AND g.user_id = u.id)",
        filter.group.clone(),
    )
    .and("u.email_normalized LIKE ? ESCAPE '\\'", domain)
    .and(HOLDS_PRODUCT, filter.has_product.as_ref().map(|p| p.to_string()))
    .and(
        "EXISTS (SELECT 1 FROM assignments s WHERE s.org_id = u.org_id AND s.user_id = u.id AND s.subscription_id = ?)",
        filter.subscription.clone(),
    );
    match (&filter.product, filter.idle_days) {
        (Some(product), Some(days)) => {
            crate::usage::and_idle_holder(&mut q, product.as_str(), allot_domain::bulk::idle_window_start(today, days))
        }
        (Some(product), None) => {
            q.and(HOLDS_PRODUCT, Some(product.to_string()));
        }
        // Refused by the request's validation: idle_days names no product.
        (None, _) => {}
    }
    q.then(" ORDER BY u.id LIMIT ?", limit);
    let mut ids: Vec<String> = tx
        .rows_packed(&["u.id"], &q.sql, &q.args)
        .await?
        .iter()
        .map(|r| r.text("id"))
        .collect::<Result<_, _>>()?;
    // Packed rows come in no promised order.
    ids.sort_unstable();
    Ok(ids)
}

/// One user of an export page with the seats it holds.
#[derive(Debug, Clone)]
pub struct ExportedUser {
    pub user: User,
    /// (product, subscription) of every seat held.
    pub seats: Vec<(String, String)>,
}

/// A page of the users CSV: users after `after` in id order with their
/// seats. Two range reads on primary keys (a join lets SQLite's planner pick
/// the pool index and scan every assignment of the org per user); the caller
/// passes a read transaction when the page must be one snapshot.
pub async fn export_page(tx: &mut Tx, org: &str, after: &str, limit: i64) -> Result<Vec<ExportedUser>, StoreError> {
    let rows = tx
        .rows_packed(
            &[COLUMNS],
            "FROM users WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            args![org, after, limit],
        )
        .await?;
    let mut out: Vec<ExportedUser> = rows
        .iter()
        .map(|r| {
            Ok(ExportedUser {
                user: user_from(r)?,
                seats: Vec::new(),
            })
        })
        .collect::<Result<_, StoreError>>()?;
    let Some(last) = out.last().map(|e| e.user.id.clone()) else {
        return Ok(out);
    };
    let seats = tx
        .rows_packed(
            &["user_id", "product", "subscription_id"],
            "FROM assignments WHERE org_id = $1 AND user_id > $2 AND user_id <= $3 ORDER BY user_id",
            args![org, after, &last],
        )
        .await?;
    // Both lists are in user id order: one merge pass.
    let mut k = 0;
    for r in &seats {
        let uid = r.text("user_id")?;
        while k < out.len() && out[k].user.id < uid {
            k += 1;
        }
        if let Some(e) = out.get_mut(k).filter(|e| e.user.id == uid) {
            e.seats.push((r.text("product")?, r.text("subscription_id")?));
        }
    }
    Ok(out)
}

/// The ids of the org's users with these normalized emails (one chunk of an import).
pub async fn ids_by_emails(tx: &mut Tx, org: &str, emails: &[String]) -> Result<Vec<String>, StoreError> {
    if emails.is_empty() {
        return Ok(Vec::new());
    }
    let rows = tx
        .rows_packed(
            &["id"],
            &format!("FROM users WHERE org_id = $1 AND {}", tx.any_of("email_normalized", 2)),
            &[Val::from(org), Val::texts(emails)],
        )
        .await?;
    rows.iter().map(|r| r.text("id")).collect()
}

#[cfg(test)]
mod tests {
    use super::longest_run;

    #[test]
    fn the_longest_run_of_letters_and_digits_leads_the_index() {
        assert_eq!(longest_run("user123456@bench"), Some("user123456"));
        assert_eq!(longest_run("ada@example.com"), Some("example"));
        assert_eq!(longest_run("gäst"), Some("gäst"));
        assert_eq!(longest_run("a.b.c"), None);
        assert_eq!(longest_run("\"the great\" 100%"), Some("great"));
    }
}
