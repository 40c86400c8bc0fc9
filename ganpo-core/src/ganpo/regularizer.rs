//! The two discriminators, their quad losses and the generator term.

use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;

use super::LatentBatch;
use super::running_means::{
    C_POLICY_CHOSEN, C_REF_CHOSEN, C_REF_REJECTED, R_POLICY_REJECTED, R_REF_CHOSEN, R_REF_REJECTED,
    RunningMeans,
};
use crate::discriminator::Discriminator;
use crate::metrics::Metrics;
use crate::mode::Mode;

/// The GANPO regularizer: `D_c` (chosen), `D_r` (rejected) and the running means.
///
/// It is a burn module: give it its own optimizer (the discriminators' parameters are its
/// parameters) and save it with its record (spectral-norm vectors and running means included).
/// Build it with [`super::GanpoConfig::init`].
#[derive(Module, Debug)]
pub struct Ganpo<B: Backend> {
    /// `D_c`, trained to order reference-chosen above policy-chosen above reference-rejected.
    pub chosen: Discriminator<B>,
    /// `D_r`, trained to order reference-rejected above policy-rejected above reference-chosen.
    pub rejected: Discriminator<B>,
    /// Running means of the scores (`ema` mode).
    pub means: RunningMeans<B>,
    pub(crate) adv_weight: f64,
    pub(crate) momentum: f64,
    pub(crate) batch_means: bool,
}

/// The discriminators' loss of one batch and its diagnostics.
#[derive(Clone, Debug)]
pub struct DiscriminatorOutput<B: Backend> {
    /// `L_Dc + L_Dr`, `[1]`; gradient reaches the discriminators only.
    pub loss: Tensor<B, 1>,
    /// `gan/d_chosen_loss`, `gan/d_rejected_loss`, `gan/d_chosen_accuracy`,
    /// `gan/d_rejected_accuracy` (fraction of the two targeted orderings per pair that hold),
    /// `gan/d_chosen_ref_vs_policy`, `gan/d_rejected_ref_vs_policy` (fraction of pairs where the
    /// reference latent scores above the policy's), `gan/latent_drift` (mean L2 distance between
    /// policy and reference latents over used positions) and `gan/latent_drift_rel` (the same
    /// over the reference latents' mean norm).
    pub metrics: Metrics<B>,
}

/// The generator term of one batch.
#[derive(Clone, Debug)]
pub struct GeneratorOutput<B: Backend> {
    /// `L_gen`, `[1]`.
    pub loss: Tensor<B, 1>,
    /// `adv_weight * L_gen`, `[1]`: add this to the base preference loss.
    pub term: Tensor<B, 1>,
    /// `gan/gen_loss` and its halves `gan/gen_loss_{chosen,rejected}` (the official trainer's
    /// `g_loss_mimic` and `g_loss_mimic_rej`), detached.
    pub metrics: Metrics<B>,
}

/// Binary cross-entropy with logits against a constant target, averaged over the batch.
fn bce<B: Backend>(logits: Tensor<B, 1>, target_one: bool) -> Tensor<B, 1> {
    let x = if target_one { logits } else { logits.neg() };
    log_sigmoid(x).neg().mean()
}

/// `x[i]` of a `[6]` tensor as a `[1]` tensor.
fn at<B: Backend>(x: &Tensor<B, 1>, i: usize) -> Tensor<B, 1> {
    x.clone().slice(s![i..i + 1])
}

/// Scores (`[n]` logits) of `D_c` and `D_r` on the latent sets of one batch.
#[derive(Clone, Debug)]
pub struct Scores<B: Backend> {
    /// `c(P+)`.
    pub c_policy_chosen: Tensor<B, 1>,
    /// `c(R+)`.
    pub c_ref_chosen: Tensor<B, 1>,
    /// `c(R-)`.
    pub c_ref_rejected: Tensor<B, 1>,
    /// `r(P-)`.
    pub r_policy_rejected: Tensor<B, 1>,
    /// `r(R+)`.
    pub r_ref_chosen: Tensor<B, 1>,
    /// `r(R-)`.
    pub r_ref_rejected: Tensor<B, 1>,
}

impl<B: Backend> Scores<B> {
    /// Batch means `[6]` in [`RunningMeans`] order: `c(R+)`, `c(R-)`, `c(P+)`, `r(R+)`, `r(R-)`, `r(P-)`.
    pub fn batch_means(&self) -> Tensor<B, 1> {
        Tensor::cat(
            vec![
                self.c_ref_chosen.clone().mean(),
                self.c_ref_rejected.clone().mean(),
                self.c_policy_chosen.clone().mean(),
                self.r_ref_chosen.clone().mean(),
                self.r_ref_rejected.clone().mean(),
                self.r_policy_rejected.clone().mean(),
            ],
            0,
        )
    }
}

/// The quad relativistic-average losses `(L_Dc, L_Dr)` given the scores and the means `m`
/// (`[6]`, [`RunningMeans`] order):
///
/// ```text
/// L_Dc = [BCE(c(R+) - m_c[P+], 1) + BCE(c(P+) - m_c[R+], 0) + BCE(c(P+) - m_c[R-], 1) + BCE(c(R-) - m_c[P+], 0)] / 4
/// L_Dr = [BCE(r(R-) - m_r[P-], 1) + BCE(r(P-) - m_r[R-], 0) + BCE(r(P-) - m_r[R+], 1) + BCE(r(R+) - m_r[P-], 0)] / 4
/// ```
pub fn quad_losses<B: Backend>(s: &Scores<B>, m: Tensor<B, 1>) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let d_chosen = (bce(s.c_ref_chosen.clone() - at(&m, C_POLICY_CHOSEN), true)
        + bce(s.c_policy_chosen.clone() - at(&m, C_REF_CHOSEN), false)
        + bce(s.c_policy_chosen.clone() - at(&m, C_REF_REJECTED), true)
        + bce(s.c_ref_rejected.clone() - at(&m, C_POLICY_CHOSEN), false))
        / 4.0;
    let d_rejected = (bce(s.r_ref_rejected.clone() - at(&m, R_POLICY_REJECTED), true)
        + bce(s.r_policy_rejected.clone() - at(&m, R_REF_REJECTED), false)
        + bce(s.r_policy_rejected.clone() - at(&m, R_REF_CHOSEN), true)
        + bce(s.r_ref_chosen.clone() - at(&m, R_POLICY_REJECTED), false))
        / 4.0;
    (d_chosen, d_rejected)
}

/// The quad losses and the diagnostics of one batch of scores, given the means `m`.
fn discriminator_output<B: Backend>(
    scores: &Scores<B>,
    m: Tensor<B, 1>,
    batch: &LatentBatch<B>,
) -> DiscriminatorOutput<B> {
    let (d_chosen, d_rejected) = quad_losses(scores, m);
    let Scores {
        c_policy_chosen: c_pp,
        c_ref_chosen: c_rp,
        c_ref_rejected: c_rn,
        ..
    } = scores;
    let Scores {
        r_policy_rejected: r_pn,
        r_ref_chosen: r_rp,
        r_ref_rejected: r_rn,
        ..
    } = scores;
    let frac = |a: &Tensor<B, 1>, b: &Tensor<B, 1>| a.clone().greater(b.clone()).float().mean();
    let (drift, drift_rel) = batch.latent_drift();
    let metrics = Metrics::new(vec![
        ("gan/d_chosen_loss", d_chosen.clone()),
        ("gan/d_rejected_loss", d_rejected.clone()),
        (
            "gan/d_chosen_accuracy",
            (frac(c_rp, c_pp) + frac(c_pp, c_rn)) / 2.0,
        ),
        (
            "gan/d_rejected_accuracy",
            (frac(r_rn, r_pn) + frac(r_pn, r_rp)) / 2.0,
        ),
        ("gan/d_chosen_ref_vs_policy", frac(c_rp, c_pp)),
        ("gan/d_rejected_ref_vs_policy", frac(r_rn, r_pn)),
        ("gan/latent_drift", drift),
        ("gan/latent_drift_rel", drift_rel),
    ]);
    DiscriminatorOutput {
        loss: d_chosen + d_rejected,
        metrics,
    }
}

impl<B: Backend> Ganpo<B> {
    /// `lambda`, the weight of the generator term.
    pub fn adv_weight(&self) -> f64 {
        self.adv_weight
    }

    /// Scores of both discriminators on the latent sets, in the reference's order
    /// (`D_c`: P+, R+, R-; `D_r`: P-, R+, R-). In [`Mode::Train`] every forward runs dropout and
    /// one power-iteration step, as the reference's six discriminator calls do.
    pub fn score(&self, batch: &LatentBatch<B>, mode: Mode) -> Scores<B> {
        let (cm, rm) = (batch.chosen_mask.clone(), batch.rejected_mask.clone());
        let c_policy_chosen = self
            .chosen
            .forward(batch.policy_chosen.clone(), cm.clone(), mode);
        let c_ref_chosen = self
            .chosen
            .forward(batch.reference_chosen.clone(), cm.clone(), mode);
        let c_ref_rejected =
            self.chosen
                .forward(batch.reference_rejected.clone(), rm.clone(), mode);
        let r_policy_rejected =
            self.rejected
                .forward(batch.policy_rejected.clone(), rm.clone(), mode);
        let r_ref_chosen = self
            .rejected
            .forward(batch.reference_chosen.clone(), cm, mode);
        let r_ref_rejected = self
            .rejected
            .forward(batch.reference_rejected.clone(), rm, mode);
        Scores {
            c_policy_chosen,
            c_ref_chosen,
            c_ref_rejected,
            r_policy_rejected,
            r_ref_chosen,
            r_ref_rejected,
        }
    }

    /// Phase 1: the discriminators' quad relativistic-average loss.
    ///
    /// Pass the batch with the policy latents detached ([`LatentBatch::detach_policy`]). Both
    /// discriminators run in train mode ([`Ganpo::score`]). In `ema` mode this updates the running
    /// means with the batch means first and uses the updated means as constants, as the reference
    /// trainer does; in `batch` mode the batch means are used, with their gradient.
    pub fn discriminator_loss(&self, batch: &LatentBatch<B>) -> DiscriminatorOutput<B> {
        self.discriminator_loss_synced(batch, &|m| m)
    }

    /// [`Ganpo::discriminator_loss`] on one data-parallel replica's share of a batch: `sync`
    /// turns this replica's six batch means (`[6]`, [`RunningMeans`] order) into the means of
    /// the whole batch (an all-reduce, mean, over equal shares), before the running means are
    /// updated with them, so every replica keeps the same running means and the losses of the
    /// shares average to the loss of the whole batch.
    pub fn discriminator_loss_synced(
        &self,
        batch: &LatentBatch<B>,
        sync: &dyn Fn(Tensor<B, 1>) -> Tensor<B, 1>,
    ) -> DiscriminatorOutput<B> {
        let scores = self.score(batch, Mode::Train);
        let m = sync(scores.batch_means());
        let m = if self.batch_means {
            m
        } else {
            self.means.update(m, self.momentum)
        };
        discriminator_output(&scores, m, batch)
    }

    /// The discriminator losses and diagnostics of a held-out batch, without changing anything:
    /// both discriminators in eval mode (no dropout, no power iteration), the running means read
    /// but not updated (`ema`; before any update they are the batch means), no gradient.
    pub fn evaluate(&self, batch: &LatentBatch<B>) -> DiscriminatorOutput<B> {
        let scores = self.score(batch, Mode::Eval);
        let m = if self.batch_means || self.means.update_count() == 0 {
            scores.batch_means()
        } else {
            self.means.current()
        };
        discriminator_output(&scores, m.detach(), batch)
    }

    /// Phase 2: the non-saturating generator term
    /// `L_gen = (BCE(c(P+) - m_c[R+], 1) + BCE(r(P-) - m_r[R-], 1)) / 2`.
    ///
    /// Pass the batch with the policy latents tracked. The discriminators run in eval mode (no
    /// dropout, no power iteration) on frozen copies of themselves, so the gradient reaches the
    /// policy latents and never the discriminators' parameters; the result is deterministic.
    /// `ema` mode uses the running means of the last discriminator pass; `batch` mode scores the
    /// reference latents too.
    pub fn generator_loss(&self, batch: &LatentBatch<B>) -> GeneratorOutput<B> {
        self.generator_loss_synced(batch, &|m| m)
    }

    /// [`Ganpo::generator_loss`] on one data-parallel replica's share of a batch: in `batch`
    /// mode `sync` turns this replica's means of the reference scores (`[2]`: `m_c[R+]`,
    /// `m_r[R-]`) into the whole batch's (`ema` mode reads the running means, already the same
    /// on every replica, and never calls it).
    pub fn generator_loss_synced(
        &self,
        batch: &LatentBatch<B>,
        sync: &dyn Fn(Tensor<B, 1>) -> Tensor<B, 1>,
    ) -> GeneratorOutput<B> {
        let eval = Mode::Eval;
        let chosen = self.chosen.clone().no_grad();
        let rejected = self.rejected.clone().no_grad();
        let c_pp = chosen.forward(batch.policy_chosen.clone(), batch.chosen_mask.clone(), eval);
        let r_pn = rejected.forward(
            batch.policy_rejected.clone(),
            batch.rejected_mask.clone(),
            eval,
        );
        let (m_c_rp, m_r_rn) = if self.batch_means {
            let c_rp = chosen.forward(
                batch.reference_chosen.clone(),
                batch.chosen_mask.clone(),
                eval,
            );
            let r_rn = rejected.forward(
                batch.reference_rejected.clone(),
                batch.rejected_mask.clone(),
                eval,
            );
            let m = sync(Tensor::cat(vec![c_rp.mean(), r_rn.mean()], 0).detach());
            (at(&m, 0), at(&m, 1))
        } else {
            let m = self.means.current();
            (at(&m, C_REF_CHOSEN), at(&m, R_REF_REJECTED))
        };
        let chosen = bce(c_pp - m_c_rp, true);
        let rejected = bce(r_pn - m_r_rn, true);
        let loss = (chosen.clone() + rejected.clone()) / 2.0;
        // The official trainer logs the two halves as `g_loss_mimic` and `g_loss_mimic_rej`.
        let metrics = Metrics::new(vec![
            ("gan/gen_loss", loss.clone()),
            ("gan/gen_loss_chosen", chosen.detach()),
            ("gan/gen_loss_rejected", rejected.detach()),
        ]);
        GeneratorOutput {
            term: loss.clone() * self.adv_weight,
            loss,
            metrics,
        }
    }
}
