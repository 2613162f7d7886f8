//! `--shard I/N`: a deterministic slice of a run's examples — those whose position in the sampled
//! dataset is congruent to I modulo N — so N processes (or machines) can share one run and
//! `candor merge` can join their directories back in dataset order.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// Shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based shard index, below `count`.
    pub index: usize,
    /// Number of shards, at least 1.
    pub count: usize,
}

impl Shard {
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
        if count == 0 || index >= count {
            return Err(expected());
        }
        Ok(Self { index, count })
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
    fn bad_shards_are_refused() {
        for text in ["3/3", "1/0", "1", "a/2", "-1/2"] {
            assert!(text.parse::<Shard>().is_err(), "{text}");
        }
        assert_eq!("2/5".parse::<Shard>().unwrap().to_string(), "2/5");
    }
}
