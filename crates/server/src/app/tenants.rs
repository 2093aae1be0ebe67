//! Tenants: partners (resellers), organisations (customers), and an org's
//! sites and groups.

use serde::{Deserialize, Serialize};

use allot_domain::access::{Action, ScopeKind};
use allot_domain::types::CountryCode;
use allot_domain::Error;
use allot_store::tenants::{self, Group, Org, OrgScope, Partner, Site};
use allot_store::{audit, in_transaction, new_id, StoreError};

use super::audit::snapshot;
use super::etag::{self, IfMatch};
use super::paging::{PageQuery, Paged};
use super::{App, Caller};

fn check_name(name: &str, field: &str) -> Result<String, Error> {
    allot_domain::types::check_text(field, name, 200)
}

/// A PATCH field that may be set to null: absent (None), null (Some(None)) or a value.
pub(crate) fn double_option<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn yes() -> bool {
    true
}

// ---- partners

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PartnerView {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

impl From<Partner> for PartnerView {
    fn from(p: Partner) -> Self {
        PartnerView {
            id: p.id,
            name: p.name,
            created_at: p.created_at,
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartnerInput {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub name: String,
}

pub async fn list_partners(app: &App, caller: &Caller, q: &PageQuery) -> Result<Paged<PartnerView>, Error> {
    caller.require(Action::ReadPartners)?;
    let page = q.page()?;
    let only = match caller.scope_kind() {
        ScopeKind::Provider => None,
        _ => Some(caller.principal.partner.clone().unwrap_or_default()),
    };
    let mut tx = app.store.read_conn().await?;
    let rows = tenants::list_partners(&mut tx, only.as_deref(), page.after.as_deref(), page.limit + 1).await?;
    Ok(Paged::from_rows(rows, page.limit, |p| p.id.clone()).map(PartnerView::from))
}

pub async fn create_partner(app: &App, caller: &Caller, input: PartnerInput) -> Result<PartnerView, Error> {
    caller.require(Action::WritePartners)?;
    let name = check_name(&input.name, "name")?;
    let now = app.clock.now();
    let p = in_transaction!(app.store, |tx| {
        let p = tenants::insert_partner(&mut tx, &name, now).await?;
        audit::record(
            &mut tx,
            None,
            &caller.actor(),
            "partner.create",
            &format!("partner:{}", p.id),
            None,
            snapshot(&p).as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(p)
    })?;
    Ok(p.into())
}

pub async fn get_partner(app: &App, caller: &Caller, id: &str) -> Result<PartnerView, Error> {
    caller.partner(id, Action::ReadPartners)?;
    let mut tx = app.store.read_conn().await?;
    Ok(tenants::get_partner(&mut tx, id)
        .await?
        .ok_or_else(|| Error::not_found(format!("Partner {id}")))?
        .into())
}

// ---- orgs

/// An organisation (a customer) as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrgView {
    pub id: String,
    pub name: String,
    /// The partner (reseller) that serves it, if any.
    pub partner: Option<String>,
    /// The usage location of users that have none.
    #[schema(value_type = Option<CountryCode>)]
    pub default_usage_location: Option<String>,
    pub payment_method_on_file: bool,
    /// Whether its super admins may request more seats themselves.
    pub self_service_purchase: bool,
    /// Whether a user its identity provider deactivates (SCIM `active:
    /// false`) keeps its licences; by default they are released (service
    /// data retained).
    pub keep_licenses_on_deactivation: bool,
    pub created_at: String,
    pub etag: String,
}

impl From<Org> for OrgView {
    fn from(o: Org) -> Self {
        OrgView {
            etag: etag::of(&o),
            id: o.id,
            name: o.name,
            partner: o.partner,
            default_usage_location: o.default_usage_location,
            payment_method_on_file: o.payment_method_on_file,
            self_service_purchase: o.self_service_purchase,
            keep_licenses_on_deactivation: o.keep_licenses_on_deactivation,
            created_at: o.created_at,
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgInput {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub name: String,
    #[serde(default)]
    pub partner: Option<String>,
    #[serde(default)]
    pub default_usage_location: Option<CountryCode>,
    #[serde(default)]
    pub payment_method_on_file: bool,
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub self_service_purchase: bool,
    #[serde(default)]
    pub keep_licenses_on_deactivation: bool,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgPatch {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub name: Option<String>,
    /// Moves the customer to another partner (null: to none); provider only.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub partner: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<CountryCode>)]
    pub default_usage_location: Option<Option<CountryCode>>,
    pub payment_method_on_file: Option<bool>,
    pub self_service_purchase: Option<bool>,
    pub keep_licenses_on_deactivation: Option<bool>,
}

pub async fn list_orgs(app: &App, caller: &Caller, q: &PageQuery) -> Result<Paged<OrgView>, Error> {
    caller.require(Action::ReadOrg)?;
    let page = q.page()?;
    let p = &caller.principal;
    let scope = match p.scope_kind() {
        ScopeKind::Provider => OrgScope::default(),
        ScopeKind::Partner => OrgScope {
            partner: Some(p.partner.clone().unwrap_or_default()),
            org: None,
        },
        ScopeKind::Org => OrgScope {
            partner: None,
            org: Some(p.org.clone().unwrap_or_default()),
        },
    };
    let mut tx = app.store.read_conn().await?;
    let rows = tenants::list_orgs(&mut tx, &scope, page.after.as_deref(), page.limit + 1).await?;
    Ok(Paged::from_rows(rows, page.limit, |o| o.id.clone()).map(OrgView::from))
}

pub async fn create_org(app: &App, caller: &Caller, input: OrgInput) -> Result<OrgView, Error> {
    caller.require(Action::CreateOrg)?;
    // A partner creates customers under itself; naming another partner is naming something it cannot see.
    let partner = match caller.scope_kind() {
        ScopeKind::Partner => {
            let own = caller.principal.partner.clone();
            if input.partner.is_some() && input.partner != own {
                return Err(Error::not_found(format!("Partner {}", input.partner.unwrap_or_default())));
            }
            own
        }
        _ => input.partner.clone(),
    };
    let now = app.clock.now();
    let org = Org {
        id: new_id("org"),
        name: check_name(&input.name, "name")?,
        partner,
        default_usage_location: input.default_usage_location.map(|c| c.to_string()),
        payment_method_on_file: input.payment_method_on_file,
        self_service_purchase: input.self_service_purchase,
        keep_licenses_on_deactivation: input.keep_licenses_on_deactivation,
        created_at: allot_store::ts(now),
    };
    let org = in_transaction!(app.store, |tx| {
        if let Some(p) = &org.partner {
            if tenants::get_partner(&mut tx, p).await?.is_none() {
                return Err(Error::not_found(format!("Partner {p}")).into());
            }
        }
        tenants::insert_org(&mut tx, &org, now).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "org.create",
            &format!("org:{}", org.id),
            None,
            snapshot(&org).as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(org.clone())
    })?;
    Ok(org.into())
}

pub async fn get_org(app: &App, caller: &Caller, id: &str) -> Result<OrgView, Error> {
    Ok(app.visible_org(caller, id, Action::ReadOrg).await?.into())
}

pub async fn update_org(app: &App, caller: &Caller, id: &str, patch: OrgPatch, if_match: &IfMatch) -> Result<OrgView, Error> {
    let now = app.clock.now();
    let name = patch.name.as_deref().map(|n| check_name(n, "name")).transpose()?;
    let org = in_transaction!(app.store, |tx| {
        let before = caller.org(&mut tx, id, Action::WriteOrg).await?;
        let mut org = before.clone();
        if let Some(n) = &name {
            org.name = n.clone();
        }
        // Fields some writers may not set: refused by name, before anything changes.
        if patch.payment_method_on_file.is_some() {
            caller.require_for_field(Action::SetBillingTerms, "payment_method_on_file")?;
        }
        if patch.self_service_purchase.is_some() {
            caller.require_for_field(Action::SetBillingTerms, "self_service_purchase")?;
        }
        if let Some(p) = &patch.partner {
            // Moving a customer between partners is the provider's call.
            caller.require_for_field(Action::WritePartners, "partner")?;
            if let Some(pid) = p {
                if tenants::get_partner(&mut tx, pid).await?.is_none() {
                    return Err(Error::not_found(format!("Partner {pid}")).into());
                }
            }
            org.partner = p.clone();
        }
        if let Some(l) = &patch.default_usage_location {
            org.default_usage_location = l.as_ref().map(|c| c.to_string());
        }
        if let Some(v) = patch.payment_method_on_file {
            org.payment_method_on_file = v;
        }
        if let Some(v) = patch.self_service_purchase {
            org.self_service_purchase = v;
        }
        if let Some(v) = patch.keep_licenses_on_deactivation {
            org.keep_licenses_on_deactivation = v;
        }
        if_match.check(&format!("Organisation {id}"), &etag::of(&before))?;
        tenants::update_org(&mut tx, &org, now).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "org.update",
            &format!("org:{}", org.id),
            snapshot(&before).as_ref(),
            snapshot(&org).as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(org)
    })?;
    app.caches.orgs_changed();
    Ok(org.into())
}

// ---- sites and groups

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SiteView {
    pub id: String,
    /// The site's address, always with its scheme (`https://...`).
    pub url: String,
    pub attendee_accounts_enabled: bool,
}

impl From<Site> for SiteView {
    fn from(s: Site) -> Self {
        SiteView {
            id: s.id,
            url: s.url,
            attendee_accounts_enabled: s.attendee_accounts_enabled,
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteInput {
    /// The site's address as admins type it: `acme.webex.example` or
    /// `https://acme.webex.example` (stored with `https://` when no scheme is given).
    #[schema(
        pattern = r"^\s*(?:[hH][tT][tT][pP][sS]?://)?[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(?:/[^\s\x00-\x1f\x7f-\x9f]*)?\s*$",
        max_length = 200
    )]
    pub url: String,
    #[serde(default)]
    pub attendee_accounts_enabled: bool,
}

/// A site address as admins type it, normalised: a scheme (`https://` when
/// none is given), a lowercase host name of dot-separated labels, an
/// optional port and path; at most 200 characters. `None` if it is not one.
pub fn normalize_site_url(raw: &str) -> Option<String> {
    let t = raw.trim();
    if t.is_empty() || t.len() > 200 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let lower_head = t.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    let (scheme, rest) = if lower_head.starts_with("https://") {
        ("https", &t[8..])
    } else if lower_head.starts_with("http://") {
        ("http", &t[7..])
    } else {
        ("https", t)
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => {
            // A port from 1 to 65535, written without leading zeros.
            if p.is_empty() || p.starts_with('0') || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
                return None;
            }
            (h, Some(p))
        }
        None => (authority, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !host.contains('.') || !host.split('.').all(label_ok) {
        return None;
    }
    let mut url = format!("{scheme}://{}", host.to_ascii_lowercase());
    if let Some(p) = port {
        url.push(':');
        url.push_str(p);
    }
    url.push_str(path);
    (url.len() <= 200).then_some(url)
}

pub async fn list_sites(app: &App, caller: &Caller, org: &str) -> Result<Paged<SiteView>, Error> {
    let mut tx = app.store.read_conn().await?;
    let org = caller.org(&mut tx, org, Action::ReadOrg).await?;
    let sites = tenants::list_sites(&mut tx, &org.id).await?;
    Ok(Paged::all(sites).map(SiteView::from))
}

pub async fn create_site(app: &App, caller: &Caller, org: &str, input: SiteInput) -> Result<SiteView, Error> {
    let url = normalize_site_url(&input.url).ok_or_else(|| {
        Error::validation(
            "url",
            format!(
                "\"{}\" is not a site address such as acme.example.com or https://acme.example.com.",
                allot_domain::types::excerpt(input.url.trim())
            ),
        )
    })?;
    let now = app.clock.now();
    let site = in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::WriteOrg).await?;
        let site = tenants::insert_site(&mut tx, &org.id, &url, input.attendee_accounts_enabled, now).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "site.create",
            &format!("site:{}", site.id),
            None,
            snapshot(&site).as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(site)
    })?;
    Ok(site.into())
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GroupView {
    pub id: String,
    pub name: String,
}

impl From<Group> for GroupView {
    fn from(g: Group) -> Self {
        GroupView { id: g.id, name: g.name }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupInput {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub name: String,
}

pub async fn list_groups(app: &App, caller: &Caller, org: &str) -> Result<Paged<GroupView>, Error> {
    let mut tx = app.store.read_conn().await?;
    let org = caller.org(&mut tx, org, Action::ReadUsers).await?;
    let groups = tenants::list_groups(&mut tx, &org.id).await?;
    Ok(Paged::all(groups).map(GroupView::from))
}

pub async fn create_group(app: &App, caller: &Caller, org: &str, input: GroupInput) -> Result<GroupView, Error> {
    let name = check_name(&input.name, "name")?;
    let now = app.clock.now();
    let group = in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::WriteUsers).await?;
        let g = tenants::insert_group(&mut tx, &org.id, &name, now).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "group.create",
            &format!("group:{}", g.id),
            None,
            snapshot(&g).as_ref(),
            now,
        )
        .await?;
        Ok::<_, StoreError>(g)
    })?;
    Ok(group.into())
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupPatch {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub name: Option<String>,
}

fn group_not_found(id: &str) -> Error {
    Error::not_found(format!("Group {}", allot_domain::types::excerpt(id)))
}

pub async fn get_group(app: &App, caller: &Caller, org: &str, id: &str) -> Result<GroupView, Error> {
    let mut tx = app.store.read_conn().await?;
    let org = caller.org(&mut tx, org, Action::ReadUsers).await?;
    let g = tenants::get_group(&mut tx, &org.id, id).await?.ok_or_else(|| group_not_found(id))?;
    Ok(g.into())
}

/// Renames a group (its members are the users' `groups`).
pub async fn update_group(app: &App, caller: &Caller, org: &str, id: &str, patch: GroupPatch) -> Result<GroupView, Error> {
    let name = patch.name.as_deref().map(|n| check_name(n, "name")).transpose()?;
    let now = app.clock.now();
    let g = in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::WriteUsers).await?;
        let before = tenants::get_group(&mut tx, &org.id, id).await?.ok_or_else(|| group_not_found(id))?;
        let Some(name) = &name else {
            return Ok::<_, StoreError>(before);
        };
        tenants::rename_group(&mut tx, &org.id, id, name, now).await?;
        let after = Group {
            id: before.id.clone(),
            name: name.clone(),
        };
        audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "group.update",
            &format!("group:{id}"),
            snapshot(&before).as_ref(),
            snapshot(&after).as_ref(),
            now,
        )
        .await?;
        Ok(after)
    })?;
    Ok(g.into())
}

/// Deletes a group, its members leaving it; refused while a licence
/// template is scoped to it (delete the template or change its scope first).
pub async fn delete_group(app: &App, caller: &Caller, org: &str, id: &str) -> Result<(), Error> {
    let now = app.clock.now();
    in_transaction!(app.store, |tx| {
        let org = caller.org(&mut tx, org, Action::WriteUsers).await?;
        let before = tenants::get_group(&mut tx, &org.id, id).await?.ok_or_else(|| group_not_found(id))?;
        tenants::delete_group(&mut tx, &org.id, id).await?;
        audit::record(
            &mut tx,
            Some(&org.id),
            &caller.actor(),
            "group.delete",
            &format!("group:{id}"),
            snapshot(&before).as_ref(),
            None,
            now,
        )
        .await?;
        Ok::<_, StoreError>(())
    })
}

#[cfg(test)]
mod tests {
    use super::normalize_site_url;

    #[test]
    fn site_urls_are_taken_as_admins_type_them() {
        assert_eq!(
            normalize_site_url("acme.webex.example").as_deref(),
            Some("https://acme.webex.example")
        );
        assert_eq!(
            normalize_site_url(" ACME.Webex.example ").as_deref(),
            Some("https://acme.webex.example")
        );
        assert_eq!(
            normalize_site_url("https://acme.example.com").as_deref(),
            Some("https://acme.example.com")
        );
        assert_eq!(
            normalize_site_url("HTTP://acme.example.com:8443/x").as_deref(),
            Some("http://acme.example.com:8443/x")
        );
        for bad in [
            "",
            "acme",
            "acme .example",
            "ftp://acme.example",
            "-a.example",
            "a..example",
            "a.example:",
            "a.example:99999x",
            "https://",
        ] {
            assert_eq!(normalize_site_url(bad), None, "{bad}");
        }
    }
}
