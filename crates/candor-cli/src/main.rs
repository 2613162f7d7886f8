//! The `candor` command line: calibration experiments on local language models.

use clap::Parser;

/// Is this model right 80% of the time when it says it is 80% sure?
#[derive(Parser)]
#[command(name = "candor", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
