//! Seats are never oversold: 64 concurrent changes against 50 seats, and a
//! randomized mix of single changes, bulk jobs, CSV imports and reads from
//! several clients at once.

use futures::future::join_all;
use serde_json::json;

use crate::both_backends;
use crate::kit::*;

both_backends!(sixty_four_changes_fifty_seats, mixed_load_keeps_invariants);

async fn sixty_four_changes_fifty_seats(backend: Backend) {
    let app = spawn(backend).await;
    product(&app, "meetings", "meetings").await;
    let org = org(&app, "Hot Pool Ltd", None).await;
    let sub = subscription(&app, &org, json!([{ "product": "meetings", "quantity": 50 }])).await;
    let mut users = Vec::new();
    for i in 0..64 {
        users.push(user(&app, &org, &format!("user{i}@hot.example")).await);
    }
    // Half name the subscription, half let Allot choose: both paths must hold.
    let calls = users.iter().enumerate().map(|(i, u)| {
        let (app, org) = (&app, &org);
        let body = if i % 2 == 0 {
            json!({ "add": [{ "product": "meetings", "subscription": sub }] })
        } else {
            json!({ "add": [{ "product": "meetings" }] })
        };
        async move { app.post(&format!("/api/v1/orgs/{org}/users/{u}/licenses"), &app.admin, body).await }
    });
    let results = join_all(calls).await;
    let ok = results.iter().filter(|r| r.status.is_success()).count();
    let exhausted = results
        .iter()
        .filter(|r| r.status.as_u16() == 422 && r.code() == "seats_exhausted")
        .count();
    let other: Vec<String> = results
        .iter()
        .filter(|r| !r.status.is_success() && r.code() != "seats_exhausted")
        .map(|r| r.body.to_string())
        .collect();
    assert!(other.is_empty(), "unexpected answers: {other:?}");
    assert_eq!((ok, exhausted), (50, 14));

    let s = app.get(&format!("/api/v1/orgs/{org}/subscriptions/{sub}"), &app.admin).await.ok();
    assert_eq!(s["items"][0]["consumed"], 50);
    assert_eq!(s["items"][0]["available"], 0);
    let mut tx = app.store.begin_read().await.unwrap();
    assert_eq!(
        allot_store::licenses::count_in_pool(&mut tx, &org, &sub, "meetings").await.unwrap(),
        50
    );
    drop(tx);
    assert_eq!(app.mismatches().await, 0);
}

both_backends!(
    concurrent_changes_of_one_user,
    single_changes_while_a_long_job_runs,
    a_change_planned_before_a_chunk_was_written_sees_it
);

/// Changes of one user planned at the same time: each is planned from what
/// the user holds, so exactly one add of a product wins and the rest are told
/// the user already holds it; adds and removes of other products interleave
/// without losing any.
async fn concurrent_changes_of_one_user(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let u = user(&app, &w.org, "anna@example.com").await;
    let path = format!("/api/v1/orgs/{}/users/{u}/licenses", w.org);
    let same = (0..16).map(|_| app.post(&path, &app.admin, json!({ "add": [{ "product": "meetings" }] })));
    let results = join_all(same).await;
    let ok = results.iter().filter(|r| r.status.is_success()).count();
    let held = results.iter().filter(|r| r.code() == "already_assigned").count();
    assert_eq!(
        (ok, held),
        (1, 15),
        "{:?}",
        results.iter().map(|r| r.body.to_string()).collect::<Vec<_>>()
    );

    let mixed = [
        json!({ "add": [{ "product": "calling-professional" }] }),
        json!({ "add": [{ "product": "messaging" }] }),
        json!({ "remove": [{ "product": "meetings" }] }),
    ];
    let results = join_all(mixed.iter().map(|b| app.post(&path, &app.admin, b.clone()))).await;
    assert!(
        results.iter().all(|r| r.status.is_success()),
        "{:?}",
        results.iter().map(|r| r.body.to_string()).collect::<Vec<_>>()
    );
    let mine = app.get(&path, &app.admin).await.ok();
    let products: Vec<&str> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["product"].as_str().unwrap())
        .collect();
    assert_eq!(products, ["calling-professional", "messaging"]);
    assert_eq!(app.mismatches().await, 0);
}

/// A small reproducible generator (xorshift), one per client.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Clients issue single changes, bulk jobs (both modes) and reads at once
/// for a fixed time, on small pools so that they compete; after each seed's
/// run every job has ended and every counter equals its rows, with no user
/// holding a product twice and no pool over its quantity.
async fn mixed_load_keeps_invariants(backend: Backend) {
    const CLIENTS: u64 = 6;
    const RUN: std::time::Duration = std::time::Duration::from_millis(2500);
    let seeds: Vec<u64> = std::env::var("ALLOT_TEST_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![7, 1_000_003]);
    let products = ["messaging", "meetings", "calling-standard", "calling-professional"];
    for seed in seeds {
        let app = spawn(backend).await;
        for (c, f) in [
            ("messaging", "messaging"),
            ("meetings", "meetings"),
            ("calling-standard", "calling"),
            ("calling-professional", "calling"),
        ] {
            product(&app, c, f).await;
        }
        let org = org(&app, "Busy AB", None).await;
        let main_sub = subscription(
            &app,
            &org,
            json!([{ "product": "messaging", "quantity": 120 }, { "product": "meetings", "quantity": 60 },
                   { "product": "calling-standard", "quantity": 80 }, { "product": "calling-professional", "quantity": 40 }]),
        )
        .await;
        let second_sub = subscription(&app, &org, json!([{ "product": "calling-professional", "quantity": 30 }])).await;
        // The CSV columns an import may use.
        let columns: Vec<String> = products
            .iter()
            .map(|p| format!("{p} [{main_sub}]"))
            .chain([format!("calling-professional [{second_sub}]")])
            .collect();
        let users = many_users(&app, &org, "busy", "busy.example", 200, None).await;
        let deadline = std::time::Instant::now() + RUN;
        let clients = (0..CLIENTS).map(|c| {
            let (app, org, users, columns) = (&app, &org, &users, &columns);
            async move {
                let mut rng = Rng(seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(c + 1) | 1);
                let mut jobs = Vec::new();
                let mut counts = [0usize; 4];
                while std::time::Instant::now() < deadline {
                    match rng.below(10) {
                        0..=4 => {
                            counts[0] += 1;
                            let u = &users[rng.below(users.len())];
                            let p = products[rng.below(products.len())];
                            let body = if rng.below(2) == 0 {
                                json!({ "add": [{ "product": p }] })
                            } else {
                                json!({ "remove": [{ "product": p }] })
                            };
                            let r = app.post(&format!("/api/v1/orgs/{org}/users/{u}/licenses"), &app.admin, body).await;
                            assert!(
                                r.status.as_u16() == 200 || r.status.as_u16() == 422,
                                "single change: {} {}",
                                r.status,
                                r.body
                            );
                        }
                        5..=6 => {
                            counts[1] += 1;
                            let n = 1 + rng.below(60);
                            let mut picked: Vec<&String> = (0..n).map(|_| &users[rng.below(users.len())]).collect();
                            picked.sort();
                            picked.dedup();
                            let p = products[rng.below(products.len())];
                            let mode = if rng.below(3) == 0 { "all_or_nothing" } else { "per_user" };
                            let change = if rng.below(3) == 0 {
                                json!({ "remove": [{ "product": p }] })
                            } else {
                                json!({ "add": [{ "product": p }] })
                            };
                            let mut body = json!({ "users": picked, "mode": mode });
                            for (k, v) in change.as_object().unwrap() {
                                body[k] = v.clone();
                            }
                            jobs.push(start_job(app, org, body).await);
                        }
                        7 => {
                            // A CSV import: some users (and now and then a new
                            // one) with TRUE/FALSE in one column.
                            counts[3] += 1;
                            let col = &columns[rng.below(columns.len())];
                            let mut file = format!("email,{col}\n");
                            let mut picked: Vec<usize> = (0..1 + rng.below(40)).map(|_| rng.below(users.len())).collect();
                            picked.sort();
                            picked.dedup();
                            for i in picked {
                                let v = if rng.below(3) == 0 { "FALSE" } else { "TRUE" };
                                file.push_str(&format!("busy{i}@busy.example,{v}\n"));
                            }
                            if rng.below(4) == 0 {
                                file.push_str(&format!("new-{seed}-{c}-{}@busy.example,TRUE\n", counts[3]));
                            }
                            let mode = if rng.below(2) == 0 { "add_only" } else { "add_and_remove" };
                            let r = app
                                .raw(
                                    reqwest::Method::POST,
                                    &format!("/api/v1/orgs/{org}/imports?mode={mode}"),
                                    &app.admin,
                                    "text/csv",
                                    file.into_bytes(),
                                )
                                .await;
                            assert_eq!(r.status.as_u16(), 202, "{}", r.body);
                            jobs.push(r.body["job"]["id"].as_str().unwrap().to_string());
                        }
                        _ => {
                            counts[2] += 1;
                            let u = &users[rng.below(users.len())];
                            app.get(&format!("/api/v1/orgs/{org}/users/{u}/licenses"), &app.admin).await.ok();
                            let o = app.get(&format!("/api/v1/orgs/{org}/licenses"), &app.admin).await.ok();
                            for row in o["items"].as_array().unwrap() {
                                assert!(row["consumed"].as_i64().unwrap() <= row["total"].as_i64().unwrap(), "{row}");
                            }
                        }
                    }
                }
                (jobs, counts)
            }
        });
        let outcomes = join_all(clients).await;
        let mut totals = [0usize; 4];
        for (jobs, counts) in &outcomes {
            for (t, c) in totals.iter_mut().zip(counts) {
                *t += c;
            }
            for id in jobs {
                let j = finished_job(&app, id).await;
                assert!(
                    matches!(j["state"].as_str(), Some("succeeded" | "completed_with_errors" | "failed")),
                    "seed {seed}: {j}"
                );
                assert_eq!(j["progress"]["done"], j["progress"]["total"], "seed {seed}: {j}");
            }
        }
        assert!(totals.iter().all(|t| *t > 0), "seed {seed}: every kind of call ran: {totals:?}");
        assert_eq!(app.mismatches().await, 0, "seed {seed}: a counter differs from its rows");
        assert_eq!(app.duplicate_holdings().await, 0, "seed {seed}: a user holds a product twice");
        let mut tx = app.store.begin_read().await.unwrap();
        let over = tx
            .rows(
                "SELECT COUNT(*) AS n FROM subscription_items WHERE consumed > quantity OR consumed < 0",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(over[0].int("n").unwrap(), 0, "seed {seed}: a pool is oversold");
        eprintln!("seed {seed}: {totals:?} single/bulk/read/import calls, invariants hold");
    }
}

/// Single changes of the users of a job of several chunks, while it runs:
/// on SQLite the chunks are planned ahead of the writer, so changes land
/// between a chunk's plan and its write, and chunks between a single
/// change's plan and its write. Each side must see the other: every user
/// is processed once, counters equal rows, nobody holds a product twice,
/// and the users no single change touched all got the product.
async fn single_changes_while_a_long_job_runs(backend: Backend) {
    const USERS: usize = 12_000;
    let app = spawn(backend).await;
    product(&app, "messaging", "messaging").await;
    product(&app, "meetings", "meetings").await;
    let org = org(&app, "Long Job AB", None).await;
    subscription(
        &app,
        &org,
        json!([{ "product": "messaging", "quantity": USERS + 100 }, { "product": "meetings", "quantity": 500 }]),
    )
    .await;
    let users = many_users(&app, &org, "long", "long.example", USERS, None).await;
    let id = start_job(&app, &org, json!({ "users": users, "add": [{ "product": "messaging" }] })).await;
    let clients = (0..3u64).map(|c| {
        let (app, org, users, id) = (&app, &org, &users, &id);
        async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (c + 1));
            let mut touched = Vec::new();
            loop {
                let j = app.get(&format!("/api/v1/jobs/{id}"), &app.admin).await.ok();
                if !matches!(j["state"].as_str(), Some("queued" | "running")) {
                    break;
                }
                // Spread over all chunks, the later ones most of all.
                let u = &users[rng.below(users.len())];
                let body = match rng.below(3) {
                    0 => json!({ "remove": [{ "product": "messaging" }] }),
                    1 => json!({ "add": [{ "product": "messaging" }] }),
                    _ => json!({ "add": [{ "product": "meetings" }] }),
                };
                let r = app.post(&format!("/api/v1/orgs/{org}/users/{u}/licenses"), &app.admin, body).await;
                assert!(
                    r.status.as_u16() == 200 || r.status.as_u16() == 422,
                    "single change during the job: {} {}",
                    r.status,
                    r.body
                );
                touched.push(u.clone());
                // Paced, so that some chunks go through without a change
                // landing meanwhile (and are written from their plan
                // ahead) while single changes still meet chunks written
                // since their own plan.
                tokio::time::sleep(std::time::Duration::from_millis(100 + rng.below(300) as u64)).await;
            }
            touched
        }
    });
    let touched: std::collections::HashSet<String> = join_all(clients).await.into_iter().flatten().collect();
    assert!(!touched.is_empty(), "no single change ran while the job did");
    let j = finished_job(&app, &id).await;
    assert!(matches!(j["state"].as_str(), Some("succeeded" | "completed_with_errors")), "{j}");
    assert_eq!(j["progress"]["done"], USERS as i64, "{j}");
    let results = job_results(&app, &id).await;
    let processed: std::collections::HashSet<&str> = results.iter().filter_map(|r| r["user"].as_str()).collect();
    assert_eq!((results.len(), processed.len()), (USERS, USERS), "every user once");
    for r in &results {
        let user = r["user"].as_str().unwrap_or_default();
        assert!(
            r["outcome"] == "ok" || touched.contains(user),
            "only a user changed meanwhile may end other than ok: {r}"
        );
    }

    assert_eq!(app.mismatches().await, 0, "a counter differs from its rows");
    assert_eq!(app.duplicate_holdings().await, 0, "a user holds a product twice");
    let mut rd = app.store.begin_read().await.unwrap();
    let holders: std::collections::HashSet<String> = rd
        .rows("SELECT user_id FROM assignments WHERE product = 'messaging'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.text("user_id").unwrap())
        .collect();
    let missing = users.iter().filter(|u| !touched.contains(*u) && !holders.contains(*u)).count();
    assert_eq!(missing, 0, "users no single change touched all got the product");
}

/// A single change planned before a bulk chunk took the same user, and
/// written after it: the test holds the writer with a chunk's write (the
/// user's seat, the org's count of chunks planned ahead, no version bump),
/// the change plans meanwhile, then waits for the writer. It must see the
/// chunk: refused as already held, one seat taken, not two.
async fn a_change_planned_before_a_chunk_was_written_sees_it(backend: Backend) {
    use allot_store::license_epochs;
    let app = spawn(backend).await;
    product(&app, "messaging", "messaging").await;
    let org = org(&app, "Overtaken AB", None).await;
    let sub = subscription(&app, &org, json!([{ "product": "messaging", "quantity": 5 }])).await;
    let user = many_users(&app, &org, "late", "late.example", 1, None).await.remove(0);

    let mut chunk = app.store.begin().await.expect("begin");
    let seen = license_epochs::read(&mut chunk, &org).await.expect("epoch");
    // None on PostgreSQL, which plans no chunk ahead; its row locks order the two there.
    license_epochs::claim_chunk_ahead(&mut chunk, &org, seen, None)
        .await
        .expect("claim");
    chunk
        .exec(
            "INSERT INTO assignments (org_id, user_id, product, subscription_id, properties, assigned_at) \
             VALUES ($1, $2, 'messaging', $3, '{}', '2026-11-30T00:00:00.000000Z')",
            &[
                allot_store::Val::from(&org),
                allot_store::Val::from(&user),
                allot_store::Val::from(&sub),
            ],
        )
        .await
        .expect("the chunk's assignment");
    chunk
        .exec(
            "UPDATE subscription_items SET consumed = consumed + 1 WHERE org_id = $1 AND subscription_id = $2",
            &[allot_store::Val::from(&org), allot_store::Val::from(&sub)],
        )
        .await
        .expect("the chunk's seat");
    let path = format!("/api/v1/orgs/{org}/users/{user}/licenses");
    let change = app.post(&path, &app.admin, json!({ "add": [{ "product": "messaging" }] }));
    let store = app.store.clone();
    let write = async {
        // The chunk commits only once the change has read, planned and is
        // waiting to write: behind the writer on SQLite, on the seat
        // counter's row lock on PostgreSQL. So the interleaving happened.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let waiting = match backend {
                Backend::Sqlite => store.writer_waiters() > 0,
                Backend::Postgres => {
                    let mut rd = store.read_conn().await.expect("read");
                    rd.rows("SELECT COUNT(*) AS n FROM pg_locks WHERE NOT granted", &[])
                        .await
                        .expect("locks")[0]
                        .int("n")
                        .expect("count")
                        > 0
                }
            };
            if waiting {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the change never waited for the chunk");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        chunk.commit().await.expect("commit the chunk");
    };
    let (r, ()) = tokio::join!(change, write);
    r.problem(422, "already_assigned");
    let s = app.get(&format!("/api/v1/orgs/{org}/subscriptions/{sub}"), &app.admin).await.ok();
    assert_eq!(s["items"][0]["consumed"], 1, "{s}");
    assert_eq!(app.mismatches().await, 0);
    let held = app.get(&format!("/api/v1/orgs/{org}/users/{user}/licenses"), &app.admin).await.ok();
    assert_eq!(held["items"].as_array().map(Vec::len), Some(1), "{held}");
}
