//! Stored rows as the pure planner sees them: the adapters from the store's
//! types to the domain's facts, used by every path that plans a licence
//! change (single changes, bulk jobs, imports, templates, queues).

use allot_domain::planner::{OrgFacts, QueueHold, SiteFacts, UserFacts};
use allot_domain::types::CountryCode;
use allot_store::{tenants, users};

/// A stored user as the planner sees it (`site_admin_of` as loaded), with
/// the queues whose product it is billed for.
pub fn user_facts(u: users::User, queue_billed: Vec<QueueHold>) -> UserFacts {
    UserFacts {
        queue_billed,
        kind: u.kind,
        status: u.status,
        usage_location: u.usage_location.as_deref().and_then(|c| CountryCode::parse(c).ok()),
        id: u.id,
        email: u.email,
        site_admin_of: u.site_admin_of,
    }
}

/// A stored org and (some of) its sites as the planner sees them.
pub fn org_facts(org: &tenants::Org, sites: Vec<tenants::Site>) -> OrgFacts {
    OrgFacts {
        default_usage_location: org.default_usage_location.as_deref().and_then(|c| CountryCode::parse(c).ok()),
        sites: sites
            .into_iter()
            .map(|s| SiteFacts {
                id: s.id,
                attendee_accounts_enabled: s.attendee_accounts_enabled,
            })
            .collect(),
    }
}
