//! Offline preference losses with TRL's definitions and metric names.
//!
//! A [`PreferenceLoss`] (a weighted list of [`LossKind`]s plus `beta`, label smoothing and SimPO's
//! `gamma`) turns [`PreferenceInputs`] (summed completion log-probabilities of the policy and,
//! for reference-based losses, of the reference model) into a scalar loss and
//! [`PreferenceMetrics`] named as TRL names them (`rewards/chosen`, `logps/rejected`, ...).

mod divergence;
mod inputs;
mod kind;
mod kto;
mod metrics;
mod objective;

pub use divergence::FDivergence;
pub use inputs::{PairLengths, PreferenceInputs};
pub use kind::LossKind;
pub use kto::{KtoWeights, UnpairedInputs};
pub use metrics::PreferenceMetrics;
pub use objective::{PreferenceLoss, PreferenceOutput, WeightedLoss};

/// Why a preference loss cannot be computed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LossError {
    /// A completion has no tokens: its length-normalized log-probability is undefined.
    #[error(
        "pair {index}: the {side} completion has zero tokens; every completion needs at least one token"
    )]
    EmptyCompletion {
        /// Position of the pair in the batch.
        index: usize,
        /// `chosen` or `rejected`.
        side: &'static str,
    },
    /// The batch holds no pairs.
    #[error("the batch holds no preference pairs")]
    EmptyBatch,
    /// Two inputs disagree on the number of pairs.
    #[error("{what} has {found} entries but the batch has {expected} pairs")]
    BatchMismatch {
        /// Which input is off.
        what: &'static str,
        /// Its size.
        found: usize,
        /// The number of pairs.
        expected: usize,
    },
    /// A loss that compares against the reference model was given no reference log-probs.
    #[error("loss `{0}` needs reference log-probabilities, but none were given")]
    MissingReference(&'static str),
    /// An f-divergence other than the reverse KL beside a loss it has no form for (TRL refuses
    /// the same: the f-DPO reparameterization cancels only in the chosen-rejected difference).
    #[error(
        "f_divergence_type `{divergence}` does not apply to loss `{loss}`: it applies to sigmoid, \
         sigmoid_norm, hinge, ipo, exo_pair, robust, discopop and sft (use reverse_kl with `{loss}`)"
    )]
    DivergenceWithLoss {
        /// The f-divergence.
        divergence: &'static str,
        /// The loss it cannot apply to.
        loss: &'static str,
    },
    /// ORPO without the chosen sequences' log-probs its NLL term reads.
    #[error(
        "loss `orpo` needs the log-probs of the chosen sequences' prompt and completion tokens \
         (PreferenceInputs::chosen_sequence), but none were given"
    )]
    MissingSequenceLogps,
    /// Paired inputs given to an unpaired loss (KTO), or unpaired inputs to a paired one.
    #[error(
        "loss `{loss}` reads {expected} inputs ({call}); unpaired losses (kto) take unpaired \
         examples and stand alone in the list"
    )]
    WrongInputs {
        /// The loss.
        loss: &'static str,
        /// `paired` or `unpaired`.
        expected: &'static str,
        /// The call that takes them.
        call: &'static str,
    },
    /// `use_weighting` without the WPO log-weights of the batch.
    #[error("use_weighting needs the WPO log-weights of the batch, but none were given")]
    MissingWpoWeights,
    /// An option beside a loss it does not apply to.
    #[error("`{option}` does not apply to loss `{loss}`: {why}")]
    OptionWithLoss {
        /// The option's key.
        option: &'static str,
        /// The loss.
        loss: &'static str,
        /// Why, and what to do instead.
        why: &'static str,
    },
    /// A hyperparameter is outside its valid range.
    #[error("invalid loss setting `{key}` = {value}: {expected}")]
    InvalidSetting {
        /// The config key.
        key: &'static str,
        /// The value given.
        value: f64,
        /// What is expected instead.
        expected: &'static str,
    },
}
