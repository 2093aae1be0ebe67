//! **Queues** of an org (`/ui/orgs/{org}/queues`): each contact-centre
//! queue with the product its members are billed for and its members. A
//! user's page says when a removed phone licence leaves a contact-centre
//! licence billed by queues, with **Remove from all queues** (see
//! `users::summary` and `users::leave_queues`).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use maud::html;

use allot_domain::Error;

use super::orgs::{org_nav, OrgPage};
use super::page::{page, HtmlError};
use super::session::SignedIn;
use crate::app::{queues, tenants, App};

/// `GET /ui/orgs/{org}/queues`.
pub async fn list(State(app): State<App>, SignedIn(s): SignedIn, Path(org): Path<String>) -> Response {
    let shown = async {
        let org = tenants::get_org(&app, &s.caller, &org).await?;
        let rosters = queues::list_queue_rosters(&app, &s.caller, &org.id).await?;
        Ok::<_, Error>((org, rosters))
    }
    .await;
    let (org, rosters) = match shown {
        Ok(x) => x,
        Err(e) => return HtmlError::new(e, &s.caller.request_id).into_response(),
    };
    let body = html! {
        (org_nav(&s, &org, OrgPage::Queues))
        @if rosters.is_empty() {
            p.muted { "No queues." }
        }
        @for r in &rosters {
            section.panel aria-labelledby=(format!("q-{}", r.queue.id)) {
                h2 #(format!("q-{}", r.queue.id)) { (r.queue.name) }
                p.muted { (r.queue.kind) " queue · members are billed for " strong { (r.queue.product) } " · " (r.members.len()) " members" }
                @if r.members.is_empty() {
                    p.muted { "No members." }
                } @else {
                    ul.user-boxes aria-label=(format!("Members of {}", r.queue.name)) tabindex="0" {
                        @for m in &r.members {
                            li { a href=(format!("/ui/orgs/{}/users/{}", org.id, m.id)) { (m.email) } }
                        }
                    }
                }
            }
        }
    };
    page("Queues", Some(&s), body).into_response()
}
