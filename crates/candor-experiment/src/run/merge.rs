//! Merging shards (`candor merge`): joins the directories of a sharded run (`candor run --shard I/N`) into one run
//! directory. Every shard must have the same manifest apart from its selection, the shards must be
//! exactly 0..N-1 of one N, each complete; records are copied byte for byte in dataset order, and
//! the merged manifest is the one an unsharded run would have written.

use crate::error::{bail, ensure, invalid, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::manifest::{differing_fields, Manifest, Selection, VOLATILE_FIELDS};
use super::predictions::{complete_lines, read_keys, PREDICTIONS_FILE};

/// One complete shard directory.
struct ShardRun {
    dir: PathBuf,
    manifest: Manifest,
    lines: Vec<(usize, Vec<u8>)>,
}

/// Merges the complete shard directories `shards` (in any order) into the new run directory
/// `out`; returns the number of examples merged.
pub fn merge(out: &Path, shards: &[PathBuf]) -> Result<usize> {
    if out.exists() {
        bail!("{} already exists: merge into a new directory", out.display());
    }
    ensure!(!shards.is_empty(), "no shard directories to merge");
    let shards = shards
        .iter()
        .map(|dir| read_shard(dir))
        .collect::<Result<Vec<_>>>()?;
    let first = &shards[0];
    let count = shard_count(first)?;
    let mut seen = vec![None; count];
    let mut ignored = VOLATILE_FIELDS.to_vec();
    ignored.push("selection");
    for shard in &shards {
        let differences = differing_fields(&first.manifest, &shard.manifest, &ignored)?;
        ensure!(
            differences.is_empty(),
            "{} and {} are not shards of one run: their manifests differ in {}",
            first.dir.display(),
            shard.dir.display(),
            differences.join(", ")
        );
        let this = shard
            .manifest
            .selection
            .shard
            .ok_or_else(|| invalid!("{} is not a shard (it was run without --shard)", shard.dir.display()))?;
        ensure!(
            this.count == count,
            "{} is shard {this} but {} is one of {count} shards",
            shard.dir.display(),
            first.dir.display()
        );
        if let Some(previous) = seen[this.index].replace(&shard.dir) {
            bail!(
                "{} and {} are both shard {this}: overlapping shards",
                previous.display(),
                shard.dir.display()
            );
        }
    }
    let missing: Vec<String> = (0..count)
        .filter(|&index| seen[index].is_none())
        .map(|index| format!("{index}/{count}"))
        .collect();
    ensure!(missing.is_empty(), "missing shards: {}", missing.join(", "));
    write_merged(out, shards)
}

fn shard_count(shard: &ShardRun) -> Result<usize> {
    shard
        .manifest
        .selection
        .shard
        .map(|s| s.count)
        .ok_or_else(|| invalid!("{} is not a shard (it was run without --shard)", shard.dir.display()))
}

/// Reads a shard's manifest and records and checks that it is complete.
fn read_shard(dir: &Path) -> Result<ShardRun> {
    let manifest = Manifest::read(dir)?;
    let path = dir.join(PREDICTIONS_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let keys = read_keys(&bytes, &path)?;
    let expected = manifest.selection.examples;
    ensure!(
        keys.len() == expected && complete_lines(&bytes).map(|l| l.len() + 1).sum::<usize>() == bytes.len(),
        "{} is incomplete: {} of {expected} records (resume it with the same candor run command first)",
        dir.display(),
        keys.len()
    );
    if let Some(shard) = manifest.selection.shard {
        if let Some(key) = keys.iter().find(|key| !shard.holds(key.index)) {
            bail!(
                "{}: record of example {} ('{}') does not belong to shard {shard}",
                path.display(),
                key.index,
                key.id
            );
        }
    }
    let lines = keys
        .iter()
        .zip(complete_lines(&bytes))
        .map(|(key, line)| (key.index, line.to_vec()))
        .collect();
    Ok(ShardRun {
        dir: dir.to_path_buf(),
        manifest,
        lines,
    })
}

/// Writes the merged manifest and the records of all shards in dataset order.
fn write_merged(out: &Path, shards: Vec<ShardRun>) -> Result<usize> {
    let mut manifest = shards[0].manifest.clone();
    let truncated = shards.iter().map(|s| s.manifest.selection.truncated).sum();
    let mut lines: Vec<(usize, Vec<u8>)> = shards.into_iter().flat_map(|s| s.lines).collect();
    lines.sort_by_key(|(index, _)| *index);
    let total = manifest.dataset.examples;
    for (position, (index, _)) in lines.iter().enumerate() {
        ensure!(
            *index == position,
            "the shards' records do not cover examples 0..{total} exactly once (at position {position}: example {index})"
        );
    }
    ensure!(
        lines.len() == total,
        "the shards hold {} records, the dataset has {total} examples",
        lines.len()
    );
    manifest.selection = Selection {
        shard: None,
        examples: total,
        truncated,
    };
    manifest.created_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut bytes = Vec::new();
    for (_, line) in &lines {
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
    }
    let path = out.join(PREDICTIONS_FILE);
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    manifest.write(out)?;
    Ok(total)
}
