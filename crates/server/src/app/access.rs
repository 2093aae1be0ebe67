//! Who is calling and what they may touch: the one place where the role
//! table (`allot_domain::access`) and tenant scope are applied. Every use
//! case starts here; an object outside the caller's scope is "not found"
//! whether it exists or not, so other tenants cannot be probed.

use allot_domain::access::{Action, Principal, Role, ScopeKind};
use allot_domain::{Code, Error, Violation};
use allot_store::audit::Actor;
use allot_store::tenants::{self, Org};
use allot_store::{StoreError, Tx};

/// The caller of one use case: its principal and the request's id (which
/// the audit log records beside the change).
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub request_id: String,
}

impl Caller {
    /// The operator at the command line (who holds the database): a
    /// provider admin that the audit log names `system:<what>`.
    pub fn operator(what: &str) -> Caller {
        Caller {
            principal: Principal {
                token_id: format!("system:{what}"),
                role: allot_domain::access::Role::ProviderAdmin,
                partner: None,
                org: None,
            },
            request_id: allot_store::new_id("req"),
        }
    }

    pub fn actor(&self) -> Actor {
        let id = &self.principal.token_id;
        Actor {
            // `system:<what>` (the operator) and `admin:<id>` (a console
            // session) name themselves; a bare id is a token's.
            actor: if id.starts_with("system:") || id.starts_with("admin:") {
                id.clone()
            } else {
                format!("token:{id}")
            },
            request_id: Some(self.request_id.clone()),
        }
    }

    pub fn scope_kind(&self) -> ScopeKind {
        self.principal.scope_kind()
    }

    /// 403 unless the caller's role may do `action` (inside its own tenant).
    pub fn require(&self, action: Action) -> Result<(), Error> {
        if self.principal.may(action) {
            Ok(())
        } else if self.principal.role == Role::Scim {
            Err(Error::new(
                Code::Forbidden,
                "A scim token calls the SCIM API of its org (/scim/v2/orgs/{org}) and nothing else.",
            ))
        } else {
            Err(Error::new(
                Code::Forbidden,
                format!("A {} token may not {}.", self.principal.role.as_str(), describe(action)),
            ))
        }
    }

    /// Loads an org the caller may see (else 404, whether or not it exists)
    /// and checks the role may do `action` there (else 403).
    pub async fn org(&self, tx: &mut Tx, org_id: &str, action: Action) -> Result<Org, Error> {
        let org = tenants::get_org(tx, org_id).await?;
        self.check_org(org, org_id, action)
    }

    /// The org as read, if the caller may see it (else 404, whether or not
    /// it exists) and may do `action` there (else 403).
    pub fn check_org(&self, org: Option<Org>, org_id: &str, action: Action) -> Result<Org, Error> {
        let org = org
            .filter(|o| self.principal.covers_org(&o.id, o.partner.as_deref()))
            .ok_or_else(|| Error::not_found(format!("Organisation {}", allot_domain::types::excerpt(org_id))))?;
        self.require(action)?;
        Ok(org)
    }

    /// 403 naming `field` unless the role may do `action`: for fields of a
    /// body that only some of the roles allowed to send it may set.
    pub fn require_for_field(&self, action: Action, field: &str) -> Result<(), Error> {
        if self.principal.may(action) {
            return Ok(());
        }
        let msg = format!(
            "A {} token may not set {field}: only roles that may {} can.",
            self.principal.role.as_str(),
            describe(action)
        );
        Err(Error {
            code: Code::Forbidden,
            detail: msg.clone(),
            violations: vec![Violation::new(Code::Forbidden, msg).field(field)],
        })
    }

    /// Checks a partner lies in the caller's scope (else 404) and the action.
    pub fn partner(&self, partner_id: &str, action: Action) -> Result<(), Error> {
        if !self.principal.covers_partner(partner_id) {
            return Err(Error::not_found(format!("Partner {partner_id}")));
        }
        self.require(action)
    }
}

/// The action as the end of "A ... token may not ...".
pub fn describe(action: Action) -> &'static str {
    match action {
        Action::ReadCatalogue => "read the catalogue",
        Action::WriteCatalogue => "change the catalogue",
        Action::ReadPartners => "read partners",
        Action::WritePartners => "create partners",
        Action::ReadOrg => "read organisations",
        Action::CreateOrg => "create organisations",
        Action::WriteOrg => "change organisations",
        Action::ReadSubscriptions => "read subscriptions",
        Action::WriteSubscriptions => "change subscriptions",
        Action::ReadUsers => "read users",
        Action::WriteUsers => "change users",
        Action::ReadLicenses => "read licences",
        Action::WriteLicenses => "change licences",
        Action::ReadAudit => "read the audit log",
        Action::Maintenance => "run provider housekeeping",
        Action::SubmitProvisioningDetails => "submit provisioning details",
        Action::RequestPurchase => "buy licences",
        Action::DecidePurchase => "fulfil or reject purchase requests",
        Action::ManageQueues => "manage contact-centre queues",
        Action::ManageTokens => "manage API tokens",
        Action::ManageAdmins => "manage admin accounts",
        Action::GrantSiteAdmin => "make users site administrators",
        Action::SetBillingTerms => "set an organisation's billing facts and purchase policy",
        Action::CheckEntitlements => "ask which features users may use",
        Action::ManageWebhooks => "manage webhooks",
        Action::ManageProviderWebhooks => "manage the provider-wide webhooks",
        Action::ProvisionIdentities => "provision users and groups over SCIM (that is a scim token's work)",
    }
}

/// A token or an admin account (`what`: "tokens", "admins") is bound to
/// exactly the tenant its role's scope names: a provider role to none, a
/// partner role to a partner, an org role to an org.
pub(crate) fn check_binding(role: Role, partner: Option<&str>, org: Option<&str>, what: &str) -> Result<(), Error> {
    if !role.is_for_people() && what == "admins" {
        return Err(Error::validation(
            "role",
            format!("{} is a role for API tokens, not for admin accounts.", role.as_str()),
        ));
    }
    if role == Role::ProductService {
        return match (partner, org) {
            (Some(_), Some(_)) => Err(Error::validation(
                "org",
                "product_service tokens are bound to the provider (no partner or org), one partner, or one org: not both.",
            )),
            _ => Ok(()),
        };
    }
    match (role.scope_kind(), partner, org) {
        (ScopeKind::Provider, None, None) | (ScopeKind::Partner, Some(_), None) | (ScopeKind::Org, None, Some(_)) => Ok(()),
        (ScopeKind::Provider, ..) => Err(Error::validation(
            "role",
            format!("provider_admin {what} are bound to no partner or org."),
        )),
        (ScopeKind::Partner, ..) => Err(Error::validation(
            "partner",
            format!(
                "{} {what} are bound to a partner: give a partner (--partner) and no org.",
                role.as_str()
            ),
        )),
        (ScopeKind::Org, ..) => Err(Error::validation(
            "org",
            format!("{} {what} are bound to an org: give an org (--org) and no partner.", role.as_str()),
        )),
    }
}

/// 404 unless the partner and the org named exist (for the operator, who
/// has no scope to check them against).
pub(crate) async fn check_tenants_exist(tx: &mut Tx, partner: Option<&str>, org: Option<&str>) -> Result<(), StoreError> {
    if let Some(p) = partner {
        if tenants::get_partner(tx, p).await?.is_none() {
            return Err(Error::not_found(format!("Partner {p}")).into());
        }
    }
    if let Some(o) = org {
        if tenants::get_org(tx, o).await?.is_none() {
            return Err(Error::not_found(format!("Organisation {o}")).into());
        }
    }
    Ok(())
}
