//! The SQL layer's bulk helpers on both engines: many rows in by
//! `insert_rows`, out by `rows_packed` and `any_of`, every value unchanged.

use allot_store::{in_transaction, Val};

use crate::both_backends;
use crate::kit::{many_users, spawn, world, Backend};

both_backends!(bulk_rows_round_trip_every_value);
both_backends!(a_batch_claims_the_versions_it_was_planned_from_or_none);
both_backends!(upgrading_to_the_version_table_keeps_every_version);

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
    let mut back: Vec<_> = back.iter().map(|r| r.text(0).expect("id")).zip(back.iter()).collect();
    back.sort_by(|a, b| a.0.cmp(&b.0));
    for ((id, r), want) in back.iter().zip(&expected) {
        assert_eq!(Val::Text(id.clone()), want[0]);
        let name = r.opt_text(1).expect("name");
        assert_eq!(Val::from(name), want[1], "name of {id}");
        let n = if r.cell_is_null(2) {
            Val::NullInt
        } else {
            Val::Int(r.int(2).expect("n"))
        };
        assert_eq!(n, want[2], "n of {id}");
        assert_eq!(Val::Bool(r.bool(3).expect("flag")), want[3], "flag of {id}");
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
        .map(|r| r.text(0).expect("id"))
        .collect();
    assert_eq!(found, vec!["r000003", "r011999", "single"]);
    let single = rd
        .opt_row("SELECT name, n, flag, tag FROM scratch WHERE id = $1", &[Val::from("single")])
        .await
        .expect("single")
        .expect("the single row exists");
    assert!(single.cell_is_null(0));
    assert_eq!((single.int(1).expect("n"), single.bool(2).expect("flag")), (-1, true));
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

/// A bulk chunk planned ahead of the writer claims the licence versions it
/// read: all of them when none moved, none when any moved or the user is
/// gone (the chunk is then planned again in its transaction).
async fn a_batch_claims_the_versions_it_was_planned_from_or_none(backend: Backend) {
    use allot_store::users;
    let app = spawn(backend).await;
    let store = &app.store;
    let w = world(&app).await;
    let ids = many_users(&app, &w.org, "claim", "claim.example", 300, None).await;
    let mut planned = versions_of(store, &w.org, &ids).await;
    planned.sort();
    assert_eq!(planned.len(), 300);
    assert!(planned.iter().all(|(_, v)| *v == 0));
    // Unknown ids and other tenants' users are not read.
    let other = crate::kit::org(&app, "Customer B", None).await;
    let theirs = many_users(&app, &other, "theirs", "b.example", 2, None).await;
    assert!(
        users::licence_versions(&mut store.read_conn().await.expect("read"), &w.org, &theirs)
            .await
            .expect("versions")
            .is_empty()
    );

    // Nobody moved: every version is claimed, and each moves on by one.
    let claimed = in_transaction!(store, |tx| users::claim_licence_versions(&mut tx, &w.org, &planned).await).expect("claim");
    assert!(claimed);
    let mut now = versions_of(store, &w.org, &ids).await;
    now.sort();
    assert!(now.iter().all(|(_, v)| *v == 1), "{:?}", &now[..3]);

    // The same claim again is stale for all: nothing moves.
    let again = in_transaction!(store, |tx| users::claim_licence_versions(&mut tx, &w.org, &planned).await).expect("claim");
    assert!(!again);

    // One user changed since the read (a single change, say): the claim of
    // the batch fails as a whole, and the caller's rollback keeps the rest.
    let fresh = versions_of(store, &w.org, &ids).await;
    in_transaction!(store, |tx| users::lock_licences(&mut tx, &w.org, &ids[7..8]).await).expect("lock one");
    let mut tx = store.begin().await.expect("begin");
    assert!(!users::claim_licence_versions(&mut tx, &w.org, &fresh).await.expect("claim"));
    tx.rollback().await.expect("rollback");
    let after = versions_of(store, &w.org, &ids).await;
    for (id, v) in &after {
        let want = if id == &ids[7] { 2 } else { 1 };
        assert_eq!(*v, want, "version of {id}");
    }

    // A user of another org named with this org's versions is not claimed.
    let mut with_theirs = after.clone();
    with_theirs.push((theirs[0].clone(), 0));
    let mut tx = store.begin().await.expect("begin");
    assert!(!users::claim_licence_versions(&mut tx, &w.org, &with_theirs).await.expect("claim"));
    tx.rollback().await.expect("rollback");
}

async fn versions_of(store: &allot_store::Store, org: &str, ids: &[String]) -> Vec<(String, i64)> {
    let mut rd = store.begin_read().await.expect("read");
    allot_store::users::licence_versions(&mut rd, org, ids).await.expect("versions")
}

/// Migration 6 moves each user's licence version out of `users` into
/// `licence_versions`: a database of schema 5 with users at various versions
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
