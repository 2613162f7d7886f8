//! Readers that turn a JSONL, CSV, TSV or Parquet file into raw rows (text, label, optional id),
//! each tagged with where it came from so that every later error can name the file and line.
//!
//! The format is chosen by the file extension. Rules shared by all formats:
//! - a row is a JSONL line that is not blank, a CSV/TSV record after the header, or a Parquet row;
//!   `RawRow::index` counts rows from 0 in file order (blank JSONL lines are not rows);
//! - the text must be a string; the label a string or an integer; the id a string or an integer;
//! - a missing field, a value of another type, a null and invalid UTF-8 are errors, never skipped.
//!
//! TSV is read without quoting (fields cannot contain tabs or newlines), so quotes in texts are
//! kept as they are; CSV follows RFC 4180 quoting.

use crate::error::{bail, Context, DataError, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;
use serde_json::Value;
use std::fmt;
use std::fs::File;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

/// The file formats Candor reads, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// One JSON object per line (`.jsonl`, `.ndjson`).
    Jsonl,
    /// Comma-separated values with a header line (`.csv`).
    Csv,
    /// Tab-separated values with a header line, no quoting (`.tsv`).
    Tsv,
    /// Apache Parquet (`.parquet`).
    Parquet,
}

impl FileFormat {
    /// Chooses the format from `path`'s extension (case-insensitive).
    pub fn from_path(path: &Path) -> Result<Self> {
        let extension = path
            .extension()
            .and_then(|ext| ext.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("jsonl" | "ndjson") => Ok(Self::Jsonl),
            Some("csv") => Ok(Self::Csv),
            Some("tsv") => Ok(Self::Tsv),
            Some("parquet") => Ok(Self::Parquet),
            other => bail!(
                "{}: unknown extension {}: expected .jsonl, .ndjson, .csv, .tsv or .parquet",
                path.display(),
                other.map_or_else(|| "(none)".to_string(), |ext| format!("'.{ext}'"))
            ),
        }
    }
}

/// Names of the fields (JSON keys, CSV header columns, Parquet columns) to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldNames {
    /// Field holding the text to classify.
    pub text: String,
    /// Field holding the label.
    pub label: String,
    /// Field holding a unique example id; `None` derives ids from row positions.
    pub id: Option<String>,
}

/// Where a row is in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A 1-based line number (JSONL line; for CSV/TSV the line where the record starts).
    Line(u64),
    /// A 0-based Parquet row index.
    ParquetRow(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line(line) => write!(f, "line {line}"),
            Self::ParquetRow(row) => write!(f, "row index {row}"),
        }
    }
}

/// A label value as stored in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawLabel {
    /// A string label.
    Text(String),
    /// An integer label (JSON number, Parquet integer column).
    Integer(i64),
}

/// One row of a file, before labels are checked against a label set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    /// 0-based row index in file order.
    pub index: usize,
    /// Where the row is, for error messages.
    pub location: Location,
    /// The id field's value, when an id field was requested.
    pub id: Option<String>,
    /// The text field's value.
    pub text: String,
    /// The label field's value.
    pub label: RawLabel,
}

/// Builds the error for a problem at `location` of `path`.
pub fn row_error(path: &Path, location: Location, problem: impl fmt::Display) -> DataError {
    DataError::Invalid(format!("{}, {location}: {problem}", path.display()))
}

/// Reads every row of `path` in file order; errors on an empty file.
pub fn read_rows(path: &Path, fields: &FieldNames) -> Result<Vec<RawRow>> {
    let rows = match FileFormat::from_path(path)? {
        FileFormat::Jsonl => read_jsonl(path, fields)?,
        FileFormat::Csv => read_delimited(path, fields, b',')?,
        FileFormat::Tsv => read_delimited(path, fields, b'\t')?,
        FileFormat::Parquet => read_parquet(path, fields)?,
    };
    if rows.is_empty() {
        bail!("{}: the file is empty (no rows)", path.display());
    }
    Ok(rows)
}

/// The UTF-8 byte order mark, ignored at the start of a JSONL file.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Longest line (or CSV/TSV record, or Parquet text) a dataset may have: a whole book fits
/// many times over; a larger one is an error naming it, not an allocation of its size.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// The next line of `reader` without its `\n` (`None` at the end of the input), read at most
/// [`MAX_LINE_BYTES`] at a time; `Err(())` when the line is longer.
pub fn read_bounded_line(reader: &mut impl BufRead, buffer: &mut Vec<u8>) -> std::io::Result<Option<std::result::Result<(), ()>>> {
    buffer.clear();
    let read = std::io::Read::take(&mut *reader, MAX_LINE_BYTES as u64 + 1).read_until(b'\n', buffer)?;
    if read == 0 {
        return Ok(None);
    }
    if buffer.last() == Some(&b'\n') {
        buffer.pop();
    } else if buffer.len() > MAX_LINE_BYTES {
        return Ok(Some(Err(())));
    }
    Ok(Some(Ok(())))
}

fn read_jsonl(path: &Path, fields: &FieldNames) -> Result<Vec<RawRow>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = std::io::BufReader::new(file);
    let mut rows = Vec::new();
    let mut buffer = Vec::new();
    let mut line_index = 0u64;
    while let Some(fits) = read_bounded_line(&mut reader, &mut buffer).with_context(|| format!("cannot read {}", path.display()))? {
        line_index += 1;
        let location = Location::Line(line_index);
        if fits.is_err() {
            return Err(row_error(path, location, format!("line longer than {MAX_LINE_BYTES} bytes")));
        }
        let line = match line_index {
            1 => buffer.strip_prefix(UTF8_BOM).unwrap_or(&buffer),
            _ => &buffer[..],
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line = std::str::from_utf8(line).map_err(|error| {
            row_error(
                path,
                location,
                format!(
                    "invalid UTF-8 (at byte {} of the line)",
                    error.valid_up_to()
                ),
            )
        })?;
        let object = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(object)) => object,
            Ok(other) => {
                return Err(row_error(
                    path,
                    location,
                    format!("expected a JSON object, found {}", json_kind(&other)),
                ))
            }
            Err(error) => return Err(row_error(path, location, format!("invalid JSON: {error}"))),
        };
        let mut object = object;
        let mut take = |name: &str| {
            object
                .remove(name)
                .ok_or_else(|| row_error(path, location, format!("missing field '{name}'")))
        };
        let text = json_text(take(&fields.text)?, &fields.text)
            .map_err(|p| row_error(path, location, p))?;
        let label = json_label(take(&fields.label)?, &fields.label)
            .map_err(|p| row_error(path, location, p))?;
        let id = match &fields.id {
            Some(name) => {
                Some(json_id(take(name)?, name).map_err(|p| row_error(path, location, p))?)
            }
            None => None,
        };
        rows.push(RawRow {
            index: rows.len(),
            location,
            id,
            text,
            label,
        });
    }
    Ok(rows)
}

/// How a JSON value is named in error messages ("a string", "an object", ...).
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn json_text(value: Value, name: &str) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text),
        other => Err(format!(
            "field '{name}' must be a string, found {}",
            json_kind(&other)
        )),
    }
}

fn json_label(value: Value, name: &str) -> Result<RawLabel, String> {
    match value {
        Value::String(label) => Ok(RawLabel::Text(label)),
        Value::Number(number) if number.is_i64() => {
            Ok(RawLabel::Integer(number.as_i64().unwrap_or_default()))
        }
        Value::Number(number) => Err(format!(
            "field '{name}' must be a string or an integer, found the number {number}"
        )),
        other => Err(format!(
            "field '{name}' must be a string or an integer, found {}",
            json_kind(&other)
        )),
    }
}

fn json_id(value: Value, name: &str) -> Result<String, String> {
    match value {
        Value::String(id) => Ok(id),
        Value::Number(number) if number.is_i64() || number.is_u64() => Ok(number.to_string()),
        other => Err(format!(
            "field '{name}' must be a string or an integer, found {}",
            json_kind(&other)
        )),
    }
}

/// A reader that fails once a line (bytes between two `\n`) grows past [`MAX_LINE_BYTES`], so
/// the CSV reader never buffers a record of unbounded size.
struct BoundedLines<R> {
    inner: R,
    run: usize,
}

impl<R: std::io::Read> std::io::Read for BoundedLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        for &byte in &buf[..read] {
            self.run = if byte == b'\n' { 0 } else { self.run + 1 };
            if self.run > MAX_LINE_BYTES {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a line longer than {MAX_LINE_BYTES} bytes")));
            }
        }
        Ok(read)
    }
}

fn read_delimited(path: &Path, fields: &FieldNames, delimiter: u8) -> Result<Vec<RawRow>> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .quoting(delimiter != b'\t')
        .has_headers(true)
        .from_reader(BoundedLines { inner: file, run: 0 });
    let header_location = Location::Line(1);
    let headers = reader
        .byte_headers()
        .map_err(|error| {
            row_error(
                path,
                header_location,
                format!("cannot read the header: {error}"),
            )
        })?
        .clone();
    let columns = headers
        .iter()
        .map(|name| {
            std::str::from_utf8(name)
                .map(str::to_owned)
                .map_err(|_| row_error(path, header_location, "invalid UTF-8 in the header"))
        })
        .collect::<Result<Vec<String>>>()?;
    let column = |name: &str| {
        columns
            .iter()
            .position(|column| column == name)
            .ok_or_else(|| {
                row_error(
                    path,
                    header_location,
                    format!(
                        "missing field '{name}' in the header (columns: {})",
                        columns.join(", ")
                    ),
                )
            })
    };
    let text_column = column(&fields.text)?;
    let label_column = column(&fields.label)?;
    let id_column = fields.id.as_deref().map(column).transpose()?;

    let mut rows = Vec::new();
    for record in reader.byte_records() {
        let record = record.map_err(|error| {
            let location = error
                .position()
                .map_or(Location::Line(0), |pos| Location::Line(pos.line()));
            row_error(path, location, format!("malformed record: {error}"))
        })?;
        let location = Location::Line(record.position().map_or(0, |pos| pos.line()));
        let field = |index: usize| -> Result<String> {
            let bytes = record.get(index).unwrap_or_default();
            std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|error| {
                    row_error(
                        path,
                        location,
                        format!(
                            "invalid UTF-8 in field '{}' (at byte {})",
                            columns[index],
                            error.valid_up_to()
                        ),
                    )
                })
        };
        let text = field(text_column)?;
        let label = RawLabel::Text(field(label_column)?);
        let id = id_column.map(field).transpose()?;
        rows.push(RawRow {
            index: rows.len(),
            location,
            id,
            text,
            label,
        });
    }
    Ok(rows)
}

fn read_parquet(path: &Path, fields: &FieldNames) -> Result<Vec<RawRow>> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let reader = SerializedFileReader::new(file)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let top_level = schema.root_schema().get_fields();
    let wanted: Vec<&str> = [
        Some(fields.text.as_str()),
        Some(fields.label.as_str()),
        fields.id.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut projected: Vec<Arc<Type>> = Vec::new();
    for name in &wanted {
        let column = top_level
            .iter()
            .find(|field| field.name() == *name)
            .ok_or_else(|| {
                let names: Vec<&str> = top_level.iter().map(|field| field.name()).collect();
                DataError::Invalid(format!(
                    "{}: missing field '{name}' (columns: {})",
                    path.display(),
                    names.join(", ")
                ))
            })?;
        if !projected.iter().any(|field| field.name() == *name) {
            projected.push(column.clone());
        }
    }
    let projection = Type::group_type_builder(schema.root_schema().name())
        .with_fields(projected)
        .build()
        .with_context(|| format!("{}: cannot select the columns {wanted:?}", path.display()))?;
    let row_iter = reader
        .get_row_iter(Some(projection))
        .with_context(|| format!("{}: cannot read rows", path.display()))?;

    let mut rows = Vec::new();
    for (index, row) in row_iter.enumerate() {
        let location = Location::ParquetRow(index);
        let row =
            row.map_err(|error| row_error(path, location, parquet_problem(&error.to_string())))?;
        let value = |name: &str| -> Result<&Field> {
            row.get_column_iter()
                .find(|(column, _)| column.as_str() == name)
                .map(|(_, field)| field)
                .ok_or_else(|| row_error(path, location, format!("missing field '{name}'")))
        };
        let text = parquet_text(value(&fields.text)?, &fields.text)
            .map_err(|p| row_error(path, location, p))?;
        let label = parquet_label(value(&fields.label)?, &fields.label)
            .map_err(|p| row_error(path, location, p))?;
        let id = match &fields.id {
            Some(name) => {
                Some(parquet_id(value(name)?, name).map_err(|p| row_error(path, location, p))?)
            }
            None => None,
        };
        rows.push(RawRow {
            index,
            location,
            id,
            text,
            label,
        });
    }
    Ok(rows)
}

/// Rewords the parquet crate's row errors; its UTF-8 error dumps every byte of the value, so only
/// the problem is kept.
fn parquet_problem(message: &str) -> String {
    if message.contains("as String") {
        "invalid UTF-8 in a string column".to_string()
    } else {
        format!("cannot decode the row: {message}")
    }
}

fn parquet_kind(field: &Field) -> String {
    match field {
        Field::Null => "null".to_string(),
        other => format!("the value {other}"),
    }
}

fn parquet_text(field: &Field, name: &str) -> Result<String, String> {
    match field {
        Field::Str(text) => Ok(text.clone()),
        Field::Bytes(bytes) => std::str::from_utf8(bytes.data())
            .map(str::to_owned)
            .map_err(|error| {
                format!(
                    "invalid UTF-8 in field '{name}' (at byte {})",
                    error.valid_up_to()
                )
            }),
        other => Err(format!(
            "field '{name}' must be a string, found {}",
            parquet_kind(other)
        )),
    }
}

fn parquet_integer(field: &Field) -> Option<i64> {
    match *field {
        Field::Byte(value) => Some(i64::from(value)),
        Field::Short(value) => Some(i64::from(value)),
        Field::Int(value) => Some(i64::from(value)),
        Field::Long(value) => Some(value),
        Field::UByte(value) => Some(i64::from(value)),
        Field::UShort(value) => Some(i64::from(value)),
        Field::UInt(value) => Some(i64::from(value)),
        Field::ULong(value) => i64::try_from(value).ok(),
        _ => None,
    }
}

fn parquet_label(field: &Field, name: &str) -> Result<RawLabel, String> {
    if let Some(integer) = parquet_integer(field) {
        return Ok(RawLabel::Integer(integer));
    }
    match parquet_text(field, name) {
        Ok(text) => Ok(RawLabel::Text(text)),
        Err(_) => Err(format!(
            "field '{name}' must be a string or an integer, found {}",
            parquet_kind(field)
        )),
    }
}

fn parquet_id(field: &Field, name: &str) -> Result<String, String> {
    if let Some(integer) = parquet_integer(field) {
        return Ok(integer.to_string());
    }
    parquet_text(field, name).map_err(|_| {
        format!(
            "field '{name}' must be a string or an integer, found {}",
            parquet_kind(field)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn fields() -> FieldNames {
        FieldNames {
            text: "text".into(),
            label: "label".into(),
            id: None,
        }
    }

    fn write_temp(name: &str, contents: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(name);
        File::create(&path)
            .and_then(|mut file| file.write_all(contents))
            .expect("write");
        (dir, path)
    }

    #[test]
    fn a_line_longer_than_the_limit_is_an_error_naming_it_in_every_text_format() {
        let dir = tempfile::tempdir().unwrap();
        let fields = FieldNames { text: "text".into(), label: "label".into(), id: None };
        let long = "x".repeat(MAX_LINE_BYTES + 1);
        for (name, content) in [
            ("a.jsonl", format!("{{\"text\": \"ok\", \"label\": \"a\"}}\n{long}\n")),
            ("a.csv", format!("text,label\nok,a\n{long},b\n")),
            ("a.tsv", format!("text\tlabel\nok\ta\n{long}\tb\n")),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            let err = read_rows(&path, &fields).unwrap_err().to_string();
            assert!(err.contains("longer than") && err.contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn format_is_chosen_by_extension() {
        assert_eq!(
            FileFormat::from_path(Path::new("a/b.JSONL")).ok(),
            Some(FileFormat::Jsonl)
        );
        assert_eq!(
            FileFormat::from_path(Path::new("b.tsv")).ok(),
            Some(FileFormat::Tsv)
        );
        let error = FileFormat::from_path(Path::new("b.json"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown extension '.json'"), "{error}");
        let error = FileFormat::from_path(Path::new("noext"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown extension (none)"), "{error}");
    }

    #[test]
    fn jsonl_skips_blank_lines_but_counts_them_in_line_numbers() {
        let (_dir, path) = write_temp(
            "d.jsonl",
            b"{\"text\":\"a\",\"label\":\"x\"}\n\n{\"text\":\"b\",\"label\":3}\r\n",
        );
        let rows = read_rows(&path, &fields()).expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].index, 1);
        assert_eq!(rows[1].location, Location::Line(3));
        assert_eq!(rows[1].label, RawLabel::Integer(3));
    }

    #[test]
    fn jsonl_ignores_a_byte_order_mark() {
        let (_dir, path) = write_temp("d.jsonl", b"\xEF\xBB\xBF{\"text\":\"a\",\"label\":\"x\"}\n");
        let rows = read_rows(&path, &fields()).expect("rows");
        assert_eq!(rows[0].text, "a");
    }

    #[test]
    fn jsonl_rejects_fractional_labels() {
        let (_dir, path) = write_temp("d.jsonl", b"{\"text\":\"a\",\"label\":1.5}\n");
        let error = read_rows(&path, &fields()).unwrap_err().to_string();
        assert!(
            error.contains("line 1: field 'label' must be a string or an integer"),
            "{error}"
        );
    }

    #[test]
    fn csv_reports_the_line_where_a_multiline_record_starts() {
        let (_dir, path) = write_temp("d.csv", b"text,label\n\"two\nlines\",x\n\"\",y\n");
        let rows = read_rows(&path, &fields()).expect("rows");
        assert_eq!(rows[0].text, "two\nlines");
        assert_eq!(rows[1].location, Location::Line(4));
    }

    #[test]
    fn tsv_keeps_quotes() {
        let (_dir, path) = write_temp("d.tsv", b"label\ttext\nx\tsaid \"hi\n");
        let rows = read_rows(&path, &fields()).expect("rows");
        assert_eq!(rows[0].text, "said \"hi");
        assert_eq!(rows[0].label, RawLabel::Text("x".into()));
    }
}
