//! The GANPO regularizer: closed forms, running means, state, plugging into base losses, and a
//! toy end-to-end loop; all but the configuration checks run on the backend `GANPO_TEST_BACKEND`
//! names (tests/common).

#[macro_use]
mod common;

use burn::backend::NdArray;
use burn::module::{Module, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::Distribution;
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::discriminator::{
    DiscriminatorConfig, MlpDiscriminatorConfig, TransformerDiscriminatorConfig,
};
use ganpo_core::ganpo::{GanpoConfig, LatentBatch, MeanMode, Pooling};
use ganpo_core::loss::{LossKind, PairLengths, PreferenceInputs, PreferenceLoss, UnpairedInputs};
use ganpo_core::mode::Mode;

fn mlp() -> DiscriminatorConfig {
    DiscriminatorConfig::Mlp(MlpDiscriminatorConfig {
        hidden: 16,
        ..Default::default()
    })
}

fn latents<A: AutodiffBackend>(device: &A::Device, shift: f64) -> Tensor<A, 3> {
    Tensor::random([6, 5, 8], Distribution::Normal(shift, 1.0), device)
}

fn batch<A: AutodiffBackend>(device: &A::Device, policy_shift: f64) -> LatentBatch<A> {
    LatentBatch {
        policy_chosen: latents(device, 0.5 + policy_shift),
        policy_rejected: latents(device, -0.5 + policy_shift),
        reference_chosen: latents(device, 0.5),
        reference_rejected: latents(device, -0.5),
        chosen_mask: None,
        rejected_mask: None,
    }
}

fn vec1<A: Backend>(t: Tensor<A, 1>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec().unwrap()
}

fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

#[test]
fn generator_loss_at_identical_latents_has_its_closed_form() {
    on_test_backend!(|A, device| {
        for mean in [MeanMode::Batch, MeanMode::Ema] {
            let ganpo = GanpoConfig {
                discriminator: mlp(),
                mean,
                ..Default::default()
            }
            .init::<A>(8, &device);
            let b = batch(&device, 0.0);
            // Policy == reference.
            let same = LatentBatch {
                policy_chosen: b.reference_chosen.clone(),
                policy_rejected: b.reference_rejected.clone(),
                ..b
            };
            let _ = ganpo.discriminator_loss(&same.detach_policy());
            let scores = ganpo.score(&same, Mode::Eval);
            let c = vec1(scores.c_policy_chosen.clone());
            let r = vec1(scores.r_policy_rejected.clone());
            let (m_c, m_r) = match mean {
                // c(P+) == c(R+), so the batch mean of the reference scores is the mean of c.
                MeanMode::Batch => (c.iter().sum::<f64>() / 6.0, r.iter().sum::<f64>() / 6.0),
                MeanMode::Ema => {
                    let m = vec1(ganpo.means.current());
                    (m[0], m[4])
                }
            };
            let mean_sp = |s: &[f64], m: f64| {
                s.iter().map(|x| softplus(-(x - m))).sum::<f64>() / s.len() as f64
            };
            let expected = 0.5 * (mean_sp(&c, m_c) + mean_sp(&r, m_r));
            let got: f64 = ganpo.generator_loss(&same).loss.into_scalar().elem();
            assert!(
                (got - expected).abs() < 1e-6,
                "{mean:?}: {got} vs closed form {expected}"
            );
            if mean == MeanMode::Batch {
                // The closed form at identical latents with batch means is near log 2 when scores agree.
                assert!(got > 0.0 && got < 1.5);
            }
        }
    });
}

#[test]
fn ema_means_start_at_the_first_batch_and_then_blend_with_the_momentum() {
    on_test_backend!(|A, device| {
        let config = GanpoConfig {
            discriminator: DiscriminatorConfig::Mlp(MlpDiscriminatorConfig {
                hidden: 8,
                dropout: 0.0,
                ..Default::default()
            }),
            momentum: 0.75,
            ..Default::default()
        };
        let ganpo = config.init::<A>(8, &device);
        assert_eq!(ganpo.means.update_count(), 0);
        let b1 = batch(&device, 1.0);
        let b2 = batch(&device, -1.0);
        // Converge the spectral-norm vectors first, so that eval-mode scores equal the scores of the
        // next training pass (which moves them once more); scoring does not touch the means.
        for _ in 0..100 {
            let _ = ganpo.score(&b1, Mode::Train);
        }
        assert_eq!(ganpo.means.update_count(), 0);
        let m1 = vec1(ganpo.score(&b1, Mode::Eval).batch_means());
        let _ = ganpo.discriminator_loss(&b1);
        let after1 = vec1(ganpo.means.current());
        for (a, b) in after1.iter().zip(&m1) {
            assert!(
                (a - b).abs() < 1e-5,
                "first update should copy the batch means: {a} vs {b}"
            );
        }
        let m2 = vec1(ganpo.score(&b2, Mode::Eval).batch_means());
        let _ = ganpo.discriminator_loss(&b2);
        let after2 = vec1(ganpo.means.current());
        for i in 0..6 {
            let want = 0.75 * after1[i] + 0.25 * m2[i];
            assert!(
                (after2[i] - want).abs() < 1e-5,
                "mean {i}: {} vs {want}",
                after2[i]
            );
        }
        assert_eq!(ganpo.means.update_count(), 2);
    });
}

#[test]
fn batch_mode_leaves_the_running_means_alone() {
    on_test_backend!(|A, device| {
        let ganpo = GanpoConfig {
            discriminator: mlp(),
            mean: MeanMode::Batch,
            ..Default::default()
        }
        .init::<A>(8, &device);
        let _ = ganpo.discriminator_loss(&batch(&device, 0.3));
        assert_eq!(ganpo.means.update_count(), 0);
    });
}

#[test]
fn generator_term_is_deterministic_and_scaled_by_adv_weight() {
    on_test_backend!(|A, device| {
        let ganpo = GanpoConfig {
            adv_weight: 0.25,
            ..Default::default()
        }
        .init::<A>(8, &device);
        let b = batch(&device, 0.7);
        let _ = ganpo.discriminator_loss(&b.detach_policy());
        let g1 = ganpo.generator_loss(&b);
        let g2 = ganpo.generator_loss(&b);
        let (l1, l2): (f64, f64) = (
            g1.loss.into_scalar().elem(),
            g2.loss.clone().into_scalar().elem(),
        );
        assert_eq!(l1, l2, "dropout leaked into the generator pass");
        let term: f64 = g2.term.into_scalar().elem();
        assert!((term - 0.25 * l2).abs() < 1e-7);
        assert_eq!(g2.metrics.get("gan/gen_loss"), Some(l2));
    });
}

#[test]
fn running_means_and_spectral_state_survive_a_save_and_load() {
    on_test_backend!(|A, device| {
        let config = GanpoConfig::default();
        let ganpo = config.init::<A>(8, &device);
        let b = batch(&device, 0.4);
        for _ in 0..3 {
            let _ = ganpo.discriminator_loss(&b.detach_policy());
        }
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = recorder.record(ganpo.clone().into_record(), ()).unwrap();
        let loaded = config
            .init::<A>(8, &device)
            .load_record(recorder.load(bytes, &device).unwrap());
        assert_eq!(loaded.means.update_count(), 3);
        assert_eq!(vec1(loaded.means.current()), vec1(ganpo.means.current()));
        let g =
            |m: &ganpo_core::Ganpo<A>| -> f64 { m.generator_loss(&b).loss.into_scalar().elem() };
        assert_eq!(g(&loaded), g(&ganpo));
    });
}

/// GANPO composes with every base loss (SimPO, SFT and ORPO without reference log-probs): the policy's
/// log-probs get a gradient and the latents' gradient is exactly the regulariser's.
#[test]
fn plugs_into_every_base_loss() {
    on_test_backend!(|A, device| {
        let ganpo = GanpoConfig {
            discriminator: mlp(),
            ..Default::default()
        }
        .init::<A>(8, &device);
        let b = batch(&device, 0.5);
        let _ = ganpo.discriminator_loss(&b.detach_policy());
        let fresh = || LatentBatch {
            policy_chosen: b.policy_chosen.clone().detach().require_grad(),
            ..b.clone()
        };
        for kind in LossKind::ALL {
            let (b, b_alone) = (fresh(), fresh());
            let logps =
                Tensor::<A, 1>::from_floats([-8.0, -9.5, -7.0, -12.0, -6.0, -10.0], &device)
                    .require_grad();
            let reference =
                Tensor::<A, 1>::from_floats([-8.5, -9.0, -7.5, -11.0, -6.5, -9.0], &device);
            let rows_reference = reference.clone();
            let inputs = PreferenceInputs {
                policy_chosen: logps.clone().slice(s![0..3]),
                policy_rejected: logps.clone().slice(s![3..6]),
                // SimPO and SFT run without reference log-probs, as they are given.
                reference: kind
                    .needs_reference()
                    .then(|| (reference.clone().slice(s![0..3]), reference.slice(s![3..6]))),
                lengths: PairLengths::new(vec![4, 5, 3], vec![6, 5, 4]).unwrap(),
                logit_sums: None,
                wpo_log_weights: None,
                // ORPO's NLL term: the chosen sequences with three prompt tokens of -1 each.
                chosen_sequence: Some((
                    logps.clone().slice(s![0..3]).sub_scalar(3.0),
                    Tensor::from_floats([7.0, 8.0, 6.0], &device),
                )),
            };
            let base = if kind.is_unpaired() {
                // KTO: the six sequences as unpaired examples, the first three desirable, their
                // KL rows the reference's log-probs shifted.
                let unpaired = UnpairedInputs {
                    policy: logps.clone(),
                    kl: (
                        rows_reference.clone().add_scalar(0.5),
                        rows_reference.clone(),
                    ),
                    reference: rows_reference,
                    desirable: vec![true, true, true, false, false, false],
                    logit_sums: None,
                };
                let loss = PreferenceLoss::single(kind);
                loss.compute_unpaired(&unpaired).unwrap()
            } else {
                let loss = PreferenceLoss {
                    label_smoothing: 0.1,
                    ..PreferenceLoss::single(kind)
                };
                loss.compute(&inputs).unwrap()
            };
            let grads = (base.loss + ganpo.generator_loss(&b).term).backward();
            assert!(logps.grad(&grads).is_some(), "{}", kind.name());
            // The base loss sees no latents: the latents' gradient is the regulariser's alone.
            let with_base = b.policy_chosen.grad(&grads).unwrap();
            let alone_grads = ganpo.generator_loss(&b_alone).term.backward();
            let alone = b_alone.policy_chosen.grad(&alone_grads).unwrap();
            let total: f64 = with_base.clone().abs().sum().into_scalar().elem();
            let diff: f64 = (with_base - alone).abs().max().into_scalar().elem();
            assert!(
                total > 0.0 && diff < 1e-6,
                "{}: {total} {diff}",
                kind.name()
            );
        }
    });
}

#[test]
fn pooling_selects_the_mask() {
    let device = Default::default();
    let attention = Tensor::<NdArray, 2, Bool>::from_data([[true, true, false]], &device);
    let completion = Tensor::<NdArray, 2, Bool>::from_data([[false, true, false]], &device);
    let pick = |p: Pooling| {
        p.select(attention.clone(), completion.clone())
            .map(|m| m.into_data().to_vec::<bool>().unwrap())
    };
    assert_eq!(pick(Pooling::Sequence), Some(vec![true, true, false]));
    assert_eq!(pick(Pooling::Completion), Some(vec![false, true, false]));
    assert_eq!(pick(Pooling::None), None);
}

/// A "policy" whose latents are the data plus a learned offset; the reference has offset 0.
#[derive(Module, Debug)]
struct Offset<B: Backend> {
    shift: Param<Tensor<B, 1>>,
}

impl<B: Backend> Offset<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        x + self.shift.val().unsqueeze::<3>()
    }
}

#[test]
fn toy_loop_discriminators_separate_and_the_generator_pulls_the_policy_back() {
    on_test_backend!(|A, device| {
        A::seed(&device, 3);
        let d = 8;
        let config = GanpoConfig {
            discriminator: DiscriminatorConfig::Transformer(TransformerDiscriminatorConfig {
                hidden: 16,
                layers: 1,
                heads: 2,
                ff: 32,
                max_positions: 8,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut ganpo = config.init::<A>(d, &device);
        let mut policy = Offset {
            shift: Param::from_tensor(Tensor::<A, 1>::ones([d], &device) * 0.6),
        };
        let mut d_optim = AdamWConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(0.01)
            .init();
        let mut p_optim = AdamWConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(0.0)
            .init();
        let data = |shift: f64| {
            Tensor::<A, 3>::random([8, 6, d], Distribution::Normal(shift, 1.0), &device)
        };

        let mut step = |ganpo: ganpo_core::Ganpo<A>, policy: &Offset<A>, train_policy: bool| {
            let (xc, xr) = (data(0.5), data(-0.5));
            let batch = LatentBatch {
                policy_chosen: policy.forward(xc.clone()),
                policy_rejected: policy.forward(xr.clone()),
                reference_chosen: xc,
                reference_rejected: xr,
                chosen_mask: None,
                rejected_mask: None,
            };
            let out = ganpo.discriminator_loss(&batch.detach_policy());
            let grads = GradientsParams::from_grads(out.loss.backward(), &ganpo);
            let ganpo = d_optim.step(1e-3, ganpo, grads);
            let generator = train_policy.then(|| ganpo.generator_loss(&batch));
            (ganpo, out.metrics, generator)
        };

        // Phase A: the policy is off by 0.6 in every coordinate; only the discriminators learn.
        let mut first = None;
        let mut last = None;
        for _ in 0..120 {
            let (g, metrics, _) = step(ganpo, &policy, false);
            ganpo = g;
            first.get_or_insert_with(|| metrics.clone());
            last = Some(metrics);
        }
        let (first, last) = (first.unwrap(), last.unwrap());
        let sep = |m: &ganpo_core::metrics::Metrics<A>| {
            (m.get("gan/d_chosen_ref_vs_policy").unwrap()
                + m.get("gan/d_rejected_ref_vs_policy").unwrap())
                / 2.0
        };
        let loss = |m: &ganpo_core::metrics::Metrics<A>| {
            m.get("gan/d_chosen_loss").unwrap() + m.get("gan/d_rejected_loss").unwrap()
        };
        assert!(
            sep(&last) >= 0.9,
            "discriminators did not separate policy from reference: {}",
            sep(&last)
        );
        assert!(
            loss(&last) < loss(&first) - 0.2,
            "discriminator loss {} -> {}",
            loss(&first),
            loss(&last)
        );
        let drift_before = last.get("gan/latent_drift").unwrap();

        // Phase B: the generator term alone moves the policy; the latents come back together.
        for _ in 0..150 {
            let (g, _, generator) = step(ganpo, &policy, true);
            ganpo = g;
            let grads = GradientsParams::from_grads(generator.unwrap().term.backward(), &policy);
            policy = p_optim.step(2e-2, policy, grads);
        }
        let shift: Vec<f32> = policy.shift.val().into_data().to_vec().unwrap();
        let norm = shift.iter().map(|s| s * s).sum::<f32>().sqrt();
        let start = 0.6 * (d as f32).sqrt();
        assert!(
            norm < 0.35 * start,
            "policy offset norm {start} -> {norm}: generator did not pull it back"
        );
        let (_, metrics, _) = step(ganpo, &policy, false);
        let drift_after = metrics.get("gan/latent_drift").unwrap();
        assert!(
            drift_after < 0.8 * drift_before,
            "latent drift {drift_before} -> {drift_after}"
        );
    });
}

#[test]
fn invalid_settings_are_named() {
    let bad_heads = GanpoConfig {
        discriminator: DiscriminatorConfig::Transformer(TransformerDiscriminatorConfig {
            hidden: 30,
            heads: 4,
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = bad_heads.validate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid GANPO setting `discriminator.heads` = 4: expected a divisor of discriminator.hidden"
    );
    let momentum = GanpoConfig {
        momentum: 1.0,
        ..Default::default()
    };
    assert_eq!(momentum.validate().unwrap_err().key, "momentum");
    let weight = GanpoConfig {
        adv_weight: f64::NAN,
        ..Default::default()
    };
    assert_eq!(weight.validate().unwrap_err().key, "adv_weight");
    assert!(GanpoConfig::default().validate().is_ok());
    let parsed: GanpoConfig =
        serde_json::from_str(r#"{"adv_weight": 0.5, "pooling": "completion", "mean": "batch", "discriminator": {"kind": "mlp"}}"#)
            .unwrap();
    assert_eq!(
        (parsed.adv_weight, parsed.pooling, parsed.mean),
        (0.5, Pooling::Completion, MeanMode::Batch)
    );
}
