//! The Identity provisioning page in a real browser: an org super admin
//! opens it from the org's navigation, creates a SCIM token (its secret and
//! the base URL shown once), and the identity provider's requests with it
//! show on the page: the last sync, a failed request and a licence its
//! template could not give. The deactivation setting is saved, the token
//! revoked. Each state is checked by axe-core and saved as screenshots.

use std::time::Instant;

use fantoccini::{Client, Locator};
use serde_json::json;

use allot_domain::access::Role;
use allot_server::app::admins::{create_admin_as_operator, AdminSpec};

use crate::both_backends;
use crate::browser::{assert_accessible, browser, click, heading, screenshots, shows, type_into, PASSWORD, WAIT};
use crate::kit::*;

both_backends!(an_org_super_admin_connects_an_identity_provider_in_a_browser);

fn workspace_screenshot(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/screenshots")
        .join(file)
}

async fn value_of(c: &Client, id: &str) -> String {
    let field = c.wait().at_most(WAIT).for_element(Locator::Id(id)).await.expect(id);
    field.prop("value").await.expect("value").unwrap_or_default()
}

async fn an_org_super_admin_connects_an_identity_provider_in_a_browser(backend: Backend) {
    let app = spawn(backend).await;
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let name = format!("provisioning-{}", if backend == Backend::Sqlite { "sqlite" } else { "postgres" });
    let w = world(&app).await;
    // Messaging has one seat: the second user's template is refused.
    let r = app
        .post(
            &format!("/api/v1/orgs/{}/license-templates", w.org),
            &app.admin,
            json!({ "name": "Everyone", "scope": "org", "licenses": [{ "product": "messaging" }] }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    let spec = AdminSpec {
        email: "idp@a.example",
        display_name: Some("Ida Admin"),
        role: Role::OrgSuperAdmin,
        partner: None,
        org: Some(&w.org),
    };
    create_admin_as_operator(&app.store, &spec, PASSWORD, today()).await.expect("admin");
    c.goto(&format!("{}/ui/login", app.url)).await.expect("open");
    type_into(&c, "email", "idp@a.example").await;
    type_into(&c, "password", &format!("{PASSWORD}\u{E007}")).await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath("//button[normalize-space()='Sign out']"))
        .await
        .expect("signed in");

    // From the org's pages to Identity provisioning.
    c.goto(&format!("{}/ui/orgs/{}", app.url, w.org)).await.expect("overview");
    click(&c, Locator::LinkText("Identity provisioning")).await;
    heading(&c, "Identity provisioning").await;
    shows(&c, "No SCIM token yet").await;
    shows(&c, "No errors recorded.").await;
    let base = value_of(&c, "base-url").await;
    assert_eq!(base, format!("{}/scim/v2/orgs/{}", app.url, w.org));
    assert_accessible(&c, "identity provisioning (new)").await;
    screenshots(&c, &format!("{name}-new")).await;

    // A token, shown once.
    type_into(&c, "token-name", "Entra ID").await;
    click(&c, Locator::XPath("//button[normalize-space()='Create SCIM token']")).await;
    let secret = value_of(&c, "secret").await;
    assert!(!secret.is_empty());
    assert_eq!(value_of(&c, "base-url").await, base);
    assert_accessible(&c, "SCIM token created").await;
    screenshots(&c, &format!("{name}-token")).await;

    // The provider connects: two users (the second's licence is refused),
    // and one request it got wrong.
    for (n, email) in ["ann@a.example", "bo@a.example"].iter().enumerate() {
        let r = app
            .client
            .post(format!("{base}/Users"))
            .bearer_auth(&secret)
            .header("content-type", "application/scim+json")
            .body(json!({ "userName": email, "externalId": format!("E-{n}"), "active": true }).to_string())
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 201);
    }
    let r = app
        .client
        .get(format!("{base}/Users?filter=userName%20zz%20%22x%22"))
        .bearer_auth(&secret)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 400);

    click(&c, Locator::LinkText("Back to identity provisioning")).await;
    heading(&c, "Identity provisioning").await;
    shows(&c, "Entra ID").await;
    shows(&c, "invalidFilter").await;
    shows(&c, "bo@a.example was created without its template's licenses").await;
    // The token's use is noted off the request's path: wait for it.
    let deadline = Instant::now() + WAIT;
    while c.source().await.expect("source").contains("never: no SCIM token") {
        assert!(Instant::now() < deadline, "the last sync never showed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        c.refresh().await.expect("reload");
    }
    assert_accessible(&c, "identity provisioning (in use)").await;
    screenshots(&c, &format!("{name}-in-use")).await;
    // The lower half: the setting and the errors.
    c.execute("document.querySelector('input[name=keep]').scrollIntoView()", vec![])
        .await
        .expect("scroll");
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(workspace_screenshot(&format!("{name}-errors-1280.png")), png).expect("save");

    // The setting, saved.
    click(&c, Locator::Css("input[name=keep]")).await;
    click(&c, Locator::XPath("//button[normalize-space()='Save']")).await;
    // The form posts and the page comes back: wait for the stored setting,
    // then see it on a fresh page.
    let deadline = Instant::now() + WAIT;
    loop {
        let o = app.get(&format!("/api/v1/orgs/{}", w.org), &app.admin).await.ok();
        if o["keep_licenses_on_deactivation"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "the setting was not saved: {o}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    c.goto(&format!("{}/ui/orgs/{}/provisioning", app.url, w.org))
        .await
        .expect("reopen");
    heading(&c, "Identity provisioning").await;
    let ticked = c
        .find(Locator::Css("input[name=keep]"))
        .await
        .expect("box")
        .prop("checked")
        .await
        .expect("checked");
    assert_eq!(ticked.as_deref(), Some("true"));

    // Revoked: the provider is shut out at once.
    click(&c, Locator::XPath("//button[@aria-label='Revoke Entra ID']")).await;
    shows(&c, "No SCIM token yet").await;
    let r = app
        .client
        .get(format!("{base}/Users"))
        .bearer_auth(&secret)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
}
