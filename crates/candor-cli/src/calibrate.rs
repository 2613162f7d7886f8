//! `candor calibrate`, `candor report` and `candor summarize`: flags → the calibrate pipeline of
//! `candor_experiment::calibrate` and the renderers of `candor-report`, with what they print.

use crate::analysis_args::AnalysisFlags;
use anyhow::Result;
use candor_experiment::calibrate::{calibrate, CalibrateConfig};
use candor_experiment::eval::UnparseablePolicy;
use candor_report::Format;
use candor_results::{CalibrationResults, CALIBRATION_FILE};
use std::path::PathBuf;

/// Arguments of `candor calibrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// The run directory (manifest.json + predictions.jsonl); calibration.json is written there.
    #[arg(long)]
    pub run: PathBuf,
    /// Take the calibration examples from this run (same model and prompts, another split such
    /// as validation) instead of a fraction of --run.
    #[arg(long, value_name = "DIR", conflicts_with = "calib_fraction")]
    pub calibration_run: Option<PathBuf>,
    /// Fraction of each class of --run used to fit the calibrators, in (0, 1).
    #[arg(long, default_value_t = 0.5)]
    pub calib_fraction: f64,
    /// Seed, bootstrap, ε, temperature bounds, selections, interval method, ε sweep.
    #[command(flatten)]
    pub analysis: AnalysisFlags,
    /// Verbalized answers that cannot be parsed: count as uniform, or leave them out.
    #[arg(long, value_enum, default_value_t = UnparseablePolicy::Uniform)]
    pub unparseable: UnparseablePolicy,
    /// Precisions the decision thresholds must reach.
    #[arg(long, value_delimiter = ',', default_value = "0.8,0.9,0.95")]
    pub target_precision: Vec<f64>,
    /// Print nothing but the path written.
    #[arg(long)]
    pub quiet: bool,
}

impl CalibrateArgs {
    /// `candor calibrate --run RUN --bootstrap B` with every other flag at its default (the demo's).
    pub fn for_demo(run: PathBuf, bootstrap: usize) -> Self {
        Self {
            run,
            calibration_run: None,
            calib_fraction: 0.5,
            analysis: AnalysisFlags { bootstrap, ..AnalysisFlags::default() },
            unparseable: UnparseablePolicy::Uniform,
            target_precision: vec![0.8, 0.9, 0.95],
            quiet: false,
        }
    }

    /// The pipeline's configuration these flags describe.
    pub fn config(&self) -> CalibrateConfig {
        CalibrateConfig {
            run: self.run.clone(),
            calibration_run: self.calibration_run.clone(),
            calib_fraction: self.calib_fraction,
            analysis: self.analysis.config(),
            unparseable: self.unparseable,
            target_precision: self.target_precision.clone(),
        }
    }
}

/// Runs `candor calibrate`: writes calibration.json, prints a short table and the path.
pub fn run(args: &CalibrateArgs) -> Result<()> {
    let calibrated = calibrate(&args.config())?;
    for note in &calibrated.notes {
        eprintln!("note: {note}");
    }
    calibrated.results.write(&args.run)?;
    if !args.quiet {
        print!("{}", candor_report::terminal::summary_table(&calibrated.results));
    }
    println!("wrote {}", args.run.join(CALIBRATION_FILE).display());
    Ok(())
}

/// Arguments of `candor report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A run directory that `candor calibrate` has written `calibration.json` into.
    #[arg(long)]
    run: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Md)]
    format: FormatArg,
    /// Output file (default: `RUN/report.<md|json|html>`); `-` writes to standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}


/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// Markdown tables.
    Md,
    /// The calibration results as one pretty JSON document.
    Json,
    /// One self-contained HTML page with SVG reliability diagrams.
    Html,
}

impl FormatArg {
    /// The report format.
    pub fn format(self) -> Format {
        match self {
            Self::Md => Format::Md,
            Self::Json => Format::Json,
            Self::Html => Format::Html,
        }
    }
}

/// Runs `candor report`: prints the path written (or the report itself with `--out -`).
pub fn run_report(args: &ReportArgs) -> Result<()> {
    let results = CalibrationResults::read(&args.run)?;
    let format = args.format.format();
    let written = match &args.out {
        None => candor_report::write_reports(&args.run, &results, &[format])?,
        Some(out) if out.as_os_str() == "-" => {
            print!("{}", candor_report::render(&results, format)?);
            Vec::new()
        }
        Some(out) => {
            candor_report::write(out, &candor_report::render(&results, format)?)?;
            vec![out.clone()]
        }
    };
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// Arguments of `candor summarize`.
#[derive(Debug, clap::Args)]
pub struct SummarizeArgs {
    /// Calibrated run directories, in the order of the table's rows.
    #[arg(long = "run", value_name = "DIR", required = true)]
    runs: Vec<PathBuf>,
}

/// Runs `candor summarize`: prints the table.
pub fn run_summarize(args: &SummarizeArgs) -> Result<()> {
    let results = args.runs.iter().map(|dir| CalibrationResults::read(dir)).collect::<Result<Vec<_>, _>>()?;
    print!("{}", candor_report::summary::table(&results));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_calibration_file_names_it_and_the_command_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let args = ReportArgs { run: dir.path().to_path_buf(), format: FormatArg::Md, out: None };
        let message = format!("{:#}", run_report(&args).unwrap_err());
        assert!(message.contains("calibration.json"), "{message}");
        assert!(message.contains("candor calibrate --run"), "{message}");
    }
}
