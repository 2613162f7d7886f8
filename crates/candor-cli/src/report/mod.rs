//! `candor report`: render the `calibration.json` of a calibrated run directory as Markdown (for
//! terminals and READMEs), pretty JSON (for scripts) or one self-contained HTML page (inline CSS
//! and SVG reliability diagrams, no JavaScript, no external reference).
//!
//! Markdown and HTML show the same [`document::Document`], built once from the results, so the
//! two can never disagree; the HTML page adds the diagrams drawn by [`svg`].

mod document;
mod html;
mod markdown;
mod sections;
mod svg;

#[cfg(test)]
mod fixture;

use crate::calibrate::results::CalibrationResults;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Arguments of `candor report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A run directory that `candor calibrate` has written `calibration.json` into.
    #[arg(long)]
    run: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Md)]
    format: Format,
    /// Output file (default: `RUN/report.<md|json|html>`); `-` writes to standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Markdown tables.
    Md,
    /// The calibration results as one pretty JSON document.
    Json,
    /// One self-contained HTML page with SVG reliability diagrams.
    Html,
}

impl Format {
    /// File extension, which is also the name given to `--format`.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Md => "md",
            Self::Json => "json",
            Self::Html => "html",
        }
    }
}

/// Runs `candor report`: prints the path written (or the report itself with `--out -`).
pub fn run(args: &ReportArgs) -> Result<()> {
    let results = CalibrationResults::read(&args.run)?;
    let written = match &args.out {
        None => write_reports(&args.run, &results, &[args.format])?,
        Some(out) if out.as_os_str() == "-" => {
            print!("{}", render(&results, args.format)?);
            Vec::new()
        }
        Some(out) => {
            write(out, &render(&results, args.format)?)?;
            vec![out.clone()]
        }
    };
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// Writes `dir/report.<ext>` for each format and returns the paths written, in order.
pub fn write_reports(dir: &Path, results: &CalibrationResults, formats: &[Format]) -> Result<Vec<PathBuf>> {
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
pub fn render(results: &CalibrationResults, format: Format) -> Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(results).context("serialising the calibration results")? + "\n",
        Format::Md => markdown::render(&sections::document(results)),
        Format::Html => html::render(&sections::document(results), results),
    })
}

fn default_path(dir: &Path, format: Format) -> PathBuf {
    dir.join(format!("report.{}", format.extension()))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
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

    #[test]
    fn a_missing_calibration_file_names_it_and_the_command_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let args = ReportArgs { run: dir.path().to_path_buf(), format: Format::Md, out: None };
        let message = format!("{:#}", run(&args).unwrap_err());
        assert!(message.contains("calibration.json"), "{message}");
        assert!(message.contains("candor calibrate --run"), "{message}");
    }
}
