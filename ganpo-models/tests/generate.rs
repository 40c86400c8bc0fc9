//! KV-cached generation: the cache changes nothing, batching changes nothing, greedy decoding
//! matches transformers' `generate`, EOS stops, sampling is seeded.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::prelude::*;
use ganpo_models::generate::{GenerationConfig, generate};
use ganpo_models::nn::{AttentionMasks, KvCache};
use ganpo_models::{CausalLm, Decoder, LayerStack, Lm, load_model};
use serde_json::Value;

type B = NdArray;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn model(name: &str) -> Lm<B> {
    load_model::<B>(&fixture(name), &Default::default())
        .unwrap()
        .model
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn cached_steps_give_the_full_forward_logits() {
    let device = Default::default();
    for name in ["llama", "mistral", "qwen3", "gpt2", "gemma2", "gemma3"] {
        let m = model(name);
        let ids: Vec<i64> = vec![5, 17, 42, 99, 3, 250, 7, 8];
        let n = ids.len();
        let full = m
            .forward(
                Tensor::from_data(TensorData::new(ids.clone(), [1, n]), &device),
                Tensor::from_data(TensorData::new(vec![true; n], [1, n]), &device),
            )
            .logits;
        let windows = m.attention_windows();
        let mut cache = KvCache::<B>::new(m.num_layers());
        // Prefill 3 tokens, then one at a time.
        let chunks = std::iter::once(0..3).chain((3..n).map(|i| i..i + 1));
        let mut stepped = Vec::new();
        for r in chunks {
            let new = r.len();
            let valid = vec![vec![true; r.end]];
            let step_ids = Tensor::<B, 2, Int>::from_data(
                TensorData::new(ids[r.clone()].to_vec(), [1, new]),
                &device,
            );
            let pos: Vec<i64> = r.clone().map(|p| p as i64).collect();
            let step_pos = Tensor::<B, 2, Int>::from_data(TensorData::new(pos, [1, new]), &device);
            let masks = AttentionMasks::step(&valid, new, &windows, &device);
            let hidden = m.hidden_at(step_ids, step_pos, n, &masks, Some(&mut cache));
            stepped.push(m.head(hidden));
        }
        assert_eq!(cache.len(), n);
        let stepped = Tensor::cat(stepped, 1);
        let diff = (stepped - full).abs().max().into_scalar();
        assert!(diff < 1e-5, "{name}: cached logits differ by {diff}");
    }
}

#[test]
fn greedy_matches_transformers_generate() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("llama/logprobs_expected.json")).unwrap(),
    )
    .unwrap();
    let m = model("llama");
    let config = GenerationConfig {
        max_new_tokens: 12,
        ..Default::default()
    };
    let cases = expected["greedy"].as_array().unwrap();
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids_of(&c["prompt_ids"])).collect();
    // Both prompts in one left-padded batch, and each alone.
    let batched = generate(&m, &prompts, &config, &Default::default());
    for (case, got) in cases.iter().zip(&batched) {
        assert_eq!(got, &ids_of(&case["new_ids"]));
    }
    for (prompt, got) in prompts.iter().zip(&batched) {
        assert_eq!(
            &generate(
                &m,
                std::slice::from_ref(prompt),
                &config,
                &Default::default()
            )[0],
            got
        );
    }
}

#[test]
fn eos_stops_a_sequence_and_sampling_is_seeded() {
    let m = model("qwen2");
    let device = Default::default();
    let prompts = vec![vec![10, 20, 30], vec![40, 50]];
    let greedy = GenerationConfig {
        max_new_tokens: 8,
        ..Default::default()
    };
    let free = generate(&m, &prompts, &greedy, &device);
    assert!(free.iter().all(|o| o.len() == 8));
    // Make the first greedy token of prompt 0 an EOS: that sequence stops after it.
    let stop = GenerationConfig {
        eos_token_ids: vec![free[0][0]],
        ..greedy.clone()
    };
    let stopped = generate(&m, &prompts, &stop, &device);
    assert_eq!(stopped[0], vec![free[0][0]]);
    assert_eq!(
        stopped[1].len(),
        stopped[1]
            .iter()
            .position(|&t| t == free[0][0])
            .map_or(8, |p| p + 1)
    );

    let sample = |seed, top_k| GenerationConfig {
        temperature: 1.5,
        top_k,
        seed,
        ..greedy.clone()
    };
    let a = generate(&m, &prompts, &sample(7, 0), &device);
    assert_eq!(
        a,
        generate(&m, &prompts, &sample(7, 0), &device),
        "same seed, same tokens"
    );
    assert_ne!(
        a,
        generate(&m, &prompts, &sample(8, 0), &device),
        "another seed, other tokens"
    );
    assert_ne!(
        a, free,
        "temperature 1.5 sampling should differ from greedy"
    );
    assert_eq!(
        generate(&m, &prompts, &sample(9, 1), &device),
        free,
        "top_k = 1 is greedy"
    );
    let nucleus = GenerationConfig {
        top_p: 1e-9,
        ..sample(11, 0)
    };
    assert_eq!(
        generate(&m, &prompts, &nucleus, &device),
        free,
        "a tiny top_p keeps only the best token"
    );
}
