//! Sampling, sequence log-probs and the sampled KL against closed forms.
//!
//! A Llama whose token embeddings are all equal has the same last hidden state at every position
//! whatever the context, so its next-token distribution `p` is one fixed categorical: sampled
//! completions are i.i.d. tokens until EOS or the length limit `T`. Then
//! - `log P(y) = sum_t log p[y_t]` exactly, and
//! - by the chain rule, `KL(P || Q) = KL(p || q) * E[N]` with `N` the number of generated tokens,
//!   `E[N] = sum_{t=1..T} (1 - p[eos])^(t - 1)`.

use burn::backend::NdArray;
use burn::backend::ndarray::NdArrayDevice;
use burn::module::Param;
use burn::nn::LinearConfig;
use burn::prelude::*;
use ganpo_models::generate::GenerationConfig;
use ganpo_models::{CausalLm, Lm, Tokenizer};
use ganpo_train::rollout::{completion_logps, sample_completions, sampled_kl};
use ganpo_train::task::{TaskSpec, model_config, write_task};

type B = NdArray;

/// A context-free model: equal embeddings, a random LM head scaled by `scale`.
fn context_free(seed: u64, scale: f64, device: &NdArrayDevice) -> Lm<B> {
    let spec = TaskSpec {
        hidden_size: 16,
        layers: 1,
        ..TaskSpec::default()
    };
    let mut config = model_config(&spec);
    let ganpo_models::ModelConfig::Llama(c) = &mut config else {
        unreachable!()
    };
    c.tie_word_embeddings = false;
    B::seed(device, seed);
    let mut lm = config.init::<B>(device);
    let Lm::Llama(m) = &mut lm else {
        unreachable!()
    };
    let [vocab, hidden] = m.model.embed_tokens.weight.dims();
    let row = Tensor::<B, 2>::random(
        [1, hidden],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        device,
    );
    m.model.embed_tokens.weight = Param::from_tensor(row.repeat_dim(0, vocab));
    let head = LinearConfig::new(hidden, vocab)
        .with_bias(false)
        .init::<B>(device);
    let w = head.weight.val() * scale;
    m.lm_head = Some(burn::nn::Linear {
        weight: Param::from_tensor(w),
        ..head
    });
    lm
}

/// The fixed next-token distribution of a context-free model (log-probs).
fn next_token_logps(model: &Lm<B>, device: &NdArrayDevice) -> Vec<f64> {
    let ids = Tensor::<B, 2, Int>::from_data([[3, 7, 9]], device);
    let mask = Tensor::<B, 2, Bool>::from_data([[true, true, true]], device);
    let logits = model.forward(ids, mask).logits;
    let rows: Vec<f64> = burn::tensor::activation::log_softmax(logits, 2)
        .into_data()
        .convert::<f64>()
        .to_vec()
        .unwrap();
    let vocab = rows.len() / 3;
    // The same distribution at every position: the model is context-free.
    for t in 1..3 {
        for v in 0..vocab {
            assert!((rows[t * vocab + v] - rows[v]).abs() < 1e-4);
        }
    }
    rows[..vocab].to_vec()
}

fn tokenizer() -> (tempfile::TempDir, Tokenizer) {
    let dir = tempfile::tempdir().unwrap();
    let files = write_task(
        dir.path(),
        &TaskSpec {
            sft_examples: 1,
            train_prompts: 1,
            eval_prompts: 1,
            ..TaskSpec::default()
        },
    )
    .unwrap();
    let tok = Tokenizer::from_dir(&files.model).unwrap();
    (dir, tok)
}

#[test]
fn sequence_logps_are_the_sum_of_token_logps() {
    let device = Default::default();
    let model = context_free(1, 2.0, &device);
    let logp = next_token_logps(&model, &device);
    let rows = vec![
        (vec![5, 6, 7], vec![8, 9, 1]),
        (vec![5], vec![10]),
        (vec![5, 6, 7, 8, 9], vec![11, 12, 13, 14]),
    ];
    let got = completion_logps(&model, &rows, 2, 0, &device);
    for ((_, c), g) in rows.iter().zip(&got) {
        let want: f64 = c.iter().map(|&t| logp[t as usize]).sum();
        assert!((g - want).abs() < 1e-4, "{g} vs {want}");
    }
}

#[test]
fn sampled_kl_matches_the_closed_form() {
    let device = Default::default();
    let policy = context_free(2, 3.0, &device);
    let reference = context_free(3, 3.0, &device);
    let p = next_token_logps(&policy, &device);
    let q = next_token_logps(&reference, &device);
    let kl_token: f64 = p.iter().zip(&q).map(|(a, b)| a.exp() * (a - b)).sum();
    let (_dir, tok) = tokenizer();
    let eos = tok.eos_token_ids[0] as usize;
    let limit = 6;
    let expected_len: f64 = (0..limit).map(|t| (1.0 - p[eos].exp()).powi(t)).sum();
    let exact = kl_token * expected_len;
    let config = GenerationConfig {
        max_new_tokens: limit as usize,
        temperature: 1.0,
        seed: 7,
        eos_token_ids: tok.eos_token_ids.clone(),
        ..GenerationConfig::default()
    };
    let prompts = vec!["the plot was".to_string()];
    let samples = sample_completions(&policy, &tok, &prompts, 3000, &config, 500, &device).unwrap();
    let rows: Vec<_> = samples
        .iter()
        .map(|s| {
            (
                tok.encode(&s.prompt, true).unwrap(),
                s.completion_ids.clone(),
            )
        })
        .collect();
    // The sampler stops at EOS and at the limit, as the closed form assumes.
    for s in &samples {
        let n = s.completion_ids.len();
        assert!(n >= 1 && n <= limit as usize);
        assert_eq!(s.finished, s.completion_ids[n - 1] as usize == eos);
        assert!(s.completion_ids[..n - 1].iter().all(|&t| t as usize != eos));
    }
    let est = sampled_kl(
        &completion_logps(&policy, &rows, 500, 0, &device),
        &completion_logps(&reference, &rows, 500, 0, &device),
    );
    assert!(exact > 1.0, "a divergence worth measuring: {exact}");
    assert!(est.std_error < 0.05 * exact, "{est}");
    assert!(
        (est.mean - exact).abs() < 4.0 * est.std_error,
        "estimate {est}, exact {exact}"
    );
    // The same model: exactly zero.
    let zero = sampled_kl(
        &completion_logps(&policy, &rows, 500, 0, &device),
        &completion_logps(&policy, &rows, 500, 0, &device),
    );
    assert_eq!((zero.mean, zero.std_error), (0.0, 0.0));
}
