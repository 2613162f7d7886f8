//! `--shard I/N`: a deterministic slice of a run's examples — those whose position in the sampled
//! dataset is congruent to I modulo N — so N processes (or machines) can share one run and
//! `candor merge` can join their directories back in dataset order.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// Shard `index` of `count`. Deserializing checks `index < count` (a hand-edited manifest with
/// shard `0/0` is an error, not a division by zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ShardFields")]
pub struct Shard {
    /// 0-based shard index, below `count`.
    pub index: usize,
    /// Number of shards, at least 1.
    pub count: usize,
}

/// A shard as written in a manifest, before it is checked.
#[derive(Deserialize)]
struct ShardFields {
    index: usize,
    count: usize,
}

impl TryFrom<ShardFields> for Shard {
    type Error = String;

    fn try_from(fields: ShardFields) -> Result<Self, String> {
        Self::new(fields.index, fields.count)
    }
}

impl Shard {
    /// Shard `index` of `count`, when `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self, String> {
        match index < count {
            true => Ok(Self { index, count }),
            false => Err(format!("a shard index below the shard count (at least 1), got {index}/{count}")),
        }
    }

    /// Whether the example at `position` (in the sampled dataset) belongs to this shard.
    pub fn holds(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let expected = || format!("expected I/N with 0 <= I < N (e.g. 0/4), got '{text}'");
        let (index, count) = text.split_once('/').ok_or_else(expected)?;
        let index: usize = index.trim().parse().map_err(|_| expected())?;
        let count: usize = count.trim().parse().map_err(|_| expected())?;
        Self::new(index, count).map_err(|_| expected())
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_positions() {
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        for position in 0..20 {
            let owners = shards.iter().filter(|s| s.holds(position)).count();
            assert_eq!(owners, 1, "position {position}");
        }
        assert!(shards[1].holds(4) && !shards[1].holds(5));
    }

    #[test]
    fn a_manifest_shard_of_0_of_0_or_an_index_past_the_count_is_refused_not_a_panic() {
        for text in [r#"{"index": 0, "count": 0}"#, r#"{"index": 3, "count": 3}"#] {
            let err = serde_json::from_str::<Shard>(text).unwrap_err().to_string();
            assert!(err.contains("below the shard count"), "{err}");
        }
        assert_eq!(serde_json::from_str::<Shard>(r#"{"index": 2, "count": 3}"#).unwrap(), Shard { index: 2, count: 3 });
    }

    #[test]
    fn bad_shards_are_refused() {
        for text in ["3/3", "1/0", "1", "a/2", "-1/2"] {
            assert!(text.parse::<Shard>().is_err(), "{text}");
        }
        assert_eq!("2/5".parse::<Shard>().unwrap().to_string(), "2/5");
    }
}
