//! The generated GPT-NeoX plugged into ganpo's trainer through `CausalLm`: DPO + GANPO steps on
//! a few fixed pairs raise the held-in preference margin, and the discriminators run on its
//! latents.

use burn::backend::{Autodiff, NdArray};
use ganpo_core::ganpo::GanpoConfig;
use ganpo_models::CausalLm;
use ganpo_train::bench::random_pairs;
use ganpo_train::config::RunConfig;
use ganpo_train::train::Trainer;
use onnx_import::GptNeoX;

type B = Autodiff<NdArray>;

fn metric(metrics: &[(String, f64)], name: &str) -> f64 {
    metrics
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no `{name}` in {metrics:?}"))
        .1
}

#[test]
fn generated_model_trains_with_dpo_and_ganpo() {
    let device = Default::default();
    let policy = GptNeoX::<B>::pretrained(&device);
    let pairs = random_pairs(policy.vocab_size(), 12, 4, 7);
    let mut config = RunConfig::default();
    let ganpo: GanpoConfig = toml::from_str(
        "adv_weight = 1.0\ndiscriminator = { kind = \"transformer\", hidden = 16, layers = 1, heads = 2, ff = 32 }",
    )
    .unwrap();
    config.ganpo = Some(ganpo);
    config.loss.beta = 0.5;
    config.train.lr = 2e-3;
    config.train.batch_size = 4;
    config.train.warmup_ratio = 0.0;
    config.train.max_steps = Some(12);
    config.train.logging_steps = 1;
    config.train.eval_steps = None;
    config.train.save_steps = None;
    let mut trainer = Trainer::new(config, policy, None, pairs.clone(), pairs, 0, device).unwrap();
    let before = trainer.evaluate().unwrap();
    assert_eq!(metric(&before, "eval_rewards/margins"), 0.0);
    let mut last = Vec::new();
    for _ in 0..12 {
        last = trainer.step().unwrap();
    }
    assert!(metric(&last, "gan/d_chosen_loss").is_finite());
    let after = trainer.evaluate().unwrap();
    let margin = metric(&after, "eval_rewards/margins");
    eprintln!("margin after 12 steps: {margin}");
    assert!(margin > 1.0, "margin after 12 steps: {margin}");
    assert!(metric(&after, "eval_rewards/accuracies") > 0.99);
}
