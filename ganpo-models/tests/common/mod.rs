//! Reading the expected outputs that the fixture scripts write, and comparing against them on
//! any backend (`backend`: the one `GANPO_TEST_BACKEND` names, as in ganpo-core's tests).
#![allow(dead_code)]

#[path = "../../../ganpo-core/tests/common/backend.rs"]
#[macro_use]
pub mod backend;

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::prelude::*;
use ganpo_core::ScoredRows;
use ganpo_models::{CausalLm, LmOutput};
use safetensors::SafeTensors;

/// The backend of the tests that run on the CPU only.
pub type B = NdArray;

/// A fixture directory or file under ganpo-models' `tests/fixtures` (found as
/// [`backend::crate_dir`] says, also from ganpo-train's `backends` binary).
pub fn fixture(name: &str) -> PathBuf {
    backend::crate_dir("ganpo-models")
        .join("tests/fixtures")
        .join(name)
}

/// An `expected*.safetensors` file: inputs (`input_ids`, `attention_mask`, right padding) and
/// reference outputs (`logits`, and `hidden` where the script wrote it).
pub struct Expected {
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
    pub logits: Vec<f32>,
    pub hidden: Option<Vec<f32>>,
    pub batch: usize,
    pub seq: usize,
}

/// Little-endian f32 values of a tensor.
pub fn floats(st: &SafeTensors, name: &str) -> Vec<f32> {
    let data = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .data()
        .to_vec();
    data.chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn ints(st: &SafeTensors, name: &str) -> Vec<i64> {
    let data = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .data()
        .to_vec();
    data.chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Reads an expected-outputs file.
pub fn expected(path: &Path) -> Expected {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let shape = st.tensor("input_ids").unwrap().shape().to_vec();
    let hidden = st
        .names()
        .contains(&"hidden")
        .then(|| floats(&st, "hidden"));
    Expected {
        ids: ints(&st, "input_ids"),
        mask: ints(&st, "attention_mask"),
        logits: floats(&st, "logits"),
        hidden,
        batch: shape[0],
        seq: shape[1],
    }
}

impl Expected {
    /// The expected inputs: ids and attention mask, `[batch, seq]`.
    fn inputs<B: Backend>(&self, device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 2, Bool>) {
        let shape = [self.batch, self.seq];
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(self.ids.clone(), shape), device);
        let mask: Vec<bool> = self.mask.iter().map(|&m| m == 1).collect();
        (ids, Tensor::from_data(TensorData::new(mask, shape), device))
    }

    /// The model's outputs on the expected inputs, on `device` (the model's).
    pub fn run<B: Backend, M: CausalLm<B>>(&self, model: &M, device: &B::Device) -> LmOutput<B> {
        let (ids, mask) = self.inputs(device);
        model.forward(ids, mask)
    }

    /// Max abs difference between [`CausalLm::forward_rows`]'s logits for every other real token
    /// (the rows a loss would score) and the reference logits at those positions.
    fn rows_max_diff<B: Backend, M: CausalLm<B>>(
        &self,
        model: &M,
        device: &B::Device,
    ) -> (usize, f32) {
        let (ids, mask) = self.inputs(device);
        let picked: Vec<usize> = (0..self.mask.len())
            .filter(|&p| self.mask[p] == 1 && p % 2 == 0)
            .collect();
        let flags: Vec<bool> = (0..self.mask.len()).map(|p| picked.contains(&p)).collect();
        let shape = [self.batch, self.seq];
        let rows = ScoredRows::new(
            ids.zeros_like(),
            Tensor::from_data(TensorData::new(flags, shape), device),
        );
        let got: Vec<f32> = model
            .forward_rows(ids, mask, &rows)
            .logits
            .into_data()
            .to_vec()
            .unwrap();
        let vocab = self.logits.len() / self.mask.len();
        assert_eq!(got.len(), picked.len() * vocab);
        let mut max = 0f32;
        for (r, &p) in picked.iter().enumerate() {
            for v in 0..vocab {
                max = max.max((got[r * vocab + v] - self.logits[p * vocab + v]).abs());
            }
        }
        (picked.len(), max)
    }

    /// Runs `model` and asserts its logits and last hidden states are within 1e-4 of the
    /// reference over real tokens (and that the reference logits are not trivially small).
    pub fn assert_matches<B: Backend, M: CausalLm<B>>(
        &self,
        model: &M,
        device: &B::Device,
        name: &str,
    ) -> LmOutput<B> {
        let out = self.run(model, device);
        let dl = self.max_diff(out.logits.clone(), &self.logits);
        let dh = self.max_diff(out.hidden.clone(), self.hidden.as_ref().expect("hidden"));
        assert!(dl < 1e-4, "{name}: logits differ by {dl}");
        assert!(dh < 1e-4, "{name}: hidden states differ by {dh}");
        let (rows, dr) = self.rows_max_diff(model, device);
        assert!(rows > 1, "{name}: {rows} rows");
        assert!(
            dr < 1e-4,
            "{name}: logits of the scored rows differ by {dr}"
        );
        assert!(self.logits.iter().map(|x| x.abs()).fold(0.0, f32::max) > 0.5);
        out
    }

    /// Max abs difference between `got` (`[batch, seq, width]`) and `want` over real tokens.
    pub fn max_diff<B: Backend>(&self, got: Tensor<B, 3>, want: &[f32]) -> f32 {
        let width = got.dims()[2];
        let got: Vec<f32> = got.into_data().to_vec().unwrap();
        let mut max = 0f32;
        for (pos, _) in self.mask.iter().enumerate().filter(|(_, m)| **m == 1) {
            for i in pos * width..(pos + 1) * width {
                max = max.max((got[i] - want[i]).abs());
            }
        }
        max
    }
}
