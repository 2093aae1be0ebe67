//! Users of an org. A user created by any path gets the licences of the
//! enabled template that fits it (see `templates::give_new_user_template`).

use allot_store::tenants::Org;
use serde::{Deserialize, Serialize};

use allot_domain::access::Action;
use allot_domain::types::{CountryCode, Email, UserKind, UserStatus};
use allot_domain::Error;
use allot_store::users::{self, User, UserFilter};
use allot_store::{audit, in_transaction, licenses, new_id, StoreError, Tx};

use super::audit::snapshot;
use super::etag::{self, IfMatch};
use super::paging::{Page, Paged};
use super::templates::TemplateOutcome;
use super::tenants::double_option;
use super::{App, Caller};

/// A user as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub kind: UserKind,
    pub status: UserStatus,
    /// Where the user uses its licences (some products are sold only in some countries).
    #[schema(value_type = Option<CountryCode>)]
    pub usage_location: Option<String>,
    /// Ids of the org's sites this user administers.
    pub site_admin_of: Vec<String>,
    /// Ids of the org's groups this user is a member of.
    pub groups: Vec<String>,
    /// Changes whenever the user does; send it as `If-Match` to update only what was read.
    pub etag: String,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            etag: etag::of(&u),
            id: u.id,
            email: u.email,
            display_name: u.display_name,
            kind: u.kind,
            status: u.status,
            usage_location: u.usage_location,
            site_admin_of: u.site_admin_of,
            groups: u.groups,
        }
    }
}

/// A user just created, with what its licence template gave it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedUser {
    #[serde(flatten)]
    pub user: UserView,
    /// Set when an enabled template fits the new user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_template: Option<TemplateOutcome>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    pub email: Email,
    #[serde(default)]
    #[schema(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub display_name: Option<String>,
    /// Default `internal`.
    #[serde(default)]
    pub kind: Option<UserKind>,
    /// Default `active` (`pending` for an external user, until accepted).
    #[serde(default)]
    pub status: Option<UserStatus>,
    #[serde(default)]
    pub usage_location: Option<CountryCode>,
    #[serde(default)]
    pub site_admin_of: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Changes to a user; fields left out stay as they are.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub email: Option<Email>,
    #[schema(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub display_name: Option<String>,
    pub kind: Option<UserKind>,
    pub status: Option<UserStatus>,
    /// null clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<CountryCode>)]
    pub usage_location: Option<Option<CountryCode>>,
    pub site_admin_of: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
}

/// The user list's filters and page.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    #[param(pattern = "^[A-Za-z0-9_-]{1,200}$")]
    pub cursor: Option<String>,
    /// The user with this email (case-insensitive, exact).
    #[param(
        max_length = 254,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub email: Option<String>,
    pub kind: Option<UserKind>,
    pub status: Option<UserStatus>,
    /// Text the email or display name contains (case-insensitive).
    #[param(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub q: Option<String>,
}

fn check_display_name(n: &str) -> Result<String, Error> {
    allot_domain::types::check_search("display_name", n, 200)?;
    if n.trim().is_empty() {
        return Ok(String::new());
    }
    allot_domain::types::check_text("display_name", n, 200)
}

fn user_not_found(id: &str) -> Error {
    Error::not_found(format!("User {}", allot_domain::types::excerpt(id)))
}

async fn check_links(tx: &mut Tx, org: &str, u: &User) -> Result<(), StoreError> {
    let missing = users::unknown_links(tx, org, &u.site_admin_of, &u.groups).await?;
    if !missing.is_empty() {
        return Err(Error::validation("site_admin_of", format!("Not in this organisation: {}.", missing.join(", "))).into());
    }
    Ok(())
}

pub async fn list_users(app: &App, caller: &Caller, org: &str, q: &UserQuery) -> Result<Paged<UserView>, Error> {
    let page = Page::of(q.limit, q.cursor.as_deref())?;
    if let Some(t) = &q.q {
        allot_domain::types::check_search("q", t, 200)?;
    }
    if let Some(t) = &q.email {
        allot_domain::types::check_search("email", t, 254)?;
    }
    let filter = UserFilter {
        email: q.email.clone(),
        kind: q.kind,
        status: q.status,
        q: q.q.clone().filter(|s| !s.is_empty()),
        product: None,
    };
    let org = app.visible_org(caller, org, Action::ReadUsers).await?;
    let mut tx = app.store.begin_read().await?;
    let rows = users::list(&mut tx, &org.id, &filter, page.after.as_deref(), page.limit + 1).await?;
    Ok(Paged::from_rows(rows, page.limit, |u| u.id.clone()).map(UserView::from))
}

/// The console's **Users** page: filters as the page's URL carries them.
#[derive(Debug, Clone, Default)]
pub struct UserBrowse {
    /// Text the email or display name contains.
    pub q: Option<String>,
    pub kind: Option<UserKind>,
    pub status: Option<UserStatus>,
    /// Only holders of this product.
    pub product: Option<String>,
}

impl UserBrowse {
    fn filter(&self) -> Result<UserFilter, Error> {
        if let Some(t) = &self.q {
            allot_domain::types::check_search("q", t, 200)?;
        }
        if let Some(p) = &self.product {
            allot_domain::types::ProductCode::parse(p)?;
        }
        Ok(UserFilter {
            kind: self.kind,
            status: self.status,
            q: self.q.clone().filter(|s| !s.trim().is_empty()).map(|s| s.trim().to_string()),
            product: self.product.clone(),
            ..UserFilter::default()
        })
    }
}

/// One page of users and whether there are pages before and after it.
#[derive(Debug, Clone)]
pub struct UsersPage {
    pub items: Vec<UserView>,
    pub has_previous: bool,
    pub has_next: bool,
}

/// A page of an org's users from `at` (first, last, after or before an
/// id), found by key so that every page costs the same.
pub async fn browse_users(
    app: &App,
    caller: &Caller,
    org: &str,
    b: &UserBrowse,
    at: &users::PageAt,
    limit: i64,
) -> Result<UsersPage, Error> {
    let filter = b.filter()?;
    let org = app.visible_org(caller, org, Action::ReadUsers).await?;
    let mut rd = app.store.read_conn().await?;
    let mut rows = users::list_at(&mut rd, &org.id, &filter, at, limit + 1).await?;
    // The extra row says there is more in the direction read.
    let backwards = matches!(at, users::PageAt::Before(_) | users::PageAt::Last);
    let more = rows.len() as i64 > limit;
    if more {
        if backwards {
            rows.remove(0);
        } else {
            rows.pop();
        }
    }
    let (has_previous, has_next) = match (rows.first(), rows.last()) {
        (Some(first), Some(last)) => {
            let before = if backwards {
                more
            } else {
                !users::list_at(&mut rd, &org.id, &filter, &users::PageAt::Before(first.id.clone()), 1)
                    .await?
                    .is_empty()
            };
            let after = if backwards {
                !users::list_at(&mut rd, &org.id, &filter, &users::PageAt::After(last.id.clone()), 1)
                    .await?
                    .is_empty()
            } else {
                more
            };
            (before, after)
        }
        _ => (false, false),
    };
    Ok(UsersPage {
        items: rows.into_iter().map(UserView::from).collect(),
        has_previous,
        has_next,
    })
}

/// What a selection change does (the console's check boxes).
#[derive(Debug, Clone, Default)]
pub struct SelectionChange {
    pub add: Vec<String>,
    pub remove: Vec<String>,
    /// Adds every user that matches these filters, on screen or not.
    pub add_matching: Option<UserBrowse>,
    /// Empties the selection first.
    pub clear: bool,
}

/// The most ids one selection change may name (a page holds far fewer).
const MAX_SELECTION_IDS: usize = 1000;

/// Changes a console session's selection of an org's users and answers
/// how many are selected. `session` is the session's key.
pub async fn change_selection(app: &App, caller: &Caller, session: &str, org: &str, c: &SelectionChange) -> Result<i64, Error> {
    let org = app.visible_org(caller, org, Action::ReadUsers).await?;
    if c.add.len() + c.remove.len() > MAX_SELECTION_IDS {
        return Err(Error::validation(
            "users",
            format!("At most {MAX_SELECTION_IDS} users can be ticked or cleared at once."),
        ));
    }
    let matching = c.add_matching.as_ref().map(UserBrowse::filter).transpose()?;
    Ok(in_transaction!(app.store, |tx| {
        if c.clear {
            allot_store::selections::clear(&mut tx, session, &org.id).await?;
        }
        allot_store::selections::remove(&mut tx, session, &org.id, &c.remove).await?;
        allot_store::selections::add(&mut tx, session, &org.id, &c.add).await?;
        if let Some(f) = &matching {
            allot_store::selections::add_matching(&mut tx, session, &org.id, f).await?;
        }
        allot_store::selections::count(&mut tx, session, &org.id).await
    })?)
}

/// How many users the session has selected in the org, and which of
/// `among` are.
pub async fn selection(app: &App, caller: &Caller, session: &str, org: &str, among: &[String]) -> Result<(i64, Vec<String>), Error> {
    let org = app.visible_org(caller, org, Action::ReadUsers).await?;
    let mut rd = app.store.read_conn().await?;
    let n = allot_store::selections::count(&mut rd, session, &org.id).await?;
    let which = allot_store::selections::which(&mut rd, session, &org.id, among).await?;
    Ok((n, which))
}

/// A page of the selected users, in id order after `after`.
pub async fn list_selected(
    app: &App,
    caller: &Caller,
    session: &str,
    org: &str,
    after: &str,
    limit: i64,
) -> Result<Paged<UserView>, Error> {
    let org = app.visible_org(caller, org, Action::ReadUsers).await?;
    let mut rd = app.store.read_conn().await?;
    let rows = allot_store::selections::list(&mut rd, session, &org.id, after, limit + 1).await?;
    Ok(Paged::from_rows(rows, limit, |u| u.id.clone()).map(UserView::from))
}

pub async fn create_user(app: &App, caller: &Caller, org: &str, input: UserInput) -> Result<CreatedUser, Error> {
    let kind = input.kind.unwrap_or(UserKind::Internal);
    let status = input.status.unwrap_or(UserStatus::initial(kind));
    let u = User {
        id: new_id("usr"),
        email: input.email.to_string(),
        display_name: check_display_name(input.display_name.as_deref().unwrap_or(""))?,
        kind,
        status,
        usage_location: input.usage_location.map(|c| c.to_string()),
        site_admin_of: input.site_admin_of.clone(),
        groups: input.groups.clone(),
    };
    let (now, today) = (app.clock.now(), app.clock.today());
    let (u, from_template) = in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::WriteUsers).await?;
        if !u.site_admin_of.is_empty() {
            caller.require_for_field(Action::GrantSiteAdmin, "site_admin_of")?;
        }
        let from_template = insert_user(&mut tx, &org, caller, &u, now, today).await?;
        Ok::<_, StoreError>((u.clone(), from_template))
    })?;
    Ok(CreatedUser {
        user: u.into(),
        license_template: from_template,
    })
}

/// Writes a new user in the caller's transaction, the org already checked
/// (by the API's or SCIM's use case): its row, its audit event, the
/// licences of the enabled template that fits it, and those of its groups'
/// templates.
pub(crate) async fn insert_user(
    tx: &mut Tx,
    org: &Org,
    caller: &Caller,
    u: &User,
    now: chrono::DateTime<chrono::Utc>,
    today: chrono::NaiveDate,
) -> Result<Option<TemplateOutcome>, StoreError> {
    check_links(tx, &org.id, u).await?;
    users::insert(tx, &org.id, u, now).await?;
    audit::record(
        tx,
        Some(&org.id),
        &caller.actor(),
        "user.create",
        &format!("user:{}", u.id),
        None,
        snapshot(u).as_ref(),
        now,
    )
    .await?;
    let outcome = super::templates::give_new_user_template(tx, org, u, &caller.actor(), today, now).await?;
    if !u.groups.is_empty() {
        // Created in groups is joining them: each group's enabled template
        // gives what the one chosen above did not (a refusal is audited).
        let all = allot_store::templates::list(tx, &org.id).await?;
        let m = super::group_licenses::Membership {
            joined: &u.groups,
            left: &[],
            now_in: &u.groups,
        };
        super::group_licenses::follow_membership(tx, org, &all, &u.id, &m, &caller.actor(), today, now).await?;
    }
    Ok(outcome)
}

pub async fn get_user(app: &App, caller: &Caller, org: &str, user: &str) -> Result<UserView, Error> {
    let org = app.visible_org(caller, org, Action::ReadUsers).await?;
    let mut tx = app.store.read_conn().await?;
    Ok(users::get(&mut tx, &org.id, user)
        .await?
        .ok_or_else(|| user_not_found(user))?
        .into())
}

pub async fn update_user(app: &App, caller: &Caller, org: &str, user: &str, p: UserPatch, if_match: &IfMatch) -> Result<UserView, Error> {
    let display_name = p.display_name.as_deref().map(check_display_name).transpose()?;
    let (now, today) = (app.clock.now(), app.clock.today());
    let u = in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::WriteUsers).await?;
        if p.site_admin_of.is_some() {
            caller.require_for_field(Action::GrantSiteAdmin, "site_admin_of")?;
        }
        let before = users::get_for_update(&mut tx, &org.id, user)
            .await?
            .ok_or_else(|| user_not_found(user))?;
        let mut u = before.clone();
        if let Some(e) = &p.email {
            u.email = e.to_string();
        }
        if let Some(n) = &display_name {
            u.display_name = n.clone();
        }
        if let Some(k) = p.kind {
            u.kind = k;
        }
        if let Some(s) = p.status {
            u.status = s;
        }
        if let Some(l) = &p.usage_location {
            u.usage_location = l.as_ref().map(|c| c.to_string());
        }
        if let Some(s) = &p.site_admin_of {
            u.site_admin_of = s.clone();
        }
        if let Some(g) = &p.groups {
            u.groups = g.clone();
        }
        if_match.check(&format!("User {user}"), &etag::of(&before))?;
        write_user_update(&mut tx, &org, caller, &before, &u, now).await?;
        if u.groups != before.groups {
            // Group templates follow the membership; a refusal is audited and
            // the membership changes without it.
            let joined: Vec<String> = u.groups.iter().filter(|g| !before.groups.contains(g)).cloned().collect();
            let left: Vec<String> = before.groups.iter().filter(|g| !u.groups.contains(g)).cloned().collect();
            let all = allot_store::templates::list(&mut tx, &org.id).await?;
            let m = super::group_licenses::Membership {
                joined: &joined,
                left: &left,
                now_in: &u.groups,
            };
            super::group_licenses::follow_membership(&mut tx, &org, &all, &u.id, &m, &caller.actor(), today, now).await?;
        }
        Ok::<_, StoreError>(u)
    })?;
    Ok(u.into())
}

/// Writes a user's change in the caller's transaction, the org already
/// checked: its links, its row and its audit event.
pub(crate) async fn write_user_update(
    tx: &mut Tx,
    org: &Org,
    caller: &Caller,
    before: &User,
    u: &User,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    check_links(tx, &org.id, u).await?;
    users::update(tx, &org.id, u, now).await?;
    let (b, a) = (snapshot(before), snapshot(u));
    audit::record(
        tx,
        Some(&org.id),
        &caller.actor(),
        "user.update",
        &format!("user:{}", u.id),
        b.as_ref(),
        a.as_ref(),
        now,
    )
    .await?;
    Ok(())
}

/// Deletes a user; its seats are released (its service data enters retention).
pub async fn delete_user(app: &App, caller: &Caller, org: &str, user: &str, if_match: &IfMatch) -> Result<(), Error> {
    let now = app.clock.now();
    in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::WriteUsers).await?;
        let before = users::get_for_update(&mut tx, &org.id, user)
            .await?
            .ok_or_else(|| user_not_found(user))?;
        if_match.check(&format!("User {user}"), &etag::of(&before))?;
        remove_user(&mut tx, &org, caller, &before, now).await
    })
}

/// Deletes a user in the caller's transaction, the org already checked:
/// its seats released (its service data enters retention), the
/// `license.removed` events, the row and the audit event.
pub(crate) async fn remove_user(
    tx: &mut Tx,
    org: &Org,
    caller: &Caller,
    before: &User,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let released = licenses::release_all(tx, &org.id, &before.id).await?;
    super::webhooks::record_released(tx, &org.id, &before.id, &before.email, &released, &caller.actor(), now).await?;
    users::delete(tx, &org.id, &before.id).await?;
    let b = serde_json::json!({ "user": before, "licenses": released });
    audit::record(
        tx,
        Some(&org.id),
        &caller.actor(),
        "user.delete",
        &format!("user:{}", before.id),
        Some(&b),
        None,
        now,
    )
    .await?;
    Ok(())
}
