//! `/ui/`: the signed-in admin's home.

use maud::{html, Markup};

use allot_domain::access::ScopeKind;

use super::page::{page, when};
use super::session::SignedIn;

/// Who is signed in and in which scope. The pages of each role (customers,
/// the org overview, users) are linked from here as they are built.
pub async fn show(SignedIn(s): SignedIn) -> Markup {
    let a = &s.admin;
    let scope = match a.role.scope_kind() {
        ScopeKind::Provider => "the whole deployment".to_string(),
        ScopeKind::Partner => format!("partner {}", a.partner.as_deref().unwrap_or("-")),
        ScopeKind::Org => format!("org {}", a.org.as_deref().unwrap_or("-")),
    };
    let body = html! {
        div.panel {
            dl.facts {
                dt { "Signed in as" } dd { (a.email) }
                dt { "Name" } dd { (a.display_name) }
                dt { "Role" } dd { (a.role.as_str()) }
                dt { "Scope" } dd { (scope) }
                dt { "Signed in at" } dd { (a.last_sign_in_at.as_deref().map(when).unwrap_or_default()) }
            }
        }
    };
    page("Home", Some(&s), body)
}
