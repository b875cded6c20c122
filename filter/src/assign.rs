//! Sticky assignment: a user id maps to one of [`BUCKETS`] buckets, and the
//! cohorts own consecutive bucket ranges sized by their weights, in config order.
//!
//! The hash is XXH3-64, a fixed, documented algorithm whose output is the same
//! on every platform and in every version of the filter (pinned by test
//! vectors), so a user keeps its cohort across releases, restarts and replicas.
//! It is not a secret: salting only decorrelates experiments.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::config::Cohort;

/// Buckets per experiment: 0.01 % resolution, finer than any weight.
pub const BUCKETS: u32 = 10_000;

/// What the request path needs to assign a cohort, computed once per config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigner {
    seed: u64,
    /// Exclusive end bucket of each cohort, in config order.
    ends: Vec<u32>,
}

impl Assigner {
    pub fn new(salt: &str, experiment: &str, cohorts: &[Cohort]) -> Assigner {
        let mut end = 0u32;
        let ends = cohorts
            .iter()
            .map(|c| {
                end += u32::from(c.weight) * (BUCKETS / 100);
                end
            })
            .collect();
        Assigner {
            seed: seed(salt, experiment),
            ends,
        }
    }

    /// The bucket of `id`, in `0..BUCKETS`.
    pub fn bucket(&self, id: &[u8]) -> u32 {
        // The modulo bias of 2^64 mod 10^4 is below 1e-15: irrelevant.
        (xxh3_64_with_seed(id, self.seed) % u64::from(BUCKETS)) as u32
    }

    /// Index of the cohort owning `bucket`.
    pub fn cohort_of_bucket(&self, bucket: u32) -> usize {
        // Weights sum to 100, so the last end is BUCKETS; the fallback to the
        // last cohort only guards a bucket out of range.
        self.ends
            .iter()
            .position(|&end| bucket < end)
            .unwrap_or(self.ends.len().saturating_sub(1))
    }

    /// Index of the cohort of `id`.
    pub fn cohort(&self, id: &[u8]) -> usize {
        self.cohort_of_bucket(self.bucket(id))
    }
}

/// The hash seed for one (salt, experiment): both are length-prefixed so that
/// ("ab", "c") and ("a", "bc") differ.
fn seed(salt: &str, experiment: &str) -> u64 {
    let mut input = Vec::with_capacity(16 + salt.len() + experiment.len());
    input.extend_from_slice(&(salt.len() as u64).to_le_bytes());
    input.extend_from_slice(salt.as_bytes());
    input.extend_from_slice(&(experiment.len() as u64).to_le_bytes());
    input.extend_from_slice(experiment.as_bytes());
    xxh3_64(&input)
}
