//! The console in a real browser: Debian's headless Chromium driven through
//! chromedriver (WebDriver, with `fantoccini`), with explicit waits. Each
//! test saves screenshots of its pages under `target/screenshots/` and runs
//! axe-core (fetched pinned from the npm registry for the tests only, never
//! served) on every page it visits: no violation of impact serious or
//! critical.
//!
//! Like PostgreSQL, a machine without the browser fails these tests
//! (`apt-get install chromium chromium-driver`); outside CI,
//! `ALLOT_SKIP_BROWSER=1` skips them instead. `.ci/run` installs both.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use allot_domain::access::Role;
use allot_server::app::admins::{create_admin_as_operator, AdminSpec};

use crate::both_backends;
use crate::kit::*;

both_backends!(
    signing_in_and_out_in_a_browser,
    an_org_admin_edits_licenses_and_selects_users_in_a_browser,
    a_partner_admin_invites_an_org_admin_who_accepts_in_a_browser
);

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The axe-core release the accessibility checks use.
const AXE_VERSION: &str = "4.10.3";
pub(crate) const PASSWORD: &str = "correct horse battery";
/// How long an explicit wait waits before the test fails.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

fn workspace_target() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

/// Whether the browser may be missing (outside CI, when asked by name).
fn skip_allowed() -> bool {
    std::env::var("CI").as_deref() != Ok("true") && std::env::var("ALLOT_SKIP_BROWSER").as_deref() == Ok("1")
}

/// A chromedriver of this test, ended with its browser when the test ends.
pub(crate) struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    /// Kills chromedriver's whole process group: killing chromedriver
    /// alone left the Chromium it started running, re-parented to init,
    /// whenever a test had not closed its session (or had failed before
    /// it could): six browsers left behind per run of the suite.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let killed = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !killed {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A free local port (taken, then given back for chromedriver to use).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts chromedriver and waits until it answers, or says why not.
async fn start_driver() -> Result<Driver, String> {
    for path in [CHROMIUM, CHROMEDRIVER] {
        if !std::path::Path::new(path).exists() {
            return Err(format!("{path} is missing"));
        }
    }
    let port = free_port();
    use std::os::unix::process::CommandExt;
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        // A process group of its own, which Chromium joins: see `Driver`'s drop.
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start chromedriver: {e}"))?;
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = format!("{}/status", driver.url);
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Ok(r) = http.get(&status).send().await {
            if r.status().is_success() {
                return Ok(driver);
            }
        }
        if std::time::Instant::now() > deadline {
            return Err("chromedriver did not answer within 15 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A headless Chromium session at 1280×800, with its chromedriver.
pub(crate) async fn browser() -> Option<(Driver, Client)> {
    let driver = match start_driver().await {
        Ok(d) => d,
        Err(e) if skip_allowed() => {
            eprintln!("SKIPPING browser tests (ALLOT_SKIP_BROWSER=1): {e}");
            return None;
        }
        Err(e) => panic!(
            "the browser tests need Debian's chromium and chromium-driver ({e}); install them, or set ALLOT_SKIP_BROWSER=1 outside CI"
        ),
    };
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800", "--hide-scrollbars"]
        }),
    );
    // With two crypto providers compiled in, rustls wants one chosen for the process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = ClientBuilder::rustls()
        .expect("TLS roots")
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a browser session");
    Some((driver, client))
}

/// axe-core's script, fetched once per machine with npm into `target/`.
fn axe_source() -> &'static str {
    static SOURCE: OnceLock<String> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let dir = workspace_target().join(format!("axe-core-{AXE_VERSION}"));
        let script = dir.join("package/axe.min.js");
        if !script.exists() {
            std::fs::create_dir_all(&dir).expect("a directory for axe-core");
            let packed = Command::new("npm")
                .args(["pack", &format!("axe-core@{AXE_VERSION}"), "--silent"])
                .current_dir(&dir)
                .output()
                .expect("npm (from Node.js) fetches axe-core");
            assert!(
                packed.status.success(),
                "npm pack axe-core: {}",
                String::from_utf8_lossy(&packed.stderr)
            );
            let tarball = format!("axe-core-{AXE_VERSION}.tgz");
            let unpacked = Command::new("tar").args(["xzf", &tarball]).current_dir(&dir).status().expect("tar");
            assert!(unpacked.success(), "unpacking {tarball}");
        }
        std::fs::read_to_string(&script).expect("axe.min.js")
    })
}

/// Runs axe-core on the page; fails on any violation of impact serious or critical.
pub(crate) async fn assert_accessible(c: &Client, page: &str) {
    c.execute(axe_source(), vec![]).await.expect("axe-core loads");
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document).then(r => done(r.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length }))))
                              .catch(e => done([{ id: 'axe-error', impact: 'critical', help: String(e), nodes: 0 }]));",
            vec![],
        )
        .await
        .expect("axe-core runs");
    let bad: Vec<&Value> = found
        .as_array()
        .expect("a list of violations")
        .iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .collect();
    assert!(bad.is_empty(), "{page}: serious or critical accessibility violations: {bad:#?}");
}

/// Saves the page as `target/screenshots/<name>-<width>.png` at 1280×800
/// and at 390 px wide, then goes back to 1280×800.
pub(crate) async fn screenshots(c: &Client, name: &str) {
    let dir = workspace_target().join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    for (w, h) in [(390, 844), (1280, 800)] {
        c.set_window_size(w, h).await.expect("resize");
        let png = c.screenshot().await.expect("screenshot");
        std::fs::write(dir.join(format!("{name}-{w}.png")), png).expect("save screenshot");
    }
}

pub(crate) async fn heading(c: &Client, text: &str) {
    let found = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(&format!("//h1[normalize-space()='{text}']")))
        .await;
    if let Err(e) = found {
        // What the page showed instead, to see why.
        let shown = c
            .find(Locator::Css("main"))
            .await
            .ok()
            .map(|m| async move { m.text().await.unwrap_or_default() });
        let shown = match shown {
            Some(f) => f.await,
            None => String::new(),
        };
        panic!("no heading {text:?} ({e}); the page shows:\n{shown}");
    }
}

async fn signing_in_and_out_in_a_browser(backend: Backend) {
    let app = spawn(backend).await;
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let spec = AdminSpec {
        email: "ada@example.com",
        display_name: Some("Ada Lovelace"),
        role: Role::ProviderAdmin,
        partner: None,
        org: None,
    };
    create_admin_as_operator(&app.store, &spec, PASSWORD, today()).await.expect("admin");
    let name = format!("sign-in-{}", if backend == Backend::Sqlite { "sqlite" } else { "postgres" });

    // A page that needs a session sends to Sign in.
    c.goto(&format!("{}/ui/", app.url)).await.expect("open");
    heading(&c, "Sign in").await;
    assert!(c.current_url().await.expect("url").path().ends_with("/ui/login"));
    assert_accessible(&c, "/ui/login").await;
    screenshots(&c, &format!("{name}-form")).await;

    // A wrong password: the sentence, next to the form.
    c.find(Locator::Id("email"))
        .await
        .expect("email")
        .send_keys("ada@example.com")
        .await
        .expect("type");
    c.find(Locator::Id("password"))
        .await
        .expect("password")
        .send_keys("not the password")
        .await
        .expect("type");
    c.find(Locator::XPath("//button[normalize-space()='Sign in']"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    let alert = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("[role=alert]"))
        .await
        .expect("a refusal");
    assert_eq!(alert.text().await.expect("text"), allot_server::app::admins::SIGN_IN_REFUSED);
    assert_accessible(&c, "/ui/login (refused)").await;

    // The right one, typed as a keyboard user would: Enter submits.
    let password = c.find(Locator::Id("password")).await.expect("password");
    password.send_keys(&format!("{PASSWORD}\u{E007}")).await.expect("type and Enter");
    heading(&c, "Home").await;
    assert_accessible(&c, "/ui/").await;
    screenshots(&c, &format!("{name}-home")).await;

    // API tokens: create one from the form; its secret is shown once.
    c.find(Locator::LinkText("API tokens"))
        .await
        .expect("the link")
        .click()
        .await
        .expect("click");
    heading(&c, "API tokens").await;
    assert_accessible(&c, "/ui/tokens").await;
    c.find(Locator::Id("name"))
        .await
        .expect("name")
        .send_keys("Billing sync")
        .await
        .expect("type");
    c.find(Locator::XPath("//button[normalize-space()='Create token']"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    let secret = c.wait().at_most(WAIT).for_element(Locator::Id("secret")).await.expect("the secret");
    let secret = secret.prop("value").await.expect("value").unwrap_or_default();
    assert!(secret.starts_with("allot_"), "{secret}");
    assert_accessible(&c, "/ui/tokens (created)").await;
    c.find(Locator::LinkText("Back to API tokens"))
        .await
        .expect("back")
        .click()
        .await
        .expect("click");
    heading(&c, "API tokens").await;
    screenshots(&c, &format!("{name}-tokens")).await;

    // The catalogue: a product form refused with the API's sentences, kept as typed.
    product(&app, "meetings", "meetings").await;
    c.find(Locator::LinkText("Catalogue"))
        .await
        .expect("the link")
        .click()
        .await
        .expect("click");
    heading(&c, "Catalogue").await;
    assert_accessible(&c, "/ui/products").await;
    screenshots(&c, &format!("{name}-catalogue")).await;
    c.find(Locator::LinkText("Create a product"))
        .await
        .expect("the link")
        .click()
        .await
        .expect("click");
    heading(&c, "Create a product").await;
    assert_accessible(&c, "/ui/products/new").await;
    for (id, text) in [
        ("code", "webinars"),
        ("name", "Webinars"),
        ("family", "webinars"),
        ("requires", "no-such-product"),
    ] {
        c.find(Locator::Id(id)).await.expect("field").send_keys(text).await.expect("type");
    }
    c.find(Locator::XPath("//button[normalize-space()='Create product']"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    let alert = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("[role=alert]"))
        .await
        .expect("a refusal");
    let said = alert.text().await.expect("text");
    assert!(said.contains("no-such-product"), "{said}");
    assert_eq!(
        c.find(Locator::Id("name"))
            .await
            .expect("name")
            .prop("value")
            .await
            .expect("value")
            .as_deref(),
        Some("Webinars"),
        "the form keeps what was typed"
    );
    assert_accessible(&c, "/ui/products/new (refused)").await;
    screenshots(&c, &format!("{name}-product-refused")).await;
    assert_eq!(
        app.get("/api/v1/products/webinars", &app.admin).await.status,
        404,
        "nothing created"
    );
    // A product's edit form, and the provider's own Admins page.
    c.goto(&format!("{}/ui/products/meetings/edit", app.url)).await.expect("open");
    heading(&c, "Edit product").await;
    assert_accessible(&c, "/ui/products/{code}/edit").await;
    c.find(Locator::LinkText("Admins"))
        .await
        .expect("the link")
        .click()
        .await
        .expect("click");
    heading(&c, "Admins").await;
    assert_accessible(&c, "/ui/admins").await;
    screenshots(&c, &format!("{name}-admins")).await;

    // Sign out: the session ends, and the home page needs signing in again.
    c.find(Locator::XPath("//button[normalize-space()='Sign out']"))
        .await
        .expect("Sign out")
        .click()
        .await
        .expect("click");
    heading(&c, "Sign in").await;
    c.goto(&format!("{}/ui/", app.url)).await.expect("open");
    heading(&c, "Sign in").await;
    screenshots(&c, &format!("{name}-signed-out")).await;
    c.close().await.expect("close the browser");
}

/// Clicks the element once it is there. An element replaced between
/// finding and clicking (a page still settling) is found again.
pub(crate) async fn click(c: &Client, locator: Locator<'_>) {
    let mut tries = 0;
    loop {
        let element = c
            .wait()
            .at_most(WAIT)
            .for_element(locator)
            .await
            .unwrap_or_else(|e| panic!("nothing to click at {locator:?}: {e}"));
        match element.click().await {
            Ok(()) => return,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference && tries < 5 =>
            {
                tries += 1;
            }
            Err(e) => panic!("cannot click {locator:?}: {e}"),
        }
    }
}

pub(crate) async fn type_into(c: &Client, id: &str, text: &str) {
    let field = c.find(Locator::Id(id)).await.unwrap_or_else(|e| panic!("no field #{id}: {e}"));
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

pub(crate) async fn choose(c: &Client, id: &str, value: &str) {
    c.find(Locator::Css(&format!("select[id='{id}'] option[value='{value}']")))
        .await
        .unwrap_or_else(|e| panic!("no option {value} in #{id}: {e}"))
        .click()
        .await
        .expect("choose");
}

/// Waits until the page shows `text` somewhere.
pub(crate) async fn shows(c: &Client, text: &str) {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(&format!("//*[contains(normalize-space(), \"{text}\")]")))
        .await
        .unwrap_or_else(|e| panic!("the page does not show {text:?}: {e}"));
}

async fn an_org_admin_edits_licenses_and_selects_users_in_a_browser(backend: Backend) {
    let app = spawn(backend).await;
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let name = format!("org-admin-{}", if backend == Backend::Sqlite { "sqlite" } else { "postgres" });
    // The catalogue: a calling product with its properties, meetings with a site and account type.
    product(&app, "calling-professional", "calling").await;
    app.post(
        "/api/v1/products",
        &app.admin,
        json!({ "code": "meetings", "name": "Meetings", "family": "meetings", "features": ["meetings"],
                "properties": { "site": "optional", "account_type": "optional" } }),
    )
    .await
    .ok();
    let org = org(&app, "Customer A", None).await;
    let first = subscription(
        &app,
        &org,
        json!([{ "product": "calling-professional", "quantity": 5 }, { "product": "meetings", "quantity": 5 }]),
    )
    .await;
    let second = subscription(&app, &org, json!([{ "product": "calling-professional", "quantity": 5 }])).await;
    let site = app
        .post(
            &format!("/api/v1/orgs/{org}/sites"),
            &app.admin,
            json!({ "url": "acme.meet.example", "attendee_accounts_enabled": false }),
        )
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ada = app
        .post(
            &format!("/api/v1/orgs/{org}/users"),
            &app.admin,
            json!({ "email": "ada@customer.example", "display_name": "Ada Lovelace" }),
        )
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Enough users for two pages.
    many_users(&app, &org, "member", "customer.example", 70, None).await;
    let spec = AdminSpec {
        email: "boss@customer.example",
        display_name: Some("Boss"),
        role: Role::OrgSuperAdmin,
        partner: None,
        org: Some(&org),
    };
    create_admin_as_operator(&app.store, &spec, PASSWORD, today()).await.expect("admin");

    // Sign in: an org admin lands on its org's overview.
    c.goto(&format!("{}/ui/login", app.url)).await.expect("open");
    type_into(&c, "email", "boss@customer.example").await;
    type_into(&c, "password", &format!("{PASSWORD}\u{E007}")).await;
    heading(&c, "Customer A").await;
    assert_accessible(&c, "/ui/orgs/{org}").await;
    screenshots(&c, &format!("{name}-overview")).await;

    click(&c, Locator::LinkText("Products")).await;
    heading(&c, "Products").await;
    assert_accessible(&c, "/ui/orgs/{org}/licenses").await;
    screenshots(&c, &format!("{name}-products")).await;

    // Users: search, open Ada.
    click(&c, Locator::LinkText("Users")).await;
    heading(&c, "Users").await;
    assert_accessible(&c, "/ui/orgs/{org}/users").await;
    type_into(&c, "q", "lovelace").await;
    click(&c, Locator::XPath("//button[normalize-space()='Filter']")).await;
    click(&c, Locator::LinkText("ada@customer.example")).await;
    heading(&c, "Ada Lovelace").await;
    assert_accessible(&c, "/ui/orgs/{org}/users/{user}").await;

    // Edit licenses: a calling license from the first subscription with a phone number.
    click(&c, Locator::LinkText("Edit licenses")).await;
    heading(&c, "Edit licenses").await;
    assert_accessible(&c, "/ui/orgs/{org}/users/{user}/licenses/edit").await;
    screenshots(&c, &format!("{name}-edit-licenses")).await;
    click(&c, Locator::Id("hold-calling-professional")).await;
    choose(&c, "sub-calling-professional", &first).await;
    type_into(&c, "phone_number-calling-professional", "+15550100").await;
    click(&c, Locator::XPath("//button[normalize-space()='Save']")).await;
    heading(&c, "Ada Lovelace").await;
    shows(&c, "phone_number: +15550100").await;
    let held = app.get(&format!("/api/v1/orgs/{org}/users/{ada}/licenses"), &app.admin).await.ok();
    assert_eq!(held["items"][0]["subscription"], first.as_str(), "{held}");
    assert_eq!(held["items"][0]["properties"]["phone_number"], "+15550100");

    // Move it to the second subscription: the phone number stays.
    click(&c, Locator::LinkText("Edit licenses")).await;
    heading(&c, "Edit licenses").await;
    choose(&c, "sub-calling-professional", &second).await;
    click(&c, Locator::XPath("//button[normalize-space()='Save']")).await;
    heading(&c, "Ada Lovelace").await;
    shows(&c, &second).await;
    shows(&c, "phone_number: +15550100").await;
    let held = app.get(&format!("/api/v1/orgs/{org}/users/{ada}/licenses"), &app.admin).await.ok();
    assert_eq!(held["items"][0]["subscription"], second.as_str(), "{held}");
    assert_eq!(
        held["items"][0]["properties"]["phone_number"], "+15550100",
        "the move kept the number"
    );
    screenshots(&c, &format!("{name}-summary")).await;

    // An attendee account on a site without the attendee feature: the
    // sentence beside the form, and nothing changed.
    let before = app.snapshot().await;
    click(&c, Locator::LinkText("Edit licenses")).await;
    heading(&c, "Edit licenses").await;
    click(&c, Locator::Id("hold-meetings")).await;
    choose(&c, "site-meetings", &site).await;
    choose(&c, "account_type-meetings", "attendee").await;
    click(&c, Locator::XPath("//button[normalize-space()='Save']")).await;
    let alert = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("[role=alert]"))
        .await
        .expect("a refusal");
    let said = alert.text().await.expect("text");
    assert!(
        said.contains(&format!(
            "ada@customer.example cannot have an attendee account of Meetings on site {site}: attendee accounts are turned off for that site."
        )),
        "{said}"
    );
    heading(&c, "Edit licenses").await;
    assert_accessible(&c, "/ui/orgs/{org}/users/{user}/licenses/edit (refused)").await;
    screenshots(&c, &format!("{name}-edit-refused")).await;
    assert_eq!(app.snapshot().await, before, "a refused save changes nothing");

    // The org's other pages.
    for (link, title) in [("Subscriptions", "Subscriptions"), ("Audit log", "Audit log"), ("Admins", "Admins")] {
        click(&c, Locator::LinkText(link)).await;
        heading(&c, title).await;
        assert_accessible(&c, link).await;
        screenshots(&c, &format!("{name}-{}", link.to_lowercase().replace(' ', "-"))).await;
    }
    click(&c, Locator::LinkText("Subscriptions")).await;
    heading(&c, "Subscriptions").await;
    click(&c, Locator::LinkText(&second)).await;
    heading(&c, "Subscription").await;
    shows(&c, "calling-professional").await;
    assert_accessible(&c, "/ui/orgs/{org}/subscriptions/{sub}").await;
    // Invite an admin: the link is shown once.
    click(&c, Locator::LinkText("Admins")).await;
    heading(&c, "Admins").await;
    type_into(&c, "email", "ines@customer.example").await;
    choose(&c, "role", "org_admin").await;
    click(&c, Locator::XPath("//button[normalize-space()='Invite']")).await;
    let link = c.wait().at_most(WAIT).for_element(Locator::Id("link")).await.expect("the link");
    let link = link.prop("value").await.expect("value").unwrap_or_default();
    assert!(link.starts_with(&format!("{}/ui/invitations/", app.url)), "{link}");
    assert_accessible(&c, "/ui/orgs/{org}/admins (invited)").await;

    // Select users on two pages.
    c.goto(&format!("{}/ui/orgs/{org}/users", app.url)).await.expect("open");
    heading(&c, "Users").await;
    let boxes = c.find_all(Locator::Css("input[name=selected]")).await.expect("boxes");
    assert_eq!(boxes.len(), 50, "a page holds 50 users");
    boxes[0].click().await.expect("tick");
    shows(&c, "Selected users (1)").await;
    c.find_all(Locator::Css("input[name=selected]")).await.expect("boxes")[1]
        .click()
        .await
        .expect("tick");
    shows(&c, "Selected users (2)").await;
    click(&c, Locator::LinkText("Next")).await;
    shows(&c, "Selected users (2)").await;
    let boxes = c.find_all(Locator::Css("input[name=selected]")).await.expect("boxes");
    assert_eq!(boxes.len(), 21, "the second page holds the other 21");
    boxes[0].click().await.expect("tick");
    shows(&c, "Selected users (3)").await;
    assert_accessible(&c, "/ui/orgs/{org}/users (page 2)").await;
    screenshots(&c, &format!("{name}-users")).await;
    // Back on the first page, its two boxes are still ticked.
    click(&c, Locator::LinkText("Previous")).await;
    heading(&c, "Users").await;
    let ticked = c.find_all(Locator::Css("input[name=selected]:checked")).await.expect("boxes");
    assert_eq!(ticked.len(), 2, "the selection survives paging");
    click(&c, Locator::LinkText("Selected users (3)")).await;
    heading(&c, "Selected users").await;
    let rows = c.find_all(Locator::Css("tbody tr")).await.expect("rows");
    assert_eq!(rows.len(), 3);
    assert_accessible(&c, "/ui/orgs/{org}/users/selected").await;
    screenshots(&c, &format!("{name}-selected")).await;

    // Signed out, a page that needs a session sends to Sign in.
    click(&c, Locator::XPath("//button[normalize-space()='Sign out']")).await;
    heading(&c, "Sign in").await;
    c.goto(&format!("{}/ui/orgs/{org}/users", app.url)).await.expect("open");
    heading(&c, "Sign in").await;
    screenshots(&c, &format!("{name}-signed-out")).await;
    c.close().await.expect("close the browser");
}

async fn a_partner_admin_invites_an_org_admin_who_accepts_in_a_browser(backend: Backend) {
    let app = spawn(backend).await;
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let name = format!("partner-{}", if backend == Backend::Sqlite { "sqlite" } else { "postgres" });
    let w = world(&app).await;
    let spec = AdminSpec {
        email: "pat@partner.example",
        display_name: Some("Pat"),
        role: Role::PartnerAdmin,
        partner: Some(&w.partner),
        org: None,
    };
    create_admin_as_operator(&app.store, &spec, PASSWORD, today()).await.expect("admin");

    // A partner's home: its customers.
    c.goto(&format!("{}/ui/login", app.url)).await.expect("open");
    type_into(&c, "email", "pat@partner.example").await;
    type_into(&c, "password", &format!("{PASSWORD}\u{E007}")).await;
    heading(&c, "Home").await;
    shows(&c, "Customer A").await;
    assert_accessible(&c, "/ui/ (partner)").await;
    screenshots(&c, &format!("{name}-home")).await;

    // The partner's own Admins page, then the customer's, where it invites.
    click(&c, Locator::LinkText("Admins")).await;
    heading(&c, "Admins").await;
    assert_accessible(&c, "/ui/partners/{partner}/admins").await;
    c.goto(&format!("{}/ui/", app.url)).await.expect("open");
    click(&c, Locator::LinkText("Customer A")).await;
    heading(&c, "Customer A").await;
    click(&c, Locator::XPath("//nav[contains(@class,'tabs')]//a[normalize-space()='Admins']")).await;
    heading(&c, "Admins").await;
    type_into(&c, "email", "olga@customer.example").await;
    type_into(&c, "name", "Olga").await;
    choose(&c, "role", "org_super_admin").await;
    click(&c, Locator::XPath("//button[normalize-space()='Invite']")).await;
    let link = c.wait().at_most(WAIT).for_element(Locator::Id("link")).await.expect("the link");
    let link = link.prop("value").await.expect("value").unwrap_or_default();
    screenshots(&c, &format!("{name}-invited")).await;
    click(&c, Locator::XPath("//button[normalize-space()='Sign out']")).await;
    heading(&c, "Sign in").await;

    // The invited person opens the link, sets a password, and is in.
    c.goto(&link).await.expect("open the link");
    heading(&c, "Accept invitation").await;
    shows(&c, "olga@customer.example").await;
    assert_accessible(&c, "/ui/invitations/{secret}").await;
    screenshots(&c, &format!("{name}-accept")).await;
    // Too short: the browser itself holds the form back (the server's own
    // refusal of it is tested over HTTP).
    type_into(&c, "password", "short").await;
    type_into(&c, "repeat", "short").await;
    click(&c, Locator::XPath("//button[normalize-space()='Set password and sign in']")).await;
    heading(&c, "Accept invitation").await;
    let valid = c
        .execute("return document.getElementById('password').validity.valid", vec![])
        .await
        .expect("validity");
    assert_eq!(valid, json!(false), "a password under 12 characters is not submitted");
    // Two different passwords: the server's sentence beside the form.
    type_into(&c, "password", PASSWORD).await;
    type_into(&c, "repeat", "another long password").await;
    click(&c, Locator::XPath("//button[normalize-space()='Set password and sign in']")).await;
    let alert = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("[role=alert]"))
        .await
        .expect("a refusal");
    assert!(alert.text().await.expect("text").contains("The two passwords differ"));
    assert_accessible(&c, "/ui/invitations/{secret} (refused)").await;
    type_into(&c, "password", PASSWORD).await;
    type_into(&c, "repeat", PASSWORD).await;
    click(&c, Locator::XPath("//button[normalize-space()='Set password and sign in']")).await;
    heading(&c, "Customer A").await;
    shows(&c, "olga@customer.example").await;
    // The link worked once.
    c.goto(&link).await.expect("open the link again");
    heading(&c, "Not found").await;
    shows(&c, allot_server::app::admins::INVITATION_NOT_VALID).await;
    screenshots(&c, &format!("{name}-link-used")).await;
    c.close().await.expect("close the browser");
}
