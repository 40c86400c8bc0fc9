//! The latents GANPO compares, for one batch of preference pairs.

use burn::prelude::*;

/// Last-layer hidden states (`[n, seq, d_model]`, after the final norm) of the policy and the
/// reference model on the chosen and rejected sequences of `n` pairs, with pooling masks.
#[derive(Clone, Debug)]
pub struct LatentBatch<B: Backend> {
    /// Policy on chosen sequences (`P+`).
    pub policy_chosen: Tensor<B, 3>,
    /// Policy on rejected sequences (`P-`).
    pub policy_rejected: Tensor<B, 3>,
    /// Reference on chosen sequences (`R+`).
    pub reference_chosen: Tensor<B, 3>,
    /// Reference on rejected sequences (`R-`).
    pub reference_rejected: Tensor<B, 3>,
    /// Positions of the chosen sequences to use (`[n, seq]`, true = used); `None` = all
    /// (see [`super::Pooling::select`]).
    pub chosen_mask: Option<Tensor<B, 2, Bool>>,
    /// Positions of the rejected sequences to use.
    pub rejected_mask: Option<Tensor<B, 2, Bool>>,
}

impl<B: Backend> LatentBatch<B> {
    /// The same batch with the policy latents cut from the graph, for the discriminator phase.
    pub fn detach_policy(&self) -> Self {
        Self {
            policy_chosen: self.policy_chosen.clone().detach(),
            policy_rejected: self.policy_rejected.clone().detach(),
            ..self.clone()
        }
    }

    /// Mean over used positions of the L2 distance between policy and reference latents, chosen
    /// and rejected sides averaged, and the same relative to the reference latents' mean norm.
    pub fn latent_drift(&self) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let side = |p: &Tensor<B, 3>, r: &Tensor<B, 3>, m: &Option<Tensor<B, 2, Bool>>| {
            let [n, seq, _] = p.dims();
            let dist = (p.clone().detach() - r.clone().detach())
                .square()
                .sum_dim(2)
                .sqrt()
                .reshape([n, seq]);
            let norm = r
                .clone()
                .detach()
                .square()
                .sum_dim(2)
                .sqrt()
                .reshape([n, seq]);
            match m {
                Some(m) => {
                    let w = m.clone().float();
                    let count = w.clone().sum().clamp_min(1e-9);
                    (
                        (dist * w.clone()).sum() / count.clone(),
                        (norm * w).sum() / count,
                    )
                }
                None => (dist.mean(), norm.mean()),
            }
        };
        let (dc, nc) = side(
            &self.policy_chosen,
            &self.reference_chosen,
            &self.chosen_mask,
        );
        let (dr, nr) = side(
            &self.policy_rejected,
            &self.reference_rejected,
            &self.rejected_mask,
        );
        let drift = (dc + dr) / 2.0;
        let rel = drift.clone() / ((nc + nr) / 2.0).clamp_min(1e-12);
        (drift, rel)
    }
}
