//! `/ui/login` (**Sign in**) and `/ui/logout` (**Sign out**).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{html, Markup};

use allot_domain::Error;

use super::page::{narrow_page, refusal, HtmlError};
use super::session::{cookie, csrf_refused, same_secret, set_cookie, CsrfForm, SignedIn, LOGIN_CSRF_COOKIE, SESSION_COOKIE};
use crate::app::{admins, App};
use crate::observe::RequestId;

fn form(csrf: &str, email: &str, refused: Option<&Error>) -> Markup {
    html! {
        div.panel {
            @if let Some(e) = refused { (refusal(e)) }
            form method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="email" { "Email" }
                input #email type="email" name="email" value=(email) autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password" required;
                div.actions { button type="submit" { "Sign in" } }
            }
        }
    }
}

/// The sign-in form with a fresh CSRF token in it and in its cookie.
fn form_page(headers: &HeaderMap, status: StatusCode, email: &str, refused: Option<&Error>) -> Response {
    let csrf = crate::auth::generate_token();
    (
        status,
        [(header::SET_COOKIE, set_cookie(headers, LOGIN_CSRF_COOKIE, Some(&csrf)))],
        narrow_page("Sign in", form(&csrf, email, refused)),
    )
        .into_response()
}

/// `GET /ui/login`. Someone signed in already goes home.
pub async fn show(State(app): State<App>, headers: HeaderMap, Extension(RequestId(id)): Extension<RequestId>) -> Response {
    if let Some(secret) = cookie(&headers, SESSION_COOKIE) {
        if let Ok(Some(_)) = admins::session(&app, secret, &id).await {
            return Redirect::to("/ui/").into_response();
        }
    }
    form_page(&headers, StatusCode::OK, "", None)
}

#[derive(serde::Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/login`.
pub async fn submit(
    State(app): State<App>,
    headers: HeaderMap,
    Extension(RequestId(id)): Extension<RequestId>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Form(f): Form<SignInForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or("");
    if expected.is_empty() || !same_secret(expected, &f.csrf) {
        return csrf_refused(&id).into_response();
    }
    let address = peer
        .map(|Extension(ConnectInfo(a))| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    match admins::sign_in(&app, &f.email, &f.password, &address).await {
        Ok(session) => {
            let mut resp = Redirect::to("/ui/").into_response();
            let h = resp.headers_mut();
            for c in [
                set_cookie(&headers, SESSION_COOKIE, Some(&session.secret)),
                set_cookie(&headers, LOGIN_CSRF_COOKIE, None),
            ] {
                if let Ok(v) = c.parse() {
                    h.append(header::SET_COOKIE, v);
                }
            }
            resp
        }
        Err(e) if e.code == allot_domain::Code::Unauthenticated => form_page(&headers, StatusCode::UNAUTHORIZED, &f.email, Some(&e)),
        Err(error) => HtmlError::new(error, &id).into_response(),
    }
}

/// `POST /ui/logout`: ends the session at once, on the server.
pub async fn sign_out(State(app): State<App>, signed_in: SignedIn, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    if let Err(e) = signed_in.check_csrf(&f.csrf) {
        return e.into_response();
    }
    let secret = cookie(&headers, SESSION_COOKIE).unwrap_or("");
    if let Err(error) = admins::sign_out(&app, secret).await {
        return HtmlError::new(error, &signed_in.0.caller.request_id).into_response();
    }
    (
        [(header::SET_COOKIE, set_cookie(&headers, SESSION_COOKIE, None))],
        Redirect::to("/ui/login"),
    )
        .into_response()
}
