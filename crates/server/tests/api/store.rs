//! The SQL layer's bulk helpers on both engines: many rows in by
//! `insert_rows`, out by `rows_packed` and `any_of`, every value unchanged.

use allot_store::{in_transaction, Val};

use crate::both_backends;
use crate::kit::{many_users, spawn, world, Backend};

both_backends!(bulk_rows_round_trip_every_value);
both_backends!(a_chunk_planned_ahead_is_written_only_if_nothing_else_changed_licenses);
both_backends!(upgrading_to_the_version_table_keeps_every_version);
both_backends!(service_data_read_ahead_and_purged_meanwhile_is_written_anew);
both_backends!(a_unit_kept_after_its_own_statement_failed_is_refused_alone);
both_backends!(plain_reads_leave_transactions_their_connections);
both_backends!(a_read_dropped_mid_statement_is_not_lent_again_half_way);

/// The bundled SQLite is built without `SQLITE_ENABLE_MEMORY_MANAGEMENT`
/// (`.cargo/config.toml`): with it, every page fetch of every connection
/// took one process-wide mutex, which the writer and the readers planning
/// chunks ahead fought over (BENCHMARKS.md).
#[tokio::test]
async fn bundled_sqlite_has_no_process_wide_page_cache_mutex() {
    let app = spawn(Backend::Sqlite).await;
    let mut rd = app.store.begin_read().await.unwrap();
    let options: Vec<String> = rd
        .rows("PRAGMA compile_options", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.text("compile_options").unwrap())
        .collect();
    assert!(options.iter().any(|o| o == "THREADSAFE=1"), "{options:?}");
    assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
}

/// (id, name, n, flag) of row `i`: awkward text, nulls, large and negative
/// numbers, booleans; some columns constant in a batch, others not.
fn row(i: i64) -> Vec<Val> {
    let name = match i % 6 {
        0 => "plain".to_string(),
        1 => format!("quote \" and backslash \\ {i}"),
        2 => "line\nbreak\ttab\r\u{1}".to_string(),
        3 => "ünïcødé 🚀 '$1' -- not a comment".to_string(),
        4 => String::new(),
        _ => format!("[\"json-looking\", {i}]"),
    };
    vec![
        Val::Text(format!("r{i:06}")),
        if i % 7 == 0 { Val::NullText } else { Val::Text(name) },
        if i % 5 == 0 {
            Val::NullInt
        } else {
            Val::Int(i * 1_000_000_007 - 3)
        },
        Val::Bool(i % 2 == 0),
    ]
}

async fn bulk_rows_round_trip_every_value(backend: Backend) {
    let app = spawn(backend).await;
    let store = &app.store;
    in_transaction!(store, |tx| tx
        .raw("CREATE TABLE scratch (id TEXT PRIMARY KEY, name TEXT, n BIGINT, flag BOOLEAN NOT NULL, tag TEXT NOT NULL)")
        .await)
    .expect("scratch table");
    // 12,001 rows: more than one statement's worth; `tag` is the same in all.
    let rows: Vec<Vec<Val>> = (0..12_001)
        .map(|i| {
            let mut r = row(i);
            r.push(Val::from("same"));
            r
        })
        .collect();
    let expected = rows.clone();
    in_transaction!(store, |tx| tx.insert_rows("scratch (id, name, n, flag, tag)", rows.clone()).await).expect("insert");
    // A single row: every column constant.
    in_transaction!(store, |tx| {
        tx.insert_rows(
            "scratch (id, name, n, flag, tag)",
            vec![vec![
                Val::from("single"),
                Val::NullText,
                Val::Int(-1),
                Val::Bool(true),
                Val::from("one"),
            ]],
        )
        .await
    })
    .expect("insert one");

    let mut rd = store.read_conn().await.expect("read");
    let back = rd
        .rows_packed(
            &["id", "name", "n", "flag", "tag"],
            "FROM scratch WHERE tag = $1",
            &[Val::from("same")],
        )
        .await
        .expect("packed read");
    assert_eq!(back.len(), expected.len());
    let mut back: Vec<_> = back.iter().map(|r| r.text("id").expect("id")).zip(back.iter()).collect();
    back.sort_by(|a, b| a.0.cmp(&b.0));
    for ((id, r), want) in back.iter().zip(&expected) {
        assert_eq!(Val::Text(id.clone()), want[0]);
        let name = r.opt_text("name").expect("name");
        assert_eq!(Val::from(name), want[1], "name of {id}");
        let n = if r.cell_is_null("n") {
            Val::NullInt
        } else {
            Val::Int(r.int("n").expect("n"))
        };
        assert_eq!(n, want[2], "n of {id}");
        assert_eq!(Val::Bool(r.bool("flag").expect("flag")), want[3], "flag of {id}");
    }
    // `any_of`: one list parameter selects exactly the ids named (one unknown).
    let ids = vec![
        "r000003".to_string(),
        "r011999".to_string(),
        "single".to_string(),
        "nope".to_string(),
    ];
    let sql = format!("SELECT id, n FROM scratch WHERE {} ORDER BY id", rd.any_of("id", 1));
    let found: Vec<String> = rd
        .rows(&sql, &[Val::texts(&ids)])
        .await
        .expect("any_of")
        .iter()
        .map(|r| r.text("id").expect("id"))
        .collect();
    assert_eq!(found, vec!["r000003", "r011999", "single"]);
    let single = rd
        .opt_row("SELECT name, n, flag, tag FROM scratch WHERE id = $1", &[Val::from("single")])
        .await
        .expect("single")
        .expect("the single row exists");
    assert!(single.cell_is_null("name"));
    assert_eq!((single.int("n").expect("n"), single.bool("flag").expect("flag")), (-1, true));
    drop(rd);
    // A duplicate key in a batch fails the whole statement, and the unit with it.
    let dup = in_transaction!(store, |tx| {
        tx.insert_rows(
            "scratch (id, name, n, flag, tag)",
            vec![
                vec![Val::from("d1"), Val::NullText, Val::Int(1), Val::Bool(false), Val::from("dup")],
                vec![Val::from("r000001"), Val::NullText, Val::Int(2), Val::Bool(false), Val::from("dup")],
            ],
        )
        .await
    });
    let err = dup.expect_err("a duplicate key is refused");
    assert!(err.detail.contains("existing record"), "{err:?}");
    let mut rd = store.read_conn().await.expect("read");
    let d1 = rd.opt_row("SELECT id FROM scratch WHERE id = 'd1'", &[]).await.expect("d1");
    assert!(d1.is_none(), "a failed batch leaves nothing behind");
}

/// The licence-write counts that let a bulk chunk planned ahead skip
/// claiming its users' versions (allot_store::license_epochs). On SQLite a
/// chunk planned ahead is written only if no licence write but its own
/// job's previous chunk landed since its snapshot, and a single change
/// learns of any chunk written since its own; PostgreSQL never plans a
/// chunk ahead and keeps no counts.
async fn a_chunk_planned_ahead_is_written_only_if_nothing_else_changed_licenses(backend: Backend) {
    use allot_store::license_epochs::{self, LicenseEpoch};
    use allot_store::users;
    let app = spawn(backend).await;
    let store = &app.store;
    let w = world(&app).await;
    let ids = many_users(&app, &w.org, "epoch", "epoch.example", 3, None).await;
    let other = crate::kit::org(&app, "Customer B", None).await;
    let read = |org: String| async move {
        license_epochs::read(&mut store.begin_read().await.expect("read"), &org)
            .await
            .expect("epoch")
    };
    let claim = |seen: LicenseEpoch, own_last: Option<i64>| {
        let org = w.org.clone();
        async move { in_transaction!(store, |tx| license_epochs::claim_chunk_ahead(&mut tx, &org, seen, own_last).await).expect("claim") }
    };
    let versioned_writes = ["a single change's version claim", "a batch locking its users", "a user's deletion"];

    if backend == Backend::Postgres {
        // Every check passes and nothing is counted: the per-user versions
        // and their row locks are the whole protocol there.
        let seen = read(w.org.clone()).await;
        assert_eq!(seen, LicenseEpoch::default());
        assert_eq!(claim(seen, None).await, None, "PostgreSQL plans no chunk ahead");
        in_transaction!(store, |tx| users::lock_licenses(&mut tx, &w.org, &ids).await).expect("lock");
        assert_eq!(read(w.org.clone()).await, LicenseEpoch::default());
        let mut tx = store.begin().await.expect("begin");
        assert!(!license_epochs::chunk_written_since(&mut tx, &w.org, seen.ahead)
            .await
            .expect("check"));
        return;
    }

    // A first chunk, nothing else since its snapshot: written, counted.
    let s0 = read(w.org.clone()).await;
    assert_eq!(s0, LicenseEpoch::default(), "an org without writes counts zero");
    assert_eq!(claim(s0, None).await, Some(1));
    // The next chunk was planned while the first was written: its snapshot
    // missed only its own job's previous chunk.
    assert_eq!(claim(s0, Some(1)).await, Some(2));
    // A snapshot from before two of them missed a chunk it cannot account for.
    assert_eq!(claim(s0, Some(2)).await, None);
    let s2 = read(w.org.clone()).await;
    assert_eq!(s2, LicenseEpoch { versioned: 0, ahead: 2 });
    // A claim rolled back counts nothing.
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        license_epochs::claim_chunk_ahead(&mut tx, &w.org, s2, Some(2))
            .await
            .expect("claim"),
        Some(3)
    );
    tx.rollback().await.expect("rollback");
    assert_eq!(read(w.org.clone()).await, s2);

    // Each versioned write since the snapshot makes the chunk plan again.
    for (i, what) in versioned_writes.iter().enumerate() {
        let seen = read(w.org.clone()).await;
        match i {
            0 => in_transaction!(store, |tx| users::claim_license_version(&mut tx, &w.org, &ids[0], 0, seen.ahead)
                .await
                .map(|_| ())),
            1 => in_transaction!(store, |tx| users::lock_licenses(&mut tx, &w.org, &ids[1..2]).await.map(|_| ())),
            _ => in_transaction!(store, |tx| users::delete(&mut tx, &w.org, &ids[2]).await),
        }
        .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let now = read(w.org.clone()).await;
        assert_eq!(now.versioned, seen.versioned + 1, "{what} is counted");
        assert_eq!(claim(seen, Some(2)).await, None, "a chunk planned before {what} is planned again");
    }
    // A failed version claim (stale version) counts nothing.
    let before = read(w.org.clone()).await;
    assert!(
        in_transaction!(store, |tx| users::claim_license_version(&mut tx, &w.org, &ids[0], 0, before.ahead)
            .await)
        .is_err()
    );
    assert_eq!(read(w.org.clone()).await, before);
    // A single change's claim fails, its version unchanged, when a chunk
    // planned ahead was written since its snapshot.
    let mut tx = store.begin().await.expect("begin");
    let stale = users::claim_license_version(&mut tx, &w.org, &ids[0], 1, before.ahead - 1).await;
    assert!(matches!(stale, Err(allot_store::StoreError::Replan(_))), "{stale:?}");
    users::claim_license_version(&mut tx, &w.org, &ids[0], 1, before.ahead)
        .await
        .expect("a current claim");
    // Counted when the shared transaction commits: until then a chunk
    // written in the same transaction sees it as pending.
    assert_eq!(license_epochs::read(&mut tx, &w.org).await.expect("epoch"), before);
    assert_eq!(
        license_epochs::claim_chunk_ahead(&mut tx, &w.org, before, Some(before.ahead))
            .await
            .expect("claim"),
        None
    );
    tx.commit().await.expect("commit");
    assert_eq!(read(w.org.clone()).await.versioned, before.versioned + 1);

    // Another job's chunk since the snapshot: planned again too.
    let seen = read(w.org.clone()).await;
    assert_eq!(claim(seen, None).await, Some(3), "the other job's chunk");
    assert_eq!(claim(seen, Some(2)).await, None);

    // A single change learns of a chunk written since its snapshot, and only then.
    let mut tx = store.begin().await.expect("begin");
    assert!(license_epochs::chunk_written_since(&mut tx, &w.org, seen.ahead)
        .await
        .expect("check"));
    let fresh = license_epochs::read(&mut tx, &w.org).await.expect("epoch");
    assert!(!license_epochs::chunk_written_since(&mut tx, &w.org, fresh.ahead)
        .await
        .expect("check"));
    tx.rollback().await.expect("rollback");

    // Another org's counts are its own.
    assert_eq!(read(other.clone()).await, LicenseEpoch::default());
    assert_eq!(
        in_transaction!(store, |tx| license_epochs::claim_chunk_ahead(
            &mut tx,
            &other,
            LicenseEpoch::default(),
            None
        )
        .await)
        .expect("claim"),
        Some(1)
    );
    assert_eq!(read(w.org.clone()).await.ahead, 3);
}

async fn versions_of(store: &allot_store::Store, org: &str, ids: &[String]) -> Vec<(String, i64)> {
    let mut rd = store.begin_read().await.expect("read");
    let mut got = Vec::new();
    for id in ids {
        if let Some(r) = rd
            .opt_row(
                "SELECT user_id, version FROM license_versions WHERE org_id = $1 AND user_id = $2",
                &[Val::from(org), Val::from(id)],
            )
            .await
            .expect("version")
        {
            got.push((r.text("user_id").expect("id"), r.int("version").expect("version")));
        }
    }
    got
}

/// Migration 6 moves each user's licence version out of `users` into
/// `license_versions`: a database of schema 5 with users at various versions
/// keeps every version, and new users start at 0.
async fn upgrading_to_the_version_table_keeps_every_version(backend: Backend) {
    use allot_store::{Store, StoreOptions};
    let dir = tempfile::tempdir().expect("temp dir");
    let database = crate::kit::fresh_database(backend, &dir);
    let opts = || StoreOptions {
        durable: false,
        max_connections: 4,
    };
    let old = Store::open_migrated_to(&database, opts(), 5).await.expect("schema 5");
    in_transaction!(old, |tx| {
        tx.raw(
            "INSERT INTO orgs (id, name, partner_id, payment_method_on_file, self_service_purchase, created_at, updated_at) \
             VALUES ('org_old', 'Old', NULL, FALSE, FALSE, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
        )
        .await?;
        for i in 0..30i64 {
            tx.exec(
                "INSERT INTO users (org_id, id, email, email_normalized, display_name, kind, status, created_at, updated_at, licence_version) \
                 VALUES ('org_old', $1, $2, $2, 'Old user', 'internal', 'active', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', $3)",
                &[Val::Text(format!("usr_old{i:03}")), Val::Text(format!("old{i}@old.example")), Val::Int(i * 7)],
            )
            .await?;
        }
        Ok::<(), allot_store::StoreError>(())
    })
    .expect("schema-5 rows");
    old.close().await;

    let store = Store::open(&database, opts()).await.expect("upgraded");
    let ids: Vec<String> = (0..30).map(|i| format!("usr_old{i:03}")).collect();
    let mut got = versions_of(&store, "org_old", &ids).await;
    got.sort();
    let want: Vec<(String, i64)> = (0..30i64).map(|i| (format!("usr_old{i:03}"), i * 7)).collect();
    assert_eq!(got, want);
    // The old column is gone, and a user created now starts at version 0.
    let mut rd = store.read_conn().await.expect("read");
    assert!(rd.opt_row("SELECT licence_version FROM users", &[]).await.is_err());
    drop(rd);
    let new = allot_store::users::User::internal("usr_new".into(), "new@old.example".into());
    in_transaction!(store, |tx| allot_store::users::insert(
        &mut tx,
        "org_old",
        &new,
        crate::kit::today()
    )
    .await)
    .expect("new user");
    assert_eq!(
        versions_of(&store, "org_old", &["usr_new".to_string()]).await,
        vec![("usr_new".to_string(), 0)]
    );
}

/// A chunk planned ahead reads the stored service data its takes may touch
/// on its snapshot, off the writer's path. A row read then whose retention
/// had ended may be purged before the write: the family taken then gets a
/// row with the properties given, instead of an update of nothing.
async fn service_data_read_ahead_and_purged_meanwhile_is_written_anew(backend: Backend) {
    use allot_domain::catalogue::PropertyName;
    use allot_domain::planner::{Held, LicensePlan, Properties};
    use allot_domain::types::ProductCode;
    use allot_store::{catalogue, licenses, service_data};
    let app = spawn(backend).await;
    let store = &app.store;
    let w = world(&app).await;
    let user = many_users(&app, &w.org, "svc", "svc.example", 1, None).await.remove(0);
    let long_ago = "2000-01-01T00:00:00.000000Z";
    in_transaction!(store, |tx| tx
        .exec(
            "INSERT INTO service_data (org_id, user_id, family, data, retain_until, updated_at) \
             VALUES ($1, $2, 'calling', '{\"phone_number\":\"+46 8 1234\"}', $3, $3)",
            &[Val::from(&w.org), Val::from(&user), Val::from(long_ago)],
        )
        .await
        .map(|_| ()))
    .expect("an expired row");
    let code = ProductCode::parse("calling-professional").expect("code");
    let catalogue = catalogue::with_requirements(&mut store.read_conn().await.expect("read"), &[&code])
        .await
        .expect("catalogue");
    let properties: Properties = [(PropertyName::Extension, "42".to_string())].into_iter().collect();
    let held = Held {
        product: code,
        subscription: w.sub.clone(),
        properties,
    };
    let plan = LicensePlan {
        release: vec![],
        take: vec![held.clone()],
        auto_added: vec![],
        moved_families: vec![],
        result: vec![held],
    };
    let planned = [licenses::PlannedUser {
        user: &user,
        before: &[],
        plan: &plan,
    }];
    let stored = licenses::stored_service_data(&mut store.begin_read().await.expect("read"), &w.org, &planned, &catalogue)
        .await
        .expect("read ahead");
    let now = chrono::Utc::now();
    let purged = in_transaction!(store, |tx| service_data::purge_expired(&mut tx, now, 100).await).expect("purge");
    assert_eq!(purged.len(), 1, "the expired row went between the read and the write");

    let seats = licenses::seat_changes(store.backend(), &w.org, &planned, now).with_stored_service_data(stored);
    let mut tx = store.begin().await.expect("begin");
    licenses::apply_seat_changes(&mut tx, &w.org, seats, &planned, &catalogue, now)
        .await
        .expect("apply")
        .expect("a free seat");
    tx.commit().await.expect("commit");
    let row = store
        .read_conn()
        .await
        .expect("read")
        .opt_row(
            "SELECT data, retain_until FROM service_data WHERE org_id = $1 AND user_id = $2 AND family = 'calling'",
            &[Val::from(&w.org), Val::from(&user)],
        )
        .await
        .expect("query")
        .expect("the family taken has its row again");
    assert_eq!(
        row.text("data").expect("data"),
        r#"{"extension":"42"}"#,
        "the expired data is not kept"
    );
    assert_eq!(row.opt_text("retain_until").expect("until"), None);
    assert_eq!(app.mismatches().await, 0);
}

/// Group commit's last unit: on PostgreSQL its RELEASE and the batch's
/// COMMIT travel together. A unit whose own statement failed (its error
/// ignored) and that then asks to be kept leaves PostgreSQL's transaction
/// aborted: it alone is refused, and the unit queued before it in the same
/// batch is still committed. SQLite does not abort a transaction for a
/// failed statement, so there the unit is kept.
async fn a_unit_kept_after_its_own_statement_failed_is_refused_alone(backend: Backend) {
    let app = spawn(backend).await;
    let store = app.store.clone();
    in_transaction!(store, |tx| tx.raw("CREATE TABLE scratch_units (id TEXT PRIMARY KEY)").await).expect("table");
    let mut first = store.begin_in_org("org-units").await.expect("first unit");
    first
        .exec("INSERT INTO scratch_units (id) VALUES ('first')", &[])
        .await
        .expect("insert");
    let second = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut second = store.begin_in_org("org-units").await.expect("second unit");
            let duplicate = second.exec("INSERT INTO scratch_units (id) VALUES ('first')", &[]).await;
            assert!(duplicate.is_err(), "the duplicate key is refused");
            second.commit().await
        })
    };
    // The second unit queues behind the first, so the first's commit waits
    // for the batch to end with the second.
    while store.writer_waiters() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let first = tokio::spawn(async move { first.commit().await });
    let second = second.await.expect("second task");
    first.await.expect("first task").expect("the first unit is committed");
    match backend {
        Backend::Postgres => assert!(second.is_err(), "a unit that aborted the transaction cannot be kept"),
        Backend::Sqlite => second.expect("SQLite keeps the unit (its failed statement changed nothing)"),
    }
    let mut rd = store.read_conn().await.expect("read");
    let rows = rd.rows("SELECT id FROM scratch_units", &[]).await.expect("rows");
    let ids: Vec<String> = rows.iter().map(|r| r.text("id").expect("id")).collect();
    assert_eq!(ids, vec!["first".to_string()]);
}

/// Pooled PostgreSQL connections are not pinged each time they are handed
/// out (a round trip per read), only after a second idle. Connections the
/// server ended (a restart, a failover, an administrator) and left idle
/// since are replaced: no read fails for them. (One ended and handed out
/// again within that second fails the read it serves.)
#[tokio::test]
async fn pooled_connections_the_server_ended_are_replaced() {
    if !crate::kit::postgres_available() {
        return;
    }
    let app = spawn(Backend::Postgres).await;
    let store = &app.store;
    // Several pooled connections, all idle afterwards.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut rd = store.read_conn().await.expect("read");
        rd.opt_row("SELECT 1 AS one", &[]).await.expect("select");
        held.push(rd);
    }
    drop(held);
    let mut killer = store.read_conn().await.expect("read");
    let ended = killer
        .rows(
            "SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            &[],
        )
        .await
        .expect("terminate");
    assert!(ended.len() >= 3, "the other pooled connections were ended ({})", ended.len());
    drop(killer);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    for i in 0..8 {
        let mut rd = store.read_conn().await.expect("read");
        let row = rd.opt_row("SELECT 1 AS one", &[]).await;
        assert!(row.is_ok(), "read {i} after the server ended its connections: {row:?}");
    }
}

/// A statement bound to a long list (a job's chunk of thousands of users)
/// is not kept prepared on its connection: PostgreSQL gives a prepared
/// statement a generic plan after five runs on one connection, and a
/// generic plan cannot know the list's length (it once made a DELETE of
/// 5,000 users take 1.2-2.0 s). A short list's statement stays prepared,
/// since planning it again each time would be a cost for nothing.
#[tokio::test]
async fn a_statement_over_a_long_list_is_planned_for_that_list() {
    if !crate::kit::postgres_available() {
        return;
    }
    let app = spawn(Backend::Postgres).await;
    let mut rd = app.store.begin_read().await.expect("read");
    let query = |tag: &str| format!("SELECT count(*) AS n FROM users WHERE '{tag}' <> '' AND {}", rd.any_of("id", 1));
    let (short, long) = (query("short"), query("long"));
    let short_ids: Vec<String> = (0..8).map(|i| format!("usr_{i}")).collect();
    let long_ids: Vec<String> = (0..5_000).map(|i| format!("usr_{i}")).collect();
    for _ in 0..7 {
        rd.opt_row(&short, &[Val::texts(&short_ids)]).await.expect("short list");
        rd.opt_row(&long, &[Val::texts(&long_ids)]).await.expect("long list");
    }
    let prepared: Vec<String> = rd
        .rows("SELECT statement FROM pg_prepared_statements", &[])
        .await
        .expect("prepared statements")
        .iter()
        .map(|r| r.text("statement").expect("statement"))
        .collect();
    assert!(
        prepared.iter().any(|s| s.contains("'short'")),
        "the short list's statement is kept prepared: {prepared:#?}"
    );
    assert!(
        !prepared.iter().any(|s| s.contains("'long'")),
        "the long list's statement is planned each time: {prepared:#?}"
    );
}

/// Opening a PostgreSQL store sets up its presence connection (TCP
/// keepalives, so that a vanished host is noticed within seconds). Those
/// settings were once sent as three statements in one prepared statement,
/// which PostgreSQL refuses, and the error was ignored: the database's log
/// shows what it refused.
#[tokio::test]
async fn a_postgresql_store_opens_without_a_refused_statement() {
    if !crate::kit::postgres_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let url = crate::kit::fresh_database(Backend::Postgres, &dir);
    let store = allot_store::Store::open(&url, allot_store::StoreOptions::default())
        .await
        .expect("open");
    store.close().await;
    let Some(log) = crate::kit::postgres_server_log() else {
        return;
    };
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot insert multiple commands") || (l.contains("STATEMENT:") && l.contains("tcp_keepalives")))
        .collect();
    assert!(refused.is_empty(), "statements refused at start-up: {refused:#?}");
}

/// A store of two connections, for the tests of the plain reads' shelf.
async fn small_store(backend: Backend, dir: &tempfile::TempDir) -> allot_store::Store {
    let url = crate::kit::fresh_database(backend, dir);
    allot_store::Store::open(
        &url,
        allot_store::StoreOptions {
            durable: false,
            max_connections: 2,
        },
    )
    .await
    .expect("open")
}

/// Plain reads keep their connections between reads (no ping to the
/// database for each one given back), but hold at most half the pool:
/// a read transaction still begins while reads use their share, and a
/// read asking for more than the share waits its turn.
async fn plain_reads_leave_transactions_their_connections(backend: Backend) {
    use std::time::Duration;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = small_store(backend, &dir).await;
    // Shelved after its read, and lent again.
    for _ in 0..3 {
        let mut rd = store.read_conn().await.expect("read");
        rd.opt_row("SELECT 1 AS one", &[]).await.expect("select");
    }
    let mut held = store.read_conn().await.expect("read");
    held.opt_row("SELECT 1 AS one", &[]).await.expect("select");
    // Beyond the share (one of two connections): waits.
    let second = tokio::time::timeout(Duration::from_millis(300), store.read_conn()).await;
    assert!(second.is_err(), "a second plain read got a connection beyond the readers' share");
    // A transaction has the other connection.
    let tx = tokio::time::timeout(Duration::from_secs(5), store.begin_read()).await;
    let mut tx = tx
        .expect("a read transaction began while a plain read held its share")
        .expect("begin");
    let row = tx.opt_row("SELECT 2 AS two", &[]).await.expect("select").expect("a row");
    assert_eq!(row.int("two").expect("two"), 2);
    tx.rollback().await.expect("rollback");
    // The waiting read proceeds once the first is given back.
    let waiting = tokio::spawn({
        let store = store.clone();
        async move {
            let mut rd = store.read_conn().await.expect("read");
            rd.opt_row("SELECT 3 AS three", &[])
                .await
                .expect("select")
                .expect("a row")
                .int("three")
                .expect("three")
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "the read waits while the share is in use");
    drop(held);
    let three = tokio::time::timeout(Duration::from_secs(5), waiting).await;
    assert_eq!(three.expect("the waiting read got the connection").expect("task"), 3);
    // Closing gives the shelved connections back first: it does not wait
    // for them.
    tokio::time::timeout(Duration::from_secs(10), store.close())
        .await
        .expect("the store closed with connections on the shelf");
}

/// A read dropped while its statement runs (a client that hung up) leaves
/// its connection half-way through; it is not lent to the next read as it
/// is, and every read after it answers its own question.
async fn a_read_dropped_mid_statement_is_not_lent_again_half_way(backend: Backend) {
    use std::time::Duration;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = small_store(backend, &dir).await;
    let slow = match backend {
        Backend::Sqlite => {
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000000) \
             SELECT count(*) AS n FROM c"
        }
        Backend::Postgres => "SELECT 1 AS n FROM pg_sleep(1)",
    };
    for round in 0..3 {
        let mut rd = store.read_conn().await.expect("read");
        let cut = tokio::time::timeout(Duration::from_millis(50), rd.opt_row(slow, &[])).await;
        assert!(cut.is_err(), "the slow statement finished within 50 ms");
        drop(rd);
        for i in 0..5i64 {
            let mut rd = store.read_conn().await.expect("read");
            let row = rd
                .opt_row("SELECT $1 AS asked", &[Val::Int(round * 10 + i)])
                .await
                .expect("select")
                .expect("a row");
            assert_eq!(row.int("asked").expect("asked"), round * 10 + i, "round {round}, read {i}");
        }
    }
    tokio::time::timeout(Duration::from_secs(10), store.close())
        .await
        .expect("the store closed");
}
