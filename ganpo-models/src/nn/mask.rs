//! The attention mask of a causal LM.

use burn::prelude::*;

/// Positions `0..seq` of every row, `[batch, seq]`: a whole sequence run from its start.
pub fn positions<B: Backend>(batch: usize, seq: usize, device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::<B, 1, Int>::arange(0..seq as i64, device)
        .reshape([1, seq])
        .expand([batch, seq])
}

/// `[batch, 1, seq, seq]`, true where query `t` may not attend to key `j`: future keys, keys
/// outside the sliding window (`t - j >= window`), and padding keys (`attention_mask` false).
/// A query always sees itself, so no row is fully masked, even at padding positions.
pub fn attention_mask<B: Backend>(
    attention_mask: Tensor<B, 2, Bool>,
    window: Option<usize>,
) -> Tensor<B, 4, Bool> {
    let [b, s] = attention_mask.dims();
    let device = attention_mask.device();
    let mut allowed = Vec::with_capacity(s * s);
    let mut diagonal = Vec::with_capacity(s * s);
    for t in 0..s {
        for j in 0..s {
            allowed.push(j <= t && window.is_none_or(|w| t - j < w));
            diagonal.push(j == t);
        }
    }
    let square = |v: Vec<bool>| {
        Tensor::<B, 2, Bool>::from_data(TensorData::new(v, [s, s]), &device).unsqueeze::<4>()
    };
    let keys = attention_mask.reshape([b, 1, 1, s]);
    square(allowed)
        .bool_and(keys.bool_or(square(diagonal)))
        .bool_not()
}

/// `[batch, 1, new, past + new]`, true where one of `new` queries (positions `past..past + new`)
/// may not attend to a key: future keys, keys outside the sliding window, and keys that are not
/// real tokens (`key_valid[b][j]` false). A query always sees itself.
pub fn step_mask<B: Backend>(
    key_valid: &[Vec<bool>],
    new: usize,
    window: Option<usize>,
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    let b = key_valid.len();
    let total = key_valid.first().map_or(0, Vec::len);
    let past = total - new;
    let mut masked = Vec::with_capacity(b * new * total);
    for row in key_valid {
        for i in 0..new {
            let q = past + i;
            let seen = |j: usize| j <= q && window.is_none_or(|w| q - j < w) && (row[j] || j == q);
            masked.extend((0..total).map(|j| !seen(j)));
        }
    }
    Tensor::from_data(TensorData::new(masked, [b, 1, new, total]), device)
}

/// The attention masks of one forward pass: one `[batch, 1, new, keys]` mask (true = hidden) per
/// sliding window the model's layers use (`None` = global), built once and shared by every layer
/// with that window.
#[derive(Clone, Debug)]
pub struct AttentionMasks<B: Backend> {
    masks: Vec<(Option<usize>, Tensor<B, 4, Bool>)>,
}

impl<B: Backend> AttentionMasks<B> {
    /// The masks of whole sequences run from position 0 ([`attention_mask`]) for `windows`.
    pub fn full(mask: Tensor<B, 2, Bool>, windows: &[Option<usize>]) -> Self {
        Self {
            masks: windows
                .iter()
                .map(|&w| (w, attention_mask(mask.clone(), w)))
                .collect(),
        }
    }

    /// The masks of one incremental step ([`step_mask`]) for `windows`.
    pub fn step(
        key_valid: &[Vec<bool>],
        new: usize,
        windows: &[Option<usize>],
        device: &B::Device,
    ) -> Self {
        Self {
            masks: windows
                .iter()
                .map(|&w| (w, step_mask(key_valid, new, w, device)))
                .collect(),
        }
    }

    /// The mask of layers with `window`.
    ///
    /// # Panics
    /// When the masks were not built for `window`: the model's `attention_windows` must list
    /// every window its layers use.
    pub fn get(&self, window: Option<usize>) -> Tensor<B, 4, Bool> {
        self.masks
            .iter()
            .find(|(w, _)| *w == window)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("no attention mask was built for window {window:?}"))
    }
}
