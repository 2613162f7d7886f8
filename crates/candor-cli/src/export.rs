//! `candor export-dense` (hidden, for development and tests): write a model's dequantized f32
//! weights with config.json and tokenizer files as a safetensors directory that `--model DIR`
//! loads back.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::model_args::ModelArgs;

/// Arguments of `candor export-dense`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
}

/// Run `candor export-dense`.
pub fn run(args: &ExportArgs) -> Result<()> {
    let model = args.model.load()?;
    candor_infer::export_dense(&model, &args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
