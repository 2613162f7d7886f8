//! `candor demo`: the newcomer's whole experiment in one command. On the default model and
//! Candor's own demo dataset (300 short emotion texts written for the project, embedded in the
//! binary), it collects both signals for a stratified sample, calibrates them on half and writes
//! the Markdown and HTML reports — a few minutes on a laptop CPU.
//!
//! It is exactly `candor run` (constrained verbalized answers and label log-probs), then
//! `candor calibrate`, then `candor report` for `md` and `html`, so every step can be repeated or
//! varied by hand; re-running resumes the run where it stopped.

use crate::model_args::DEFAULT_MODEL;
use anyhow::{Context, Result};
use candor_data::DatasetRequest;
use candor_experiment::run::{RunSettings, VerbalizedMode};
use candor_local::LocalModelOptions;
use candor_report::Format;
use candor_results::CalibrationResults;
use std::path::{Path, PathBuf};

/// The demo dataset (see crates/candor-cli/data/README.md).
const DEMO_DATASET: &str = include_str!("../data/demo_emotion.jsonl");
/// File name of the demo dataset inside the output directory.
const DEMO_DATASET_FILE: &str = "demo_emotion.jsonl";

/// Arguments of `candor demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The model (see `candor run --help`).
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// Examples of the demo dataset to use (stratified sample of its 300; half calibrate).
    #[arg(long, default_value_t = 120)]
    limit: usize,
    /// Output directory: the run, calibration.json, report.md and report.html.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Compute threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Bootstrap resamples of every interval.
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
}

/// Runs `candor demo`.
pub fn run(args: &DemoArgs) -> Result<()> {
    let dataset = write_dataset(&args.out)?;
    eprintln!("== 1/3 run: both signals of {} on {} demo examples", args.model, args.limit);
    let model = LocalModelOptions { spec: args.model.clone(), threads: args.threads, ..LocalModelOptions::default() };
    crate::run::run_local(run_settings(args, &dataset), &model, false)?;
    eprintln!("== 2/3 calibrate: fit on half, measure on the other half ({} bootstrap resamples)", args.bootstrap);
    let calibrate_args = crate::calibrate::CalibrateArgs::for_demo(args.out.clone(), args.bootstrap);
    crate::calibrate::run(&calibrate_args)?;
    eprintln!("== 3/3 report");
    let results = CalibrationResults::read(&args.out)?;
    for path in candor_report::write_reports(&args.out, &results, &[Format::Md, Format::Html])? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Writes the embedded dataset into `out` (unchanged if it is already there) and returns its path.
fn write_dataset(out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(DEMO_DATASET_FILE);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(DEMO_DATASET) {
        std::fs::write(&path, DEMO_DATASET).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}

/// `candor run --dataset DATASET --limit N --verbalized constrained --out OUT` with every other
/// setting at its default.
fn run_settings(args: &DemoArgs, dataset: &Path) -> RunSettings {
    let request = DatasetRequest { spec: dataset.display().to_string(), limit: Some(args.limit), ..DatasetRequest::default() };
    RunSettings { verbalized: VerbalizedMode::Constrained, ..RunSettings::new(request, args.out.clone()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_dataset_is_written_once_and_kept() {
        let temp = tempfile::tempdir().unwrap();
        let path = write_dataset(temp.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), DEMO_DATASET);
        assert_eq!(DEMO_DATASET.lines().count(), 300);
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        write_dataset(temp.path()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), modified);
    }

    /// `candor run` with exactly the demo's flags.
    fn parsed_run_command(argv: &[&str]) -> RunSettings {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: crate::run::RunArgs,
        }
        <Wrapper as clap::Parser>::parse_from(std::iter::once("candor-run").chain(argv.iter().copied())).args.settings()
    }

    #[test]
    fn the_run_settings_are_those_of_candor_run_with_the_demo_flags() {
        let args = DemoArgs {
            model: DEFAULT_MODEL.into(),
            limit: 30,
            out: PathBuf::from("x/demo"),
            threads: Some(2),
            bootstrap: 10,
        };
        let settings = run_settings(&args, Path::new("x/demo/demo_emotion.jsonl"));
        let command = ["--dataset", "x/demo/demo_emotion.jsonl", "--limit", "30", "--verbalized", "constrained", "--out", "x/demo"];
        assert_eq!(settings, parsed_run_command(&command));
    }

    #[test]
    fn the_calibration_is_that_of_candor_calibrate_with_the_demo_flags() {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: crate::calibrate::CalibrateArgs,
        }
        let parsed = <Wrapper as clap::Parser>::parse_from(["candor-calibrate", "--run", "x/demo", "--bootstrap", "7"]).args;
        let demo = crate::calibrate::CalibrateArgs::for_demo(PathBuf::from("x/demo"), 7);
        assert_eq!(demo.config(), parsed.config());
    }
}
