//! Bulk licence changes: the request, what it means for each user, the
//! capacity check made before anything is written, and per-user outcomes.
//!
//! Pure like the planner: each user's change is derived here and then planned
//! by [`crate::planner::plan_license_change`], exactly as a single change.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::catalogue::Product;
use crate::error::{Code, Error, Violation};
use crate::planner::{AddLicense, Held, LicenseChange, LicensePlan, RemoveLicense};
use crate::types::ProductCode;

/// The most users one job may name in its `users` list (a filter has no limit).
pub const MAX_LISTED_USERS: usize = 1_000_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Users whose email ends in `@<domain>` (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_product: Option<ProductCode>,
    /// Users holding a seat of this subscription (cancelling one moves them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    /// Users holding this product; with `idle_days`, only those idle on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<ProductCode>,
    /// With `product`: only holders who have not used it (no entitlement
    /// check answered yes) for this many days, today included, and who
    /// have held it since before then. For reclaiming idle seats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3650)]
    pub idle_days: Option<u32>,
}

/// The longest idle window a filter or usage report takes (ten years).
pub const MAX_IDLE_DAYS: u32 = 3650;

/// The first day of an idle window of `days` days ending `today`: a use
/// on this day or later is within the window.
pub fn idle_window_start(today: chrono::NaiveDate, days: u32) -> chrono::NaiveDate {
    today - chrono::Days::new(u64::from(days.saturating_sub(1)))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveSpec {
    /// Only this product (and its family) moves; without it, every licence
    /// the user holds on `from_subscription`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<ProductCode>,
    pub from_subscription: String,
    pub to_subscription: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobMode {
    /// Each user all or nothing; the others go on.
    #[default]
    PerUser,
    /// The whole job or nothing.
    AllOrNothing,
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// `POST .../license-jobs`: a licence change for many users.
    LicenseChange,
    /// `POST .../subscriptions/{sub}/cancel`: empties a subscription, then cancels it.
    SubscriptionCancel,
    /// `POST .../imports`: a users CSV.
    CsvImport,
    /// `POST .../license-templates/{tpl}/apply`: a template given to existing users.
    TemplateApply,
}

/// Where a job is: `queued` until a worker takes it, `running`, then one of
/// the four ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    CompletedWithErrors,
    Failed,
    Cancelled,
}

crate::types::str_enum!(JobKind {
    LicenseChange => "license_change",
    SubscriptionCancel => "subscription_cancel",
    CsvImport => "csv_import",
    TemplateApply => "template_apply",
});
crate::types::str_enum!(JobState {
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    CompletedWithErrors => "completed_with_errors",
    Failed => "failed",
    Cancelled => "cancelled",
});

impl JobState {
    /// Whether the job has ended (no worker will touch it again).
    pub fn has_ended(&self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

/// `POST .../license-jobs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LicenseJobRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<UserFilter>,
    #[serde(default)]
    pub add: Vec<JobAdd>,
    #[serde(default)]
    pub remove: Vec<JobRemove>,
    #[serde(default, rename = "move", skip_serializing_if = "Option::is_none")]
    pub move_: Option<MoveSpec>,
    #[serde(default)]
    pub mode: JobMode,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub add_required: bool,
}

/// What a `subscription_cancel` job stores: the licence change that empties
/// the subscription (a move to another, or removal), then its cancellation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelJobRequest {
    pub subscription: String,
    pub change: LicenseJobRequest,
}

/// The additions and removals of a bulk request are those of a single change.
pub type JobAdd = AddLicense;
pub type JobRemove = RemoveLicense;

impl LicenseJobRequest {
    /// Checks the request on its own (the store checks users and subscriptions).
    pub fn validate(&self) -> Result<(), Error> {
        let mut v = Vec::new();
        match (&self.users, &self.filter) {
            (Some(_), Some(_)) => v.push(Violation::new(Code::ValidationFailed, "Give either users or filter, not both.").field("filter")),
            (None, None) => v.push(Violation::new(Code::ValidationFailed, "Say which users: a users list or a filter.").field("users")),
            (Some(users), None) => {
                if users.is_empty() {
                    v.push(Violation::new(Code::ValidationFailed, "The users list is empty.").field("users"));
                }
                if users.len() > MAX_LISTED_USERS {
                    v.push(
                        Violation::new(
                            Code::ValidationFailed,
                            format!(
                                "The users list names {} users; at most {MAX_LISTED_USERS} may be listed. Use a filter for more.",
                                users.len()
                            ),
                        )
                        .field("users"),
                    );
                }
                let mut seen = HashSet::with_capacity(users.len());
                for (i, u) in users.iter().enumerate() {
                    if !seen.insert(u.as_str()) {
                        v.push(Violation::new(Code::ValidationFailed, format!("User {u} is listed twice.")).field(format!("users[{i}]")));
                        break;
                    }
                }
            }
            (None, Some(f)) => {
                if f.group.is_none()
                    && f.email_domain.is_none()
                    && f.has_product.is_none()
                    && f.subscription.is_none()
                    && f.product.is_none()
                {
                    v.push(
                        Violation::new(
                            Code::ValidationFailed,
                            "The filter is empty: give group, email_domain, has_product, subscription or product (with idle_days).",
                        )
                        .field("filter"),
                    );
                }
                match (f.idle_days, &f.product) {
                    (Some(_), None) => v.push(
                        Violation::new(
                            Code::ValidationFailed,
                            "idle_days needs product: the product whose use is measured.",
                        )
                        .field("filter.product"),
                    ),
                    (Some(d), Some(_)) if d == 0 || d > MAX_IDLE_DAYS => v.push(
                        Violation::new(
                            Code::ValidationFailed,
                            format!("idle_days is a number of days from 1 to {MAX_IDLE_DAYS}, not {d}."),
                        )
                        .field("filter.idle_days"),
                    ),
                    _ => {}
                }
                if let Some(d) = &f.email_domain {
                    let d = d.trim_start_matches('@');
                    // A domain as an email holds one: `%` and `_` are no wildcards here.
                    if !crate::types::is_domain(d) {
                        v.push(
                            Violation::new(
                                Code::ValidationFailed,
                                format!("\"{}\" is not an email domain such as example.com.", crate::types::excerpt(d)),
                            )
                            .field("filter.email_domain"),
                        );
                    }
                }
            }
        }
        if self.add.is_empty() && self.remove.is_empty() && self.move_.is_none() {
            v.push(Violation::new(Code::ValidationFailed, "The job adds, removes and moves nothing.").field("add"));
        }
        if let Some(m) = &self.move_ {
            if m.from_subscription == m.to_subscription {
                v.push(Violation::new(Code::ValidationFailed, "A move needs two different subscriptions.").field("move.to_subscription"));
            }
        }
        if v.is_empty() {
            Ok(())
        } else {
            Err(Error::rejected(v))
        }
    }
}

/// Which product on the target subscription each product of the source one
/// moves to: the same product if the target carries it, else the one product
/// of the same family it carries. Refuses a product with no counterpart (a
/// move between families) or an ambiguous one.
pub fn move_mapping(
    spec: &MoveSpec,
    from_products: &[ProductCode],
    to_products: &[ProductCode],
    catalogue: &std::collections::HashMap<ProductCode, Product>,
) -> Result<Vec<(ProductCode, ProductCode)>, Error> {
    let family = |c: &ProductCode| catalogue.get(c).map(|p| p.family.clone());
    let moving: Vec<&ProductCode> = match &spec.product {
        Some(p) => {
            if !from_products.contains(p) {
                return Err(Error::validation(
                    "move.product",
                    format!("Subscription {} carries no {p}.", spec.from_subscription),
                ));
            }
            vec![p]
        }
        None => from_products.iter().collect(),
    };
    let mut mapping = Vec::new();
    let mut v = Vec::new();
    for p in moving {
        if to_products.contains(p) {
            mapping.push((p.clone(), p.clone()));
            continue;
        }
        let fam = family(p);
        let same_family: Vec<&ProductCode> = to_products.iter().filter(|t| family(t) == fam).collect();
        match same_family.as_slice() {
            [one] => mapping.push((p.clone(), (*one).clone())),
            [] => v.push(
                Violation::new(
                    Code::ValidationFailed,
                    format!(
                        "{p} cannot move to subscription {}: it carries neither {p} nor another product of its family {}. A move stays within one product family.",
                        spec.to_subscription,
                        fam.map(|f| f.to_string()).unwrap_or_default()
                    ),
                )
                .product(p.as_str())
                .field("move"),
            ),
            many => v.push(
                Violation::new(
                    Code::ValidationFailed,
                    format!(
                        "{p} could move to any of {} on subscription {}: name the product to move.",
                        many.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "),
                        spec.to_subscription
                    ),
                )
                .product(p.as_str())
                .field("move.product"),
            ),
        }
    }
    if v.is_empty() {
        Ok(mapping)
    } else {
        Err(Error::rejected(v))
    }
}

/// The bulk request as it applies to one user, given what the user holds:
/// additions the user already has and removals of what the user does not
/// hold are dropped (bulk means "make it so"), and a move becomes a removal
/// from the source subscription plus an addition on the target. `None` when
/// nothing is left to do for this user.
pub fn change_for_user(req: &LicenseJobRequest, held: &[Held], mapping: &[(ProductCode, ProductCode)]) -> Option<LicenseChange> {
    let holds = |p: &ProductCode| held.iter().any(|h| &h.product == p);
    let mut change = LicenseChange {
        add: req.add.iter().filter(|a| !holds(&a.product)).cloned().collect(),
        remove: req
            .remove
            .iter()
            .filter(|r| {
                held.iter()
                    .any(|h| h.product == r.product && r.subscription.as_ref().is_none_or(|s| s == &h.subscription))
            })
            .cloned()
            .collect(),
        add_required: req.add_required,
    };
    if let Some(spec) = &req.move_ {
        for (from, to) in mapping {
            let on_source = held.iter().any(|h| &h.product == from && h.subscription == spec.from_subscription);
            if !on_source || change.remove.iter().any(|r| &r.product == from) {
                continue;
            }
            change.remove.push(RemoveLicense {
                product: from.clone(),
                subscription: Some(spec.from_subscription.clone()),
            });
            change.add.retain(|a| &a.product != to);
            change.add.push(AddLicense {
                product: to.clone(),
                subscription: Some(spec.to_subscription.clone()),
                properties: Default::default(),
            });
        }
    }
    change.unless_empty()
}

/// Seats one product (on one subscription, or on any) needs for a job, and
/// how many are free before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    pub product: ProductCode,
    pub subscription: Option<String>,
    pub needed: i64,
    pub free: i64,
}

/// A product whose free seats are fewer than the users who need one
/// is refused as a whole, before anything is written.
pub fn capacity_violations(demands: &[Demand], catalogue: &std::collections::HashMap<ProductCode, Product>) -> Vec<Violation> {
    demands
        .iter()
        .filter(|d| d.needed > d.free)
        .map(|d| {
            let name = catalogue.get(&d.product).map(|p| p.name.as_str()).unwrap_or(d.product.as_str());
            let place = match &d.subscription {
                Some(s) => format!("on subscription {s}"),
                None => "on the organisation's active subscriptions".to_string(),
            };
            let v = Violation::new(
                Code::SeatsExhausted,
                format!(
                    "{name} needs {} seats for the selected users but only {} are free {place}; nothing was changed. Buy {} more seats or select fewer users.",
                    d.needed,
                    d.free,
                    d.needed - d.free
                ),
            )
            .product(d.product.as_str());
            match &d.subscription {
                Some(s) => v.subscription(s.clone()),
                None => v,
            }
        })
        .collect()
}

/// What happened to one user in a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserResult {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub changes: Vec<ResultChange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Error,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResultChange {
    pub action: ChangeAction,
    pub product: ProductCode,
    pub subscription: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeAction {
    Add,
    Remove,
}

impl UserResult {
    pub fn ok(user: &str, plan: &LicensePlan) -> Self {
        let mut changes: Vec<ResultChange> = plan
            .release
            .iter()
            .map(|h| ResultChange {
                action: ChangeAction::Remove,
                product: h.product.clone(),
                subscription: h.subscription.clone(),
            })
            .collect();
        changes.extend(plan.take.iter().map(|h| ResultChange {
            action: ChangeAction::Add,
            product: h.product.clone(),
            subscription: h.subscription.clone(),
        }));
        UserResult {
            user: user.to_string(),
            email: None,
            row: None,
            outcome: Outcome::Ok,
            code: None,
            message: None,
            changes,
        }
    }

    /// A refusal: the code of the first reason, and every reason's sentence.
    pub fn error(user: &str, violations: &[Violation]) -> Self {
        let code = violations.first().map(|v| v.code.as_str()).unwrap_or("validation_failed");
        let message = violations.iter().map(|v| v.message.as_str()).collect::<Vec<_>>().join(" ");
        UserResult {
            user: user.to_string(),
            email: None,
            row: None,
            outcome: Outcome::Error,
            code: Some(code.to_string()),
            message: Some(message),
            changes: Vec::new(),
        }
    }

    /// A refusal for a user who was deleted after the job listed them.
    pub fn user_gone(user: &str) -> Self {
        Self::error(user, &[Violation::new(Code::NotFound, format!("User {user} no longer exists."))])
    }

    pub fn skipped(user: &str, code: Option<&str>, message: impl Into<String>) -> Self {
        UserResult {
            user: user.to_string(),
            email: None,
            row: None,
            outcome: Outcome::Skipped,
            code: code.map(str::to_string),
            message: Some(message.into()),
            changes: Vec::new(),
        }
    }
}

/// Over the selected users, whether all, some or none hold an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HolderState {
    All,
    Some,
    None,
}

pub fn holder_state(holders: usize, selected: usize) -> HolderState {
    match holders {
        0 => HolderState::None,
        n if n >= selected => HolderState::All,
        _ => HolderState::Some,
    }
}

/// Users needing a seat of each added product (those not holding it yet),
/// counted from what each user holds.
pub fn count_demand<'a>(req: &LicenseJobRequest, holdings: impl Iterator<Item = &'a [Held]>) -> BTreeMap<ProductCode, i64> {
    let mut needed: BTreeMap<ProductCode, i64> = BTreeMap::new();
    for held in holdings {
        for a in &req.add {
            if !held.iter().any(|h| h.product == a.product) {
                *needed.entry(a.product.clone()).or_default() += 1;
            }
        }
    }
    needed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> ProductCode {
        ProductCode::parse(s).unwrap()
    }

    fn held(product: &str, sub: &str) -> Held {
        Held {
            product: code(product),
            subscription: sub.into(),
            properties: Default::default(),
        }
    }

    #[test]
    fn request_validation() {
        let base = LicenseJobRequest {
            users: Some(vec!["u1".into()]),
            add: vec![AddLicense {
                product: code("messaging"),
                subscription: None,
                properties: Default::default(),
            }],
            ..Default::default()
        };
        assert!(base.validate().is_ok());
        let both = LicenseJobRequest {
            filter: Some(UserFilter {
                group: Some("g".into()),
                ..Default::default()
            }),
            ..base.clone()
        };
        assert_eq!(both.validate().unwrap_err().violations[0].field.as_deref(), Some("filter"));
        let empty = LicenseJobRequest {
            users: Some(vec![]),
            ..base.clone()
        };
        assert!(empty.validate().unwrap_err().detail.contains("empty"));
        let twice = LicenseJobRequest {
            users: Some(vec!["u1".into(), "u1".into()]),
            ..base.clone()
        };
        assert_eq!(twice.validate().unwrap_err().violations[0].field.as_deref(), Some("users[1]"));
        let nothing = LicenseJobRequest { add: vec![], ..base };
        assert!(nothing.validate().is_err());
    }

    #[test]
    fn change_for_user_drops_what_is_already_so_and_expands_moves() {
        let req = LicenseJobRequest {
            users: Some(vec!["u".into()]),
            add: vec![AddLicense {
                product: code("messaging"),
                subscription: None,
                properties: Default::default(),
            }],
            remove: vec![RemoveLicense {
                product: code("meetings"),
                subscription: None,
            }],
            move_: Some(MoveSpec {
                product: None,
                from_subscription: "a".into(),
                to_subscription: "b".into(),
            }),
            ..Default::default()
        };
        let mapping = vec![(code("calling-standard"), code("calling-standard"))];
        // Holds messaging already, no meetings, calling on a: only the move is left.
        let c = change_for_user(&req, &[held("messaging", "a"), held("calling-standard", "a")], &mapping).unwrap();
        assert_eq!(c.remove.len(), 1);
        assert_eq!(c.remove[0].subscription.as_deref(), Some("a"));
        assert_eq!(c.add.len(), 1);
        assert_eq!(c.add[0].subscription.as_deref(), Some("b"));
        // Calling already on b and messaging held: nothing to do.
        assert!(change_for_user(&req, &[held("messaging", "a"), held("calling-standard", "b")], &mapping).is_none());
    }

    #[test]
    fn capacity_names_needed_and_free() {
        let v = capacity_violations(
            &[
                Demand {
                    product: code("messaging"),
                    subscription: None,
                    needed: 1000,
                    free: 900,
                },
                Demand {
                    product: code("meetings"),
                    subscription: None,
                    needed: 10,
                    free: 10,
                },
            ],
            &Default::default(),
        );
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].code, Code::SeatsExhausted);
        assert!(v[0].message.contains("needs 1000 seats") && v[0].message.contains("only 900 are free"));
    }

    #[test]
    fn holder_states() {
        assert_eq!(holder_state(0, 5), HolderState::None);
        assert_eq!(holder_state(3, 5), HolderState::Some);
        assert_eq!(holder_state(5, 5), HolderState::All);
    }
}
