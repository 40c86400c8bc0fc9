//! ganpo against the official GANPO code (enyijiang/GANPO, GANPO_trl.py at 6ea5900), number for
//! number: its `TransformerDiscriminator`s, loaded from the state dicts the official code
//! initialized, trained for 3 steps in the official order with `pooling = "none"` (every
//! position, as the official calls pass no mask), EMA running means and torch's AdamW; the
//! discriminator losses, generator halves, DPO term, total loss, running means, the generator
//! term's gradient on the policy latents and the discriminators' weights after every step all
//! match within 1e-5 (f32), but for the attention's key bias, whose gradient is zero in exact
//! arithmetic (see `check`). On the backend `GANPO_TEST_BACKEND` names (the CPU by default).
//! Fixtures: tools/fixtures/official_ganpo_fixtures.py.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn_store::ModuleSnapshot;
use ganpo_core::discriminator::{
    Discriminator, DiscriminatorConfig, TransformerDiscriminator, TransformerDiscriminatorConfig,
};
use ganpo_core::ganpo::LatentBatch;
use ganpo_core::{Ganpo, GanpoConfig, MeanMode, PairLengths, Pooling, PreferenceInputs};
use ganpo_core::{PreferenceLoss, metrics::Metrics};
use ganpo_models::CausalLm;
use ganpo_models::weights::read_safetensors;
use ganpo_train::official::load_official_discriminator;
use ganpo_train::train::LogEntry;
use serde_json::Value;

use common::{B, fixtures};

/// Relative (to max(1, |want|)) tolerance of every comparison.
const TOL: f64 = 1e-5;

struct Case {
    file: PathBuf,
    meta: Value,
    tensors: HashMap<String, TensorData>,
}

impl Case {
    fn load(name: &str) -> Self {
        let dir = fixtures().join("official_ganpo");
        let file = dir.join(format!("{name}.safetensors"));
        let meta = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
        let tensors = read_safetensors(&file)
            .unwrap()
            .into_iter()
            .map(|t| (t.full_path(), t.to_data().unwrap()))
            .collect();
        Self {
            file,
            meta: serde_json::from_str(&meta).unwrap(),
            tensors,
        }
    }

    fn tensor<A: Backend, const D: usize>(&self, name: &str, device: &A::Device) -> Tensor<A, D> {
        let data = self
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"));
        Tensor::from_data(data.clone(), device)
    }

    /// The official discriminator sizes, as ganpo's configuration.
    fn ganpo_config(&self) -> GanpoConfig {
        let d = &self.meta["discriminator"];
        let get = |k: &str| d[k].as_u64().unwrap() as usize;
        GanpoConfig {
            discriminator: DiscriminatorConfig::Transformer(TransformerDiscriminatorConfig {
                hidden: get("hidden"),
                layers: get("layers"),
                heads: get("heads"),
                ff: get("ff"),
                dropout: 0.0,
                max_positions: get("max_positions"),
            }),
            adv_weight: self.meta["adv_weight"].as_f64().unwrap(),
            pooling: Pooling::None,
            mean: MeanMode::Ema,
            momentum: self.meta["momentum"].as_f64().unwrap(),
            init_from: None,
        }
    }

    fn d_model(&self) -> usize {
        self.meta["discriminator"]["input_dim"].as_u64().unwrap() as usize
    }

    /// The official state dicts stored under `prefix` (`initial`, `step1`, ...), as a [`Ganpo`].
    fn discriminators<A: Backend>(&self, prefix: &str, device: &A::Device) -> Ganpo<A> {
        let mut ganpo = self.ganpo_config().init::<A>(self.d_model(), device);
        let load = |d: Discriminator<A>, side: &str| {
            let prefix = format!("{prefix}.disc_{side}.");
            let loaded = load_official_discriminator(transformer(d), &self.file, &prefix);
            Discriminator::Transformer(loaded.unwrap_or_else(|e| panic!("{prefix}: {e}")))
        };
        ganpo.chosen = load(ganpo.chosen, "chosen");
        ganpo.rejected = load(ganpo.rejected, "rejected");
        ganpo
    }
}

fn transformer<A: Backend>(d: Discriminator<A>) -> TransformerDiscriminator<A> {
    match d {
        Discriminator::Transformer(t) => t,
        Discriminator::Mlp(_) => unreachable!("configured as a transformer"),
    }
}

fn close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= TOL * want.abs().max(1.0),
        "{what}: ganpo {got}, official {want}"
    );
}

fn metric<A: Backend>(m: &Metrics<A>, name: &str) -> f64 {
    m.to_vec()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
}

fn values<A: Backend, const D: usize>(t: Tensor<A, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec().unwrap()
}

fn all_close(what: &str, got: Vec<f64>, want: Vec<f64>) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: sizes");
    let mut worst: f64 = 0.0;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        close(&format!("{what}[{i}]"), *g, *w);
        worst = worst.max((g - w).abs());
    }
    worst
}

/// Every tensor of both discriminators (weights, biases, spectral-norm vectors), by path.
fn snapshot<A: Backend>(g: &Ganpo<A>) -> Vec<(String, Vec<f64>)> {
    [("chosen", &g.chosen), ("rejected", &g.rejected)]
        .into_iter()
        .flat_map(|(side, d)| {
            d.collect(None, None, true).into_iter().map(move |t| {
                let data = t.to_data().unwrap().convert::<f64>();
                (format!("{side}.{}", t.full_path()), data.to_vec().unwrap())
            })
        })
        .collect()
}

/// The largest change of any discriminator tensor between two snapshots.
fn moved(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)]) -> f64 {
    a.iter()
        .zip(b)
        .flat_map(|((_, x), (_, y))| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f64::max)
}

fn check<A: AutodiffBackend>(name: &str, device: A::Device) {
    let case = Case::load(name);
    let mut ganpo = case.discriminators::<A>("initial", &device);
    let initial = snapshot(&ganpo);
    let weight_decay = case.meta["weight_decay"].as_f64().unwrap();
    // torch.optim.AdamW's defaults, as the official create_optimizer_and_scheduler makes it.
    let mut optim = AdamWConfig::new()
        .with_weight_decay(weight_decay as f32)
        .with_epsilon(1e-8)
        .init::<A, Ganpo<A>>();
    let beta = case.meta["beta"].as_f64().unwrap();
    let steps = case.meta["steps"].as_array().unwrap();
    // The learning rates of the steps so far.
    let mut rates = 0.0;
    assert_eq!(steps.len(), 3);
    for (t, step) in steps.iter().enumerate() {
        let at = |k: &str| format!("step{t}.{k}");
        // The policy latents as leaves of their own (`tracked`) or constants.
        let latents = |tracked: bool| {
            let policy = |k: &str| {
                let x: Tensor<A, 3> = case.tensor(&at(k), &device);
                if tracked { x.require_grad() } else { x }
            };
            LatentBatch::<A> {
                policy_chosen: policy("policy_chosen"),
                policy_rejected: policy("policy_rejected"),
                reference_chosen: case.tensor(&at("reference_chosen"), &device),
                reference_rejected: case.tensor(&at("reference_rejected"), &device),
                chosen_mask: None,
                rejected_mask: None,
            }
        };
        let s = |k: &str| step[k].as_f64().unwrap();

        // 1. The discriminators' step on detached latents (train mode, running means updated).
        let d = ganpo.discriminator_loss(&latents(false));
        close(
            &format!("{name} step {t} disc_loss_pos"),
            metric(&d.metrics, "gan/d_chosen_loss"),
            s("disc_loss_pos"),
        );
        close(
            &format!("{name} step {t} disc_loss_neg"),
            metric(&d.metrics, "gan/d_rejected_loss"),
            s("disc_loss_neg"),
        );
        let grads = GradientsParams::from_grads(d.loss.backward(), &ganpo);
        ganpo = optim.step(s("lr"), ganpo, grads);
        let official_means = [
            "running_mean_pos",
            "running_mean_neg",
            "running_mean_policy",
            "running_mean_pos_rej",
            "running_mean_neg_rej",
            "running_mean_policy_rejected_rej",
        ]
        .map(|k| step["running_means"][k].as_f64().unwrap());
        all_close(
            &format!("{name} step {t} running means"),
            values(ganpo.means.current()),
            official_means.to_vec(),
        );

        // 2. The policy loss through the updated discriminators (eval mode, frozen).
        let batch = latents(true);
        let g = ganpo.generator_loss(&batch);
        for (ours, theirs) in [
            ("gan/gen_loss_chosen", "g_loss_mimic"),
            ("gan/gen_loss_rejected", "g_loss_mimic_rej"),
        ] {
            close(
                &format!("{name} step {t} {theirs}"),
                metric(&g.metrics, ours),
                s(theirs),
            );
        }
        let logps = |k: &str| {
            let v: Vec<f32> = step["logps"][k]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            Tensor::<A, 1>::from_floats(v.as_slice(), &device)
        };
        let n = batch.policy_chosen.dims()[0];
        let dpo = PreferenceLoss {
            beta,
            ..PreferenceLoss::default()
        }
        .compute(&PreferenceInputs {
            policy_chosen: logps("policy_chosen"),
            policy_rejected: logps("policy_rejected"),
            reference: Some((logps("reference_chosen"), logps("reference_rejected"))),
            lengths: PairLengths::new(vec![1; n], vec![1; n]).unwrap(),
            logit_sums: None,
            wpo_log_weights: None,
            chosen_sequence: None,
        })
        .unwrap()
        .loss;
        let dpo_value = values(dpo.clone())[0];
        close(
            &format!("{name} step {t} dpo_loss"),
            dpo_value,
            s("dpo_loss"),
        );
        let total = values(dpo + g.term.clone())[0];
        close(&format!("{name} step {t} loss"), total, s("loss"));
        let grads = g.term.backward();
        for side in ["chosen", "rejected"] {
            let latent = match side {
                "chosen" => &batch.policy_chosen,
                _ => &batch.policy_rejected,
            };
            let grad = latent
                .grad(&grads)
                .expect("the generator term reaches the latents");
            let want: Tensor<A::InnerBackend, 3> =
                case.tensor(&at(&format!("grad_policy_{side}")), &device);
            let worst = all_close(
                &format!("{name} step {t} gradient of the policy {side} latents"),
                values(grad),
                values(want.clone()),
            );
            assert!(worst <= TOL * values(want.abs().max()).first().unwrap().max(1e-3));
        }

        // 3. The discriminators' weights (and spectral-norm vectors) after the step.
        let ours = snapshot(&ganpo.valid());
        let theirs =
            snapshot(&case.discriminators::<A::InnerBackend>(&format!("step{t}"), &device));
        assert_eq!(ours.len(), theirs.len());
        rates += s("lr");
        for ((path, got), (path_theirs, want)) in ours.into_iter().zip(theirs) {
            assert_eq!(path, path_theirs);
            let what = format!("{name} step {t} {path}");
            if !path.ends_with("self_attn.in_proj_bias") {
                all_close(&what, got, want);
                continue;
            }
            // The key bias adds `q . b_k` to every score of a query, which the softmax ignores:
            // its gradient is zero but for float rounding, which AdamW normalizes into a step
            // of up to `lr` in either direction, in each implementation. The query and value
            // biases are compared as everything else; the key bias must stay within that bound.
            let d = got.len() / 3;
            for part in [0..d, 2 * d..3 * d] {
                all_close(&what, got[part.clone()].to_vec(), want[part].to_vec());
            }
            for i in d..2 * d {
                let bound = 2.0 * rates + TOL;
                assert!(
                    (got[i] - want[i]).abs() <= bound,
                    "{what}[{i}]: {} vs {}",
                    got[i],
                    want[i]
                );
            }
        }
    }
    // At the larger rate the weights moved far beyond the tolerance, so step 3's comparison
    // checks AdamW's update and not only the initial weights.
    let moved_by = moved(&initial, &snapshot(&ganpo));
    if name == "large_lr" {
        assert!(moved_by > 100.0 * TOL, "weights moved by {moved_by}");
    }
}

#[test]
fn three_steps_match_the_official_code_at_its_learning_rate() {
    let _turn = common::serial();
    on_test_backend!(|A, device| check::<A>("official_lr", device));
}

#[test]
fn three_steps_match_the_official_code_where_adamw_moves_the_weights() {
    let _turn = common::serial();
    on_test_backend!(|A, device| check::<A>("large_lr", device));
}

#[test]
fn a_state_dict_of_another_width_is_refused_naming_the_file_and_tensor() {
    let case = Case::load("large_lr");
    let mut config = case.ganpo_config();
    if let DiscriminatorConfig::Transformer(t) = &mut config.discriminator {
        t.hidden = 32;
        t.ff = 128;
    }
    let ganpo = config.init::<B>(case.d_model(), &Default::default());
    let err = load_official_discriminator(
        transformer(ganpo.chosen),
        &case.file,
        "initial.disc_chosen.",
    )
    .expect_err("refused")
    .to_string();
    assert!(err.contains("large_lr.safetensors"), "{err}");
    assert!(err.contains("project_in"), "{err}");
    let ganpo = case
        .ganpo_config()
        .init::<B>(case.d_model(), &Default::default());
    let err = load_official_discriminator(transformer(ganpo.chosen), &case.file, "nothing.")
        .expect_err("refused")
        .to_string();
    assert!(err.contains("no tensor named `nothing.*`"), "{err}");
}

/// The GANPO settings of the official checkpoints in `official_ganpo/disc_ckpts/` (latents of
/// width 32, the fixture policy's), starting from them.
fn wide_config(init_from: Option<PathBuf>) -> GanpoConfig {
    let mut config = Case::load("large_lr").ganpo_config();
    config.init_from = init_from;
    config
}

fn dir() -> PathBuf {
    fixtures().join("official_ganpo")
}

/// A run of the fixture policy (width 32) on the fixture pairs, two a batch, with GANPO starting
/// from the official checkpoints, writing to `out`.
fn from_the_official_checkpoints(out: &std::path::Path) -> ganpo_train::config::RunConfig {
    let mut config = ganpo_train::config::RunConfig::default();
    config.model.path = fixtures().join("policy");
    config.data.train = vec![fixtures().join("data/standard.jsonl")];
    config.train.output_dir = out.to_path_buf();
    config.train.batch_size = 2;
    config.ganpo = Some(wide_config(Some(dir().join("disc_ckpts"))));
    config
}

#[test]
fn the_trainer_starts_from_the_official_pt_checkpoints() {
    let _turn = common::serial();
    let out = tempfile::tempdir().unwrap();
    let config = from_the_official_checkpoints(out.path());
    let device = Default::default();
    let policy = ganpo_models::load_model::<B>(&config.model.path, &device)
        .unwrap()
        .model;
    let (train, pad) = common::dataset(&config).unwrap();
    let eval = train.subset(&[0, 1]);
    let start = |config: ganpo_train::config::RunConfig| {
        let policy = policy.clone();
        let (train, eval) = (train.clone(), eval.clone());
        ganpo_train::train::Trainer::new(config, policy, None, train, eval, pad, device)
    };
    let trainer = start(config.clone()).unwrap();
    // What the trainer read through the PyTorch reader equals the same tensors written as
    // safetensors by the fixture script.
    let mut expected = wide_config(None).init::<B>(32, &device);
    let file = dir().join("disc_ckpts.safetensors");
    for (side, prefix) in [("chosen", "disc_chosen."), ("rejected", "disc_rejected.")] {
        let slot = match side {
            "chosen" => &mut expected.chosen,
            _ => &mut expected.rejected,
        };
        let fresh = std::mem::replace(slot, wide_config(None).init::<B>(32, &device).chosen);
        let loaded = load_official_discriminator(transformer(fresh), &file, prefix).unwrap();
        *slot = Discriminator::Transformer(loaded);
    }
    let (got, want) = (snapshot(trainer.ganpo().unwrap()), snapshot(&expected));
    assert_eq!(got.len(), want.len());
    for ((path, g), (_, w)) in got.into_iter().zip(want) {
        assert_eq!(g, w, "{path}");
    }
    // Discriminators of another width than the checkpoints': refused by file and tensor.
    let mut wider = config;
    if let Some(g) = &mut wider.ganpo
        && let DiscriminatorConfig::Transformer(t) = &mut g.discriminator
    {
        t.hidden = 32;
        t.ff = 128;
    }
    let err = start(wider).err().expect("refused").to_string();
    assert!(
        err.contains("disc_chosen.pt") && err.contains("project_in"),
        "{err}"
    );
}

#[test]
fn files_that_are_not_discriminator_checkpoints_are_refused_by_name() {
    let ganpo = wide_config(None).init::<B>(32, &Default::default());
    for (file, expected) in [
        ("bad/truncated.pt", "not a readable PyTorch checkpoint"),
        ("bad/not_a_state_dict.pt", ""),
        ("missing.pt", "no such file"),
    ] {
        let path = dir().join(file);
        let err = load_official_discriminator(transformer(ganpo.chosen.clone()), &path, "")
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains(path.to_str().unwrap()) && err.contains(expected),
            "{file}: {err}"
        );
    }
    // A folder without the official file names.
    let err = ganpo_train::official::load_official_checkpoints(ganpo, &dir().join("bad"))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("disc_chosen"), "{err}");
}

#[test]
fn ganpos_discriminators_written_in_the_official_layout_read_back_the_same() {
    let device = Default::default();
    let case = Case::load("large_lr");
    let ganpo = case.discriminators::<B>("step2", &device);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("disc_ckpts");
    ganpo_train::official::save_official_checkpoints(&ganpo, &dir).unwrap();
    // The official state-dict names, as the fixture's files hold them.
    let names = |path: &std::path::Path, prefix: &str| -> Vec<String> {
        let mut n: Vec<String> = read_safetensors(path)
            .unwrap()
            .into_iter()
            .map(|t| t.full_path())
            .filter_map(|p| p.strip_prefix(prefix).map(str::to_string))
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        names(&dir.join("disc_chosen.safetensors"), ""),
        names(&case.file, "initial.disc_chosen.")
    );
    let fresh = case.ganpo_config().init::<B>(case.d_model(), &device);
    let back = ganpo_train::official::load_official_checkpoints(fresh, &dir).unwrap();
    assert_eq!(snapshot(&back), snapshot(&ganpo));
}

/// Five DPO + GANPO steps of the trainer on backend `A`, from the official checkpoints so that no
/// random generator draws a weight (the fixture policy and these discriminators have no
/// dropout): every log line, and the policy's logits on a fixed input afterwards.
fn five_trainer_steps<A: AutodiffBackend>(device: A::Device) -> (Vec<LogEntry>, Vec<f64>) {
    let out = tempfile::tempdir().unwrap();
    let mut config = from_the_official_checkpoints(out.path());
    config.train.max_steps = Some(5);
    config.train.logging_steps = 1;
    config.train.lr = 1e-3;
    let policy = ganpo_models::load_model::<A>(&config.model.path, &device)
        .unwrap()
        .model;
    let (train, pad) = common::dataset(&config).unwrap();
    let eval = train.subset(&[0, 1]);
    let mut trainer =
        ganpo_train::train::Trainer::new(config, policy, None, train, eval, pad, device.clone())
            .unwrap();
    let mut logs = Vec::new();
    trainer.fit(|e| logs.push(e.clone())).unwrap();
    (logs, logits_on_a_fixed_input(trainer.policy(), &device))
}

/// `policy`'s logits on a fixed six-token input.
fn logits_on_a_fixed_input<A: Backend>(policy: &impl CausalLm<A>, device: &A::Device) -> Vec<f64> {
    let ids = Tensor::<A, 2, Int>::from_data([[5, 17, 42, 99, 3, 250]], device);
    let mask = Tensor::<A, 2, Bool>::from_data([[true; 6]], device);
    values(policy.forward(ids, mask).logits)
}

/// The trainer end to end on the backend under test: five DPO + GANPO steps (policy forward and
/// backward, the discriminators' step, both AdamWs, the running means, evaluation) log the same
/// metrics as the same run on the CPU, each within 1e-4 (relative), and leave the same policy.
/// A difference names the step and metric, which names the operation (`gan/d_chosen_loss` the
/// chosen discriminator's loss, `gan/gen_loss` the generator term, `logps/chosen` the policy's
/// log-probs, `grad_norm` its backward pass, ...).
#[test]
fn five_trainer_steps_of_dpo_and_ganpo_on_the_test_backend_match_the_cpu() {
    let _turn = common::serial();
    on_test_backend!(|A, device| {
        let (want, want_logits) = five_trainer_steps::<B>(Default::default());
        let (got, got_logits) = five_trainer_steps::<A>(device);
        let train_steps = want.iter().filter(|e| e.split == "train").count();
        assert_eq!(train_steps, 5, "one log line per step");
        let names: Vec<&str> = want[0].metrics.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            names.contains(&"gan/d_chosen_loss") && names.contains(&"gan/gen_loss"),
            "a GANPO run logs its discriminator losses: {names:?}"
        );
        assert_eq!(got.len(), want.len(), "log lines");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.step, g.split), (w.step, w.split));
            assert_eq!(
                g.metrics.len(),
                w.metrics.len(),
                "metrics of step {}",
                w.step
            );
            for ((name, gv), (wname, wv)) in g.metrics.iter().zip(&w.metrics) {
                assert_eq!(name, wname);
                // Accuracies threshold values compared here (rewards, discriminator scores,
                // logits): one at its threshold, equal within tolerance, may fall either side.
                if name.ends_with("accuracy") || name.ends_with("accuracies") {
                    continue;
                }
                assert!(
                    (gv - wv).abs() <= 1e-4 * (1.0 + wv.abs()),
                    "{} step {}, `{name}`: {gv} on the test backend, {wv} on the CPU",
                    w.split,
                    w.step
                );
            }
        }
        let largest_gap = |a: &[f64], b: &[f64]| {
            assert_eq!(a.len(), b.len());
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max)
        };
        let gap = largest_gap(&got_logits, &want_logits);
        assert!(
            gap <= 1e-4,
            "policy logits after 5 steps: {gap} from the CPU's"
        );
        let device = Default::default();
        let start = ganpo_models::load_model::<B>(&fixtures().join("policy"), &device)
            .unwrap()
            .model;
        let moved = largest_gap(&logits_on_a_fixed_input(&start, &device), &want_logits);
        assert!(moved > 1e-3, "five steps moved the policy ({moved})");
    });
}
