//! `candor demo`: the newcomer's whole experiment in one command. On the default model and
//! Candor's own demo dataset (300 short emotion texts written for the project, embedded in the
//! binary), it collects both signals for a stratified sample, calibrates them on half and writes
//! the Markdown and HTML reports — a few minutes on a laptop CPU.
//!
//! It is exactly `candor run` (constrained verbalized answers and label log-probs), then
//! `candor calibrate`, then `candor report` for `md` and `html`, so every step can be repeated or
//! varied by hand; re-running resumes the run where it stopped.

use crate::calibrate::{self, CalibrateArgs};
use crate::eval::UnparseablePolicy;
use crate::model_args::DEFAULT_MODEL;
use crate::report::{self, Format};
use crate::run::{self, RunArgs};
use anyhow::{Context, Result};
use clap::Parser;
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

/// `candor run`'s arguments, parsed from a command line the demo writes.
#[derive(Parser)]
struct RunCommand {
    #[command(flatten)]
    args: RunArgs,
}

/// Runs `candor demo`.
pub fn run(args: &DemoArgs) -> Result<()> {
    let dataset = write_dataset(&args.out)?;
    eprintln!("== 1/3 run: both signals of {} on {} demo examples", args.model, args.limit);
    run::run(&run_args(args, &dataset)?.args)?;
    eprintln!("== 2/3 calibrate: fit on half, measure on the other half ({} bootstrap resamples)", args.bootstrap);
    let calibrate_args = CalibrateArgs {
        run: args.out.clone(),
        calibration_run: None,
        calib_fraction: 0.5,
        seed: 0,
        bootstrap: args.bootstrap,
        level: 0.95,
        epsilon: candor_calib::softmax::DEFAULT_EPSILON,
        unparseable: UnparseablePolicy::Uniform,
        target_precision: vec![0.8, 0.9, 0.95],
        quiet: false,
    };
    calibrate::run(&calibrate_args)?;
    eprintln!("== 3/3 report");
    let results = calibrate::results::CalibrationResults::read(&args.out)?;
    for path in report::write_reports(&args.out, &results, &[Format::Md, Format::Html])? {
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

fn run_args(args: &DemoArgs, dataset: &Path) -> Result<RunCommand> {
    let mut argv: Vec<String> = vec![
        "candor-run".into(),
        "--model".into(),
        args.model.clone(),
        "--dataset".into(),
        dataset.display().to_string(),
        "--limit".into(),
        args.limit.to_string(),
        "--verbalized".into(),
        "constrained".into(),
        "--out".into(),
        args.out.display().to_string(),
    ];
    if let Some(threads) = args.threads {
        argv.extend(["--threads".into(), threads.to_string()]);
    }
    RunCommand::try_parse_from(argv).context("assembling the run command")
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

    #[test]
    fn the_run_command_is_candor_run_with_the_demo_settings() {
        let args = DemoArgs::parse_from_for_test(&["--limit", "30", "--out", "x/demo", "--threads", "2"]);
        let command = run_args(&args, Path::new("x/demo/demo_emotion.jsonl")).unwrap();
        assert_eq!(command.args.out, PathBuf::from("x/demo"));
        assert_eq!(command.args.dataset.limit, Some(30));
        assert_eq!(command.args.dataset.spec, "x/demo/demo_emotion.jsonl");
    }

    impl DemoArgs {
        fn parse_from_for_test(argv: &[&str]) -> Self {
            #[derive(Parser)]
            struct Wrapper {
                #[command(flatten)]
                args: DemoArgs,
            }
            Wrapper::parse_from(std::iter::once("candor-demo").chain(argv.iter().copied())).args
        }
    }
}
