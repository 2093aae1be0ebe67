//! Searching users by any part of an email or name (`?q=`): the substring
//! index (SQLite FTS5 trigram, PostgreSQL pg_trgm) answers exactly what a
//! scan would, on every path that writes users, for short and common text
//! too, and text with quotes, `%` and `_` means itself.

use serde_json::json;

use crate::both_backends;
use crate::kit::*;

both_backends!(the_search_index_follows_every_write_of_a_user);

async fn found(app: &TestApp, org: &str, q: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let mut query = vec![("q", q.to_string()), ("limit", "1000".to_string())];
        if !cursor.is_empty() {
            query.push(("cursor", cursor.clone()));
        }
        let qs: String = query
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let page = app.get(&format!("/api/v1/orgs/{org}/users?{qs}"), &app.admin).await.ok();
        out.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["email"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return out,
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn the_search_index_follows_every_write_of_a_user(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let other = org(&app, "Other", None).await;
    let zebra = app
        .post(
            &format!("/api/v1/orgs/{}/users", w.org),
            &app.admin,
            json!({ "email": "Zed@Zoo.example", "display_name": "Zebra Quokka" }),
        )
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.post(
        &format!("/api/v1/orgs/{other}/users"),
        &app.admin,
        json!({ "email": "quokka@elsewhere.example", "display_name": "Quokka Too" }),
    )
    .await
    .ok();

    // Created: found by any part of its name or email, in any case; never another org's.
    assert_eq!(found(&app, &w.org, "quokk").await, vec!["Zed@Zoo.example"]);
    assert_eq!(found(&app, &w.org, "ZEBRA").await, vec!["Zed@Zoo.example"]);
    assert_eq!(found(&app, &w.org, "d@zoo.ex").await, vec!["Zed@Zoo.example"]);
    assert_eq!(found(&app, &w.org, "zo").await, vec!["Zed@Zoo.example"], "two characters: a scan");
    // No match spans the email and the name.
    assert!(found(&app, &w.org, "examplezebra").await.is_empty());

    // Renamed and re-addressed: the old text no longer finds it, the new does.
    app.patch(
        &format!("/api/v1/orgs/{}/users/{zebra}", w.org),
        &app.admin,
        json!({ "display_name": "Wombat \"The Great\" 100%", "email": "wom@burrow.example" }),
    )
    .await
    .ok();
    assert!(found(&app, &w.org, "quokk").await.is_empty());
    assert!(found(&app, &w.org, "zoo.ex").await.is_empty());
    assert_eq!(found(&app, &w.org, "wombat").await, vec!["wom@burrow.example"]);
    assert_eq!(found(&app, &w.org, "burrow").await, vec!["wom@burrow.example"]);
    // Quotes, % and _ are text, not syntax.
    assert_eq!(found(&app, &w.org, "\"the great\" 100%").await, vec!["wom@burrow.example"]);
    assert_eq!(found(&app, &w.org, "t\" 1").await, vec!["wom@burrow.example"]);
    assert!(found(&app, &w.org, "100_").await.is_empty());
    assert!(found(&app, &w.org, "w%t").await.is_empty());

    // Loaded in bulk (as an import or a data load writes them), 2,500 of
    // them sharing text: the common text pages through all of them (a
    // scan), the rare text finds its one (the index).
    many_users(&app, &w.org, "member", "dense.example", 2500, None).await;
    let dense = found(&app, &w.org, "dense.exa").await;
    assert_eq!(dense.len(), 2500);
    assert_eq!(found(&app, &w.org, "member2499@").await, vec!["member2499@dense.example"]);
    assert_eq!(found(&app, &w.org, "member249").await.len(), 11, "member249 and member2490..2499");

    // Imported from a CSV file.
    let r = app
        .raw(
            reqwest::Method::POST,
            &format!("/api/v1/orgs/{}/imports?mode=add_only&dry_run=false", w.org),
            &app.admin,
            "text/csv",
            b"email,display_name\nimported@csv.example,Ingrid Imported\n".to_vec(),
        )
        .await;
    assert!(r.status.as_u16() < 300, "{}", r.body);
    if let Some(job) = r.body["job"]["id"].as_str() {
        finished_job(&app, job).await;
    }
    assert_eq!(found(&app, &w.org, "ingrid imp").await, vec!["imported@csv.example"]);

    // Deleted: gone from the search.
    let r = app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/orgs/{}/users/{zebra}", w.org),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(found(&app, &w.org, "wombat").await.is_empty());

    // SQLite's index can be rebuilt from the users after a VACUUM (which
    // may renumber the rows it names): same answers.
    if backend == Backend::Sqlite {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", app.database))
            .await
            .expect("a connection of its own");
        sqlx::query("VACUUM").execute(&mut c).await.expect("vacuum");
        c.close().await.expect("close");
    }
    let mut tx = app.store.begin().await.expect("begin");
    allot_store::users::rebuild_search_index(&mut tx).await.expect("rebuild");
    tx.commit().await.expect("commit");
    assert_eq!(found(&app, &w.org, "member2499@").await, vec!["member2499@dense.example"]);
    assert_eq!(found(&app, &other, "quokka").await, vec!["quokka@elsewhere.example"]);
}
