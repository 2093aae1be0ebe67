//! The catalogue's rules between products, and the user's own state:
//! Requires, excludes, one per family,
//! availability by usage location and pending external users.

use super::{Addition, Planning};
use crate::catalogue::Product;
use crate::error::Code;
use crate::types::{ProductCode, UserKind, UserStatus};

/// Every added product's `requires` must be held after the change. With
/// `add_required` the planner adds what is missing (taking a seat for it,
/// and following what that product requires in turn); otherwise, or when the
/// change itself removes the required product, it is refused.
pub(super) fn add_or_refuse_required(p: &mut Planning<'_>) {
    let mut i = 0;
    // Additions grow while we walk them: required products are checked in turn.
    while i < p.additions.len() {
        let product = p.additions[i].product;
        let field = p.additions[i].field.clone();
        for needed in &product.rules.requires {
            if p.will_hold(needed) {
                continue;
            }
            let removed_here = p.release.iter().any(|h| &h.product == needed);
            let needed_product = p.input.catalogue.get(needed);
            match needed_product {
                Some(np) if p.change.add_required && !removed_here => {
                    let properties = p.starting_properties(np, &Default::default());
                    p.push_addition(Addition {
                        product: np,
                        requested_subscription: None,
                        properties,
                        field: format!("{field}.requires"),
                        required_by: Some(product.code.clone()),
                        pool: None,
                    });
                }
                _ => {
                    let (name, needed_name) = (product.name.clone(), p.name(needed));
                    let message = if removed_here {
                        format!(
                            "{} cannot get {name} while removing {needed_name}: {name} requires {needed_name}.",
                            p.email()
                        )
                    } else {
                        format!(
                            "{} cannot get {name} without {needed_name}: {name} requires it. Add {needed_name} in the same change, or set add_required.",
                            p.email()
                        )
                    };
                    let v = p
                        .violation(Code::RequiresProduct, message, &product.code)
                        .related(needed.as_str())
                        .field(field.clone());
                    p.violations.push(v);
                }
            }
        }
        i += 1;
    }
}

/// Removing a product that a licence the user keeps requires is refused.
pub(super) fn refuse_removing_required(p: &mut Planning<'_>) {
    let mut found = Vec::new();
    for kept in p.kept() {
        let Some(kp) = p.input.catalogue.get(&kept.product) else { continue };
        for needed in &kp.rules.requires {
            if p.release.iter().any(|h| &h.product == needed) && !p.will_hold(needed) {
                found.push((kp, needed));
            }
        }
    }
    for (kp, needed) in found {
        let needed_name = p.name(needed);
        let field = p
            .change
            .remove
            .iter()
            .position(|r| &r.product == needed)
            .map(|i| format!("remove[{i}]"))
            .unwrap_or_else(|| "remove".into());
        let v = p
            .violation(
                Code::RequiresProduct,
                format!(
                    "{} cannot lose {needed_name}: {}, which {} keeps, requires it. Remove {} in the same change.",
                    p.email(),
                    kp.name,
                    p.email(),
                    kp.name
                ),
                needed,
            )
            .related(kp.code.as_str())
            .field(field);
        p.violations.push(v);
    }
}

/// A licence that queue memberships bill stays while the user is a
/// member; the queues are named so the admin can remove the user from them
/// (`DELETE .../users/{user}/queues` does it in one call).
pub(super) fn refuse_removing_queue_billed(p: &mut Planning<'_>) {
    let mut found: Vec<(ProductCode, Vec<String>)> = Vec::new();
    for h in &p.release {
        if p.will_hold(&h.product) || found.iter().any(|(c, _)| *c == h.product) {
            continue;
        }
        let queues: Vec<String> = p
            .input
            .user
            .queue_billed
            .iter()
            .filter(|q| q.product == h.product)
            .map(|q| q.queue.clone())
            .collect();
        if !queues.is_empty() {
            found.push((h.product.clone(), queues));
        }
    }
    for (product, queues) in found {
        let name = p.name(&product);
        let field = p
            .change
            .remove
            .iter()
            .position(|r| r.product == product)
            .map(|i| format!("remove[{i}]"))
            .unwrap_or_else(|| "remove".into());
        let v = p
            .violation(
                Code::RequiresProduct,
                format!(
                    "{} cannot lose {name}: they are a member of the queues {}, which keep {name} billed. Remove them from those queues first.",
                    p.email(),
                    queues.join(", ")
                ),
                &product,
            )
            .field(field);
        p.violations.push(v);
    }
}

/// A pending external user's licences cannot be changed in place: the only
/// change allowed once they hold any is removing all of them.
pub(super) fn check_pending_user(p: &mut Planning<'_>) {
    let user = p.input.user;
    if user.kind != UserKind::External || user.status != UserStatus::Pending || p.input.held.is_empty() {
        return;
    }
    let removes_all = p.change.add.is_empty() && p.kept().next().is_none();
    if !removes_all {
        let v = crate::Violation::new(
            Code::UserPending,
            format!(
                "{} is an external user who has not accepted the invitation yet: their licences cannot be changed in place. Remove all of them, then add again.",
                p.email()
            ),
        )
        .user(p.email());
        p.violations.push(v);
    }
}

/// Whether a and b exclude each other (declared on either side).
pub fn excluded(a: &Product, b: &Product) -> bool {
    a.rules.excludes.contains(&b.code) || b.rules.excludes.contains(&a.code)
}

/// Whether a and b may not be held together because of their family: same
/// family, one of them exclusive in it, and no `compatible_with` on either side.
pub fn family_conflict(a: &Product, b: &Product) -> bool {
    a.family == b.family
        && (a.rules.exclusive_in_family || b.rules.exclusive_in_family)
        && !a.rules.compatible_with.contains(&b.code)
        && !b.rules.compatible_with.contains(&a.code)
}

/// Each added product against everything the user will hold: excludes and
/// one per family, each pair reported once.
pub(super) fn check_pairs(p: &mut Planning<'_>) {
    let cat = p.input.catalogue;
    let mut holding: Vec<&Product> = p.kept().filter_map(|h| cat.get(&h.product)).collect();
    holding.extend(p.additions.iter().map(|a| a.product));
    // Each unordered pair once (two additions meet each other twice).
    let mut reported: Vec<(&ProductCode, &ProductCode)> = Vec::new();
    let mut found = Vec::new();
    for a in &p.additions {
        for b in &holding {
            if a.product.code == b.code {
                continue;
            }
            let (exclusive, family) = (excluded(a.product, b), family_conflict(a.product, b));
            if !exclusive && !family {
                continue;
            }
            let pair = if a.product.code < b.code {
                (&a.product.code, &b.code)
            } else {
                (&b.code, &a.product.code)
            };
            if reported.contains(&pair) {
                continue;
            }
            reported.push(pair);
            if exclusive {
                found.push((
                    Code::MutuallyExclusive,
                    format!(
                        "{} cannot hold {} together with {}: the two exclude each other.",
                        p.email(),
                        a.product.name,
                        b.name
                    ),
                    a,
                    b.code.clone(),
                ));
            }
            if family {
                found.push((
                    Code::OnePerFamily,
                    format!(
                        "{} cannot hold {} together with {}: only one {} licence at a time. Remove {} in the same change to move.",
                        p.email(),
                        a.product.name,
                        b.name,
                        a.product.family,
                        b.name
                    ),
                    a,
                    b.code.clone(),
                ));
            }
        }
    }
    let found: Vec<_> = found
        .into_iter()
        .map(|(code, message, a, other)| {
            p.violation(code, message, &a.product.code)
                .related(other.as_str())
                .field(a.field.clone())
        })
        .collect();
    p.violations.extend(found);
}

/// Products available only in some usage locations need the user's (else the
/// org's default) usage location to be one of them.
pub(super) fn check_locations(p: &mut Planning<'_>) {
    let location = p.input.user.usage_location.as_ref().or(p.input.org.default_usage_location.as_ref());
    let mut found = Vec::new();
    for a in &p.additions {
        let Some(allowed) = &a.product.rules.locations else { continue };
        let list = allowed.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ");
        match location {
            None => found.push((
                Code::UsageLocationMissing,
                format!(
                    "{} has no usage location and the organisation has no default, but {} is available only in {list}. Set the user's usage_location first.",
                    p.email(),
                    a.product.name
                ),
                a,
            )),
            Some(loc) if !allowed.contains(loc) => found.push((
                Code::LocationUnavailable,
                format!(
                    "{} cannot get {}: it is not available in {loc}, the usage location of {} (available in {list}).",
                    p.email(),
                    a.product.name,
                    p.email()
                ),
                a,
            )),
            Some(_) => {}
        }
    }
    let found: Vec<_> = found
        .into_iter()
        .map(|(code, message, a)| p.violation(code, message, &a.product.code).field(a.field.clone()))
        .collect();
    p.violations.extend(found);
}
