//! SCIM 2.0 use cases: an org's identity provider reads and writes its
//! users (RFC 7643 / 7644). Every call needs `ProvisionIdentities` in the
//! org (a `scim` token of that org; any other org answers 404), and every
//! write goes through the same writes as the JSON API's (`users.rs`'s
//! `insert_user`, `write_user_update`, `remove_user`: the same audit
//! events, templates and webhook events), with the token as the actor.
//!
//! The resource served is [`ScimUser`]; filters are decided on it as
//! served (`allot_domain::scim::eval`), after an indexed lookup where the
//! filter allows one (`userName eq`, `externalId eq`, `id eq`), so that
//! what a filter matches is exactly what a client sees.

use serde::Serialize;
use serde_json::Value;

use allot_domain::access::Action;
use allot_domain::planner::{LicenseChange, RemoveLicense};
use allot_domain::scim::filter::{parse_filter, CompValue, CompareOp, Filter};
use allot_domain::scim::group::{GroupAttrs, GROUP_SCHEMA};
use allot_domain::scim::user::{email_json, ScimEmail, UserAttrs, LICENSING_SCHEMA, USER_SCHEMA};
use allot_domain::types::{CountryCode, Email, UserKind, UserStatus};
use allot_domain::{Code, Error};
use allot_store::scim::{self as store, ScimIdentity, ScimUserRow};
use allot_store::tenants::Org;
use allot_store::users::{self, User};
use allot_store::{in_transaction, new_id, StoreError, Tx};

use super::access::Caller;
use super::etag::{self, IfMatch};
use super::group_licenses::{follow_membership, Membership};
use super::App;

pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// The most resources one page holds (`count` above it is lowered).
pub const MAX_PAGE: i64 = 200;

#[derive(Debug, Clone, Serialize)]
pub struct ScimName {
    #[serde(rename = "givenName", skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(rename = "familyName", skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub formatted: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScimEmailView {
    pub value: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub primary: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LicensingView {
    #[serde(rename = "usageLocation", skip_serializing_if = "Option::is_none")]
    pub usage_location: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScimMeta {
    #[serde(rename = "resourceType")]
    pub resource_type: &'static str,
    pub created: String,
    #[serde(rename = "lastModified")]
    pub last_modified: String,
    pub location: String,
    pub version: String,
}

/// A user as SCIM serves it. Every attribute but `schemas` and `id` is
/// optional so that `attributes` / `excludedAttributes` can leave it out.
#[derive(Debug, Clone, Serialize)]
pub struct ScimUser {
    pub schemas: Vec<&'static str>,
    pub id: String,
    #[serde(rename = "externalId", skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(rename = "userName", skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<ScimName>,
    #[serde(rename = "displayName", skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emails: Option<Vec<ScimEmailView>>,
    #[serde(
        rename = "urn:allot:params:scim:schemas:extension:licensing:2.0:User",
        skip_serializing_if = "Option::is_none"
    )]
    pub licensing: Option<LicensingView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<ScimMeta>,
}

/// A page of resources.
#[derive(Debug, Clone, Serialize)]
pub struct ListResponse<T> {
    pub schemas: Vec<&'static str>,
    #[serde(rename = "totalResults")]
    pub total_results: usize,
    #[serde(rename = "startIndex")]
    pub start_index: usize,
    #[serde(rename = "itemsPerPage")]
    pub items_per_page: usize,
    #[serde(rename = "Resources")]
    pub resources: Vec<T>,
}

/// A list's query: `filter`, `startIndex` (1-based), `count`, and which
/// attributes to return.
#[derive(Debug, Clone, Default)]
pub struct ScimQuery {
    pub filter: Option<String>,
    pub start_index: Option<i64>,
    pub count: Option<i64>,
    pub projection: Projection,
}

/// `attributes` / `excludedAttributes` (comma-separated names).
#[derive(Debug, Clone, Default)]
pub struct Projection {
    pub attributes: Vec<String>,
    pub excluded: Vec<String>,
}

impl Projection {
    pub fn parse(attributes: Option<&str>, excluded: Option<&str>) -> Projection {
        let list = |s: Option<&str>| -> Vec<String> {
            s.unwrap_or("")
                .split(',')
                .map(|a| a.trim())
                .filter(|a| !a.is_empty())
                // `urn:...:User:name.givenName` and `name.givenName` name the top attribute `name`.
                .map(|a| {
                    let local = if a.to_ascii_lowercase().starts_with(&USER_SCHEMA.to_ascii_lowercase()) {
                        a[USER_SCHEMA.len()..].trim_start_matches(':')
                    } else {
                        a
                    };
                    let top = local.split('.').next().unwrap_or(local);
                    if top.is_empty() {
                        a.to_ascii_lowercase()
                    } else {
                        top.to_ascii_lowercase()
                    }
                })
                .collect()
        };
        Projection {
            attributes: list(attributes),
            excluded: list(excluded),
        }
    }

    /// Whether the top attribute `name` (lower case) is returned.
    fn keeps(&self, name: &str) -> bool {
        let licensing = LICENSING_SCHEMA.to_ascii_lowercase();
        let named = |list: &[String]| list.iter().any(|a| a == name || (name == licensing && a.starts_with(&licensing)));
        if !self.attributes.is_empty() {
            return named(&self.attributes);
        }
        !named(&self.excluded)
    }

    pub fn apply(&self, mut u: ScimUser) -> ScimUser {
        if self.attributes.is_empty() && self.excluded.is_empty() {
            return u;
        }
        if !self.keeps("externalid") {
            u.external_id = None;
        }
        if !self.keeps("username") {
            u.user_name = None;
        }
        if !self.keeps("name") {
            u.name = None;
        }
        if !self.keeps("displayname") {
            u.display_name = None;
        }
        if !self.keeps("active") {
            u.active = None;
        }
        if !self.keeps("emails") {
            u.emails = None;
        }
        if !self.keeps(&LICENSING_SCHEMA.to_ascii_lowercase()) {
            u.licensing = None;
        }
        if !self.keeps("meta") {
            u.meta = None;
        }
        u
    }
}

/// The attributes Allot keeps of a stored user, as SCIM's model has them.
fn attrs_of(row: &ScimUserRow) -> UserAttrs {
    let emails: Vec<ScimEmail> = row
        .identity
        .emails
        .as_deref()
        .and_then(|e| serde_json::from_str::<Value>(e).ok())
        .and_then(|v| UserAttrs::from_body(&serde_json::json!({ "userName": "-", "emails": v })).ok())
        .map(|a| a.emails)
        .unwrap_or_else(|| {
            // A user made by the API or a CSV: its email is its one email.
            vec![ScimEmail {
                value: row.user.email.clone(),
                kind: Some("work".into()),
                primary: true,
            }]
        });
    UserAttrs {
        user_name: row.identity.user_name.clone().unwrap_or_else(|| row.user.email.clone()),
        external_id: row.identity.external_id.clone(),
        given_name: row.identity.given_name.clone(),
        family_name: row.identity.family_name.clone(),
        formatted_name: row.identity.formatted_name.clone(),
        display_name: Some(row.user.display_name.clone()).filter(|d| !d.is_empty()),
        active: row.user.status != UserStatus::Inactive,
        emails,
        usage_location: row.user.usage_location.clone(),
    }
}

/// The tag of what is served: `meta.version` is its weak form, and
/// `If-Match` is compared with it.
fn tag_of(row: &ScimUserRow) -> String {
    etag::of(&(&row.user, &row.identity))
}

fn weak(tag: &str) -> String {
    format!("W/\"{tag}\"")
}

/// The resource served for a stored user; `base` is the org's SCIM base URL.
pub fn view(row: &ScimUserRow, base: &str) -> ScimUser {
    let a = attrs_of(row);
    let licensing = a.usage_location.clone().map(|l| LicensingView { usage_location: Some(l) });
    ScimUser {
        // The extension's schema is listed when its object is there.
        schemas: if licensing.is_some() {
            vec![USER_SCHEMA, LICENSING_SCHEMA]
        } else {
            vec![USER_SCHEMA]
        },
        id: row.user.id.clone(),
        external_id: a.external_id.clone(),
        user_name: Some(a.user_name.clone()),
        name: (a.given_name.is_some() || a.family_name.is_some() || a.formatted_name.is_some()).then(|| ScimName {
            given_name: a.given_name.clone(),
            family_name: a.family_name.clone(),
            formatted: a.formatted_name.clone(),
        }),
        display_name: a.display_name.clone(),
        active: Some(a.active),
        emails: Some(
            a.emails
                .iter()
                .map(|e| ScimEmailView {
                    value: e.value.clone(),
                    kind: e.kind.clone(),
                    primary: e.primary,
                })
                .collect(),
        ),
        licensing,
        meta: Some(ScimMeta {
            resource_type: "User",
            created: row.created_at.clone(),
            last_modified: row.updated_at.clone(),
            location: format!("{base}/Users/{}", row.user.id),
            version: weak(&tag_of(row)),
        }),
    }
}

/// The org, if the caller provisions its identities (else 404 outside the
/// caller's tenant, 403 for a token of another role).
async fn scim_org(tx: &mut Tx, caller: &Caller, org: &str) -> Result<Org, Error> {
    caller.org(tx, org, Action::ProvisionIdentities).await
}

/// Whether the caller provisions this org's identities (404 outside its
/// tenant, 403 for a token of another role).
pub async fn check_provisioner(app: &App, caller: &Caller, org: &str) -> Result<(), Error> {
    app.visible_org(caller, org, Action::ProvisionIdentities).await.map(|_| ())
}

/// An exact lookup the filter allows: `userName eq`, `externalId eq` or
/// `id eq`, alone or and-ed with more.
enum Lookup {
    UserName(String),
    ExternalId(String),
    Id(String),
}

fn lookup_of(f: &Filter) -> Option<Lookup> {
    match f {
        Filter::Compare(p, CompareOp::Eq, CompValue::Str(v)) if p.uri.is_none() || p.uri.as_deref() == Some(USER_SCHEMA) => {
            if p.is("userName", None) {
                Some(Lookup::UserName(v.clone()))
            } else if p.is("externalId", None) {
                Some(Lookup::ExternalId(v.clone()))
            } else if p.is("id", None) {
                Some(Lookup::Id(v.clone()))
            } else {
                None
            }
        }
        Filter::And(a, b) => lookup_of(a).or_else(|| lookup_of(b)),
        _ => None,
    }
}

/// `GET /Users` (and `POST /Users/.search`).
pub async fn list_users(app: &App, caller: &Caller, org: &str, base: &str, q: &ScimQuery) -> Result<ListResponse<ScimUser>, Error> {
    let filter = q.filter.as_deref().map(parse_filter).transpose()?;
    let start = q.start_index.unwrap_or(1).max(1) as usize;
    let count = q.count.unwrap_or(MAX_PAGE).clamp(0, MAX_PAGE) as usize;
    let mut tx = app.store.read_conn().await?;
    let org = scim_org(&mut tx, caller, org).await?;
    let candidates: Option<Vec<ScimUserRow>> = match filter.as_ref().and_then(lookup_of) {
        Some(Lookup::UserName(n)) => Some(store::by_user_name(&mut tx, &org.id, &n).await?.into_iter().collect()),
        Some(Lookup::ExternalId(x)) => Some(store::by_external_id(&mut tx, &org.id, &x).await?),
        Some(Lookup::Id(id)) => Some(store::get(&mut tx, &org.id, &id).await?.into_iter().collect()),
        None => None,
    };
    let keep = |row: &ScimUserRow| -> Result<Option<ScimUser>, Error> {
        let served = view(row, base);
        match &filter {
            None => Ok(Some(served)),
            Some(f) => {
                let json = serde_json::to_value(&served).map_err(|e| Error::internal(format!("serving a user: {e}")))?;
                Ok(allot_domain::scim::eval::matches(f, &json).then_some(served))
            }
        }
    };
    // Every match is counted (`totalResults`); only the page is kept.
    let mut total = 0usize;
    let mut page = Vec::new();
    let mut take = |u: ScimUser| {
        total += 1;
        if total >= start && page.len() < count {
            page.push(q.projection.apply(u));
        }
    };
    match candidates {
        Some(rows) => {
            for r in &rows {
                if let Some(u) = keep(r)? {
                    take(u);
                }
            }
        }
        None => {
            let mut after = String::new();
            loop {
                let rows = store::page(&mut tx, &org.id, &after, 1_000).await?;
                for r in &rows {
                    if let Some(u) = keep(r)? {
                        take(u);
                    }
                }
                match rows.last() {
                    Some(last) if rows.len() == 1_000 => after = last.user.id.clone(),
                    _ => break,
                }
            }
        }
    }
    Ok(ListResponse {
        schemas: vec![LIST_RESPONSE_SCHEMA],
        total_results: total,
        start_index: start,
        items_per_page: page.len(),
        resources: page,
    })
}

fn user_not_found(id: &str) -> Error {
    Error::not_found(format!("User {}", allot_domain::types::excerpt(id)))
}

/// `GET /Users/{id}`.
pub async fn get_user(app: &App, caller: &Caller, org: &str, base: &str, id: &str, projection: &Projection) -> Result<ScimUser, Error> {
    let mut tx = app.store.read_conn().await?;
    let org = scim_org(&mut tx, caller, org).await?;
    let row = store::get(&mut tx, &org.id, id).await?.ok_or_else(|| user_not_found(id))?;
    Ok(projection.apply(view(&row, base)))
}

/// The user's email: its userName when that is an email address (the
/// usual case), else the primary email (or the work one, or the first):
/// Entra ID may send a user principal name that is no address.
fn email_of(a: &UserAttrs) -> Result<Email, Error> {
    if let Ok(e) = Email::parse(a.user_name.trim()) {
        return Ok(e);
    }
    let pick = a
        .emails
        .iter()
        .find(|e| e.primary)
        .or_else(|| a.emails.iter().find(|e| e.kind.as_deref() == Some("work")))
        .or_else(|| a.emails.first());
    match pick {
        Some(e) => Email::parse(e.value.trim())
            .map_err(|err| Error::validation("emails", format!("The email Allot would keep is not an address: {}", err.detail))),
        None => Err(Error::validation(
            "userName",
            "userName is not an email address and no email is given in emails: every Allot user has an email.",
        )),
    }
}

/// A userName that another user of the org has: SCIM's `uniqueness`. A
/// userName that is the new email needs only the kept names read: another
/// user's email is refused by the users' own unique index on insert.
async fn check_user_name(tx: &mut Tx, org: &str, a: &UserAttrs, email: &Email, user: &str) -> Result<(), StoreError> {
    let name = a.user_name.trim();
    let taken = if name == email.to_string() {
        store::kept_user_name(tx, org, name).await?.is_some_and(|id| id != user)
    } else {
        store::user_name_taken(tx, org, name, user).await?
    };
    if taken {
        return Err(StoreError::Domain(Error::new(
            Code::EmailTaken,
            "userName is taken: another user of this organisation has it (compared without case).",
        )));
    }
    Ok(())
}

fn location_of(a: &UserAttrs) -> Result<Option<String>, Error> {
    a.usage_location
        .as_deref()
        .map(|l| {
            CountryCode::parse(&l.to_ascii_uppercase())
                .map(|c| c.to_string())
                .map_err(|e| Error::validation("usageLocation", e.detail))
        })
        .transpose()
}

fn identity_of(a: &UserAttrs, email: &Email) -> ScimIdentity {
    let user_name = a.user_name.trim();
    ScimIdentity {
        user_name: (user_name != email.to_string()).then(|| user_name.to_string()),
        external_id: a.external_id.clone(),
        given_name: a.given_name.clone(),
        family_name: a.family_name.clone(),
        formatted_name: a.formatted_name.clone(),
        emails: Some(serde_json::to_string(&a.emails.iter().map(email_json).collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())),
    }
}

fn display_name_of(a: &UserAttrs) -> String {
    a.display_name
        .clone()
        .or_else(|| a.formatted_name.clone())
        .or_else(|| match (&a.given_name, &a.family_name) {
            (Some(g), Some(f)) => Some(format!("{g} {f}")),
            (Some(n), None) | (None, Some(n)) => Some(n.clone()),
            (None, None) => None,
        })
        .unwrap_or_default()
}

/// A duplicate userName is SCIM's `uniqueness` (409).
fn taken(e: StoreError) -> StoreError {
    match e {
        StoreError::Domain(err) if err.code == Code::EmailTaken => StoreError::Domain(Error::new(
            Code::EmailTaken,
            "userName is taken: another user of this organisation has this email (compared without case).",
        )),
        other => other,
    }
}

/// `POST /Users`: a new user, with the template that fits it.
pub async fn create_user(app: &App, caller: &Caller, org: &str, base: &str, body: &Value) -> Result<ScimUser, Error> {
    let a = UserAttrs::from_body(body)?;
    let email = email_of(&a)?;
    let u = User {
        id: new_id("usr"),
        email: email.to_string(),
        display_name: display_name_of(&a),
        kind: UserKind::Internal,
        status: if a.active { UserStatus::Active } else { UserStatus::Inactive },
        usage_location: location_of(&a)?,
        site_admin_of: vec![],
        groups: vec![],
    };
    let identity = identity_of(&a, &email);
    let (now, today) = (app.clock.now(), app.clock.today());
    in_transaction!(app.store, |tx| {
        let org = scim_org(&mut tx, caller, org).await?;
        check_user_name(&mut tx, &org.id, &a, &email, &u.id).await?;
        let outcome = super::users::insert_user(&mut tx, &org, caller, &u, now, today)
            .await
            .map_err(taken)?;
        store::put_identity(&mut tx, &org.id, &u.id, &identity).await?;
        if let Some(errors) = outcome.and_then(|o| o.errors) {
            let reasons: Vec<&str> = errors.iter().map(|v| v.message.as_str()).collect();
            let note = format!("{} was created without its template's licenses: {}", u.email, reasons.join(" "));
            note_refusals(&mut tx, &org.id, caller, "POST /Users", 201, &[note], now).await?;
        }
        Ok::<_, StoreError>(())
    })?;
    // As written (a template changes licences, not the user's row).
    let row = ScimUserRow {
        user: u,
        identity,
        created_at: allot_store::ts(now),
        updated_at: allot_store::ts(now),
    };
    Ok(view(&row, base))
}

/// What a `PUT` or `PATCH` makes of a user: the new attributes applied.
///
/// Deactivation releases the user's licences through the planner, as a
/// change removing them all (their service data kept for each product's
/// retention), unless the org keeps licences on deactivation; reactivation
/// gives the template that fits the user again and its groups' templates
/// (within retention, the service data comes back with the licences). A
/// refused licence change never blocks the identity change: it is recorded
/// for the identity provisioning page and the user's licences stay as they
/// were.
#[allow(clippy::too_many_arguments)]
async fn write_attrs(
    tx: &mut Tx,
    org: &Org,
    caller: &Caller,
    request: &str,
    before: &ScimUserRow,
    full: &User,
    a: &UserAttrs,
    today: chrono::NaiveDate,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let email = email_of(a)?;
    check_user_name(tx, &org.id, a, &email, &before.user.id).await?;
    // The whole user (its groups and sites too, which SCIM's row leaves
    // out): what is written is what it was with SCIM's attributes changed.
    let mut u = full.clone();
    u.email = email.to_string();
    u.display_name = display_name_of(a);
    u.usage_location = location_of(a)?;
    u.status = match (a.active, before.user.status) {
        (false, _) => UserStatus::Inactive,
        (true, UserStatus::Inactive) => UserStatus::Active,
        (true, s) => s,
    };
    if u != *full {
        super::users::write_user_update(tx, org, caller, full, &u, now)
            .await
            .map_err(taken)?;
    }
    let was_inactive = before.user.status == UserStatus::Inactive;
    let mut notes = Vec::new();
    if u.status == UserStatus::Inactive && !was_inactive {
        if !org.keep_licenses_on_deactivation {
            if let Some(errors) = release_licenses(tx, org, caller, &u.id, today, now).await? {
                let reasons: Vec<&str> = errors.iter().map(|v| v.message.as_str()).collect();
                notes.push(format!("{} was deactivated but keeps its licenses: {}", u.email, reasons.join(" ")));
            }
        }
    } else if was_inactive && u.status != UserStatus::Inactive {
        // With its groups, which choose the template.
        {
            // Licences kept through the deactivation stay as they are.
            if allot_store::licenses::of_user(tx, &org.id, &u.id).await?.is_empty() {
                if let Some(outcome) = super::templates::give_new_user_template(tx, org, full, &caller.actor(), today, now).await? {
                    if let Some(errors) = outcome.errors {
                        let reasons: Vec<&str> = errors.iter().map(|v| v.message.as_str()).collect();
                        notes.push(format!(
                            "{} was reactivated without its template's licenses: {}",
                            u.email,
                            reasons.join(" ")
                        ));
                    }
                }
            }
            // And every group's template, as when it joined them.
            let all = allot_store::templates::list(tx, &org.id).await?;
            let m = Membership {
                joined: &full.groups,
                left: &[],
                now_in: &full.groups,
            };
            let refused = follow_membership(tx, org, &all, &u.id, &m, &caller.actor(), today, now).await?;
            notes.extend(refused.iter().map(|r| r.describe(&u.email)));
        }
    }
    note_refusals(tx, &org.id, caller, request, 200, &notes, now).await?;
    let identity = identity_of(a, &email);
    if identity != before.identity {
        store::put_identity(tx, &org.id, &u.id, &identity).await?;
        store::touch(tx, &org.id, &u.id, now).await?;
    }
    Ok(())
}

/// Records the licence changes a SCIM change could not make (the identity
/// change went through), for the org's identity provisioning page.
async fn note_refusals(
    tx: &mut Tx,
    org: &str,
    caller: &Caller,
    request: &str,
    status: i64,
    notes: &[String],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    for detail in notes {
        let e = store::ScimErrorRow {
            at: allot_store::ts(now),
            actor: caller.actor().actor,
            request: request.to_string(),
            status,
            scim_type: None,
            detail: detail.clone(),
        };
        store::record_error(tx, org, &e).await?;
    }
    Ok(())
}

/// Removes every licence a deactivated user holds, as one planned change;
/// the planner's refusal, if it refused (the licences then stay).
async fn release_licenses(
    tx: &mut Tx,
    org: &Org,
    caller: &Caller,
    user: &str,
    today: chrono::NaiveDate,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Vec<allot_domain::Violation>>, StoreError> {
    let held = allot_store::licenses::of_user(tx, &org.id, user).await?;
    if held.is_empty() {
        return Ok(None);
    }
    let change = LicenseChange {
        remove: held
            .iter()
            .map(|a| RemoveLicense {
                product: a.held.product.clone(),
                subscription: Some(a.held.subscription.clone()),
            })
            .collect(),
        ..LicenseChange::default()
    };
    match super::licenses::change_within(tx, org, user, &change, &caller.actor(), today, now).await? {
        Ok(_) => Ok(None),
        Err(refused) => Ok(Some(refused)),
    }
}

/// `PUT /Users/{id}`: the body replaces the user (what it leaves out is
/// cleared); `If-Match` against `meta.version`.
pub async fn replace_user(
    app: &App,
    caller: &Caller,
    org: &str,
    base: &str,
    id: &str,
    body: &Value,
    if_match: &IfMatch,
) -> Result<ScimUser, Error> {
    let a = UserAttrs::from_body(body)?;
    if let Some(given) = body.get("id").and_then(Value::as_str) {
        if given != id {
            return Err(Error::new(Code::Mutability, "id is read-only: the body names another user."));
        }
    }
    let request = format!("PUT /Users/{id}");
    change_user(app, caller, org, base, id, &request, if_match, move |_| Ok(a.clone())).await
}

/// `PATCH /Users/{id}`: the operations apply in order, all or none.
pub async fn patch_user(
    app: &App,
    caller: &Caller,
    org: &str,
    base: &str,
    id: &str,
    body: &Value,
    if_match: &IfMatch,
) -> Result<ScimUser, Error> {
    let user_id = id.to_string();
    let request = format!("PATCH /Users/{id}");
    change_user(app, caller, org, base, id, &request, if_match, move |before| {
        before.patched(&user_id, body)
    })
    .await
}

#[allow(clippy::too_many_arguments)]
async fn change_user(
    app: &App,
    caller: &Caller,
    org: &str,
    base: &str,
    id: &str,
    request: &str,
    if_match: &IfMatch,
    change: impl Fn(&UserAttrs) -> Result<UserAttrs, Error>,
) -> Result<ScimUser, Error> {
    let (now, today) = (app.clock.now(), app.clock.today());
    let row = in_transaction!(app.store, |tx| {
        let org = scim_org(&mut tx, caller, org).await?;
        // Locks the user's row (as the API's changes do), then reads it as SCIM serves it.
        let full = users::get_for_update(&mut tx, &org.id, id)
            .await?
            .ok_or_else(|| user_not_found(id))?;
        let before = store::get(&mut tx, &org.id, id).await?.ok_or_else(|| user_not_found(id))?;
        if_match.check(&format!("User {id}"), &tag_of(&before))?;
        let after = change(&attrs_of(&before))?;
        write_attrs(&mut tx, &org, caller, request, &before, &full, &after, today, now).await?;
        store::get(&mut tx, &org.id, id)
            .await?
            .ok_or_else(|| StoreError::Db("the user just changed is missing".into()))
    })?;
    Ok(view(&row, base))
}

/// `DELETE /Users/{id}`: as the API's delete (seats released, service data
/// into retention).
pub async fn delete_user(app: &App, caller: &Caller, org: &str, id: &str, if_match: &IfMatch) -> Result<(), Error> {
    let now = app.clock.now();
    in_transaction!(app.store, |tx| {
        let org = scim_org(&mut tx, caller, org).await?;
        let before = users::get_for_update(&mut tx, &org.id, id)
            .await?
            .ok_or_else(|| user_not_found(id))?;
        let row = store::get(&mut tx, &org.id, id).await?.ok_or_else(|| user_not_found(id))?;
        if_match.check(&format!("User {id}"), &tag_of(&row))?;
        super::users::remove_user(&mut tx, &org, caller, &before, now).await
    })
}

// ---- Groups -----------------------------------------------------------

/// One member of a group, as served.
#[derive(Debug, Clone, Serialize)]
pub struct ScimMember {
    pub value: String,
    #[serde(rename = "$ref")]
    pub reference: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// A group as SCIM serves it (an Allot group). Optional attributes for
/// `attributes` / `excludedAttributes`.
#[derive(Debug, Clone, Serialize)]
pub struct ScimGroup {
    pub schemas: Vec<&'static str>,
    pub id: String,
    #[serde(rename = "externalId", skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(rename = "displayName", skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<ScimMember>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<ScimMeta>,
}

impl Projection {
    pub fn apply_group(&self, mut g: ScimGroup) -> ScimGroup {
        if self.attributes.is_empty() && self.excluded.is_empty() {
            return g;
        }
        if !self.keeps("externalid") {
            g.external_id = None;
        }
        if !self.keeps("displayname") {
            g.display_name = None;
        }
        if !self.keeps("members") {
            g.members = None;
        }
        if !self.keeps("meta") {
            g.meta = None;
        }
        g
    }
}

fn group_tag(row: &allot_store::scim::ScimGroupRow) -> String {
    etag::of(row)
}

pub fn group_view(row: &allot_store::scim::ScimGroupRow, base: &str) -> ScimGroup {
    ScimGroup {
        schemas: vec![GROUP_SCHEMA],
        id: row.id.clone(),
        external_id: row.external_id.clone(),
        display_name: Some(row.name.clone()),
        members: Some(
            row.members
                .iter()
                .map(|id| ScimMember {
                    value: id.clone(),
                    reference: format!("{base}/Users/{id}"),
                    kind: "User",
                })
                .collect(),
        ),
        meta: Some(ScimMeta {
            resource_type: "Group",
            created: row.created_at.clone(),
            last_modified: row.updated_at.clone(),
            location: format!("{base}/Groups/{}", row.id),
            version: weak(&group_tag(row)),
        }),
    }
}

fn group_not_found(id: &str) -> Error {
    Error::not_found(format!("Group {}", allot_domain::types::excerpt(id)))
}

/// `GET /Groups` (and `POST /Groups/.search`): groups are few, so every
/// filter but `id eq` is decided over the org's groups in id order.
pub async fn list_groups(app: &App, caller: &Caller, org: &str, base: &str, q: &ScimQuery) -> Result<ListResponse<ScimGroup>, Error> {
    let filter = q.filter.as_deref().map(parse_filter).transpose()?;
    let start = q.start_index.unwrap_or(1).max(1) as usize;
    let count = q.count.unwrap_or(MAX_PAGE).clamp(0, MAX_PAGE) as usize;
    let mut tx = app.store.read_conn().await?;
    let org = scim_org(&mut tx, caller, org).await?;
    let by_id = match filter.as_ref().and_then(lookup_of) {
        Some(Lookup::Id(id)) => Some(store::get_group(&mut tx, &org.id, &id).await?.into_iter().collect::<Vec<_>>()),
        _ => None,
    };
    let mut total = 0usize;
    let mut page = Vec::new();
    let mut consider = |row: &allot_store::scim::ScimGroupRow| -> Result<(), Error> {
        let served = group_view(row, base);
        if let Some(f) = &filter {
            let json = serde_json::to_value(&served).map_err(|e| Error::internal(format!("serving a group: {e}")))?;
            if !allot_domain::scim::eval::matches(f, &json) {
                return Ok(());
            }
        }
        total += 1;
        if total >= start && page.len() < count {
            page.push(q.projection.apply_group(served));
        }
        Ok(())
    };
    match by_id {
        Some(rows) => {
            for r in &rows {
                consider(r)?;
            }
        }
        None => {
            let mut after = String::new();
            loop {
                let rows = store::groups_page(&mut tx, &org.id, &after, 500).await?;
                for r in &rows {
                    consider(r)?;
                }
                match rows.last() {
                    Some(last) if rows.len() == 500 => after = last.id.clone(),
                    _ => break,
                }
            }
        }
    }
    Ok(ListResponse {
        schemas: vec![LIST_RESPONSE_SCHEMA],
        total_results: total,
        start_index: start,
        items_per_page: page.len(),
        resources: page,
    })
}

pub async fn get_group(app: &App, caller: &Caller, org: &str, base: &str, id: &str, projection: &Projection) -> Result<ScimGroup, Error> {
    let mut tx = app.store.read_conn().await?;
    let org = scim_org(&mut tx, caller, org).await?;
    let row = store::get_group(&mut tx, &org.id, id).await?.ok_or_else(|| group_not_found(id))?;
    Ok(projection.apply_group(group_view(&row, base)))
}

/// Members must be users of the org: the ones that are not are named.
async fn check_members(tx: &mut Tx, org: &str, members: &[String]) -> Result<(), StoreError> {
    if members.is_empty() {
        return Ok(());
    }
    let found: std::collections::HashSet<String> = users::many(tx, org, members).await?.into_iter().map(|u| u.id).collect();
    let missing: Vec<&str> = members.iter().filter(|m| !found.contains(*m)).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(StoreError::Domain(Error::validation(
            "members",
            format!(
                "Not users of this organisation: {}.",
                missing
                    .iter()
                    .take(10)
                    .map(|m| allot_domain::types::excerpt(m))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )));
    }
    Ok(())
}

fn name_taken(e: StoreError, name: &str) -> StoreError {
    match e {
        StoreError::Unique(_) => StoreError::Domain(Error::new(
            Code::NameTaken,
            format!(
                "displayName is taken: this organisation has a group named {:?}.",
                allot_domain::types::excerpt(name)
            ),
        )),
        other => other,
    }
}

/// `POST /Groups`.
pub async fn create_group(app: &App, caller: &Caller, org: &str, base: &str, body: &Value) -> Result<ScimGroup, Error> {
    let g = GroupAttrs::from_body(body)?;
    let name = allot_domain::types::check_text("displayName", g.display_name.trim(), 200)?;
    let (now, today) = (app.clock.now(), app.clock.today());
    let id = new_id("grp");
    let row = in_transaction!(app.store, |tx| {
        let org = scim_org(&mut tx, caller, org).await?;
        check_members(&mut tx, &org.id, &g.members).await?;
        store::insert_group(&mut tx, &org.id, &id, &name, g.external_id.as_deref(), now)
            .await
            .map_err(|e| name_taken(e, &name))?;
        store::set_members(&mut tx, &org.id, &id, &g.members, &[]).await?;
        let joined = std::slice::from_ref(&id);
        follow_members(&mut tx, &org, caller, "POST /Groups", joined, &g.members, &[], now, today).await?;
        let row = store::get_group(&mut tx, &org.id, &id)
            .await?
            .ok_or_else(|| StoreError::Db("the group just created is missing".into()))?;
        allot_store::audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "group.create",
            &format!("group:{id}"),
            None,
            serde_json::to_value(&row).ok().as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(row)
    })?;
    Ok(group_view(&row, base))
}

/// Gives the members who joined `group` its templates' licences and takes
/// them back from those who left (see `group_licenses`), recording what
/// the planner refused. Members in id order, so that two changes lock
/// users in the same order.
#[allow(clippy::too_many_arguments)]
async fn follow_members(
    tx: &mut Tx,
    org: &Org,
    caller: &Caller,
    request: &str,
    group: &[String],
    joined: &[String],
    left: &[String],
    now: chrono::DateTime<chrono::Utc>,
    today: chrono::NaiveDate,
) -> Result<(), StoreError> {
    let all = allot_store::templates::list(tx, &org.id).await?;
    if !all.iter().any(|t| t.group.as_ref().is_some_and(|g| group.contains(g))) {
        return Ok(());
    }
    let mut who: Vec<(&String, bool)> = joined.iter().map(|u| (u, true)).chain(left.iter().map(|u| (u, false))).collect();
    who.sort();
    let mut notes = Vec::new();
    for (user, joins) in who {
        let Some(u) = users::get(tx, &org.id, user).await? else {
            continue;
        };
        let m = Membership {
            joined: if joins { group } else { &[] },
            left: if joins { &[] } else { group },
            now_in: &u.groups,
        };
        let refused = follow_membership(tx, org, &all, user, &m, &caller.actor(), today, now).await?;
        notes.extend(refused.iter().map(|r| r.describe(&u.email)));
    }
    note_refusals(tx, &org.id, caller, request, 200, &notes, now).await
}

#[allow(clippy::too_many_arguments)]
async fn change_group(
    app: &App,
    caller: &Caller,
    org: &str,
    base: &str,
    id: &str,
    request: &str,
    if_match: &IfMatch,
    change: impl Fn(&GroupAttrs) -> Result<GroupAttrs, Error>,
) -> Result<ScimGroup, Error> {
    let (now, today) = (app.clock.now(), app.clock.today());
    let row = in_transaction!(app.store, |tx| {
        let org = scim_org(&mut tx, caller, org).await?;
        let before = store::get_group(&mut tx, &org.id, id).await?.ok_or_else(|| group_not_found(id))?;
        if_match.check(&format!("Group {id}"), &group_tag(&before))?;
        let attrs = GroupAttrs {
            display_name: before.name.clone(),
            external_id: before.external_id.clone(),
            members: before.members.clone(),
        };
        let after = change(&attrs)?;
        let name = allot_domain::types::check_text("displayName", after.display_name.trim(), 200)?;
        check_members(&mut tx, &org.id, &after.members).await?;
        let add: Vec<String> = after.members.iter().filter(|m| !attrs.members.contains(m)).cloned().collect();
        let remove: Vec<String> = attrs.members.iter().filter(|m| !after.members.contains(m)).cloned().collect();
        if name != before.name || after.external_id != before.external_id || !add.is_empty() || !remove.is_empty() {
            store::update_group(&mut tx, &org.id, id, &name, after.external_id.as_deref(), now)
                .await
                .map_err(|e| name_taken(e, &name))?;
            store::set_members(&mut tx, &org.id, id, &add, &remove).await?;
            let group = [id.to_string()];
            follow_members(&mut tx, &org, caller, request, &group, &add, &remove, now, today).await?;
        }
        let row = store::get_group(&mut tx, &org.id, id)
            .await?
            .ok_or_else(|| StoreError::Db("the group just changed is missing".into()))?;
        if row != before {
            allot_store::audit::record(
                &mut tx,
                Some(&org.id),
                &caller.actor(),
                "group.update",
                &format!("group:{id}"),
                serde_json::to_value(&before).ok().as_ref(),
                serde_json::to_value(&row).ok().as_ref(),
                now,
            )
            .await?;
        }
        Ok::<_, StoreError>(row)
    })?;
    Ok(group_view(&row, base))
}

/// `PUT /Groups/{id}`.
pub async fn replace_group(
    app: &App,
    caller: &Caller,
    org: &str,
    base: &str,
    id: &str,
    body: &Value,
    if_match: &IfMatch,
) -> Result<ScimGroup, Error> {
    let g = GroupAttrs::from_body(body)?;
    if let Some(given) = body.get("id").and_then(Value::as_str) {
        if given != id {
            return Err(Error::new(Code::Mutability, "id is read-only: the body names another group."));
        }
    }
    let request = format!("PUT /Groups/{id}");
    change_group(app, caller, org, base, id, &request, if_match, move |_| Ok(g.clone())).await
}

/// `PATCH /Groups/{id}`.
pub async fn patch_group(
    app: &App,
    caller: &Caller,
    org: &str,
    base: &str,
    id: &str,
    body: &Value,
    if_match: &IfMatch,
) -> Result<ScimGroup, Error> {
    let group_id = id.to_string();
    let request = format!("PATCH /Groups/{id}");
    change_group(app, caller, org, base, id, &request, if_match, move |before| {
        before.patched(&group_id, body)
    })
    .await
}

/// `DELETE /Groups/{id}`: refused while a licence template is scoped to it.
pub async fn delete_group(app: &App, caller: &Caller, org: &str, id: &str, if_match: &IfMatch) -> Result<(), Error> {
    let now = app.clock.now();
    in_transaction!(app.store, |tx| {
        let org = scim_org(&mut tx, caller, org).await?;
        let before = store::get_group(&mut tx, &org.id, id).await?.ok_or_else(|| group_not_found(id))?;
        if_match.check(&format!("Group {id}"), &group_tag(&before))?;
        allot_store::tenants::delete_group(&mut tx, &org.id, id).await?;
        allot_store::audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "group.delete",
            &format!("group:{id}"),
            serde_json::to_value(&before).ok().as_ref(),
            None,
            now,
        )
        .await?;
        Ok::<_, StoreError>(())
    })
}

/// A resource of either type, for a search at the root.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ScimResource {
    User(ScimUser),
    Group(ScimGroup),
}

/// `POST /.search`: users, then groups, paged as one list.
pub async fn search_all(app: &App, caller: &Caller, org: &str, base: &str, q: &ScimQuery) -> Result<ListResponse<ScimResource>, Error> {
    let start = q.start_index.unwrap_or(1).max(1);
    let count = q.count.unwrap_or(MAX_PAGE).clamp(0, MAX_PAGE);
    let users = list_users(app, caller, org, base, q).await?;
    let left = count - users.items_per_page as i64;
    let group_query = ScimQuery {
        start_index: Some((start - users.total_results as i64).max(1)),
        count: Some(left.max(0)),
        ..q.clone()
    };
    let groups = list_groups(app, caller, org, base, &group_query).await?;
    let mut resources: Vec<ScimResource> = users.resources.into_iter().map(ScimResource::User).collect();
    if left > 0 {
        resources.extend(groups.resources.into_iter().map(ScimResource::Group));
    }
    Ok(ListResponse {
        schemas: vec![LIST_RESPONSE_SCHEMA],
        total_results: users.total_results + groups.total_results,
        start_index: start as usize,
        items_per_page: resources.len(),
        resources,
    })
}

// ---- The org's identity provisioning status ---------------------------

/// One failed SCIM request, or one licence change a SCIM change could not
/// make, as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IdentityProvisioningError {
    pub at: String,
    /// The SCIM token that sent it (`token:<id>`).
    pub actor: String,
    /// Method and path under the org's base URL, e.g. `PATCH /Groups/grp_…`.
    pub request: String,
    /// The HTTP status answered (a refused licence: the status of the
    /// identity change, which went through).
    pub status: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scim_type: Option<String>,
    pub detail: String,
}

/// An org's identity provisioning: where its provider connects, when it
/// last did, its SCIM tokens, and what went wrong lately.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IdentityProvisioning {
    /// The org's SCIM base URL, as a path on this server.
    pub base_path: String,
    /// When one of the org's SCIM tokens was last used (to the nearest five minutes).
    pub last_sync_at: Option<String>,
    /// Whether a deactivated user keeps its licences (the org's setting).
    pub keep_licenses_on_deactivation: bool,
    /// The org's live SCIM tokens (never their secrets).
    pub tokens: Vec<super::tokens::TokenView>,
    /// The newest errors first (up to 50 are kept).
    pub errors: Vec<IdentityProvisioningError>,
}

/// The org's identity provisioning status, for those who manage its
/// tokens (they create the SCIM token the provider uses).
pub async fn identity_provisioning(app: &App, caller: &Caller, org: &str) -> Result<IdentityProvisioning, Error> {
    let mut rd = app.store.read_conn().await?;
    let org = caller.org(&mut rd, org, Action::ManageTokens).await?;
    let last_sync_at = store::last_sync(&mut rd, &org.id).await?;
    let tokens = allot_store::tokens::live_of_org(&mut rd, &org.id, allot_domain::access::Role::Scim)
        .await?
        .into_iter()
        .map(super::tokens::TokenView::from)
        .collect();
    let errors = store::recent_errors(&mut rd, &org.id, store::ERRORS_KEPT)
        .await?
        .into_iter()
        .map(|e| IdentityProvisioningError {
            at: e.at,
            actor: e.actor,
            request: e.request,
            status: e.status,
            scim_type: e.scim_type,
            detail: e.detail,
        })
        .collect();
    Ok(IdentityProvisioning {
        base_path: format!("/scim/v2/orgs/{}", org.id),
        last_sync_at,
        keep_licenses_on_deactivation: org.keep_licenses_on_deactivation,
        tokens,
        errors,
    })
}

/// Revokes one of the org's SCIM tokens (the Identity provisioning page's
/// **Revoke**): a token that is not a live SCIM token of this org is not
/// found, whatever else it may be.
pub async fn revoke_scim_token(app: &App, caller: &Caller, org: &str, id: &str) -> Result<(), Error> {
    {
        let mut rd = app.store.read_conn().await?;
        let org = caller.org(&mut rd, org, Action::ManageTokens).await?;
        let t = allot_store::tokens::get(&mut rd, id).await?;
        if !t.is_some_and(|t| t.revoked_at.is_none() && t.role == allot_domain::access::Role::Scim && t.org.as_deref() == Some(&org.id)) {
            return Err(Error::not_found(format!("SCIM token {}", allot_domain::types::excerpt(id))));
        }
    }
    super::tokens::revoke_token(app, caller, id).await
}

/// The longest detail kept of a failed request.
const MAX_DETAIL_CHARS: usize = 1000;

/// Records a SCIM request that failed (by the org's own SCIM token: the
/// surface has checked), in a transaction of its own.
pub async fn record_failure(app: &App, org: &str, e: &store::ScimErrorRow) -> Result<(), Error> {
    let mut e = e.clone();
    if let Some((cut, _)) = e.detail.char_indices().nth(MAX_DETAIL_CHARS) {
        e.detail = format!("{}…", &e.detail[..cut]);
    }
    in_transaction!(app.store, |tx| store::record_error(&mut tx, org, &e).await)?;
    Ok(())
}
