//! LoRA adapters as PEFT makes them: which projections get one, how they start, how they are
//! switched off (the reference model), merged, and read from or written to a PEFT adapter
//! directory ([`peft`]).
//!
//! An adapter on a projection `W` adds `scale * dropout(x) A B` to its output, `A` (`in -> r`)
//! drawn Kaiming-uniform as `nn.init.kaiming_uniform_(a = sqrt(5))` draws it (uniform in
//! `±1/sqrt(in)`), `B` (`r -> out`) zero, `scale = alpha / r` (`alpha / sqrt(r)` with rsLoRA).
//! The base model is frozen; only `A` and `B` take gradients, so an optimizer holds state for
//! them alone.

pub mod peft;

use std::fmt;
use std::path::Path;

use burn::module::{Module, Param, ParamId};
use burn::prelude::*;
use burn_store::{ModuleSnapshot, PathFilter, SafetensorsStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::nn::{LoraState, ProjectionParts};
use crate::{Decoder, ModelError};

/// `[lora]` of a run: PEFT's `LoraConfig`, with PEFT's names accepted as aliases.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank of each adapter (PEFT's `r`, default 8).
    pub r: usize,
    /// Scale numerator (PEFT's `lora_alpha`, default 8): the adapter's output is multiplied by
    /// `alpha / r`.
    #[serde(alias = "lora_alpha")]
    pub alpha: f64,
    /// Dropout on each adapter's input while training (PEFT's `lora_dropout`).
    #[serde(alias = "lora_dropout")]
    pub dropout: f64,
    /// Which projections get adapters; `None`: the architecture's PEFT default.
    pub target_modules: Option<TargetModules>,
    /// rsLoRA: scale by `alpha / sqrt(r)` (PEFT's `use_rslora`).
    #[serde(alias = "use_rslora")]
    pub rslora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 8.0,
            dropout: 0.0,
            target_modules: None,
            rslora: false,
        }
    }
}

/// PEFT's `target_modules`: a list of module names (a projection matches when its name is one
/// of them or ends with `.` + one of them), `"all-linear"` (every projection but the LM head),
/// or any other string, a regular expression the whole module name must match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// `"all-linear"` or a regular expression.
    Pattern(String),
    /// Module names.
    Names(Vec<String>),
}

impl fmt::Display for TargetModules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pattern(p) => write!(f, "{p:?}"),
            Self::Names(n) => write!(f, "{n:?}"),
        }
    }
}

/// Whether a module name is a target.
type Matcher = Box<dyn Fn(&str) -> bool>;

impl TargetModules {
    /// A matcher for module names; an invalid regular expression is an error naming the key.
    fn matcher(&self) -> Result<Matcher, ModelError> {
        Ok(match self {
            Self::Pattern(p) if p == "all-linear" => Box::new(|_| true),
            Self::Pattern(p) => {
                let re = Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                    lora_error("target_modules", format!("`{p}` is not a valid regex: {e}"))
                })?;
                Box::new(move |name| re.is_match(name))
            }
            Self::Names(names) => {
                let names = names.clone();
                Box::new(move |name| {
                    names
                        .iter()
                        .any(|t| name == t || name.ends_with(&format!(".{t}")))
                })
            }
        })
    }
}

fn lora_error(key: &str, message: String) -> ModelError {
    ModelError::Lora {
        key: format!("lora.{key}"),
        message,
    }
}

impl LoraConfig {
    /// The multiplier of the adapters' output.
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// The first setting out of range, as `(key, value, expected)`; `None` when all are valid.
    pub fn invalid_setting(&self) -> Option<(&'static str, String, &'static str)> {
        if self.r == 0 {
            return Some(("lora.r", "0".into(), "a rank of at least 1"));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Some(("lora.alpha", self.alpha.to_string(), "a positive number"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Some((
                "lora.dropout",
                self.dropout.to_string(),
                "a probability in [0, 1)",
            ));
        }
        match &self.target_modules {
            Some(TargetModules::Names(names)) if names.is_empty() => Some((
                "lora.target_modules",
                "[]".into(),
                "at least one module name, or \"all-linear\"",
            )),
            _ => None,
        }
    }

    /// Checks the values, each error naming its key.
    pub fn validate(&self) -> Result<(), ModelError> {
        match self.invalid_setting() {
            Some((key, value, expected)) => Err(ModelError::Lora {
                key: key.into(),
                message: format!("expected {expected}, found {value}"),
            }),
            None => Ok(()),
        }
    }

    fn state(&self) -> LoraState {
        LoraState {
            scale: self.scale(),
            dropout: self.dropout,
            enabled: true,
        }
    }
}

/// A stable id for the adapter parameter `name` (`...q_proj.lora_A`), so an optimizer's state,
/// keyed by parameter id, finds its adapters again when a run is resumed in a new process.
fn adapter_param_id(name: &str) -> ParamId {
    // FNV-1a.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    ParamId::from(h)
}

/// A bias-free burn `Linear` `[d_in, d_out]` holding `weight` under the id of `name`.
fn adapter_linear<B: Backend>(name: &str, weight: Tensor<B, 2>) -> burn::nn::Linear<B> {
    burn::nn::Linear {
        weight: Param::initialized(adapter_param_id(name), weight.require_grad()),
        bias: None,
    }
}

/// Puts an adapter on one projection: `A` uniform in `±1/sqrt(in)` drawn from `rng` (zero
/// without one: weights about to be loaded), `B` zero.
fn attach_one<B: Backend>(
    name: &str,
    parts: ProjectionParts<'_, B>,
    config: &LoraConfig,
    rng: Option<&mut StdRng>,
) {
    let weight = parts.weight.val();
    let [d_in, d_out] = weight.dims();
    let device = weight.device();
    let a = match rng {
        Some(rng) => {
            let bound = 1.0 / (d_in as f64).sqrt();
            let a: Vec<f32> = (0..d_in * config.r)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect();
            Tensor::from_data(TensorData::new(a, [d_in, config.r]), &device)
        }
        None => Tensor::zeros([d_in, config.r], &device),
    };
    *parts.lora_A = Some(adapter_linear(&format!("{name}.lora_A"), a));
    let b = Tensor::zeros([config.r, d_out], &device);
    *parts.lora_B = Some(adapter_linear(&format!("{name}.lora_B"), b));
    *parts.state = config.state();
}

/// The module names `config.target_modules` selects in `model` (PEFT's matching); an error
/// naming `lora.target_modules` and the model's module names when it selects none.
pub fn target_names<B: Backend, M: Decoder<B>>(
    model: &mut M,
    config: &LoraConfig,
) -> Result<Vec<String>, ModelError> {
    let targets = match &config.target_modules {
        Some(t) => t.clone(),
        None => TargetModules::Names(
            model
                .default_lora_targets()
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
    };
    let matches = targets.matcher()?;
    let all: Vec<String> = model.projections().into_iter().map(|(n, _)| n).collect();
    let chosen: Vec<String> = all.iter().filter(|n| matches(n)).cloned().collect();
    if chosen.is_empty() {
        let mut kinds: Vec<&str> = all
            .iter()
            .filter_map(|n| n.rsplit('.').next())
            .collect::<Vec<_>>();
        kinds.sort();
        kinds.dedup();
        return Err(lora_error(
            "target_modules",
            format!(
                "{targets} names no module of this model (its projections: {}; or \"all-linear\")",
                kinds.join(", ")
            ),
        ));
    }
    Ok(chosen)
}

/// Freezes `model` and attaches a fresh adapter to every projection `config` selects, drawn from
/// `seed` (the same adapters on every backend). Returns the adapted model and the names of the
/// adapted modules.
pub fn attach<B: Backend, M: Decoder<B> + Module<B>>(
    model: M,
    config: &LoraConfig,
    seed: u64,
) -> Result<(M, Vec<String>), ModelError> {
    config.validate()?;
    let mut model = model.no_grad();
    let names = target_names(&mut model, config)?;
    let mut rng = StdRng::seed_from_u64(seed);
    for (name, projection) in model.projections() {
        if names.contains(&name) {
            attach_one(&name, projection.parts(), config, Some(&mut rng));
        }
    }
    Ok((model, names))
}

/// Switches every attached adapter on or off; returns how many there are. With them off, the
/// model computes exactly what it computed before they were attached.
pub fn set_enabled<B: Backend, M: Decoder<B>>(model: &mut M, enabled: bool) -> usize {
    let mut count = 0;
    for (_, projection) in model.projections() {
        let parts = projection.parts();
        if parts.lora_A.is_some() {
            parts.state.enabled = enabled;
            count += 1;
        }
    }
    count
}

/// The adapted modules' names.
pub fn adapted<B: Backend, M: Decoder<B>>(model: &mut M) -> Vec<String> {
    model
        .projections()
        .into_iter()
        .filter_map(|(name, p)| p.parts().lora_A.is_some().then_some(name))
        .collect()
}

/// Folds every adapter into its base weight (`W + scale * A B`) and removes it: a plain model
/// that computes what the adapted one did (with its adapters on).
pub fn merge<B: Backend, M: Decoder<B>>(model: &mut M) {
    for (_, projection) in model.projections() {
        let parts = projection.parts();
        let (Some(a), Some(b)) = (parts.lora_A.take(), parts.lora_B.take()) else {
            continue;
        };
        let delta = a.weight.val().matmul(b.weight.val()) * parts.state.scale;
        let merged = parts.weight.val() + delta;
        *parts.weight = Param::initialized(parts.weight.id, merged.detach());
        *parts.state = LoraState::default();
    }
}

/// The module paths of adapter tensors (`...q_proj.lora_A.weight`).
pub const ADAPTER_TENSORS: &str = r"\.lora_[AB]\.weight$";

/// Writes the adapter tensors of `model` (burn's layout and module paths) to the safetensors
/// file `path`, for a training checkpoint; returns how many. The frozen base is not written.
pub fn save_weights<B: Backend, M: Module<B>>(model: &M, path: &Path) -> Result<usize, ModelError> {
    let mut store = SafetensorsStore::from_file(path)
        .with_regex(ADAPTER_TENSORS)
        .skip_enum_variants(true);
    model
        .save_into(&mut store)
        .map_err(|e| ModelError::BadWeights {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(model
        .collect(
            Some(PathFilter::new().with_regex(ADAPTER_TENSORS)),
            None,
            true,
        )
        .len())
}

/// Loads what [`save_weights`] wrote into the adapters of `model` (attached beforehand, with the
/// same modules and rank); every adapter must be found in the file, with its shape.
pub fn load_weights<B: Backend, M: Module<B>>(
    model: &mut M,
    path: &Path,
) -> Result<(), ModelError> {
    let mut store = SafetensorsStore::from_file(path)
        .with_regex(ADAPTER_TENSORS)
        .skip_enum_variants(true)
        .allow_partial(true);
    let bad = |message: String| ModelError::BadWeights {
        path: path.to_path_buf(),
        message,
    };
    let result = model
        .load_from(&mut store)
        .map_err(|e| bad(e.to_string()))?;
    let missing: Vec<String> = result
        .missing
        .iter()
        .map(|(name, _)| name.clone())
        .filter(|name| name.contains(".lora_"))
        .collect();
    if !result.errors.is_empty() || !missing.is_empty() || !result.unused.is_empty() {
        let errors: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
        return Err(bad(format!(
            "adapters do not fit this model (errors: {}; missing: {}; unexpected: {})",
            errors.join(", "),
            missing.join(", "),
            result.unused.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_bad_values_by_key() {
        let bad = |c: LoraConfig| c.validate().unwrap_err().to_string();
        assert!(
            bad(LoraConfig {
                r: 0,
                ..Default::default()
            })
            .contains("lora.r")
        );
        let e = bad(LoraConfig {
            alpha: f64::NAN,
            ..Default::default()
        });
        assert!(e.contains("lora.alpha"), "{e}");
        let e = bad(LoraConfig {
            dropout: 1.0,
            ..Default::default()
        });
        assert!(e.contains("lora.dropout"), "{e}");
    }

    #[test]
    fn scale_is_alpha_over_r_or_sqrt_r() {
        let c = LoraConfig {
            r: 16,
            alpha: 32.0,
            ..Default::default()
        };
        assert_eq!(c.scale(), 2.0);
        let c = LoraConfig { rslora: true, ..c };
        assert_eq!(c.scale(), 8.0);
    }

    #[test]
    fn target_matching_follows_peft() {
        let names = TargetModules::Names(vec!["q_proj".into()])
            .matcher()
            .unwrap();
        assert!(names("model.layers.0.self_attn.q_proj"));
        assert!(!names("model.layers.0.self_attn.kq_proj"));
        let all = TargetModules::Pattern("all-linear".into())
            .matcher()
            .unwrap();
        assert!(all("transformer.h.0.mlp.c_fc"));
        let re = TargetModules::Pattern(r".*\.1\..*v_proj".into())
            .matcher()
            .unwrap();
        assert!(re("model.layers.1.self_attn.v_proj"));
        assert!(!re("model.layers.0.self_attn.v_proj"));
        let e = TargetModules::Pattern("(".into()).matcher().err().unwrap();
        assert!(e.to_string().contains("lora.target_modules"), "{e}");
    }
}
