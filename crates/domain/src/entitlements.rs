//! Whether a user may use a feature (or a product) today: the rule the
//! entitlement checks answer with, as a pure function of the user's status,
//! the licences that would grant it and their subscriptions' facts.
//!
//! The order of the checks is part of the contract:
//!
//! 1. the user: unknown, then `pending`, then `inactive`;
//! 2. the feature (or product): unknown in the catalogue;
//! 3. each licence the user holds whose product grants the feature (or is
//!    the product): its subscription cancelled, expired (the end date has
//!    come), a trial that expired, suspended; then its item not provisioned.
//!    A licence that passes every check grants the feature: `licensed`, with
//!    every such licence in `granted_by`.
//! 4. no licence grants it: `not_licensed` if the user holds none that
//!    would, else the reason of the licence that came closest (the one whose
//!    failing check comes last in the order above: a service still being
//!    provisioned is nearer to use than a cancelled subscription).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::status::{ProvisioningStatus, SubscriptionFacts};
use crate::types::{str_enum, UserStatus};

/// Why a check answered as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntitlementReason {
    // In the order a licence is checked (see the module doc), so that the
    // derived order says which failing licence came closest.
    SubscriptionCancelled,
    SubscriptionExpired,
    TrialExpired,
    SubscriptionSuspended,
    ServiceNotProvisioned,
    Licensed,
    NotLicensed,
    UserInactive,
    UserPending,
    UnknownUser,
    UnknownFeature,
}

str_enum!(EntitlementReason {
    Licensed => "licensed", NotLicensed => "not_licensed", SubscriptionSuspended => "subscription_suspended",
    SubscriptionExpired => "subscription_expired", TrialExpired => "trial_expired",
    SubscriptionCancelled => "subscription_cancelled", ServiceNotProvisioned => "service_not_provisioned",
    UserInactive => "user_inactive", UserPending => "user_pending", UnknownUser => "unknown_user",
    UnknownFeature => "unknown_feature",
});

impl EntitlementReason {
    pub fn allowed(&self) -> bool {
        *self == Self::Licensed
    }
}

/// One licence that would grant what is asked, as the check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantingLicense {
    /// `None`: the subscription is unknown (it cannot grant).
    pub subscription: Option<SubscriptionFacts>,
    /// The item's provisioning; `None`: the subscription has no such item.
    pub provisioning: Option<ProvisioningStatus>,
}

/// Why this licence does not grant today, or `None` when it does.
pub fn why_license_does_not_grant(l: &GrantingLicense, today: NaiveDate) -> Option<EntitlementReason> {
    use EntitlementReason::*;
    let Some(f) = l.subscription else {
        return Some(SubscriptionCancelled);
    };
    if f.cancelled {
        return Some(SubscriptionCancelled);
    }
    // `end_date` is the first day without service.
    if f.end_date <= today {
        return Some(if f.trial { TrialExpired } else { SubscriptionExpired });
    }
    if f.suspended {
        return Some(SubscriptionSuspended);
    }
    if l.provisioning != Some(ProvisioningStatus::Provisioned) {
        return Some(ServiceNotProvisioned);
    }
    None
}

/// The user as the check sees it (`None`: unknown).
pub fn why_user_may_not(status: Option<UserStatus>) -> Option<EntitlementReason> {
    match status {
        None => Some(EntitlementReason::UnknownUser),
        Some(UserStatus::Pending) => Some(EntitlementReason::UserPending),
        Some(UserStatus::Inactive) => Some(EntitlementReason::UserInactive),
        Some(UserStatus::Active) => None,
    }
}

/// The answer for a known, active user and a known feature, from the
/// licences that would grant it: `licensed` if any does today, else the
/// reason of the one that came closest (see the module doc), else
/// `not_licensed`.
pub fn decide<'a>(licenses: impl IntoIterator<Item = &'a GrantingLicense>, today: NaiveDate) -> EntitlementReason {
    let mut closest: Option<EntitlementReason> = None;
    for l in licenses {
        match why_license_does_not_grant(l, today) {
            None => return EntitlementReason::Licensed,
            Some(r) => closest = Some(closest.map_or(r, |c| c.max(r))),
        }
    }
    closest.unwrap_or(EntitlementReason::NotLicensed)
}

/// The last day a licence grants, if nothing changes: the day before its
/// subscription's end date.
pub fn last_day(f: &SubscriptionFacts) -> NaiveDate {
    f.end_date.pred_opt().unwrap_or(f.end_date)
}

#[cfg(test)]
mod tests {
    use super::*;
    use EntitlementReason::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    fn lic(trial: bool, end: &str, suspended: bool, cancelled: bool, prov: ProvisioningStatus) -> GrantingLicense {
        GrantingLicense {
            subscription: Some(SubscriptionFacts {
                trial,
                start_date: d("2026-01-01"),
                end_date: d(end),
                suspended,
                cancelled,
            }),
            provisioning: Some(prov),
        }
    }

    #[test]
    fn each_licence_is_checked_in_the_documented_order() {
        let today = d("2026-06-15");
        let p = ProvisioningStatus::Provisioned;
        let q = ProvisioningStatus::Provisioning;
        assert_eq!(why_license_does_not_grant(&lic(false, "2027-01-01", false, false, p), today), None);
        // Cancelled beats everything; an end date beats suspension; suspension beats provisioning.
        assert_eq!(
            why_license_does_not_grant(&lic(false, "2026-01-02", true, true, q), today),
            Some(SubscriptionCancelled)
        );
        assert_eq!(
            why_license_does_not_grant(&lic(false, "2026-06-15", true, false, q), today),
            Some(SubscriptionExpired)
        );
        assert_eq!(
            why_license_does_not_grant(&lic(true, "2026-06-15", true, false, q), today),
            Some(TrialExpired)
        );
        assert_eq!(
            why_license_does_not_grant(&lic(true, "2026-06-16", true, false, q), today),
            Some(SubscriptionSuspended)
        );
        assert_eq!(
            why_license_does_not_grant(&lic(true, "2026-06-16", false, false, q), today),
            Some(ServiceNotProvisioned)
        );
        // The last day of service still grants; the end date itself does not.
        assert_eq!(why_license_does_not_grant(&lic(false, "2026-06-16", false, false, p), today), None);
        assert_eq!(
            last_day(&lic(false, "2026-06-16", false, false, p).subscription.expect("facts")),
            today
        );
    }

    #[test]
    fn any_granting_licence_wins_and_otherwise_the_closest_reason_is_given() {
        let today = d("2026-06-15");
        let p = ProvisioningStatus::Provisioned;
        let cancelled = lic(false, "2027-01-01", false, true, p);
        let suspended = lic(false, "2027-01-01", true, false, p);
        let good = lic(false, "2027-01-01", false, false, p);
        assert_eq!(decide([&cancelled, &suspended, &good], today), Licensed);
        assert_eq!(decide([&cancelled, &suspended], today), SubscriptionSuspended);
        assert_eq!(decide([&suspended, &cancelled], today), SubscriptionSuspended);
        assert_eq!(decide([], today), NotLicensed);
    }

    #[test]
    fn the_user_comes_first() {
        assert_eq!(why_user_may_not(None), Some(UnknownUser));
        assert_eq!(why_user_may_not(Some(UserStatus::Pending)), Some(UserPending));
        assert_eq!(why_user_may_not(Some(UserStatus::Inactive)), Some(UserInactive));
        assert_eq!(why_user_may_not(Some(UserStatus::Active)), None);
        for r in [Licensed, NotLicensed, UnknownFeature, UserPending] {
            assert_eq!(EntitlementReason::parse(r.as_str()), Some(r));
            assert_eq!(r.allowed(), r == Licensed);
        }
    }
}
