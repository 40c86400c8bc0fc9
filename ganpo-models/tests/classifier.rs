//! Sequence classifiers / reward models against transformers' `*ForSequenceClassification`
//! (fixtures from tools/fixtures/classifier_fixtures.py), TRL's reward losses, and export.

mod common;

use burn::backend::Autodiff;
use burn::prelude::*;
use ganpo_core::reward_loss::{bradley_terry, cross_entropy};
use ganpo_models::classifier::{SequenceClassifier, export_classifier, load_classifier, reward_of};
use ganpo_models::export::TokenizerFiles;
use ganpo_models::{ModelError, load_model};

use common::{B, expected, fixture};

/// Scores of `model` on the inputs of `file` (`[batch, labels]`), with the reference logits.
fn scores<Bk: Backend>(
    model: &SequenceClassifier<Bk>,
    file: &std::path::Path,
) -> (Tensor<Bk, 2>, Vec<f32>) {
    let e = expected(file);
    let device = Default::default();
    let shape = [e.batch, e.seq];
    let ids = Tensor::from_data(TensorData::new(e.ids.clone(), shape), &device);
    let mask: Vec<bool> = e.mask.iter().map(|&m| m == 1).collect();
    let mask = Tensor::from_data(TensorData::new(mask, shape), &device);
    (model.forward(ids, mask), e.logits)
}

fn max_diff(got: Vec<f32>, want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn classifiers_match_transformers_with_either_padding() {
    for (name, labels) in [("llama", 2), ("gpt2", 1)] {
        let dir = fixture("classifier").join(name);
        let loaded = load_classifier::<B>(&dir, &Default::default()).unwrap();
        assert_eq!(loaded.model.labels().len(), labels, "{name}");
        for file in ["expected.safetensors", "expected_left.safetensors"] {
            let (got, want) = scores(&loaded.model, &dir.join(file));
            assert_eq!(got.dims()[1], labels);
            let d = max_diff(got.into_data().to_vec().unwrap(), &want);
            assert!(d < 1e-4, "{name} {file}: scores differ by {d}");
            assert!(
                want.iter().any(|x| x.abs() > 0.1),
                "{name}: trivial reference"
            );
        }
    }
    let llama = load_classifier::<B>(&fixture("classifier/llama"), &Default::default()).unwrap();
    assert_eq!(llama.model.labels(), ["NEGATIVE", "POSITIVE"]);
}

#[test]
fn reward_losses_and_head_gradients_match_pytorch() {
    type A = Autodiff<B>;
    let dir = fixture("classifier/llama");
    let text = std::fs::read_to_string(dir.join("losses.json")).unwrap();
    let want: serde_json::Value = serde_json::from_str(&text).unwrap();
    let floats = |key: &str| -> Vec<f32> {
        want[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    let model = load_classifier::<A>(&dir, &Default::default())
        .unwrap()
        .model;
    for key in ["bradley_terry", "cross_entropy"] {
        // The first two texts of the fixture: chosen and rejected, or labelled 1 and 0.
        let (all, _) = scores(&model, &dir.join("expected.safetensors"));
        let logits = all.slice([0..2, 0..2]);
        let loss = if key == "bradley_terry" {
            let rewards = reward_of(logits);
            bradley_terry(rewards.clone().slice(0..1), rewards.slice(1..2), None, None)
        } else {
            cross_entropy(logits, Tensor::from_ints([1, 0], &Default::default()))
        };
        let value: f32 = loss.clone().into_scalar();
        let expected_value = want[key].as_f64().unwrap() as f32;
        assert!(
            (value - expected_value).abs() < 1e-5,
            "{key}: {value} vs {expected_value}"
        );
        let grads = loss.backward();
        // burn stores the head `[hidden, labels]`; PyTorch `[labels, hidden]`.
        let grad = model.score.weight.grad(&grads).unwrap().transpose();
        let d = max_diff(
            grad.into_data().to_vec().unwrap(),
            &floats(&format!("{key}_grad")),
        );
        assert!(d < 1e-5, "{key}: gradient differs by {d}");
    }
}

#[test]
fn export_is_what_transformers_saved_and_loads_back() {
    let device = Default::default();
    let src = fixture("classifier/llama");
    let loaded = load_classifier::<B>(&src, &device).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rm");
    export_classifier(&loaded.model, &loaded.config, 0, TokenizerFiles::None, &out).unwrap();

    // Same tensor names and values as transformers' own file.
    let read = |dir: &std::path::Path| {
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut named: Vec<(String, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.data().to_vec()))
            .collect();
        named.sort();
        named
    };
    assert_eq!(read(&src), read(&out));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlamaForSequenceClassification");
    assert_eq!(config["id2label"]["1"], "POSITIVE");
    assert_eq!(config["label2id"]["NEGATIVE"], 0);
    assert_eq!(config["pad_token_id"], 0);

    let again = load_classifier::<B>(&out, &device).unwrap();
    let file = src.join("expected.safetensors");
    let (a, _) = scores(&loaded.model, &file);
    let (b, _) = scores(&again.model, &file);
    a.into_data().assert_eq(&b.into_data(), true);
    // Exporting over an existing directory is refused and leaves it alone.
    let err = export_classifier(&again.model, &again.config, 0, TokenizerFiles::None, &out);
    assert!(matches!(err, Err(ModelError::Io { .. })), "{err:?}");
}

#[test]
fn a_new_head_on_a_causal_lm_exports_as_a_classifier() {
    let device = Default::default();
    let lm = load_model::<B>(&fixture("gpt2"), &device).unwrap();
    B::seed(&device, 3);
    let model = SequenceClassifier::new(lm.model, vec!["reward".into()], &device);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rm");
    export_classifier(&model, &lm.config, 0, TokenizerFiles::None, &out).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "GPT2ForSequenceClassification");
    assert_eq!(config["num_labels"], 1);
    let again = load_classifier::<B>(&out, &device).unwrap();
    let file = fixture("classifier/gpt2/expected.safetensors");
    let (a, _) = scores(&model, &file);
    let (b, _) = scores(&again.model, &file);
    let a: Vec<f32> = a.into_data().to_vec().unwrap();
    assert!(a.iter().any(|x| *x != 0.0));
    assert_eq!(a, b.into_data().to_vec::<f32>().unwrap());
}

#[test]
fn a_causal_lm_directory_is_not_a_classifier() {
    let err = load_classifier::<B>(&fixture("llama"), &Default::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("ForSequenceClassification"),
        "{msg}"
    );
}

#[test]
fn input_embeddings_can_be_replaced_in_either_architecture() {
    let device = Default::default();
    for name in ["llama", "gpt2"] {
        let mut lm = load_model::<B>(&fixture(name), &device).unwrap().model;
        let weight = lm.input_embeddings();
        let [vocab, hidden] = weight.dims();
        let doubled = weight * 2.0;
        lm.set_input_embeddings(doubled.clone()).unwrap();
        lm.input_embeddings()
            .into_data()
            .assert_eq(&doubled.into_data(), true);
        let err = lm
            .set_input_embeddings(Tensor::zeros([vocab, hidden + 1], &device))
            .unwrap_err();
        assert!(
            matches!(err, ModelError::EmbeddingShape { want, got }
                if want == [vocab, hidden] && got == [vocab, hidden + 1]),
            "{name}: {err}"
        );
    }
}
