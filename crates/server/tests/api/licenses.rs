//! The atomic single-user licence change and the licences views.

use serde_json::json;

use crate::both_backends;
use crate::kit::*;

both_backends!(
    second_add_fails_nothing_applies,
    change_adds_removes_and_moves,
    automatic_choice_and_status,
    overview_and_user_delete
);

async fn second_add_fails_nothing_applies(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let u = user(&app, &w.org, "anna@example.com").await;
    let other = user(&app, &w.org, "erik@example.com").await;
    // messaging has one seat: give it away first.
    app.post(
        &format!("/api/v1/orgs/{}/users/{other}/licenses", w.org),
        &app.admin,
        json!({ "add": [{ "product": "messaging" }] }),
    )
    .await
    .ok();
    let before = app.snapshot().await;
    let r = app
        .post(
            &format!("/api/v1/orgs/{}/users/{u}/licenses", w.org),
            &app.admin,
            json!({ "add": [{ "product": "meetings" }, { "product": "messaging" }] }),
        )
        .await;
    r.problem(422, "seats_exhausted");
    assert!(r.body["detail"].as_str().unwrap().contains("anna@example.com"), "{}", r.body);
    assert_eq!(r.body["errors"][0]["product"], "messaging");
    assert_eq!(app.snapshot().await, before, "a refused change must write nothing");
    let mine = app
        .get(&format!("/api/v1/orgs/{}/users/{u}/licenses", w.org), &app.admin)
        .await
        .ok();
    assert_eq!(mine["items"], json!([]));
}

async fn change_adds_removes_and_moves(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let u = user(&app, &w.org, "anna@example.com").await;
    let path = format!("/api/v1/orgs/{}/users/{u}/licenses", w.org);
    let r = app
        .post(&path, &app.admin, json!({ "add": [{ "product": "calling-professional", "properties": { "extension": "1234", "phone_number": "+46701234567" } }, { "product": "meetings" }] }))
        .await
        .ok();
    assert_eq!(r["items"].as_array().unwrap().len(), 2);
    assert_eq!(r["items"][0]["product"], "calling-professional");
    assert_eq!(r["items"][0]["properties"]["extension"], "1234");
    assert_eq!(r["items"][0]["subscription"], w.sub);

    // Moving calling to a new subscription in one change keeps the family's service data.
    let sub_b = subscription(&app, &w.org, json!([{ "product": "calling-professional", "quantity": 5 }])).await;
    app.post(
        &path,
        &app.admin,
        json!({ "remove": [{ "product": "calling-professional", "subscription": w.sub }], "add": [{ "product": "calling-professional", "subscription": sub_b }] }),
    )
    .await
    .ok();
    let (stored, retain_until) = stored_service_data(&app, &w.org, &u, "calling")
        .await
        .expect("one service-data row");
    assert_eq!(stored["extension"], "1234");
    assert_eq!(stored["phone_number"], "+46701234567");
    assert_eq!(retain_until, None, "a move does not start retention");
    let a = app
        .get(&format!("/api/v1/orgs/{}/subscriptions/{}", w.org, w.sub), &app.admin)
        .await
        .ok();
    let b = app
        .get(&format!("/api/v1/orgs/{}/subscriptions/{sub_b}", w.org), &app.admin)
        .await
        .ok();
    assert_eq!(a["items"][0]["consumed"], 0);
    assert_eq!(b["items"][0]["consumed"], 1);
    let events = app
        .get(&format!("/api/v1/orgs/{}/audit-events?action=license.change", w.org), &app.admin)
        .await
        .ok();
    let last = events["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["after"]["moved_families"], json!(["calling"]));
    assert_eq!(last["target"], format!("user:{u}"));

    // Removing what the user does not hold: refused with not_assigned.
    app.post(&path, &app.admin, json!({ "remove": [{ "product": "messaging" }] }))
        .await
        .problem(422, "not_assigned");
    // Adding what the user holds: refused, naming where it comes from.
    let r = app.post(&path, &app.admin, json!({ "add": [{ "product": "meetings" }] })).await;
    r.problem(422, "already_assigned");
    // Removing releases the seat.
    app.post(&path, &app.admin, json!({ "remove": [{ "product": "meetings" }] }))
        .await
        .ok();
    let a = app
        .get(&format!("/api/v1/orgs/{}/subscriptions/{}", w.org, w.sub), &app.admin)
        .await
        .ok();
    assert_eq!(a["items"][1]["product"], "meetings");
    assert_eq!(a["items"][1]["consumed"], 0);
    assert_eq!(app.mismatches().await, 0);
}

async fn automatic_choice_and_status(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    // A second subscription ending later; suspend the first.
    let later = app
        .post(
            &format!("/api/v1/orgs/{}/subscriptions", w.org),
            &app.admin,
            json!({ "start_date": "2026-01-01", "end_date": "2028-01-01", "items": [{ "product": "meetings", "quantity": 3 }] }),
        )
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let u1 = user(&app, &w.org, "u1@example.com").await;
    let r = app
        .post(
            &format!("/api/v1/orgs/{}/users/{u1}/licenses", w.org),
            &app.admin,
            json!({ "add": [{ "product": "meetings" }] }),
        )
        .await
        .ok();
    assert_eq!(
        r["items"][0]["subscription"], w.sub,
        "the subscription that ends first is used first"
    );

    let s = app
        .patch(
            &format!("/api/v1/orgs/{}/subscriptions/{}", w.org, w.sub),
            &app.admin,
            json!({ "suspended": true }),
        )
        .await
        .ok();
    assert_eq!(s["status"], "suspended");
    let u2 = user(&app, &w.org, "u2@example.com").await;
    let r = app
        .post(
            &format!("/api/v1/orgs/{}/users/{u2}/licenses", w.org),
            &app.admin,
            json!({ "add": [{ "product": "meetings" }] }),
        )
        .await
        .ok();
    assert_eq!(r["items"][0]["subscription"], later);
    let r = app
        .post(
            &format!("/api/v1/orgs/{}/users/{u2}/licenses", w.org),
            &app.admin,
            json!({ "add": [{ "product": "calling-professional", "subscription": w.sub }] }),
        )
        .await;
    r.problem(422, "subscription_not_active");

    // Status is derived from the clock: move past the later end date.
    app.clock.set(day(2028, 1, 2));
    let s = app
        .get(&format!("/api/v1/orgs/{}/subscriptions/{later}", w.org), &app.admin)
        .await
        .ok();
    assert_eq!(s["status"], "expired");
    let u3 = user(&app, &w.org, "u3@example.com").await;
    app.post(
        &format!("/api/v1/orgs/{}/users/{u3}/licenses", w.org),
        &app.admin,
        json!({ "add": [{ "product": "meetings" }] }),
    )
    .await
    .problem(422, "subscription_not_active");

    // A service not provisioned yet cannot be assigned.
    app.clock.set(today());
    app.patch(
        &format!("/api/v1/orgs/{}/subscriptions/{later}", w.org),
        &app.admin,
        json!({ "items": [{ "product": "meetings", "provisioning_status": "awaiting_details" }] }),
    )
    .await
    .ok();
    app.post(
        &format!("/api/v1/orgs/{}/users/{u3}/licenses", w.org),
        &app.admin,
        json!({ "add": [{ "product": "meetings", "subscription": later }] }),
    )
    .await
    .problem(422, "service_not_provisioned");
}

async fn overview_and_user_delete(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let u = user(&app, &w.org, "anna@example.com").await;
    app.post(
        &format!("/api/v1/orgs/{}/users/{u}/licenses", w.org),
        &app.admin,
        json!({ "add": [{ "product": "meetings" }, { "product": "messaging" }] }),
    )
    .await
    .ok();
    let o = app.get(&format!("/api/v1/orgs/{}/licenses", w.org), &app.admin).await.ok();
    let rows = o["items"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let meetings = rows.iter().find(|r| r["product"] == "meetings").unwrap();
    assert_eq!(
        (
            meetings["total"].as_i64(),
            meetings["consumed"].as_i64(),
            meetings["available"].as_i64()
        ),
        (Some(10), Some(1), Some(9))
    );
    assert_eq!(meetings["features"], json!(["meetings"]));
    assert_eq!(meetings["subscription"], w.sub);

    let r = app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/orgs/{}/users/{u}", w.org),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(r.status.as_u16(), 204);
    let o = app.get(&format!("/api/v1/orgs/{}/licenses", w.org), &app.admin).await.ok();
    assert!(!o["items"].as_array().unwrap().is_empty(), "{o}");
    assert!(o["items"].as_array().unwrap().iter().all(|r| r["consumed"] == 0), "{o}");
    app.get(&format!("/api/v1/orgs/{}/users/{u}", w.org), &app.admin)
        .await
        .problem(404, "not_found");
    assert_eq!(app.mismatches().await, 0);
}
