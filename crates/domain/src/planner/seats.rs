//! Which pool an addition takes its seat from, or why none fits.

use super::{Addition, Planning, Pool};
use crate::error::{Code, Violation};
use crate::status::ProvisioningStatus;

/// Seats of `pool` still free after what this plan already took and released.
fn free(p: &Planning<'_>, pool: &Pool) -> i64 {
    pool.quantity - pool.consumed - p.seats_taken(&pool.subscription, &pool.product)
}

fn spaced(s: &str) -> String {
    s.replace('_', " ")
}

/// The named pool if it can take the seat, else the first assignable pool
/// with a free seat in the order given (the subscription that ends first).
pub(super) fn choose_pool<'a>(p: &Planning<'a>, a: &Addition<'_>) -> Result<&'a Pool, Box<Violation>> {
    // Boxed: a Violation is large and the Ok path is the common one.
    let today = p.input.today;
    let product = a.product;
    let email = p.email();
    let candidates = || p.input.pools.iter().filter(|pool| pool.product == product.code);
    let refuse = |code: Code, message: String| Box::new(p.violation(code, message, &product.code));
    if let Some(sub) = &a.requested_subscription {
        let Some(pool) = candidates().find(|pool| &pool.subscription == sub) else {
            return Err(refuse(
                Code::ValidationFailed,
                format!("Subscription {sub} of this organisation carries no {}.", product.name),
            )
            .subscription(sub.clone())
            .into());
        };
        let status = pool.status(today);
        if !status.is_usable() {
            return Err(refuse(
                Code::SubscriptionNotActive,
                format!(
                    "{email} cannot get {}: subscription {sub} is {}.",
                    product.name,
                    spaced(status.as_str())
                ),
            )
            .subscription(sub.clone())
            .into());
        }
        if pool.provisioning != ProvisioningStatus::Provisioned {
            return Err(refuse(
                Code::ServiceNotProvisioned,
                format!(
                    "{email} cannot get {}: the service on subscription {sub} is not provisioned yet ({}).",
                    product.name,
                    spaced(pool.provisioning.as_str())
                ),
            )
            .subscription(sub.clone())
            .into());
        }
        if free(p, pool) <= 0 {
            return Err(refuse(
                Code::SeatsExhausted,
                format!(
                    "{email} cannot get {}: all {} seats of subscription {sub} are taken.",
                    product.name, pool.quantity
                ),
            )
            .subscription(sub.clone())
            .into());
        }
        return Ok(pool);
    }
    if let Some(pool) = candidates().find(|pool| pool.assignable(today) && free(p, pool) > 0) {
        return Ok(pool);
    }
    let (code, why) = if candidates().next().is_none() {
        (Code::SeatsExhausted, "the organisation has no subscription carrying it".to_string())
    } else if !candidates().any(|pool| pool.status(today).is_usable()) {
        (Code::SubscriptionNotActive, "no subscription carrying it is active".to_string())
    } else if !candidates().any(|pool| pool.assignable(today)) {
        (
            Code::ServiceNotProvisioned,
            "the service is not provisioned yet on any active subscription carrying it".to_string(),
        )
    } else {
        let total: i64 = candidates().filter(|pool| pool.assignable(today)).map(|pool| pool.quantity).sum();
        (
            Code::SeatsExhausted,
            format!("all {total} seats on its active subscriptions are taken"),
        )
    };
    Err(refuse(code, format!("{email} cannot get {}: {why}.", product.name)))
}
