//! From a TRL recipe to ganpo's run configuration, key by key.

use anyhow::{Result, bail};
use serde_json::Value;

use super::context::{Ctx, same};
use super::{Recipe, known};

/// A recipe as a run configuration.
pub struct Mapped {
    /// The run configuration (`run.toml`'s table).
    pub table: toml::Table,
    /// What the reader should know: keys without effect here, differences in kind.
    pub notes: Vec<String>,
}

/// Keys that change nothing ganpo computes: how PyTorch loads data, names the run or shows
/// progress. Accepted with a note.
const NO_EFFECT: &[&str] = &[
    "attn_implementation",
    "dataloader_num_workers",
    "dataloader_persistent_workers",
    "dataloader_pin_memory",
    "dataloader_prefetch_factor",
    "dataset_num_proc",
    "disable_tqdm",
    "do_eval",
    "do_predict",
    "do_train",
    "ignore_bias_buffers",
    "precompute_ref_batch_size",
    "run_name",
    "use_cpu",
    "tf32",
];

/// Maps `recipe` onto a run configuration; every key it cannot honour is refused by name, all
/// of them in one error.
pub fn map(recipe: &Recipe) -> Result<Mapped> {
    let mut c = Ctx::new(recipe);
    model(&mut c);
    data(&mut c);
    loss(&mut c);
    lora(&mut c);
    train(&mut c);
    checks(&mut c);
    rest(&mut c);
    if !c.errors.is_empty() {
        bail!(
            "the TRL recipe asks for what ganpo does not do (TRL {}):\n  - {}",
            known().0,
            c.errors.join("\n  - ")
        );
    }
    Ok(Mapped {
        table: c.table,
        notes: c.notes,
    })
}

fn model(c: &mut Ctx) {
    let Some(path) = c.text("model_name_or_path") else {
        c.errors
            .push("`model_name_or_path` is required (a local folder or a Hub id)".into());
        return;
    };
    let revision = c.text("model_revision").unwrap_or_else(|| "main".into());
    if revision == "main" {
        c.set("model.path", path);
    } else if std::path::Path::new(&path).exists() {
        let v = Value::String(revision);
        c.refuse(
            "model_revision",
            &v,
            "a revision needs a Hub id, not a local folder",
        );
    } else {
        c.set("model.path", format!("{path}@{revision}"));
    }
    match c.text("dtype").as_deref() {
        None | Some("float32" | "auto") => {}
        Some("bfloat16") => {
            c.set("train.compute_dtype", "bf16");
            c.notes.push(
                "dtype: bfloat16 runs the passes in bf16 with f32 master weights \
                 (train.compute_dtype = \"bf16\"); TRL would hold the weights themselves in bf16"
                    .into(),
            );
        }
        Some("float16") => {
            c.set("train.compute_dtype", "f16");
            c.notes
                .push("dtype: float16 runs the passes in f16 with f32 master weights".into());
        }
        Some(other) => {
            let v = Value::String(other.into());
            c.refuse("dtype", &v, "expected float32, bfloat16, float16 or auto");
        }
    }
}

fn data(c: &mut Ctx) {
    let mixture = c.list("datasets");
    if !mixture.is_empty() {
        let v = Value::Array(mixture);
        c.refuse(
            "datasets",
            &v,
            "dataset mixtures are not implemented; give dataset_name (one dataset)",
        );
    }
    let Some(name) = c.text("dataset_name") else {
        if c.errors.is_empty() {
            c.errors
                .push("`dataset_name` is required (a Hub dataset id or a local file)".into());
        }
        return;
    };
    let config = c.text("dataset_config");
    let train_split = c
        .text("dataset_train_split")
        .unwrap_or_else(|| "train".into());
    let test_split = c
        .text("dataset_test_split")
        .unwrap_or_else(|| "test".into());
    let eval_strategy = c.text("eval_strategy").unwrap_or_else(|| "no".into());
    let local = std::path::Path::new(&name).exists();
    let spec = |split: &str| match (&config, local) {
        (_, true) => name.clone(),
        (Some(cfg), false) => format!("hf://datasets/{name}/{cfg}/{split}"),
        (None, false) => format!("hf://datasets/{name}/{split}"),
    };
    if local && train_split != "train" {
        let v = Value::String(train_split.clone());
        c.refuse(
            "dataset_train_split",
            &v,
            "a local file is one `train` split, as `datasets` loads it",
        );
    }
    c.set(
        "data.train",
        toml::Value::Array(vec![spec(&train_split).into()]),
    );
    match eval_strategy.as_str() {
        "no" => c.set("data.eval_fraction", 0.0),
        "steps" => {
            if local {
                let v = Value::String(eval_strategy.clone());
                c.refuse(
                    "eval_strategy",
                    &v,
                    "a local dataset file has no test split to evaluate on",
                );
            }
            c.set(
                "data.eval",
                toml::Value::Array(vec![spec(&test_split).into()]),
            );
            let every = c
                .count("eval_steps")
                .or_else(|| c.count("logging_steps"))
                .unwrap_or(500);
            c.set("train.eval_steps", every);
        }
        other => {
            let v = Value::String(other.into());
            c.refuse(
                "eval_strategy",
                &v,
                "ganpo evaluates every eval_steps steps: use `steps` or `no`",
            );
        }
    }
    if c.boolean("dataset_streaming") == Some(true) {
        c.refuse(
            "dataset_streaming",
            &Value::Bool(true),
            "streaming datasets are not implemented",
        );
    }
    // TRL's null max_length is no limit, ganpo's 0.
    let max_length = c.count("max_length").unwrap_or(0);
    c.set("data.max_length", max_length);
    if let Some(mode) = c.text("truncation_mode") {
        c.set("data.truncation_mode", mode);
    }
    c.copy_count("pad_to_multiple_of", "data.pad_to_multiple_of");
    if let Some(g) = c.boolean("group_by_length") {
        c.set("data.group_by_length", g);
    }
}

fn loss(c: &mut Ctx) {
    c.copy_number("beta", "loss.beta");
    c.copy_number("label_smoothing", "loss.label_smoothing");
    c.copy_number("discopop_tau", "loss.discopop_tau");
    if let Some(f) = c.text("f_divergence_type") {
        c.set("loss.f_divergence_type", f);
    }
    c.copy_number("f_alpha_divergence_coef", "loss.f_alpha_divergence_coef");
    c.copy_number("ld_alpha", "loss.ld_alpha");
    if let Some(w) = c.boolean("use_weighting") {
        c.set("loss.use_weighting", w);
    }
    let kinds = c.list("loss_type");
    let weights = c.list("loss_weights");
    if !weights.is_empty() && weights.len() != kinds.len() {
        let v = Value::Array(weights.clone());
        c.refuse(
            "loss_weights",
            &v,
            &format!("one weight per loss_type ({} given)", kinds.len()),
        );
        return;
    }
    // DPOConfig's loss types: KTO reads unpaired data in a trainer of its own.
    let accepted: Vec<&str> = ganpo_core::loss::LossKind::ALL
        .iter()
        .filter(|k| !k.is_unpaired())
        .map(|k| k.name())
        .collect();
    let mut losses = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let name = kind.as_str().unwrap_or_default().to_string();
        if !accepted.contains(&name.as_str()) {
            let why = match name.as_str() {
                "kto" => "KTO is KTOTrainer's loss, not a DPOConfig loss_type (a `trl kto` \
                          recipe has no mapping yet: set loss.losses = [{ kind = \"kto\" }] in \
                          run.toml; docs/trl.md)"
                    .to_string(),
                _ => format!("ganpo implements {}", accepted.join(", ")),
            };
            c.refuse("loss_type", kind, &why);
            continue;
        }
        let weight = match weights.get(i) {
            None => 1.0,
            Some(w) => match w.as_f64().or_else(|| w.as_str()?.trim().parse().ok()) {
                Some(x) => x,
                None => {
                    c.refuse("loss_weights", w, "expected numbers");
                    continue;
                }
            },
        };
        let mut t = toml::Table::new();
        t.insert("kind".into(), name.into());
        t.insert("weight".into(), weight.into());
        losses.push(toml::Value::Table(t));
    }
    c.set("loss.losses", toml::Value::Array(losses));
}

fn lora(c: &mut Ctx) {
    let keys = [
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_target_modules",
        "use_rslora",
        "lora_task_type",
    ];
    if c.boolean("use_peft") != Some(true) {
        for k in keys {
            if c.given(k) {
                c.notes
                    .push(format!("{k}: no effect without use_peft (as in TRL)"));
            }
            c.used.insert(k.to_string());
        }
        return;
    }
    c.copy_count("lora_r", "lora.r");
    c.copy_number("lora_alpha", "lora.alpha");
    c.copy_number("lora_dropout", "lora.dropout");
    let targets = c.list("lora_target_modules");
    match targets.as_slice() {
        [] => {}
        [Value::String(one)] => c.set("lora.target_modules", one.clone()),
        many => c.set(
            "lora.target_modules",
            toml::Value::Array(
                many.iter()
                    .map(|m| m.as_str().unwrap_or_default().to_string().into())
                    .collect(),
            ),
        ),
    }
    if let Some(rs) = c.boolean("use_rslora") {
        c.set("lora.rslora", rs);
    }
    c.require(
        "lora_task_type",
        &Value::String("CAUSAL_LM".into()),
        "ganpo's adapters are CAUSAL_LM adapters",
    );
}

fn train(c: &mut Ctx) {
    if let Some(dir) = c.text("output_dir") {
        c.set("train.output_dir", dir);
    }
    let ints = [
        ("per_device_train_batch_size", "train.batch_size"),
        ("per_device_eval_batch_size", "train.eval_batch_size"),
        ("gradient_accumulation_steps", "train.grad_accum"),
        ("seed", "train.seed"),
        ("logging_steps", "train.logging_steps"),
    ];
    for (trl, ours) in ints {
        c.copy_count(trl, ours);
    }
    let floats = [
        ("learning_rate", "train.lr"),
        ("weight_decay", "train.weight_decay"),
        ("adam_beta1", "train.adam_beta1"),
        ("adam_beta2", "train.adam_beta2"),
        ("adam_epsilon", "train.adam_epsilon"),
    ];
    for (trl, ours) in floats {
        c.copy_number(trl, ours);
    }
    c.copy_count("num_train_epochs", "train.epochs");
    if let Some(n) = c.count("max_steps").filter(|&n| n > 0) {
        c.set("train.max_steps", n);
    }
    match c.number("max_grad_norm") {
        Some(x) if x > 0.0 => c.set("train.max_grad_norm", x),
        _ => c
            .notes
            .push("max_grad_norm: off (0 or null disables clipping, as in transformers)".into()),
    }
    // transformers 5 reads a warmup_steps below 1 as a ratio; 4.x had warmup_ratio.
    let warmup = c.number("warmup_steps").unwrap_or(0.0);
    if warmup > 0.0 && warmup < 1.0 {
        c.set("train.warmup_ratio", warmup);
    } else if warmup >= 1.0
        && let Some(n) = c.count("warmup_steps")
    {
        c.set("train.warmup_steps", n);
    }
    // transformers 4.x's warmup_ratio, which recipes still carry.
    if c.given("warmup_ratio")
        && let Some(r) = c.number("warmup_ratio")
    {
        c.set("train.warmup_ratio", r);
    }
    let scheduler = c
        .text("lr_scheduler_type")
        .unwrap_or_else(|| "linear".into());
    let warms = warmup > 0.0 || c.given("warmup_ratio");
    let ours = match scheduler.as_str() {
        "linear" => Some("linear"),
        "cosine" => Some("cosine"),
        "constant_with_warmup" => Some("constant"),
        // transformers' `constant` ignores warm-up; ganpo's `constant` warms up when asked.
        "constant" if !warms => Some("constant"),
        _ => None,
    };
    match ours {
        Some(s) => c.set("train.scheduler", s),
        None => {
            let v = Value::String(scheduler);
            c.refuse(
                "lr_scheduler_type",
                &v,
                "ganpo implements linear, cosine, constant_with_warmup, and constant without warm-up",
            );
        }
    }
    if let Some(g) = c.boolean("gradient_checkpointing") {
        let lora_dropout = c
            .table
            .get("lora")
            .and_then(|l| l.get("dropout"))
            .and_then(toml::Value::as_float)
            .unwrap_or(0.0);
        if g && lora_dropout > 0.0 && !c.given("gradient_checkpointing") {
            // TRL's default LoRA recipe (dropout 0.05) with TRL's default checkpointing: ganpo
            // cannot replay dropout masks in recomputed layers. Same result, more memory.
            c.set("train.gradient_checkpointing", false);
            c.notes.push(
                "gradient_checkpointing: TRL's default (true) is off here, since ganpo does not \
                 recompute layers under LoRA dropout (the result is the same, the memory higher); \
                 set lora_dropout: 0 to keep checkpointing"
                    .into(),
            );
        } else {
            c.set("train.gradient_checkpointing", g);
        }
    }
    if let Some(p) = c.boolean("precompute_ref_log_probs") {
        c.set("train.precompute_ref_logps", p);
    }
    // TR-DPO: its alpha and tau (TRL's defaults included) only beside sync_ref_model, where
    // ganpo's keys accept them.
    if c.boolean("sync_ref_model") == Some(true) {
        c.set("train.sync_ref_model", true);
        c.copy_number("ref_model_mixup_alpha", "train.ref_model_mixup_alpha");
        c.copy_count("ref_model_sync_steps", "train.ref_model_sync_steps");
    }
    match c.text("save_strategy").as_deref() {
        Some("steps") | None => {
            c.copy_count("save_steps", "train.save_steps");
        }
        Some("no") => c
            .notes
            .push("save_strategy: no: ganpo still writes the final checkpoint and final/".into()),
        Some(other) => {
            let v = Value::String(other.into());
            c.refuse(
                "save_strategy",
                &v,
                "ganpo saves every save_steps steps: use `steps` or `no`",
            );
        }
    }
    match c.count("save_total_limit") {
        Some(n) => c.set("train.save_total_limit", n),
        None => c.notes.push(
            "save_total_limit: TRL keeps every checkpoint; ganpo keeps its default (2) unless \
             set"
            .into(),
        ),
    }
    let bf16 = c.boolean("bf16");
    let fp16 = c.boolean("fp16");
    match (bf16, fp16) {
        (Some(true), Some(true)) => {
            c.refuse("fp16", &Value::Bool(true), "bf16 and fp16 are both set");
        }
        (Some(true), _) => c.set("train.compute_dtype", "bf16"),
        (_, Some(true)) => c.set("train.compute_dtype", "f16"),
        (None, _) => c.notes.push(
            "bf16: unset means bf16 on a GPU in TRL; ganpo runs its default compute dtype (f32) \
             unless bf16: true"
                .into(),
        ),
        _ => {}
    }
    let report: Vec<String> = c
        .list("report_to")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    let tensorboard = report.iter().any(|r| r == "tensorboard" || r == "all");
    c.set("train.tensorboard", tensorboard);
    if let Some(other) = report
        .iter()
        .find(|r| !matches!(r.as_str(), "tensorboard" | "all" | "none"))
    {
        let v = Value::String(other.clone());
        c.refuse(
            "report_to",
            &v,
            "ganpo reports to metrics.jsonl and tensorboard",
        );
    }
}

/// Keys whose values must be what ganpo does.
fn checks(c: &mut Ctx) {
    let f = Value::Bool(false);
    let t = Value::Bool(true);
    c.require(
        "disable_dropout",
        &t,
        "ganpo's models run without dropout (TRL's default)",
    );
    for (key, why) in [
        ("padding_free", "padding-free batches are not implemented"),
        (
            "activation_offloading",
            "activation offloading is not implemented",
        ),
        ("trust_remote_code", "ganpo runs no model code from the Hub"),
        ("load_in_8bit", "quantized weights are not implemented"),
        ("load_in_4bit", "quantized weights are not implemented"),
        ("use_dora", "DoRA is not implemented"),
        ("push_to_hub", "pushing to the Hub is not implemented"),
        ("logging_first_step", "ganpo logs every logging_steps steps"),
        ("torch_compile", "not a PyTorch run"),
    ] {
        c.require(key, &f, why);
    }
    for (key, why) in [
        ("pad_token", "the tokenizer's own pad token is used"),
        ("model_init_kwargs", "not a PyTorch run"),
        ("resume_from_checkpoint", "use `ganpo train --resume DIR`"),
        ("lora_target_parameters", "not implemented"),
        ("lora_modules_to_save", "not implemented"),
    ] {
        c.require(key, &Value::Null, why);
    }
    let optim = c.text("optim").unwrap_or_default();
    if !matches!(
        optim.as_str(),
        "adamw_torch" | "adamw_torch_fused" | "adamw_hf" | ""
    ) {
        let v = Value::String(optim);
        c.refuse("optim", &v, "ganpo's optimizer is AdamW (adamw_torch)");
    }
}

/// Every other key: no effect (noted), TRL's default (fine), or refused.
fn rest(c: &mut Ctx) {
    let given: Vec<String> = c.recipe().given.keys().cloned().collect();
    for key in given {
        if c.used.contains(&key) {
            continue;
        }
        let value = c.recipe().given[&key].0.clone();
        match known().1.get(&key) {
            _ if NO_EFFECT.contains(&key.as_str()) => c
                .notes
                .push(format!("{key}: no effect on what ganpo computes")),
            Some(k) if same(&value, &k.default) => {}
            Some(k) => {
                let why = format!(
                    "ganpo does not implement this {} key (leave it out, or at TRL's default {})",
                    k.owner, k.default
                );
                c.refuse(&key, &value, &why);
            }
            None => {
                let why = format!(
                    "not a key of `trl dpo` (TRL {}: ScriptArguments, DPOConfig, ModelConfig)",
                    known().0
                );
                c.refuse(&key, &value, &why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(flags: &[&str]) -> Mapped {
        let mut recipe = Recipe::default();
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        recipe.apply_flags(&flags).unwrap();
        map(&recipe).unwrap()
    }

    fn get<'a>(m: &'a Mapped, dotted: &str) -> Option<&'a toml::Value> {
        let (section, key) = dotted.split_once('.').unwrap();
        m.table.get(section)?.get(key)
    }

    #[test]
    fn trls_defaults_fill_what_a_recipe_leaves_out() {
        let m = mapped(&["--model_name_or_path", "o/m", "--dataset_name", "o/d"]);
        assert_eq!(
            get(&m, "train.weight_decay"),
            Some(&toml::Value::Float(0.0))
        );
        assert_eq!(get(&m, "train.epochs"), Some(&toml::Value::Integer(3)));
        assert_eq!(
            get(&m, "train.logging_steps"),
            Some(&toml::Value::Integer(10))
        );
        assert_eq!(get(&m, "train.lr"), Some(&toml::Value::Float(1e-6)));
        assert_eq!(
            get(&m, "train.gradient_checkpointing"),
            Some(&toml::Value::Boolean(true))
        );
        assert_eq!(
            get(&m, "data.train"),
            Some(&toml::Value::Array(vec!["hf://datasets/o/d/train".into()]))
        );
        assert!(m.table.get("lora").is_none());
    }

    #[test]
    fn wpo_ld_dpo_and_tr_dpo_map_to_their_keys() {
        let base = ["--model_name_or_path", "o/m", "--dataset_name", "o/d"];
        let m = mapped(
            &[
                &base[..],
                &["--use_weighting", "true", "--ld_alpha", "0.25"],
            ]
            .concat(),
        );
        assert_eq!(
            get(&m, "loss.use_weighting"),
            Some(&toml::Value::Boolean(true))
        );
        assert_eq!(get(&m, "loss.ld_alpha"), Some(&toml::Value::Float(0.25)));
        // TRL's defaults (false, null) leave ganpo's.
        let m = mapped(&base);
        assert_eq!(
            get(&m, "loss.use_weighting"),
            Some(&toml::Value::Boolean(false))
        );
        assert!(get(&m, "loss.ld_alpha").is_none());
        assert!(get(&m, "train.ref_model_mixup_alpha").is_none());
        // TR-DPO brings TRL's alpha and tau along.
        let m = mapped(&[&base[..], &["--sync_ref_model", "true"]].concat());
        assert_eq!(
            get(&m, "train.sync_ref_model"),
            Some(&toml::Value::Boolean(true))
        );
        assert_eq!(
            get(&m, "train.ref_model_mixup_alpha"),
            Some(&toml::Value::Float(0.6))
        );
        assert_eq!(
            get(&m, "train.ref_model_sync_steps"),
            Some(&toml::Value::Integer(512))
        );
    }

    #[test]
    fn a_default_lora_recipe_trains_without_checkpointing_and_says_so() {
        let m = mapped(&[
            "--model_name_or_path",
            "o/m",
            "--dataset_name",
            "o/d",
            "--use_peft",
            "--lora_target_modules",
            "q_proj",
            "v_proj",
        ]);
        assert_eq!(get(&m, "lora.r"), Some(&toml::Value::Integer(16)));
        assert_eq!(get(&m, "lora.dropout"), Some(&toml::Value::Float(0.05)));
        assert_eq!(
            get(&m, "lora.target_modules"),
            Some(&toml::Value::Array(vec!["q_proj".into(), "v_proj".into()]))
        );
        assert_eq!(
            get(&m, "train.gradient_checkpointing"),
            Some(&toml::Value::Boolean(false))
        );
        assert!(
            m.notes
                .iter()
                .any(|n| n.starts_with("gradient_checkpointing"))
        );
        // Asked for by name, it stays asked for (and ganpo's checks refuse it by key).
        let m = mapped(&[
            "--model_name_or_path",
            "o/m",
            "--dataset_name",
            "o/d",
            "--use_peft",
            "--gradient_checkpointing",
        ]);
        assert_eq!(
            get(&m, "train.gradient_checkpointing"),
            Some(&toml::Value::Boolean(true))
        );
    }

    #[test]
    fn numbers_given_as_text_and_booleans_compare_as_trl_reads_them() {
        assert!(same(
            &Value::String("5e-7".into()),
            &serde_json::json!(5e-7)
        ));
        assert!(same(&Value::String("True".into()), &Value::Bool(true)));
        assert!(same(
            &serde_json::json!(["sigmoid"]),
            &Value::String("sigmoid".into())
        ));
        assert!(!same(&serde_json::json!(0.1), &serde_json::json!(0.2)));
    }
}
