//! **Import users and licenses** (`/ui/orgs/{org}/import`): **Export**
//! downloads the users file (the API's CSV), an upload with **Add only** or
//! **Add and remove** is checked as a whole and then either previewed (a
//! dry-run job: per row its line, user, changes and errors, moves shown as
//! moves; its page offers **Apply**) or applied as a job. A bad file is
//! refused above the form with every line and reason; nothing is stored.
//!
//! The upload is `multipart/form-data`. Its CSRF field comes first in the
//! form, so it is checked before a byte of the file is read; the file is
//! streamed to the same use case as the API's `POST .../imports`, which
//! keeps to the import size limit.

use axum::extract::{Multipart, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};

use allot_domain::access::Action;
use allot_domain::sheet::ImportMode;
use allot_domain::{Code, Error};

use super::orgs::{org_nav, OrgPage};
use super::page::{beside_form, page, refusal, HtmlError};
use super::session::{csrf_refused, same_secret, SignedIn};
use crate::app::admins::ConsoleSession;
use crate::app::sheets::{self, ImportQuery};
use crate::app::{tenants, App};

fn fail(s: &ConsoleSession, e: Error) -> Response {
    HtmlError::new(e, &s.caller.request_id).into_response()
}

async fn import_page(
    app: &App,
    s: &ConsoleSession,
    org: &str,
    status: StatusCode,
    notice: Option<Markup>,
    add_and_remove: bool,
) -> Response {
    let org = match tenants::get_org(app, &s.caller, org).await {
        Ok(o) => o,
        Err(e) => return fail(s, e),
    };
    let p = &s.caller.principal;
    if !(p.may(Action::ReadUsers) && p.may(Action::ReadLicenses)) {
        return fail(
            s,
            Error::new(Code::Forbidden, format!("A {} may not export or import users.", p.role.as_str())),
        );
    }
    let may_import = p.may(Action::WriteUsers) && p.may(Action::WriteLicenses);
    let base = format!("/ui/orgs/{}", org.id);
    let body = html! {
        (org_nav(s, &org, OrgPage::Import))
        @if let Some(n) = notice { (n) }
        div.panel {
            h2 { "Export" }
            p { "One row per user: email, name, kind, status, usage location, then TRUE or FALSE for each product on each subscription." }
            p { a.button.secondary href=(format!("{base}/users.csv")) download { "Export" } }
        }
        @if may_import {
            div.panel {
                h2 { "Import" }
                p.muted {
                    "Change the exported file and upload it. A blank cell changes nothing. FALSE on one subscription and TRUE on another for the same product is a move: the user's service data is kept."
                }
                form method="post" action=(format!("{base}/import")) enctype="multipart/form-data" {
                    // First: checked before the file is read.
                    input type="hidden" name="csrf" value=(s.csrf_token);
                    fieldset {
                        legend { "What FALSE means" }
                        label.check {
                            input type="radio" name="mode" value="add_only" checked[!add_and_remove];
                            "Add only"
                        }
                        p.hint { "FALSE changes nothing, except as half of a move." }
                        label.check {
                            input type="radio" name="mode" value="add_and_remove" checked[add_and_remove];
                            "Add and remove"
                        }
                        p.hint { "FALSE removes the license." }
                    }
                    label for="file" { "CSV file" }
                    input #file type="file" name="file" accept=".csv,text/csv" required;
                    div.actions.row-actions {
                        // The submitter's value would come after the file, so
                        // each button posts to its own address instead.
                        button type="submit" { "Preview" }
                        button.secondary type="submit" formaction=(format!("{base}/import?apply=1")) { "Apply" }
                    }
                }
            }
        }
    };
    (status, page("Import users and licenses", Some(s), body)).into_response()
}

/// `GET /ui/orgs/{org}/import`.
pub async fn show(State(app): State<App>, SignedIn(s): SignedIn, Path(org): Path<String>) -> Response {
    import_page(&app, &s, &org, StatusCode::OK, None, false).await
}

/// `GET /ui/orgs/{org}/users.csv`: **Export**.
pub async fn export(State(app): State<App>, SignedIn(s): SignedIn, Path(org): Path<String>) -> Response {
    match sheets::export_users_csv(&app, &s.caller, &org).await {
        Ok(d) => d.into_response(),
        Err(e) => fail(&s, e),
    }
}

/// `POST /ui/orgs/{org}/import`: **Preview** queues a dry-run job, **Apply**
/// a real one; either opens the job's page.
pub async fn upload(
    State(app): State<App>,
    signed_in: SignedIn,
    Path(org): Path<String>,
    RawQuery(raw): RawQuery,
    mut form: Multipart,
) -> Response {
    let s = &signed_in.0;
    let dry_run = !form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()).any(|(k, v)| k == "apply" && v == "1");
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        fail(
            s,
            Error::new(Code::ValidationFailed, format!("The upload could not be read: {}", e.body_text())),
        )
    };
    let mut csrf_ok = false;
    let mut mode = ImportMode::AddOnly;
    let queued = loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break Err(Error::validation("file", "Choose a CSV file to upload.")),
            Err(e) => return unreadable(e),
        };
        let name = field.name().unwrap_or("").to_string();
        if name == "file" {
            // The file comes last; everything it needs has been read.
            if !csrf_ok {
                return csrf_refused(&s.caller.request_id).into_response();
            }
            let q = ImportQuery {
                mode: Some(mode),
                dry_run: Some(dry_run),
            };
            let chunks = Box::pin(futures::stream::unfold(field, |mut f| async move {
                match f.chunk().await {
                    Ok(Some(b)) => Some((Ok::<_, axum::extract::multipart::MultipartError>(b), f)),
                    Ok(None) => None,
                    Err(e) => Some((Err(e), f)),
                }
            }));
            break sheets::import_users_csv(&app, &s.caller, &org, &q, None, chunks).await;
        }
        let value = match field.text().await {
            Ok(v) => v,
            Err(e) => return unreadable(e),
        };
        match name.as_str() {
            "csrf" => csrf_ok = same_secret(&value, &s.csrf_token),
            "mode" => {
                mode = if value == "add_and_remove" {
                    ImportMode::AddAndRemove
                } else {
                    ImportMode::AddOnly
                }
            }
            _ => {}
        }
    };
    if !csrf_ok {
        return csrf_refused(&s.caller.request_id).into_response();
    }
    match queued {
        Ok(job) => Redirect::to(&format!("/ui/jobs/{}", job.id)).into_response(),
        Err(e) => match beside_form(&e) {
            Some(status) => import_page(&app, s, &org, status, Some(refusal(&e)), mode == ImportMode::AddAndRemove).await,
            None => fail(s, e),
        },
    }
}
