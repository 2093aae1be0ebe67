//! Licence templates: the licences every new user gets, for the
//! whole org or for one group's members, and what applying one to a user who
//! already holds licences changes.
//!
//! Which template a user gets: an enabled template of one of the user's
//! groups wins over the org's; among several, the oldest (then lowest id).

use serde::{Deserialize, Serialize};

use crate::planner::{AddLicense, Held, LicenseChange, RemoveLicense};
use crate::types::ProductCode;

/// One licence a template gives: a product, from one subscription or from
/// any with free seats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateLicense {
    pub product: ProductCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
}

/// What a `template_apply` job stores: the template's licences as they were
/// when it was asked for, and the users in its chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateApplyRequest {
    pub template: String,
    pub licenses: Vec<TemplateLicense>,
    pub retain_existing: bool,
    pub dry_run: bool,
}

impl TemplateLicense {
    fn matches(&self, h: &Held) -> bool {
        h.product == self.product && self.subscription.as_ref().is_none_or(|s| *s == h.subscription)
    }
}

/// The change that makes a user's licences what a template says: each
/// licence the user lacks is added; the same product held on another
/// subscription than the one named is moved (service data kept); without
/// `retain_existing`, every licence the template does not name goes. None
/// when the user already has what it says.
pub fn template_change(licenses: &[TemplateLicense], held: &[Held], retain_existing: bool) -> Option<LicenseChange> {
    let mut add = Vec::new();
    let mut remove = Vec::new();
    for t in licenses {
        if held.iter().any(|h| t.matches(h)) {
            continue;
        }
        // The product on another subscription: a move to the one named.
        if let Some(h) = held.iter().find(|h| h.product == t.product) {
            remove.push(RemoveLicense {
                product: h.product.clone(),
                subscription: Some(h.subscription.clone()),
            });
        }
        add.push(AddLicense {
            product: t.product.clone(),
            subscription: t.subscription.clone(),
            properties: Default::default(),
        });
    }
    if !retain_existing {
        for h in held {
            let named = licenses.iter().any(|t| t.matches(h) || t.product == h.product);
            if !named {
                remove.push(RemoveLicense {
                    product: h.product.clone(),
                    subscription: Some(h.subscription.clone()),
                });
            }
        }
    }
    LicenseChange {
        add,
        remove,
        add_required: false,
    }
    .unless_empty()
}

/// What joining a group adds: each licence of the group's template whose
/// product the user does not hold yet. A product already held, on whatever
/// subscription, is left where it is (joining a group never moves or
/// removes a licence). None when nothing is missing.
pub fn join_change(licenses: &[TemplateLicense], held: &[Held]) -> Option<LicenseChange> {
    LicenseChange {
        add: licenses
            .iter()
            .filter(|t| !held.iter().any(|h| h.product == t.product))
            .map(|t| AddLicense {
                product: t.product.clone(),
                subscription: t.subscription.clone(),
                properties: Default::default(),
            })
            .collect(),
        remove: Vec::new(),
        add_required: false,
    }
    .unless_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(p: &str, s: &str) -> Held {
        Held {
            product: ProductCode::parse(p).unwrap(),
            subscription: s.into(),
            properties: Default::default(),
        }
    }
    fn tl(p: &str, s: Option<&str>) -> TemplateLicense {
        TemplateLicense {
            product: ProductCode::parse(p).unwrap(),
            subscription: s.map(str::to_string),
        }
    }

    #[test]
    fn adds_moves_and_removes_as_asked() {
        let t = [tl("calling", Some("sub_b")), tl("meetings", None)];
        // Nothing held: both added.
        let c = template_change(&t, &[], true).unwrap();
        assert_eq!((c.add.len(), c.remove.len()), (2, 0));
        // Calling on A: moved to B; meetings on any subscription already fits.
        let h = [held("calling", "sub_a"), held("meetings", "sub_x"), held("messaging", "sub_x")];
        let c = template_change(&t, &h, true).unwrap();
        assert_eq!(c.add.len(), 1);
        assert_eq!(c.add[0].subscription.as_deref(), Some("sub_b"));
        assert_eq!(c.remove.len(), 1);
        assert_eq!(c.remove[0].subscription.as_deref(), Some("sub_a"));
        // Not retaining: messaging goes too.
        let c = template_change(&t, &h, false).unwrap();
        assert_eq!(c.remove.len(), 2);
        // Already as the template says.
        let h = [held("calling", "sub_b"), held("meetings", "sub_x")];
        assert!(template_change(&t, &h, false).is_none());
    }

    #[test]
    fn joining_adds_only_what_is_missing() {
        let t = [tl("calling", Some("sub_b")), tl("meetings", None)];
        let c = join_change(&t, &[held("calling", "sub_a")]).unwrap();
        assert_eq!(c.add.len(), 1);
        assert_eq!(c.add[0].product.as_str(), "meetings");
        assert!(c.remove.is_empty(), "joining never moves calling to sub_b");
        assert!(join_change(&t, &[held("calling", "sub_a"), held("meetings", "sub_x")]).is_none());
    }
}
