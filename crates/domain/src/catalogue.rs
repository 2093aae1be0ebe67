//! The catalogue: products, the features they grant, their assignment rules,
//! per-assignment properties and retention period.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Violation};
use crate::types::{CountryCode, ProductCode};

/// The per-assignment properties a product may take (API.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PropertyName {
    Location,
    PhoneNumber,
    Extension,
    Site,
    AccountType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    Required,
    Optional,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProductRules {
    /// At most one product of this family per user, except `compatible_with` pairs.
    pub exclusive_in_family: bool,
    pub compatible_with: Vec<ProductCode>,
    pub requires: Vec<ProductCode>,
    pub excludes: Vec<ProductCode>,
    /// None: available everywhere; else the usage locations where it is.
    pub locations: Option<Vec<CountryCode>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub code: ProductCode,
    pub name: String,
    pub family: ProductCode,
    pub features: Vec<String>,
    pub rules: ProductRules,
    pub properties: BTreeMap<PropertyName, Requirement>,
    pub retention_days: u32,
}

/// The longest retention Allot accepts (ten years): beyond that it is a typo.
pub const MAX_RETENTION_DAYS: u32 = 3650;

impl Product {
    /// Checks of one product on its own. Rules that name other products are
    /// checked against the whole catalogue by [`validate_catalogue`].
    pub fn validate(&self) -> Result<(), Error> {
        let mut v = Vec::new();
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            v.push(Violation::new(crate::Code::ValidationFailed, "name must have 1 to 200 characters.").field("name"));
        }
        for (i, f) in self.features.iter().enumerate() {
            if f.trim().is_empty() || f.len() > 100 {
                v.push(
                    Violation::new(crate::Code::ValidationFailed, format!("feature {i} must have 1 to 100 characters."))
                        .field(format!("features[{i}]")),
                );
            }
        }
        if self.retention_days > MAX_RETENTION_DAYS {
            v.push(
                Violation::new(
                    crate::Code::ValidationFailed,
                    format!("retention_days must be between 0 and {MAX_RETENTION_DAYS}."),
                )
                .field("retention_days"),
            );
        }
        let self_ref = |list: &[ProductCode], field: &str, v: &mut Vec<Violation>| {
            if list.contains(&self.code) {
                v.push(
                    Violation::new(
                        crate::Code::ValidationFailed,
                        format!("{} cannot name itself in {field}.", self.code),
                    )
                    .field(format!("rules.{field}")),
                );
            }
        };
        self_ref(&self.rules.requires, "requires", &mut v);
        self_ref(&self.rules.excludes, "excludes", &mut v);
        self_ref(&self.rules.compatible_with, "compatible_with", &mut v);
        if v.is_empty() {
            Ok(())
        } else {
            Err(Error::rejected(v))
        }
    }
}

/// Checks that span products: every code a rule names exists. (The rules
/// issue adds cycle and contradiction checks here.)
pub fn validate_catalogue(products: &HashMap<ProductCode, Product>) -> Result<(), Error> {
    let mut v = Vec::new();
    let mut codes: Vec<&ProductCode> = products.keys().collect();
    codes.sort();
    for code in codes {
        let p = &products[code];
        for (field, list) in [
            ("requires", &p.rules.requires),
            ("excludes", &p.rules.excludes),
            ("compatible_with", &p.rules.compatible_with),
        ] {
            for other in list {
                if !products.contains_key(other) {
                    v.push(
                        Violation::new(
                            crate::Code::ValidationFailed,
                            format!("{code}: rules.{field} names {other}, which is not in the catalogue."),
                        )
                        .product(code.as_str())
                        .field(format!("rules.{field}")),
                    );
                }
            }
        }
    }
    if v.is_empty() {
        Ok(())
    } else {
        Err(Error::rejected(v))
    }
}
