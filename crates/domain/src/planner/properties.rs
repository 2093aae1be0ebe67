//! Per-assignment properties: which a product takes,
//! which it requires, what a valid value is, and the site rules of meeting
//! accounts (attendee accounts need the site's feature and are not for the
//! site's own admins).

use super::Planning;
use crate::catalogue::{PropertyName, Requirement};
use crate::error::{Code, Violation};

/// E.164: a plus sign, then 2 to 15 digits, the first not 0.
pub fn valid_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else { return false };
    (2..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) && !digits.starts_with('0')
}

/// An internal extension: 2 to 10 digits.
pub fn valid_extension(s: &str) -> bool {
    (2..=10).contains(&s.len()) && s.chars().all(|c| c.is_ascii_digit())
}

fn label(name: PropertyName) -> &'static str {
    match name {
        PropertyName::Location => "location",
        PropertyName::PhoneNumber => "phone_number",
        PropertyName::Extension => "extension",
        PropertyName::Site => "site",
        PropertyName::AccountType => "account_type",
    }
}

/// What a missing property is, in a sentence ("needs an extension").
fn wanted(name: PropertyName) -> &'static str {
    match name {
        PropertyName::Location => "a location",
        PropertyName::PhoneNumber => "a phone_number (E.164, such as +46812345678)",
        PropertyName::Extension => "an extension (2 to 10 digits)",
        PropertyName::Site => "a site",
        PropertyName::AccountType => "an account_type (host or attendee)",
    }
}

pub(super) fn check_additions(p: &mut Planning<'_>) {
    let mut found: Vec<Violation> = Vec::new();
    let email = p.email();
    let org = p.input.org;
    for a in &p.additions {
        let product = a.product;
        let refuse = |code: Code, name: PropertyName, message: String| {
            Violation::new(code, message)
                .user(email)
                .product(product.code.as_str())
                .field(format!("{}.properties.{}", a.field, label(name)))
        };
        for (name, req) in &product.properties {
            if *req == Requirement::Required && !a.properties.contains_key(name) {
                found.push(refuse(
                    Code::PropertyMissing,
                    *name,
                    format!("{email} needs {} for {}.", wanted(*name), product.name),
                ));
            }
        }
        for (name, value) in &a.properties {
            if !product.properties.contains_key(name) {
                found.push(refuse(
                    Code::PropertyInvalid,
                    *name,
                    format!("{} takes no {} property.", product.name, label(*name)),
                ));
                continue;
            }
            let problem = match name {
                PropertyName::Location => {
                    let t = value.trim();
                    (t.is_empty() || t.chars().count() > 100 || t != value)
                        .then(|| "must be a name of 1 to 100 characters without surrounding spaces".to_string())
                }
                PropertyName::PhoneNumber => (!valid_e164(value)).then(|| "must be an E.164 number such as +46812345678".to_string()),
                PropertyName::Extension => (!valid_extension(value)).then(|| "must be 2 to 10 digits".to_string()),
                PropertyName::Site => (!org.sites.iter().any(|s| &s.id == value)).then(|| "is not a site of this organisation".to_string()),
                PropertyName::AccountType => (value != "host" && value != "attendee").then(|| "must be host or attendee".to_string()),
            };
            if let Some(why) = problem {
                found.push(refuse(
                    Code::PropertyInvalid,
                    *name,
                    format!("{} \"{value}\" for {} of {email} {why}.", label(*name), product.name),
                ));
            }
        }
        if a.properties.get(&PropertyName::AccountType).map(String::as_str) == Some("attendee") {
            match a.properties.get(&PropertyName::Site) {
                None => found.push(refuse(
                    Code::PropertyMissing,
                    PropertyName::Site,
                    format!("{email} needs a site for an attendee account of {}.", product.name),
                )),
                Some(site_id) => {
                    if let Some(site) = org.sites.iter().find(|s| &s.id == site_id) {
                        if !site.attendee_accounts_enabled {
                            found.push(refuse(
                                Code::SiteFeatureDisabled,
                                PropertyName::AccountType,
                                format!(
                                    "{email} cannot have an attendee account of {} on site {site_id}: attendee accounts are turned off for that site.",
                                    product.name
                                ),
                            ));
                        }
                        if p.input.user.site_admin_of.contains(site_id) {
                            found.push(refuse(
                                Code::RoleNotAllowed,
                                PropertyName::AccountType,
                                format!(
                                    "{email} administers site {site_id}, so their {} account there must be a host account, not attendee.",
                                    product.name
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    p.violations.extend(found);
}
