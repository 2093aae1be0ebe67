//! Bad input gets a clear error and changes nothing.

use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::kit::*;

both_backends!(bad_input_changes_nothing, idempotency_keys);

async fn bad_input_changes_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let u = user(&app, &w.org, "anna@example.com").await;
    let lic = format!("/api/v1/orgs/{}/users/{u}/licenses", w.org);
    let users = format!("/api/v1/orgs/{}/users", w.org);
    let subs = format!("/api/v1/orgs/{}/subscriptions", w.org);
    let before = app.snapshot().await;

    // Malformed JSON (400) and wrong content types (415).
    let r = app
        .raw(Method::POST, &lic, &app.admin, "application/json", b"{\"add\": [".to_vec())
        .await;
    r.problem(400, "malformed_json");
    assert!(r.body["detail"].as_str().unwrap().contains("not valid JSON"), "{}", r.body);
    app.raw(Method::POST, &users, &app.admin, "text/plain", b"{}".to_vec())
        .await
        .problem(415, "unsupported_media_type");
    // Wrong types and unknown fields.
    app.post(&lic, &app.admin, json!({ "add": "meetings" }))
        .await
        .problem(422, "validation_failed");
    app.post(&lic, &app.admin, json!({ "add": [{ "product": 7 }] }))
        .await
        .problem(422, "validation_failed");
    let r = app
        .post(&lic, &app.admin, json!({ "add": [{ "product": "meetings", "seats": 2 }] }))
        .await;
    r.problem(422, "validation_failed");
    assert!(
        r.body["detail"].as_str().unwrap().contains("seats"),
        "names the unknown field: {}",
        r.body
    );
    app.post(&lic, &app.admin, json!({})).await.problem(422, "validation_failed");
    // Unknown product, unknown subscription, product code that cannot exist.
    let r = app.post(&lic, &app.admin, json!({ "add": [{ "product": "teleportation" }] })).await;
    r.problem(422, "validation_failed");
    assert!(
        r.body["errors"][0]["message"].as_str().unwrap().contains("teleportation"),
        "{}",
        r.body
    );
    app.post(
        &lic,
        &app.admin,
        json!({ "add": [{ "product": "meetings", "subscription": "sub_nope" }] }),
    )
    .await
    .problem(422, "validation_failed");
    app.post(&lic, &app.admin, json!({ "add": [{ "product": "Not A Code" }] }))
        .await
        .problem(422, "validation_failed");
    // Every reason at once.
    let r = app
        .post(
            &lic,
            &app.admin,
            json!({ "add": [{ "product": "teleportation" }], "remove": [{ "product": "meetings" }] }),
        )
        .await;
    assert_eq!(r.body["errors"].as_array().unwrap().len(), 2, "{}", r.body);
    // Bad emails, a taken email (case-insensitively), bad usage locations.
    for bad in ["", "anna", "anna@", "a b@example.com", "anna@example"] {
        let r = app.post(&users, &app.admin, json!({ "email": bad })).await;
        r.problem(422, "validation_failed");
        assert!(r.body["detail"].as_str().unwrap().contains("email"), "{}", r.body);
    }
    app.post(&users, &app.admin, json!({ "email": "ANNA@example.com" }))
        .await
        .problem(409, "email_taken");
    app.post(
        &users,
        &app.admin,
        json!({ "email": "new@example.com", "usage_location": "Sweden" }),
    )
    .await
    .problem(422, "validation_failed");
    app.post(&users, &app.admin, json!({ "email": "new@example.com", "kind": "robot" }))
        .await
        .problem(422, "validation_failed");
    app.post(
        &users,
        &app.admin,
        json!({ "email": "new@example.com", "site_admin_of": ["site_nope"] }),
    )
    .await
    .problem(422, "validation_failed");
    // Negative and absurd quantities, dates the wrong way round, unknown products in items.
    for q in [json!(-1), json!(10_000_001), json!(1e20), json!("ten")] {
        app.post(
            &subs,
            &app.admin,
            json!({ "start_date": "2026-01-01", "end_date": "2027-01-01", "items": [{ "product": "meetings", "quantity": q }] }),
        )
        .await
        .problem(422, "validation_failed");
    }
    app.post(&subs, &app.admin, json!({ "start_date": "2027-01-01", "end_date": "2026-01-01" }))
        .await
        .problem(422, "validation_failed");
    app.post(&subs, &app.admin, json!({ "start_date": "2026-13-01", "end_date": "2027-01-01" }))
        .await
        .problem(422, "validation_failed");
    app.post(
        &subs,
        &app.admin,
        json!({ "start_date": "2026-01-01", "end_date": "2027-01-01", "items": [{ "product": "nope", "quantity": 1 }] }),
    )
    .await
    .problem(422, "validation_failed");
    // Lists as long as a body can hold (40,000 products, more than SQLite
    // binds as separate parameters) are checked in one statement and
    // refused by name, not failed by the database.
    let many: Vec<Value> = (0..40_000).map(|i| json!({ "product": format!("p{i}") })).collect();
    let r = app
        .post(
            &subs,
            &app.admin,
            json!({ "start_date": "2026-01-01", "end_date": "2027-01-01", "items": many }),
        )
        .await;
    r.problem(422, "validation_failed");
    assert!(r.body["detail"].as_str().unwrap().contains("p0 is not a product"), "{}", r.body);
    let r = app.post(&lic, &app.admin, json!({ "add": many })).await;
    r.problem(422, "validation_failed");
    assert_eq!(r.body["errors"].as_array().map(Vec::len), Some(40_000), "every reason is listed");
    assert_eq!(app.snapshot().await, before, "refused calls must change nothing");
    // Lowering a quantity below the seats in use.
    let other = user(&app, &w.org, "erik@example.com").await;
    app.post(
        &format!("/api/v1/orgs/{}/users/{other}/licenses", w.org),
        &app.admin,
        json!({ "add": [{ "product": "messaging" }] }),
    )
    .await
    .ok();
    let before = app.snapshot().await;
    let r = app
        .patch(
            &format!("{subs}/{}", w.sub),
            &app.admin,
            json!({ "items": [{ "product": "messaging", "quantity": 0 }] }),
        )
        .await;
    r.problem(422, "validation_failed");
    assert!(r.body["detail"].as_str().unwrap().contains("1 seats"), "{}", r.body);
    // Catalogue: a rule naming a product that does not exist; bad codes; absurd retention.
    app.post(
        "/api/v1/products",
        &app.admin,
        json!({ "code": "a", "name": "A", "family": "x", "rules": { "requires": ["ghost"] } }),
    )
    .await
    .problem(422, "validation_failed");
    app.post("/api/v1/products", &app.admin, json!({ "code": "A B", "name": "A", "family": "x" }))
        .await
        .problem(422, "validation_failed");
    app.post(
        "/api/v1/products",
        &app.admin,
        json!({ "code": "a", "name": "A", "family": "x", "retention_days": 100000 }),
    )
    .await
    .problem(422, "validation_failed");
    app.post(
        "/api/v1/products",
        &app.admin,
        json!({ "code": "meetings", "name": "Again", "family": "meetings" }),
    )
    .await
    .problem(409, "conflict");
    app.patch(
        "/api/v1/products/meetings",
        &app.admin,
        json!({ "rules": { "excludes": ["ghost"] } }),
    )
    .await
    .problem(422, "validation_failed");
    // Paging parameters.
    app.get(&format!("{users}?limit=0"), &app.admin)
        .await
        .problem(422, "validation_failed");
    app.get(&format!("{users}?limit=5000"), &app.admin)
        .await
        .problem(422, "validation_failed");
    app.get(&format!("{users}?limit=abc"), &app.admin)
        .await
        .problem(422, "validation_failed");
    app.get(&format!("{users}?cursor=%27;DROP"), &app.admin)
        .await
        .problem(422, "validation_failed");
    // Oversized bodies: 413 with the limit stated.
    let huge = format!("{{\"email\": \"{}@example.com\"}}", "a".repeat(2 * 1024 * 1024));
    let r = app
        .raw(Method::POST, &users, &app.admin, "application/json", huge.into_bytes())
        .await;
    r.problem(413, "payload_too_large");
    assert!(r.body["detail"].as_str().unwrap().contains("1048576"), "{}", r.body);
    // Unknown paths and ids.
    app.get("/api/v1/nothing-here", &app.admin).await.problem(404, "not_found");
    app.get(&format!("{users}/usr_nope"), &app.admin).await.problem(404, "not_found");
    app.post(
        &format!("{users}/usr_nope/licenses"),
        &app.admin,
        json!({ "add": [{ "product": "meetings" }] }),
    )
    .await
    .problem(404, "not_found");
    app.get("/api/v1/products/nope", &app.admin).await.problem(404, "not_found");
    assert_eq!(app.snapshot().await, before, "refused calls must change nothing");
}

async fn idempotency_keys(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let users = format!("{}/api/v1/orgs/{}/users", app.url, w.org);
    let send = |key: &str, email: &str| {
        app.client
            .post(&users)
            .bearer_auth(&app.admin)
            .header("idempotency-key", key.to_string())
            .json(&json!({ "email": email }))
            .send()
    };
    let first = send("k1", "anna@example.com").await.unwrap();
    assert_eq!(first.status().as_u16(), 201);
    let first_body: serde_json::Value = first.json().await.unwrap();
    let again = send("k1", "anna@example.com").await.unwrap();
    assert_eq!(again.status().as_u16(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.json::<serde_json::Value>().await.unwrap(),
        first_body,
        "the replay is the first answer"
    );
    let list = app.get(&format!("/api/v1/orgs/{}/users", w.org), &app.admin).await.ok();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "one user, not two");
    let other = send("k1", "erik@example.com").await.unwrap();
    assert_eq!(other.status().as_u16(), 422);
    assert_eq!(other.json::<serde_json::Value>().await.unwrap()["code"], "idempotency_key_reused");
    let long = send(&"k".repeat(256), "erik@example.com").await.unwrap();
    assert_eq!(long.status().as_u16(), 422);
    // Another token's key space is separate.
    let org_admin = app.token(allot_domain::access::Role::OrgAdmin, None, Some(&w.org)).await;
    let r = app
        .client
        .post(&users)
        .bearer_auth(&org_admin)
        .header("idempotency-key", "k1")
        .json(&json!({ "email": "erik@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}
