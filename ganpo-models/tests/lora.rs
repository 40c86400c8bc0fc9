//! LoRA adapters against PEFT (tools/fixtures/peft_fixtures.py: adapters saved by PEFT on the
//! tiny Llama, GPT-2 (`Conv1D`, `fan_in_fan_out`) and Gemma 2 (rsLoRA) fixtures, with PEFT's
//! logits), and the properties the trainer relies on: adapters off is the base model exactly, a
//! fresh adapter changes nothing, only adapters take gradients, merging keeps the outputs, and an
//! exported adapter reads back the same.

#[macro_use]
mod common;

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use common::{B, expected, fixture};
use ganpo_models::export::TokenizerFiles;
use ganpo_models::lora::{self, LoraConfig, TargetModules, peft};
use ganpo_models::{CausalLm, Decoder, Lm, hf::load};

fn base<Bk: Backend>(name: &str, device: &Bk::Device) -> Lm<Bk> {
    load::<Bk>(&fixture(name), device).unwrap().1
}

fn adapted<Bk: Backend>(case: &str, base_name: &str, device: &Bk::Device) -> Lm<Bk> {
    let dir = fixture("peft").join(case);
    peft::load_adapter(base(base_name, device), &dir)
        .unwrap_or_else(|e| panic!("{case}: {e}"))
        .0
}

fn max_abs_diff<Bk: Backend, const D: usize>(a: Tensor<Bk, D>, b: Tensor<Bk, D>) -> f32 {
    (a - b).abs().max().into_scalar().elem()
}

/// Runs `model` on the inputs of the `case` fixture.
fn outputs<Bk: Backend, M: CausalLm<Bk>>(
    case: &str,
    model: &M,
    device: &Bk::Device,
) -> Tensor<Bk, 3> {
    let e = expected(&fixture("peft").join(case).join("expected.safetensors"));
    e.run(model, device).logits
}

const CASES: [(&str, &str); 3] = [
    ("llama_all_linear", "llama"),
    ("gpt2_c_attn", "gpt2"),
    ("gemma2_rslora", "gemma2"),
];

#[test]
fn peft_adapters_give_peft_logits() {
    on_test_backend!(inner, |Bk, device| {
        for (case, base_name) in CASES {
            let model = adapted::<Bk>(case, base_name, &device);
            expected(&fixture("peft").join(case).join("expected.safetensors"))
                .assert_matches(&model, &device, case);
        }
    });
}

#[test]
fn adapters_off_is_the_base_model_bit_for_bit() {
    let device = Default::default();
    for (case, base_name) in [("llama_all_linear", "llama"), ("gpt2_c_attn", "gpt2")] {
        let plain = base::<B>(base_name, &device);
        let mut model = adapted::<B>(case, base_name, &device);
        let on = outputs(case, &model, &device);
        assert!(
            max_abs_diff(on, outputs(case, &plain, &device)) > 1e-2,
            "{case}: adapter has no effect"
        );
        assert!(model.set_adapters_enabled(false) > 0);
        let e = expected(&fixture("peft").join(case).join("expected.safetensors"));
        let (off, want) = (e.run(&model, &device), e.run(&plain, &device));
        assert_eq!(
            off.logits.into_data(),
            want.logits.into_data(),
            "{case}: logits"
        );
        assert_eq!(
            off.hidden.into_data(),
            want.hidden.into_data(),
            "{case}: hidden states"
        );
    }
}

/// Counts the float parameters that have a gradient in `grads`.
struct WithGrad<'a> {
    grads: &'a GradientsParams,
    with: usize,
    without: usize,
}

impl ModuleVisitor<Autodiff<NdArray>> for WithGrad<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Autodiff<NdArray>, D>>) {
        match self.grads.get::<NdArray, D>(p.id) {
            Some(_) => self.with += 1,
            None => self.without += 1,
        }
    }
}

#[test]
fn fresh_adapters_change_nothing_and_alone_take_gradients() {
    type A = Autodiff<NdArray>;
    let device = Default::default();
    let plain = base::<A>("llama", &device);
    let config = LoraConfig {
        r: 4,
        alpha: 16.0,
        target_modules: Some(TargetModules::Names(vec![
            "q_proj".into(),
            "down_proj".into(),
        ])),
        ..Default::default()
    };
    let (model, names) = lora::attach(plain.clone(), &config, 7).unwrap();
    // Two layers, two targets each.
    assert_eq!(names.len(), 4);
    assert!(
        names.contains(&"model.layers.1.mlp.down_proj".to_string()),
        "{names:?}"
    );
    let case = "llama_all_linear";
    let (a, b) = (
        outputs(case, &model, &device),
        outputs(case, &plain, &device),
    );
    assert_eq!(
        a.clone().into_data(),
        b.into_data(),
        "B = 0: the adapted model is the base"
    );
    let grads = GradientsParams::from_grads(a.sum().backward(), &model);
    let mut count = WithGrad {
        grads: &grads,
        with: 0,
        without: 0,
    };
    model.visit(&mut count);
    assert_eq!(count.with, 8, "lora_A and lora_B of 4 modules");
    assert_eq!(count.without, plain.num_params_tensors());
    // The same seed draws the same adapters; another seed others.
    let again = lora::attach(plain.clone(), &config, 7).unwrap().0;
    let other = lora::attach(plain, &config, 8).unwrap().0;
    let a_of = |m: &Lm<A>| match m {
        Lm::Llama(l) => l.model.layers[0]
            .self_attn
            .q_proj
            .lora_A
            .as_ref()
            .unwrap()
            .weight
            .val(),
        _ => unreachable!(),
    };
    assert_eq!(a_of(&model).into_data(), a_of(&again).into_data());
    assert!(max_abs_diff(a_of(&model), a_of(&other)) > 1e-3);
    // Kaiming-uniform(a = sqrt(5)): within ±1/sqrt(in) = ±1/sqrt(32).
    let bound = a_of(&model).abs().max().into_scalar();
    assert!(bound <= 1.0 / 32f32.sqrt() && bound > 0.1, "{bound}");
}

trait CountTensors {
    fn num_params_tensors(&self) -> usize;
}

impl<Bk: Backend> CountTensors for Lm<Bk> {
    fn num_params_tensors(&self) -> usize {
        struct Count(usize);
        impl<Bk: Backend> ModuleVisitor<Bk> for Count {
            fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<Bk, D>>) {
                self.0 += 1;
            }
        }
        let mut c = Count(0);
        self.visit(&mut c);
        c.0
    }
}

#[test]
fn merging_keeps_the_outputs_and_drops_the_adapters() {
    let device = Default::default();
    for (case, base_name) in [("gpt2_c_attn", "gpt2"), ("gemma2_rslora", "gemma2")] {
        let mut model = adapted::<B>(case, base_name, &device);
        let before = outputs(case, &model, &device);
        lora::merge(&mut model);
        assert!(lora::adapted(&mut model).is_empty());
        let plain = base::<B>(base_name, &device);
        assert_eq!(model.num_params(), plain.num_params(), "{case}");
        let d = max_abs_diff(before, outputs(case, &model, &device));
        assert!(d < 1e-4, "{case}: merged logits differ by {d}");
    }
}

#[test]
fn exported_adapter_reads_back_with_peft_names() {
    let device = Default::default();
    let tmp = tempfile::tempdir().unwrap();
    for (case, base_name) in [("llama_all_linear", "llama"), ("gpt2_c_attn", "gpt2")] {
        let src = fixture("peft").join(case);
        let (model, config) = peft::load_adapter(base::<B>(base_name, &device), &src).unwrap();
        let out = tmp.path().join(case);
        peft::save_adapter(&model, &config, base_name, TokenizerFiles::None, &out).unwrap();
        let names = |dir: &std::path::Path| {
            let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let mut v: Vec<(String, Vec<usize>)> = st
                .tensors()
                .into_iter()
                .map(|(n, t)| (n, t.shape().to_vec()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(&out),
            names(&src),
            "{case}: tensor names and shapes as PEFT's"
        );
        let (back, back_config) = peft::load_adapter(base::<B>(base_name, &device), &out).unwrap();
        assert_eq!(back_config, config);
        assert_eq!(
            outputs(case, &back, &device).into_data(),
            outputs(case, &model, &device).into_data()
        );
        assert!(
            peft::save_adapter(&model, &config, base_name, TokenizerFiles::None, &out).is_err(),
            "overwrites"
        );
    }
}

#[test]
fn bad_targets_and_adapters_are_named() {
    let device = Default::default();
    let config = LoraConfig {
        target_modules: Some(TargetModules::Names(vec!["query".into()])),
        ..Default::default()
    };
    let e = lora::attach(base::<B>("llama", &device), &config, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lora.target_modules") && e.contains("q_proj"),
        "{e}"
    );
    let e = lora::attach(
        base::<B>("gpt2", &device),
        &LoraConfig {
            r: 0,
            ..Default::default()
        },
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("lora.r"), "{e}");
    // An adapter made for GPT-2 on a Llama.
    let e = peft::load_adapter(
        base::<B>("llama", &device),
        &fixture("peft").join("gpt2_c_attn"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("adapter_model.safetensors") && e.contains("another base"),
        "{e}"
    );
    // Same module names, other shapes: the Llama adapter on the Gemma 2 fixture.
    let e = peft::load_adapter(
        base::<B>("gemma2", &device),
        &fixture("peft").join("llama_all_linear"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("adapter_model.safetensors"), "{e}");
    // Options ganpo does not implement are refused by key.
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("peft").join("llama_all_linear");
    for (key, value) in [("use_dora", "true"), ("r", "0"), ("peft_type", "\"IA3\"")] {
        let dir = tmp.path().join(key);
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(
            src.join("adapter_model.safetensors"),
            dir.join("adapter_model.safetensors"),
        )
        .unwrap();
        let mut json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(src.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        json[key] = serde_json::from_str(value).unwrap();
        std::fs::write(dir.join("adapter_config.json"), json.to_string()).unwrap();
        let e = peft::load_adapter(base::<B>("llama", &device), &dir)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("adapter_config.json") && e.contains(key),
            "{key}: {e}"
        );
    }
}

/// Little-endian f32 tensor `name` of a safetensors file, with its shape.
fn tensor_of(st: &safetensors::SafeTensors, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let values = t
        .data()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (values, t.shape().to_vec())
}

#[test]
fn adapter_gradients_equal_peft_s() {
    type A = Autodiff<NdArray>;
    let device = Default::default();
    for (case, base_name) in CASES {
        let dir = fixture("peft").join(case);
        let mut model = peft::load_adapter(base::<A>(base_name, &device), &dir)
            .unwrap()
            .0;
        let bytes = std::fs::read(dir.join("grads.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (weights, shape) = tensor_of(&st, "weights");
        let weights = Tensor::<A, 3>::from_data(
            TensorData::new(weights, [shape[0], shape[1], shape[2]]),
            &device,
        );
        let logits = outputs(case, &model, &device);
        let grads = GradientsParams::from_grads((logits * weights).sum().backward(), &model);
        let mut checked = 0;
        for (name, projection) in model.projections() {
            let parts = projection.parts();
            let (Some(a), Some(b)) = (parts.lora_A.as_ref(), parts.lora_B.as_ref()) else {
                continue;
            };
            for (which, param) in [("lora_A", &a.weight), ("lora_B", &b.weight)] {
                let key = format!("{name}.{which}.weight");
                let (want, want_shape) = tensor_of(&st, &key);
                // burn holds [in, out]; PyTorch [out, in].
                let got = grads
                    .get::<NdArray, 2>(param.id)
                    .unwrap_or_else(|| panic!("{case}: no gradient for {key}"))
                    .transpose();
                assert_eq!(got.dims().to_vec(), want_shape, "{case}: {key}");
                let got: Vec<f32> = got.into_data().to_vec().unwrap();
                let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
                let diff = got
                    .iter()
                    .zip(&want)
                    .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
                assert!(scale > 1e-3, "{case}: {key} has no gradient in PEFT");
                assert!(
                    diff <= 1e-4 * scale.max(1.0),
                    "{case}: {key} differs by {diff} (max {scale})"
                );
                checked += 1;
            }
        }
        assert_eq!(
            checked + 1,
            st.names().len(),
            "{case}: every adapter checked"
        );
    }
}
