//! Subscription and provisioning status: derived from stored facts and a date
//! passed in, never stored, so they are never stale.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::types::str_enum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Active,
    Suspended,
    #[serde(rename = "expiring_30d")]
    Expiring30d,
    #[serde(rename = "expiring_60d")]
    Expiring60d,
    TrialActive,
    #[serde(rename = "trial_expiring_30d")]
    TrialExpiring30d,
    #[serde(rename = "trial_expiring_60d")]
    TrialExpiring60d,
    TrialExpired,
    Expired,
    Cancelled,
}

str_enum!(SubscriptionStatus {
    Active => "active", Suspended => "suspended", Expiring30d => "expiring_30d",
    Expiring60d => "expiring_60d", TrialActive => "trial_active",
    TrialExpiring30d => "trial_expiring_30d", TrialExpiring60d => "trial_expiring_60d",
    TrialExpired => "trial_expired", Expired => "expired", Cancelled => "cancelled",
});

impl SubscriptionStatus {
    pub const ALL: [SubscriptionStatus; 10] = [
        Self::Active,
        Self::Suspended,
        Self::Expiring30d,
        Self::Expiring60d,
        Self::TrialActive,
        Self::TrialExpiring30d,
        Self::TrialExpiring60d,
        Self::TrialExpired,
        Self::Expired,
        Self::Cancelled,
    ];

    /// Whether seats of a subscription in this status may be assigned.
    /// Expiring subscriptions still run; suspended, ended and cancelled ones do not.
    pub fn is_usable(&self) -> bool {
        matches!(
            self,
            Self::Active | Self::Expiring30d | Self::Expiring60d | Self::TrialActive | Self::TrialExpiring30d | Self::TrialExpiring60d
        )
    }
}

/// The stored facts a subscription's status is derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionFacts {
    pub trial: bool,
    pub start_date: NaiveDate,
    /// The first day without service: on `end_date` the subscription has ended.
    pub end_date: NaiveDate,
    pub suspended: bool,
    pub cancelled: bool,
}

/// Derive the status shown to people for `today`.
///
/// Precedence: cancelled, then suspended (an unpaid subscription is suspended
/// whatever its dates), then the dates. "Within 30 days" means 1–30 days are
/// left before `end_date`, "within 60 days" 31–60. A subscription whose start
/// lies in the future counts as active (or trial active): it has been sold.
pub fn derive_subscription_status(f: &SubscriptionFacts, today: NaiveDate) -> SubscriptionStatus {
    use SubscriptionStatus::*;
    if f.cancelled {
        return Cancelled;
    }
    if f.suspended {
        return Suspended;
    }
    let days_left = (f.end_date - today).num_days();
    match (f.trial, days_left) {
        (true, d) if d <= 0 => TrialExpired,
        (true, 1..=30) => TrialExpiring30d,
        (true, 31..=60) => TrialExpiring60d,
        (true, _) => TrialActive,
        (false, d) if d <= 0 => Expired,
        (false, 1..=30) => Expiring30d,
        (false, 31..=60) => Expiring60d,
        (false, _) => Active,
    }
}

/// The stored facts that give one status on a day, as conditions a database
/// can filter on (the customer list filters by status without deriving it
/// row by row). The exact inverse of [`derive_subscription_status`]; a test
/// checks every status against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusWindow {
    pub cancelled: bool,
    /// None: either.
    pub suspended: Option<bool>,
    pub trial: Option<bool>,
    /// `end_date >= end_from` when set (inclusive).
    pub end_from: Option<NaiveDate>,
    /// `end_date <= end_to` when set (inclusive).
    pub end_to: Option<NaiveDate>,
}

impl StatusWindow {
    pub fn matches(&self, f: &SubscriptionFacts) -> bool {
        f.cancelled == self.cancelled
            && self.suspended.is_none_or(|s| s == f.suspended)
            && self.trial.is_none_or(|t| t == f.trial)
            && self.end_from.is_none_or(|d| f.end_date >= d)
            && self.end_to.is_none_or(|d| f.end_date <= d)
    }
}

/// Which subscriptions have status `s` on `today`.
pub fn status_window(s: SubscriptionStatus, today: NaiveDate) -> StatusWindow {
    use SubscriptionStatus::*;
    let day = |n: i64| today + chrono::Duration::days(n);
    // Days left = end_date - today: "within 30 days" is 1..=30 left, ended is <= 0.
    let dated = |trial: bool, from: Option<i64>, to: Option<i64>| StatusWindow {
        cancelled: false,
        suspended: Some(false),
        trial: Some(trial),
        end_from: from.map(day),
        end_to: to.map(day),
    };
    match s {
        Cancelled => StatusWindow {
            cancelled: true,
            suspended: None,
            trial: None,
            end_from: None,
            end_to: None,
        },
        Suspended => StatusWindow {
            cancelled: false,
            suspended: Some(true),
            trial: None,
            end_from: None,
            end_to: None,
        },
        TrialExpired => dated(true, None, Some(0)),
        TrialExpiring30d => dated(true, Some(1), Some(30)),
        TrialExpiring60d => dated(true, Some(31), Some(60)),
        TrialActive => dated(true, Some(61), None),
        Expired => dated(false, None, Some(0)),
        Expiring30d => dated(false, Some(1), Some(30)),
        Expiring60d => dated(false, Some(31), Some(60)),
        Active => dated(false, Some(61), None),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProvisioningStatus {
    Provisioned,
    Provisioning,
    ManualProvider,
    ManualPartner,
    AwaitingDetails,
    CannotProvision,
}

str_enum!(ProvisioningStatus {
    Provisioned => "provisioned", Provisioning => "provisioning", ManualProvider => "manual_provider",
    ManualPartner => "manual_partner", AwaitingDetails => "awaiting_details", CannotProvision => "cannot_provision",
});

impl ProvisioningStatus {
    pub const ALL: [ProvisioningStatus; 6] = [
        Self::Provisioned,
        Self::Provisioning,
        Self::ManualProvider,
        Self::ManualPartner,
        Self::AwaitingDetails,
        Self::CannotProvision,
    ];

    /// How much a status needs attention; an org shows its most important one.
    /// cannot provision > awaiting details > manual (partner) > manual (provider)
    /// > provisioning > provisioned.
    pub fn importance(&self) -> u8 {
        match self {
            Self::CannotProvision => 5,
            Self::AwaitingDetails => 4,
            Self::ManualPartner => 3,
            Self::ManualProvider => 2,
            Self::Provisioning => 1,
            Self::Provisioned => 0,
        }
    }
}

/// The most important of several provisioning statuses (None when there are none).
pub fn most_important_provisioning(statuses: impl IntoIterator<Item = ProvisioningStatus>) -> Option<ProvisioningStatus> {
    statuses.into_iter().max_by_key(|s| s.importance())
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubscriptionStatus::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn facts(trial: bool) -> SubscriptionFacts {
        SubscriptionFacts {
            trial,
            start_date: d("2026-01-01"),
            end_date: d("2027-01-01"),
            suspended: false,
            cancelled: false,
        }
    }

    #[test]
    fn boundaries_around_the_end_date() {
        // (today, paid, trial)
        let table = [
            ("2026-06-01", Active, TrialActive),
            ("2026-11-01", Active, TrialActive),           // 61 days left
            ("2026-11-02", Expiring60d, TrialExpiring60d), // 60 days left
            ("2026-12-01", Expiring60d, TrialExpiring60d), // 31 days left
            ("2026-12-02", Expiring30d, TrialExpiring30d), // 30 days left
            ("2026-12-31", Expiring30d, TrialExpiring30d), // 1 day left
            ("2027-01-01", Expired, TrialExpired),         // end date: ended
            ("2028-01-01", Expired, TrialExpired),
        ];
        for (today, paid, trial) in table {
            assert_eq!(derive_subscription_status(&facts(false), d(today)), paid, "paid {today}");
            assert_eq!(derive_subscription_status(&facts(true), d(today)), trial, "trial {today}");
        }
    }

    #[test]
    fn windows_are_the_inverse_of_derivation() {
        let today = d("2026-06-15");
        for trial in [false, true] {
            for suspended in [false, true] {
                for cancelled in [false, true] {
                    for left in -3..=65 {
                        let f = SubscriptionFacts {
                            trial,
                            start_date: d("2026-01-01"),
                            end_date: today + chrono::Duration::days(left),
                            suspended,
                            cancelled,
                        };
                        let derived = derive_subscription_status(&f, today);
                        for s in SubscriptionStatus::ALL {
                            assert_eq!(status_window(s, today).matches(&f), s == derived, "{s:?} for {f:?} ({derived:?})");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn flags_take_precedence() {
        let mut f = facts(false);
        f.suspended = true;
        assert_eq!(derive_subscription_status(&f, d("2026-06-01")), Suspended);
        assert_eq!(derive_subscription_status(&f, d("2027-06-01")), Suspended);
        f.cancelled = true;
        assert_eq!(derive_subscription_status(&f, d("2026-06-01")), Cancelled);
    }

    #[test]
    fn usable_statuses() {
        let usable: Vec<_> = SubscriptionStatus::ALL
            .iter()
            .filter(|s| s.is_usable())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(
            usable,
            [
                "active",
                "expiring_30d",
                "expiring_60d",
                "trial_active",
                "trial_expiring_30d",
                "trial_expiring_60d"
            ]
        );
    }

    #[test]
    fn provisioning_precedence() {
        use ProvisioningStatus::*;
        assert_eq!(
            most_important_provisioning([Provisioned, ManualProvider, Provisioning]),
            Some(ManualProvider)
        );
        assert_eq!(most_important_provisioning([ManualProvider, ManualPartner]), Some(ManualPartner));
        assert_eq!(
            most_important_provisioning([AwaitingDetails, CannotProvision]),
            Some(CannotProvision)
        );
        assert_eq!(most_important_provisioning([]), None);
        for s in ProvisioningStatus::ALL {
            assert_eq!(ProvisioningStatus::parse(s.as_str()), Some(s));
        }
    }
}
