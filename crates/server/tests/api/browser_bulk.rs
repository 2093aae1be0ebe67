//! The console's bulk pages in a real browser (see `browser.rs` for the
//! driver, axe-core and screenshots): Manage licenses for 30 users selected
//! on two pages with its job page; a CSV exported, edited and previewed,
//! then applied; a cancel refused until the users are moved; the partner
//! hub's filter; a queue member's phone license removed.

use fantoccini::{Client, Locator};
use serde_json::{json, Value};

use allot_domain::access::Role;
use allot_server::app::admins::{create_admin_as_operator, AdminSpec};

use crate::both_backends;
use crate::browser::{assert_accessible, browser, choose, click, heading, screenshots, shows, type_into, PASSWORD, WAIT};
use crate::kit::*;

both_backends!(
    manage_licenses_for_thirty_users_in_a_browser,
    a_csv_move_and_a_guarded_cancel_in_a_browser,
    the_partner_hub_and_queues_in_a_browser
);

fn tag(backend: Backend) -> &'static str {
    if backend == Backend::Sqlite {
        "sqlite"
    } else {
        "postgres"
    }
}

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

async fn admin(app: &TestApp, email: &str, role: Role, partner: Option<&str>, org: Option<&str>) {
    let spec = AdminSpec {
        email,
        display_name: None,
        role,
        partner,
        org,
    };
    create_admin_as_operator(&app.store, &spec, PASSWORD, today()).await.expect("admin");
}

/// The page's HTML as the browser has it.
async fn source(c: &Client) -> String {
    c.source().await.expect("page source")
}

/// Waits for a job page to show its results (htmx reloads it when the job ends).
async fn job_results(c: &Client) {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath("//h2[normalize-space()='Results']"))
        .await
        .expect("the job page shows its results");
}

async fn manage_licenses_for_thirty_users_in_a_browser(backend: Backend) {
    let app = spawn(backend).await;
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let name = format!("manage-{}", tag(backend));
    for p in ["meetings", "messaging", "webinars"] {
        product(&app, p, p).await;
    }
    app.post(
        "/api/v1/products",
        &app.admin,
        json!({ "code": "contact-centre", "name": "Contact Centre Agent", "family": "contact-centre", "rules": { "locations": ["SE"] } }),
    )
    .await
    .ok();
    let org = org(&app, "Customer A", None).await;
    subscription(
        &app,
        &org,
        json!([{ "product": "meetings", "quantity": 40 }, { "product": "messaging", "quantity": 30 },
               { "product": "webinars", "quantity": 10 }, { "product": "contact-centre", "quantity": 40 }]),
    )
    .await;
    let ids = many_users(&app, &org, "m", "customer.example", 74, Some("SE")).await;
    let abroad = many_users(&app, &org, "n", "customer.example", 1, Some("US")).await;
    // The 30 to be selected: five on page 1, all 25 of page 2 (m50..m73 and n0).
    let chosen: Vec<String> = ids[0..5].iter().chain(&ids[50..74]).chain(&abroad).cloned().collect();
    assert_eq!(chosen.len(), 30);
    let j = start_job(&app, &org, json!({ "users": &ids[0..3], "add": [{ "product": "meetings" }] })).await;
    finished_job(&app, &j).await;
    let j = start_job(&app, &org, json!({ "users": chosen, "add": [{ "product": "messaging" }] })).await;
    finished_job(&app, &j).await;
    admin(&app, "boss@customer.example", Role::OrgSuperAdmin, None, Some(&org)).await;

    sign_in(&app, &c, "boss@customer.example").await;
    click(&c, Locator::LinkText("Users")).await;
    heading(&c, "Users").await;
    for k in 0..5 {
        c.find_all(Locator::Css("input[name=selected]")).await.expect("boxes")[k]
            .click()
            .await
            .expect("tick");
        shows(&c, &format!("Selected users ({})", k + 1)).await;
    }
    click(&c, Locator::LinkText("Next")).await;
    shows(&c, "Selected users (5)").await;
    click(&c, Locator::Id("all_on_page")).await;
    shows(&c, "Selected users (30)").await;
    click(&c, Locator::LinkText("Manage licenses")).await;
    heading(&c, "Manage licenses").await;
    shows(&c, "30 users selected.").await;
    assert_accessible(&c, "/ui/orgs/{org}/manage-licenses").await;
    screenshots(&c, &format!("{name}-page")).await;

    // Mixed, all and none, as the boxes show them.
    let states = c
        .execute(
            "return Array.from(document.querySelectorAll('input[data-keep]')).map(b => \
               [b.closest('tr').querySelector('th').innerText.split('\\n')[0], b.indeterminate, b.checked])",
            vec![],
        )
        .await
        .expect("states");
    let state = |product: &str| -> (bool, bool) {
        let row = states
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[0].as_str().unwrap_or("").trim() == product)
            .unwrap_or_else(|| panic!("no row {product}: {states}"));
        (row[1].as_bool().unwrap(), row[2].as_bool().unwrap())
    };
    assert_eq!(state("meetings"), (true, false), "3 of 30: mixed");
    assert_eq!(state("messaging"), (false, true), "all 30");
    assert_eq!(state("webinars"), (false, false), "none");
    assert_eq!(state("Contact Centre Agent"), (false, false), "none");
    shows(&c, "Buy more").await;
    // The mixed box cycles: all, none, back to as it was.
    let meetings_box = "//tr[th[contains(., 'meetings')]]//input[@type='checkbox']";
    let box_state = || async {
        c.execute(
            "const b = document.evaluate(arguments[0], document, null, 9, null).singleNodeValue;              return [b.indeterminate, b.checked, document.getElementById(b.dataset.keep).value];",
            vec![json!(meetings_box)],
        )
        .await
        .expect("the box")
    };
    for want in [json!([false, true, "0"]), json!([false, false, "0"]), json!([true, false, "1"])] {
        click(&c, Locator::XPath(meetings_box)).await;
        assert_eq!(box_state().await, want);
    }

    // The holders of meetings.
    click(&c, Locator::XPath("//a[contains(., '3 of 30')]")).await;
    heading(&c, "Assigned").await;
    for e in ["m0@customer.example", "m1@customer.example", "m2@customer.example"] {
        shows(&c, e).await;
    }
    assert_accessible(&c, "/ui/orgs/{org}/manage-licenses/assigned").await;
    click(&c, Locator::LinkText("Back to Manage licenses")).await;
    heading(&c, "Manage licenses").await;

    // Webinars for everyone with 10 seats: refused as a whole, nothing written.
    let before = app.snapshot().await;
    click(&c, Locator::XPath("//tr[th[contains(., 'webinars')]]//input[@type='checkbox']")).await;
    click(&c, Locator::XPath("//button[normalize-space()='Save']")).await;
    let alert = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("[role=alert]"))
        .await
        .expect("a refusal");
    let said = alert.text().await.expect("text");
    assert!(
        said.contains("30 seats are needed for the selected users who do not hold it, and 10 are free."),
        "{said}"
    );
    assert_accessible(&c, "/ui/orgs/{org}/manage-licenses (refused)").await;
    screenshots(&c, &format!("{name}-refused")).await;
    assert_eq!(app.snapshot().await, before, "nothing written");

    // The contact centre for everyone: a job; its page reaches 100%, n0 refused.
    click(
        &c,
        Locator::XPath("//tr[th[contains(., 'Contact Centre Agent')]]//input[@type='checkbox']"),
    )
    .await;
    click(&c, Locator::XPath("//button[normalize-space()='Save']")).await;
    heading(&c, "Job").await;
    job_results(&c).await;
    shows(&c, "30 of 30 done (100%)").await;
    let bar = c.find(Locator::Id("job-bar")).await.expect("the bar");
    assert_eq!(bar.attr("value").await.expect("value").as_deref(), Some("30"));
    assert_accessible(&c, "/ui/jobs/{job}").await;
    screenshots(&c, &format!("{name}-job")).await;
    click(&c, Locator::LinkText("Errors only")).await;
    shows(&c, "n0@customer.example cannot get Contact Centre Agent: it is not available in US").await;
    let rows = c.find_all(Locator::Css("#results tbody tr")).await.expect("rows");
    assert_eq!(rows.len(), 1, "one refused user");
    assert_accessible(&c, "/ui/jobs/{job}?errors=1").await;
    let held = app
        .get(&format!("/api/v1/orgs/{org}/users/{}/licenses", ids[60]), &app.admin)
        .await
        .ok();
    assert!(
        held["items"].as_array().unwrap().iter().any(|l| l["product"] == "contact-centre"),
        "{held}"
    );
    click(&c, Locator::XPath("//nav[contains(@class,'tabs')]//a[normalize-space()='Jobs']")).await;
    heading(&c, "Jobs").await;
    assert_accessible(&c, "/ui/orgs/{org}/jobs").await;
    screenshots(&c, &format!("{name}-jobs")).await;
    c.close().await.expect("close the browser");
}

async fn a_csv_move_and_a_guarded_cancel_in_a_browser(backend: Backend) {
    let app = spawn(backend).await;
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let name = format!("csv-cancel-{}", tag(backend));
    let calling = crate::moves::calling_org(&app, 6).await;
    let before = crate::moves::service_data_rows(&app, &calling.org, "calling").await;
    app.post("/api/v1/partners", &app.admin, json!({ "name": "Reseller" })).await.ok();
    admin(&app, "ops@provider.example", Role::ProviderAdmin, None, None).await;
    sign_in(&app, &c, "ops@provider.example").await;
    click(&c, Locator::XPath("//nav[@aria-label='Main']//a[normalize-space()='Partners']")).await;
    heading(&c, "Partners").await;
    assert_accessible(&c, "/ui/partners").await;
    click(&c, Locator::XPath("//nav[@aria-label='Main']//a[normalize-space()='Customers']")).await;
    heading(&c, "Customers").await;
    assert_accessible(&c, "/ui/customers").await;
    click(&c, Locator::LinkText("Calling AB")).await;
    heading(&c, "Calling AB").await;
    click(&c, Locator::XPath("//nav[contains(@class,'tabs')]//a[normalize-space()='Import']")).await;
    heading(&c, "Import users and licenses").await;
    assert_accessible(&c, "/ui/orgs/{org}/import").await;
    screenshots(&c, &format!("{name}-import")).await;

    // Export (the link's file, fetched with the browser's session), move five users in it.
    let cookie = c.get_named_cookie("allot_session").await.expect("the session cookie");
    let csv = reqwest::Client::new()
        .get(format!("{}/ui/orgs/{}/users.csv", app.url, calling.org))
        .header("cookie", format!("allot_session={}", cookie.value()))
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("the file");
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |h: String| header.iter().position(|x| *x == h).expect("column");
    let (a, b) = (
        col(format!("calling-professional [{}]", calling.a)),
        col(format!("calling-professional [{}]", calling.b)),
    );
    let mut file = String::new();
    for (i, line) in csv.lines().enumerate() {
        let mut cells: Vec<&str> = line.split(',').collect();
        if (1..=5).contains(&i) {
            cells[a] = "FALSE";
            cells[b] = "TRUE";
        }
        file.push_str(&cells.join(","));
        file.push_str("\r\n");
    }
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("users.csv");
    std::fs::write(&path, file).expect("the edited file");
    c.find(Locator::Id("file"))
        .await
        .expect("the file field")
        .send_keys(path.to_str().unwrap())
        .await
        .expect("choose the file");
    click(&c, Locator::XPath("//button[normalize-space()='Preview']")).await;
    heading(&c, "Job").await;
    job_results(&c).await;
    let moves = format!("move calling-professional from {} to {}", calling.a, calling.b);
    assert_eq!(source(&c).await.matches(&moves).count(), 5, "five moves");
    assert_accessible(&c, "/ui/jobs/{job} (preview)").await;
    screenshots(&c, &format!("{name}-preview")).await;
    assert_eq!(crate::moves::service_data_rows(&app, &calling.org, "calling").await, before);
    click(&c, Locator::XPath("//button[normalize-space()='Apply']")).await;
    // The applied job's page, not the preview's (also headed "Job", with its
    // results and figures), which may still be shown just after the click.
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(
            "//dt[normalize-space()='Preview']/following-sibling::dd[1][normalize-space()='no']",
        ))
        .await
        .expect("the applied job's page");
    heading(&c, "Job").await;
    job_results(&c).await;
    // Waited for, not read at once: htmx swaps the figures every second
    // while the job runs.
    let figures = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(
            "//p[@id='job-figures'][not(contains(., 'running')) and not(contains(., 'queued'))]",
        ))
        .await
        .expect("the job's figures once it has ended")
        .text()
        .await
        .unwrap_or_default();
    assert!(figures.contains("6 of 6 done") && figures.contains("0 failed"), "{figures}");
    assert_eq!(source(&c).await.matches(&moves).count(), 5, "five moves applied");
    assert_eq!(
        crate::moves::service_data_rows(&app, &calling.org, "calling").await,
        before,
        "phone numbers kept"
    );

    // Cancel A while a user holds it: refused, then move, then cancelled.
    click(
        &c,
        Locator::XPath("//nav[contains(@class,'tabs')]//a[normalize-space()='Subscriptions']"),
    )
    .await;
    heading(&c, "Subscriptions").await;
    click(&c, Locator::LinkText(&calling.a)).await;
    heading(&c, "Subscription").await;
    let snapshot = app.snapshot().await;
    click(&c, Locator::XPath("//button[normalize-space()='Cancel subscription']")).await;
    let alert = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("[role=alert]"))
        .await
        .expect("a refusal");
    assert!(
        alert
            .text()
            .await
            .unwrap()
            .contains(&format!("1 user holds seats of subscription {}", calling.a)),
        "refused while a user holds it"
    );
    assert_eq!(app.snapshot().await, snapshot, "refused: nothing changed");
    shows(&c, "1 user loses their licenses").await;
    assert_accessible(&c, "/ui/orgs/{org}/subscriptions/{sub} (cancel refused)").await;
    screenshots(&c, &format!("{name}-guard")).await;
    choose(&c, "move_users_to", &calling.b).await;
    click(&c, Locator::XPath("//button[normalize-space()='Move users, then cancel']")).await;
    heading(&c, "Job").await;
    job_results(&c).await;
    shows(&c, "Move users, then cancel a subscription").await;
    shows(&c, "succeeded").await;
    c.goto(&format!("{}/ui/orgs/{}/subscriptions/{}", app.url, calling.org, calling.a))
        .await
        .expect("open");
    heading(&c, "Subscription").await;
    let cancelled = c
        .find(Locator::XPath("//dt[normalize-space()='Cancelled']/following-sibling::dd[1]"))
        .await
        .expect("the fact");
    assert_eq!(cancelled.text().await.unwrap(), "yes");
    assert_eq!(
        crate::moves::service_data_rows(&app, &calling.org, "calling").await,
        before,
        "every phone number kept"
    );
    screenshots(&c, &format!("{name}-cancelled")).await;
    c.close().await.expect("close the browser");
}

async fn the_partner_hub_and_queues_in_a_browser(backend: Backend) {
    let app = spawn(backend).await;
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let name = format!("hub-{}", tag(backend));
    for (p, f) in [
        ("meetings", "meetings"),
        ("calling-standard", "calling"),
        ("contact-centre", "contact-centre"),
    ] {
        product(&app, p, f).await;
    }
    let partner = app.post("/api/v1/partners", &app.admin, json!({ "name": "Reseller" })).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer = |name: &'static str, trial: bool, end: &'static str, provisioning: &'static str| {
        let (app, partner) = (&app, partner.clone());
        async move {
            let o = org(app, name, Some(&partner)).await;
            app.post(
                &format!("/api/v1/orgs/{o}/subscriptions"),
                &app.admin,
                json!({ "trial": trial, "start_date": "2026-01-01", "end_date": end,
                        "items": [{ "product": "meetings", "quantity": 5, "provisioning_status": provisioning }] }),
            )
            .await
            .ok();
            o
        }
    };
    // Today is 2026-06-15.
    customer("Awaiting AB", false, "2027-06-01", "awaiting_details").await;
    customer("Expiring AB", false, "2026-07-01", "provisioned").await;
    customer("Both AB", false, "2026-07-10", "awaiting_details").await;
    customer("Quiet AB", false, "2027-06-01", "provisioned").await;
    customer("Trial AB", true, "2026-07-01", "provisioned").await;
    // A customer with a contact centre: an agent in two queues.
    let support = org(&app, "Support AB", Some(&partner)).await;
    subscription(
        &app,
        &support,
        json!([{ "product": "calling-standard", "quantity": 5 }, { "product": "contact-centre", "quantity": 5 }]),
    )
    .await;
    let agent = user(&app, &support, "agent@support.example").await;
    app.post(
        &format!("/api/v1/orgs/{support}/users/{agent}/licenses"),
        &app.admin,
        json!({ "add": [{ "product": "calling-standard" }, { "product": "contact-centre" }] }),
    )
    .await
    .ok();
    for q in ["Support", "Callbacks"] {
        let id: Value = app
            .post(
                &format!("/api/v1/orgs/{support}/queues"),
                &app.admin,
                json!({ "name": q, "kind": "call", "product": "contact-centre" }),
            )
            .await
            .ok();
        app.post(
            &format!("/api/v1/orgs/{support}/queues/{}/members", id["id"].as_str().unwrap()),
            &app.admin,
            json!({ "user": agent }),
        )
        .await
        .ok();
    }
    admin(&app, "pat@reseller.example", Role::PartnerAdmin, Some(&partner), None).await;

    sign_in(&app, &c, "pat@reseller.example").await;
    click(&c, Locator::XPath("//nav[@aria-label='Main']//a[normalize-space()='Customers']")).await;
    heading(&c, "Customers").await;
    click(&c, Locator::XPath("//summary[contains(., 'Select a filter')]")).await;
    click(&c, Locator::XPath("//label[normalize-space()='Expiring within 30 days']/input")).await;
    click(
        &c,
        Locator::XPath("//label[normalize-space()='Awaiting provisioning details']/input"),
    )
    .await;
    assert_accessible(&c, "/ui/partners/{partner}/customers (filter open)").await;
    click(&c, Locator::XPath("//button[normalize-space()='Apply filter']")).await;
    shows(&c, "(2 chosen)").await;
    let url = c.current_url().await.expect("url").to_string();
    assert!(
        url.contains("subscription_status=expiring_30d") && url.contains("provisioning_status=awaiting_details"),
        "the URL keeps the filter: {url}"
    );
    let mut listed = Vec::new();
    for cell in c.find_all(Locator::Css("th[data-label=Customer]")).await.expect("rows") {
        listed.push(cell.text().await.expect("name"));
    }
    assert_eq!(listed, ["Awaiting AB", "Both AB", "Expiring AB"], "either status, exactly");
    assert_accessible(&c, "/ui/partners/{partner}/customers (filtered)").await;
    screenshots(&c, &format!("{name}-customers")).await;

    // The contact-centre customer: Queues, then the agent's phone license removed.
    click(&c, Locator::LinkText("Clear filter")).await;
    click(&c, Locator::LinkText("Support AB")).await;
    heading(&c, "Support AB").await;
    // A template made and opened for editing.
    click(
        &c,
        Locator::XPath("//nav[contains(@class,'tabs')]//a[normalize-space()='License templates']"),
    )
    .await;
    heading(&c, "License templates").await;
    type_into(&c, "tpl-name", "Agents").await;
    click(&c, Locator::Id("lic-contact-centre-any")).await;
    click(&c, Locator::XPath("//button[normalize-space()='Create template']")).await;
    heading(&c, "License templates").await;
    click(&c, Locator::LinkText("Agents")).await;
    heading(&c, "Edit license template").await;
    assert_accessible(&c, "/ui/orgs/{org}/templates/{tpl}").await;
    screenshots(&c, &format!("{name}-edit-template")).await;
    for (tab, title) in [
        ("Purchase requests", "Purchase requests"),
        ("License templates", "License templates"),
        ("Jobs", "Jobs"),
        ("Queues", "Queues"),
    ] {
        click(
            &c,
            Locator::XPath(&format!("//nav[contains(@class,'tabs')]//a[normalize-space()='{tab}']")),
        )
        .await;
        heading(&c, title).await;
        assert_accessible(&c, tab).await;
        screenshots(&c, &format!("{name}-{}", tab.to_lowercase().replace(' ', "-"))).await;
    }
    shows(&c, "agent@support.example").await;
    click(&c, Locator::LinkText("agent@support.example")).await;
    click(&c, Locator::LinkText("Edit licenses")).await;
    heading(&c, "Edit licenses").await;
    click(&c, Locator::Id("hold-calling-standard")).await;
    click(&c, Locator::XPath("//button[normalize-space()='Save']")).await;
    shows(&c, "stays billed while agent@support.example is a member of").await;
    let said = c.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(said.contains("Support") && said.contains("Callbacks"), "names the queues: {said}");
    assert_accessible(&c, "/ui/orgs/{org}/users/{user}?billed=1").await;
    screenshots(&c, &format!("{name}-still-billed")).await;
    click(&c, Locator::XPath("//button[normalize-space()='Remove from all queues']")).await;
    shows(&c, "No licenses.").await;
    let held = app
        .get(&format!("/api/v1/orgs/{support}/users/{agent}/licenses"), &app.admin)
        .await
        .ok();
    assert_eq!(held["items"].as_array().unwrap().len(), 0, "{held}");
    let queues = app
        .get(&format!("/api/v1/orgs/{support}/users/{agent}/queues"), &app.admin)
        .await
        .ok();
    assert_eq!(queues["items"].as_array().unwrap().len(), 0);
    c.close().await.expect("close the browser");
}
