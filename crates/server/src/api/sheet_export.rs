//! `GET .../users.csv`: every user of an org with a TRUE/FALSE column per
//! subscription item (R-CSV-1). Streamed: a task reads pages of users in id
//! order and hands the bytes to the response through a small bounded
//! channel, so a million users never sit in memory and a slow client slows
//! the reading down instead of filling the server.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use allot_domain::access::Action;
use allot_domain::sheet::{escape_cell, ItemColumn, USER_COLUMNS};
use allot_domain::types::ProductCode;
use allot_domain::Error;
use allot_store::{subscriptions, users};

use crate::auth::Ctx;
use crate::problem::ApiResult;
use crate::AppState;

/// Users per page read: one statement each, about 1 MB of CSV.
const EXPORT_PAGE: i64 = 5_000;

/// Pages written ahead of the client.
const PAGES_AHEAD: usize = 2;

/// Appends one CSV cell: formula characters escaped, quoted when needed.
pub fn push_cell(out: &mut String, raw: &str) {
    let s = escape_cell(raw);
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&s);
    }
}

/// The org's item columns, in product then subscription order.
pub async fn item_columns(tx: &mut allot_store::Tx, org: &str) -> Result<Vec<ItemColumn>, Error> {
    subscriptions::license_rows(tx, org)
        .await?
        .into_iter()
        .map(|r| {
            Ok(ItemColumn {
                product: ProductCode::parse(&r.product)?,
                subscription: r.subscription,
            })
        })
        .collect()
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/users.csv", tag = "csv", params(("org" = String, Path)),
    responses((status = 200, description = "One row per user: email, display_name, kind, status, usage_location, then TRUE/FALSE per subscription item", content_type = "text/csv")))]
pub async fn export(State(st): State<AppState>, ctx: Ctx, Path(org): Path<String>) -> ApiResult<Response> {
    let mut rd = st.store.read_conn().await?;
    let org = ctx.org(&mut rd, &org, Action::ReadUsers).await?;
    ctx.require(Action::ReadLicenses)?;
    let columns = item_columns(&mut rd, &org.id).await?;
    drop(rd);
    let mut head = String::new();
    for (i, name) in USER_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .chain(columns.iter().map(ItemColumn::heading))
        .enumerate()
    {
        if i > 0 {
            head.push(',');
        }
        push_cell(&mut head, &name);
    }
    head.push_str("\r\n");
    let (send, recv) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(PAGES_AHEAD);
    let org_id = org.id.clone();
    tokio::spawn(async move {
        if send.send(Ok(Bytes::from(head))).await.is_err() {
            return;
        }
        let index: HashMap<(&str, &str), usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| ((c.product.as_str(), c.subscription.as_str()), i))
            .collect();
        let mut after = String::new();
        loop {
            let page = async {
                // A read transaction: a page's users and seats are one snapshot.
                let mut rd = st.store.begin_read().await?;
                let page = users::export_page(&mut rd, &org_id, &after, EXPORT_PAGE).await;
                rd.rollback().await?;
                page
            }
            .await;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    // Cut off, so the client sees an incomplete download, not a short file.
                    let e = Error::from(e);
                    tracing::error!(org = %org_id, error = %e.detail, "users CSV cut off");
                    let _ = send.send(Err(std::io::Error::other(e.detail))).await;
                    return;
                }
            };
            let Some(last) = page.last() else { return };
            after = last.user.id.clone();
            let full = page.len() as i64 == EXPORT_PAGE;
            let mut out = String::with_capacity(page.len() * (60 + 6 * columns.len()));
            let mut held = vec![false; columns.len()];
            for e in &page {
                let u = &e.user;
                for (i, v) in [
                    u.email.as_str(),
                    u.display_name.as_str(),
                    u.kind.as_str(),
                    u.status.as_str(),
                    u.usage_location.as_deref().unwrap_or(""),
                ]
                .iter()
                .enumerate()
                {
                    if i > 0 {
                        out.push(',');
                    }
                    push_cell(&mut out, v);
                }
                held.iter_mut().for_each(|h| *h = false);
                for (p, s) in &e.seats {
                    if let Some(i) = index.get(&(p.as_str(), s.as_str())) {
                        held[*i] = true;
                    }
                }
                for h in &held {
                    out.push_str(if *h { ",TRUE" } else { ",FALSE" });
                }
                out.push_str("\r\n");
            }
            if send.send(Ok(Bytes::from(out))).await.is_err() {
                return; // the client went away
            }
            if !full {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(recv, |mut r| async move { r.recv().await.map(|item| (item, r)) });
    let filename = format!("attachment; filename=\"{}-users.csv\"", org.id);
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, filename),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
