//! Schema migrations: one DDL text that both engines accept. Every
//! tenant-owned table's primary, unique and foreign keys start with `org_id`,
//! which keeps the schema ready for sharding by tenant.

use crate::db::{Backend, Store, StoreError};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, V1),
    (2, V2),
    (3, V3),
    (4, V4),
    (5, V5),
    (6, V6),
    (7, V7),
    (8, V8),
    (9, V9),
    (10, V10),
    (11, V11),
    (12, V12),
    (13, V13),
    (14, V14),
    (15, V15),
    (16, V16),
    (17, V17),
    (18, V18),
    (19, V19),
    (20, V20),
    (21, V21),
    (22, V22),
    (23, V23),
    (24, V24),
    (25, V25),
];

/// The sender claims pending deliveries in commit order (`claim_due`): an
/// index of the pending ones in that order lets it read the first few due
/// and stop, instead of sorting every pending delivery for each batch
/// (80,000 pending after a server died mid-job took minutes to drain).
const V25: &str = r#"
CREATE INDEX webhook_deliveries_pending_in_order ON webhook_deliveries (event_seq, event_index) WHERE state = 'pending';
"#;

/// Licences following group membership, and what the identity
/// provisioning page shows.
///
/// `license_grants`: which template gave a user which licence (one row per
/// template that gives it). A licence with no row was given directly (by an
/// admin, the API, a CSV): leaving a group never takes it back. A licence
/// whose last row goes, when its group is left, is removed. Rows go with the
/// licence (any removal), the user and the template; a move between
/// subscriptions keeps them (the row names the product, not the pool).
///
/// `keep_licenses_on_deactivation`: an identity provider's deactivation
/// keeps the user's licences instead of releasing them.
///
/// `scim_errors`: the org's last SCIM requests that failed and the licences
/// a SCIM change could not give or take (the identity change went through),
/// kept short (the newest few per org). When the org last synchronised is
/// its SCIM tokens' `last_used_at`.
const V24: &str = r#"
ALTER TABLE orgs ADD COLUMN keep_licenses_on_deactivation BOOLEAN NOT NULL DEFAULT FALSE;
CREATE TABLE license_grants (
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    product TEXT NOT NULL,
    template_id TEXT NOT NULL,
    PRIMARY KEY (org_id, user_id, product, template_id),
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, template_id) REFERENCES license_templates (org_id, id) ON DELETE CASCADE
);
CREATE INDEX license_grants_by_template ON license_grants (org_id, template_id);
CREATE TABLE scim_errors (
    org_id TEXT NOT NULL REFERENCES orgs (id),
    id TEXT NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    request TEXT NOT NULL,
    status BIGINT NOT NULL,
    scim_type TEXT,
    detail TEXT NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE INDEX scim_errors_recent ON scim_errors (org_id, at);
"#;

/// SCIM groups are Allot's groups: the provider's `externalId` beside
/// them, and when they last changed (`meta.lastModified`; a group made
/// before this has its creation time).
const V23: &str = r#"
ALTER TABLE org_groups ADD COLUMN external_id TEXT;
ALTER TABLE org_groups ADD COLUMN updated_at TEXT;
UPDATE org_groups SET updated_at = created_at;
"#;

/// A SCIM user's `userName` as the provider sent it, when it is not the
/// user's email (Entra ID sends the user principal name, which may differ
/// from the mail address; a userName that is no address at all takes the
/// email from `emails`). Unique in an org without regard to case, as the
/// email is. And the name's `formatted` as sent.
const V22: &str = r#"
ALTER TABLE scim_users ADD COLUMN user_name TEXT;
ALTER TABLE scim_users ADD COLUMN user_name_normalized TEXT;
ALTER TABLE scim_users ADD COLUMN formatted_name TEXT;
CREATE UNIQUE INDEX scim_users_by_user_name ON scim_users (org_id, user_name_normalized);
"#;

/// What SCIM keeps of a user beyond Allot's own columns (see `scim.rs`):
/// the identity provider's `externalId` (looked up by it), the name's
/// parts and the emails as the provider sent them. A user made by the API
/// or a CSV has no row, and is served with its email as its one email.
const V21: &str = r#"
CREATE TABLE scim_users (
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    external_id TEXT,
    given_name TEXT,
    family_name TEXT,
    emails TEXT,
    PRIMARY KEY (org_id, user_id),
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, id) ON DELETE CASCADE
);
CREATE INDEX scim_users_by_external_id ON scim_users (org_id, external_id);
"#;

/// Licence events grouped: one outbox row holds the users of a change
/// alike but for its user (`subjects`, a JSON list; `weight`, how many;
/// `emails`, id → email), and a delivery names its user's position in it
/// (`event_index`, 0 for an event of one subject). The delivery table is
/// rebuilt because its unique key gains that column.
const V20: &str = r#"
ALTER TABLE webhook_events ADD COLUMN subjects TEXT;
ALTER TABLE webhook_events ADD COLUMN weight BIGINT;
ALTER TABLE webhook_events ADD COLUMN emails TEXT;
CREATE TABLE webhook_deliveries_v20 (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    event_seq BIGINT NOT NULL,
    event_index BIGINT NOT NULL DEFAULT 0,
    subject TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    leased_until TEXT,
    created_at TEXT NOT NULL,
    delivered_at TEXT,
    last_status BIGINT,
    UNIQUE (endpoint_id, event_seq, event_index)
);
INSERT INTO webhook_deliveries_v20 (id, endpoint_id, event_seq, subject, state, attempts, next_attempt_at, leased_until, created_at, delivered_at, last_status)
    SELECT id, endpoint_id, event_seq, subject, state, attempts, next_attempt_at, leased_until, created_at, delivered_at, last_status FROM webhook_deliveries;
DROP TABLE webhook_deliveries;
ALTER TABLE webhook_deliveries_v20 RENAME TO webhook_deliveries;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_per_subject ON webhook_deliveries (endpoint_id, subject, event_seq);
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, created_at, id);
"#;

/// Webhooks (see `webhooks.rs`): endpoints at three scopes, the outbox of
/// events written in the transaction of the change they describe, one
/// delivery per event and endpoint, and every attempt of each; and the
/// status last announced of each subscription (`subscription.status_changed`
/// is sent when the derived status moves on, a date having passed).
///
/// `scope_key` is `provider`, `partner:<id>` or `org:<id>`, so one
/// indexed lookup finds the endpoints an org's change reaches. Events are
/// numbered (`seq`) in insertion order: a user's events are inserted in
/// the order its changes commit (its licence version is claimed first),
/// and deliveries to an endpoint follow `seq` per subject.
const V19: &str = r#"
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    scope_key TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    description TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    disabled_reason TEXT,
    failing_since TEXT,
    secret_sealed TEXT NOT NULL,
    old_secret_sealed TEXT,
    old_secret_until TEXT
);
CREATE INDEX webhook_endpoints_by_scope ON webhook_endpoints (scope_key, id);
CREATE TABLE webhook_events (
    seq {SERIAL_KEY},
    id TEXT NOT NULL,
    org_id TEXT NOT NULL,
    type TEXT NOT NULL,
    subject TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    email TEXT,
    product TEXT,
    subscription_id TEXT,
    from_subscription TEXT,
    properties TEXT,
    actor TEXT,
    request_id TEXT,
    data TEXT,
    dispatched BOOLEAN NOT NULL DEFAULT FALSE
);
{WEBHOOK_EVENTS_WAITING}
CREATE TABLE webhook_dispatched (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO webhook_dispatched (id, seq) VALUES (1, 0);
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    event_seq BIGINT NOT NULL,
    subject TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    leased_until TEXT,
    created_at TEXT NOT NULL,
    delivered_at TEXT,
    last_status BIGINT,
    UNIQUE (endpoint_id, event_seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_per_subject ON webhook_deliveries (endpoint_id, subject, event_seq);
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, created_at, id);
CREATE TABLE webhook_subscription_status (
    org_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (org_id, subscription_id)
);
CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    at TEXT NOT NULL,
    status BIGINT,
    error TEXT,
    latency_ms BIGINT NOT NULL,
    response TEXT,
    PRIMARY KEY (delivery_id, n)
);
"#;

/// The version that brings [`V18`]'s table.
pub(crate) const PROCESSES_VERSION: i64 = 18;

/// Processes with the database open (PostgreSQL; see `presence.rs`), in
/// place of V15's per-org numbers, which cost every transaction a row.
const V18: &str = r#"
DROP TABLE entitlement_seqs;
CREATE TABLE processes (
    origin TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    listening BOOLEAN NOT NULL DEFAULT FALSE,
    gone_at TEXT
);
"#;

/// When each user last used each product it holds, as entitlement checks
/// that answered yes recorded it (a day, written at most once a day per
/// user and product; see `usage.rs`). What idle-seat reclaim reads.
const V17: &str = r#"
CREATE TABLE license_usage (
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    product TEXT NOT NULL,
    last_used_on TEXT NOT NULL,
    PRIMARY KEY (org_id, user_id, product)
);
"#;

/// The Ed25519 keys that sign offline entitlement tokens (see
/// `signing_keys.rs`). `active` is 1 on the one key that signs and NULL on
/// retired ones: its uniqueness lets two servers that both find no key
/// insert one each without ending with two signing keys.
const V16: &str = r#"
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    private_key TEXT,
    created_at TEXT NOT NULL,
    active INTEGER UNIQUE,
    retired_at TEXT,
    last_token_expires_at TEXT
);
"#;

/// Each org's count of committed changes that entitlements depend on (a
/// first design, dropped by V18).
const V15: &str = r#"
CREATE TABLE entitlement_seqs (
    org_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);
"#;

/// Searching users by any part of an email or a name, through an index
/// made for substrings, kept exact by the database itself on every write
/// of a user (triggers on SQLite, an expression index on PostgreSQL): no
/// path of Allot's can forget it. See `users::Search`.
const V14: &str = "{USER_SEARCH_INDEX}";

const USER_SEARCH_SQLITE: &str = r#"
CREATE VIRTUAL TABLE users_search USING fts5(text, content='', contentless_delete=1, tokenize='trigram');
INSERT INTO users_search (rowid, text) SELECT rowid, email_normalized || char(1) || lower(display_name) FROM users;
CREATE TRIGGER users_search_insert AFTER INSERT ON users BEGIN
    INSERT INTO users_search (rowid, text) VALUES (new.rowid, new.email_normalized || char(1) || lower(new.display_name));
END;
CREATE TRIGGER users_search_delete AFTER DELETE ON users BEGIN
    DELETE FROM users_search WHERE rowid = old.rowid;
END;
CREATE TRIGGER users_search_update AFTER UPDATE OF email_normalized, display_name ON users BEGIN
    DELETE FROM users_search WHERE rowid = old.rowid;
    INSERT INTO users_search (rowid, text) VALUES (new.rowid, new.email_normalized || char(1) || lower(new.display_name));
END;
"#;

const USER_SEARCH_POSTGRES: &str = r#"
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX users_search ON users USING gin ((email_normalized || chr(1) || lower(display_name)) gin_trgm_ops);
"#;

/// The users a console session has selected in an org (the **Users**
/// page's check boxes): kept on the server so that a selection survives
/// paging and can hold every user that matches a filter. Rows go with
/// their session.
const V13: &str = r#"
CREATE TABLE console_selections (
    session_hash TEXT NOT NULL,
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (session_hash, org_id, user_id),
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, id)
);
"#;

/// Invitations to the console: the link's secret is kept only as its
/// SHA-256 (like a session's); a row lives until its link is used (then
/// it is deleted: single use) or it expires.
const V12: &str = r#"
CREATE TABLE admin_invitations (
    id_hash TEXT PRIMARY KEY,
    admin_id TEXT NOT NULL REFERENCES admins (id),
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX admin_invitations_by_admin ON admin_invitations (admin_id);
"#;

/// People who sign in to the console: admin accounts with the roles and
/// scopes of API tokens, their password hashes (argon2id; NULL until an
/// invitation sets one), and their sessions (only a hash of each session's
/// secret is kept, so a copy of the database signs nobody in).
const V11: &str = r#"
CREATE TABLE admins (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    email_normalized TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL,
    partner_id TEXT REFERENCES partners (id),
    org_id TEXT REFERENCES orgs (id),
    password_hash TEXT,
    created_at TEXT NOT NULL,
    last_sign_in_at TEXT
);
CREATE TABLE admin_sessions (
    id_hash TEXT PRIMARY KEY,
    admin_id TEXT NOT NULL REFERENCES admins (id),
    csrf_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL
);
CREATE INDEX admin_sessions_by_admin ON admin_sessions (admin_id);
"#;

/// One spelling in identifiers: `license`.
const V10: &str = r#"
ALTER TABLE licence_versions RENAME TO license_versions;
ALTER TABLE licence_epochs RENAME TO license_epochs;
"#;

/// What servers cache (tokens, the catalogue, orgs) has a version here, bumped in
/// the transaction that changes it: every server polls the versions and
/// drops a cache whose version moved (see `crate::cache_versions`).
const V9: &str = r#"
CREATE TABLE cache_versions (
    name TEXT NOT NULL PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO cache_versions (name, version) VALUES ('tokens', 0);
INSERT INTO cache_versions (name, version) VALUES ('catalogue', 0);
INSERT INTO cache_versions (name, version) VALUES ('orgs', 0);
"#;

/// Tokens say when they were last used and may expire; stored idempotent
/// answers expire and are purged by age, hence the index.
const V8: &str = r#"
ALTER TABLE api_tokens ADD COLUMN last_used_at TEXT;
ALTER TABLE api_tokens ADD COLUMN expires_at TEXT;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
"#;

/// Per org, how many licence writes of each kind it has had (see
/// `licence_epochs`): a bulk chunk planned ahead checks one row instead of
/// claiming 5,000 versions.
const V7: &str = r#"
CREATE TABLE licence_epochs (
    org_id TEXT NOT NULL REFERENCES orgs (id),
    versioned BIGINT NOT NULL,
    ahead BIGINT NOT NULL,
    PRIMARY KEY (org_id)
);
"#;

/// A user's licence-set version lives in a narrow table of its own: a bulk
/// chunk claims 5,000 of them per commit, and bumping a 40-byte row costs
/// far less than rewriting the user's row (and its pages in the WAL).
/// `{WITHOUT_ROWID}` is SQLite's clustered table, empty on PostgreSQL.
const V6: &str = r#"
CREATE TABLE licence_versions (
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id),
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, id) ON DELETE CASCADE
) {WITHOUT_ROWID};
INSERT INTO licence_versions (org_id, user_id, version) SELECT org_id, id, licence_version FROM users;
ALTER TABLE users DROP COLUMN licence_version;
"#;

/// A migration's text for one engine (see `V6`).
fn for_backend(sql: &str, backend: Backend) -> String {
    sql.replace(
        "{WITHOUT_ROWID}",
        match backend {
            Backend::Sqlite => "WITHOUT ROWID",
            Backend::Postgres => "",
        },
    )
    .replace(
        "{SERIAL_KEY}",
        match backend {
            Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Backend::Postgres => "BIGSERIAL PRIMARY KEY",
        },
    )
    .replace(
        "{WEBHOOK_EVENTS_WAITING}",
        match backend {
            // One writer commits in `seq` order: a cursor says what was dispatched (see `webhooks.rs`).
            Backend::Sqlite => "",
            Backend::Postgres => "CREATE INDEX webhook_events_waiting ON webhook_events (seq) WHERE dispatched = FALSE;",
        },
    )
    .replace(
        "{USER_SEARCH_INDEX}",
        match backend {
            Backend::Sqlite => USER_SEARCH_SQLITE,
            Backend::Postgres => USER_SEARCH_POSTGRES,
        },
    )
}

/// The customer list is read in name order, for one partner or for all.
/// An item awaiting details keeps the details its org's admin submitted.
/// Purchase requests wait for the provider or the partner.
/// Contact-centre queues bill their product for each member.
const V5: &str = r#"
CREATE INDEX orgs_by_partner_name ON orgs (partner_id, name, id);
CREATE INDEX orgs_by_name ON orgs (name, id);
ALTER TABLE subscription_items ADD COLUMN provisioning_details TEXT;
CREATE TABLE purchase_requests (
    org_id TEXT NOT NULL REFERENCES orgs (id),
    id TEXT NOT NULL,
    product TEXT NOT NULL REFERENCES products (code),
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    subscription_id TEXT,
    state TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    decided_by TEXT,
    decided_at TEXT,
    fulfilled_subscription TEXT,
    reason TEXT,
    PRIMARY KEY (org_id, id)
);
CREATE TABLE queues (
    org_id TEXT NOT NULL REFERENCES orgs (id),
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    product TEXT NOT NULL REFERENCES products (code),
    created_at TEXT NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE TABLE queue_members (
    org_id TEXT NOT NULL,
    queue_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    added_at TEXT NOT NULL,
    PRIMARY KEY (org_id, queue_id, user_id),
    FOREIGN KEY (org_id, queue_id) REFERENCES queues (org_id, id),
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, id) ON DELETE CASCADE
);
CREATE INDEX queue_members_by_user ON queue_members (org_id, user_id);
"#;

/// A per-user version of the licence set: a licence change planned from a
/// snapshot claims the version it read, so two changes of one user planned
/// at once cannot both apply (the second re-plans on fresh data).
const V2: &str = "ALTER TABLE users ADD COLUMN licence_version BIGINT NOT NULL DEFAULT 0";

/// Service data waiting for its purge is found by its retention date;
/// licence templates assign licences to new users, for the whole
/// org (`group_id` NULL) or for one group's members. A cancelled
/// subscription's items are marked too: the guarded seat counter refuses a
/// take on them, so a change planned before the cancellation cannot land
/// after it.
const V4: &str = r#"
ALTER TABLE subscription_items ADD COLUMN cancelled BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX service_data_retained ON service_data (retain_until) WHERE retain_until IS NOT NULL;
CREATE TABLE license_templates (
    org_id TEXT NOT NULL REFERENCES orgs (id),
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    group_id TEXT,
    enabled BOOLEAN NOT NULL,
    licenses TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, group_id) REFERENCES org_groups (org_id, id)
);
"#;

/// Jobs: durable bulk work. A job's users are split into chunks when it is
/// created (or when its filter is resolved); a chunk is processed in one
/// transaction that also stores its results and marks it done, so a restart
/// resumes at the first chunk not done, never doing a user twice.
const V3: &str = r#"
CREATE TABLE jobs (
    org_id TEXT NOT NULL REFERENCES orgs (id),
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    request TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    resolved BOOLEAN NOT NULL,
    chunks BIGINT NOT NULL,
    total BIGINT NOT NULL,
    done BIGINT NOT NULL,
    succeeded BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    cancel_requested BOOLEAN NOT NULL,
    error TEXT,
    lease_owner TEXT,
    lease_until BIGINT NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE INDEX jobs_by_id ON jobs (id);
CREATE INDEX jobs_by_state ON jobs (state, lease_until);
CREATE TABLE job_chunks (
    org_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    users TEXT NOT NULL,
    done BOOLEAN NOT NULL,
    results TEXT,
    PRIMARY KEY (org_id, job_id, seq),
    FOREIGN KEY (org_id, job_id) REFERENCES jobs (org_id, id)
);
"#;

const V1: &str = r#"
CREATE TABLE products (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    family TEXT NOT NULL,
    features TEXT NOT NULL,
    rules TEXT NOT NULL,
    properties TEXT NOT NULL,
    retention_days BIGINT NOT NULL CHECK (retention_days >= 0),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE partners (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    partner_id TEXT REFERENCES partners (id),
    default_usage_location TEXT,
    payment_method_on_file BOOLEAN NOT NULL,
    self_service_purchase BOOLEAN NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX orgs_by_partner ON orgs (partner_id, id);
CREATE TABLE sites (
    org_id TEXT NOT NULL REFERENCES orgs (id),
    id TEXT NOT NULL,
    url TEXT NOT NULL,
    attendee_accounts_enabled BOOLEAN NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE TABLE org_groups (
    org_id TEXT NOT NULL REFERENCES orgs (id),
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (org_id, id),
    UNIQUE (org_id, name)
);
CREATE TABLE subscriptions (
    org_id TEXT NOT NULL REFERENCES orgs (id),
    id TEXT NOT NULL,
    external_ref TEXT,
    partner_id TEXT REFERENCES partners (id),
    trial BOOLEAN NOT NULL,
    start_date TEXT NOT NULL,
    end_date TEXT NOT NULL,
    suspended BOOLEAN NOT NULL,
    cancelled BOOLEAN NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (org_id, id),
    CHECK (start_date < end_date)
);
-- A seat pool. consumed is the guarded counter; the CHECK is the last line of
-- defence against overselling, whatever path takes a seat.
CREATE TABLE subscription_items (
    org_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    product TEXT NOT NULL REFERENCES products (code),
    quantity BIGINT NOT NULL,
    consumed BIGINT NOT NULL DEFAULT 0,
    provisioning_status TEXT NOT NULL,
    PRIMARY KEY (org_id, subscription_id, product),
    FOREIGN KEY (org_id, subscription_id) REFERENCES subscriptions (org_id, id),
    CHECK (quantity >= 0),
    CHECK (consumed >= 0 AND consumed <= quantity)
);
CREATE INDEX items_by_product ON subscription_items (org_id, product);
CREATE TABLE users (
    org_id TEXT NOT NULL REFERENCES orgs (id),
    id TEXT NOT NULL,
    email TEXT NOT NULL,
    email_normalized TEXT NOT NULL,
    display_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    usage_location TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (org_id, id),
    UNIQUE (org_id, email_normalized)
);
CREATE TABLE user_site_admins (
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    PRIMARY KEY (org_id, user_id, site_id),
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, site_id) REFERENCES sites (org_id, id)
);
CREATE TABLE group_members (
    org_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (org_id, group_id, user_id),
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, group_id) REFERENCES org_groups (org_id, id) ON DELETE CASCADE
);
CREATE INDEX group_members_by_user ON group_members (org_id, user_id);
-- One row per seat taken. The key (org, user, product) means a user holds a
-- product once, so at most one seat per user and pool.
CREATE TABLE assignments (
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    product TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    properties TEXT NOT NULL,
    assigned_at TEXT NOT NULL,
    PRIMARY KEY (org_id, user_id, product),
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, id),
    FOREIGN KEY (org_id, subscription_id, product) REFERENCES subscription_items (org_id, subscription_id, product)
);
CREATE INDEX assignments_by_pool ON assignments (org_id, subscription_id, product, user_id);
-- A user's service data per product family (phone number, voicemail, ...):
-- kept across moves, retained for a while after the family's last licence goes.
CREATE TABLE service_data (
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    family TEXT NOT NULL,
    data TEXT NOT NULL,
    retain_until TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (org_id, user_id, family)
);
-- Append-only. org_id is '' for provider-wide events (catalogue, partners).
CREATE TABLE audit_events (
    org_id TEXT NOT NULL,
    id TEXT NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before_state TEXT,
    after_state TEXT,
    request_id TEXT,
    PRIMARY KEY (org_id, id)
);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    partner_id TEXT REFERENCES partners (id),
    org_id TEXT REFERENCES orgs (id),
    label TEXT,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE idempotency_keys (
    token_id TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status BIGINT,
    body TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (token_id, idem_key)
);
"#;

/// Applies the migrations not yet applied, up to version `last`.
pub async fn migrate(store: &Store, last: i64) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    if tx.backend() == Backend::Postgres {
        // Several servers may start at once against one database.
        tx.raw("SELECT pg_advisory_xact_lock(7250001)").await?;
    }
    tx.raw("CREATE TABLE IF NOT EXISTS allot_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)")
        .await?;
    let applied: Vec<i64> = tx
        .rows("SELECT version FROM allot_migrations", &[])
        .await?
        .iter()
        .map(|r| r.int("version"))
        .collect::<Result<_, _>>()?;
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) || *version > last {
            continue;
        }
        tracing::info!(version, "applying migration");
        tx.raw(&for_backend(sql, tx.backend())).await?;
        tx.exec(
            "INSERT INTO allot_migrations (version, applied_at) VALUES ($1, $2)",
            crate::args![*version, crate::ts(chrono::Utc::now())],
        )
        .await?;
    }
    tx.commit().await
}
