//! What an org's identity provisioning page shows of its SCIM traffic:
//! the requests its own SCIM tokens sent that failed (status, `scimType`,
//! the detail answered). Only an authenticated `scim` token of the org
//! named in the path gets a request recorded, so that nobody else can fill
//! an org's list; when the org last synchronised is its tokens'
//! `last_used_at`, which authentication keeps.

use std::sync::{Arc, OnceLock};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::App;

/// Filled by [`super::ScimCaller`] when the caller is a `scim` token: its
/// org and its actor.
#[derive(Clone, Default)]
pub struct Slot(Arc<OnceLock<(String, String)>>);

impl Slot {
    pub fn note(extensions: &axum::http::Extensions, org: &str, actor: &str) {
        if let Some(slot) = extensions.get::<Slot>() {
            let _ = slot.0.set((org.to_string(), actor.to_string()));
        }
    }
}

/// A SCIM error answered, as its presenter wrote it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

/// `/scim/v2/orgs/{org}/{rest}` → (org, `/{rest}`).
fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/scim/v2/orgs/")?;
    match rest.find('/') {
        Some(i) => Some((&rest[..i], &rest[i..])),
        None => Some((rest, "/")),
    }
}

pub async fn track(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let slot = Slot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let (Some((org, actor)), Some((path_org, rest))) = (slot.0.get(), split_path(&path)) else {
        return resp;
    };
    if org != path_org || resp.status().as_u16() < 400 {
        return resp;
    }
    let failure = resp.extensions().get::<Failure>().cloned().unwrap_or(Failure {
        scim_type: None,
        detail: resp.status().canonical_reason().unwrap_or("failed").to_string(),
    });
    let request = format!("{method} {}", allot_domain::types::excerpt(rest));
    let e = allot_store::scim::ScimErrorRow {
        at: allot_store::ts(app.clock.now()),
        actor: actor.clone(),
        request,
        status: i64::from(resp.status().as_u16()),
        scim_type: failure.scim_type.map(str::to_string),
        detail: failure.detail,
    };
    if let Err(e) = crate::app::scim::record_failure(&app, org, &e).await {
        tracing::warn!(error = %e.detail, "could not record a failed SCIM request");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::split_path;

    #[test]
    fn splits_the_org_from_the_rest() {
        assert_eq!(split_path("/scim/v2/orgs/org_1/Users/x"), Some(("org_1", "/Users/x")));
        assert_eq!(split_path("/scim/v2/orgs/org_1"), Some(("org_1", "/")));
        assert_eq!(split_path("/api/v1/orgs"), None);
    }
}
