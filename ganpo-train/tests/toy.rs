//! The toy end-to-end run: DPO learns the preference, GANPO keeps the latents nearer the
//! reference, and the discriminators see the drift.

use burn::backend::{Autodiff, NdArray};
use ganpo_train::toy::{ToyConfig, run};

#[test]
fn dpo_learns_the_task_and_ganpo_halves_the_latent_drift() {
    let config = ToyConfig::default();
    let mut logged = 0;
    let report = run::<Autodiff<NdArray>>(&config, &Default::default(), |_| logged += 1);
    let (dpo, ganpo) = (&report.dpo, &report.ganpo);
    let get =
        |s: &ganpo_train::toy::StepLog, k: &str| s.get(k).unwrap_or_else(|| panic!("missing {k}"));

    // Both runs learn the preference on held-out pairs.
    for s in [dpo, ganpo] {
        assert!(
            get(s, "rewards/accuracies") >= 0.9,
            "{}: accuracy {}",
            s.run,
            get(s, "rewards/accuracies")
        );
        assert!(
            get(s, "rewards/margins") > 0.5,
            "{}: margin {}",
            s.run,
            get(s, "rewards/margins")
        );
    }
    // Plain DPO moves the latents away and the discriminators notice.
    assert!(get(dpo, "gan/latent_drift") > 1.0);
    assert!(get(dpo, "gan/d_chosen_ref_vs_policy") >= 0.9);
    // The generator term keeps them much closer.
    let ratio = get(ganpo, "gan/latent_drift") / get(dpo, "gan/latent_drift");
    assert!(ratio < 0.6, "GANPO drift / DPO drift = {ratio}");
    // GANPO pays for it with a smaller margin: the regularizer is active, not a no-op.
    assert!(get(ganpo, "rewards/margins") < get(dpo, "rewards/margins"));
    assert_eq!(logged, 2 * (config.steps / config.log_every + 1) + 2);
    assert_eq!(report.log.len(), 2 * (config.steps / config.log_every + 1));
}
