//! API tokens: create (secret shown once), list in scope, revoke with
//! effect at once, expiry, no role above one's own, other tenants' 404.

use reqwest::Method;
use serde_json::json;

use allot_domain::access::Role;

use crate::both_backends;
use crate::kit::*;

both_backends!(
    tokens_are_created_listed_and_revoked_at_once,
    token_scope_and_rank,
    a_revoked_token_replays_nothing
);

async fn tokens_are_created_listed_and_revoked_at_once(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let created = app
        .post(
            "/api/v1/tokens",
            &app.admin,
            json!({ "name": "HR sync", "role": "org_user_admin", "org": w.org }),
        )
        .await;
    assert_eq!(created.status.as_u16(), 201, "{}", created.body);
    let secret = created.body["token"].as_str().expect("the secret is answered once").to_string();
    let id = created.body["id"].as_str().expect("id").to_string();
    assert_eq!(created.body["role"], "org_user_admin");
    assert_eq!(created.body["org"], w.org.as_str());
    assert_eq!(created.body["name"], "HR sync");
    // It works, and the list shows it without its secret.
    app.get(&format!("/api/v1/orgs/{}/users", w.org), &secret).await.ok();
    let list = app.get("/api/v1/tokens", &app.admin).await.ok();
    let listed = list["items"].as_array().expect("items");
    let mine = listed.iter().find(|t| t["id"] == id.as_str()).expect("listed");
    assert!(mine.get("token").is_none(), "a list never shows a secret");
    assert!(!list.to_string().contains(&secret));
    // Revoked: the very next request is 401, and it leaves the list.
    let revoked = app
        .call(Method::DELETE, &format!("/api/v1/tokens/{id}"), Some(&app.admin), None)
        .await;
    assert_eq!(revoked.status.as_u16(), 204, "{}", revoked.body);
    app.get(&format!("/api/v1/orgs/{}/users", w.org), &secret)
        .await
        .problem(401, "unauthenticated");
    let list = app.get("/api/v1/tokens", &app.admin).await.ok();
    assert!(list["items"].as_array().expect("items").iter().all(|t| t["id"] != id.as_str()));
    app.call(Method::DELETE, &format!("/api/v1/tokens/{id}"), Some(&app.admin), None)
        .await
        .problem(404, "not_found");
    // An expiring token stops at its time.
    let expiring = app
        .post(
            "/api/v1/tokens",
            &app.admin,
            json!({ "role": "org_read_only", "org": w.org, "expires_at": "2026-06-16T00:00:00Z" }),
        )
        .await
        .ok();
    let expiring = expiring["token"].as_str().expect("secret").to_string();
    app.get(&format!("/api/v1/orgs/{}", w.org), &expiring).await.ok();
    app.clock.set(day(2026, 6, 16));
    app.get(&format!("/api/v1/orgs/{}", w.org), &expiring)
        .await
        .problem(401, "unauthenticated");
    // Bad input changes nothing.
    app.clock.set(today());
    let before = app.snapshot().await;
    app.post("/api/v1/tokens", &app.admin, json!({ "role": "emperor" }))
        .await
        .problem(422, "validation_failed");
    app.post("/api/v1/tokens", &app.admin, json!({ "role": "org_admin" }))
        .await
        .problem(422, "validation_failed");
    app.post(
        "/api/v1/tokens",
        &app.admin,
        json!({ "role": "org_admin", "org": w.org, "expires_at": "2020-01-01T00:00:00Z" }),
    )
    .await
    .problem(422, "validation_failed");
    app.post(
        "/api/v1/tokens",
        &app.admin,
        json!({ "role": "org_admin", "org": w.org, "name": "bad\u{202E}name" }),
    )
    .await
    .problem(422, "validation_failed");
    app.post("/api/v1/tokens", &app.admin, json!({ "role": "org_admin", "org": "org_nope" }))
        .await
        .problem(404, "not_found");
    assert_eq!(app.snapshot().await, before);
}

async fn token_scope_and_rank(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let other_org = org(&app, "Elsewhere", None).await;
    let super_admin = app.token(Role::OrgSuperAdmin, None, Some(&w.org)).await;
    let org_admin = app.token(Role::OrgAdmin, None, Some(&w.org)).await;
    let partner_admin = app.token(Role::PartnerAdmin, Some(&w.partner), None).await;
    let before = app.snapshot().await;
    // No role above one's own; no tenant outside one's scope (404).
    app.post("/api/v1/tokens", &super_admin, json!({ "role": "provider_admin" }))
        .await
        .problem(403, "forbidden");
    app.post(
        "/api/v1/tokens",
        &super_admin,
        json!({ "role": "partner_admin", "partner": w.partner }),
    )
    .await
    .problem(404, "not_found");
    app.post("/api/v1/tokens", &super_admin, json!({ "role": "org_admin", "org": other_org }))
        .await
        .problem(404, "not_found");
    app.post("/api/v1/tokens", &partner_admin, json!({ "role": "org_admin", "org": other_org }))
        .await
        .problem(404, "not_found");
    app.post("/api/v1/tokens", &org_admin, json!({ "role": "org_read_only", "org": w.org }))
        .await
        .problem(403, "forbidden");
    assert_eq!(app.snapshot().await, before);
    // Within scope and rank it works.
    let made = app
        .post("/api/v1/tokens", &super_admin, json!({ "role": "org_admin", "org": w.org }))
        .await
        .ok();
    let by_partner = app
        .post("/api/v1/tokens", &partner_admin, json!({ "role": "org_super_admin", "org": w.org }))
        .await
        .ok();
    // The org's super admin sees its org's tokens only; the partner admin
    // sees its own and its customers'.
    let seen = app.get("/api/v1/tokens", &super_admin).await.ok();
    let ids: Vec<&str> = seen["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert!(ids.contains(&made["id"].as_str().expect("id")));
    assert!(ids.contains(&by_partner["id"].as_str().expect("id")));
    assert_eq!(
        seen["items"].as_array().expect("items").len(),
        4,
        "its own, the org admin's, the one it made and the partner's: {seen}"
    );
    assert!(seen["items"].as_array().expect("items").iter().all(|t| t["org"] == w.org.as_str()));
    let seen = app.get("/api/v1/tokens", &partner_admin).await.ok();
    assert!(seen["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|t| t["org"] == w.org.as_str() || t["partner"] == w.partner.as_str()));
    // Revoking another tenant's token is 404, and it keeps working.
    let outsider = app.token(Role::OrgAdmin, None, Some(&other_org)).await;
    let all = app.get("/api/v1/tokens?limit=1000", &app.admin).await.ok();
    let outsider_id = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|t| t["org"] == other_org.as_str())
        .and_then(|t| t["id"].as_str())
        .expect("outsider listed for the provider")
        .to_string();
    app.call(Method::DELETE, &format!("/api/v1/tokens/{outsider_id}"), Some(&super_admin), None)
        .await
        .problem(404, "not_found");
    app.get(&format!("/api/v1/orgs/{other_org}"), &outsider).await.ok();
    // The revocation is in the org's audit log.
    let mine = made["id"].as_str().expect("id");
    let r = app
        .call(Method::DELETE, &format!("/api/v1/tokens/{mine}"), Some(&super_admin), None)
        .await;
    assert_eq!(r.status.as_u16(), 204);
    let audit = app
        .get(&format!("/api/v1/orgs/{}/audit-events?action=token.revoke", w.org), &app.admin)
        .await
        .ok();
    assert_eq!(audit["items"].as_array().expect("items").len(), 1, "{audit}");
}

/// A token that made a keyed request and was then revoked gets 401 for
/// the same request, not the stored answer.
async fn a_revoked_token_replays_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let made = app
        .post("/api/v1/tokens", &app.admin, json!({ "role": "provider_admin" }))
        .await
        .ok();
    let secret = made["token"].as_str().expect("secret").to_string();
    let send = || {
        app.client
            .post(format!("{}/api/v1/orgs", app.url))
            .bearer_auth(&secret)
            .header("idempotency-key", "once")
            .json(&json!({ "name": "Replayed?" }))
            .send()
    };
    assert_eq!(send().await.expect("send").status().as_u16(), 201);
    assert_eq!(send().await.expect("send").headers()["idempotent-replayed"], "true");
    let id = made["id"].as_str().expect("id");
    let r = app
        .call(Method::DELETE, &format!("/api/v1/tokens/{id}"), Some(&app.admin), None)
        .await;
    assert_eq!(r.status.as_u16(), 204);
    let after = send().await.expect("send");
    assert_eq!(after.status().as_u16(), 401);
    assert!(after.headers().get("idempotent-replayed").is_none());
}
