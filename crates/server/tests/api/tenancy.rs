//! Tenant scope: anything outside the caller's tenant answers 404; a role
//! that may not act inside its tenant answers 403.

use reqwest::Method;
use serde_json::json;

use allot_domain::access::Role;

use crate::both_backends;
use crate::kit::*;

both_backends!(partners_and_orgs_see_only_their_own, roles_are_checked);

async fn partners_and_orgs_see_only_their_own(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let other_partner = app.post("/api/v1/partners", &app.admin, json!({ "name": "Partner B" })).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other_org = org(&app, "Customer B", Some(&other_partner)).await;
    let other_user = user(&app, &other_org, "bob@b.example").await;
    let own_user = user(&app, &w.org, "anna@a.example").await;

    let partner_a = app.token(Role::PartnerAdmin, Some(&w.partner), None).await;
    let org_a = app.token(Role::OrgAdmin, None, Some(&w.org)).await;

    // Own tenant: visible.
    app.get(&format!("/api/v1/orgs/{}", w.org), &partner_a).await.ok();
    app.get(&format!("/api/v1/orgs/{}/users/{own_user}", w.org), &org_a).await.ok();
    let listed = app.get("/api/v1/orgs", &partner_a).await.ok();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["id"], w.org);
    let listed = app.get("/api/v1/orgs", &org_a).await.ok();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let partners = app.get("/api/v1/partners", &partner_a).await.ok();
    assert_eq!(partners["items"].as_array().unwrap().len(), 1);

    let before = app.snapshot().await;
    // Partner A reading partner B's customer, and partner B itself.
    for path in [
        format!("/api/v1/orgs/{other_org}"),
        format!("/api/v1/orgs/{other_org}/users"),
        format!("/api/v1/orgs/{other_org}/users/{other_user}"),
        format!("/api/v1/orgs/{other_org}/users/{other_user}/licenses"),
        format!("/api/v1/orgs/{other_org}/subscriptions"),
        format!("/api/v1/orgs/{other_org}/licenses"),
        format!("/api/v1/partners/{other_partner}"),
    ] {
        app.get(&path, &partner_a).await.problem(404, "not_found");
    }
    // Org A reading org B, its users and licences; and its own org's user through org B's path.
    for path in [
        format!("/api/v1/orgs/{other_org}"),
        format!("/api/v1/orgs/{other_org}/users"),
        format!("/api/v1/orgs/{other_org}/users/{other_user}"),
        format!("/api/v1/orgs/{other_org}/users/{other_user}/licenses"),
        format!("/api/v1/orgs/{other_org}/licenses"),
        format!("/api/v1/orgs/{other_org}/users/{own_user}"),
        format!("/api/v1/orgs/{}/users/{other_user}", w.org),
        format!("/api/v1/orgs/{}/users/{other_user}/licenses", w.org),
        "/api/v1/orgs/org_doesnotexist".to_string(),
    ] {
        app.get(&path, &org_a).await.problem(404, "not_found");
    }
    // Writes into another tenant: 404 too, and nothing changes.
    app.post(
        &format!("/api/v1/orgs/{other_org}/users"),
        &org_a,
        json!({ "email": "x@b.example" }),
    )
    .await
    .problem(404, "not_found");
    app.post(
        &format!("/api/v1/orgs/{other_org}/users/{other_user}/licenses"),
        &partner_a,
        json!({ "add": [{ "product": "meetings" }] }),
    )
    .await
    .problem(404, "not_found");
    app.patch(&format!("/api/v1/orgs/{other_org}"), &partner_a, json!({ "name": "Mine now" }))
        .await
        .problem(404, "not_found");
    app.call(
        Method::DELETE,
        &format!("/api/v1/orgs/{other_org}/users/{other_user}"),
        Some(&org_a),
        None,
    )
    .await
    .problem(404, "not_found");
    // A partner cannot create a customer under another partner.
    app.post("/api/v1/orgs", &partner_a, json!({ "name": "Sneaky", "partner": other_partner }))
        .await
        .problem(404, "not_found");
    assert_eq!(app.snapshot().await, before);
}

async fn roles_are_checked(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let u = user(&app, &w.org, "anna@a.example").await;
    let read_only = app.token(Role::OrgReadOnly, None, Some(&w.org)).await;
    let support = app.token(Role::OrgSupport, None, Some(&w.org)).await;
    let sales = app.token(Role::PartnerSales, Some(&w.partner), None).await;
    let org_admin = app.token(Role::OrgAdmin, None, Some(&w.org)).await;
    let before = app.snapshot().await;

    for t in [&read_only, &support] {
        app.get(&format!("/api/v1/orgs/{}/users", w.org), t).await.ok();
        app.post(&format!("/api/v1/orgs/{}/users", w.org), t, json!({ "email": "new@a.example" }))
            .await
            .problem(403, "forbidden");
        app.post(
            &format!("/api/v1/orgs/{}/users/{u}/licenses", w.org),
            t,
            json!({ "add": [{ "product": "meetings" }] }),
        )
        .await
        .problem(403, "forbidden");
    }
    // Sales agents manage subscriptions but never read user data.
    app.get(&format!("/api/v1/orgs/{}/users", w.org), &sales)
        .await
        .problem(403, "forbidden");
    app.get(&format!("/api/v1/orgs/{}/users/{u}/licenses", w.org), &sales)
        .await
        .problem(403, "forbidden");
    app.get(&format!("/api/v1/orgs/{}/subscriptions", w.org), &sales).await.ok();
    // Only the provider writes the catalogue and creates partners.
    app.post("/api/v1/products", &org_admin, json!({ "code": "x", "name": "X", "family": "x" }))
        .await
        .problem(403, "forbidden");
    app.post("/api/v1/partners", &sales, json!({ "name": "P" }))
        .await
        .problem(403, "forbidden");
    // Org admins do not sell themselves subscriptions.
    app.post(
        &format!("/api/v1/orgs/{}/subscriptions", w.org),
        &org_admin,
        json!({ "start_date": "2026-01-01", "end_date": "2027-01-01" }),
    )
    .await
    .problem(403, "forbidden");
    assert_eq!(app.snapshot().await, before);

    // No token, a malformed header, an unknown token: 401.
    let r = app.call(Method::GET, "/api/v1/orgs", None, None).await;
    r.problem(401, "unauthenticated");
    assert_eq!(r.headers["content-type"], "application/problem+json");
    app.call(Method::GET, "/api/v1/orgs", Some("allot_0000"), None)
        .await
        .problem(401, "unauthenticated");
    app.call(
        Method::POST,
        "/api/v1/products",
        None,
        Some(json!({ "code": "x", "name": "X", "family": "x" })),
    )
    .await
    .problem(401, "unauthenticated");
    assert_eq!(app.snapshot().await, before);
}
