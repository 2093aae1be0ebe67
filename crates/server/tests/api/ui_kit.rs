//! Helpers for the console's HTTP-level tests: a client that shows every
//! cookie and redirect, signing in, reading a page's CSRF field, posting
//! forms with a session.

use reqwest::header::{HeaderMap, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::StatusCode;

use allot_domain::access::Role;
use allot_server::app::admins::{create_admin_as_operator, AdminSpec};

use crate::kit::*;

pub const PASSWORD: &str = "correct horse battery";

/// A browser without a cookie jar or redirects: each test sees every
/// cookie and redirect itself.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().expect("client")
}

/// The value a `Set-Cookie` header of `headers` gives `name`, with the
/// whole header.
pub fn set_cookie(headers: &HeaderMap, name: &str) -> Option<(String, String)> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let value = v[name.len() + 1..].split(';').next().unwrap_or("").to_string();
            (value, v.to_string())
        })
}

/// The hidden CSRF field of a page.
pub fn csrf_field(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("the page has a CSRF field") + r#"name="csrf" value=""#.len();
    html[at..].split('"').next().expect("closed").to_string()
}

pub async fn make_admin(app: &TestApp, email: &str) -> String {
    make_admin_as(app, email, Role::ProviderAdmin, None, None).await
}

pub async fn make_admin_as(app: &TestApp, email: &str, role: Role, partner: Option<&str>, org: Option<&str>) -> String {
    let spec = AdminSpec {
        email,
        display_name: Some("Ada Lovelace"),
        role,
        partner,
        org,
    };
    create_admin_as_operator(&app.store, &spec, PASSWORD, today())
        .await
        .expect("admin")
        .id
}

pub async fn page_of(app: &TestApp, b: &reqwest::Client, session: &str, path: &str) -> reqwest::Response {
    b.get(format!("{}{path}", app.url))
        .header("cookie", format!("allot_session={session}"))
        .send()
        .await
        .expect("get")
}

pub async fn post_form(app: &TestApp, b: &reqwest::Client, session: &str, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    b.post(format!("{}{path}", app.url))
        .header("cookie", format!("allot_session={session}"))
        .form(form)
        .send()
        .await
        .expect("post")
}

/// The sign-in form's CSRF cookie and field.
pub async fn login_form(app: &TestApp, b: &reqwest::Client) -> (String, String) {
    let r = b.get(format!("{}/ui/login", app.url)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let (cookie, _) = set_cookie(r.headers(), "allot_login_csrf").expect("a CSRF cookie");
    let html = r.text().await.expect("body");
    (cookie, csrf_field(&html))
}

pub async fn post_login(app: &TestApp, b: &reqwest::Client, cookie: &str, csrf: &str, email: &str, password: &str) -> reqwest::Response {
    b.post(format!("{}/ui/login", app.url))
        .header("cookie", format!("allot_login_csrf={cookie}"))
        .form(&[("email", email), ("password", password), ("csrf", csrf)])
        .send()
        .await
        .expect("post")
}

/// Signs in; returns the session cookie's value.
pub async fn sign_in(app: &TestApp, b: &reqwest::Client, email: &str) -> String {
    let (cookie, csrf) = login_form(app, b).await;
    let r = post_login(app, b, &cookie, &csrf, email, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    set_cookie(r.headers(), "allot_session").expect("a session cookie").0
}

pub async fn home(app: &TestApp, b: &reqwest::Client, session: &str) -> reqwest::Response {
    b.get(format!("{}/ui/", app.url))
        .header("cookie", format!("allot_session={session}"))
        .send()
        .await
        .expect("get")
}

/// The page `/ui/` leads to (an org's admin goes on to its org's overview).
pub async fn landing(app: &TestApp, b: &reqwest::Client, session: &str) -> reqwest::Response {
    let r = home(app, b, session).await;
    match r.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok()) {
        Some(next) if r.status() == StatusCode::SEE_OTHER && next != "/ui/login" => page_of(app, b, session, next).await,
        _ => r,
    }
}
