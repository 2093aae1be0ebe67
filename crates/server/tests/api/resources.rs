//! Catalogue, partners, orgs, subscriptions, users: the plain resources, the
//! OpenAPI document and pagination.

use serde_json::json;

use crate::both_backends;
use crate::kit::*;

both_backends!(resources_round_trip, status_follows_the_clock);

#[tokio::test]
async fn health_and_openapi() {
    let app = spawn(Backend::Sqlite).await;
    let r = app.call(reqwest::Method::GET, "/healthz", None, None).await.ok();
    assert_eq!(r, json!({ "status": "ok" }));
    let doc = app.call(reqwest::Method::GET, "/api/openapi.json", None, None).await.ok();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/products", "post"),
        ("/api/v1/products/{code}", "patch"),
        ("/api/v1/partners/{partner}", "get"),
        ("/api/v1/orgs/{org}", "patch"),
        ("/api/v1/orgs/{org}/subscriptions/{sub}", "patch"),
        ("/api/v1/orgs/{org}/licenses", "get"),
        ("/api/v1/orgs/{org}/users/{user}", "delete"),
        ("/api/v1/orgs/{org}/users/{user}/licenses", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    // Every documented operation is served (not a 404 from the fallback),
    // and ids that do not exist never make it fail (no 5xx).
    let mut checked = 0;
    for (path, ops) in paths {
        let mut concrete = String::new();
        let mut in_param = false;
        for ch in path.chars() {
            match ch {
                '{' => in_param = true,
                '}' => {
                    in_param = false;
                    concrete.push_str("nope");
                }
                c if !in_param => concrete.push(c),
                _ => {}
            }
        }
        for method in ops.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = app.call(m, &concrete, Some(&app.admin), Some(json!({}))).await;
            assert!(
                !(r.status.as_u16() == 404 && r.body["detail"] == "That path was not found."),
                "{method} {path} is documented but not served"
            );
            assert!(r.status.as_u16() < 500, "{method} {concrete} answered {}: {}", r.status, r.body);
            checked += 1;
        }
    }
    assert!(checked >= 60, "only {checked} operations documented");
}

async fn resources_round_trip(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let p = app.get("/api/v1/products/calling-professional", &app.admin).await.ok();
    assert_eq!(p["family"], "calling");
    let p = app
        .patch(
            "/api/v1/products/calling-professional",
            &app.admin,
            json!({ "name": "Calling Pro", "retention_days": 7 }),
        )
        .await
        .ok();
    assert_eq!((p["name"].as_str(), p["retention_days"].as_i64()), (Some("Calling Pro"), Some(7)));

    let o = app
        .patch(
            &format!("/api/v1/orgs/{}", w.org),
            &app.admin,
            json!({ "default_usage_location": "SE", "payment_method_on_file": true }),
        )
        .await
        .ok();
    assert_eq!(
        (o["default_usage_location"].as_str(), o["payment_method_on_file"].as_bool()),
        (Some("SE"), Some(true))
    );
    let o = app
        .patch(
            &format!("/api/v1/orgs/{}", w.org),
            &app.admin,
            json!({ "default_usage_location": null }),
        )
        .await
        .ok();
    assert!(o["default_usage_location"].is_null());

    let site = app
        .post(
            &format!("/api/v1/orgs/{}/sites", w.org),
            &app.admin,
            json!({ "url": "https://a.meetings.example", "attendee_accounts_enabled": true }),
        )
        .await
        .ok();
    let group = app
        .post(&format!("/api/v1/orgs/{}/groups", w.org), &app.admin, json!({ "name": "Sales" }))
        .await
        .ok();
    let u = app
        .post(
            &format!("/api/v1/orgs/{}/users", w.org),
            &app.admin,
            json!({ "email": "Guest@Other.example", "kind": "external", "site_admin_of": [site["id"]], "groups": [group["id"]], "usage_location": "NL" }),
        )
        .await
        .ok();
    assert_eq!(u["status"], "pending", "external users are pending until they accept");
    assert_eq!(u["site_admin_of"], json!([site["id"]]));
    assert_eq!(u["groups"], json!([group["id"]]));
    let uid = u["id"].as_str().unwrap();
    let u = app
        .patch(
            &format!("/api/v1/orgs/{}/users/{uid}", w.org),
            &app.admin,
            json!({ "status": "active", "display_name": "Gästen", "groups": [] }),
        )
        .await
        .ok();
    assert_eq!(
        (u["status"].as_str(), u["display_name"].as_str(), u["groups"].clone()),
        (Some("active"), Some("Gästen"), json!([]))
    );
    let found = app
        .get(&format!("/api/v1/orgs/{}/users?email=guest@other.example", w.org), &app.admin)
        .await
        .ok();
    assert_eq!(found["items"][0]["id"], uid);
    let found = app.get(&format!("/api/v1/orgs/{}/users?q=g%C3%A4st", w.org), &app.admin).await.ok();
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    // The external users list shows external users who hold a licence.
    let found = app
        .get(&format!("/api/v1/orgs/{}/users?kind=external&q=g%C3%A4st", w.org), &app.admin)
        .await
        .ok();
    assert_eq!(found["items"].as_array().unwrap().len(), 0);

    // Pagination: 5 users, pages of 2, each user once.
    for i in 0..4 {
        user(&app, &w.org, &format!("p{i}@example.com")).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let page = app.get(&format!("/api/v1/orgs/{}/users?limit=2{q}", w.org), &app.admin).await.ok();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|u| u["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (5, 5));

    // Every mutation above is in the audit log with its actor.
    let events = app
        .get(&format!("/api/v1/orgs/{}/audit-events?limit=1000", w.org), &app.admin)
        .await
        .ok();
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "org.create",
        "subscription.create",
        "org.update",
        "site.create",
        "group.create",
        "user.create",
        "user.update",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    assert!(events["items"][0]["actor"].as_str().unwrap().starts_with("token:"));
    assert!(events["items"][0]["request_id"].as_str().is_some());
}

async fn status_follows_the_clock(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let trial = app
        .post(
            &format!("/api/v1/orgs/{}/subscriptions", w.org),
            &app.admin,
            json!({ "trial": true, "start_date": "2026-06-01", "end_date": "2026-09-01" }),
        )
        .await
        .ok();
    let tid = trial["id"].as_str().unwrap();
    let table = [
        (day(2026, 6, 15), "trial_active", "active"),
        (day(2026, 7, 2), "trial_active", "active"),
        (day(2026, 7, 3), "trial_expiring_60d", "active"),
        (day(2026, 8, 1), "trial_expiring_60d", "active"),
        (day(2026, 8, 2), "trial_expiring_30d", "active"),
        (day(2026, 8, 31), "trial_expiring_30d", "active"),
        (day(2026, 9, 1), "trial_expired", "active"),
        (day(2026, 11, 1), "trial_expired", "active"),
        (day(2026, 11, 2), "trial_expired", "expiring_60d"),
        (day(2026, 12, 1), "trial_expired", "expiring_60d"),
        (day(2026, 12, 2), "trial_expired", "expiring_30d"),
        (day(2027, 1, 1), "trial_expired", "expired"),
    ];
    for (at, trial_status, paid_status) in table {
        app.clock.set(at);
        let t = app
            .get(&format!("/api/v1/orgs/{}/subscriptions/{tid}", w.org), &app.admin)
            .await
            .ok();
        let p = app
            .get(&format!("/api/v1/orgs/{}/subscriptions/{}", w.org, w.sub), &app.admin)
            .await
            .ok();
        assert_eq!(
            (t["status"].as_str(), p["status"].as_str()),
            (Some(trial_status), Some(paid_status)),
            "at {at}"
        );
    }
}
