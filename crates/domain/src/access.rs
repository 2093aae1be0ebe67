//! Who may do what: one table, role × action, plus tenant scope.
//!
//! Scope is checked before role: an object outside the caller's tenant answers
//! 404 (its existence is not revealed); inside it, a role that may not do the
//! action answers 403.

use serde::{Deserialize, Serialize};

use crate::types::str_enum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    ProviderAdmin,
    PartnerAdmin,
    PartnerSales,
    PartnerHelpdesk,
    OrgSuperAdmin,
    OrgAdmin,
    OrgUserAdmin,
    OrgSupport,
    OrgReadOnly,
    /// The SaaS product itself, asking whether a user may use a feature:
    /// provider-wide, per partner or per org, and nothing but that.
    ProductService,
    /// An org's identity provider, provisioning users and groups over SCIM
    /// (`/scim/v2/orgs/{org}`): bound to one org, and nothing but that.
    Scim,
}

str_enum!(Role {
    ProviderAdmin => "provider_admin", PartnerAdmin => "partner_admin", PartnerSales => "partner_sales",
    PartnerHelpdesk => "partner_helpdesk", OrgSuperAdmin => "org_super_admin", OrgAdmin => "org_admin",
    OrgUserAdmin => "org_user_admin", OrgSupport => "org_support", OrgReadOnly => "org_read_only",
    ProductService => "product_service", Scim => "scim",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    Provider,
    Partner,
    Org,
}

impl Role {
    pub const ALL: [Role; 11] = [
        Self::ProviderAdmin,
        Self::PartnerAdmin,
        Self::PartnerSales,
        Self::PartnerHelpdesk,
        Self::OrgSuperAdmin,
        Self::OrgAdmin,
        Self::OrgUserAdmin,
        Self::OrgSupport,
        Self::OrgReadOnly,
        Self::ProductService,
        Self::Scim,
    ];

    /// Which kind of tenant a token of this role is bound to. A
    /// `product_service` token may be bound to any; its principal says
    /// which ([`Principal::scope_kind`]), and this answers the narrowest.
    pub fn scope_kind(&self) -> ScopeKind {
        match self {
            Self::ProviderAdmin => ScopeKind::Provider,
            Self::PartnerAdmin | Self::PartnerSales | Self::PartnerHelpdesk => ScopeKind::Partner,
            _ => ScopeKind::Org,
        }
    }

    /// The kinds of tenant a token of this role may be bound to.
    pub fn scope_kinds(&self) -> &'static [ScopeKind] {
        match self {
            Self::ProductService => &[ScopeKind::Provider, ScopeKind::Partner, ScopeKind::Org],
            Self::ProviderAdmin => &[ScopeKind::Provider],
            Self::PartnerAdmin | Self::PartnerSales | Self::PartnerHelpdesk => &[ScopeKind::Partner],
            _ => &[ScopeKind::Org],
        }
    }

    /// Whether people sign in to the console with this role (a service's
    /// role is for tokens only).
    pub fn is_for_people(&self) -> bool {
        !matches!(self, Self::ProductService | Self::Scim)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    ReadCatalogue,
    WriteCatalogue,
    ReadPartners,
    WritePartners,
    ReadOrg,
    CreateOrg,
    WriteOrg,
    ReadSubscriptions,
    WriteSubscriptions,
    ReadUsers,
    WriteUsers,
    ReadLicenses,
    WriteLicenses,
    ReadAudit,
    /// Provider-wide housekeeping (purging expired service data now).
    Maintenance,
    /// Finishing a service's set-up: the details an `awaiting_details` item needs.
    SubmitProvisioningDetails,
    /// Asking for more seats (org super admins, with a payment method).
    RequestPurchase,
    /// Fulfilling or rejecting a purchase request (the provider, the org's partner).
    DecidePurchase,
    /// Asking whether users may use features (entitlement checks, OFREP,
    /// offline tokens): the SaaS product's calls.
    CheckEntitlements,
    /// Contact-centre queues and their members.
    ManageQueues,
    /// An org's billing facts and sales policy (`payment_method_on_file`,
    /// `self_service_purchase`): the provider's and the org's partner's to
    /// set, never the org's own admins' (they would lift the policy that
    /// refused their purchase a moment earlier).
    SetBillingTerms,
    /// Making users site administrators (`site_admin_of`): an admin role in
    /// the service, so the org's full admins grant it, not user admins.
    GrantSiteAdmin,
    /// API tokens of the caller's tenant: list, create (no role above the
    /// caller's own, see [`Principal::may_grant`]) and revoke.
    ManageTokens,
    /// Admin accounts of the caller's tenant: list, invite (no role above
    /// the caller's own, see [`Principal::may_invite`]), change, remove.
    ManageAdmins,
    /// Webhook endpoints of the caller's tenant (provider and partner
    /// admins, org super admins): create, change, rotate, test, deliveries.
    ManageWebhooks,
    /// The provider-wide webhook endpoints (every org's events): the
    /// provider's own admins only.
    ManageProviderWebhooks,
    /// Users and groups through SCIM: an org's identity provider (the
    /// `scim` role) and nobody else, so that a SCIM token does nothing
    /// but SCIM and no admin token is mistaken for one.
    ProvisionIdentities,
}

/// The permission table. Tenant scope is checked separately (see
/// [`Principal::covers_org`]); this says what a role may do inside its scope.
pub fn role_allows(role: Role, action: Action) -> bool {
    use Action::*;
    use Role::*;
    match role {
        // The product asks about entitlements and may do nothing else.
        ProductService => action == CheckEntitlements,
        Scim => action == ProvisionIdentities,
        // Buying is the customer's decision: only its super admin asks.
        ProviderAdmin => !matches!(action, RequestPurchase | ProvisionIdentities),
        // Everything in its customers except the provider's own business;
        // buying is the customer's (its super admin's) decision.
        PartnerAdmin => !matches!(
            action,
            WriteCatalogue | WritePartners | Maintenance | RequestPurchase | ManageProviderWebhooks | ProvisionIdentities
        ),
        // Sales agents: subscriptions and purchases, never user data.
        // Tokens are their admin's to hand out.
        PartnerSales => matches!(
            action,
            SetBillingTerms
                | ReadCatalogue
                | ReadPartners
                | ReadOrg
                | CreateOrg
                | WriteOrg
                | ReadSubscriptions
                | WriteSubscriptions
                | ReadLicenses
                | DecidePurchase
        ),
        PartnerHelpdesk => matches!(
            action,
            ReadCatalogue | ReadPartners | ReadOrg | ReadSubscriptions | ReadUsers | ReadLicenses | CheckEntitlements
        ),
        OrgSuperAdmin => matches!(
            action,
            ReadCatalogue
                | ReadOrg
                | WriteOrg
                | ReadSubscriptions
                | ReadUsers
                | WriteUsers
                | ReadLicenses
                | WriteLicenses
                | CheckEntitlements
                | ReadAudit
                | SubmitProvisioningDetails
                | RequestPurchase
                | ManageQueues
                | ManageTokens
                | ManageAdmins
                | ManageWebhooks
                | GrantSiteAdmin
        ),
        OrgAdmin => matches!(
            action,
            GrantSiteAdmin
                | ReadCatalogue
                | ReadOrg
                | ReadSubscriptions
                | ReadUsers
                | WriteUsers
                | ReadLicenses
                | WriteLicenses
                | CheckEntitlements
                | ReadAudit
                | SubmitProvisioningDetails
                | ManageQueues
        ),
        OrgUserAdmin => matches!(
            action,
            ReadCatalogue | ReadOrg | ReadUsers | WriteUsers | ReadLicenses | WriteLicenses | CheckEntitlements | ManageQueues
        ),
        OrgSupport | OrgReadOnly => matches!(
            action,
            ReadCatalogue | ReadOrg | ReadSubscriptions | ReadUsers | ReadLicenses | CheckEntitlements
        ),
    }
}

/// The holder of a token: a role bound to the provider, one partner or one org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub role: Role,
    pub partner: Option<String>,
    pub org: Option<String>,
}

impl Principal {
    /// The kind of tenant this principal is bound to.
    pub fn scope_kind(&self) -> ScopeKind {
        match self.role {
            Role::ProductService if self.org.is_some() => ScopeKind::Org,
            Role::ProductService if self.partner.is_some() => ScopeKind::Partner,
            Role::ProductService => ScopeKind::Provider,
            r => r.scope_kind(),
        }
    }

    /// Whether an org (with its partner, if any) lies inside this principal's tenant.
    pub fn covers_org(&self, org_id: &str, org_partner: Option<&str>) -> bool {
        match self.scope_kind() {
            ScopeKind::Provider => true,
            ScopeKind::Partner => self.partner.is_some() && self.partner.as_deref() == org_partner,
            ScopeKind::Org => self.org.as_deref() == Some(org_id),
        }
    }
    pub fn covers_partner(&self, partner_id: &str) -> bool {
        match self.scope_kind() {
            ScopeKind::Provider => true,
            ScopeKind::Partner => self.partner.as_deref() == Some(partner_id),
            ScopeKind::Org => false,
        }
    }
    pub fn may(&self, action: Action) -> bool {
        role_allows(self.role, action)
    }

    /// Whether this principal may hand out a token of `role`: never a role
    /// above its own. The tenant the new token is bound to is checked as
    /// scope (404 outside it), not here.
    pub fn may_grant(&self, role: Role) -> bool {
        self.may(Action::ManageTokens) && role.rank() <= self.role.rank()
    }

    /// Whether this principal may make (invite, or change to) an admin
    /// account of `role`: the same rule as for tokens, never above its own.
    pub fn may_invite(&self, role: Role) -> bool {
        role.is_for_people() && self.may(Action::ManageAdmins) && role.rank() <= self.role.rank()
    }
}

impl Role {
    /// How far a role reaches: the provider above partners above orgs, and
    /// within a tenant its admin above the narrower roles.
    pub fn rank(&self) -> u8 {
        match self {
            Role::ProviderAdmin => 9,
            Role::PartnerAdmin => 8,
            Role::PartnerSales | Role::PartnerHelpdesk => 7,
            Role::OrgSuperAdmin => 6,
            Role::OrgAdmin => 5,
            Role::OrgUserAdmin => 4,
            Role::OrgSupport | Role::OrgReadOnly => 3,
            // Asks questions only: any admin who manages tokens may make one.
            Role::ProductService => 1,
            // Writes users and groups, as an org user admin does.
            Role::Scim => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role, partner: Option<&str>, org: Option<&str>) -> Principal {
        Principal {
            token_id: "t".into(),
            role,
            partner: partner.map(Into::into),
            org: org.map(Into::into),
        }
    }

    #[test]
    fn scope() {
        assert!(p(Role::ProviderAdmin, None, None).covers_org("o1", None));
        let partner = p(Role::PartnerAdmin, Some("p1"), None);
        assert!(partner.covers_org("o1", Some("p1")));
        assert!(!partner.covers_org("o1", Some("p2")));
        assert!(!partner.covers_org("o1", None));
        let org = p(Role::OrgAdmin, None, Some("o1"));
        assert!(org.covers_org("o1", Some("p1")));
        assert!(!org.covers_org("o2", Some("p1")));
        assert!(!org.covers_partner("p1"));
    }

    #[test]
    fn sales_never_reads_users_and_read_only_never_writes() {
        assert!(!role_allows(Role::PartnerSales, Action::ReadUsers));
        assert!(role_allows(Role::PartnerSales, Action::WriteSubscriptions));
        for a in [
            Action::WriteUsers,
            Action::WriteLicenses,
            Action::WriteOrg,
            Action::WriteSubscriptions,
            Action::WriteCatalogue,
        ] {
            assert!(!role_allows(Role::OrgReadOnly, a));
            assert!(!role_allows(Role::OrgSupport, a));
            assert!(!role_allows(Role::PartnerHelpdesk, a));
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert_eq!(role_allows(r, Action::WriteCatalogue), r == Role::ProviderAdmin);
            assert_eq!(role_allows(r, Action::Maintenance), r == Role::ProviderAdmin);
            // Only org super admins buy.
            assert_eq!(role_allows(r, Action::RequestPurchase), r == Role::OrgSuperAdmin);
            // The product's role may only ask about entitlements; sales agents never see users.
            assert!(!role_allows(Role::ProductService, Action::ReadUsers));
            assert_eq!(
                role_allows(r, Action::CheckEntitlements),
                !matches!(r, Role::PartnerSales | Role::Scim),
                "{r:?} and entitlement checks"
            );
            // SCIM is a scim token's only work, and nobody else's.
            assert_eq!(role_allows(r, Action::ProvisionIdentities), r == Role::Scim, "{r:?} and SCIM");
            if r == Role::Scim {
                for a in [
                    Action::ReadUsers,
                    Action::WriteUsers,
                    Action::ReadLicenses,
                    Action::WriteLicenses,
                    Action::ReadOrg,
                ] {
                    assert!(!role_allows(r, a), "a scim token on the JSON API: {a:?}");
                }
            }
        }
        // Sales agents decide purchases; helpdesk and read-only roles change nothing.
        assert!(role_allows(Role::PartnerSales, Action::DecidePurchase));
        for r in [Role::PartnerHelpdesk, Role::OrgSupport, Role::OrgReadOnly] {
            for a in [
                Action::DecidePurchase,
                Action::ManageQueues,
                Action::SubmitProvisioningDetails,
                Action::WriteLicenses,
                Action::WriteUsers,
            ] {
                assert!(!role_allows(r, a), "{r:?} {a:?}");
            }
        }
    }
}
