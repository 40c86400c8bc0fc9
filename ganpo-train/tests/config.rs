//! The run configuration: every key documented, overrides, relative paths.

use ganpo_train::config::{RunConfig, apply_set};

fn leaf_keys(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_keys(&key, v, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn every_key_is_documented() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/configuration.md"
    ))
    .unwrap();
    let mut config = RunConfig {
        ganpo: Some(Default::default()),
        ..Default::default()
    };
    config.train.max_steps = Some(1);
    config.train.warmup_steps = Some(1);
    config.train.eval_steps = Some(1);
    config.train.save_steps = Some(1);
    config.train.disc_max_grad_norm = Some(1.0);
    config.train.device = Some(0);
    config.model.reference = Some("r".into());
    config.model.adapter = Some("a".into());
    config.lora = Some(ganpo_models::lora::LoraConfig {
        target_modules: Some(ganpo_models::lora::TargetModules::Pattern(
            "all-linear".into(),
        )),
        ..Default::default()
    });
    config.data.pad_to_multiple_of = Some(8);
    let mut keys = Vec::new();
    leaf_keys("", &toml::Value::try_from(&config).unwrap(), &mut keys);
    assert!(keys.len() > 40, "{keys:?}");
    for key in keys {
        // Documented as `key` in its section's table (`discriminator.x` under [ganpo]).
        let short = key.split_once('.').map_or(key.as_str(), |(_, rest)| rest);
        let short = short.strip_prefix("losses").map_or(short, |_| "losses");
        assert!(
            docs.contains(&format!("`{short}`")) || docs.contains(&format!("`{short}`,")),
            "{key} is not documented"
        );
    }
}

/// `DIR/run.toml` with a model path and one training file, both relative.
fn minimal_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("run.toml");
    std::fs::write(
        &path,
        "[model]\npath = \"m\"\n[data]\ntrain = [\"d.jsonl\"]\n",
    )
    .unwrap();
    path
}

#[test]
fn overrides_and_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = minimal_config(dir.path());
    let c = RunConfig::load(
        &path,
        &[
            "train.lr=5e-7".into(),
            "ganpo.adv_weight=0.5".into(),
            "model.reference=/abs/ref".into(),
        ],
    )
    .unwrap();
    assert_eq!(c.train.lr, 5e-7);
    assert_eq!(c.ganpo.unwrap().adv_weight, 0.5);
    assert_eq!(c.model.path, dir.path().join("m"));
    assert_eq!(c.data.train, vec![dir.path().join("d.jsonl")]);
    assert_eq!(
        c.model.reference.unwrap(),
        std::path::PathBuf::from("/abs/ref")
    );
    // `{assets}` is the asset cache, not a path under the file's directory.
    let c = RunConfig::load(&path, &["model.path={assets}/llm/m.gguf".into()]).unwrap();
    let cache = ganpo_train::config::expand_assets("{assets}");
    assert_eq!(c.model.path, cache.join("llm/m.gguf"));
    assert!(!c.model.path.starts_with(dir.path()) && !cache.as_os_str().is_empty());

    // A Hub id stays an id (resolved in the Hugging Face cache when loaded); a folder of that
    // name beside the file is a path, as in transformers.
    let sets = [
        "model.path=Qwen/Qwen2.5-0.5B@v1".to_string(),
        "data.train=[\"ganpo/pairs\", \"d.jsonl\"]".to_string(),
    ];
    let c = RunConfig::load(&path, &sets).unwrap();
    assert_eq!(
        c.model.path,
        std::path::PathBuf::from("Qwen/Qwen2.5-0.5B@v1")
    );
    assert_eq!(
        c.data.train,
        vec![
            std::path::PathBuf::from("ganpo/pairs"),
            dir.path().join("d.jsonl")
        ]
    );
    std::fs::create_dir_all(dir.path().join("Qwen/Qwen2.5-0.5B")).unwrap();
    let c = RunConfig::load(&path, &["model.path=Qwen/Qwen2.5-0.5B".into()]).unwrap();
    assert_eq!(c.model.path, dir.path().join("Qwen/Qwen2.5-0.5B"));

    let mut t = toml::Table::new();
    apply_set(&mut t, "train=3").unwrap();
    let e = apply_set(&mut t, "train.lr=1").unwrap_err().to_string();
    assert!(
        e.contains("key `train`") && e.contains("not a table"),
        "{e}"
    );
    let e = RunConfig::load(&dir.path().join("missing.toml"), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.toml"), "{e}");
    std::fs::write(&path, "[model\n").unwrap();
    let e = RunConfig::load(&path, &[]).unwrap_err().to_string();
    assert!(e.contains("run.toml: invalid TOML"), "{e}");
}

#[test]
fn errors_name_the_key_and_who_set_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = minimal_config(dir.path());
    let load = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        RunConfig::load(&path, &sets).unwrap_err().to_string()
    };
    // A key the override misspells is the override's fault, not the file's.
    let e = load(&["train.lrr=1e-6"]);
    assert!(e.contains("--set") && e.contains("lrr"), "{e}");
    // A loss setting out of range names its key and value.
    let e = load(&["loss.beta=nan"]);
    assert!(
        e.contains("loss.beta") && e.contains("NaN") && e.contains("finite number > 0"),
        "{e}"
    );
    // Zero steps would export the start model as if trained.
    let e = load(&["train.max_steps=0"]);
    assert!(
        e.contains("train.max_steps") && e.contains("positive"),
        "{e}"
    );
    // The file's own mistakes are still the file's.
    std::fs::write(
        &path,
        "[model]\npath = \"m\"\npth = 1\n[data]\ntrain = [\"d.jsonl\"]\n",
    )
    .unwrap();
    let e = load(&["train.lr=1e-6"]);
    assert!(e.contains("run.toml") && e.contains("pth"), "{e}");
}
