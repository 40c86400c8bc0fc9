//! Fixture readers and checks shared by the f32 and float64 test binaries, and (`backend`) the
//! choice of the backend that the backend-generic tests run on.
#![allow(dead_code)]

#[macro_use]
pub mod backend;

pub mod losses {
    use burn::prelude::*;
    use ganpo_core::loss::{PairLengths, PreferenceInputs, PreferenceLoss, WeightedLoss};
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Fixture {
        pub cases: Vec<Case>,
    }

    /// TRL's default DiscoPOP temperature, for cases that do not set one.
    fn tau() -> f64 {
        0.05
    }

    /// TRL's default alpha of the alpha-divergence.
    fn alpha() -> f64 {
        0.5
    }

    #[derive(Deserialize)]
    pub struct Case {
        pub name: String,
        pub source: String,
        pub losses: Vec<WeightedLoss>,
        pub beta: f64,
        pub label_smoothing: f64,
        pub simpo_gamma: f64,
        #[serde(default = "tau")]
        pub discopop_tau: f64,
        #[serde(default)]
        pub f_divergence_type: ganpo_core::loss::FDivergence,
        #[serde(default = "alpha")]
        pub f_alpha_divergence_coef: f64,
        pub policy_chosen: Vec<f64>,
        pub policy_rejected: Vec<f64>,
        pub reference_chosen: Option<Vec<f64>>,
        pub reference_rejected: Option<Vec<f64>>,
        pub chosen_lengths: Vec<usize>,
        pub rejected_lengths: Vec<usize>,
        pub chosen_logit_sums: Vec<f64>,
        pub rejected_logit_sums: Vec<f64>,
        pub expected_loss: f64,
        pub expected_metrics: std::collections::BTreeMap<String, f64>,
    }

    pub fn fixture() -> Fixture {
        serde_json::from_str(include_str!("../fixtures/losses.json")).expect("valid fixture")
    }

    fn tensor<B: Backend>(v: &[f64], device: &B::Device) -> Tensor<B, 1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
    }

    pub fn inputs<B: Backend>(case: &Case, device: &B::Device) -> PreferenceInputs<B> {
        PreferenceInputs {
            policy_chosen: tensor(&case.policy_chosen, device),
            policy_rejected: tensor(&case.policy_rejected, device),
            reference: match (&case.reference_chosen, &case.reference_rejected) {
                (Some(c), Some(r)) => Some((tensor(c, device), tensor(r, device))),
                _ => None,
            },
            lengths: PairLengths::new(case.chosen_lengths.clone(), case.rejected_lengths.clone())
                .unwrap(),
            logit_sums: Some((
                tensor(&case.chosen_logit_sums, device),
                tensor(&case.rejected_logit_sums, device),
            )),
            wpo_log_weights: None,
            chosen_sequence: None,
        }
    }

    /// Checks every case on backend `B` within relative tolerance `rtol` (plus `atol`).
    pub fn check_all<B: Backend>(rtol: f64, atol: f64) {
        let device = Default::default();
        let fixture = fixture();
        assert!(fixture.cases.len() >= 50, "fixture lost cases");
        let mut compared_metrics = 0;
        for case in &fixture.cases {
            let loss = PreferenceLoss {
                losses: case.losses.clone(),
                beta: case.beta,
                label_smoothing: case.label_smoothing,
                simpo_gamma: case.simpo_gamma,
                discopop_tau: case.discopop_tau,
                f_divergence_type: case.f_divergence_type,
                f_alpha_divergence_coef: case.f_alpha_divergence_coef,
                ..PreferenceLoss::default()
            };
            let out = loss
                .compute(&inputs::<B>(case, &device))
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let expected = (case.expected_loss, &case.expected_metrics);
            compared_metrics += super::compare(&case.name, &case.source, out, expected, rtol, atol);
        }
        assert!(
            compared_metrics > 300,
            "only {compared_metrics} metrics compared"
        );
    }
}

/// Compares a loss output with TRL's loss and metrics within `rtol` (plus `atol`); returns the
/// number of metrics compared.
pub fn compare<B: burn::prelude::Backend>(
    name: &str,
    source: &str,
    out: ganpo_core::loss::PreferenceOutput<B>,
    (expected_loss, expected_metrics): (f64, &std::collections::BTreeMap<String, f64>),
    rtol: f64,
    atol: f64,
) -> usize {
    use burn::prelude::ElementConversion;
    let got: f64 = out.loss.into_scalar().elem();
    let close = |got: f64, want: f64| (got - want).abs() <= atol + rtol * want.abs();
    assert!(
        close(got, expected_loss),
        "{name} ({source}): loss {got} != {expected_loss}"
    );
    let mut compared = 0;
    for (metric, got) in out.metrics.to_vec() {
        if let Some(&want) = expected_metrics.get(metric) {
            // TRL computes accuracies as float32 (`.float().mean()`).
            let close = |g: f64, w: f64| {
                close(g, w) || (metric.ends_with("accuracies") && (g - w).abs() < 1e-7)
            };
            assert!(close(got, want), "{name}: {metric} {got} != {want}");
            compared += 1;
        }
    }
    compared
}

/// LD-DPO, WPO and ORPO cases: TRL's loss of per-token log-probs, ganpo's from the logits
/// through [`ganpo_core::ScoredRows`].
pub mod token_losses {
    use burn::prelude::*;
    use ganpo_core::loss::{PairLengths, PreferenceInputs, PreferenceLoss, WeightedLoss};
    use ganpo_core::{LossKind, ScoredRows};
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Fixture {
        pub batches: Vec<Batch>,
        pub cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    pub struct Batch {
        pub shape: [usize; 3],
        pub logits: Vec<f64>,
        pub labels: Vec<i64>,
        pub mask: Vec<bool>,
        pub chosen_lengths: Vec<usize>,
        pub rejected_lengths: Vec<usize>,
        pub reference_chosen: Vec<f64>,
        pub reference_rejected: Vec<f64>,
        pub sequence_mask: Vec<bool>,
    }

    #[derive(Deserialize)]
    pub struct Case {
        pub name: String,
        pub source: String,
        pub batch: usize,
        pub losses: Vec<WeightedLoss>,
        pub beta: f64,
        pub label_smoothing: f64,
        pub ld_alpha: Option<f64>,
        pub use_weighting: bool,
        pub expected_loss: f64,
        pub expected_metrics: std::collections::BTreeMap<String, f64>,
    }

    pub fn fixture() -> Fixture {
        serde_json::from_str(include_str!("../fixtures/token_losses.json")).expect("valid fixture")
    }

    fn tensor<B: Backend>(v: &[f64], device: &B::Device) -> Tensor<B, 1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
    }

    /// Checks every case on backend `B` within relative tolerance `rtol` (plus `atol`).
    pub fn check_all<B: Backend>(rtol: f64, atol: f64) {
        let device = Default::default();
        let fixture = fixture();
        assert!(fixture.cases.len() >= 18, "fixture lost cases");
        let mut compared = 0;
        for case in &fixture.cases {
            let b = &fixture.batches[case.batch];
            let [rows, seq, vocab] = b.shape;
            let n = rows / 2;
            let logits = Tensor::<B, 3>::from_data(
                TensorData::new(b.logits.clone(), [rows, seq, vocab]),
                &device,
            );
            let labels = Tensor::<B, 2, Int>::from_data(
                TensorData::new(b.labels.clone(), [rows, seq]),
                &device,
            );
            let mask = Tensor::<B, 2, Bool>::from_data(
                TensorData::new(b.mask.clone(), [rows, seq]),
                &device,
            );
            let bool_mask = |v: &[bool]| {
                Tensor::<B, 2, Bool>::from_data(TensorData::new(v.to_vec(), [rows, seq]), &device)
            };
            let orpo = case.losses.iter().any(|l| l.kind == LossKind::Orpo);
            let mut scored = match orpo {
                true => ScoredRows::with_sequence_rows(labels, mask, bool_mask(&b.sequence_mask)),
                false => ScoredRows::new(labels, mask),
            };
            if let Some(alpha) = case.ld_alpha {
                scored = scored.length_desensitized(alpha);
            }
            if case.use_weighting {
                scored = scored.with_wpo_terms();
            }
            let (s, stats) = scored.logps_and_statistics(scored.gather(logits), true);
            let stats = stats.expect("asked for statistics");
            let halves = |x: Tensor<B, 1>| (x.clone().slice(s![0..n]), x.slice(s![n..2 * n]));
            let wpo = stats
                .aligned_logps
                .map(|a| halves(a / s.token_counts.clone().clamp_min(1.0)));
            let loss = PreferenceLoss {
                losses: case.losses.clone(),
                beta: case.beta,
                label_smoothing: case.label_smoothing,
                ld_alpha: case.ld_alpha,
                use_weighting: case.use_weighting,
                ..PreferenceLoss::default()
            };
            let (pc, pr) = halves(s.logps);
            let chosen_sequence = s
                .sequence
                .map(|(sums, counts)| (halves(sums).0, halves(counts).0));
            let inputs = PreferenceInputs {
                policy_chosen: pc,
                policy_rejected: pr,
                // ORPO has no reference model.
                reference: (!orpo).then(|| {
                    (
                        tensor(&b.reference_chosen, &device),
                        tensor(&b.reference_rejected, &device),
                    )
                }),
                lengths: PairLengths::new(b.chosen_lengths.clone(), b.rejected_lengths.clone())
                    .unwrap(),
                logit_sums: Some(halves(s.logit_sums)),
                wpo_log_weights: wpo,
                chosen_sequence,
            };
            let out = loss
                .compute(&inputs)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let expected = (case.expected_loss, &case.expected_metrics);
            compared += super::compare(&case.name, &case.source, out, expected, rtol, atol);
        }
        assert!(compared > 50, "only {compared} metrics compared");
    }
}

/// KTO cases: TRL's `KTOTrainer._compute_loss` on the summed log-probs of unpaired rows and of
/// their KL rows.
pub mod kto_losses {
    use burn::prelude::*;
    use ganpo_core::loss::{PreferenceLoss, UnpairedInputs};
    use ganpo_core::{LossKind, LossKind::Kto};
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize)]
    struct Fixture {
        batch: Batch,
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Batch {
        policy: Vec<f64>,
        reference: Vec<f64>,
        policy_kl: Vec<f64>,
        logit_sums: Vec<f64>,
        scored: Vec<f64>,
    }

    #[derive(Deserialize)]
    struct Case {
        name: String,
        source: String,
        labels: Vec<bool>,
        beta: f64,
        desirable_weight: f64,
        undesirable_weight: f64,
        reference_kl: Vec<f64>,
        expected_loss: f64,
        expected_metrics: BTreeMap<String, f64>,
    }

    fn tensor<B: Backend>(v: &[f64], device: &B::Device) -> Tensor<B, 1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
    }

    /// Checks every case on backend `B` within relative tolerance `rtol` (plus `atol`); every
    /// metric TRL logged (but `entropy` and `num_tokens`, the trainer's) must be there, and no
    /// other.
    pub fn check_all<B: Backend>(rtol: f64, atol: f64) {
        let device: B::Device = Default::default();
        let fixture: Fixture =
            serde_json::from_str(include_str!("../fixtures/kto_losses.json")).unwrap();
        assert!(fixture.cases.len() >= 5, "fixture lost cases");
        let b = &fixture.batch;
        for case in &fixture.cases {
            let loss = PreferenceLoss {
                beta: case.beta,
                desirable_weight: Some(case.desirable_weight),
                undesirable_weight: Some(case.undesirable_weight),
                ..PreferenceLoss::single(Kto)
            };
            let inputs = UnpairedInputs::<B> {
                policy: tensor(&b.policy, &device),
                reference: tensor(&b.reference, &device),
                kl: (
                    tensor(&b.policy_kl, &device),
                    tensor(&case.reference_kl, &device),
                ),
                desirable: case.labels.clone(),
                logit_sums: Some((tensor(&b.logit_sums, &device), tensor(&b.scored, &device))),
            };
            let out = loss
                .compute_unpaired(&inputs)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let names: Vec<&str> = out.metrics.names().to_vec();
            let expected: Vec<&str> = case.expected_metrics.keys().map(|k| k.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(sorted, expected, "{}: metric names", case.name);
            let expected = (case.expected_loss, &case.expected_metrics);
            let compared = super::compare(&case.name, &case.source, out, expected, rtol, atol);
            assert_eq!(compared, names.len());
        }
        assert!(LossKind::ALL.contains(&Kto));
    }
}

pub mod logprobs {
    use burn::prelude::*;
    use ganpo_core::sequence_logps;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Fixture {
        pub cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    pub struct Case {
        pub name: String,
        pub shape: [usize; 3],
        pub logits: Vec<f64>,
        pub labels: Vec<i64>,
        pub mask: Vec<bool>,
        pub expected_logps: Vec<f64>,
        pub expected_token_counts: Vec<f64>,
        pub expected_logit_sums: Vec<f64>,
    }

    pub fn cases() -> Vec<Case> {
        let f: Fixture = serde_json::from_str(include_str!("../fixtures/logprobs.json")).unwrap();
        f.cases
    }

    fn vec1<B: Backend>(t: Tensor<B, 1>) -> Vec<f64> {
        t.into_data().convert::<f64>().to_vec().unwrap()
    }

    pub fn check<B: Backend>(tol: f64) {
        let device = Default::default();
        for case in cases() {
            let [b, s, v] = case.shape;
            let logits =
                Tensor::<B, 3>::from_data(TensorData::new(case.logits.clone(), [b, s, v]), &device);
            // Labels at unmasked positions are -100, as TRL writes them: they must be ignored.
            let labels = Tensor::<B, 2, Int>::from_data(
                TensorData::new(case.labels.clone(), [b, s]),
                &device,
            );
            let mask = Tensor::<B, 2, Bool>::from_data(
                TensorData::new(case.mask.clone(), [b, s]),
                &device,
            );
            let out = sequence_logps(logits, labels, mask);
            for (what, got, want) in [
                ("logps", vec1(out.logps), &case.expected_logps),
                (
                    "token_counts",
                    vec1(out.token_counts),
                    &case.expected_token_counts,
                ),
                (
                    "logit_sums",
                    vec1(out.logit_sums),
                    &case.expected_logit_sums,
                ),
            ] {
                for (g, w) in got.iter().zip(want) {
                    assert!(
                        (g - w).abs() <= tol * (1.0 + w.abs()),
                        "{} {what}: {g} vs {w}",
                        case.name
                    );
                }
            }
        }
    }
}
