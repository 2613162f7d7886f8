//! Fuzz-style properties of verbalized parsing: it never panics on arbitrary text or bytes, every
//! parsed distribution is a valid one, and a distribution written as JSON or as a Python dict
//! parses back to itself.

use candor_calib::verbalized::{ParseStatus, ValueScale, VerbalizedDistribution, VerbalizedParser};
use proptest::prelude::*;

const LABELS: [&str; 4] = ["joy", "sadness", "very_angry", "fear"];

fn parser() -> VerbalizedParser {
    VerbalizedParser::new(&LABELS).unwrap()
}

/// Whatever the input, the output is internally consistent.
fn assert_consistent(d: &VerbalizedDistribution) {
    assert_eq!(d.raw_values.len(), LABELS.len());
    match (&d.status, &d.probabilities) {
        (ParseStatus::Unparseable { reason }, None) => assert!(!reason.is_empty()),
        (ParseStatus::Unparseable { .. }, Some(_)) => panic!("unparseable with a distribution"),
        (status, Some(p)) => {
            assert_eq!(p.len(), LABELS.len());
            assert!(
                p.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)),
                "{p:?}"
            );
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{p:?}");
            if let ParseStatus::Partial { missing } = status {
                assert!(!missing.is_empty());
            }
        }
        (status, None) => panic!("{status:?} without a distribution"),
    }
}

/// A dict-like string assembled from label names (in assorted spellings), numbers and junk.
fn dict_like() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("joy".to_string()),
        Just("Sadness".to_string()),
        Just("very angry".to_string()),
        Just("VERY_ANGRY".to_string()),
        Just(" fear ".to_string()),
        "[a-z ]{0,6}",
    ];
    let number = prop_oneof![
        (0.0f64..1.0).prop_map(|v| v.to_string()),
        (0u32..150).prop_map(|v| v.to_string()),
        (0u32..150).prop_map(|v| format!("{v}%")),
        (-1.0f64..2.0).prop_map(|v| format!("{v:e}")),
        Just("nan".to_string()),
        Just("None".to_string()),
        "[0-9.%eE+-]{0,5}",
    ];
    let quote = prop_oneof![Just(""), Just("'"), Just("\"")];
    let entry = (quote.clone(), key, quote, number)
        .prop_map(|(q, k, vq, v)| format!("{q}{k}{q}: {vq}{v}{vq}"));
    (
        "[ -~\n]{0,8}",
        prop::collection::vec(entry, 0..7),
        prop::bool::ANY,
        "[ -~\n]{0,8}",
    )
        .prop_map(|(before, entries, close, after)| {
            format!(
                "{before}{{{}{}{after}",
                entries.join(", "),
                if close { "}" } else { "" }
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_on_arbitrary_strings(text in any::<String>()) {
        assert_consistent(&parser().parse(&text));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        assert_consistent(&parser().parse(&text));
    }

    #[test]
    fn never_panics_on_brace_heavy_text(text in "[{}'\":,% 0-9a-z\\[\\]\\\\]{0,200}") {
        assert_consistent(&parser().parse(&text));
    }

    #[test]
    fn dict_like_strings_parse_consistently(text in dict_like()) {
        assert_consistent(&parser().parse(&text));
    }

    #[test]
    fn json_round_trip(weights in prop::collection::vec(0.0f64..1.0, LABELS.len()), pretty in prop::bool::ANY) {
        let total: f64 = weights.iter().sum();
        prop_assume!(total > 1e-6);
        let p: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let map: serde_json::Map<String, serde_json::Value> =
            LABELS.iter().zip(&p).map(|(l, v)| (l.to_string(), serde_json::json!(v))).collect();
        let json = if pretty {
            serde_json::to_string_pretty(&map).unwrap()
        } else {
            serde_json::to_string(&map).unwrap()
        };
        let d = parser().parse(&format!("Here you go:\n```json\n{json}\n```"));
        prop_assert_eq!(&d.status, &ParseStatus::Ok);
        let back = d.probabilities.unwrap();
        for (a, b) in back.iter().zip(&p) {
            prop_assert!((a - b).abs() <= 1e-12, "{back:?} vs {p:?}");
        }
    }

    #[test]
    fn python_dict_round_trip(weights in prop::collection::vec(0.001f64..1.0, LABELS.len())) {
        let total: f64 = weights.iter().sum();
        let p: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let body: Vec<String> = LABELS.iter().zip(&p).map(|(l, v)| format!("'{}': {v:?}", l.to_uppercase())).collect();
        let d = parser().parse(&format!("{{{}}}", body.join(", ")));
        prop_assert_eq!(&d.status, &ParseStatus::Ok);
        prop_assert_eq!(d.scale, Some(ValueScale::Fraction));
        let back = d.probabilities.unwrap();
        for (a, b) in back.iter().zip(&p) {
            prop_assert!((a - b).abs() <= 1e-12);
        }
    }
}

#[test]
fn realistic_small_model_outputs() {
    let cases: &[(&str, &str, [f64; 4])] = &[
        (
            "The most likely label is joy, with high confidence.\n{'joy': 0.85, 'sadness': 0.05, 'very angry': 0.05, 'fear': 0.05}",
            "ok",
            [0.85, 0.05, 0.05, 0.05],
        ),
        (
            "```json\n{\n  \"Joy\": \"40%\",\n  \"Sadness\": \"40%\",\n  \"Very_Angry\": \"10%\",\n  \"Fear\": \"10%\"\n}\n```",
            "ok",
            [0.4, 0.4, 0.1, 0.1],
        ),
        ("{joy: 0.5, sadness: 0.5, very angry: 0.5, fear: 0.5}", "renormalized", [0.25; 4]),
        ("{\"joy\": 0.9, \"fear\": 0.1, \"surprise\": 0.0}", "partial", [0.9, 0.0, 0.0, 0.1]),
    ];
    for (text, status, expected) in cases {
        let d = parser().parse(text);
        assert_eq!(d.status.code(), *status, "{text}");
        let p = d.probabilities.unwrap();
        assert!(
            p.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-12),
            "{text}: {p:?}"
        );
    }
    assert_eq!(
        parser().parse("I cannot answer that.").status.code(),
        "unparseable"
    );
}
