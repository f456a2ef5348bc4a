//! Property tests of the edge: whatever bytes arrive, parsing a body never panics, and its
//! answer is either a typed part that survives a round trip or a 400 that names a real field.

use order::Order;
use proptest::prelude::*;
use serde_json::{json, Value};
use shared::http::ApiError;
use shared::service::parse_part;

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("payment".to_string()),
                    Just("amount".to_string()),
                    Just("shipment".to_string()),
                    Just("items".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Orders that are valid by construction.
fn valid_order() -> impl Strategy<Value = Value> {
    (
        "[A-Za-z0-9][A-Za-z0-9 _-]{0,40}",
        0.0f64..1e12,
        "[a-z0-9]{1,20}",
        "[A-Za-z0-9][A-Za-z0-9 ,.-]{0,29}",
        prop::collection::vec(
            prop::collection::btree_map("[a-z]{1,6}", any_json(), 0..4),
            0..4,
        ),
    )
        .prop_map(|(id, amount, sid, directions, items)| {
            let items: Vec<Value> = items
                .into_iter()
                .map(|m| Value::Object(m.into_iter().collect()))
                .collect();
            json!({
                "id": id,
                "items": items,
                "payment": {"amount": amount, "id": id,
                            "shipment": {"id": sid, "directions": directions}}
            })
        })
}

/// The field a 400 names exists in the body up to its parent (a missing field's parent does).
fn names_a_real_place(body: &Value, field: &str) -> bool {
    let parts: Vec<&str> = field.split('.').filter(|p| !p.is_empty()).collect();
    let mut at = body;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let next = match at {
            Value::Object(m) => m.get(*part),
            Value::Array(a) => part.parse::<usize>().ok().and_then(|n| a.get(n)),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return last,
        }
    }
    true
}

proptest! {
    // Seeded from the test name, so CI is repeatable; no regression files next to the tests.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic_and_fail_as_a_400(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        match parse_part::<Order>(&bytes) {
            Ok((_, canonical)) => prop_assert!(canonical.is_object()),
            Err(e) => prop_assert_eq!(e.status().as_u16(), 400, "{}", e),
        }
    }

    #[test]
    fn arbitrary_json_is_accepted_or_refused_naming_a_real_field(body in any_json()) {
        let bytes = serde_json::to_vec(&body).expect("a Value serializes");
        match parse_part::<Order>(&bytes) {
            Ok((_, canonical)) => prop_assert!(canonical.is_object()),
            Err(ApiError::BadRequest { field: Some(field), .. }) => {
                prop_assert!(names_a_real_place(&body, &field), "{} in {}", field, body)
            }
            Err(e) => prop_assert_eq!(e.status().as_u16(), 400, "{}", e),
        }
    }

    #[test]
    fn valid_orders_parse_and_their_canonical_form_is_a_fixed_point(body in valid_order()) {
        let bytes = serde_json::to_vec(&body).expect("a Value serializes");
        let (order, canonical) = parse_part::<Order>(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(order.id.as_str(), body["id"].as_str().unwrap_or_default());
        let again = serde_json::to_vec(&canonical).expect("a Value serializes");
        let (_, twice) = parse_part::<Order>(&again).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(canonical, twice);
    }
}
