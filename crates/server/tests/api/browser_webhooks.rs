//! The Webhooks pages in a real browser: an org super admin creates an
//! endpoint on a receiver in the test (its secret shown once), sends a test
//! event and sees it delivered, rotates the secret, disables the endpoint
//! and deletes it; the create form refuses an http:// URL with the API's
//! sentence. A partner admin and the provider admin each reach their own
//! scope's page from the top bar, create an endpoint there and see a
//! customer's change delivered to it. Each page is checked by axe-core and
//! saved as screenshots.

use fantoccini::{Client, Locator};
use serde_json::json;

use allot_domain::access::Role;
use allot_server::app::admins::{create_admin_as_operator, AdminSpec};

use crate::both_backends;
use crate::browser::{assert_accessible, browser, click, heading, screenshots, shows, type_into, PASSWORD, WAIT};
use crate::kit::*;
use crate::webhooks::{webhook_config, Receiver};

both_backends!(
    an_org_super_admin_manages_a_webhook_in_a_browser,
    partner_and_provider_admins_have_their_own_webhooks_pages,
);

async fn sign_in(app: &TestApp, c: &Client, email: &str) {
    c.goto(&format!("{}/ui/login", app.url)).await.expect("open");
    type_into(c, "email", email).await;
    type_into(c, "password", &format!("{PASSWORD}\u{E007}")).await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath("//button[normalize-space()='Sign out']"))
        .await
        .expect("signed in");
}

async fn an_org_super_admin_manages_a_webhook_in_a_browser(backend: Backend) {
    // http:// on loopback is allowed for the delivery; a second server with
    // the production rules shows the refusal.
    let app = spawn_with_config(backend, webhook_config()).await;
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let name = format!("webhooks-{}", if backend == Backend::Sqlite { "sqlite" } else { "postgres" });
    let rx = Receiver::start().await;
    let w = world(&app).await;
    let spec = AdminSpec {
        email: "hooks@a.example",
        display_name: Some("Hook Keeper"),
        role: Role::OrgSuperAdmin,
        partner: None,
        org: Some(&w.org),
    };
    create_admin_as_operator(&app.store, &spec, PASSWORD, today()).await.expect("admin");
    sign_in(&app, &c, "hooks@a.example").await;

    // The top bar leads to the org's Webhooks page.
    click(&c, Locator::LinkText("Webhooks")).await;
    heading(&c, "Webhooks").await;
    shows(&c, "No webhooks yet").await;
    assert!(c
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with(&format!("/ui/orgs/{}/webhooks", w.org)));
    assert_accessible(&c, "webhooks (empty)").await;
    screenshots(&c, &format!("{name}-empty")).await;

    // Create one for two event types.
    type_into(&c, "url", &format!("{}/crm", rx.url)).await;
    type_into(&c, "description", "CRM sync").await;
    click(&c, Locator::Css("input[name=all]")).await;
    click(&c, Locator::Css("input[name=event][value='license.assigned']")).await;
    click(&c, Locator::Css("input[name=event][value='license.removed']")).await;
    click(&c, Locator::XPath("//button[normalize-space()='Create webhook']")).await;
    let secret = c.wait().at_most(WAIT).for_element(Locator::Id("secret")).await.expect("the secret");
    let secret = secret.prop("value").await.expect("value").unwrap_or_default();
    assert!(secret.starts_with("whsec_"), "{secret}");
    rx.secret("/crm", &secret);
    assert_accessible(&c, "webhook created").await;
    screenshots(&c, &format!("{name}-created")).await;

    // Its page: send a test event; the delivery shows as delivered, verified by the receiver.
    click(&c, Locator::LinkText("Open the webhook")).await;
    heading(&c, "Webhooks").await;
    shows(&c, "license.assigned, license.removed").await;
    click(&c, Locator::XPath("//button[normalize-space()='Send test event']")).await;
    shows(&c, "A test event is on its way").await;
    let got = rx.wait_for("/crm", 1).await;
    assert!(got[0].verified && got[0].body["type"] == "webhook.test", "{got:?}");
    // A licence change reaches it too.
    let u = user(&app, &w.org, "anna@a.example").await;
    app.post(
        &format!("/api/v1/orgs/{}/users/{u}/licenses", w.org),
        &app.admin,
        json!({ "add": [{ "product": "meetings" }] }),
    )
    .await
    .ok();
    rx.wait_for("/crm", 2).await;
    // Reloading the page (a GET after the test's redirect) sends nothing again.
    c.refresh().await.expect("reload");
    shows(&c, "Delivered").await;
    shows(&c, "HTTP 200").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(rx.got("/crm").len(), 2, "a reload sent the test event again");
    assert_accessible(&c, "webhook page").await;
    screenshots(&c, &format!("{name}-page")).await;

    // Rotate: the new secret is shown once; disable; then delete.
    click(&c, Locator::XPath("//button[normalize-space()='Rotate secret']")).await;
    let rotated = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("secret"))
        .await
        .expect("the new secret");
    let rotated = rotated.prop("value").await.expect("value").unwrap_or_default();
    assert!(rotated.starts_with("whsec_") && rotated != secret);
    click(&c, Locator::XPath("//button[normalize-space()='Disable']")).await;
    shows(&c, "Disabled").await;
    click(&c, Locator::XPath("//button[normalize-space()='Enable']")).await;
    shows(&c, "Enabled").await;
    click(&c, Locator::XPath("//button[normalize-space()='Delete']")).await;
    shows(&c, "No webhooks yet").await;

    // A refused URL: the API's sentence beside the form, what was typed kept.
    let mut strict = webhook_config();
    strict.webhooks.targets = Default::default();
    let prod = spawn_with_config(backend, strict).await;
    let org2 = org(&prod, "Strict AB", None).await;
    let spec = AdminSpec {
        email: "strict@b.example",
        display_name: None,
        role: Role::OrgSuperAdmin,
        partner: None,
        org: Some(&org2),
    };
    create_admin_as_operator(&prod.store, &spec, PASSWORD, today())
        .await
        .expect("admin");
    sign_in(&prod, &c, "strict@b.example").await;
    c.goto(&format!("{}/ui/orgs/{org2}/webhooks", prod.url)).await.expect("open");
    type_into(&c, "url", "http://crm.example/hooks").await;
    click(&c, Locator::XPath("//button[normalize-space()='Create webhook']")).await;
    let alert = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("[role=alert]"))
        .await
        .expect("a refusal");
    assert!(alert.text().await.unwrap().contains("https"), "{}", alert.text().await.unwrap());
    let kept = c
        .find(Locator::Id("url"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(kept, "http://crm.example/hooks");
    assert_accessible(&c, "webhook refused").await;
    screenshots(&c, &format!("{name}-refused")).await;
}

/// Signs in as a new admin of `role`, follows the top bar's Webhooks link
/// to `expected_path`, creates an endpoint for every event on the
/// receiver's `rx_path` and returns its secret (shown once).
async fn create_from_the_top_bar(
    app: &TestApp,
    c: &Client,
    rx: &Receiver,
    spec: &AdminSpec<'_>,
    expected_path: &str,
    rx_path: &str,
    name: &str,
) {
    create_admin_as_operator(&app.store, spec, PASSWORD, today()).await.expect("admin");
    sign_in(app, c, spec.email).await;
    click(c, Locator::LinkText("Webhooks")).await;
    heading(c, "Webhooks").await;
    shows(c, "No webhooks yet").await;
    assert_eq!(c.current_url().await.unwrap().path(), expected_path);
    assert_accessible(c, &format!("{name} webhooks (empty)")).await;
    type_into(c, "url", &format!("{}{rx_path}", rx.url)).await;
    type_into(c, "description", &format!("{name} CRM")).await;
    click(c, Locator::XPath("//button[normalize-space()='Create webhook']")).await;
    let secret = c.wait().at_most(WAIT).for_element(Locator::Id("secret")).await.expect("the secret");
    let secret = secret.prop("value").await.expect("value").unwrap_or_default();
    assert!(secret.starts_with("whsec_"), "{secret}");
    rx.secret(rx_path, &secret);
    screenshots(c, &format!("{name}-created")).await;
    click(c, Locator::LinkText("Open the webhook")).await;
    heading(c, "Webhooks").await;
    shows(c, "All events").await;
}

async fn partner_and_provider_admins_have_their_own_webhooks_pages(backend: Backend) {
    let app = spawn_with_config(backend, webhook_config()).await;
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let name = format!("webhooks-scopes-{}", if backend == Backend::Sqlite { "sqlite" } else { "postgres" });
    let rx = Receiver::start().await;
    let w = world(&app).await;

    let partner = AdminSpec {
        email: "hooks@partner.example",
        display_name: Some("Partner Hooks"),
        role: Role::PartnerAdmin,
        partner: Some(&w.partner),
        org: None,
    };
    create_from_the_top_bar(
        &app,
        &c,
        &rx,
        &partner,
        &format!("/ui/partners/{}/webhooks", w.partner),
        "/partner",
        &format!("{name}-partner"),
    )
    .await;
    // A change of one of the partner's customers is delivered to the partner's endpoint.
    let u = user(&app, &w.org, "pia@a.example").await;
    app.post(
        &format!("/api/v1/orgs/{}/users/{u}/licenses", w.org),
        &app.admin,
        json!({ "add": [{ "product": "meetings" }] }),
    )
    .await
    .ok();
    let got = rx.wait_for("/partner", 2).await;
    assert!(got.iter().all(|r| r.verified), "{got:?}");
    assert!(
        got.iter()
            .any(|r| r.body["type"] == "license.assigned" && r.body["data"]["user"] == json!(u)),
        "{got:?}"
    );
    c.refresh().await.expect("reload");
    shows(&c, "Delivered").await;
    assert_accessible(&c, "partner webhook page").await;
    screenshots(&c, &format!("{name}-partner-page")).await;

    click(&c, Locator::XPath("//button[normalize-space()='Sign out']")).await;
    let provider = AdminSpec {
        email: "hooks@provider.example",
        display_name: Some("Provider Hooks"),
        role: Role::ProviderAdmin,
        partner: None,
        org: None,
    };
    create_from_the_top_bar(&app, &c, &rx, &provider, "/ui/webhooks", "/provider", &format!("{name}-provider")).await;
    let v = user(&app, &w.org, "per@a.example").await;
    app.post(
        &format!("/api/v1/orgs/{}/users/{v}/licenses", w.org),
        &app.admin,
        json!({ "add": [{ "product": "meetings" }] }),
    )
    .await
    .ok();
    let got = rx.wait_for("/provider", 2).await;
    assert!(got.iter().all(|r| r.verified), "{got:?}");
    assert!(
        got.iter()
            .any(|r| r.body["type"] == "license.assigned" && r.body["data"]["user"] == json!(v)),
        "{got:?}"
    );
    c.refresh().await.expect("reload");
    shows(&c, "Delivered").await;
    assert_accessible(&c, "provider webhook page").await;
    screenshots(&c, &format!("{name}-provider-page")).await;
}
