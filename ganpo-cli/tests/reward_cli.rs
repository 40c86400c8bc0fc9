//! `ganpo reward train / eval` and `ganpo score --reward model:DIR` end to end, on the synthetic
//! review language whose sentiment the task's oracle computes exactly.

mod common;

use std::path::Path;

use ganpo_train::task::sentiment::oracle_reward;
use serde_json::{Value, json};

use common::{ganpo_text as ganpo, spawn_holding, tiny_sft, tiny_task, write_jsonl};

/// The task's reviews with their oracle sentiment as a label name (neutral ones dropped).
fn labelled(task: &Path) -> Vec<Value> {
    std::fs::read_to_string(task.join("sft.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let text = serde_json::from_str::<Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string();
            let r = oracle_reward("", &text);
            (r != 0.0).then(|| {
                let label = if r > 0.0 { "positive" } else { "negative" };
                json!({"text": text, "label": label})
            })
        })
        .collect()
}

#[test]
fn a_reward_model_learns_sentiment_and_scores_generations() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tiny_task(tmp.path(), 1500, 2);
    let rows = labelled(&t);
    let (train, held) = rows.split_at(rows.len() - 200);
    let (data, heldout) = (
        tmp.path().join("train.jsonl"),
        tmp.path().join("held.jsonl"),
    );
    write_jsonl(&data, train);
    write_jsonl(&heldout, held);
    let rm = tmp.path().join("rm");
    let (ok, out, err) = ganpo(&[
        "reward",
        "train",
        "--model",
        t.join("model").to_str().unwrap(),
        "--init",
        "--data",
        data.to_str().unwrap(),
        "--labels",
        "negative,positive",
        "--epochs",
        "12",
        "--batch-size",
        "32",
        "--lr",
        "1e-2",
        "--save-steps",
        "20",
        "--out",
        rm.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    // The training state (`--save-steps`) is deleted once the model is written.
    assert!(!tmp.path().join("rm.checkpoints").exists());
    let report: Value = serde_json::from_str(&out).unwrap();
    let split_accuracy = report["eval_accuracy"].as_f64().unwrap();
    assert!(split_accuracy > 0.9, "{report}");
    // What was written: a transformers classifier directory with its tokenizer, the step log and
    // the held-out metrics.
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(rm.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlamaForSequenceClassification");
    assert_eq!(config["id2label"]["1"], "positive");
    assert!(rm.join("tokenizer.json").is_file());
    let steps = std::fs::read_to_string(rm.join("metrics.jsonl")).unwrap();
    let n_train = train.len() - (train.len() as f64 * 0.1).round() as usize;
    assert_eq!(steps.lines().count(), 12 * n_train.div_ceil(32));
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(rm.join("eval_results.json")).unwrap())
            .unwrap();
    assert_eq!(saved["eval_accuracy"], report["eval_accuracy"]);

    // A held-out file the model never saw.
    let (ok, out, err) = ganpo(&[
        "reward",
        "eval",
        "--model",
        rm.to_str().unwrap(),
        "--data",
        heldout.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let eval: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(eval["eval_samples"], 200);
    assert!(eval["eval_accuracy"].as_f64().unwrap() > 0.9, "{eval}");

    // As a reward: completions the oracle calls positive score above negative ones.
    let samples = tmp.path().join("samples.jsonl");
    let gens = [
        ("the film was", " great and the cast was fun", 1.0),
        ("the plot was", " brilliant", 1.0),
        ("the acting was", " lovely and the story was good", 1.0),
        ("the film was", " awful and the cast was dull", -1.0),
        ("the plot was", " boring", -1.0),
        ("the acting was", " poor and the story was bad", -1.0),
    ];
    let rows: Vec<Value> = gens
        .iter()
        .map(|(p, c, _)| json!({"prompt": p, "completion": c}))
        .collect();
    write_jsonl(&samples, &rows);
    let scored = tmp.path().join("scored.jsonl");
    let reward = format!("model:{}", rm.display());
    let (ok, out, err) = ganpo(&[
        "score",
        "--reward",
        &reward,
        "--samples",
        samples.to_str().unwrap(),
        "--out",
        scored.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["n"], 6);
    let rewards: Vec<f64> = std::fs::read_to_string(&scored)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["reward"]
                .as_f64()
                .unwrap()
        })
        .collect();
    for (i, (_, _, sign)) in gens.iter().enumerate() {
        assert!(rewards[i] * sign > 0.0, "{i}: {rewards:?}");
    }
}

#[test]
fn pairs_train_a_scalar_reward_model_head_only() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tiny_task(tmp.path(), 1500, 2);
    // A plain causal LM to start from: SFT a few steps so the backbone has weights on disk.
    let lm = tmp.path().join("lm");
    tiny_sft(&t, 100, &lm);
    let rows = labelled(&t);
    let (pos, neg): (Vec<&Value>, Vec<&Value>) =
        rows.iter().partition(|r| r["label"] == "positive");
    let pairs: Vec<Value> = pos
        .iter()
        .zip(&neg)
        .map(|(p, n)| json!({"chosen": p["text"], "rejected": n["text"]}))
        .collect();
    let data = tmp.path().join("pairs.jsonl");
    write_jsonl(&data, &pairs);
    // `ganpo reward train` of a head on `lm` for `epochs` into `out`.
    let train = |epochs: &str, out: &Path| -> Vec<String> {
        [
            "reward",
            "train",
            "--model",
            lm.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--trainable",
            "head",
            "--epochs",
            epochs,
            "--lr",
            "1e-2",
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let rm = tmp.path().join("rm");
    let (ok, out, err) = ganpo(&strs(&train("20", &rm)));
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(rm.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_labels"], 1);
    // A linear head on the frozen SFT model's last hidden state ranks most held-out pairs
    // (about 60 of them; chance is 0.5, measured 0.72).
    assert_eq!(report["eval_samples"], 60);
    assert!(report["eval_accuracy"].as_f64().unwrap() > 0.65, "{report}");
    assert!(report["eval_margin"].as_f64().unwrap() > 0.0, "{report}");

    // Two trainings into one --out: the second is refused while the first holds its
    // checkpoint directory, naming the holder.
    let busy = tmp.path().join("busy");
    let mut first = spawn_holding(
        &strs(&train("100000", &busy)),
        &tmp.path().join("busy.checkpoints/.ganpo.lock"),
    );
    let (ok, _, err) = ganpo(&strs(&train("1", &busy)));
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(!ok);
    assert!(
        err.contains("in use by another ganpo process")
            && err.contains(&format!("PID {}", first.id())),
        "{err}"
    );
}

#[test]
fn bad_reward_data_is_reported_by_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tiny_task(tmp.path(), 10, 2);
    let model = t.join("model");
    let data = tmp.path().join("bad.jsonl");
    let run = |rows: &[Value], extra: &[&str]| {
        write_jsonl(&data, rows);
        let out = tmp.path().join("never");
        let mut args = vec![
            "reward",
            "train",
            "--model",
            model.to_str().unwrap(),
            "--init",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        let (ok, _, err) = ganpo(&args);
        assert!(!ok);
        assert!(!out.exists(), "nothing is written on bad input");
        err
    };
    let err = run(
        &[
            json!({"text": "the film was good", "label": "positive"}),
            json!({"text": "the film was bad", "label": "meh"}),
        ],
        &["--labels", "negative,positive"],
    );
    assert!(err.contains("bad.jsonl:2:") && err.contains("meh"), "{err}");
    let err = run(
        &[
            json!({"text": "the film was good", "label": 1}),
            json!({"chosen": "good", "rejected": "bad"}),
        ],
        &[],
    );
    assert!(
        err.contains("bad.jsonl:2:") && err.contains("pair"),
        "{err}"
    );
    let err = run(
        &[json!({"text": "the film was good", "label": "positive"})],
        &[],
    );
    assert!(err.contains("--labels"), "{err}");
    let err = run(&[json!({"text": "the film was good"})], &[]);
    assert!(err.contains("label"), "{err}");
    let good = [json!({"text": "the film was good", "label": 1})];
    let err = run(&good, &["--weight-decay=-0.5"]);
    assert!(err.contains("--weight-decay -0.5"), "{err}");
}

#[test]
fn init_embeddings_are_the_source_models_principal_components() {
    use burn::backend::NdArray;
    use ganpo_models::classifier::load_classifier;
    use ganpo_models::load_model;
    use ganpo_models::nn::principal_embeddings;

    let tmp = tempfile::tempdir().unwrap();
    let t = tiny_task(tmp.path(), 200, 1);
    let source = tmp.path().join("sft");
    tiny_sft(&t, 10, &source);
    // A narrower model with the task's tokenizer: 16 wide instead of 32.
    let narrow = tmp.path().join("narrow");
    std::fs::create_dir(&narrow).unwrap();
    for entry in std::fs::read_dir(t.join("model")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, narrow.join(path.file_name().unwrap())).unwrap();
    }
    let config_path = narrow.join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["hidden_size"] = json!(16);
    config["intermediate_size"] = json!(32);
    config["num_attention_heads"] = json!(2);
    config["num_key_value_heads"] = json!(2);
    config["head_dim"] = json!(8);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let data = tmp.path().join("train.jsonl");
    write_jsonl(&data, &labelled(&t)[..40]);
    let train = |model: &Path, out: &Path| {
        ganpo(&[
            "reward",
            "train",
            "--model",
            model.to_str().unwrap(),
            "--init",
            "--init-embeddings",
            source.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--labels",
            "negative,positive",
            // Learning rate 0: the written model still has the embeddings it started from.
            "--lr",
            "0",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let rm = tmp.path().join("rm");
    let (ok, _, err) = train(&narrow, &rm);
    assert!(ok, "{err}");
    let device = Default::default();
    let source = load_model::<NdArray>(&source, &device).unwrap().model;
    let want = principal_embeddings(source.input_embeddings(), 16).unwrap();
    let got = load_classifier::<NdArray>(&rm, &device)
        .unwrap()
        .model
        .backbone
        .input_embeddings();
    assert_eq!(got.dims(), want.dims());
    got.into_data()
        .assert_approx_eq::<f32>(&want.into_data(), burn::tensor::Tolerance::absolute(1e-6));

    // A model with another vocabulary size cannot take them; nothing is written.
    config["vocab_size"] = json!(config["vocab_size"].as_u64().unwrap() + 8);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let never = tmp.path().join("never");
    let (ok, _, err) = train(&narrow, &never);
    assert!(
        !ok && err.contains("--init-embeddings") && err.contains("vocab_size"),
        "{err}"
    );
    assert!(!never.exists());
}

#[test]
fn weight_decay_reaches_the_optimizer() {
    use burn::backend::NdArray;
    use ganpo_models::classifier::load_classifier;

    let tmp = tempfile::tempdir().unwrap();
    let t = tiny_task(tmp.path(), 200, 1);
    let data = tmp.path().join("train.jsonl");
    write_jsonl(&data, &labelled(&t)[..40]);
    // The squared norm of the written model's token embeddings after 6 steps with `decay`.
    let norm = |decay: &str| -> f32 {
        let out = tmp.path().join(format!("rm-{decay}"));
        let (ok, _, err) = ganpo(&[
            "reward",
            "train",
            "--model",
            t.join("model").to_str().unwrap(),
            "--init",
            "--data",
            data.to_str().unwrap(),
            "--labels",
            "negative,positive",
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--lr",
            "1e-2",
            "--weight-decay",
            decay,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        let m = load_classifier::<NdArray>(&out, &Default::default()).unwrap();
        m.model
            .backbone
            .input_embeddings()
            .powi_scalar(2)
            .sum()
            .into_scalar()
    };
    // Decoupled decay multiplies every weight by (1 - lr * decay) per step: at 50, most of the
    // embedding table (rows of tokens the 40 texts never use) shrinks by orders of magnitude.
    let (plain, decayed) = (norm("0"), norm("50"));
    assert!(decayed < 0.1 * plain, "{decayed} vs {plain}");
}
