//! Renderers of Candor's calibration results (`calibration.json`, the data model of
//! `candor-results`): Markdown (for terminals and READMEs), pretty JSON (for scripts) or one
//! self-contained HTML page (inline CSS and SVG reliability diagrams, no JavaScript, no external
//! reference), and the cross-run [`summary`] table. It reads nothing but the results it is given
//! and knows nothing of models or datasets.
//!
//! Markdown and HTML show the same [`document::Document`], built once from the results, so the
//! two can never disagree; the HTML page adds the diagrams drawn by [`svg`].
//!
//! ```
//! use candor_report::{render, Format};
//! use candor_results::CalibrationResults;
//!
//! // calibration.json as `candor calibrate` writes it (here: a run with no signal measured).
//! let results: CalibrationResults = serde_json::from_value(serde_json::json!({
//!     "candor_version": "0.1.0",
//!     "run": {"dir": "runs/x", "model": "m.gguf", "architecture": "llama", "weights": "f32",
//!             "model_sha256": "00", "dataset": "emotion", "split": "test",
//!             "verbalized_mode": null, "examples": 0, "truncated": 0, "model_seconds": 0.0,
//!             "calibration_run": null},
//!     "settings": {"calib_fraction": 0.5, "seed": 0, "bootstrap_resamples": 0, "level": 0.95,
//!                  "epsilon": 1e-6, "unparseable": "uniform", "target_precisions": [0.9]},
//!     "labels": ["joy", "sadness"], "n_calibration": 0, "n_test": 0,
//!     "signals": [], "comparisons": []
//! }))?;
//! let markdown = render(&results, Format::Md)?;
//! assert!(markdown.contains("emotion"));
//! let html = render(&results, Format::Html)?;
//! assert!(html.starts_with("<!DOCTYPE html>"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Input never panics the library: no unwrap/expect outside tests (errors name what was wrong).
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod document;
mod html;
mod markdown;
mod sections;
pub mod summary;
mod svg;
pub mod terminal;

#[cfg(test)]
mod fixture;

use candor_results::CalibrationResults;
use std::path::{Path, PathBuf};

/// Why a report could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The results could not be serialised as JSON.
    #[error("serialising the calibration results")]
    Serialise(#[source] serde_json::Error),
    /// A report file could not be written.
    #[error("writing {}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
}

/// A report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Markdown tables.
    Md,
    /// The calibration results as one pretty JSON document.
    Json,
    /// One self-contained HTML page with SVG reliability diagrams.
    Html,
}

impl Format {
    /// File extension, which is also the format's name.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Md => "md",
            Self::Json => "json",
            Self::Html => "html",
        }
    }
}

/// Writes `dir/report.<ext>` for each format and returns the paths written, in order.
pub fn write_reports(dir: &Path, results: &CalibrationResults, formats: &[Format]) -> Result<Vec<PathBuf>, ReportError> {
    formats
        .iter()
        .map(|&format| {
            let path = default_path(dir, format);
            write(&path, &render(results, format)?)?;
            Ok(path)
        })
        .collect()
}

/// The report as text in `format`.
pub fn render(results: &CalibrationResults, format: Format) -> Result<String, ReportError> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(results).map_err(ReportError::Serialise)? + "\n",
        Format::Md => markdown::render(&sections::document(results)),
        Format::Html => html::render(&sections::document(results), results),
    })
}

/// `dir/report.<ext>`: where [`write_reports`] puts the report in `format`.
pub fn default_path(dir: &Path, format: Format) -> PathBuf {
    dir.join(format!("report.{}", format.extension()))
}

/// Writes `text` to `path`.
pub fn write(path: &Path, text: &str) -> Result<(), ReportError> {
    std::fs::write(path, text).map_err(|source| ReportError::Write { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_to_the_same_results() {
        let results = fixture::results();
        let text = render(&results, Format::Json).unwrap();
        let back: CalibrationResults = serde_json::from_str(&text).unwrap();
        assert_eq!(back, results);
        assert!(text.contains("\"ece_15_equal_width\""));
    }

    #[test]
    fn write_reports_writes_one_file_per_format_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let results = fixture::results();
        results.write(dir.path()).unwrap();
        let read = CalibrationResults::read(dir.path()).unwrap();
        let paths = write_reports(dir.path(), &read, &[Format::Md, Format::Html]).unwrap();
        assert_eq!(paths, vec![dir.path().join("report.md"), dir.path().join("report.html")]);
        let markdown = std::fs::read_to_string(&paths[0]).unwrap();
        assert_eq!(markdown, render(&results, Format::Md).unwrap());
        assert!(std::fs::read_to_string(&paths[1]).unwrap().starts_with("<!DOCTYPE html>"));
    }
}
