//! Small defects found by trying to break the API, each with its test:
//! LIKE wildcards in a domain filter, a NUL in `q=`, a purchase past the
//! seat maximum, a forged request id, control characters in names, a
//! made-up cancel target, and an out-of-range results page.

use reqwest::Method;
use serde_json::json;

use allot_domain::access::Role;

use crate::both_backends;
use crate::kit::*;

both_backends!(
    email_domain_filters_match_the_domain_exactly,
    search_text_with_a_nul_is_refused,
    fulfilling_a_purchase_never_passes_the_seat_maximum,
    client_request_ids_cannot_pose_as_allots_own,
    names_refuse_control_and_direction_characters,
    cancel_targets_are_checked_even_when_nobody_moves,
    job_result_pages_out_of_range_are_refused,
);

async fn email_domain_filters_match_the_domain_exactly(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    for email in ["a@example.com", "b@exbmple.com", "c@sub.example.com", "d@example.com.evil"] {
        user(&app, &w.org, email).await;
    }
    let before = app.snapshot().await;
    for hostile in ["%.%", "%", "ex_mple.com", "example.com%", "exa\\mple.com"] {
        let r = app
            .post(
                &format!("/api/v1/orgs/{}/license-jobs", w.org),
                &app.admin,
                json!({ "filter": { "email_domain": hostile }, "add": [{ "product": "meetings" }], "dry_run": true }),
            )
            .await;
        r.problem(422, "validation_failed");
        assert_eq!(r.body["errors"][0]["field"], "filter.email_domain", "{}", r.body);
    }
    assert_eq!(app.snapshot().await, before);
    let id = start_job(
        &app,
        &w.org,
        json!({ "filter": { "email_domain": "EXAMPLE.com" }, "add": [{ "product": "meetings" }], "dry_run": true }),
    )
    .await;
    let j = finished_job(&app, &id).await;
    assert_eq!(j["progress"]["total"], 1, "only a@example.com: {j}");
    let results = job_results(&app, &id).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["email"], "a@example.com", "{results:?}");
}

async fn search_text_with_a_nul_is_refused(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    user(&app, &w.org, "anna@example.com").await;
    user(&app, &w.org, "bo@example.com").await;
    for q in ["q=%00", "q=x%00y", "email=a%00b@example.com", "q=%E2%80%AE"] {
        app.get(&format!("/api/v1/orgs/{}/users?{q}", w.org), &app.admin)
            .await
            .problem(422, "validation_failed");
    }
    app.get("/api/v1/customers?q=%00", &app.admin)
        .await
        .problem(422, "validation_failed");
    let found = app.get(&format!("/api/v1/orgs/{}/users?q=anna", w.org), &app.admin).await.ok();
    assert_eq!(found["items"].as_array().expect("items").len(), 1);
}

async fn fulfilling_a_purchase_never_passes_the_seat_maximum(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    app.patch(
        &format!("/api/v1/orgs/{}", w.org),
        &app.admin,
        json!({ "payment_method_on_file": true, "self_service_purchase": true }),
    )
    .await
    .ok();
    // The item is at the maximum less 5; a purchase of 10 may be asked for
    // but not fulfilled.
    app.patch(
        &format!("/api/v1/orgs/{}/subscriptions/{}", w.org, w.sub),
        &app.admin,
        json!({ "items": [{ "product": "meetings", "quantity": 9_999_995 }] }),
    )
    .await;
    let mut tx = app.store.begin().await.expect("begin");
    tx.exec(
        "UPDATE subscription_items SET quantity = 9999995 WHERE org_id = $1 AND product = 'meetings'",
        allot_store::args![w.org.as_str()],
    )
    .await
    .expect("set quantity");
    tx.commit().await.expect("commit");
    let super_admin = app.token(Role::OrgSuperAdmin, None, Some(&w.org)).await;
    let asked = app
        .post(
            &format!("/api/v1/orgs/{}/purchase-requests", w.org),
            &super_admin,
            json!({ "product": "meetings", "quantity": 10, "subscription": w.sub }),
        )
        .await;
    assert_eq!(asked.status.as_u16(), 201, "{}", asked.body);
    let id = asked.body["id"].as_str().expect("id");
    let before = app.snapshot().await;
    let r = app
        .post(
            &format!("/api/v1/orgs/{}/purchase-requests/{id}/fulfil", w.org),
            &app.admin,
            json!({}),
        )
        .await;
    r.problem(422, "validation_failed");
    assert!(r.body["detail"].as_str().unwrap_or("").contains("maximum"), "{}", r.body);
    assert_eq!(app.snapshot().await, before, "a refused fulfilment changes nothing");
}

async fn client_request_ids_cannot_pose_as_allots_own(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let send = |id: &'static str, email: &'static str| {
        app.client
            .post(format!("{}/api/v1/orgs/{}/users", app.url, w.org))
            .bearer_auth(&app.admin)
            .header("x-request-id", id)
            .json(&json!({ "email": email }))
            .send()
    };
    assert_eq!(send("job:job_0123", "a@example.com").await.expect("send").status().as_u16(), 201);
    assert_eq!(send("req_0123ABC", "b@example.com").await.expect("send").status().as_u16(), 201);
    assert_eq!(send("client-trace.42", "c@example.com").await.expect("send").status().as_u16(), 201);
    let events = app
        .get(&format!("/api/v1/orgs/{}/audit-events?action=user.create", w.org), &app.admin)
        .await
        .ok();
    let ids: Vec<&str> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["request_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 3, "{events}");
    assert!(!ids.contains(&"job:job_0123") && !ids.contains(&"req_0123ABC"), "{ids:?}");
    assert!(ids.contains(&"client-trace.42"), "a sane client id is kept: {ids:?}");
}

async fn names_refuse_control_and_direction_characters(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let before = app.snapshot().await;
    for bad in ["nul\u{0}name", "tab\tname", "line\nbreak", "evil\u{202E}gnp.exe", "iso\u{2066}late"] {
        app.post("/api/v1/orgs", &app.admin, json!({ "name": bad }))
            .await
            .problem(422, "validation_failed");
        app.post("/api/v1/partners", &app.admin, json!({ "name": bad }))
            .await
            .problem(422, "validation_failed");
        app.post(
            &format!("/api/v1/orgs/{}/users", w.org),
            &app.admin,
            json!({ "email": "x@example.com", "display_name": bad }),
        )
        .await
        .problem(422, "validation_failed");
        app.post(&format!("/api/v1/orgs/{}/groups", w.org), &app.admin, json!({ "name": bad }))
            .await
            .problem(422, "validation_failed");
    }
    for bad in ["a\u{0}b@example.com", "a\u{202E}b@example.com"] {
        app.post(&format!("/api/v1/orgs/{}/users", w.org), &app.admin, json!({ "email": bad }))
            .await
            .problem(422, "validation_failed");
    }
    let csv = "email,display_name\nz@example.com,Zed\u{0}Zed\n";
    let r = app
        .raw(
            Method::POST,
            &format!("/api/v1/orgs/{}/imports", w.org),
            &app.admin,
            "text/csv",
            csv.as_bytes().to_vec(),
        )
        .await;
    r.problem(422, "csv_row_invalid");
    assert_eq!(app.snapshot().await, before);
    // Letters of every script are welcome.
    app.post("/api/v1/orgs", &app.admin, json!({ "name": "Åsa & Søn — 株式会社 مرحبا" }))
        .await
        .ok();
}

async fn cancel_targets_are_checked_even_when_nobody_moves(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let empty = subscription(&app, &w.org, json!([{ "product": "meetings", "quantity": 5 }])).await;
    let before = app.snapshot().await;
    app.post(
        &format!("/api/v1/orgs/{}/subscriptions/{empty}/cancel", w.org),
        &app.admin,
        json!({ "move_users_to": "sub_made_up" }),
    )
    .await
    .problem(404, "not_found");
    assert_eq!(app.snapshot().await, before, "nothing was cancelled");
    let r = app
        .post(
            &format!("/api/v1/orgs/{}/subscriptions/{empty}/cancel", w.org),
            &app.admin,
            json!({ "move_users_to": w.sub }),
        )
        .await
        .ok();
    assert_eq!(r["cancelled"], true, "{r}");
}

async fn job_result_pages_out_of_range_are_refused(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let users = many_users(&app, &w.org, "page", "page.example", 3, None).await;
    let id = start_job(&app, &w.org, json!({ "users": users, "add": [{ "product": "meetings" }] })).await;
    finished_job(&app, &id).await;
    for limit in ["0", "-1", "10001", "999999999"] {
        app.get(&format!("/api/v1/jobs/{id}/results?limit={limit}"), &app.admin)
            .await
            .problem(422, "validation_failed");
    }
    let page = app.get(&format!("/api/v1/jobs/{id}/results?limit=2"), &app.admin).await.ok();
    assert_eq!(page["items"].as_array().expect("items").len(), 2);
    assert!(page["next_cursor"].is_string());
}
