//! The catalogue: products, the features they grant, their assignment rules,
//! per-assignment properties and retention period.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Violation};
use crate::types::{CountryCode, ProductCode};

/// The per-assignment properties a product may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PropertyName {
    Location,
    PhoneNumber,
    Extension,
    Site,
    AccountType,
}

impl PropertyName {
    pub const ALL: [PropertyName; 5] = [
        PropertyName::Site,
        PropertyName::AccountType,
        PropertyName::Location,
        PropertyName::PhoneNumber,
        PropertyName::Extension,
    ];

    /// The name as the API spells it (`phone_number`).
    pub fn as_str(&self) -> &'static str {
        match self {
            PropertyName::Location => "location",
            PropertyName::PhoneNumber => "phone_number",
            PropertyName::Extension => "extension",
            PropertyName::Site => "site",
            PropertyName::AccountType => "account_type",
        }
    }

    /// The name as people read it (a form's label).
    pub fn label(&self) -> &'static str {
        match self {
            PropertyName::Location => "Calling location",
            PropertyName::PhoneNumber => "Phone number",
            PropertyName::Extension => "Extension",
            PropertyName::Site => "Meetings site",
            PropertyName::AccountType => "Account type",
        }
    }

    pub fn parse(s: &str) -> Option<PropertyName> {
        PropertyName::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    Required,
    Optional,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
        if let Err(e) = crate::types::check_text("name", &self.name, 200) {
            v.push(Violation::new(crate::Code::ValidationFailed, e.detail).field("name"));
        }
        for (i, f) in self.features.iter().enumerate() {
            if crate::types::check_text("feature", f, 100).is_err() {
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

/// Checks that span products, each naming the product and field: every code
/// a rule names exists; `requires` has no cycle; no product requires (directly
/// or through what it requires) a product it excludes or cannot share a
/// family with; `compatible_with` stays inside the family.
pub fn validate_catalogue(products: &HashMap<ProductCode, Product>) -> Result<(), Error> {
    let mut v = Vec::new();
    let mut codes: Vec<&ProductCode> = products.keys().collect();
    codes.sort();
    let refuse = |code: &ProductCode, field: &str, message: String| {
        Violation::new(crate::Code::ValidationFailed, message)
            .product(code.as_str())
            .field(format!("rules.{field}"))
    };
    for code in &codes {
        let p = &products[*code];
        for (field, list) in [
            ("requires", &p.rules.requires),
            ("excludes", &p.rules.excludes),
            ("compatible_with", &p.rules.compatible_with),
        ] {
            for other in list {
                if !products.contains_key(other) {
                    v.push(refuse(
                        code,
                        field,
                        format!("{code}: rules.{field} names {other}, which is not in the catalogue."),
                    ));
                }
            }
        }
        for other in &p.rules.compatible_with {
            if let Some(o) = products.get(other) {
                if o.family != p.family {
                    v.push(refuse(
                        code,
                        "compatible_with",
                        format!(
                            "{code}: rules.compatible_with names {other}, which is in family {}, not {}; compatible_with only relaxes one per family.",
                            o.family, p.family
                        ),
                    ));
                }
            }
        }
    }
    if !v.is_empty() {
        return Err(Error::rejected(v));
    }
    for code in &codes {
        let p = &products[*code];
        match requires_closure(products, code) {
            Err(cycle) => v.push(refuse(
                code,
                "requires",
                format!("{code}: rules.requires goes round in a circle ({}).", cycle.join(" → ")),
            )),
            Ok(needed) => {
                for n in needed {
                    let Some(np) = products.get(&n) else { continue };
                    if excludes_either_way(p, np) {
                        v.push(refuse(
                            code,
                            "requires",
                            format!("{code} requires {n} but the two exclude each other, so {code} could never be assigned."),
                        ));
                    } else if np.family == p.family
                        && (p.rules.exclusive_in_family || np.rules.exclusive_in_family)
                        && !p.rules.compatible_with.contains(&n)
                        && !np.rules.compatible_with.contains(code)
                    {
                        v.push(refuse(
                            code,
                            "requires",
                            format!(
                                "{code} requires {n}, but only one {} licence may be held and they are not compatible.",
                                p.family
                            ),
                        ));
                    }
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

fn excludes_either_way(a: &Product, b: &Product) -> bool {
    a.rules.excludes.contains(&b.code) || b.rules.excludes.contains(&a.code)
}

/// Everything `code` requires, directly or through what it requires; or the
/// cycle found on the way (as the codes along it).
fn requires_closure(products: &HashMap<ProductCode, Product>, code: &ProductCode) -> Result<Vec<ProductCode>, Vec<String>> {
    fn walk(
        products: &HashMap<ProductCode, Product>,
        code: &ProductCode,
        path: &mut Vec<ProductCode>,
        found: &mut Vec<ProductCode>,
    ) -> Result<(), Vec<String>> {
        let Some(p) = products.get(code) else { return Ok(()) };
        for next in &p.rules.requires {
            if let Some(at) = path.iter().position(|c| c == next) {
                let mut cycle: Vec<String> = path[at..].iter().map(|c| c.to_string()).collect();
                cycle.push(next.to_string());
                return Err(cycle);
            }
            if found.contains(next) {
                continue;
            }
            found.push(next.clone());
            path.push(next.clone());
            walk(products, next, path, found)?;
            path.pop();
        }
        Ok(())
    }
    let mut found = Vec::new();
    walk(products, code, &mut vec![code.clone()], &mut found)?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_names_are_spelled_as_serde_spells_them() {
        for p in PropertyName::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), serde_json::json!(p.as_str()));
            assert_eq!(PropertyName::parse(p.as_str()), Some(p));
        }
    }

    fn code(s: &str) -> ProductCode {
        ProductCode::parse(s).unwrap()
    }

    fn product(c: &str, family: &str, rules: ProductRules) -> (ProductCode, Product) {
        (
            code(c),
            Product {
                code: code(c),
                name: c.into(),
                family: code(family),
                features: vec![],
                rules,
                properties: Default::default(),
                retention_days: 0,
            },
        )
    }

    fn fields(r: Result<(), Error>) -> Vec<(String, String)> {
        r.unwrap_err()
            .violations
            .into_iter()
            .map(|v| (v.product.unwrap_or_default(), v.field.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn cycles_contradictions_and_families_are_refused() {
        let requires = |c: &str| ProductRules {
            requires: vec![code(c)],
            ..Default::default()
        };
        let cycle: HashMap<_, _> = [
            product("a", "x", requires("b")),
            product("b", "y", requires("c")),
            product("c", "z", requires("a")),
        ]
        .into_iter()
        .collect();
        let found = fields(validate_catalogue(&cycle));
        assert_eq!(found.len(), 3);
        assert!(found.iter().all(|(_, f)| f == "rules.requires"));

        let contradiction: HashMap<_, _> = [
            product(
                "a",
                "x",
                ProductRules {
                    requires: vec![code("b")],
                    ..Default::default()
                },
            ),
            product("b", "y", requires("c")),
            product(
                "c",
                "z",
                ProductRules {
                    excludes: vec![code("a")],
                    ..Default::default()
                },
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            fields(validate_catalogue(&contradiction)),
            [("a".to_string(), "rules.requires".to_string())]
        );

        let outside: HashMap<_, _> = [
            product(
                "a",
                "x",
                ProductRules {
                    compatible_with: vec![code("b")],
                    ..Default::default()
                },
            ),
            product("b", "y", ProductRules::default()),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            fields(validate_catalogue(&outside)),
            [("a".to_string(), "rules.compatible_with".to_string())]
        );

        let unknown: HashMap<_, _> = [product("a", "x", requires("ghost"))].into_iter().collect();
        assert_eq!(
            fields(validate_catalogue(&unknown)),
            [("a".to_string(), "rules.requires".to_string())]
        );
    }
}
