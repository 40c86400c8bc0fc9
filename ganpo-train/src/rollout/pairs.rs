//! Preference pairs from scored samples: the best and the worst completion of each prompt.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::Sample;

/// A pair in TRL's standard format, with where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredPair {
    /// The prompt text.
    pub prompt: String,
    /// The preferred completion (the worse one when the label was flipped).
    pub chosen: String,
    /// The other completion.
    pub rejected: String,
    /// Reward of `chosen`.
    pub chosen_reward: f64,
    /// Reward of `rejected`.
    pub rejected_reward: f64,
    /// Whether label noise swapped the two.
    pub flipped: bool,
}

/// How pairs are formed.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct PairSettings {
    /// Probability of swapping chosen and rejected (simulated annotator noise).
    pub label_noise: f64,
    /// Seed of the noise.
    pub seed: u64,
}

/// Counts of what [`best_worst_pairs`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairStats {
    /// Prompts seen.
    pub prompts: usize,
    /// Pairs formed.
    pub pairs: usize,
    /// Prompts skipped because all their (non-empty) samples had the same reward, or there were
    /// fewer than two.
    pub ties: usize,
    /// Pairs whose labels were swapped.
    pub flipped: usize,
    /// Samples left out because their completion text is empty (EOS at once): preference data
    /// needs text on both sides.
    pub empty: usize,
}

/// Why samples cannot be paired.
#[derive(Debug, thiserror::Error)]
#[error("sample {sample} of prompt {prompt_index} has no reward: score the samples first")]
pub struct Unscored {
    /// The prompt.
    pub prompt_index: usize,
    /// The sample.
    pub sample: usize,
}

/// For each prompt, pairs its highest-reward sample (chosen) with its lowest (rejected); the
/// first sample wins ties within the best and the worst. Prompts whose samples all score the
/// same give no pair. Each pair is then flipped with probability `label_noise`.
pub fn best_worst_pairs(
    samples: &[Sample],
    settings: &PairSettings,
) -> Result<(Vec<ScoredPair>, PairStats), Unscored> {
    let mut by_prompt: BTreeMap<usize, Vec<(&Sample, f64)>> = BTreeMap::new();
    let mut stats = PairStats::default();
    for s in samples {
        let r = s.reward.ok_or(Unscored {
            prompt_index: s.prompt_index,
            sample: s.sample,
        })?;
        let group = by_prompt.entry(s.prompt_index).or_default();
        if s.completion.is_empty() {
            stats.empty += 1;
        } else {
            group.push((s, r));
        }
    }
    let mut rng = StdRng::seed_from_u64(settings.seed);
    stats.prompts = by_prompt.len();
    let mut pairs = Vec::new();
    for group in by_prompt.values() {
        if group.is_empty() {
            stats.ties += 1;
            continue;
        }
        let mut best = group[0];
        let mut worst = group[0];
        for &(s, r) in &group[1..] {
            if r > best.1 {
                best = (s, r);
            }
            if r < worst.1 {
                worst = (s, r);
            }
        }
        if best.1 <= worst.1 {
            stats.ties += 1;
            continue;
        }
        let flipped = rng.random_bool(settings.label_noise.clamp(0.0, 1.0));
        let (chosen, rejected) = if flipped {
            (worst, best)
        } else {
            (best, worst)
        };
        stats.flipped += flipped as usize;
        pairs.push(ScoredPair {
            prompt: chosen.0.prompt.clone(),
            chosen: chosen.0.completion.clone(),
            rejected: rejected.0.completion.clone(),
            chosen_reward: chosen.1,
            rejected_reward: rejected.1,
            flipped,
        });
    }
    stats.pairs = pairs.len();
    Ok((pairs, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(prompt_index: usize, sample: usize, reward: f64) -> Sample {
        Sample {
            prompt_index,
            sample,
            prompt: format!("p{prompt_index}"),
            completion: format!(" c{sample}"),
            completion_ids: vec![],
            finished: true,
            temperature: 1.0,
            reward: Some(reward),
        }
    }

    #[test]
    fn best_against_worst_ties_skipped_noise_counted() {
        let samples = vec![
            sample(0, 0, 0.5),
            sample(0, 1, -1.0),
            sample(0, 2, 1.0),
            sample(1, 0, 0.0),
            sample(1, 1, 0.0),
            Sample {
                completion: String::new(),
                ..sample(0, 3, 2.0)
            },
        ];
        let clean = PairSettings {
            label_noise: 0.0,
            seed: 0,
        };
        let (pairs, stats) = best_worst_pairs(&samples, &clean).unwrap();
        assert_eq!(
            stats,
            PairStats {
                prompts: 2,
                pairs: 1,
                ties: 1,
                flipped: 0,
                empty: 1,
            }
        );
        assert_eq!(
            (pairs[0].chosen.as_str(), pairs[0].rejected.as_str()),
            (" c2", " c1")
        );
        let (flipped, stats) = best_worst_pairs(
            &samples,
            &PairSettings {
                label_noise: 1.0,
                ..clean
            },
        )
        .unwrap();
        assert_eq!(stats.flipped, 1);
        assert_eq!(
            (flipped[0].chosen_reward, flipped[0].rejected_reward),
            (-1.0, 1.0)
        );
        let many: Vec<Sample> = (0..4000)
            .flat_map(|p| [sample(p, 0, 1.0), sample(p, 1, 0.0)])
            .collect();
        let (_, stats) = best_worst_pairs(
            &many,
            &PairSettings {
                label_noise: 0.2,
                seed: 3,
            },
        )
        .unwrap();
        // Binomial(4000, 0.2): standard deviation 25.3.
        assert!(
            (stats.flipped as f64 - 800.0).abs() < 100.0,
            "{}",
            stats.flipped
        );
        let mut unscored = samples.clone();
        unscored[3].reward = None;
        let e = best_worst_pairs(&unscored, &clean).unwrap_err().to_string();
        assert!(e.contains("sample 0 of prompt 1 has no reward"), "{e}");
    }
}
