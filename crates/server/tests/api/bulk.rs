//! Bulk licence changes as jobs on both backends.

use serde_json::{json, Value};

use crate::both_backends;
use crate::kit::*;

both_backends!(
    capacity_is_checked_before_anything_is_written,
    per_user_and_all_or_nothing_with_rule_violations,
    filters_and_moves_keep_service_data,
    bad_input_is_refused_as_a_whole,
    summary_shows_all_some_none,
    cancel_stops_between_chunks,
    idempotency_key_returns_the_same_job,
    audit_events_carry_each_users_own_states,
);

/// A job's audit events are built in bulk, and a state equal to the
/// previous user's is reused: users whose licences differ from their
/// neighbours' must still get their own before and after.
async fn audit_events_carry_each_users_own_states(backend: Backend) {
    let app = spawn(backend).await;
    product(&app, "messaging", "messaging").await;
    product(&app, "voice", "voice").await;
    let org = org(&app, "Audit AB", None).await;
    subscription(
        &app,
        &org,
        json!([{ "product": "messaging", "quantity": 20 }, { "product": "voice", "quantity": 20 }]),
    )
    .await;
    let users = many_users(&app, &org, "a", "example.com", 12, None).await;
    // Every third user holds voice first: runs of equal and of different states.
    let with_voice: Vec<String> = users.iter().step_by(3).cloned().collect();
    job(&app, &org, json!({ "users": with_voice, "add": [{ "product": "voice" }] })).await;
    let j = job(&app, &org, json!({ "users": users, "add": [{ "product": "messaging" }] })).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    let events = license_change_events(&app, &org).await;
    let request = format!("job:{}", j["id"].as_str().unwrap());
    let ours: Vec<&Value> = events.iter().filter(|e| e["request_id"] == request).collect();
    assert_eq!(ours.len(), users.len());
    let products = |state: &Value| {
        let mut p: Vec<String> = state["licenses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["product"].as_str().unwrap().to_string())
            .collect();
        p.sort();
        p
    };
    for e in &ours {
        let user = e["target"].as_str().unwrap().strip_prefix("user:").unwrap();
        let had_voice = with_voice.iter().any(|u| u == user);
        let expected_before: Vec<&str> = if had_voice { vec!["voice"] } else { vec![] };
        let expected_after: Vec<&str> = if had_voice { vec!["messaging", "voice"] } else { vec!["messaging"] };
        assert_eq!(products(&e["before"]), expected_before, "{e}");
        assert_eq!(products(&e["after"]), expected_after, "{e}");
        assert_eq!(e["after"]["moved_families"], json!([]), "{e}");
        // The columns every event of a chunk shares.
        assert_eq!(e["action"], "license.change");
        assert_eq!(e["actor"], ours[0]["actor"]);
        assert_eq!(e["at"], ours[0]["at"]);
        assert!(!e["actor"].as_str().unwrap().is_empty() && !e["at"].as_str().unwrap().is_empty());
    }
    let mut targets: Vec<&str> = ours.iter().map(|e| e["target"].as_str().unwrap()).collect();
    targets.sort();
    targets.dedup();
    assert_eq!(targets.len(), users.len(), "one event per user");
}

async fn idempotency_key_returns_the_same_job(backend: Backend) {
    let app = spawn(backend).await;
    let (org, sub) = messaging_org(&app, 10).await;
    let users = many_users(&app, &org, "i", "example.com", 5, None).await;
    let body = json!({ "users": users, "add": [{ "product": "messaging" }] });
    let post = |key: &'static str| {
        let (app, org, body) = (&app, &org, body.clone());
        async move {
            let r = app
                .client
                .post(format!("{}/api/v1/orgs/{org}/license-jobs", app.url))
                .bearer_auth(&app.admin)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
            r.json::<Value>().await.unwrap()["job"]["id"].as_str().unwrap().to_string()
        }
    };
    let first = post("job-1").await;
    let again = post("job-1").await;
    assert_eq!(first, again, "the same key returns the same job");
    finished_job(&app, &first).await;
    let s = app.get(&format!("/api/v1/orgs/{org}/subscriptions/{sub}"), &app.admin).await.ok();
    assert_eq!(s["items"][0]["consumed"], 5, "one job ran, not two");
    let mut tx = app.store.begin_read().await.unwrap();
    let jobs = tx.rows("SELECT COUNT(*) AS n FROM jobs", &[]).await.unwrap();
    assert_eq!(jobs[0].int("n").unwrap(), 1);
}

async fn job(app: &TestApp, org: &str, body: Value) -> Value {
    let id = start_job(app, org, body).await;
    finished_job(app, &id).await
}

/// The org's `license.change` audit events (up to 1,000).
async fn license_change_events(app: &TestApp, org: &str) -> Vec<Value> {
    let events = app
        .get(
            &format!("/api/v1/orgs/{org}/audit-events?action=license.change&limit=1000"),
            &app.admin,
        )
        .await
        .ok();
    events["items"].as_array().unwrap().clone()
}

async fn messaging_org(app: &TestApp, seats: i64) -> (String, String) {
    product(app, "messaging", "messaging").await;
    let org = org(app, "Bulk AB", None).await;
    let sub = subscription(app, &org, json!([{ "product": "messaging", "quantity": seats }])).await;
    (org, sub)
}

async fn capacity_is_checked_before_anything_is_written(backend: Backend) {
    let app = spawn(backend).await;
    let (org, sub) = messaging_org(&app, 900).await;
    let users = many_users(&app, &org, "u", "example.com", 1000, None).await;
    let before = license_state(&app).await;
    let j = job(&app, &org, json!({ "users": users, "add": [{ "product": "messaging" }] })).await;
    assert_eq!(j["state"], "failed", "{j}");
    assert_eq!(j["error"]["code"], "seats_exhausted", "{j}");
    let message = j["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("needs 1000 seats") && message.contains("only 900 are free"),
        "{message}"
    );
    assert_eq!(license_state(&app).await, before, "a refused job wrote licences");
    let results = job_results(&app, j["id"].as_str().unwrap()).await;
    assert_eq!(results.len(), 1000);
    assert!(results.iter().all(|r| r["outcome"] == "error" && r["code"] == "seats_exhausted"));

    // With 1,000 seats every user gets one.
    app.patch(
        &format!("/api/v1/orgs/{org}/subscriptions/{sub}"),
        &app.admin,
        json!({ "items": [{ "product": "messaging", "quantity": 1000 }] }),
    )
    .await
    .ok();
    let j = job(&app, &org, json!({ "users": users, "add": [{ "product": "messaging" }] })).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(
        j["progress"],
        json!({ "done": 1000, "total": 1000, "succeeded": 1000, "failed": 0 })
    );
    let s = app.get(&format!("/api/v1/orgs/{org}/subscriptions/{sub}"), &app.admin).await.ok();
    assert_eq!(s["items"][0]["consumed"], 1000);
    assert_eq!(app.mismatches().await, 0);
    // Every change is in the audit log, attributed to the job.
    let items = license_change_events(&app, &org).await;
    assert_eq!(items.len(), 1000);
    assert!(items
        .iter()
        .all(|e| e["request_id"] == format!("job:{}", j["id"].as_str().unwrap())));
    // Running it again changes nothing: everyone already holds it.
    let again = job(&app, &org, json!({ "users": users, "add": [{ "product": "messaging" }] })).await;
    assert_eq!(again["state"], "succeeded");
    let results = job_results(&app, again["id"].as_str().unwrap()).await;
    assert_eq!(results.len(), 1000);
    assert!(results.iter().all(|r| r["outcome"] == "skipped"), "{}", results[0]);
    assert_eq!(app.mismatches().await, 0);
}

async fn per_user_and_all_or_nothing_with_rule_violations(backend: Backend) {
    let app = spawn(backend).await;
    app.post(
        "/api/v1/products",
        &app.admin,
        json!({ "code": "contact-centre", "name": "Contact Centre Agent", "family": "contact-centre", "rules": { "locations": ["SE"] } }),
    )
    .await
    .ok();
    let org = org(&app, "Rules AB", None).await;
    let sub = subscription(&app, &org, json!([{ "product": "contact-centre", "quantity": 100 }])).await;
    let swedes = many_users(&app, &org, "se", "example.com", 30, Some("SE")).await;
    let americans = many_users(&app, &org, "us", "example.com", 5, Some("US")).await;
    let everyone: Vec<String> = swedes.iter().chain(&americans).cloned().collect();
    let body = |mode: &str, dry: bool| json!({ "users": everyone, "add": [{ "product": "contact-centre" }], "mode": mode, "dry_run": dry });

    // all_or_nothing: five refusals, so nothing at all.
    let before = license_state(&app).await;
    let j = job(&app, &org, body("all_or_nothing", false)).await;
    assert_eq!(j["state"], "failed", "{j}");
    assert_eq!(license_state(&app).await, before);
    let results = job_results(&app, j["id"].as_str().unwrap()).await;
    assert_eq!(results.iter().filter(|r| r["code"] == "location_unavailable").count(), 5);
    assert_eq!(results.iter().filter(|r| r["outcome"] == "skipped").count(), 30);

    // A dry run shows what per_user would do and writes nothing.
    let j = job(&app, &org, body("per_user", true)).await;
    assert_eq!(j["state"], "completed_with_errors");
    assert_eq!(j["progress"]["succeeded"], 30);
    assert_eq!(license_state(&app).await, before, "a dry run wrote licences");

    // per_user: the Swedes get it, the others fail with their reason.
    let j = job(&app, &org, body("per_user", false)).await;
    assert_eq!(j["state"], "completed_with_errors");
    assert_eq!(j["progress"], json!({ "done": 35, "total": 35, "succeeded": 30, "failed": 5 }));
    let results = job_results(&app, j["id"].as_str().unwrap()).await;
    for r in &results {
        let us = r["email"].as_str().unwrap().starts_with("us");
        assert_eq!(r["outcome"], if us { "error" } else { "ok" }, "{r}");
        if us {
            assert_eq!(r["code"], "location_unavailable");
            assert!(r["message"].as_str().unwrap().contains("not available in US"), "{r}");
        } else {
            assert_eq!(
                r["changes"],
                json!([{ "action": "add", "product": "contact-centre", "subscription": sub }])
            );
        }
    }
    let csv = app
        .get(
            &format!("/api/v1/jobs/{}/results?format=csv", j["id"].as_str().unwrap()),
            &app.admin,
        )
        .await;
    let text = csv.body.as_str().unwrap().to_string();
    assert!(text.starts_with("user,email,outcome,code,message,changes\r\n"), "{text}");
    assert_eq!(text.lines().count(), 36);
    assert!(text.contains("location_unavailable"));
    assert_eq!(app.mismatches().await, 0);
}

async fn filters_and_moves_keep_service_data(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let sub_b = subscription(
        &app,
        &w.org,
        json!([{ "product": "calling-professional", "quantity": 10 }, { "product": "calling-standard", "quantity": 10 }]),
    )
    .await;
    let group = app
        .post(&format!("/api/v1/orgs/{}/groups", w.org), &app.admin, json!({ "name": "Sales" }))
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ids = Vec::new();
    for (i, email) in ["a@sales.example", "b@sales.example", "c@other.example"].iter().enumerate() {
        let groups = if i < 2 { json!([group]) } else { json!([]) };
        ids.push(
            app.post(
                &format!("/api/v1/orgs/{}/users", w.org),
                &app.admin,
                json!({ "email": email, "groups": groups }),
            )
            .await
            .ok()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Filter by group: calling with an extension each (single changes), then move them.
    for (i, u) in ids.iter().enumerate() {
        app.post(
            &format!("/api/v1/orgs/{}/users/{u}/licenses", w.org),
            &app.admin,
            // On A by name: with two subscriptions ending the same day the
            // automatic choice goes by id, and ids made in one millisecond
            // do not sort in the order they were made.
            json!({ "add": [{ "product": "calling-professional", "subscription": w.sub, "properties": { "extension": format!("10{i}") } }] }),
        )
        .await
        .ok();
    }
    let j = job(
        &app,
        &w.org,
        json!({ "filter": { "group": group }, "move": { "product": "calling-professional", "from_subscription": w.sub, "to_subscription": sub_b } }),
    )
    .await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["progress"]["total"], 2);
    for (i, u) in ids.iter().enumerate() {
        let l = app
            .get(&format!("/api/v1/orgs/{}/users/{u}/licenses", w.org), &app.admin)
            .await
            .ok();
        let expected_sub = if i < 2 { &sub_b } else { &w.sub };
        assert_eq!(l["items"][0]["subscription"], *expected_sub, "user {i}");
        assert_eq!(l["items"][0]["properties"]["extension"], format!("10{i}"), "user {i}");
        let (data, retain_until) = stored_service_data(&app, &w.org, u, "calling").await.expect("service data kept");
        assert_eq!(data["extension"], format!("10{i}"), "service data kept");
        assert_eq!(retain_until, None, "a moved family is not in retention");
    }
    // Filter by email domain and by product held.
    let j = job(
        &app,
        &w.org,
        json!({ "filter": { "email_domain": "other.example" }, "add": [{ "product": "messaging" }] }),
    )
    .await;
    assert_eq!(j["progress"]["total"], 1);
    assert_eq!(j["state"], "succeeded");
    let j = job(
        &app,
        &w.org,
        json!({ "filter": { "has_product": "messaging" }, "remove": [{ "product": "messaging" }] }),
    )
    .await;
    assert_eq!(
        (j["state"].as_str(), j["progress"]["succeeded"].as_i64()),
        (Some("succeeded"), Some(1))
    );
    assert_eq!(app.mismatches().await, 0);
}

async fn bad_input_is_refused_as_a_whole(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let mine = many_users(&app, &w.org, "m", "example.com", 3, None).await;
    let other_org = org(&app, "Other", None).await;
    let theirs = many_users(&app, &other_org, "t", "example.com", 2, None).await;
    let meetings_sub = subscription(&app, &w.org, json!([{ "product": "meetings", "quantity": 5 }])).await;
    let messaging_sub = subscription(&app, &w.org, json!([{ "product": "messaging", "quantity": 5 }])).await;
    let before = app.snapshot().await;
    let path = format!("/api/v1/orgs/{}/license-jobs", w.org);
    let add = json!([{ "product": "meetings" }]);
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({ "users": [], "add": add }), 422, "validation_failed"),
        (json!({ "users": ["usr_nobody"], "add": add }), 404, "not_found"),
        (json!({ "users": [mine[0], theirs[0]], "add": add }), 404, "not_found"),
        (
            json!({ "users": mine, "filter": { "group": "g" }, "add": add }),
            422,
            "validation_failed",
        ),
        (json!({ "users": mine }), 422, "validation_failed"),
        (json!({ "users": [mine[0], mine[0]], "add": add }), 422, "validation_failed"),
        (
            json!({ "users": mine, "add": [{ "product": "no-such-product" }] }),
            422,
            "validation_failed",
        ),
        (json!({ "users": mine, "add": add, "colour": "blue" }), 422, "validation_failed"),
        (json!({ "filter": {}, "add": add }), 422, "validation_failed"),
        (
            json!({ "users": mine, "move": { "from_subscription": meetings_sub, "to_subscription": messaging_sub } }),
            422,
            "validation_failed",
        ),
        (
            json!({ "users": mine, "move": { "from_subscription": w.sub, "to_subscription": "sub_nope" } }),
            404,
            "not_found",
        ),
    ];
    for (body, status, code) in cases {
        let r = app.post(&path, &app.admin, body.clone()).await;
        assert_eq!((r.status.as_u16(), r.code()), (status, code), "{body}: {}", r.body);
    }
    // Unknown and other-tenant users get the same answer: nothing says which exist.
    let a = app
        .post(&path, &app.admin, json!({ "users": [mine[0], "usr_nobody"], "add": add }))
        .await;
    let b = app
        .post(&path, &app.admin, json!({ "users": [mine[0], theirs[0]], "add": add }))
        .await;
    assert_eq!(a.body["detail"], b.body["detail"]);
    assert!(!b.body.to_string().contains(&theirs[0]));
    let r = app
        .post(
            &path,
            &app.admin,
            json!({ "users": mine, "move": { "from_subscription": meetings_sub, "to_subscription": messaging_sub } }),
        )
        .await;
    assert!(
        r.body["detail"].as_str().unwrap().contains("stays within one product family"),
        "{}",
        r.body
    );
    assert_eq!(app.snapshot().await, before, "a refused job request wrote something");
    // Another tenant's job is 404 to an org-scoped token.
    let j = job(&app, &w.org, json!({ "users": mine, "add": add })).await;
    // Malformed result queries are refused with a problem document.
    for q in ["limit=abc", "format=xml", "cursor=nonsense"] {
        app.get(&format!("/api/v1/jobs/{}/results?{q}", j["id"].as_str().unwrap()), &app.admin)
            .await
            .problem(422, "validation_failed");
    }
    let outsider = app.token(allot_domain::access::Role::OrgAdmin, None, Some(&other_org)).await;
    let id = j["id"].as_str().unwrap();
    app.get(&format!("/api/v1/jobs/{id}"), &outsider).await.problem(404, "not_found");
    app.get(&format!("/api/v1/jobs/{id}/results"), &outsider)
        .await
        .problem(404, "not_found");
    app.post(&format!("/api/v1/jobs/{id}/cancel"), &outsider, json!({}))
        .await
        .problem(404, "not_found");
}

async fn summary_shows_all_some_none(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let users = many_users(&app, &w.org, "s", "example.com", 3, None).await;
    for u in &users[..2] {
        app.post(
            &format!("/api/v1/orgs/{}/users/{u}/licenses", w.org),
            &app.admin,
            json!({ "add": [{ "product": "meetings" }] }),
        )
        .await
        .ok();
    }
    app.post(
        &format!("/api/v1/orgs/{}/users/{}/licenses", w.org, users[0]),
        &app.admin,
        json!({ "add": [{ "product": "calling-professional" }] }),
    )
    .await
    .ok();
    let s = app
        .post(
            &format!("/api/v1/orgs/{}/license-summary", w.org),
            &app.admin,
            json!({ "users": users[..2] }),
        )
        .await
        .ok();
    let row = |p: &str| s["items"].as_array().unwrap().iter().find(|i| i["product"] == p).unwrap().clone();
    assert_eq!(row("meetings")["state"], "all");
    assert_eq!(row("meetings")["available"], 8);
    assert_eq!(row("calling-professional")["state"], "some");
    assert_eq!(row("calling-professional")["holders"], json!([users[0]]));
    assert_eq!(row("messaging")["state"], "none");
    app.post(
        &format!("/api/v1/orgs/{}/license-summary", w.org),
        &app.admin,
        json!({ "users": ["usr_x"] }),
    )
    .await
    .problem(404, "not_found");
}

async fn cancel_stops_between_chunks(backend: Backend) {
    let app = spawn(backend).await;
    let (org, sub) = messaging_org(&app, 40_000).await;
    let users = many_users(&app, &org, "c", "example.com", 30_000, None).await;
    let id = start_job(&app, &org, json!({ "users": users, "add": [{ "product": "messaging" }] })).await;
    // Cancel once the first chunk is done, so that the job stops between
    // chunks with some done (a cancel before the first would prove less).
    let chunk = allot_server::worker::CHUNK_USERS as i64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let j = app.get(&format!("/api/v1/jobs/{id}"), &app.admin).await.ok();
        if j["progress"]["done"].as_i64().unwrap_or(0) >= chunk {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the first chunk never finished: {j}");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let c = app.post(&format!("/api/v1/jobs/{id}/cancel"), &app.admin, json!({})).await;
    assert_eq!(c.status.as_u16(), 202, "the job ended before it could be cancelled: {}", c.body);
    let j = finished_job(&app, &id).await;
    assert_eq!(j["state"], "cancelled", "{j}");
    let done = j["progress"]["done"].as_i64().unwrap();
    assert!(
        done >= chunk && done < 30_000 && done % chunk == 0,
        "stopped between chunks, some done: {j}"
    );
    let s = app.get(&format!("/api/v1/orgs/{org}/subscriptions/{sub}"), &app.admin).await.ok();
    assert_eq!(s["items"][0]["consumed"], done, "the chunks done, and only they, took seats");
    let results = job_results(&app, &id).await;
    assert_eq!(results.len(), 30_000);
    assert_eq!(results.iter().filter(|r| r["outcome"] == "skipped").count() as i64, 30_000 - done);
    // The streamed CSV says the same, one line per user over all chunks.
    let csv = app.get(&format!("/api/v1/jobs/{id}/results?format=csv"), &app.admin).await;
    let text = csv.body.as_str().unwrap().to_string();
    assert_eq!(text.lines().count(), 30_001);
    assert_eq!(text.lines().filter(|l| l.contains(",skipped,")).count() as i64, 30_000 - done);
    let csv_users: std::collections::HashSet<&str> = text.lines().skip(1).filter_map(|l| l.split(',').next()).collect();
    assert_eq!(csv_users.len(), 30_000, "every user once");
    assert_eq!(app.mismatches().await, 0);
    // Cancelling an ended job is a conflict.
    app.post(&format!("/api/v1/jobs/{id}/cancel"), &app.admin, json!({}))
        .await
        .problem(409, "conflict");
}
