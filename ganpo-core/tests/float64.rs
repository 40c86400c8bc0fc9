//! Checks that need float64: parity with TRL to 1e-10, exact log-prob gradients, and
//! finite-difference gradients of the GANPO discriminator and generator losses.
//!
//! burn keys a device's default float type per process, so every test here first switches the CPU
//! device to f64 (and this binary never creates f32 tensors).

mod common;

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::record::{BinBytesRecorder, DoublePrecisionSettings, Recorder};
use burn::tensor::Device;
use burn::tensor::{DType, Distribution};
use ganpo_core::discriminator::{
    DiscriminatorConfig, MlpDiscriminatorConfig, TransformerDiscriminatorConfig,
};
use ganpo_core::ganpo::{Ganpo, GanpoConfig, LatentBatch, MeanMode, quad_losses};
use ganpo_core::mode::Mode;
use ganpo_core::sequence_logps;

type Inner = NdArray<f64>;
type B = Autodiff<Inner>;

fn device() -> burn::backend::ndarray::NdArrayDevice {
    let device = Default::default();
    let _ = burn::tensor::set_default_dtypes::<Inner>(&device, DType::F64, DType::I64);
    assert_eq!(
        Tensor::<Inner, 1>::zeros([1], &device).dtype(),
        DType::F64,
        "device is not in f64"
    );
    device
}

#[test]
fn losses_and_metrics_match_trl_to_1e10() {
    device();
    common::losses::check_all::<Inner>(1e-10, 1e-12);
}

#[test]
fn ld_dpo_wpo_and_orpo_from_logits_match_trl_to_1e10() {
    device();
    common::token_losses::check_all::<Inner>(1e-10, 1e-14);
}

#[test]
fn kto_matches_trl_to_1e10() {
    device();
    common::kto_losses::check_all::<Inner>(1e-10, 1e-14);
}

#[test]
fn sequence_logps_match_trl_to_1e12() {
    device();
    common::logprobs::check::<Inner>(1e-12);
}

#[test]
fn sequence_logps_gradient_is_onehot_minus_softmax_on_masked_positions_only() {
    let device = device();
    let case = &common::logprobs::cases()[0];
    let [b, s, v] = case.shape;
    let logits =
        Tensor::<B, 3>::from_data(TensorData::new(case.logits.clone(), [b, s, v]), &device)
            .require_grad();
    let labels =
        Tensor::<B, 2, Int>::from_data(TensorData::new(case.labels.clone(), [b, s]), &device);
    let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(case.mask.clone(), [b, s]), &device);
    let grads = sequence_logps(logits.clone(), labels, mask)
        .logps
        .sum()
        .backward();
    let grad: Vec<f64> = logits.grad(&grads).unwrap().into_data().to_vec().unwrap();
    for row in 0..b * s {
        let x = &case.logits[row * v..(row + 1) * v];
        let max = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = x.iter().map(|xi| (xi - max).exp()).sum();
        for (j, xj) in x.iter().enumerate() {
            let onehot = if case.labels[row] == j as i64 {
                1.0
            } else {
                0.0
            };
            let want = if case.mask[row] {
                onehot - (xj - max).exp() / z
            } else {
                0.0
            };
            assert!(
                (grad[row * v + j] - want).abs() < 1e-12,
                "row {row} col {j}"
            );
        }
    }
}

// ---- GANPO finite differences ------------------------------------------------------------

const D_MODEL: usize = 6;

fn configs() -> Vec<(&'static str, DiscriminatorConfig)> {
    vec![
        (
            "mlp",
            DiscriminatorConfig::Mlp(MlpDiscriminatorConfig {
                hidden: 5,
                layers: 2,
                dropout: 0.0,
            }),
        ),
        (
            "transformer",
            DiscriminatorConfig::Transformer(TransformerDiscriminatorConfig {
                hidden: 8,
                layers: 1,
                heads: 2,
                ff: 12,
                dropout: 0.0,
                max_positions: 16,
            }),
        ),
    ]
}

fn batch(device: &Device<B>, seed: u64) -> LatentBatch<B> {
    B::seed(device, seed);
    let x = |shift: f64| {
        Tensor::<B, 3>::random([3, 5, D_MODEL], Distribution::Normal(shift, 1.0), device)
    };
    let mask = |lens: [usize; 3]| {
        let data: Vec<bool> = lens
            .iter()
            .flat_map(|&l| (0..5).map(move |i| i < l))
            .collect();
        Some(Tensor::<B, 2, Bool>::from_data(
            TensorData::new(data, [3, 5]),
            device,
        ))
    };
    LatentBatch {
        policy_chosen: x(0.3),
        policy_rejected: x(-0.2),
        reference_chosen: x(0.0),
        reference_rejected: x(0.1),
        chosen_mask: mask([5, 3, 4]),
        rejected_mask: mask([2, 5, 1]),
    }
}

/// A GANPO module whose spectral-norm vectors have converged (so that one more power-iteration
/// step moves them only to second order, and finite differences see the same function).
fn converged(config: &GanpoConfig, device: &Device<B>) -> Ganpo<B> {
    let ganpo = config.init::<B>(D_MODEL, device);
    fn sn_layers(d: &ganpo_core::Discriminator<B>) -> Vec<&ganpo_core::spectral_norm::SnLinear<B>> {
        match d {
            ganpo_core::Discriminator::Mlp(m) => m.layers.iter().collect(),
            ganpo_core::Discriminator::Transformer(t) => {
                std::iter::once(&t.project_in).chain(&t.head).collect()
            }
        }
    }
    for d in [&ganpo.chosen, &ganpo.rejected] {
        for layer in sn_layers(d) {
            for _ in 0..2000 {
                layer.normalized_weight(Mode::Train);
            }
        }
    }
    ganpo
}

/// Adds `h * grad` to every parameter that has a gradient in `grads` (running state untouched).
struct Shift<'a> {
    grads: &'a GradientsParams,
    h: f64,
}

impl ModuleMapper<B> for Shift<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = match self.grads.get::<Inner, D>(id) {
            Some(g) => (tensor.inner() + g * self.h)
                .pipe(Tensor::from_inner)
                .require_grad(),
            None => tensor,
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

/// A module with exactly the state saved in `record` (parameters, spectral-norm vectors, means).
fn fresh(config: &GanpoConfig, record: &[u8], device: &Device<B>) -> Ganpo<B> {
    let record = Recorder::load(
        &BinBytesRecorder::<DoublePrecisionSettings>::default(),
        record.to_vec(),
        device,
    )
    .expect("record loads");
    config.init::<B>(D_MODEL, device).load_record(record)
}

fn snapshot(module: Ganpo<B>) -> Vec<u8> {
    BinBytesRecorder::<DoublePrecisionSettings>::default()
        .record(module.into_record(), ())
        .expect("record saves")
}

fn scalar(t: Tensor<B, 1>) -> f64 {
    t.into_scalar().elem()
}

/// The discriminator loss as a function of parameters and latents that autodiff differentiates:
/// in `batch` mode the means are part of it; in `ema` mode they are constants (the means the
/// first update produces at the unperturbed point), which this checks against
/// `discriminator_loss` itself.
fn d_loss_with_fixed_means(
    config: &GanpoConfig,
    record: &[u8],
    batch: &LatentBatch<B>,
    device: &Device<B>,
) -> impl Fn(Ganpo<B>, &LatentBatch<B>) -> f64 {
    let fixed = match config.mean {
        MeanMode::Batch => None,
        MeanMode::Ema => {
            let m0 = fresh(config, record, device)
                .score(&batch.detach_policy(), Mode::Train)
                .batch_means()
                .detach();
            let (c, r) = quad_losses(
                &fresh(config, record, device).score(batch, Mode::Train),
                m0.clone(),
            );
            let direct = scalar(fresh(config, record, device).discriminator_loss(batch).loss);
            assert!(
                (scalar(c + r) - direct).abs() < 1e-12,
                "ema loss is not the quad loss at the updated means"
            );
            Some(m0)
        }
    };
    move |module: Ganpo<B>, batch: &LatentBatch<B>| match &fixed {
        None => scalar(module.discriminator_loss(batch).loss),
        Some(m0) => {
            let (c, r) = quad_losses(&module.score(batch, Mode::Train), m0.clone());
            scalar(c + r)
        }
    }
}

#[test]
fn discriminator_loss_parameter_gradients_match_finite_differences() {
    let device = device();
    for (name, disc) in configs() {
        for mean in [MeanMode::Ema, MeanMode::Batch] {
            let config = GanpoConfig {
                discriminator: disc.clone(),
                mean,
                ..Default::default()
            };
            let record = snapshot(converged(&config, &device));
            let batch = batch(&device, 11).detach_policy();

            let loss = d_loss_with_fixed_means(&config, &record, &batch, &device);
            let module = fresh(&config, &record, &device);
            let grads = GradientsParams::from_grads(
                module.discriminator_loss(&batch).loss.backward(),
                &module,
            );
            let mut sq = 0.0;
            struct SqNorm<'a>(&'a GradientsParams, &'a mut f64);
            impl ModuleMapper<B> for SqNorm<'_> {
                fn map_float<const D: usize>(
                    &mut self,
                    p: Param<Tensor<B, D>>,
                ) -> Param<Tensor<B, D>> {
                    if let Some(g) = self.0.get::<Inner, D>(p.id) {
                        *self.1 += g.square().sum().into_scalar();
                    }
                    p
                }
            }
            let _ = fresh(&config, &record, &device).map(&mut SqNorm(&grads, &mut sq));
            assert!(sq > 1e-8, "{name}: no gradient reached the discriminators");

            // d/dh L(theta + h g) at h = 0 equals |g|^2.
            let h = 1e-6 / sq.sqrt();
            let at = |h: f64| {
                loss(
                    fresh(&config, &record, &device).map(&mut Shift { grads: &grads, h }),
                    &batch,
                )
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (fd - sq).abs() <= 1e-5 * sq,
                "{name} {mean:?}: finite difference {fd} vs |g|^2 {sq}"
            );
        }
    }
}

/// Central differences of `f` with respect to a few entries of `x`, against autodiff's gradient.
fn check_input_gradient(
    what: &str,
    x: &Tensor<B, 3>,
    grad: Vec<f64>,
    f: impl Fn(Tensor<B, 3>) -> f64,
) {
    let values: Vec<f64> = x.clone().into_data().to_vec().unwrap();
    let shape = x.dims();
    let mut checked = 0;
    for idx in (0..values.len()).step_by(7) {
        let h = 1e-6;
        let bump = |d: f64| {
            let mut v = values.clone();
            v[idx] += d;
            f(Tensor::from_data(TensorData::new(v, shape), &x.device()))
        };
        let fd = (bump(h) - bump(-h)) / (2.0 * h);
        assert!(
            (fd - grad[idx]).abs() <= 1e-6 * (1.0 + fd.abs()),
            "{what}[{idx}]: fd {fd} vs autodiff {}",
            grad[idx]
        );
        checked += 1;
    }
    assert!(checked > 10);
    assert!(
        grad.iter().any(|g| g.abs() > 1e-6),
        "{what}: gradient is zero everywhere"
    );
}

#[test]
fn discriminator_loss_input_gradients_match_finite_differences() {
    let device = device();
    for (name, disc) in configs() {
        for mean in [MeanMode::Ema, MeanMode::Batch] {
            let config = GanpoConfig {
                discriminator: disc.clone(),
                mean,
                ..Default::default()
            };
            let record = snapshot(converged(&config, &device));
            let mut batch = batch(&device, 5).detach_policy();
            batch.reference_chosen = batch.reference_chosen.require_grad();
            let loss = d_loss_with_fixed_means(&config, &record, &batch, &device);
            let grads = fresh(&config, &record, &device)
                .discriminator_loss(&batch)
                .loss
                .backward();
            let grad = batch
                .reference_chosen
                .grad(&grads)
                .unwrap()
                .into_data()
                .to_vec()
                .unwrap();
            check_input_gradient(
                &format!("{name} {mean:?} d_loss/d R+"),
                &batch.reference_chosen,
                grad,
                |x| {
                    let b = LatentBatch {
                        reference_chosen: x,
                        ..batch.clone()
                    };
                    loss(fresh(&config, &record, &device), &b)
                },
            );
        }
    }
}

#[test]
fn generator_loss_gradients_match_finite_differences_and_reach_only_the_policy() {
    let device = device();
    for (name, disc) in configs() {
        for mean in [MeanMode::Ema, MeanMode::Batch] {
            let config = GanpoConfig {
                discriminator: disc.clone(),
                mean,
                adv_weight: 0.7,
                ..Default::default()
            };
            let module = converged(&config, &device);
            // One discriminator pass fills the running means.
            let base = batch(&device, 9);
            let _ = module.discriminator_loss(&base.detach_policy());
            let record = snapshot(module);

            let mut batch = base.clone();
            batch.policy_chosen = batch.policy_chosen.require_grad();
            batch.policy_rejected = batch.policy_rejected.require_grad();
            let module = fresh(&config, &record, &device);
            let out = module.generator_loss(&batch);
            assert!((scalar(out.term.clone()) - 0.7 * scalar(out.loss.clone())).abs() < 1e-12);
            let mut grads = out.term.backward();
            let disc_grads = GradientsParams::from_module(&mut grads, &module);
            assert_eq!(
                disc_grads.len(),
                0,
                "{name}: generator gradient leaked into the discriminators"
            );
            for (side, x) in [("P+", &batch.policy_chosen), ("P-", &batch.policy_rejected)] {
                let grad = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
                check_input_gradient(&format!("{name} {mean:?} d_term/d {side}"), x, grad, |x| {
                    let b = if side == "P+" {
                        LatentBatch {
                            policy_chosen: x,
                            ..batch.clone()
                        }
                    } else {
                        LatentBatch {
                            policy_rejected: x,
                            ..batch.clone()
                        }
                    };
                    scalar(fresh(&config, &record, &device).generator_loss(&b).term)
                });
            }
        }
    }
}
