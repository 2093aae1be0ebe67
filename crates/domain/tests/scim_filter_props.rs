//! Printing a SCIM filter and parsing the text gives back the same tree,
//! for random trees within the parser's limits.

use allot_domain::scim::filter::{parse_filter, AttrPath, CompValue, CompareOp, Filter};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z][a-zA-Z0-9_-]{0,8}"
}

fn path() -> impl Strategy<Value = AttrPath> {
    (
        prop::option::of(prop_oneof![
            Just("urn:ietf:params:scim:schemas:core:2.0:User".to_string()),
            Just("urn:allot:params:scim:schemas:extension:licensing:2.0:User".to_string()),
        ]),
        name(),
        prop::option::of(name()),
    )
        .prop_map(|(uri, name, sub)| AttrPath { uri, name, sub })
}

fn value() -> impl Strategy<Value = CompValue> {
    prop_oneof![
        Just(CompValue::Null),
        any::<bool>().prop_map(CompValue::Bool),
        any::<i64>().prop_map(|n| CompValue::Number(n.to_string())),
        (-1_000_000i64..1_000_000, 1u32..999).prop_map(|(a, b)| CompValue::Number(format!("{a}.{b}"))),
        any::<String>().prop_map(CompValue::Str),
    ]
}

fn op() -> impl Strategy<Value = CompareOp> {
    prop_oneof![
        Just(CompareOp::Eq),
        Just(CompareOp::Ne),
        Just(CompareOp::Co),
        Just(CompareOp::Sw),
        Just(CompareOp::Ew),
        Just(CompareOp::Gt),
        Just(CompareOp::Ge),
        Just(CompareOp::Lt),
        Just(CompareOp::Le),
    ]
}

/// Filters of sub-attributes, as inside a value path (no value path in them).
fn plain(depth: u32) -> BoxedStrategy<Filter> {
    let leaf = prop_oneof![
        path().prop_map(Filter::Present),
        (path(), op(), value()).prop_map(|(p, o, v)| Filter::Compare(p, o, v)),
    ];
    leaf.prop_recursive(depth, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|x| Filter::Not(Box::new(x))),
        ]
    })
    .boxed()
}

fn filter() -> impl Strategy<Value = Filter> {
    let leaf = prop_oneof![
        plain(3),
        (name(), plain(2)).prop_map(|(n, f)| Filter::ValuePath(
            AttrPath {
                uri: None,
                name: n,
                sub: None
            },
            Box::new(f)
        )),
    ];
    leaf.prop_recursive(4, 32, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|x| Filter::Not(Box::new(x))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn printing_and_parsing_gives_the_same_tree(f in filter()) {
        let text = f.to_string();
        prop_assert_eq!(parse_filter(&text), Ok(f), "{}", text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Any input, and inputs made of the grammar's own pieces, parse or
    /// are refused with a reason; none panics.
    #[test]
    fn any_text_parses_or_is_refused(
        text in prop_oneof![
            any::<String>(),
            prop::collection::vec(
                prop_oneof![
                    Just("("), Just(")"), Just("["), Just("]"), Just(" "), Just("\""), Just("\\"),
                    Just("not"), Just("and"), Just("or"), Just("eq"), Just("pr"), Just("a"), Just("."),
                    Just(":"), Just("1"), Just("-"), Just("e"), Just("true"), Just("é"),
                ],
                0..40,
            )
            .prop_map(|parts| parts.concat()),
        ]
    ) {
        match parse_filter(&text) {
            Ok(f) => prop_assert_eq!(parse_filter(&f.to_string()), Ok(f)),
            Err(e) => prop_assert!(!e.0.is_empty()),
        }
    }
}
