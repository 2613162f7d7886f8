//! Fuzz target of this crate (driver: tests/support/fuzz.rs; `scripts/fuzz.sh SECONDS`): the
//! verbalized parser on any text returns a status, never panics.

#[path = "../../../tests/support/fuzz.rs"]
mod driver;

use crate::verbalized::VerbalizedParser;

#[test]
fn fuzz_verbalized_parser() {
    let parser = VerbalizedParser::new(&["joy", "sadness", "anger", "fear"]).unwrap();
    let seeds = [
        r#"{"joy": 0.7, "sadness": 0.2, "anger": 0.05, "fear": 0.05}"#,
        "joy: 70%, sadness: 20%, anger 5%, fear 5%",
        "```json\n{\"joy\": 1e-3, \"Sadness\": \"0.9\", \"anger\": null}\n```",
        "The answer is joy (confidence 0.8).",
    ];
    driver::fuzz("verbalized_parser", seeds.iter().map(|s| s.as_bytes().to_vec()).collect(), |bytes| {
        let parsed = parser.parse(&String::from_utf8_lossy(bytes));
        if let Some(p) = &parsed.probabilities {
            assert!(p.iter().all(|x| x.is_finite() && *x >= 0.0), "{parsed:?}");
        }
    });
}
