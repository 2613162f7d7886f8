//! End-to-end tests of the dataset layer through `candor dataset-info`: every reader, the presets
//! (from a fake `--data-dir` and a fake hub cache, never the network), stratified `--limit`
//! sampling, and every bad-input error (non-zero exit, message naming file, line and problem).
//!
//! Fixtures live in tests/fixtures/datasets (see its README); files that must hold invalid UTF-8 or
//! Parquet are written by the tests into temporary directories.

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/datasets/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Runs `candor dataset-info ARGS` offline, with the hub cache at `hf_home/hub`.
fn dataset_info_with_hub(args: &[&str], hf_home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_candor"))
        .arg("dataset-info")
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", hf_home)
        .output()
        .expect("run candor")
}

fn dataset_info(args: &[&str]) -> Output {
    let empty_hub = tempfile::tempdir().expect("temp dir");
    dataset_info_with_hub(args, empty_hub.path())
}

/// The JSON report of a successful run.
fn info_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let output = dataset_info(&all);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON report")
}

/// The error message of a run that must fail.
fn info_error(args: &[&str]) -> String {
    let output = dataset_info(args);
    assert!(
        !output.status.success(),
        "expected failure: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(output.status.code(), Some(1));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn label_counts(report: &Value) -> Vec<(String, u64)> {
    report["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|label| {
            (
                label["name"].as_str().expect("name").to_string(),
                label["rows"].as_u64().expect("rows"),
            )
        })
        .collect()
}

fn counts(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs
        .iter()
        .map(|(name, count)| (name.to_string(), *count))
        .collect()
}

fn ids(report: &Value) -> Vec<String> {
    report["first_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|id| id.as_str().expect("id").to_string())
        .collect()
}

/// A Parquet column for [`write_parquet`].
enum Column {
    Text(&'static str, Vec<Vec<u8>>),
    Integer(&'static str, Vec<i64>),
}

/// Writes a one-row-group, snappy-compressed Parquet file (the hub's codec).
fn write_parquet(path: &Path, columns: Vec<Column>) {
    let fields: Vec<String> = columns
        .iter()
        .map(|column| match column {
            Column::Text(name, _) => format!("REQUIRED BYTE_ARRAY {name} (UTF8);"),
            Column::Integer(name, _) => format!("REQUIRED INT64 {name};"),
        })
        .collect();
    let schema = Arc::new(
        parse_message_type(&format!("message schema {{ {} }}", fields.join(" "))).expect("schema"),
    );
    let properties = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    let file = fs::File::create(path).expect("create");
    let mut writer = SerializedFileWriter::new(file, schema, properties).expect("writer");
    let mut row_group = writer.next_row_group().expect("row group");
    for column in columns {
        let mut column_writer = row_group
            .next_column()
            .expect("column")
            .expect("a column left");
        match column {
            Column::Text(_, values) => {
                let values: Vec<ByteArray> = values.into_iter().map(ByteArray::from).collect();
                column_writer
                    .typed::<ByteArrayType>()
                    .write_batch(&values, None, None)
                    .expect("write");
            }
            Column::Integer(_, values) => {
                column_writer
                    .typed::<Int64Type>()
                    .write_batch(&values, None, None)
                    .expect("write");
            }
        }
        column_writer.close().expect("close column");
    }
    row_group.close().expect("close row group");
    writer.close().expect("close file");
}

fn texts(values: &[&str]) -> Vec<Vec<u8>> {
    values.iter().map(|text| text.as_bytes().to_vec()).collect()
}

/// Puts `file` of hub dataset `repo` into a fake hub cache under `hf_home` (hf-hub's layout:
/// `hub/datasets--owner--name/refs/main` holds a commit, the file sits under `snapshots/<commit>/`).
fn hub_cache_path(hf_home: &Path, repo: &str, file: &str) -> PathBuf {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo_dir = hf_home
        .join("hub")
        .join(format!("datasets--{}", repo.replace('/', "--")));
    fs::create_dir_all(repo_dir.join("refs")).expect("refs");
    fs::write(repo_dir.join("refs").join("main"), commit).expect("ref");
    repo_dir.join("snapshots").join(commit).join(file)
}

#[test]
fn jsonl_csv_and_tsv_give_the_same_dataset() {
    for name in ["reviews.jsonl", "reviews.csv", "reviews.tsv"] {
        let report = info_json(&["--dataset", &fixture(name), "--id-field", "id"]);
        assert_eq!(report["rows"], 6, "{name}");
        assert_eq!(report["name"], "reviews", "{name}");
        assert_eq!(
            label_counts(&report),
            counts(&[("bad", 2), ("good", 3), ("meh", 1)]),
            "{name}"
        );
        assert_eq!(ids(&report), ["r1", "r2", "r3", "r4", "r5"], "{name}");
        assert_eq!(report["origin"]["kind"], "file");
        assert_eq!(report["labels"][0]["description"], Value::Null);
    }
}

#[test]
fn default_ids_are_split_and_row_index() {
    // The blank fourth line of reviews.jsonl is not a row: rows are numbered 0..=5.
    let report = info_json(&["--dataset", &fixture("reviews.jsonl"), "--show-ids", "10"]);
    assert_eq!(
        ids(&report),
        [
            "reviews-0",
            "reviews-1",
            "reviews-2",
            "reviews-3",
            "reviews-4",
            "reviews-5"
        ]
    );
    let report = info_json(&[
        "--dataset",
        &fixture("reviews.csv"),
        "--split",
        "dev",
        "--show-ids",
        "2",
    ]);
    assert_eq!(ids(&report), ["dev-0", "dev-1"]);
}

#[test]
fn text_report_lists_counts_ids_and_descriptions() {
    let output = dataset_info(&["--dataset", "emotion", "--data-dir", &fixture("data_dir")]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("dataset  emotion (split test)"), "{text}");
    assert!(text.contains("rows     7 of 7 (all rows)"), "{text}");
    assert!(
        text.contains("  joy            2 / 2       the writer feels happy"),
        "{text}"
    );
    assert!(
        text.contains("ids      test-0, test-1, test-2, test-3, test-4, …"),
        "{text}"
    );
}

#[test]
fn stratified_limit_follows_largest_remainder() {
    // strata.jsonl: a at rows 0,2,4,6,9; b at 1,5,8; c at 3,7.
    let strata = fixture("strata.jsonl");
    let row_labels = ["a", "b", "a", "c", "a", "b", "a", "c", "b", "a"];
    // limit 4: quotas 2.0, 1.2, 0.8 → floors 2,1,0, the spare row goes to c (remainder 0.8).
    // limit 7: quotas 3.5, 2.1, 1.4 → floors 3,2,1, the spare row goes to a (remainder 0.5).
    for (limit, expected) in [
        ("4", [("a", 2), ("b", 1), ("c", 1)]),
        ("7", [("a", 4), ("b", 2), ("c", 1)]),
    ] {
        let report = info_json(&[
            "--dataset",
            &strata,
            "--limit",
            limit,
            "--seed",
            "11",
            "--show-ids",
            "10",
        ]);
        assert_eq!(label_counts(&report), counts(&expected), "limit {limit}");
        let rows: Vec<usize> = ids(&report)
            .iter()
            .map(|id| id.trim_start_matches("strata-").parse().expect("row"))
            .collect();
        assert!(
            rows.windows(2).all(|pair| pair[0] < pair[1]),
            "file order: {rows:?}"
        );
        for (name, count) in expected {
            let found = rows.iter().filter(|&&row| row_labels[row] == name).count() as u64;
            assert_eq!(found, count, "ids agree with the counts for {name}");
        }
        assert_eq!(report["rows_in_split"], 10);
    }
}

#[test]
fn limit_at_or_above_the_row_count_keeps_every_row() {
    let report = info_json(&[
        "--dataset",
        &fixture("strata.jsonl"),
        "--limit",
        "10",
        "--show-ids",
        "20",
    ]);
    assert_eq!(ids(&report).len(), 10);
    let report = info_json(&["--dataset", &fixture("strata.jsonl"), "--limit", "500"]);
    assert_eq!(report["rows"], 10);
}

#[test]
fn sampling_is_deterministic_and_depends_on_the_seed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big.jsonl");
    // 200 rows, label x on every third row (67 x, 133 y).
    let lines: Vec<String> = (0..200)
        .map(|row| {
            format!(
                r#"{{"text": "row {row}", "label": "{}"}}"#,
                if row % 3 == 0 { "x" } else { "y" }
            )
        })
        .collect();
    fs::write(&path, lines.join("\n")).expect("write");
    let path = path.to_string_lossy().into_owned();
    let sample = |seed: &str| {
        let output = dataset_info(&[
            "--dataset",
            &path,
            "--limit",
            "30",
            "--seed",
            seed,
            "--show-ids",
            "30",
            "--json",
        ]);
        assert!(output.status.success());
        output.stdout
    };
    assert_eq!(sample("5"), sample("5"), "same seed, same bytes");
    let first: Value = serde_json::from_slice(&sample("5")).expect("json");
    let second: Value = serde_json::from_slice(&sample("6")).expect("json");
    assert_ne!(ids(&first), ids(&second));
    // 30 of 200 with 67/133: quotas 10.05 and 19.95 → floors 10, 19; the spare row goes to y.
    assert_eq!(label_counts(&first), counts(&[("x", 10), ("y", 20)]));
    assert_eq!(label_counts(&second), counts(&[("x", 10), ("y", 20)]));
}

#[test]
fn presets_read_the_data_dir_layout() {
    let data_dir = fixture("data_dir");
    let report = info_json(&["--dataset", "emotion", "--data-dir", &data_dir]);
    assert_eq!(report["split"], "test");
    assert_eq!(report["origin"]["kind"], "data_dir");
    assert_eq!(
        label_counts(&report),
        counts(&[
            ("anger", 1),
            ("fear", 1),
            ("joy", 2),
            ("love", 1),
            ("sadness", 1),
            ("surprise", 1)
        ])
    );
    assert!(report["labels"][2]["description"]
        .as_str()
        .expect("description")
        .contains("happy"));
    assert!(report["task"].as_str().expect("task").contains("emotion"));

    let report = info_json(&[
        "--dataset",
        "imdb",
        "--data-dir",
        &data_dir,
        "--split",
        "train",
    ]);
    assert_eq!(
        label_counts(&report),
        counts(&[("negative", 1), ("positive", 2)])
    );

    let report = info_json(&[
        "--dataset",
        "massive",
        "--data-dir",
        &data_dir,
        "--split",
        "validation",
    ]);
    let labels = report["labels"].as_array().expect("labels");
    assert_eq!(labels.len(), 60);
    let alarm_set = labels
        .iter()
        .find(|label| label["name"] == "alarm_set")
        .expect("alarm_set");
    assert_eq!(alarm_set["rows"], 1);
    assert!(alarm_set["description"]
        .as_str()
        .expect("description")
        .contains("set an alarm"));
}

#[test]
fn a_preset_split_missing_offline_says_what_was_looked_for() {
    let data_dir = fixture("data_dir");
    let error = info_error(&["--dataset", "imdb", "--data-dir", &data_dir]);
    assert!(
        error.contains("cannot find split 'test' of preset 'imdb'"),
        "{error}"
    );
    assert!(
        error.contains("data_dir/imdb/test.jsonl does not exist"),
        "{error}"
    );
    assert!(
        error.contains(
            "'plain_text/test-00000-of-00001.parquet' of dataset repository 'stanfordnlp/imdb'"
        ),
        "{error}"
    );
    assert!(error.contains("HF_HUB_OFFLINE is set"), "{error}");
    assert!(error.contains("DIR/imdb/test.jsonl"), "{error}");

    let error = info_error(&["--dataset", "massive", "--split", "train"]);
    assert!(error.contains("no --data-dir was given"), "{error}");
    assert!(
        error.contains("'train.jsonl' of dataset repository 'SetFit/amazon_massive_intent_en-US'"),
        "{error}"
    );
}

#[test]
fn hub_cache_parquet_with_integer_labels_uses_the_preset_mapping() {
    let hf_home = tempfile::tempdir().expect("temp dir");
    let file = hub_cache_path(
        hf_home.path(),
        "dair-ai/emotion",
        "split/validation-00000-of-00001.parquet",
    );
    // Card order: 0 sadness, 1 joy, 2 love, 3 anger, 4 fear, 5 surprise.
    write_parquet(
        &file,
        vec![
            Column::Text(
                "text",
                texts(&["so sad", "so happy", "so happy again", "so angry", "wow"]),
            ),
            Column::Integer("label", vec![0, 1, 1, 3, 5]),
        ],
    );
    let output = dataset_info_with_hub(
        &["--dataset", "emotion", "--split", "validation", "--json"],
        hf_home.path(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["origin"]["kind"], "hub");
    assert_eq!(report["origin"]["repo"], "dair-ai/emotion");
    assert_eq!(
        label_counts(&report),
        counts(&[
            ("anger", 1),
            ("fear", 0),
            ("joy", 2),
            ("love", 0),
            ("sadness", 1),
            ("surprise", 1)
        ])
    );
    assert_eq!(
        ids(&report),
        [
            "validation-0",
            "validation-1",
            "validation-2",
            "validation-3",
            "validation-4"
        ]
    );
}

#[test]
fn hub_cache_parquet_with_an_out_of_range_label_fails_at_its_row() {
    let hf_home = tempfile::tempdir().expect("temp dir");
    let file = hub_cache_path(
        hf_home.path(),
        "stanfordnlp/imdb",
        "plain_text/test-00000-of-00001.parquet",
    );
    write_parquet(
        &file,
        vec![
            Column::Text("text", texts(&["good", "bad", "odd"])),
            Column::Integer("label", vec![1, 0, 2]),
        ],
    );
    let output = dataset_info_with_hub(&["--dataset", "imdb"], hf_home.path());
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("test-00000-of-00001.parquet, row index 2: integer label 2 is out of range for imdb (valid: 0 = negative, 1 = positive)"),
        "{error}"
    );
}

#[test]
fn parquet_files_read_with_ids_and_string_labels() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tiny.parquet");
    write_parquet(
        &path,
        vec![
            Column::Integer("id", vec![10, 20, 30]),
            Column::Text("review", texts(&["great", "awful", "fine"])),
            Column::Text("sentiment", texts(&["pos", "neg", "pos"])),
        ],
    );
    let path = path.to_string_lossy().into_owned();
    let report = info_json(&[
        "--dataset",
        &path,
        "--text-field",
        "review",
        "--label-field",
        "sentiment",
        "--id-field",
        "id",
    ]);
    assert_eq!(ids(&report), ["10", "20", "30"]);
    assert_eq!(label_counts(&report), counts(&[("neg", 1), ("pos", 2)]));

    let error = info_error(&["--dataset", &path]);
    assert!(
        error.contains("tiny.parquet: missing field 'text' (columns: id, review, sentiment)"),
        "{error}"
    );
}

#[test]
fn parquet_invalid_utf8_names_the_row() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken.parquet");
    write_parquet(
        &path,
        vec![
            Column::Text("text", vec![b"fine".to_vec(), vec![b'b', 0xff, b'd']]),
            Column::Text("label", texts(&["x", "y"])),
        ],
    );
    let error = info_error(&["--dataset", &path.to_string_lossy()]);
    assert!(
        error.contains("broken.parquet, row index 1: invalid UTF-8"),
        "{error}"
    );
}

#[test]
fn invalid_utf8_in_jsonl_and_csv_names_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let jsonl = dir.path().join("bytes.jsonl");
    fs::write(
        &jsonl,
        b"{\"text\": \"ok\", \"label\": \"x\"}\n{\"text\": \"caf\xe9\", \"label\": \"x\"}\n",
    )
    .expect("write");
    let error = info_error(&["--dataset", &jsonl.to_string_lossy()]);
    assert!(
        error.contains("bytes.jsonl, line 2: invalid UTF-8"),
        "{error}"
    );

    let csv = dir.path().join("bytes.csv");
    fs::write(&csv, b"text,label\nok,x\ncaf\xe9,y\n").expect("write");
    let error = info_error(&["--dataset", &csv.to_string_lossy()]);
    assert!(
        error.contains("bytes.csv, line 3: invalid UTF-8 in field 'text'"),
        "{error}"
    );
}

#[test]
fn bad_files_fail_with_file_line_and_problem() {
    let cases: [(&str, &[&str], &str); 7] = [
        ("missing label field", &["--dataset", &fixture("bad/missing_label.jsonl")], "missing_label.jsonl, line 3: missing field 'label'"),
        ("missing CSV column", &["--dataset", &fixture("bad/missing_field.csv")], "missing_field.csv, line 1: missing field 'label' in the header (columns: text, category)"),
        ("empty text", &["--dataset", &fixture("bad/empty_text.jsonl")], "empty_text.jsonl, line 2: empty text"),
        ("empty file", &["--dataset", &fixture("bad/empty.jsonl")], "empty.jsonl: the file is empty (no rows)"),
        ("unknown extension", &["--dataset", &fixture("bad/reviews.txt")], "reviews.txt: unknown extension '.txt': expected .jsonl, .ndjson, .csv, .tsv or .parquet"),
        ("duplicate ids", &["--dataset", &fixture("bad/duplicate_ids.csv"), "--id-field", "id"], "duplicate_ids.csv, line 4: duplicate id 'a' (first at line 2)"),
        ("not an object", &["--dataset", &fixture("bad/not_an_object.jsonl")], "not_an_object.jsonl, line 2: expected a JSON object, found an array"),
    ];
    for (case, args, expected) in cases {
        let error = info_error(args);
        assert!(error.contains(expected), "{case}: {error}");
    }
}

#[test]
fn label_outside_the_preset_lists_the_valid_labels() {
    let error = info_error(&[
        "--dataset",
        "emotion",
        "--data-dir",
        &fixture("bad_data_dir"),
    ]);
    assert!(
        error.contains("emotion/test.jsonl, line 2: label 'happiness' is not a label of emotion (valid: anger, fear, joy, love, sadness, surprise)"),
        "{error}"
    );
}

#[test]
fn a_csv_with_only_a_header_is_empty() {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("header.csv");
    fs::write(&csv, "text,label\n").expect("write");
    let error = info_error(&["--dataset", &csv.to_string_lossy()]);
    assert!(
        error.contains("header.csv: the file is empty (no rows)"),
        "{error}"
    );
}

#[test]
fn bad_specs_and_options_are_explained() {
    let error = info_error(&["--dataset", "emotions"]);
    assert!(
        error.contains("unknown dataset preset 'emotions' (presets: emotion, imdb, massive)"),
        "{error}"
    );
    let error = info_error(&["--dataset", "nowhere/reviews.jsonl"]);
    assert!(
        error.contains("nowhere/reviews.jsonl: no such file"),
        "{error}"
    );
    let error = info_error(&["--dataset", &fixture("data_dir")]);
    assert!(
        error.contains(
            "data_dir is a directory: give a data file, or a preset name with --data-dir"
        ),
        "{error}"
    );
    let error = info_error(&["--dataset", "imdb", "--split", "validation"]);
    assert!(
        error.contains("preset 'imdb' has no split 'validation' (splits: train, test)"),
        "{error}"
    );
    let error = info_error(&["--dataset", &fixture("reviews.jsonl"), "--limit", "0"]);
    assert!(error.contains("--limit must be at least 1"), "{error}");
}

#[test]
fn max_words_counts_the_texts_a_word_budget_would_cut() {
    // Word counts of reviews.jsonl: 9, 6, 5, 8, 7, 7 → five exceed 5 words.
    let report = info_json(&["--dataset", &fixture("reviews.jsonl"), "--max-words", "5"]);
    assert_eq!(report["truncation"]["truncated"], 5);
    let report = info_json(&["--dataset", &fixture("reviews.jsonl"), "--max-words", "9"]);
    assert_eq!(report["truncation"]["truncated"], 0);
}
