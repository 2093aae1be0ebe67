//! The provider's and partner's side: purchase requests
//! and finishing a service's provisioning.

use serde_json::json;

use allot_domain::access::Role;

use crate::both_backends;
use crate::kit::*;

both_backends!(
    purchase_requests_follow_the_rules,
    awaiting_details_is_completed_by_the_org,
    statuses_follow_the_clock_across_every_boundary
);

async fn purchase_requests_follow_the_rules(backend: Backend) {
    let app = spawn(backend).await;
    product(&app, "meetings", "meetings").await;
    let partner = app.post("/api/v1/partners", &app.admin, json!({ "name": "Reseller" })).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other_partner = app.post("/api/v1/partners", &app.admin, json!({ "name": "Other" })).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let o = org(&app, "Buyer AB", Some(&partner)).await;
    let sub = subscription(&app, &o, json!([{ "product": "meetings", "quantity": 1 }])).await;
    let u = user(&app, &o, "u@buyer.example").await;
    app.post(
        &format!("/api/v1/orgs/{o}/users/{u}/licenses"),
        &app.admin,
        json!({ "add": [{ "product": "meetings" }] }),
    )
    .await
    .ok();
    let super_admin = app.token(Role::OrgSuperAdmin, None, Some(&o)).await;
    let org_admin = app.token(Role::OrgAdmin, None, Some(&o)).await;
    let partner_admin = app.token(Role::PartnerAdmin, Some(&partner), None).await;
    let sales = app.token(Role::PartnerSales, Some(&partner), None).await;
    let stranger = app.token(Role::PartnerAdmin, Some(&other_partner), None).await;
    let path = format!("/api/v1/orgs/{o}/purchase-requests");
    let ask = json!({ "product": "meetings", "quantity": 5, "subscription": sub });
    // The overview says where to buy more when no seat is free.
    let overview = app.get(&format!("/api/v1/orgs/{o}/licenses"), &super_admin).await.ok();
    assert_eq!(overview["items"][0]["available"], 0);
    assert_eq!(overview["items"][0]["buy_more"]["purchase_request"], false, "{overview}");
    assert_eq!(overview["items"][0]["buy_more"]["contact"], "your partner Reseller");
    // No payment method: 403 saying whom to contact. Not a super admin: 403.
    let state = app.snapshot().await;
    let r = app.post(&path, &super_admin, ask.clone()).await;
    r.problem(403, "payment_method_required");
    assert!(r.body["detail"].as_str().unwrap().contains("your partner Reseller"), "{}", r.body);
    app.patch(&format!("/api/v1/orgs/{o}"), &app.admin, json!({ "payment_method_on_file": true }))
        .await
        .ok();
    let state_paid = app.snapshot().await;
    for t in [&org_admin, &partner_admin, &sales] {
        app.post(&path, t, ask.clone()).await.problem(403, "forbidden");
    }
    app.post(&path, &stranger, ask.clone()).await.problem(404, "not_found");
    for (body, code) in [
        (json!({ "product": "meetings", "quantity": 0 }), "validation_failed"),
        (json!({ "product": "nope", "quantity": 1 }), "validation_failed"),
        (
            json!({ "product": "meetings", "quantity": 1, "colour": "red" }),
            "validation_failed",
        ),
    ] {
        app.post(&path, &super_admin, body).await.problem(422, code);
    }
    app.post(
        &path,
        &super_admin,
        json!({ "product": "meetings", "quantity": 1, "subscription": "sub_nope" }),
    )
    .await
    .problem(404, "not_found");
    assert_eq!(app.snapshot().await, state_paid, "refused requests change nothing");
    assert_ne!(state, state_paid);
    let overview = app.get(&format!("/api/v1/orgs/{o}/licenses"), &super_admin).await.ok();
    assert_eq!(overview["items"][0]["buy_more"]["purchase_request"], true, "{overview}");
    // Requested, then fulfilled by the partner's sales agent: the quantity grows.
    let r = app.post(&path, &super_admin, ask.clone()).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    assert_eq!(r.body["state"], "pending");
    let id = r.body["id"].as_str().unwrap().to_string();
    app.post(&format!("{path}/{id}/fulfil"), &super_admin, json!({}))
        .await
        .problem(403, "forbidden");
    app.post(&format!("{path}/{id}/fulfil"), &stranger, json!({}))
        .await
        .problem(404, "not_found");
    let f = app.post(&format!("{path}/{id}/fulfil"), &sales, json!({})).await.ok();
    assert_eq!(f["state"], "fulfilled");
    assert_eq!(f["fulfilled_subscription"], sub.as_str());
    assert!(f["decided_by"].as_str().unwrap().starts_with("token:"));
    assert!(f["decided_at"].is_string());
    let s = app.get(&format!("/api/v1/orgs/{o}/subscriptions/{sub}"), &app.admin).await.ok();
    assert_eq!(
        (s["items"][0]["quantity"].as_i64(), s["items"][0]["available"].as_i64()),
        (Some(6), Some(5))
    );
    app.post(&format!("{path}/{id}/fulfil"), &sales, json!({}))
        .await
        .problem(409, "conflict");
    app.post(&format!("{path}/{id}/reject"), &sales, json!({}))
        .await
        .problem(409, "conflict");
    // Without a subscription named: the one carrying the product, or the decider names one.
    let second = subscription(&app, &o, json!([{ "product": "meetings", "quantity": 1 }])).await;
    let id2 = app
        .post(&path, &super_admin, json!({ "product": "meetings", "quantity": 2 }))
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.post(&format!("{path}/{id2}/fulfil"), &partner_admin, json!({}))
        .await
        .problem(422, "validation_failed");
    let f = app
        .post(&format!("{path}/{id2}/fulfil"), &partner_admin, json!({ "subscription": second }))
        .await
        .ok();
    assert_eq!(f["fulfilled_subscription"], second.as_str());
    // Rejected with a reason.
    let id3 = app.post(&path, &super_admin, ask.clone()).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .post(
            &format!("{path}/{id3}/reject"),
            &partner_admin,
            json!({ "reason": "Budget freeze" }),
        )
        .await
        .ok();
    assert_eq!(
        (r["state"].as_str(), r["reason"].as_str()),
        (Some("rejected"), Some("Budget freeze"))
    );
    let list = app.get(&path, &org_admin).await.ok();
    let states: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.len(), 3);
    assert!(states.contains(&"fulfilled") && states.contains(&"rejected"));
    // Self-service off: the answer says whom to contact.
    app.patch(&format!("/api/v1/orgs/{o}"), &app.admin, json!({ "self_service_purchase": false }))
        .await
        .ok();
    let r = app.post(&path, &super_admin, ask).await;
    r.problem(403, "self_service_purchase_disabled");
    assert!(r.body["detail"].as_str().unwrap().contains("your partner Reseller"));
    for action in ["purchase.request", "purchase.fulfil", "purchase.reject"] {
        assert!(!crate::moves::audit_events(&app, &o, action).await.is_empty(), "{action}");
    }
}

async fn awaiting_details_is_completed_by_the_org(backend: Backend) {
    let app = spawn(backend).await;
    product(&app, "meetings", "meetings").await;
    let o = org(&app, "Setup AB", None).await;
    let sub = subscription(
        &app,
        &o,
        json!([{ "product": "meetings", "quantity": 3, "provisioning_status": "awaiting_details" }]),
    )
    .await;
    let u = user(&app, &o, "u@setup.example").await;
    let lic = format!("/api/v1/orgs/{o}/users/{u}/licenses");
    app.post(&lic, &app.admin, json!({ "add": [{ "product": "meetings" }] }))
        .await
        .problem(422, "service_not_provisioned");
    let admin = app.token(Role::OrgAdmin, None, Some(&o)).await;
    let readonly = app.token(Role::OrgReadOnly, None, Some(&o)).await;
    let path = format!("/api/v1/orgs/{o}/subscriptions/{sub}/items/meetings/provisioning-details");
    let details = json!({ "details": { "site_url": "setup.example.com" } });
    let state = app.snapshot().await;
    app.post(&path, &readonly, details.clone()).await.problem(403, "forbidden");
    app.post(&path, &admin, json!({ "details": {} }))
        .await
        .problem(422, "validation_failed");
    app.post(&path, &admin, json!({ "details": { "a": 1 } }))
        .await
        .problem(422, "validation_failed");
    app.post(
        &format!("/api/v1/orgs/{o}/subscriptions/{sub}/items/calling/provisioning-details"),
        &admin,
        details.clone(),
    )
    .await
    .problem(404, "not_found");
    assert_eq!(app.snapshot().await, state);
    let s = app.post(&path, &admin, details.clone()).await.ok();
    assert_eq!(s["items"][0]["provisioning_status"], "provisioning");
    app.post(&path, &admin, details).await.problem(409, "conflict");
    // Still not assignable until the provider (or partner) marks it provisioned.
    app.post(&lic, &app.admin, json!({ "add": [{ "product": "meetings" }] }))
        .await
        .problem(422, "service_not_provisioned");
    app.patch(
        &format!("/api/v1/orgs/{o}/subscriptions/{sub}"),
        &app.admin,
        json!({ "items": [{ "product": "meetings", "provisioning_status": "provisioned" }] }),
    )
    .await
    .ok();
    app.post(&lic, &app.admin, json!({ "add": [{ "product": "meetings" }] })).await.ok();
    let events = crate::moves::audit_events(&app, &o, "subscription.provisioning_details").await;
    assert_eq!(events[0]["after"]["details"]["site_url"], "setup.example.com");
}

/// Through the API: the status of a paid and a trial subscription
/// ending 2027-01-01, and of a suspended one, on each side of every
/// boundary, with the server's clock moved.
async fn statuses_follow_the_clock_across_every_boundary(backend: Backend) {
    let app = spawn(backend).await;
    product(&app, "meetings", "meetings").await;
    let o = org(&app, "Clock AB", None).await;
    let make = |trial: bool| {
        let (app, o) = (&app, &o);
        async move {
            app.post(
                &format!("/api/v1/orgs/{o}/subscriptions"),
                &app.admin,
                json!({ "trial": trial, "start_date": "2026-01-01", "end_date": "2027-01-01", "items": [] }),
            )
            .await
            .ok()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let (paid, trial, suspended) = (make(false).await, make(true).await, make(false).await);
    app.patch(
        &format!("/api/v1/orgs/{o}/subscriptions/{suspended}"),
        &app.admin,
        json!({ "suspended": true }),
    )
    .await
    .ok();
    let at = |y, m, d| {
        chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, y, m, d, 12, 0, 0)
            .single()
            .unwrap()
    };
    for (when, paid_status, trial_status) in [
        (at(2026, 11, 1), "active", "trial_active"),              // 61 days left
        (at(2026, 11, 2), "expiring_60d", "trial_expiring_60d"),  // 60
        (at(2026, 12, 1), "expiring_60d", "trial_expiring_60d"),  // 31
        (at(2026, 12, 2), "expiring_30d", "trial_expiring_30d"),  // 30
        (at(2026, 12, 31), "expiring_30d", "trial_expiring_30d"), // 1
        (at(2027, 1, 1), "expired", "trial_expired"),             // 0: ended
    ] {
        app.clock.set(when);
        let status = |id: &String| {
            let (app, o, id) = (&app, &o, id.clone());
            async move { app.get(&format!("/api/v1/orgs/{o}/subscriptions/{id}"), &app.admin).await.ok()["status"].clone() }
        };
        assert_eq!(status(&paid).await, paid_status, "paid on {when}");
        assert_eq!(status(&trial).await, trial_status, "trial on {when}");
        assert_eq!(status(&suspended).await, "suspended", "suspended on {when}");
    }
}
