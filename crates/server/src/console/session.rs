//! Cookies and CSRF tokens of the console.
//!
//! The session cookie holds the session's secret (`HttpOnly`,
//! `SameSite=Lax`, `Path=/ui`, and `Secure` when the request came over
//! TLS through a proxy that says so). Before sign-in there is no session,
//! so the sign-in form's CSRF token is a random value in a cookie of its
//! own and in the form (a cross-site page can set neither).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};

use crate::app::admins::{self, ConsoleSession};
use crate::app::App;
use crate::observe::RequestId;

use super::page::HtmlError;

pub const SESSION_COOKIE: &str = "allot_session";
pub const LOGIN_CSRF_COOKIE: &str = "allot_login_csrf";

/// The value of cookie `name`, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the browser reached us over TLS (directly or, as the proxy in
/// front says, through it): then cookies are `Secure`.
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value for the console's cookies; `None` deletes it.
pub fn set_cookie(headers: &HeaderMap, name: &str, value: Option<&str>) -> String {
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    match value {
        Some(v) => format!("{name}={v}; Path=/ui; HttpOnly; SameSite=Lax{secure}"),
        None => format!("{name}=; Path=/ui; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    }
}

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn request_id(parts: &Parts) -> String {
    parts
        .extensions
        .get::<RequestId>()
        .map(|RequestId(id)| id.clone())
        .unwrap_or_default()
}

/// The signed-in admin of a page. Without a live session the page answers
/// a redirect to **Sign in**.
pub struct SignedIn(pub ConsoleSession);

impl FromRequestParts<App> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let request_id = request_id(parts);
        let Some(secret) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(Redirect::to("/ui/login").into_response());
        };
        match admins::session(app, secret, &request_id).await {
            Ok(Some(s)) => Ok(SignedIn(s)),
            Ok(None) => Err(Redirect::to("/ui/login").into_response()),
            Err(error) => Err(HtmlError::new(error, &request_id).into_response()),
        }
    }
}

impl SignedIn {
    /// 403 unless `given` is the session's CSRF token: every form that
    /// changes something carries it.
    pub fn check_csrf(&self, given: &str) -> Result<(), HtmlError> {
        if same_secret(given, &self.0.csrf_token) {
            return Ok(());
        }
        Err(csrf_refused(&self.0.caller.request_id))
    }
}

pub fn csrf_refused(request_id: &str) -> HtmlError {
    HtmlError::new(
        allot_domain::Error::new(
            allot_domain::Code::Forbidden,
            "This form has expired or did not come from this site. Reload the page and try again.",
        ),
        request_id,
    )
}

/// The body of a form that carries only its CSRF token (a button that
/// signs out, revokes, ...).
#[derive(serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}
