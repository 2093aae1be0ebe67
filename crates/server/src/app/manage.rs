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
use allot_domain::bulk::{holder_state, HolderState, JobMode, LicenseJobRequest};
use allot_domain::planner::{AddLicense, RemoveLicense};
use allot_domain::types::ProductCode;
use allot_domain::{Code, Error, Violation};

use super::jobs::{self, JobView};
use super::users::UserView;
use super::{App, Caller};

/// Selected users shown as boxes at the top of the page.
pub const BOXES: i64 = 200;

/// One subscription item seen from the selection.
#[derive(Debug, Clone)]
pub struct SelectionItem {
    pub product: String,
    pub name: String,
    pub subscription: String,
    pub total: i64,
    pub available: i64,
    /// Whether all, some or none of the selected users hold it.
    pub state: HolderState,
    /// How many of the selected users hold it.
    pub holders: i64,
}

/// The selection seen from its licences.
#[derive(Debug, Clone)]
pub struct SelectionLicenses {
    pub selected: i64,
    /// The first [`BOXES`] selected users by email: (id, email).
    pub first: Vec<(String, String)>,
    /// Per subscription item; empty when nobody is selected.
    pub items: Vec<SelectionItem>,
}

/// The selection's size, its first users and, per item, how many of them
/// hold it: a few grouped reads in one snapshot, whatever the selection's
/// size (a selection of every user of a large org is as cheap to show as
/// one of ten).
pub async fn summarize_selection(app: &App, caller: &Caller, session: &str, org: &str) -> Result<SelectionLicenses, Error> {
    let org = app.visible_org(caller, org, Action::ReadLicenses).await?;
    caller.require(Action::ReadUsers)?;
    let mut rd = app.store.begin_read().await?;
    let selected = allot_store::selections::count(&mut rd, session, &org.id).await?;
    if selected == 0 {
        return Ok(SelectionLicenses {
            selected,
            first: Vec::new(),
            items: Vec::new(),
        });
    }
    let first = allot_store::selections::first_by_email(&mut rd, session, &org.id, BOXES).await?;
    let counts = allot_store::selections::holder_counts(&mut rd, session, &org.id).await?;
    let cat = allot_store::catalogue::all(&mut rd).await?;
    let items = allot_store::subscriptions::license_rows(&mut rd, &org.id)
        .await?
        .into_iter()
        .map(|r| {
            let holders = counts
                .iter()
                .find(|(sub, product, _)| *sub == r.subscription && *product == r.product)
                .map_or(0, |c| c.2);
            let name = ProductCode::parse(&r.product)
                .ok()
                .and_then(|c| cat.get(&c).map(|p| p.name.clone()))
                .unwrap_or_else(|| r.product.clone());
            SelectionItem {
                state: holder_state(holders as usize, selected as usize),
                available: r.total - r.consumed,
                product: r.product,
                name,
                subscription: r.subscription,
                total: r.total,
                holders,
            }
        })
        .collect();
    Ok(SelectionLicenses { selected, first, items })
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
    let org = app.visible_org(caller, org, Action::WriteLicenses).await?;
    caller.require(Action::ReadUsers)?;
    // One snapshot: the selection's size, the org's items and, for each
    // wished row, how many selected users hold it, counted from its pool's
    // side (a product nobody selected holds yet costs nothing to check,
    // however many users are selected).
    let mut rd = app.store.begin_read().await?;
    let selected = allot_store::selections::count(&mut rd, session, &org.id).await?;
    if selected == 0 {
        return Err(Error::validation(
            "users",
            "No users are selected. Select them on the Users page first.",
        ));
    }
    let rows = allot_store::subscriptions::license_rows(&mut rd, &org.id).await?;
    let cat = allot_store::catalogue::all(&mut rd).await?;
    let mut counted = Vec::with_capacity(wishes.len());
    for w in wishes {
        let row = rows
            .iter()
            .find(|r| r.product == w.product && r.subscription == w.subscription)
            .ok_or_else(|| item_not_found(&w.product, &w.subscription))?;
        let holders = allot_store::selections::pool_holder_count(&mut rd, session, &org.id, &row.product, &row.subscription).await?;
        counted.push((w, row, holders));
    }
    rd.rollback().await?;
    let mut req = LicenseJobRequest {
        mode: JobMode::PerUser,
        ..LicenseJobRequest::default()
    };
    let mut short = Vec::new();
    for (i, (w, row, holders)) in counted.into_iter().enumerate() {
        let product = ProductCode::parse(&row.product)?;
        let state = holder_state(holders as usize, selected as usize);
        let available = row.total - row.consumed;
        match w.want {
            Want::All if state != HolderState::All => {
                let needed = selected - holders;
                if needed > available {
                    let name = cat.get(&product).map_or(row.product.as_str(), |p| p.name.as_str());
                    short.push(
                        Violation::new(
                            Code::SeatsExhausted,
                            format!(
                                "{name} on subscription {}: {needed} seats are needed for the selected users who do not hold it, and {} {} free.",
                                row.subscription,
                                available.max(0),
                                if available == 1 { "is" } else { "are" }
                            ),
                        )
                        .field(format!("items[{i}]")),
                    );
                }
                req.add.push(AddLicense {
                    product,
                    subscription: Some(row.subscription.clone()),
                    properties: Default::default(),
                });
            }
            Want::None if state != HolderState::None => req.remove.push(RemoveLicense {
                product,
                subscription: Some(row.subscription.clone()),
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
    let ids = {
        let mut rd = app.store.read_conn().await?;
        allot_store::selections::all_ids(&mut rd, session, &org.id).await?
    };
    req.users = Some(ids);
    jobs::create_license_job(app, caller, &org.id, req).await
}

/// A product on a subscription the org does not have.
fn item_not_found(product: &str, subscription: &str) -> Error {
    Error::not_found(format!(
        "Product {} on subscription {}",
        allot_domain::types::excerpt(product),
        allot_domain::types::excerpt(subscription)
    ))
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
) -> Result<(i64, Vec<UserView>), Error> {
    let org = app.visible_org(caller, org, Action::ReadLicenses).await?;
    caller.require(Action::ReadUsers)?;
    let mut rd = app.store.begin_read().await?;
    let rows = allot_store::subscriptions::license_rows(&mut rd, &org.id).await?;
    if !rows.iter().any(|r| r.product == product && r.subscription == subscription) {
        return Err(item_not_found(product, subscription));
    }
    let holders = allot_store::selections::pool_holder_count(&mut rd, session, &org.id, product, subscription).await?;
    let ids = allot_store::selections::holders_of(&mut rd, session, &org.id, product, subscription, limit as i64).await?;
    let mut users: Vec<UserView> = allot_store::users::many(&mut rd, &org.id, &ids)
        .await?
        .into_iter()
        .map(UserView::from)
        .collect();
    rd.rollback().await?;
    users.sort_by(|a, b| a.email.cmp(&b.email));
    Ok((holders, users))
}
