//! Preference losses and metrics against TRL (tools/fixtures/core_fixtures.py), in f32; the
//! float64 comparison is in `float64.rs`.

#[macro_use]
mod common;

use burn::backend::NdArray;
use burn::prelude::*;
use common::losses::{check_all, fixture, inputs};
use ganpo_core::loss::{LossError, PairLengths, PreferenceInputs, PreferenceLoss};

#[test]
fn losses_and_metrics_match_trl_in_f32() {
    on_test_backend!(inner, |B, device| check_all::<B>(2e-5, 1e-6));
}

#[test]
fn kto_matches_trl_in_f32() {
    on_test_backend!(inner, |B, device| common::kto_losses::check_all::<B>(
        2e-5, 1e-7
    ));
}

#[test]
fn ld_dpo_wpo_and_orpo_from_logits_match_trl_in_f32() {
    on_test_backend!(inner, |B, device| common::token_losses::check_all::<B>(
        2e-5, 1e-7
    ));
}

#[test]
fn every_loss_kind_is_covered_by_the_fixture() {
    let fixture = fixture();
    let from_logits = common::token_losses::fixture();
    for kind in ganpo_core::LossKind::ALL {
        let covered =
            |losses: &[ganpo_core::loss::WeightedLoss]| losses.iter().any(|l| l.kind == kind);
        assert!(
            fixture.cases.iter().any(|c| covered(&c.losses))
                || from_logits.cases.iter().any(|c| covered(&c.losses))
                // kto_losses.json holds KTO's cases (kto_matches_trl_in_f32).
                || kind == ganpo_core::LossKind::Kto,
            "no fixture case for {}",
            kind.name()
        );
    }
}

#[test]
fn kto_is_refused_beside_what_it_has_no_form_for() {
    use ganpo_core::LossKind::{Kto, Sigmoid};
    use ganpo_core::loss::WeightedLoss;
    let kto = PreferenceLoss::single(Kto);
    let refused = |loss: PreferenceLoss| match loss.validate().unwrap_err() {
        LossError::OptionWithLoss { option, loss, .. } => (option, loss),
        other => panic!("{other}"),
    };
    let with_sigmoid = PreferenceLoss {
        losses: vec![
            WeightedLoss {
                kind: Kto,
                weight: 1.0,
            },
            WeightedLoss {
                kind: Sigmoid,
                weight: 1.0,
            },
        ],
        ..kto.clone()
    };
    assert_eq!(refused(with_sigmoid), ("losses", "kto"));
    let smoothed = PreferenceLoss {
        label_smoothing: 0.1,
        ..kto.clone()
    };
    assert_eq!(refused(smoothed), ("label_smoothing", "kto"));
    let wpo = PreferenceLoss {
        use_weighting: true,
        ..kto.clone()
    };
    assert_eq!(refused(wpo), ("use_weighting", "kto"));
    let ld = PreferenceLoss {
        ld_alpha: Some(0.5),
        ..kto.clone()
    };
    assert_eq!(refused(ld), ("ld_alpha", "kto"));
    // KTO's weights mean nothing to a paired loss.
    let weighted_dpo = PreferenceLoss {
        undesirable_weight: Some(1.2),
        ..PreferenceLoss::default()
    };
    assert_eq!(refused(weighted_dpo), ("undesirable_weight", "sigmoid"));
    let negative = PreferenceLoss {
        desirable_weight: Some(-1.0),
        ..kto.clone()
    };
    assert!(matches!(
        negative.validate().unwrap_err(),
        LossError::InvalidSetting {
            key: "desirable_weight",
            ..
        }
    ));
    // Each kind of input goes to its own call, and the error says which.
    let device = Default::default();
    let t = |v: [f32; 2]| Tensor::<burn::backend::NdArray, 1>::from_floats(v, &device);
    let unpaired = ganpo_core::UnpairedInputs {
        policy: t([-3.0, -4.0]),
        reference: t([-3.5, -3.0]),
        kl: (t([-5.0, -6.0]), t([-5.5, -6.0])),
        desirable: vec![true, false],
        logit_sums: None,
    };
    let err = PreferenceLoss::default()
        .compute_unpaired(&unpaired)
        .unwrap_err();
    assert!(err.to_string().contains("PreferenceLoss::compute"), "{err}");
    assert!(kto.compute_unpaired(&unpaired).is_ok());
    let short = ganpo_core::UnpairedInputs {
        desirable: vec![true],
        ..unpaired
    };
    assert!(matches!(
        kto.compute_unpaired(&short).unwrap_err(),
        LossError::BatchMismatch { .. }
    ));
}

#[test]
fn zero_length_completions_are_rejected_with_the_pair_named() {
    let err = PairLengths::new(vec![3, 4, 2], vec![5, 0, 1]).unwrap_err();
    assert_eq!(
        err,
        LossError::EmptyCompletion {
            index: 1,
            side: "rejected"
        }
    );
    assert_eq!(
        err.to_string(),
        "pair 1: the rejected completion has zero tokens; every completion needs at least one token"
    );
    assert_eq!(
        PairLengths::new(vec![0], vec![1]).unwrap_err(),
        LossError::EmptyCompletion {
            index: 0,
            side: "chosen"
        }
    );
    assert_eq!(
        PairLengths::new(vec![], vec![]).unwrap_err(),
        LossError::EmptyBatch
    );
    assert!(matches!(
        PairLengths::new(vec![1, 2], vec![1]),
        Err(LossError::BatchMismatch { .. })
    ));
}

#[test]
fn bad_settings_and_inputs_are_refused() {
    let device = Default::default();
    let case = &fixture().cases[0];
    let good = inputs::<NdArray>(case, &device);

    let robust = PreferenceLoss {
        label_smoothing: 0.5,
        ..PreferenceLoss::single(ganpo_core::LossKind::Robust)
    };
    let err = robust.compute(&good).unwrap_err();
    assert!(err.to_string().contains("label_smoothing"), "{err}");

    let js_aot = PreferenceLoss {
        f_divergence_type: ganpo_core::loss::FDivergence::JsDivergence,
        ..PreferenceLoss::single(ganpo_core::LossKind::Aot)
    };
    assert_eq!(
        js_aot.compute(&good).unwrap_err(),
        LossError::DivergenceWithLoss {
            divergence: "js_divergence",
            loss: "aot"
        }
    );

    // WPO needs its weights; it and LD-DPO are refused beside losses they have no form for.
    let wpo = PreferenceLoss {
        use_weighting: true,
        ..PreferenceLoss::default()
    };
    assert_eq!(
        wpo.compute(&good).unwrap_err(),
        LossError::MissingWpoWeights
    );
    for (kind, option, ld_alpha, use_weighting) in [
        (ganpo_core::LossKind::Aot, "use_weighting", None, true),
        (
            ganpo_core::LossKind::AotUnpaired,
            "use_weighting",
            None,
            true,
        ),
        (ganpo_core::LossKind::Simpo, "ld_alpha", Some(0.5), false),
        (ganpo_core::LossKind::Orpo, "use_weighting", None, true),
        (ganpo_core::LossKind::Sft, "use_weighting", None, true),
        (ganpo_core::LossKind::Sft, "ld_alpha", Some(0.5), false),
    ] {
        let loss = PreferenceLoss {
            ld_alpha,
            use_weighting,
            ..PreferenceLoss::single(kind)
        };
        match loss.validate().unwrap_err() {
            LossError::OptionWithLoss {
                option: o, loss: l, ..
            } => {
                assert_eq!((o, l), (option, kind.name()))
            }
            other => panic!("{}: {other}", kind.name()),
        }
    }
    // ORPO reads the chosen sequences' log-probs for its NLL term.
    assert_eq!(
        PreferenceLoss::single(ganpo_core::LossKind::Orpo)
            .compute(&good)
            .unwrap_err(),
        LossError::MissingSequenceLogps
    );
    let ld = PreferenceLoss {
        ld_alpha: Some(1.5),
        ..PreferenceLoss::default()
    };
    assert!(matches!(
        ld.validate(),
        Err(LossError::InvalidSetting {
            key: "ld_alpha",
            ..
        })
    ));

    let zero_beta = PreferenceLoss {
        beta: 0.0,
        ..PreferenceLoss::default()
    };
    assert!(matches!(
        zero_beta.compute(&good),
        Err(LossError::InvalidSetting { key: "beta", .. })
    ));

    let no_ref = PreferenceInputs {
        reference: None,
        ..good.clone()
    };
    assert_eq!(
        PreferenceLoss::default().compute(&no_ref).unwrap_err(),
        LossError::MissingReference("sigmoid")
    );
    assert!(
        PreferenceLoss::single(ganpo_core::LossKind::Simpo)
            .compute(&no_ref)
            .is_ok()
    );

    let short = PreferenceInputs {
        policy_rejected: good.policy_rejected.clone().slice(s![0..1]),
        ..good
    };
    let err = PreferenceLoss::default().compute(&short).unwrap_err();
    assert!(
        matches!(
            err,
            LossError::BatchMismatch {
                what: "policy_rejected",
                found: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn config_reads_from_toml_like_json_with_defaults() {
    let loss: PreferenceLoss = serde_json::from_str(
        r#"{"losses": [{"kind": "sigmoid"}, {"kind": "sft", "weight": 0.2}], "beta": 0.05}"#,
    )
    .unwrap();
    assert_eq!(loss.losses[1].weight, 0.2);
    assert_eq!(loss.losses[0].weight, 1.0);
    assert_eq!(loss.simpo_gamma, 0.5);
    let err = serde_json::from_str::<PreferenceLoss>(r#"{"betta": 0.1}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `betta`"), "{err}");
}
