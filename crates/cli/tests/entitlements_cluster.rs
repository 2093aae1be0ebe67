//! Three real `allot serve` processes on one PostgreSQL database: changes
//! are made through any of them, and every process answers entitlement
//! checks as the database says: at once on the process that made the
//! change, within a second on the others. A process killed with `kill -9`
//! while another changes licences leaves the survivors exact, and starts
//! again exact; listening connections cut by the database are followed by
//! a full read.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use allot_store::{Store, StoreOptions, Val};
use sqlx::Connection;

use common::{call, postgres_database, start, token, url_in, Running};

const FEATURES: [&str; 4] = ["calling", "voicemail", "meetings", "teleport"];

fn serve(database: &str) -> (Running, String) {
    let (running, lines) = start(
        &["serve", "--database", database, "--listen", "127.0.0.1:0"],
        &[("ALLOT_LOG", "error")],
        |l| l.contains("listening on"),
    );
    (running, url_in(&lines, "listening on"))
}

/// (user, feature) → allowed, as a plain query of the database says today.
async fn database_truth(store: &Store, org: &str) -> BTreeMap<(String, String), bool> {
    let today = chrono::Utc::now().date_naive().to_string();
    let mut tx = store.begin_read().await.expect("read");
    let users = tx
        .rows("SELECT id FROM users WHERE org_id = $1", &[Val::from(org)])
        .await
        .expect("users");
    let granting = tx
        .rows(
            "SELECT a.user_id, p.features FROM assignments a \
             JOIN users u ON u.org_id = a.org_id AND u.id = a.user_id \
             JOIN subscriptions s ON s.org_id = a.org_id AND s.id = a.subscription_id \
             JOIN subscription_items i ON i.org_id = a.org_id AND i.subscription_id = a.subscription_id AND i.product = a.product \
             JOIN products p ON p.code = a.product \
             WHERE a.org_id = $1 AND u.status = 'active' AND NOT s.cancelled AND NOT s.suspended AND s.end_date > $2 \
               AND i.provisioning_status = 'provisioned'",
            &[Val::from(org), Val::from(today.as_str())],
        )
        .await
        .expect("licences");
    let mut out = BTreeMap::new();
    for u in &users {
        for f in FEATURES {
            out.insert((u.text("id").unwrap(), f.to_string()), false);
        }
    }
    for g in &granting {
        let features: Vec<String> = serde_json::from_str(&g.text("features").unwrap()).unwrap();
        for f in features {
            out.insert((g.text("user_id").unwrap(), f), true);
        }
    }
    out
}

/// What one server answers for every (user, feature) of the truth.
async fn answers(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    org: &str,
    keys: &[(String, String)],
) -> BTreeMap<(String, String), bool> {
    let mut out = BTreeMap::new();
    for batch in keys.chunks(1000) {
        let evaluations: Vec<Value> = batch.iter().map(|(u, f)| json!({ "user": u, "feature": f })).collect();
        let r = call(
            client,
            url,
            token,
            Method::POST,
            "/api/v1/entitlements/evaluations",
            Some(json!({ "org": org, "evaluations": evaluations })),
        )
        .await;
        for (k, a) in batch.iter().zip(r["evaluations"].as_array().unwrap()) {
            out.insert(k.clone(), a["allowed"].as_bool().unwrap());
        }
    }
    out
}

/// Waits until `url` answers as the database does; returns how long it took.
async fn exact_within(client: &reqwest::Client, url: &str, token: &str, store: &Store, org: &str, limit: Duration, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let truth = database_truth(store, org).await;
        let keys: Vec<_> = truth.keys().cloned().collect();
        let got = answers(client, url, token, org, &keys).await;
        if got == truth {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            let wrong: Vec<_> = truth.iter().filter(|(k, v)| got.get(*k) != Some(v)).take(5).collect();
            panic!("{url} still answers differently {:?} after {what}: {wrong:?}", start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_stay_exact() {
    let Some((_cluster, database)) = postgres_database("entitlements_cluster") else {
        return;
    };
    let admin = token(&database);
    let mut servers: Vec<(Running, String)> = (0..3).map(|_| serve(&database)).collect();
    let client = reqwest::Client::new();
    let a = servers[0].1.clone();
    for (code, family, features) in [
        ("calling-professional", "calling", json!(["calling", "voicemail"])),
        ("meetings", "meetings", json!(["meetings"])),
    ] {
        let body = json!({ "code": code, "name": code, "family": family, "features": features });
        call(&client, &a, &admin, Method::POST, "/api/v1/products", Some(body)).await;
    }
    let org = call(
        &client,
        &a,
        &admin,
        Method::POST,
        "/api/v1/orgs",
        Some(json!({ "name": "Cluster AB" })),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let items = json!([{ "product": "calling-professional", "quantity": 500 }, { "product": "meetings", "quantity": 500 }]);
    let sub = call(
        &client,
        &a,
        &admin,
        Method::POST,
        &format!("/api/v1/orgs/{org}/subscriptions"),
        Some(json!({ "start_date": "2026-01-01", "end_date": "2099-01-01", "items": items })),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let product = call(
        &client,
        &a,
        &admin,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({ "name": "the product", "role": "product_service", "org": org })),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut users = Vec::new();
    for i in 0..60 {
        let url = &servers[i % 3].1;
        let u = call(
            &client,
            url,
            &admin,
            Method::POST,
            &format!("/api/v1/orgs/{org}/users"),
            Some(json!({ "email": format!("u{i}@cluster.example") })),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        users.push(u);
    }
    let store = Store::open(
        &database,
        StoreOptions {
            durable: false,
            max_connections: 4,
        },
    )
    .await
    .expect("open");
    let mut rng = StdRng::seed_from_u64(3);
    let mut slowest = Duration::ZERO;
    let codes = ["calling-professional", "meetings"];
    for step in 0..30 {
        let s = rng.gen_range(0..3);
        let url = servers[s].1.clone();
        let what = match rng.gen_range(0..4) {
            0 | 1 => {
                let u = users.choose(&mut rng).unwrap();
                let code = codes.choose(&mut rng).unwrap();
                let body = if rng.gen_bool(0.6) {
                    json!({ "add": [{ "product": code, "subscription": sub }] })
                } else {
                    json!({ "remove": [{ "product": code }] })
                };
                let _ = client
                    .post(format!("{url}/api/v1/orgs/{org}/users/{u}/licenses"))
                    .bearer_auth(&admin)
                    .json(&body)
                    .send()
                    .await
                    .expect("change");
                format!("step {step}: a change through server {s}")
            }
            2 => {
                let some: Vec<&String> = users.choose_multiple(&mut rng, 15).collect();
                let body = json!({ "users": some, "add": [{ "product": "meetings", "subscription": sub }], "mode": "per_user" });
                let j = call(
                    &client,
                    &url,
                    &admin,
                    Method::POST,
                    &format!("/api/v1/orgs/{org}/license-jobs"),
                    Some(body),
                )
                .await;
                let id = j["job"]["id"].as_str().unwrap().to_string();
                loop {
                    let j = call(&client, &url, &admin, Method::GET, &format!("/api/v1/jobs/{id}"), None).await;
                    if !matches!(j["state"].as_str(), Some("queued" | "running")) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                format!("step {step}: a bulk job through server {s}")
            }
            _ => {
                let u = users.choose(&mut rng).unwrap();
                let status = if rng.gen_bool(0.5) { "inactive" } else { "active" };
                call(
                    &client,
                    &url,
                    &admin,
                    Method::PATCH,
                    &format!("/api/v1/orgs/{org}/users/{u}"),
                    Some(json!({ "status": status })),
                )
                .await;
                format!("step {step}: {status} through server {s}")
            }
        };
        // The server that made the change answers exactly at once; the
        // others within a second.
        exact_within(&client, &url, &product, &store, &org, Duration::ZERO, &what).await;
        for (i, (_, other)) in servers.iter().enumerate().filter(|(i, _)| *i != s) {
            let lag = exact_within(
                &client,
                other,
                &product,
                &store,
                &org,
                Duration::from_secs(1),
                &format!("{what} (server {i})"),
            )
            .await;
            slowest = slowest.max(lag);
        }
    }
    eprintln!("slowest follower caught up after {slowest:?}");

    // Usage: a new holder, asked about on server 1 alone, is written by
    // server 1 within its flush interval (2 s); a kill -9 after that loses
    // nothing of it.
    let holder = call(
        &client,
        &a,
        &admin,
        Method::POST,
        &format!("/api/v1/orgs/{org}/users"),
        Some(json!({ "email": "holder@cluster.example" })),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    call(
        &client,
        &a,
        &admin,
        Method::POST,
        &format!("/api/v1/orgs/{org}/users/{holder}/licenses"),
        Some(json!({ "add": [{ "product": "meetings", "subscription": sub }] })),
    )
    .await;
    // Server 1 follows server 0's change first (within a second).
    exact_within(
        &client,
        &servers[1].1,
        &product,
        &store,
        &org,
        Duration::from_secs(1),
        "the new holder",
    )
    .await;
    let asked = answers(&client, &servers[1].1, &product, &org, &[(holder.clone(), "meetings".to_string())]).await;
    assert_eq!(asked.values().collect::<Vec<_>>(), [&true]);
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    // kill -9 of server 1 while server 0 changes licences.
    let writer_url = servers[0].1.clone();
    let (writer_users, writer_sub, writer_org, writer_admin) = (users.clone(), sub.clone(), org.clone(), admin.clone());
    let changing = tokio::spawn(async move {
        let client = reqwest::Client::new();
        for (i, u) in writer_users.iter().enumerate().take(40) {
            let body = if i % 2 == 0 {
                json!({ "add": [{ "product": "calling-professional", "subscription": writer_sub }] })
            } else {
                json!({ "remove": [{ "product": "calling-professional" }] })
            };
            let _ = client
                .post(format!("{writer_url}/api/v1/orgs/{writer_org}/users/{u}/licenses"))
                .bearer_auth(&writer_admin)
                .json(&body)
                .send()
                .await;
        }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let killed = servers.remove(1);
    drop(killed); // SIGKILL: no shutdown code runs
    changing.await.expect("changes");
    for (i, (_, url)) in servers.iter().enumerate() {
        exact_within(
            &client,
            url,
            &product,
            &store,
            &org,
            Duration::from_secs(1),
            &format!("the kill (survivor {i})"),
        )
        .await;
    }
    let mut rd = store.read_conn().await.expect("read");
    let used = rd
        .rows(
            "SELECT product FROM license_usage WHERE org_id = $1 AND user_id = $2",
            &[Val::from(org.as_str()), Val::from(holder.as_str())],
        )
        .await
        .expect("usage");
    drop(rd);
    assert_eq!(used.len(), 1, "the use server 1 recorded before its kill -9 is in the database");
    // Restarted, it reads everything at start-up and is exact at once.
    servers.push(serve(&database));
    let restarted = servers[2].1.clone();
    exact_within(&client, &restarted, &product, &store, &org, Duration::ZERO, "the restart").await;

    // The database cuts every listening connection; the next change is
    // still followed (the listeners connect again and read everything).
    let mut tx = store.begin().await.expect("begin");
    let cut = tx
        .rows(
            "SELECT pg_terminate_backend(pid) AS n FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("terminate");
    tx.commit().await.expect("commit");
    assert_eq!(cut.len(), 3, "one listening connection per server");
    let u = &users[7];
    let _ = client
        .post(format!("{}/api/v1/orgs/{org}/users/{u}/licenses", servers[0].1))
        .bearer_auth(&admin)
        .json(&json!({ "add": [{ "product": "meetings", "subscription": sub }] }))
        .send()
        .await;
    for (i, (_, url)) in servers.iter().enumerate() {
        exact_within(
            &client,
            url,
            &product,
            &store,
            &org,
            Duration::from_secs(3),
            &format!("cut listeners (server {i})"),
        )
        .await;
    }

    // A process that commits a change and dies before announcing it (as
    // one killed between its COMMIT and its NOTIFY), played here by hand
    // with the names a process gives its row and connections: a row in
    // `processes`, a presence connection, a connection that commits the
    // change and sends nothing; then both connections go. Every server
    // looks at the processes every half second, sees it gone and reads
    // everything again.
    let fake = format!("proc_gone{}", std::process::id());
    let options = |name: String| {
        <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&database)
            .expect("url")
            .application_name(&name)
    };
    let mut presence = sqlx::PgConnection::connect_with(&options(format!("allot {fake} presence")))
        .await
        .expect("presence");
    sqlx::query("INSERT INTO processes (origin, started_at) VALUES ($1, '2026-12-07T00:00:00Z')")
        .bind(&fake)
        .execute(&mut presence)
        .await
        .expect("row");
    // Seen alive first, as a real process would be for a while.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut writer = sqlx::PgConnection::connect_with(&options(format!("allot {fake}")))
        .await
        .expect("writer");
    sqlx::query("UPDATE users SET status = 'inactive' WHERE org_id = $1 AND id = $2")
        .bind(&org)
        .bind(u)
        .execute(&mut writer)
        .await
        .expect("deactivate");
    sqlx::Connection::close(writer).await.expect("close");
    sqlx::Connection::close(presence).await.expect("close");
    for (i, (_, url)) in servers.iter().enumerate() {
        exact_within(
            &client,
            url,
            &product,
            &store,
            &org,
            Duration::from_secs(2),
            &format!("a commit never announced by a process that died (server {i})"),
        )
        .await;
    }
    store.close().await;
}
