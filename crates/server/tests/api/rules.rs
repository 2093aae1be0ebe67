//! Licence rules through the HTTP API,
//! on the demo-like catalogue: one table per rule, each refusal checked for
//! its code, its sentence and that it wrote nothing.

use serde_json::{json, Value};

use crate::both_backends;
use crate::kit::*;

both_backends!(
    excludes_hold_whichever_side_declares_them,
    one_per_family_except_compatible_pairs,
    requires_refuses_or_adds_the_required_product,
    locations_follow_user_then_org,
    properties_are_validated,
    attendee_accounts_follow_site_rules,
    subscription_and_provisioning_states,
    pending_external_users,
    every_violation_is_reported_at_once,
    catalogue_is_validated_when_written,
    random_changes_write_all_or_nothing,
);

/// The catalogue of the seeds (as in `allot demo`), an org with a default
/// usage location and one without, two sites, and one subscription carrying
/// every product.
struct Rules {
    org: String,
    /// An org with no default usage location.
    bare_org: String,
    sub: String,
    bare_sub: String,
    site_on: String,
    site_off: String,
}

async fn rules_world(app: &TestApp) -> Rules {
    let calling_props = json!({ "location": "optional", "phone_number": "optional", "extension": "optional" });
    let products = [
        json!({ "code": "cx-essentials", "name": "Customer Experience Essentials", "family": "customer-experience",
                "features": ["queues"] }),
        json!({ "code": "calling-standard", "name": "Calling Standard", "family": "calling",
                "rules": { "exclusive_in_family": true, "excludes": ["cx-essentials"] },
                "properties": calling_props, "retention_days": 7 }),
        json!({ "code": "calling-professional", "name": "Calling Professional", "family": "calling",
                "rules": { "exclusive_in_family": true }, "properties": calling_props, "retention_days": 7 }),
        json!({ "code": "ucm-registration", "name": "On-premises Call Control Registration", "family": "calling",
                "rules": { "exclusive_in_family": true, "compatible_with": ["calling-standard", "calling-professional"] } }),
        json!({ "code": "attendant-console", "name": "Attendant Console", "family": "attendant-console",
                "rules": { "requires": ["calling-professional"] } }),
        json!({ "code": "meetings", "name": "Meetings", "family": "meetings",
                "properties": { "site": "required", "account_type": "required" } }),
        json!({ "code": "messaging", "name": "Messaging", "family": "messaging" }),
        json!({ "code": "contact-centre", "name": "Contact Centre Agent", "family": "contact-centre",
                "rules": { "locations": ["SE", "NO", "DE"] } }),
    ];
    for p in products {
        app.post("/api/v1/products", &app.admin, p).await.ok();
    }
    let org = app
        .post(
            "/api/v1/orgs",
            &app.admin,
            json!({ "name": "Nordic AB", "default_usage_location": "SE" }),
        )
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let bare_org = org_named(app, "Nowhere Ltd").await;
    let items = json!([
        { "product": "cx-essentials", "quantity": 10 },
        { "product": "calling-standard", "quantity": 10 },
        { "product": "calling-professional", "quantity": 10 },
        { "product": "ucm-registration", "quantity": 10 },
        { "product": "attendant-console", "quantity": 10 },
        { "product": "meetings", "quantity": 10 },
        { "product": "messaging", "quantity": 10 },
        { "product": "contact-centre", "quantity": 10 },
    ]);
    let sub = subscription(app, &org, items.clone()).await;
    let bare_sub = subscription(app, &bare_org, items).await;
    let site = |url: &str, attendee: bool| {
        let org = org.clone();
        let url = url.to_string();
        async move {
            app.post(
                &format!("/api/v1/orgs/{org}/sites"),
                &app.admin,
                json!({ "url": url, "attendee_accounts_enabled": attendee }),
            )
            .await
            .ok()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let site_on = site("https://nordic.meet.example", true).await;
    let site_off = site("https://nordic-board.meet.example", false).await;
    Rules {
        org,
        bare_org,
        sub,
        bare_sub,
        site_on,
        site_off,
    }
}

async fn org_named(app: &TestApp, name: &str) -> String {
    org(app, name, None).await
}

async fn new_user(app: &TestApp, org: &str, body: Value) -> String {
    app.post(&format!("/api/v1/orgs/{org}/users"), &app.admin, body).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn licenses_path(org: &str, user: &str) -> String {
    format!("/api/v1/orgs/{org}/users/{user}/licenses")
}

/// A change that must succeed; returns the user's licences after it.
async fn granted(app: &TestApp, org: &str, user: &str, change: Value) -> Value {
    app.post(&licenses_path(org, user), &app.admin, change).await.ok()
}

/// A change that must be refused with `code` and write nothing; returns the
/// problem document.
async fn refused(app: &TestApp, org: &str, user: &str, change: Value, code: &str) -> Value {
    let before = app.snapshot().await;
    let r = app.post(&licenses_path(org, user), &app.admin, change.clone()).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (422, code),
        "change {change} should be refused with {code}: {}",
        r.body
    );
    assert_eq!(app.snapshot().await, before, "refused change {change} wrote something");
    r.body
}

fn held(licences: &Value) -> Vec<String> {
    let mut v: Vec<String> = licences["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["product"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn codes(problem: &Value) -> Vec<String> {
    let mut v: Vec<String> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

async fn excludes_hold_whichever_side_declares_them(backend: Backend) {
    let app = spawn(backend).await;
    let w = rules_world(&app).await;
    let anna = user(&app, &w.org, "anna@example.com").await;
    let bo = user(&app, &w.org, "bo@example.com").await;

    // Declared on calling-standard: adding it next to cx-essentials...
    granted(&app, &w.org, &anna, json!({ "add": [{ "product": "cx-essentials" }] })).await;
    let p = refused(
        &app,
        &w.org,
        &anna,
        json!({ "add": [{ "product": "calling-standard" }] }),
        "mutually_exclusive",
    )
    .await;
    assert_eq!(
        p["errors"][0]["message"],
        "anna@example.com cannot hold Calling Standard together with Customer Experience Essentials: the two exclude each other."
    );
    assert_eq!(p["errors"][0]["user"], "anna@example.com");
    assert_eq!(p["errors"][0]["product"], "calling-standard");
    assert_eq!(p["errors"][0]["related_product"], "cx-essentials");
    assert_eq!(p["errors"][0]["field"], "add[0]");

    // ...and the other way round, from the side that declares nothing.
    granted(&app, &w.org, &bo, json!({ "add": [{ "product": "calling-standard" }] })).await;
    let p = refused(
        &app,
        &w.org,
        &bo,
        json!({ "add": [{ "product": "cx-essentials" }] }),
        "mutually_exclusive",
    )
    .await;
    assert_eq!(
        p["errors"][0]["message"],
        "bo@example.com cannot hold Customer Experience Essentials together with Calling Standard: the two exclude each other."
    );

    // Both in one change: refused once, not twice.
    let cleo = user(&app, &w.org, "cleo@example.com").await;
    let p = refused(
        &app,
        &w.org,
        &cleo,
        json!({ "add": [{ "product": "calling-standard" }, { "product": "cx-essentials" }] }),
        "mutually_exclusive",
    )
    .await;
    assert_eq!(p["errors"].as_array().unwrap().len(), 1, "{p}");

    // Swapping one for the other in the same change is allowed.
    let after = granted(
        &app,
        &w.org,
        &anna,
        json!({ "remove": [{ "product": "cx-essentials" }], "add": [{ "product": "calling-standard" }] }),
    )
    .await;
    assert_eq!(held(&after), ["calling-standard"]);
    assert_eq!(app.mismatches().await, 0);
}

async fn one_per_family_except_compatible_pairs(backend: Backend) {
    let app = spawn(backend).await;
    let w = rules_world(&app).await;
    let anna = user(&app, &w.org, "anna@example.com").await;
    granted(&app, &w.org, &anna, json!({ "add": [{ "product": "calling-standard" }] })).await;

    // (change, expected code or None for success)
    let p = refused(
        &app,
        &w.org,
        &anna,
        json!({ "add": [{ "product": "calling-professional" }] }),
        "one_per_family",
    )
    .await;
    let message = p["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "anna@example.com cannot hold Calling Professional together with Calling Standard: only one calling licence at a time."
        ),
        "{message}"
    );
    assert_eq!(p["errors"][0]["related_product"], "calling-standard");

    // The declared migration pair: cloud calling + on-premises registration.
    let after = granted(&app, &w.org, &anna, json!({ "add": [{ "product": "ucm-registration" }] })).await;
    assert_eq!(held(&after), ["calling-standard", "ucm-registration"]);

    // A move inside the family in one change is fine, and the pair still holds.
    let after = granted(
        &app,
        &w.org,
        &anna,
        json!({ "remove": [{ "product": "calling-standard" }], "add": [{ "product": "calling-professional" }] }),
    )
    .await;
    assert_eq!(held(&after), ["calling-professional", "ucm-registration"]);

    // Two exclusive calling products in one change, for a new user: one reason.
    let bo = user(&app, &w.org, "bo@example.com").await;
    let p = refused(
        &app,
        &w.org,
        &bo,
        json!({ "add": [{ "product": "calling-standard" }, { "product": "calling-professional" }] }),
        "one_per_family",
    )
    .await;
    assert_eq!(p["errors"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(app.mismatches().await, 0);
}

async fn requires_refuses_or_adds_the_required_product(backend: Backend) {
    let app = spawn(backend).await;
    let w = rules_world(&app).await;
    let anna = user(&app, &w.org, "anna@example.com").await;

    let p = refused(
        &app,
        &w.org,
        &anna,
        json!({ "add": [{ "product": "attendant-console" }] }),
        "requires_product",
    )
    .await;
    assert_eq!(
        p["errors"][0]["message"],
        "anna@example.com cannot get Attendant Console without Calling Professional: Attendant Console requires it. Add Calling Professional in the same change, or set add_required."
    );
    assert_eq!(p["errors"][0]["related_product"], "calling-professional");

    // add_required: the planner adds Calling Professional and takes its seat.
    let after = granted(
        &app,
        &w.org,
        &anna,
        json!({ "add": [{ "product": "attendant-console" }], "add_required": true }),
    )
    .await;
    assert_eq!(held(&after), ["attendant-console", "calling-professional"]);
    let sub = app
        .get(&format!("/api/v1/orgs/{}/subscriptions/{}", w.org, w.sub), &app.admin)
        .await
        .ok();
    let consumed = |product: &str| {
        sub["items"].as_array().unwrap().iter().find(|i| i["product"] == product).unwrap()["consumed"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(consumed("calling-professional"), 1);
    assert_eq!(consumed("attendant-console"), 1);
    // The audit log says which product was added because another required it.
    let events = app
        .get(&format!("/api/v1/orgs/{}/audit-events?action=license.change", w.org), &app.admin)
        .await
        .ok();
    let last = events["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["target"], format!("user:{anna}"));
    assert_eq!(last["after"]["auto_added"], json!(["calling-professional"]));

    // add_required while the user holds another calling licence: the added
    // Calling Professional breaks one per family, so it is refused.
    let bo = user(&app, &w.org, "bo@example.com").await;
    granted(&app, &w.org, &bo, json!({ "add": [{ "product": "calling-standard" }] })).await;
    refused(
        &app,
        &w.org,
        &bo,
        json!({ "add": [{ "product": "attendant-console" }], "add_required": true }),
        "one_per_family",
    )
    .await;

    // add_required with no free seat for the required product: seats_exhausted.
    let small = subscription(&app, &w.bare_org, json!([{ "product": "attendant-console", "quantity": 5 }])).await;
    let _ = small;
    // Fill calling-professional in the bare org (10 seats) with others.
    for i in 0..10 {
        let u = user(&app, &w.bare_org, &format!("filler{i}@example.com")).await;
        granted(&app, &w.bare_org, &u, json!({ "add": [{ "product": "calling-professional" }] })).await;
    }
    let cleo = user(&app, &w.bare_org, "cleo@example.com").await;
    let p = refused(
        &app,
        &w.bare_org,
        &cleo,
        json!({ "add": [{ "product": "attendant-console" }], "add_required": true }),
        "seats_exhausted",
    )
    .await;
    assert_eq!(p["errors"][0]["product"], "calling-professional");
    let message = p["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("cleo@example.com") && message.contains("Attendant Console requires it"),
        "{message}"
    );

    // Removing what a kept licence requires is refused; removing both is fine.
    let p = refused(
        &app,
        &w.org,
        &anna,
        json!({ "remove": [{ "product": "calling-professional" }] }),
        "requires_product",
    )
    .await;
    assert_eq!(
        p["errors"][0]["message"],
        "anna@example.com cannot lose Calling Professional: Attendant Console, which anna@example.com keeps, requires it. Remove Attendant Console in the same change."
    );
    // Moving Calling Professional to Calling Standard also loses it.
    refused(
        &app,
        &w.org,
        &anna,
        json!({ "remove": [{ "product": "calling-professional" }], "add": [{ "product": "calling-standard" }] }),
        "requires_product",
    )
    .await;
    let after = granted(
        &app,
        &w.org,
        &anna,
        json!({ "remove": [{ "product": "calling-professional" }, { "product": "attendant-console" }] }),
    )
    .await;
    assert_eq!(held(&after), Vec::<String>::new());
    assert_eq!(app.mismatches().await, 0);
}

async fn locations_follow_user_then_org(backend: Backend) {
    let app = spawn(backend).await;
    let w = rules_world(&app).await;
    // (org, usage_location of the user, expected outcome)
    let table: [(&str, Option<&str>, Option<&str>); 5] = [
        (&w.org, None, None),                               // org default SE is in the list
        (&w.org, Some("NO"), None),                         // the user's own location
        (&w.org, Some("US"), Some("location_unavailable")), // the user's wins over the org's SE
        (&w.bare_org, Some("DE"), None),
        (&w.bare_org, None, Some("usage_location_missing")),
    ];
    for (i, (org, location, expected)) in table.into_iter().enumerate() {
        let email = format!("user{i}@example.com");
        let u = new_user(&app, org, json!({ "email": email, "usage_location": location })).await;
        let change = json!({ "add": [{ "product": "contact-centre" }] });
        match expected {
            None => {
                let after = granted(&app, org, &u, change).await;
                assert_eq!(held(&after), ["contact-centre"], "row {i}");
            }
            Some(code) => {
                let p = refused(&app, org, &u, change, code).await;
                let message = p["errors"][0]["message"].as_str().unwrap();
                assert!(message.contains(&email) && message.contains("Contact Centre Agent"), "{message}");
                assert!(message.contains("SE, NO, DE"), "{message}");
                if code == "location_unavailable" {
                    assert!(message.contains("not available in US"), "{message}");
                }
            }
        }
    }
    // Setting the missing location makes the same change go through.
    let u = new_user(&app, &w.bare_org, json!({ "email": "late@example.com" })).await;
    refused(
        &app,
        &w.bare_org,
        &u,
        json!({ "add": [{ "product": "contact-centre" }] }),
        "usage_location_missing",
    )
    .await;
    app.patch(
        &format!("/api/v1/orgs/{}/users/{u}", w.bare_org),
        &app.admin,
        json!({ "usage_location": "SE" }),
    )
    .await
    .ok();
    granted(&app, &w.bare_org, &u, json!({ "add": [{ "product": "contact-centre" }] })).await;
    assert_eq!(app.mismatches().await, 0);
    let _ = w.bare_sub;
}

async fn properties_are_validated(backend: Backend) {
    let app = spawn(backend).await;
    let w = rules_world(&app).await;
    let u = user(&app, &w.org, "anna@example.com").await;
    let calling = |props: Value| json!({ "add": [{ "product": "calling-professional", "properties": props }] });
    // (properties, expected code or None, field)
    let table: Vec<(Value, Option<&str>, &str)> = vec![
        (
            json!({ "phone_number": "0701234567" }),
            Some("property_invalid"),
            "add[0].properties.phone_number",
        ),
        (
            json!({ "phone_number": "+0701234567" }),
            Some("property_invalid"),
            "add[0].properties.phone_number",
        ),
        (
            json!({ "phone_number": "+4670123456789012" }),
            Some("property_invalid"),
            "add[0].properties.phone_number",
        ),
        (json!({ "extension": "1" }), Some("property_invalid"), "add[0].properties.extension"),
        (
            json!({ "extension": "12345678901" }),
            Some("property_invalid"),
            "add[0].properties.extension",
        ),
        (
            json!({ "extension": "12a4" }),
            Some("property_invalid"),
            "add[0].properties.extension",
        ),
        (json!({ "site": w.site_on }), Some("property_invalid"), "add[0].properties.site"),
        (json!({ "extension": "12", "phone_number": "+46701234567" }), None, ""),
    ];
    for (props, expected, field) in table {
        match expected {
            Some(code) => {
                let p = refused(&app, &w.org, &u, calling(props.clone()), code).await;
                assert_eq!(p["errors"][0]["field"], field, "{props}: {p}");
                let message = p["errors"][0]["message"].as_str().unwrap();
                assert!(message.contains("Calling Professional"), "{message}");
            }
            None => {
                let after = granted(&app, &w.org, &u, calling(props.clone())).await;
                assert_eq!(after["items"][0]["properties"], props);
            }
        }
    }

    // Meetings requires site and account_type; the site must be this org's.
    let bo = user(&app, &w.org, "bo@example.com").await;
    let meetings = |props: Value| json!({ "add": [{ "product": "meetings", "properties": props }] });
    let p = refused(&app, &w.org, &bo, meetings(json!({})), "property_missing").await;
    assert_eq!(codes(&p), ["property_missing", "property_missing"], "{p}");
    assert_eq!(p["errors"][0]["message"], "bo@example.com needs a site for Meetings.");
    let other_site = app
        .post(
            &format!("/api/v1/orgs/{}/sites", w.bare_org),
            &app.admin,
            json!({ "url": "https://elsewhere.meet.example", "attendee_accounts_enabled": true }),
        )
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let p = refused(
        &app,
        &w.org,
        &bo,
        meetings(json!({ "site": other_site, "account_type": "host" })),
        "property_invalid",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "add[0].properties.site");
    refused(
        &app,
        &w.org,
        &bo,
        meetings(json!({ "site": w.site_on, "account_type": "guest" })),
        "property_invalid",
    )
    .await;
    let after = granted(&app, &w.org, &bo, meetings(json!({ "site": w.site_on, "account_type": "host" }))).await;
    assert_eq!(after["items"][0]["properties"]["account_type"], "host");
}

async fn attendee_accounts_follow_site_rules(backend: Backend) {
    let app = spawn(backend).await;
    let w = rules_world(&app).await;
    let admin_of_on = new_user(
        &app,
        &w.org,
        json!({ "email": "siteadmin@example.com", "site_admin_of": [w.site_on] }),
    )
    .await;
    let plain = user(&app, &w.org, "plain@example.com").await;
    let attendee = |site: &str| json!({ "add": [{ "product": "meetings", "properties": { "site": site, "account_type": "attendee" } }] });
    // (user, site, expected)
    let table = [
        (&plain, &w.site_on, None),
        (&plain, &w.site_off, Some("site_feature_disabled")),
        (&admin_of_on, &w.site_on, Some("role_not_allowed")),
        (&admin_of_on, &w.site_off, Some("site_feature_disabled")),
    ];
    for (user, site, expected) in table {
        match expected {
            None => {
                granted(&app, &w.org, user, attendee(site)).await;
                granted(&app, &w.org, user, json!({ "remove": [{ "product": "meetings" }] })).await;
            }
            Some(code) => {
                let p = refused(&app, &w.org, user, attendee(site), code).await;
                assert_eq!(p["errors"][0]["field"], "add[0].properties.account_type");
                let message = p["errors"][0]["message"].as_str().unwrap();
                assert!(message.contains(site.as_str()), "{message}");
            }
        }
    }
    let p = refused(&app, &w.org, &admin_of_on, attendee(&w.site_on), "role_not_allowed").await;
    assert_eq!(
        p["errors"][0]["message"],
        format!(
            "siteadmin@example.com administers site {}, so their Meetings account there must be a host account, not attendee.",
            w.site_on
        )
    );
    // The site admin may hold a host account on the same site.
    granted(
        &app,
        &w.org,
        &admin_of_on,
        json!({ "add": [{ "product": "meetings", "properties": { "site": w.site_on, "account_type": "host" } }] }),
    )
    .await;
}

async fn subscription_and_provisioning_states(backend: Backend) {
    let app = spawn(backend).await;
    let w = rules_world(&app).await;
    // today is 2026-06-15.
    // (subscription facts, item provisioning status, expected)
    let table: Vec<(Value, &str, Option<&str>)> = vec![
        (json!({ "start_date": "2026-01-01", "end_date": "2027-01-01" }), "provisioned", None),
        (json!({ "start_date": "2026-01-01", "end_date": "2026-07-01" }), "provisioned", None), // expiring
        (
            json!({ "start_date": "2026-06-01", "end_date": "2026-09-01", "trial": true }),
            "provisioned",
            None,
        ),
        (
            json!({ "start_date": "2026-01-01", "end_date": "2027-01-01", "suspended": true }),
            "provisioned",
            Some("subscription_not_active"),
        ),
        (
            json!({ "start_date": "2025-01-01", "end_date": "2026-01-01" }),
            "provisioned",
            Some("subscription_not_active"),
        ),
        (
            json!({ "start_date": "2026-04-01", "end_date": "2026-05-01", "trial": true }),
            "provisioned",
            Some("subscription_not_active"),
        ),
        (
            json!({ "start_date": "2026-01-01", "end_date": "2027-01-01", "cancelled": true }),
            "provisioned",
            Some("subscription_not_active"),
        ),
        (
            json!({ "start_date": "2026-01-01", "end_date": "2027-01-01" }),
            "awaiting_details",
            Some("service_not_provisioned"),
        ),
        (
            json!({ "start_date": "2026-01-01", "end_date": "2027-01-01" }),
            "provisioning",
            Some("service_not_provisioned"),
        ),
        (
            json!({ "start_date": "2026-01-01", "end_date": "2027-01-01" }),
            "cannot_provision",
            Some("service_not_provisioned"),
        ),
        (
            json!({ "start_date": "2026-01-01", "end_date": "2027-01-01" }),
            "manual_partner",
            Some("service_not_provisioned"),
        ),
    ];
    for (i, (facts, provisioning, expected)) in table.into_iter().enumerate() {
        let org = org_named(&app, &format!("Org {i}")).await;
        let mut body = facts.clone();
        body["items"] = json!([{ "product": "messaging", "quantity": 3, "provisioning_status": provisioning }]);
        let sub = app.post(&format!("/api/v1/orgs/{org}/subscriptions"), &app.admin, body).await.ok();
        let sub_id = sub["id"].as_str().unwrap().to_string();
        let u = user(&app, &org, &format!("u{i}@example.com")).await;
        for change in [
            json!({ "add": [{ "product": "messaging", "subscription": sub_id }] }),
            json!({ "add": [{ "product": "messaging" }] }),
        ] {
            match expected {
                None => {
                    granted(&app, &org, &u, change).await;
                    granted(&app, &org, &u, json!({ "remove": [{ "product": "messaging" }] })).await;
                }
                Some(code) => {
                    let p = refused(&app, &org, &u, change.clone(), code).await;
                    let message = p["errors"][0]["message"].as_str().unwrap();
                    assert!(message.contains(&format!("u{i}@example.com")), "{message}");
                    if change["add"][0].get("subscription").is_some() {
                        assert!(message.contains(&sub_id), "row {i} ({}): {message}", sub["status"]);
                    }
                }
            }
        }
    }
    // An unusable subscription is passed over for a usable one without a name.
    let u = user(&app, &w.org, "anna@example.com").await;
    let suspended = app
        .post(
            &format!("/api/v1/orgs/{}/subscriptions", w.org),
            &app.admin,
            json!({ "start_date": "2026-01-01", "end_date": "2026-07-01", "suspended": true,
                    "items": [{ "product": "messaging", "quantity": 100 }] }),
        )
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let after = granted(&app, &w.org, &u, json!({ "add": [{ "product": "messaging" }] })).await;
    assert_eq!(after["items"][0]["subscription"], w.sub);
    assert_ne!(after["items"][0]["subscription"], suspended);
}

async fn pending_external_users(backend: Backend) {
    let app = spawn(backend).await;
    let w = rules_world(&app).await;
    let guest = new_user(
        &app,
        &w.org,
        json!({ "email": "guest@partner.example", "kind": "external", "status": "active" }),
    )
    .await;
    granted(
        &app,
        &w.org,
        &guest,
        json!({ "add": [{ "product": "messaging" }, { "product": "cx-essentials" }] }),
    )
    .await;
    assert_eq!(external_emails(&app, &w.org).await, ["guest@partner.example"]);
    // The invitation is re-sent: the user is pending again.
    app.patch(
        &format!("/api/v1/orgs/{}/users/{guest}", w.org),
        &app.admin,
        json!({ "status": "pending" }),
    )
    .await
    .ok();
    for change in [
        json!({ "add": [{ "product": "meetings", "properties": { "site": w.site_on, "account_type": "host" } }] }),
        json!({ "remove": [{ "product": "messaging" }] }),
        json!({ "remove": [{ "product": "messaging" }, { "product": "cx-essentials" }], "add": [{ "product": "calling-professional" }] }),
    ] {
        let p = refused(&app, &w.org, &guest, change, "user_pending").await;
        assert_eq!(
            p["errors"][0]["message"],
            "guest@partner.example is an external user who has not accepted the invitation yet: their licences cannot be changed in place. Remove all of them, then add again."
        );
    }
    // Removing all of them is allowed, and the guest leaves the external list.
    let after = granted(
        &app,
        &w.org,
        &guest,
        json!({ "remove": [{ "product": "messaging" }, { "product": "cx-essentials" }] }),
    )
    .await;
    assert_eq!(held(&after), Vec::<String>::new());
    assert_eq!(external_emails(&app, &w.org).await, Vec::<String>::new());
    // An internal pending user is not affected by the rule.
    let pending_internal = new_user(&app, &w.org, json!({ "email": "new@example.com", "status": "pending" })).await;
    granted(&app, &w.org, &pending_internal, json!({ "add": [{ "product": "messaging" }] })).await;
    granted(&app, &w.org, &pending_internal, json!({ "add": [{ "product": "cx-essentials" }] })).await;
    assert_eq!(app.mismatches().await, 0);
}

async fn every_violation_is_reported_at_once(backend: Backend) {
    let app = spawn(backend).await;
    let w = rules_world(&app).await;
    let u = new_user(&app, &w.bare_org, json!({ "email": "many@example.com" })).await;
    granted(&app, &w.bare_org, &u, json!({ "add": [{ "product": "cx-essentials" }] })).await;
    let p = refused(
        &app,
        &w.bare_org,
        &u,
        json!({ "add": [
            { "product": "calling-standard", "properties": { "phone_number": "12345" } },
            { "product": "calling-professional" },
            { "product": "contact-centre" },
            { "product": "meetings" }
        ] }),
        "validation_failed",
    )
    .await;
    assert_eq!(
        codes(&p),
        [
            "mutually_exclusive",
            "one_per_family",
            "property_invalid",
            "property_missing",
            "property_missing",
            "usage_location_missing",
        ],
        "{p}"
    );
    for e in p["errors"].as_array().unwrap() {
        assert_eq!(e["user"], "many@example.com", "{e}");
        assert!(e["message"].as_str().unwrap().contains("many@example.com"), "{e}");
        assert!(e["product"].is_string(), "{e}");
    }
    assert!(
        p["detail"].as_str().unwrap().starts_with("The change was refused for 6 reasons"),
        "{p}"
    );
}

async fn catalogue_is_validated_when_written(backend: Backend) {
    let app = spawn(backend).await;
    rules_world(&app).await;
    let before = app.snapshot().await;
    let before_products = app.get("/api/v1/products", &app.admin).await.ok();
    // (product, field the refusal must name)
    let table = [
        (
            json!({ "code": "x-unknown", "name": "X", "family": "x", "rules": { "requires": ["no-such-product"] } }),
            "rules.requires",
        ),
        (
            json!({ "code": "x-unknown-ex", "name": "X", "family": "x", "rules": { "excludes": ["no-such-product"] } }),
            "rules.excludes",
        ),
        (
            json!({ "code": "x-contra", "name": "X", "family": "x",
                    "rules": { "requires": ["calling-professional"], "excludes": ["calling-professional"] } }),
            "rules",
        ),
        (
            json!({ "code": "x-outside", "name": "X", "family": "x", "rules": { "compatible_with": ["messaging"] } }),
            "rules.compatible_with",
        ),
        (
            // attendant-console requires calling-professional; this one excludes
            // attendant-console but requires it through a chain.
            json!({ "code": "x-chain", "name": "X", "family": "x",
                    "rules": { "requires": ["attendant-console"], "excludes": ["calling-professional"] } }),
            "rules",
        ),
        (
            json!({ "code": "x-loc", "name": "X", "family": "x", "rules": { "locations": ["Sweden"] } }),
            "rules.locations",
        ),
    ];
    for (product, field) in table {
        let r = app.post("/api/v1/products", &app.admin, product.clone()).await;
        r.problem(422, "validation_failed");
        let named = r.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"].as_str().is_some_and(|f| f.starts_with(field)));
        assert!(named, "{product} should be refused naming {field}: {}", r.body);
        assert!(
            r.body["detail"].as_str().unwrap().contains(product["code"].as_str().unwrap()) || field == "rules.locations",
            "{}",
            r.body
        );
    }
    // A requires cycle through a PATCH of an existing product.
    let r = app
        .patch(
            "/api/v1/products/calling-professional",
            &app.admin,
            json!({ "rules": { "exclusive_in_family": true, "requires": ["attendant-console"] } }),
        )
        .await;
    r.problem(422, "validation_failed");
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("goes round in a circle (attendant-console → calling-professional → attendant-console)"),
        "{}",
        r.body
    );
    assert_eq!(r.body["errors"][0]["field"], "rules.requires");
    // Making the migration pair point outside the family by moving a product.
    let r = app
        .patch("/api/v1/products/ucm-registration", &app.admin, json!({ "family": "on-premises" }))
        .await;
    r.problem(422, "validation_failed");
    assert_eq!(r.body["errors"][0]["field"], "rules.compatible_with", "{}", r.body);
    assert_eq!(app.snapshot().await, before, "a refused catalogue write changed something");
    assert_eq!(app.get("/api/v1/products", &app.admin).await.ok(), before_products);
}

async fn external_emails(app: &TestApp, org: &str) -> Vec<String> {
    app.get(&format!("/api/v1/orgs/{org}/users?kind=external"), &app.admin).await.ok()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_string())
        .collect()
}

/// Random changes through the API: a refused one writes nothing (the whole
/// database is compared), an accepted one leaves every pool's counter equal
/// to its assignment rows and the user's licences as the answer says.
async fn random_changes_write_all_or_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let w = rules_world(&app).await;
    let users = [
        new_user(&app, &w.org, json!({ "email": "r0@example.com" })).await,
        new_user(&app, &w.org, json!({ "email": "r1@example.com", "usage_location": "US" })).await,
        new_user(&app, &w.org, json!({ "email": "r2@example.com", "site_admin_of": [w.site_on] })).await,
    ];
    // Few seats, so that seats run out too.
    let scarce = subscription(
        &app,
        &w.org,
        json!([{ "product": "calling-professional", "quantity": 1 }, { "product": "meetings", "quantity": 1 }]),
    )
    .await;
    let products = [
        "cx-essentials",
        "calling-standard",
        "calling-professional",
        "ucm-registration",
        "attendant-console",
        "meetings",
        "messaging",
        "contact-centre",
    ];
    let meetings_properties = [
        json!({ "site": w.site_on, "account_type": "attendee" }),
        json!({ "site": w.site_off, "account_type": "attendee" }),
        json!({ "site": w.site_on, "account_type": "host" }),
        json!({ "site": w.site_off, "account_type": "host" }),
        json!({ "site": w.site_on }),
    ];
    let calling_properties = [json!({}), json!({ "extension": "1234" }), json!({ "extension": "1" })];
    // xorshift: reproducible without another dependency.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let (mut accepted, mut refused_count) = (0, 0);
    for _ in 0..80 {
        let user = &users[next(users.len())];
        let mut add = Vec::new();
        for _ in 0..next(3) {
            let product = products[next(products.len())];
            let properties = match product {
                "meetings" => meetings_properties[next(meetings_properties.len())].clone(),
                "calling-standard" | "calling-professional" => calling_properties[next(calling_properties.len())].clone(),
                _ => json!({}),
            };
            let mut a = json!({ "product": product, "properties": properties });
            match next(4) {
                0 => a["subscription"] = json!(scarce),
                1 => a["subscription"] = json!(w.sub),
                _ => {}
            }
            add.push(a);
        }
        let held_now = held(&app.get(&licenses_path(&w.org, user), &app.admin).await.ok());
        let remove: Vec<Value> = (0..next(2))
            .filter(|_| !held_now.is_empty())
            .map(|_| json!({ "product": held_now[next(held_now.len())] }))
            .collect();
        if add.is_empty() && remove.is_empty() {
            continue;
        }
        let change = json!({ "add": add, "remove": remove, "add_required": next(2) == 0 });
        let before = app.snapshot().await;
        let r = app.post(&licenses_path(&w.org, user), &app.admin, change.clone()).await;
        if r.status.is_success() {
            accepted += 1;
            let now = app.get(&licenses_path(&w.org, user), &app.admin).await.ok();
            assert_eq!(now["items"], r.body["items"], "after {change}");
            assert_eq!(app.mismatches().await, 0, "after {change}");
        } else {
            refused_count += 1;
            assert_eq!(r.status.as_u16(), 422, "{change}: {}", r.body);
            assert!(!r.body["errors"].as_array().unwrap().is_empty(), "{}", r.body);
            assert_eq!(app.snapshot().await, before, "refused {change} wrote something: {}", r.body);
        }
    }
    eprintln!("random changes: accepted {accepted}, refused {refused_count}");
    assert!(accepted >= 5 && refused_count >= 5, "accepted {accepted}, refused {refused_count}");
}
