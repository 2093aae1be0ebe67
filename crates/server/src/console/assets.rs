//! The console's static files, embedded in the binary: htmx (vendored from
//! the npm registry's `htmx.org` package, version 2.0.11, BSD-0 licence in
//! `assets/htmx.LICENSE`), our own small script and the one stylesheet. Each is served under a
//! name carrying a hash of its content, so that it can be cached for a year
//! and a new build's file is fetched under a new name.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

const STYLESHEET: &str = include_str!("assets/allot.css");
const HTMX: &str = include_str!("assets/htmx.min.js");
const OWN_SCRIPT: &str = include_str!("assets/allot.js");

/// A file as served: its hashed name and type.
pub struct Asset {
    pub name: String,
    content_type: &'static str,
    body: &'static str,
}

fn asset(stem: &str, ext: &str, content_type: &'static str, body: &'static str) -> Asset {
    let hash = hex::encode(&Sha256::digest(body.as_bytes())[..8]);
    Asset {
        name: format!("{stem}.{hash}.{ext}"),
        content_type,
        body,
    }
}

pub static STYLE: LazyLock<Asset> = LazyLock::new(|| asset("allot", "css", "text/css; charset=utf-8", STYLESHEET));
pub static SCRIPT: LazyLock<Asset> = LazyLock::new(|| asset("htmx", "js", "text/javascript; charset=utf-8", HTMX));
/// Our own few lines: the tri-state boxes of Manage licenses.
pub static OWN: LazyLock<Asset> = LazyLock::new(|| asset("allot", "js", "text/javascript; charset=utf-8", OWN_SCRIPT));

/// The URL of an asset.
pub fn url(a: &Asset) -> String {
    format!("/ui/assets/{}", a.name)
}

/// `GET /ui/assets/{name}`: only the current names exist.
pub async fn serve_asset(Path(name): Path<String>) -> Response {
    let Some(a) = [&*STYLE, &*SCRIPT, &*OWN].into_iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "No such file.").into_response();
    };
    let mut resp = a.body.into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    resp
}
