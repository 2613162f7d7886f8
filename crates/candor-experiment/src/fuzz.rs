//! Fuzz targets of this crate (driver: tests/support/fuzz.rs; `scripts/fuzz.sh SECONDS`): the
//! eval input reader, the manifest parser and the predictions reader on any bytes return a
//! value or an error, never panic.

#[path = "../../../tests/support/fuzz.rs"]
mod driver;

use crate::eval::input::InputFile;
use crate::run::manifest::Manifest;
use crate::run::predictions::{complete_lines, read_keys};

#[test]
fn fuzz_eval_input_reader() {
    let seeds = [
        "{\"label\": \"a\", \"probs\": {\"a\": 0.7, \"b\": 0.3}}\n{\"label\": \"b\", \"logits\": {\"a\": -1, \"b\": 2e3}}\n",
        "\u{feff}{\"label\": \"a\", \"text\": \"{\\\"a\\\": 1}\"}\r\n",
    ];
    driver::fuzz("eval_input_reader", seeds.iter().map(|s| s.as_bytes().to_vec()).collect(), |bytes| {
        if let Ok(input) = InputFile::from_reader("in.jsonl", std::io::Cursor::new(bytes)) {
            let _ = input.label_set(None);
        }
    });
}

#[test]
fn fuzz_manifest_parser() {
    let seed = include_str!("../tests/fixtures/manifest.json");
    driver::fuzz("manifest_parser", vec![seed.as_bytes().to_vec()], |bytes| {
        let _ = serde_json::from_slice::<Manifest>(bytes);
    });
}

#[test]
fn fuzz_predictions_reader() {
    let seeds = [
        "{\"index\":0,\"id\":\"t-0\",\"gold\":\"joy\",\"gold_index\":2,\"truncated\":false,\"elapsed_ms\":5}\n{\"index\":1,\"id\":\"t-1\"",
        "{\"index\":18446744073709551615,\"id\":\"\"}\n\n",
    ];
    driver::fuzz("predictions_reader", seeds.iter().map(|s| s.as_bytes().to_vec()).collect(), |bytes| {
        let _ = read_keys(bytes, std::path::Path::new("predictions.jsonl"));
        let _ = complete_lines(bytes).count();
    });
}
