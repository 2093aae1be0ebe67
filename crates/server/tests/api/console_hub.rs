//! The console's partner hub and subscription pages at the HTTP level: the
//! Customers list with its any-match status filter kept in the URL, the
//! Partners list, Cancel subscription with its guard (move users as a job,
//! or a forced cancel confirmed by the subscription's name), the
//! provisioning-details form, and Purchase requests.

use reqwest::header::LOCATION;
use reqwest::StatusCode;
use serde_json::json;

use allot_domain::access::Role;

use crate::both_backends;
use crate::kit::*;
use crate::ui_kit::*;

both_backends!(
    customers_filtered_by_any_chosen_status,
    cancel_subscription_moves_users_first,
    purchase_requests_and_provisioning_details
);

/// The customers a Customers page lists, in order.
fn listed(html: &str) -> Vec<String> {
    html.split("<th scope=\"row\" data-label=\"Customer\"><a href=\"/ui/orgs/")
        .skip(1)
        .map(|part| part.split('>').nth(1).unwrap_or("").split('<').next().unwrap_or("").to_string())
        .collect()
}

async fn customers_filtered_by_any_chosen_status(backend: Backend) {
    let app = spawn(backend).await;
    product(&app, "meetings", "meetings").await;
    let partner = app.post("/api/v1/partners", &app.admin, json!({ "name": "Reseller" })).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = app.post("/api/v1/partners", &app.admin, json!({ "name": "Other" })).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sub_of = |o: String, trial: bool, end: &'static str, provisioning: &'static str| {
        let app = &app;
        async move {
            app.post(
                &format!("/api/v1/orgs/{o}/subscriptions"),
                &app.admin,
                json!({ "trial": trial, "start_date": "2026-01-01", "end_date": end,
                        "items": [{ "product": "meetings", "quantity": 5, "provisioning_status": provisioning }] }),
            )
            .await
            .ok();
        }
    };
    // Today is 2026-06-15.
    let awaiting = org(&app, "Awaiting AB", Some(&partner)).await;
    sub_of(awaiting.clone(), false, "2027-06-01", "awaiting_details").await;
    let expiring = org(&app, "Expiring AB", Some(&partner)).await;
    sub_of(expiring.clone(), false, "2026-07-01", "provisioned").await;
    let both = org(&app, "Both AB", Some(&partner)).await;
    sub_of(both.clone(), false, "2026-07-10", "awaiting_details").await;
    let quiet = org(&app, "Quiet AB", Some(&partner)).await;
    sub_of(quiet.clone(), false, "2027-06-01", "provisioned").await;
    let trial = org(&app, "Trial AB", Some(&partner)).await;
    sub_of(trial.clone(), true, "2026-07-01", "provisioned").await;
    let elsewhere = org(&app, "Elsewhere AB", Some(&other)).await;
    sub_of(elsewhere.clone(), false, "2026-07-01", "awaiting_details").await;

    make_admin_as(&app, "pa@reseller.example", Role::PartnerAdmin, Some(&partner), None).await;
    let b = browser();
    let s = sign_in(&app, &b, "pa@reseller.example").await;
    let base = format!("/ui/partners/{partner}/customers");
    let html = page_of(&app, &b, &s, &base).await.text().await.unwrap();
    assert!(html.contains("<h1>Customers</h1>"));
    assert!(html.contains("Select a filter…"));
    assert!(html.contains(">Provisioning status<") && html.contains(">Subscription status<"));
    assert_eq!(listed(&html), ["Awaiting AB", "Both AB", "Expiring AB", "Quiet AB", "Trial AB"]);
    assert!(
        html.contains(&format!("href=\"/ui/orgs/{awaiting}\"")),
        "a customer links to its overview"
    );

    // The form sends one parameter per box: answered with the URL that keeps the filter.
    let r = page_of(
        &app,
        &b,
        &s,
        &format!("{base}?subscription_status=expiring_30d&provisioning_status=awaiting_details&q=&sort=name"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "one value each: no redirect");
    let html = r.text().await.unwrap();
    assert_eq!(listed(&html), ["Awaiting AB", "Both AB", "Expiring AB"], "any match, not all");
    assert!(html.contains("(2 chosen)"));
    let r = page_of(
        &app,
        &b,
        &s,
        &format!("{base}?subscription_status=expiring_30d&subscription_status=trial_expiring_30d&q=AB"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()[LOCATION].to_str().unwrap().to_string();
    assert_eq!(to, format!("{base}?subscription_status=expiring_30d%2Ctrial_expiring_30d&q=AB"));
    let html = page_of(&app, &b, &s, &to).await.text().await.unwrap();
    assert_eq!(listed(&html), ["Both AB", "Expiring AB", "Trial AB"]);
    // Search and sort.
    let html = page_of(&app, &b, &s, &format!("{base}?q=ex&sort=-name"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(listed(&html), ["Expiring AB"]);
    let html = page_of(&app, &b, &s, &format!("{base}?sort=-name")).await.text().await.unwrap();
    assert_eq!(listed(&html)[0], "Trial AB");
    // A status that does not exist is refused with the sentence.
    let r = page_of(&app, &b, &s, &format!("{base}?subscription_status=nope")).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Another partner's customers: the common 404; its customer's overview too.
    let theirs = page_of(&app, &b, &s, &format!("/ui/partners/{other}/customers")).await;
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
    let r = page_of(&app, &b, &s, &format!("/ui/orgs/{elsewhere}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The partner's own customer's overview opens.
    assert_eq!(page_of(&app, &b, &s, &format!("/ui/orgs/{both}")).await.status(), StatusCode::OK);

    // The provider: every customer, Partners with each one's customers.
    make_admin(&app, "ops@provider.example").await;
    let p = sign_in(&app, &b, "ops@provider.example").await;
    let html = page_of(&app, &b, &p, "/ui/customers?provisioning_status=awaiting_details")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(listed(&html), ["Awaiting AB", "Both AB", "Elsewhere AB"]);
    assert!(html.contains(">Other<"), "the provider sees each customer's partner");
    let html = page_of(&app, &b, &p, "/ui/partners").await.text().await.unwrap();
    assert!(html.contains("<h1>Partners</h1>") && html.contains(&format!("/ui/partners/{other}/customers")));
    // A partner's list of partners holds itself only.
    let html = page_of(&app, &b, &s, "/ui/partners").await.text().await.unwrap();
    assert!(html.contains(&format!("/ui/partners/{partner}/customers")) && !html.contains(&other));
}

async fn cancel_subscription_moves_users_first(backend: Backend) {
    let app = spawn(backend).await;
    let c = crate::moves::calling_org(&app, 6).await;
    let before = crate::moves::service_data_rows(&app, &c.org, "calling").await;
    // Cancelling is the seller's: the provider here (the org has no partner).
    make_admin(&app, "ops@provider.example").await;
    let b = browser();
    let s = sign_in(&app, &b, "ops@provider.example").await;
    let page_a = format!("/ui/orgs/{}/subscriptions/{}", c.org, c.a);
    let html = page_of(&app, &b, &s, &page_a).await.text().await.unwrap();
    let csrf = csrf_field(&html);
    assert!(html.contains("6 users hold seats of this subscription."));
    // Cancel: refused while users hold seats, with the choices.
    let snapshot = app.snapshot().await;
    let cancel = format!("{page_a}/cancel");
    let r = post_form(&app, &b, &s, &cancel, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let html = r.text().await.unwrap();
    assert!(html.contains(&format!("6 users hold seats of subscription {}", c.a)), "{html}");
    assert!(html.contains("Move users to") && html.contains("Cancel anyway"));
    assert!(html.contains("6 users lose their licenses: calling-professional (6 users)"));
    assert_eq!(app.snapshot().await, snapshot);
    // A forced cancel without the name typed: refused, nothing changed.
    let r = post_form(&app, &b, &s, &cancel, &[("csrf", &csrf), ("force", "1"), ("confirm", "yes")]).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains(&format!("Type the subscription's name, {}", c.a)));
    assert_eq!(app.snapshot().await, snapshot);
    // Without CSRF: 403.
    let r = post_form(&app, &b, &s, &cancel, &[("csrf", "forged"), ("move_users_to", &c.b)]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.snapshot().await, snapshot);
    // Move users to B: a job with progress, then A is cancelled; data kept.
    let r = post_form(&app, &b, &s, &cancel, &[("csrf", &csrf), ("move_users_to", &c.b)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let job = r.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(job.starts_with("/ui/jobs/"));
    finished_job(&app, job.trim_start_matches("/ui/jobs/")).await;
    let html = page_of(&app, &b, &s, &job).await.text().await.unwrap();
    assert!(
        html.contains("Move users, then cancel a subscription") && html.contains("succeeded"),
        "{html}"
    );
    let html = page_of(&app, &b, &s, &page_a).await.text().await.unwrap();
    assert!(html.contains("<dt>Cancelled</dt><dd>yes</dd>"), "{html}");
    assert_eq!(crate::moves::service_data_rows(&app, &c.org, "calling").await, before);

    // A forced cancel with the name typed: a job that removes, then cancels.
    let html = page_of(&app, &b, &s, &format!("/ui/orgs/{}/subscriptions/{}", c.org, c.b))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("6 users hold seats"));
    let r = post_form(
        &app,
        &b,
        &s,
        &format!("/ui/orgs/{}/subscriptions/{}/cancel", c.org, c.b),
        &[("csrf", &csrf), ("force", "1"), ("confirm", &c.b)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let job = r.headers()[LOCATION].to_str().unwrap().to_string();
    let j = finished_job(&app, job.trim_start_matches("/ui/jobs/")).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    let l = app
        .get(&format!("/api/v1/orgs/{}/users/{}/licenses", c.org, c.users[0]), &app.admin)
        .await
        .ok();
    assert_eq!(l["items"].as_array().unwrap().len(), 0, "the forced cancel took the licenses");
    // An empty subscription is cancelled at once.
    let empty = subscription(&app, &c.org, json!([{ "product": "calling-standard", "quantity": 2 }])).await;
    let r = post_form(
        &app,
        &b,
        &s,
        &format!("/ui/orgs/{}/subscriptions/{empty}/cancel", c.org),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()[LOCATION].to_str().unwrap(),
        format!("/ui/orgs/{}/subscriptions/{empty}", c.org)
    );
    // An org admin (no WriteSubscriptions) does not see the control; a direct post is 403.
    make_admin_as(&app, "admin@calling.example", Role::OrgAdmin, None, Some(&c.org)).await;
    let a = sign_in(&app, &b, "admin@calling.example").await;
    let other = subscription(&app, &c.org, json!([{ "product": "calling-standard", "quantity": 2 }])).await;
    let html = page_of(&app, &b, &a, &format!("/ui/orgs/{}/subscriptions/{other}", c.org))
        .await
        .text()
        .await
        .unwrap();
    assert!(!html.contains("Cancel subscription"));
    let r = post_form(
        &app,
        &b,
        &a,
        &format!("/ui/orgs/{}/subscriptions/{other}/cancel", c.org),
        &[("csrf", &csrf_field(&html))],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

async fn purchase_requests_and_provisioning_details(backend: Backend) {
    let app = spawn(backend).await;
    product(&app, "meetings", "meetings").await;
    let partner = app.post("/api/v1/partners", &app.admin, json!({ "name": "Reseller" })).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let o = org(&app, "Buyer AB", Some(&partner)).await;
    let sub = subscription(
        &app,
        &o,
        json!([{ "product": "meetings", "quantity": 1, "provisioning_status": "awaiting_details" }]),
    )
    .await;
    make_admin_as(&app, "boss@buyer.example", Role::OrgSuperAdmin, None, Some(&o)).await;
    make_admin_as(&app, "admin@buyer.example", Role::OrgAdmin, None, Some(&o)).await;
    make_admin_as(&app, "pa@reseller.example", Role::PartnerAdmin, Some(&partner), None).await;
    let b = browser();
    let boss = sign_in(&app, &b, "boss@buyer.example").await;
    let admin = sign_in(&app, &b, "admin@buyer.example").await;
    let pa = sign_in(&app, &b, "pa@reseller.example").await;

    // Provisioning details: a line without a colon is refused and kept; then done.
    let sub_page = format!("/ui/orgs/{o}/subscriptions/{sub}");
    let html = page_of(&app, &b, &admin, &sub_page).await.text().await.unwrap();
    assert!(html.contains("Provisioning details for meetings"));
    let csrf = csrf_field(&html);
    let details = format!("{sub_page}/items/meetings/details");
    let r = post_form(
        &app,
        &b,
        &admin,
        &details,
        &[("csrf", &csrf), ("details", "site_url setup.example.com")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(html.contains("Line 1 has no colon") && html.contains("site_url setup.example.com</textarea>"));
    let r = post_form(
        &app,
        &b,
        &admin,
        &details,
        &[("csrf", &csrf), ("details", "site_url: setup.example.com")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let s = app.get(&format!("/api/v1/orgs/{o}/subscriptions/{sub}"), &app.admin).await.ok();
    assert_eq!(s["items"][0]["provisioning_status"], "provisioning");

    // Purchase requests: no payment method, so the super admin is told whom to contact.
    let purchases = format!("/ui/orgs/{o}/purchases");
    let html = page_of(&app, &b, &boss, &purchases).await.text().await.unwrap();
    assert!(html.contains("<h1>Purchase requests</h1>"));
    assert!(html.contains("no payment method on file") && html.contains("your partner Reseller"));
    let html = page_of(&app, &b, &admin, &purchases).await.text().await.unwrap();
    assert!(html.contains("To buy more seats, contact your partner Reseller."));
    assert!(!html.contains("Request seats"));
    app.patch(&format!("/api/v1/orgs/{o}"), &app.admin, json!({ "payment_method_on_file": true }))
        .await
        .ok();
    let html = page_of(&app, &b, &boss, &purchases).await.text().await.unwrap();
    let bcsrf = csrf_field(&html);
    let r = post_form(
        &app,
        &b,
        &boss,
        &purchases,
        &[("csrf", &bcsrf), ("product", "meetings"), ("quantity", "0"), ("subscription", &sub)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "zero seats");
    for q in ["4", "2"] {
        let r = post_form(
            &app,
            &b,
            &boss,
            &purchases,
            &[("csrf", &bcsrf), ("product", "meetings"), ("quantity", q), ("subscription", &sub)],
        )
        .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
    }
    // The org's partner fulfils one and rejects the other.
    let html = page_of(&app, &b, &pa, &purchases).await.text().await.unwrap();
    assert!(html.contains("Pending (2)"));
    let pcsrf = csrf_field(&html);
    let ids: Vec<String> = html
        .split(&format!("action=\"/ui/orgs/{o}/purchases/"))
        .skip(1)
        .map(|p| p.split('/').next().unwrap().to_string())
        .collect();
    let (first, second) = (ids[0].clone(), ids[2].clone());
    assert_ne!(first, second);
    // The org's own admin may not decide: 403, nothing changed.
    let snapshot = app.snapshot().await;
    let r = post_form(&app, &b, &boss, &format!("{purchases}/{first}/fulfil"), &[("csrf", &bcsrf)]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.snapshot().await, snapshot);
    let r = post_form(&app, &b, &pa, &format!("{purchases}/{first}/fulfil"), &[("csrf", &pcsrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = post_form(
        &app,
        &b,
        &pa,
        &format!("{purchases}/{second}/reject"),
        &[("csrf", &pcsrf), ("reason", "Budget closed")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let html = page_of(&app, &b, &boss, &purchases).await.text().await.unwrap();
    assert!(html.contains("Pending (0)") && html.contains("Fulfilled (1)") && html.contains("Rejected (1)"));
    assert!(html.contains("Budget closed"));
    let s = app.get(&format!("/api/v1/orgs/{o}/subscriptions/{sub}"), &app.admin).await.ok();
    let q = s["items"][0]["quantity"].as_i64().unwrap();
    assert!(q == 5 || q == 3, "one request of 4 or 2 seats was added to the 1: {q}");
}
