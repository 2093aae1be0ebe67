//! Manage licenses for the users a console session has selected (Partner
//! Center's page): per subscription item, whether all, some or none of
//! them hold it, and one change for all of them as a bulk job. The
//! selection itself is `allot_store::selections` (see `app::users`).
//!
//! A product is given to everyone or refused as a whole *before* the job
//! is queued: when its subscription has fewer free seats than selected
//! users without it, nothing is written and the refusal says how many are
//! needed and how many are free. The job then plans each user on its own
//! (mode per user), so a user refused for a rule of their own is one line
//! of the results, not a failed job.

use allot_domain::access::Action;
use allot_domain::bulk::{HolderState, JobMode, LicenseJobRequest};
use allot_domain::planner::{AddLicense, RemoveLicense};
use allot_domain::types::ProductCode;
use allot_domain::{Code, Error, Violation};

use super::jobs::{self, JobView, LicenseSummary, SummaryRequest};
use super::users::UserView;
use super::{App, Caller};

/// Selected users shown as boxes at the top of the page.
pub const BOXES: i64 = 200;

/// The selection seen from its licences.
#[derive(Debug, Clone)]
pub struct SelectionLicenses {
    pub selected: i64,
    /// The first [`BOXES`] selected users by email: (id, email).
    pub first: Vec<(String, String)>,
    /// Per subscription item; None when nobody is selected.
    pub summary: Option<LicenseSummary>,
}

async fn selected_ids(app: &App, caller: &Caller, session: &str, org: &str) -> Result<(String, Vec<String>), Error> {
    let org = app.visible_org(caller, org, Action::ReadLicenses).await?;
    caller.require(Action::ReadUsers)?;
    let mut rd = app.store.read_conn().await?;
    let ids = allot_store::selections::all_ids(&mut rd, session, &org.id).await?;
    Ok((org.id, ids))
}

/// The selected users and, per subscription item, the seats free and
/// which of them hold it.
pub async fn summarize_selection(app: &App, caller: &Caller, session: &str, org: &str) -> Result<SelectionLicenses, Error> {
    let (org, ids) = selected_ids(app, caller, session, org).await?;
    let first = {
        let mut rd = app.store.read_conn().await?;
        allot_store::selections::first_by_email(&mut rd, session, &org, BOXES).await?
    };
    let selected = ids.len() as i64;
    let summary = if ids.is_empty() {
        None
    } else {
        Some(jobs::summarize_licenses(app, caller, &org, SummaryRequest { users: ids }).await?)
    };
    Ok(SelectionLicenses { selected, first, summary })
}

/// What a row of the page asks for everyone selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Ticked: every selected user holds it afterwards.
    All,
    /// Cleared: no selected user holds it afterwards.
    None,
}

/// One row's wish: a product on a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemWish {
    pub product: String,
    pub subscription: String,
    pub want: Want,
}

/// Starts the bulk job that makes the selection hold what `wishes` say;
/// rows whose wish is already true are left out. Refused as a whole,
/// nothing written, when a product lacks seats for everyone.
pub async fn change_selection_licenses(
    app: &App,
    caller: &Caller,
    session: &str,
    org: &str,
    wishes: &[ItemWish],
) -> Result<JobView, Error> {
    let (org, ids) = selected_ids(app, caller, session, org).await?;
    caller.require(Action::WriteLicenses)?;
    if ids.is_empty() {
        return Err(Error::validation(
            "users",
            "No users are selected. Select them on the Users page first.",
        ));
    }
    let summary = jobs::summarize_licenses(app, caller, &org, SummaryRequest { users: ids.clone() }).await?;
    let mut req = LicenseJobRequest {
        mode: JobMode::PerUser,
        ..LicenseJobRequest::default()
    };
    let mut short = Vec::new();
    for (i, w) in wishes.iter().enumerate() {
        let Some(item) = summary
            .items
            .iter()
            .find(|it| it.product == w.product && it.subscription == w.subscription)
        else {
            return Err(Error::not_found(format!(
                "Product {} on subscription {}",
                allot_domain::types::excerpt(&w.product),
                allot_domain::types::excerpt(&w.subscription)
            )));
        };
        let product = ProductCode::parse(&item.product)?;
        match w.want {
            Want::All if item.state != HolderState::All => {
                let needed = ids.len() as i64 - item.holders.len() as i64;
                if needed > item.available {
                    short.push(
                        Violation::new(
                            Code::SeatsExhausted,
                            format!(
                                "{} on subscription {}: {needed} seats are needed for the selected users who do not hold it, and {} {} free.",
                                item.name,
                                item.subscription,
                                item.available.max(0),
                                if item.available == 1 { "is" } else { "are" }
                            ),
                        )
                        .field(format!("items[{i}]")),
                    );
                }
                req.add.push(AddLicense {
                    product,
                    subscription: Some(item.subscription.clone()),
                    properties: Default::default(),
                });
            }
            Want::None if item.state != HolderState::None => req.remove.push(RemoveLicense {
                product,
                subscription: Some(item.subscription.clone()),
            }),
            _ => {}
        }
    }
    if !short.is_empty() {
        let mut e = Error::rejected(short);
        e.detail = "Not enough free seats for every selected user; nothing was changed.".to_string();
        return Err(e);
    }
    if req.add.is_empty() && req.remove.is_empty() {
        return Err(Error::validation(
            "items",
            "Nothing to change: tick a box to give a product to everyone selected, or clear one to take it from everyone.",
        ));
    }
    req.users = Some(ids);
    jobs::create_license_job(app, caller, &org, req).await
}

/// The selected users that hold `product` on `subscription` (the page's
/// **Assigned** link), up to `limit`, by email; and how many hold it.
pub async fn selection_holders(
    app: &App,
    caller: &Caller,
    session: &str,
    org: &str,
    product: &str,
    subscription: &str,
    limit: usize,
) -> Result<(usize, Vec<UserView>), Error> {
    let s = summarize_selection(app, caller, session, org).await?;
    if s.summary.is_none() {
        // Nobody selected: nobody selected holds it.
        return Ok((0, Vec::new()));
    }
    let Some(item) = s.summary.and_then(|sum| {
        sum.items
            .into_iter()
            .find(|it| it.product == product && it.subscription == subscription)
    }) else {
        return Err(Error::not_found(format!(
            "Product {} on subscription {}",
            allot_domain::types::excerpt(product),
            allot_domain::types::excerpt(subscription)
        )));
    };
    let org = app.visible_org(caller, org, Action::ReadUsers).await?;
    let n = item.holders.len();
    let mut rd = app.store.read_conn().await?;
    let mut users: Vec<UserView> = allot_store::users::many(&mut rd, &org.id, &item.holders[..n.min(limit)])
        .await?
        .into_iter()
        .map(UserView::from)
        .collect();
    users.sort_by(|a, b| a.email.cmp(&b.email));
    Ok((n, users))
}
