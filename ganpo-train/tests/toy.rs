//! The toy end-to-end run: DPO learns the preference, GANPO keeps the latents nearer the
//! reference, and the discriminators see the drift. The effect varies with the seed, so it is
//! checked over four seeds.

use burn::backend::{Autodiff, NdArray};
use ganpo_train::toy::{StepLog, ToyConfig, run};

fn get(s: &StepLog, k: &str) -> f64 {
    s.get(k).unwrap_or_else(|| panic!("missing {k}"))
}

#[test]
fn dpo_learns_the_task_and_ganpo_reduces_the_latent_drift() {
    let mut ratios = Vec::new();
    for seed in 0..4 {
        let config = ToyConfig {
            seed,
            ..ToyConfig::default()
        };
        let mut logged = 0;
        let report =
            run::<Autodiff<NdArray>>(&config, &Default::default(), |_| logged += 1).unwrap();
        let (dpo, ganpo) = (&report.dpo, &report.ganpo);
        // Both runs learn the preference on held-out pairs.
        for s in [dpo, ganpo] {
            let (acc, margin) = (get(s, "rewards/accuracies"), get(s, "rewards/margins"));
            assert!(acc >= 0.9, "seed {seed} {}: accuracy {acc}", s.run);
            assert!(margin > 0.3, "seed {seed} {}: margin {margin}", s.run);
        }
        // Plain DPO moves the latents away and the discriminators notice.
        assert!(get(dpo, "gan/latent_drift") > 1.0, "seed {seed}");
        assert!(get(dpo, "gan/d_chosen_ref_vs_policy") >= 0.9, "seed {seed}");
        // The generator term keeps them closer, and costs margin: the regularizer is active.
        let ratio = get(ganpo, "gan/latent_drift") / get(dpo, "gan/latent_drift");
        assert!(
            ratio < 0.9,
            "seed {seed}: GANPO drift / DPO drift = {ratio}"
        );
        assert!(get(ganpo, "rewards/margins") < get(dpo, "rewards/margins"));
        assert_eq!(logged, 2 * (config.steps / config.log_every + 1) + 2);
        assert_eq!(report.log.len(), 2 * (config.steps / config.log_every + 1));
        ratios.push(ratio);
    }
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    assert!(
        mean < 0.6,
        "mean GANPO / DPO drift over seeds = {mean} ({ratios:?})"
    );
}
