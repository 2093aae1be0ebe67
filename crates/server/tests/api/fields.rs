//! Writable fields by role: a role that may PATCH a resource may still not
//! set every field of it. The expected answers are written out here, from
//! the roles as the README describes them, not taken from the server's table.

use serde_json::json;

use allot_domain::access::Role;

use crate::both_backends;
use crate::kit::*;

both_backends!(org_fields_by_role, user_fields_by_role);

/// (role, [name, default_usage_location, payment_method_on_file,
/// self_service_purchase, partner]) → expected status of a PATCH setting
/// that one field of the role's own org.
const ORG_FIELDS: [(Role, [u16; 5]); 9] = [
    (Role::ProviderAdmin, [200, 200, 200, 200, 200]),
    (Role::PartnerAdmin, [200, 200, 200, 200, 403]),
    (Role::PartnerSales, [200, 200, 200, 200, 403]),
    (Role::PartnerHelpdesk, [403, 403, 403, 403, 403]),
    (Role::OrgSuperAdmin, [200, 200, 403, 403, 403]),
    (Role::OrgAdmin, [403, 403, 403, 403, 403]),
    (Role::OrgUserAdmin, [403, 403, 403, 403, 403]),
    (Role::OrgSupport, [403, 403, 403, 403, 403]),
    (Role::OrgReadOnly, [403, 403, 403, 403, 403]),
];

async fn org_fields_by_role(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let fields = [
        "name",
        "default_usage_location",
        "payment_method_on_file",
        "self_service_purchase",
        "partner",
    ];
    for (role, expected) in ORG_FIELDS {
        let token = match role.scope_kind() {
            allot_domain::access::ScopeKind::Provider => app.admin.clone(),
            allot_domain::access::ScopeKind::Partner => app.token(role, Some(&w.partner), None).await,
            allot_domain::access::ScopeKind::Org => app.token(role, None, Some(&w.org)).await,
        };
        for (field, want) in fields.iter().zip(expected) {
            let value = match *field {
                "name" => json!("Customer A"),
                "default_usage_location" => json!("SE"),
                "payment_method_on_file" => json!(false),
                "self_service_purchase" => json!(false),
                _ => json!(w.partner),
            };
            let before = app.snapshot().await;
            let r = app
                .patch(&format!("/api/v1/orgs/{}", w.org), &token, json!({ *field: value }))
                .await;
            assert_eq!(r.status.as_u16(), want, "{role:?} setting {field}: {}", r.body);
            if want == 403 {
                assert_eq!(app.snapshot().await, before, "{role:?} was refused {field} but something changed");
                // Refusals of a field name it (those of the whole call need not).
                if r.body["errors"].as_array().is_some_and(|e| !e.is_empty()) {
                    assert_eq!(r.body["errors"][0]["field"], *field, "{}", r.body);
                }
            }
            // Put the billing facts back for the next role.
            app.patch(
                &format!("/api/v1/orgs/{}", w.org),
                &app.admin,
                json!({ "payment_method_on_file": true, "self_service_purchase": true }),
            )
            .await
            .ok();
        }
    }
    // The scenario found: a super admin refused a purchase by policy cannot
    // lift the policy and buy.
    let super_admin = app.token(Role::OrgSuperAdmin, None, Some(&w.org)).await;
    app.patch(
        &format!("/api/v1/orgs/{}", w.org),
        &app.admin,
        json!({ "self_service_purchase": false }),
    )
    .await
    .ok();
    let r = app
        .patch(
            &format!("/api/v1/orgs/{}", w.org),
            &super_admin,
            json!({ "self_service_purchase": true }),
        )
        .await;
    r.problem(403, "forbidden");
    assert_eq!(r.body["errors"][0]["field"], "self_service_purchase");
    let org = app.get(&format!("/api/v1/orgs/{}", w.org), &app.admin).await.ok();
    assert_eq!(org["self_service_purchase"], false);
}

/// (role, [display_name, site_admin_of]) → expected status of a PATCH of a
/// user of the role's own org setting that one field. Making someone a site
/// administrator grants an admin role: the org's user admins may not.
const USER_FIELDS: [(Role, [u16; 2]); 9] = [
    (Role::ProviderAdmin, [200, 200]),
    (Role::PartnerAdmin, [200, 200]),
    (Role::PartnerSales, [403, 403]),
    (Role::PartnerHelpdesk, [403, 403]),
    (Role::OrgSuperAdmin, [200, 200]),
    (Role::OrgAdmin, [200, 200]),
    (Role::OrgUserAdmin, [200, 403]),
    (Role::OrgSupport, [403, 403]),
    (Role::OrgReadOnly, [403, 403]),
];

async fn user_fields_by_role(backend: Backend) {
    let app = spawn(backend).await;
    let w = world(&app).await;
    let site = app
        .post(
            &format!("/api/v1/orgs/{}/sites", w.org),
            &app.admin,
            json!({ "url": "https://acme.webex.example" }),
        )
        .await
        .ok()["id"]
        .as_str()
        .expect("site id")
        .to_string();
    let u = user(&app, &w.org, "field@example.com").await;
    for (role, expected) in USER_FIELDS {
        let token = match role.scope_kind() {
            allot_domain::access::ScopeKind::Provider => app.admin.clone(),
            allot_domain::access::ScopeKind::Partner => app.token(role, Some(&w.partner), None).await,
            allot_domain::access::ScopeKind::Org => app.token(role, None, Some(&w.org)).await,
        };
        for (field, want) in ["display_name", "site_admin_of"].iter().zip(expected) {
            let value = if *field == "display_name" {
                json!("Field Person")
            } else {
                json!([site])
            };
            let before = app.snapshot().await;
            let r = app
                .patch(&format!("/api/v1/orgs/{}/users/{u}", w.org), &token, json!({ *field: value }))
                .await;
            assert_eq!(r.status.as_u16(), want, "{role:?} setting {field}: {}", r.body);
            if want == 403 {
                assert_eq!(app.snapshot().await, before, "{role:?} was refused {field} but something changed");
            }
            app.patch(
                &format!("/api/v1/orgs/{}/users/{u}", w.org),
                &app.admin,
                json!({ "site_admin_of": [] }),
            )
            .await
            .ok();
        }
    }
    // Creating a user who is a site administrator is the same grant.
    let user_admin = app.token(Role::OrgUserAdmin, None, Some(&w.org)).await;
    let r = app
        .post(
            &format!("/api/v1/orgs/{}/users", w.org),
            &user_admin,
            json!({ "email": "new-admin@example.com", "site_admin_of": [site] }),
        )
        .await;
    r.problem(403, "forbidden");
    assert_eq!(r.body["errors"][0]["field"], "site_admin_of");
}
