//! Licences following group membership (group-based licensing): joining a
//! group whose licence template is enabled gives its licences; leaving it
//! takes back the licences that template gave, unless another source still
//! gives them (another template's grant, or an enabled template of a group
//! the user is still in). A licence given directly (an admin, the API, a
//! CSV) is never taken back by a group. Which template gave what is kept in
//! `license_grants` (see `allot_store::grants`).
//!
//! Called in the transaction that changes the membership, for any path
//! (the API's user `groups`, SCIM's group members, a SCIM reactivation). A
//! licence change the planner refuses (no seat left, a rule) never blocks
//! the membership change: it is audited as `template.refused` and returned
//! for the caller to show.

use std::collections::BTreeSet;

use allot_domain::planner::{LicenseChange, RemoveLicense};
use allot_domain::templates::join_change;
use allot_domain::{Code, Violation};
use allot_store::audit::Actor;
use allot_store::templates::Template;
use allot_store::{audit, grants, licenses, tenants, StoreError, Tx};

/// A template's licences the planner refused for a user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Refused {
    pub template: String,
    pub template_name: String,
    /// Whether the licences were to be taken back (leaving) or given (joining).
    pub taking_back: bool,
    pub errors: Vec<Violation>,
}

impl Refused {
    /// One sentence for an admin: which template, what, and why.
    pub fn describe(&self, user: &str) -> String {
        let reasons: Vec<&str> = self.errors.iter().map(|v| v.message.as_str()).collect();
        let what = if self.taking_back {
            "could not be taken back from"
        } else {
            "could not be given to"
        };
        format!(
            "The licenses of template \"{}\" {what} {user}: {}",
            self.template_name,
            reasons.join(" ")
        )
    }
}

/// How a user's membership changed: the groups joined and left, and the
/// groups it is in afterwards.
pub struct Membership<'a> {
    pub joined: &'a [String],
    pub left: &'a [String],
    pub now_in: &'a [String],
}

/// Gives and takes back the licences of the templates of the groups a user
/// joined and left, in the caller's transaction.
/// `all`: the org's templates (`templates::list`), read once by a caller
/// that follows many users.
#[allow(clippy::too_many_arguments)]
pub async fn follow_membership(
    tx: &mut Tx,
    org: &tenants::Org,
    all: &[Template],
    user: &str,
    m: &Membership<'_>,
    who: &Actor,
    today: chrono::NaiveDate,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Refused>, StoreError> {
    if m.joined.is_empty() && m.left.is_empty() {
        return Ok(Vec::new());
    }
    let scoped_to = |groups: &[String]| -> Vec<&Template> {
        all.iter()
            .filter(|t| t.group.as_ref().is_some_and(|g| groups.contains(g)))
            .collect()
    };
    let leaving = scoped_to(m.left);
    let joining: Vec<&Template> = scoped_to(m.joined).into_iter().filter(|t| t.enabled).collect();
    if leaving.is_empty() && joining.is_empty() {
        return Ok(Vec::new());
    }
    // Templates that still give a product: those of the groups the user is in.
    let staying: Vec<&Template> = scoped_to(m.now_in).into_iter().filter(|t| t.enabled).collect();
    let mut refusals = Vec::new();
    if !leaving.is_empty() {
        take_back(tx, org, user, &leaving, &staying, who, today, now, &mut refusals).await?;
    }
    for t in joining {
        give(tx, org, user, t, who, today, now, &mut refusals).await?;
    }
    Ok(refusals)
}

/// Leaving: each product a leaving template gave goes, unless another
/// template's grant remains or a staying group's template names it (which
/// then holds the grant).
#[allow(clippy::too_many_arguments)]
async fn take_back(
    tx: &mut Tx,
    org: &tenants::Org,
    user: &str,
    leaving: &[&Template],
    staying: &[&Template],
    who: &Actor,
    today: chrono::NaiveDate,
    now: chrono::DateTime<chrono::Utc>,
    refusals: &mut Vec<Refused>,
) -> Result<(), StoreError> {
    let gone: Vec<String> = leaving.iter().map(|t| t.id.clone()).collect();
    let granted = grants::of_user(tx, &org.id, user).await?;
    let given_by_leaving: BTreeSet<&str> = granted
        .iter()
        .filter(|g| gone.contains(&g.template))
        .map(|g| g.product.as_str())
        .collect();
    if given_by_leaving.is_empty() {
        return Ok(());
    }
    grants::revoke(tx, &org.id, user, &gone).await?;
    let held = licenses::of_user(tx, &org.id, user).await?;
    let mut remove = Vec::new();
    for product in given_by_leaving {
        let other_grant = granted.iter().any(|g| g.product == product && !gone.contains(&g.template));
        if other_grant {
            continue;
        }
        if let Some(t) = staying
            .iter()
            .find(|t| !gone.contains(&t.id) && t.licenses.iter().any(|l| l.product.as_str() == product))
        {
            grants::record(tx, &org.id, user, &t.id, &[product]).await?;
            continue;
        }
        if let Some(a) = held.iter().find(|a| a.held.product.as_str() == product) {
            remove.push(RemoveLicense {
                product: a.held.product.clone(),
                subscription: Some(a.held.subscription.clone()),
            });
        }
    }
    if remove.is_empty() {
        return Ok(());
    }
    let change = LicenseChange {
        remove,
        ..LicenseChange::default()
    };
    if let Err(errors) = super::licenses::change_within(tx, org, user, &change, who, today, now).await? {
        // Grants of the leaving templates are gone either way: what stays
        // is the user's now, as if given directly.
        let (template, template_name) = leaving.first().map(|t| (t.id.clone(), t.name.clone())).unwrap_or_default();
        let r = Refused {
            template,
            template_name,
            taking_back: true,
            errors,
        };
        refused(tx, org, user, r, who, now, refusals).await?;
    }
    Ok(())
}

/// Joining: the template's licences the user lacks are added (one planned
/// change, all or none); each product it names that the user now holds
/// through it or another template is recorded as its grant too.
#[allow(clippy::too_many_arguments)]
async fn give(
    tx: &mut Tx,
    org: &tenants::Org,
    user: &str,
    t: &Template,
    who: &Actor,
    today: chrono::NaiveDate,
    now: chrono::DateTime<chrono::Utc>,
    refusals: &mut Vec<Refused>,
) -> Result<(), StoreError> {
    let held: Vec<_> = licenses::of_user(tx, &org.id, user).await?.into_iter().map(|a| a.held).collect();
    let granted = grants::of_user(tx, &org.id, user).await?;
    let mut products: Vec<&str> = Vec::new();
    let change = join_change(&t.licenses, &held);
    if let Some(change) = &change {
        match super::licenses::change_within(tx, org, user, change, who, today, now).await {
            Ok(Ok(_)) => products.extend(change.add.iter().map(|a| a.product.as_str())),
            Ok(Err(errors)) => {
                refused(
                    tx,
                    org,
                    user,
                    Refused {
                        template: t.id.clone(),
                        template_name: t.name.clone(),
                        taking_back: false,
                        errors,
                    },
                    who,
                    now,
                    refusals,
                )
                .await?;
                return Ok(());
            }
            // A seat the plan counted on went to someone else while it was
            // written: the whole change starts over on fresh counts.
            Err(StoreError::Domain(e)) if e.code == Code::SeatsExhausted => {
                return Err(StoreError::Replan(format!(
                    "a seat for template {} was taken concurrently: {}",
                    t.id, e.detail
                )))
            }
            Err(e) => return Err(e),
        }
    }
    // Held already and given by another template: this one gives it too.
    for l in &t.licenses {
        let p = l.product.as_str();
        if held.iter().any(|h| h.product == l.product) && granted.iter().any(|g| g.product == p) {
            products.push(p);
        }
    }
    grants::record(tx, &org.id, user, &t.id, &products).await
}

async fn refused(
    tx: &mut Tx,
    org: &tenants::Org,
    user: &str,
    r: Refused,
    who: &Actor,
    now: chrono::DateTime<chrono::Utc>,
    refusals: &mut Vec<Refused>,
) -> Result<(), StoreError> {
    tracing::info!(user, template = %r.template, "a group template's licence change was refused; the membership changed without it");
    audit::record(
        tx,
        Some(&org.id),
        who,
        "template.refused",
        &format!("user:{user}"),
        None,
        serde_json::to_value(&r).ok().as_ref(),
        now,
    )
    .await?;
    refusals.push(r);
    Ok(())
}
