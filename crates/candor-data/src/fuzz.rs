//! Fuzz targets of this crate (driver: tests/support/fuzz.rs; `scripts/fuzz.sh SECONDS`): each
//! dataset reader (JSONL, CSV, TSV, Parquet) on any file content returns rows or an error,
//! never panics.

#[path = "../../../tests/support/fuzz.rs"]
mod driver;

use crate::readers::{read_rows, FieldNames};

/// Writes `bytes` to a file named `name` and reads it.
fn read(name: &str, bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let fields = FieldNames { text: "text".into(), label: "label".into(), id: Some("id".into()) };
    let _ = read_rows(&path, &fields);
}

fn seeds(texts: &[&str]) -> Vec<Vec<u8>> {
    texts.iter().map(|t| t.as_bytes().to_vec()).collect()
}

#[test]
fn fuzz_jsonl_reader() {
    let seeds = seeds(&[
        "{\"id\": \"a\", \"text\": \"I won!\", \"label\": \"joy\"}\n{\"id\": \"b\", \"text\": \"Lost.\", \"label\": 3}\n",
        "\u{feff}{\"text\": \"x\", \"label\": [\"y\"]}\r\n\r\n{\"text\": null}",
    ]);
    driver::fuzz("jsonl_reader", seeds, |bytes| read("data.jsonl", bytes));
}

#[test]
fn fuzz_csv_reader() {
    let seeds = seeds(&["id,text,label\na,\"I won, at last\",joy\nb,\"multi\nline\",sadness\n", "text,label\n\"unterminated,joy\n"]);
    driver::fuzz("csv_reader", seeds, |bytes| read("data.csv", bytes));
}

#[test]
fn fuzz_tsv_reader() {
    let seeds = seeds(&["id\ttext\tlabel\na\tI won\tjoy\nb\tLost\t\n", "text\tlabel\n\t\t\t\n"]);
    driver::fuzz("tsv_reader", seeds, |bytes| read("data.tsv", bytes));
}

#[test]
fn fuzz_parquet_reader() {
    // The magic, a footer length and the magic again: the reader gets as far as the footer.
    let mut footer = b"PAR1".to_vec();
    footer.extend([0x15, 0x04, 0x15, 0x00, 0x00]);
    footer.extend(5u32.to_le_bytes());
    footer.extend(b"PAR1");
    driver::fuzz("parquet_reader", vec![footer, b"PAR1PAR1".to_vec()], |bytes| read("data.parquet", bytes));
}
