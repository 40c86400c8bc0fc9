//! What data-parallel replicas synchronise, through burn-collective: each replica's share of a
//! micro-batch and its weight, the mean of their gradients, of GANPO's batch means and of the
//! step's metrics. Every replica calls the same operations in the same order (the module's
//! parameters in visiting order), so the operations pair up; [`super::data_parallel`] runs the
//! replicas and watches them.

use std::cell::RefCell;
#[cfg(feature = "collective")]
use std::sync::Arc;
#[cfg(feature = "collective")]
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(feature = "collective")]
use burn::collective::{CollectiveError, PeerId, ReduceOperation, all_reduce};
use burn::module::AutodiffModule;
#[cfg(feature = "collective")]
use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
#[cfg(feature = "collective")]
use burn::prelude::*;
#[cfg(feature = "collective")]
use burn::tensor::TensorPrimitive;
use burn::tensor::backend::AutodiffBackend;
use ganpo_core::Ganpo;
use ganpo_core::ganpo::{DiscriminatorOutput, GeneratorOutput, LatentBatch};
use ganpo_models::CausalLm;

use super::metrics::MetricMeans;
use super::trainer::{TrainError, Trainer};
use crate::data::HostBatch;

/// One replica of a data-parallel run: its rank among `world` replicas, and what the watchdog
/// reads of it.
#[cfg(feature = "collective")]
#[derive(Clone, Debug)]
pub(crate) struct Replica {
    /// 0 for the replica that logs, evaluates and writes checkpoints; on several nodes,
    /// `node_rank * local_world + ` the index among this node's replicas.
    pub rank: usize,
    /// How many replicas train together (on every node).
    pub world: usize,
    /// How many of them train in this process.
    pub local_world: usize,
    /// The run's nodes, when it spans several processes.
    pub cluster: Option<Arc<super::cluster::Cluster>>,
    /// Collective operations this replica has finished (odd while one is in flight: the count
    /// is bumped on entry and on exit), for the watchdog.
    pub ops: Arc<AtomicU64>,
}

#[cfg(feature = "collective")]
impl Replica {
    /// Whether this is the replica its process's trainer runs (the first on its node).
    pub fn is_lead(&self) -> bool {
        self.rank.is_multiple_of(self.local_world)
    }

    fn peer(&self) -> PeerId {
        PeerId::from(self.rank)
    }

    /// This replica's share of a micro-batch of `indices` (collated whole as `host`, so every
    /// share is padded alike): pairs split as evenly as possible in order, the first
    /// `n % world` replicas taking one more, and what the share counts for ([`ShareWeights`]).
    /// A replica left without a pair (`n < world`) scores the first pair with weight 0: it
    /// joins every operation and contributes nothing.
    pub fn share(
        &self,
        indices: Vec<usize>,
        host: HostBatch,
    ) -> (Vec<usize>, HostBatch, ShareWeights) {
        let n = indices.len();
        let (base, extra) = (n / self.world, n % self.world);
        let lo = self.rank * base + self.rank.min(extra);
        let len = base + usize::from(self.rank < extra);
        let range = if len == 0 { 0..1 } else { lo..lo + len };
        let world = self.world as f64;
        // `world * part / whole`: the mean over replicas of values weighted so is the whole's.
        let weight = |part: usize, whole: usize| match (len, whole) {
            (0, _) | (_, 0) => 0.0,
            _ => world * part as f64 / whole as f64,
        };
        let sum = |v: &[usize]| v.iter().sum::<usize>();
        let (c, r) = (&host.chosen_lengths, &host.rejected_lengths);
        let weights = ShareWeights {
            pairs: weight(len, n),
            chosen_tokens: weight(sum(&c[range.clone()]), sum(c)),
            rejected_tokens: weight(sum(&r[range.clone()]), sum(r)),
            completion_tokens: weight(
                sum(&c[range.clone()]) + sum(&r[range.clone()]),
                sum(c) + sum(r),
            ),
        };
        (
            indices[range.clone()].to_vec(),
            host.pairs_in(range),
            weights,
        )
    }

    /// Runs one collective operation, counted for the watchdog; a failure names `what`.
    pub(super) fn op<T>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, CollectiveError>,
    ) -> Result<T, TrainError> {
        self.ops.fetch_add(1, Ordering::SeqCst);
        let out = f();
        self.ops.fetch_add(1, Ordering::SeqCst);
        out.map_err(|e| TrainError::Collective {
            rank: self.rank,
            what: what.to_string(),
            cause: format!("{e:?}"),
        })
    }

    /// The mean over replicas of `tensor`.
    pub fn mean<B: Backend, const D: usize>(
        &self,
        what: &str,
        tensor: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, TrainError> {
        self.reduce(what, tensor, ReduceOperation::Mean)
    }

    /// `tensor` all-reduced over replicas with `op`.
    pub fn reduce<B: Backend, const D: usize>(
        &self,
        what: &str,
        tensor: Tensor<B, D>,
        op: ReduceOperation,
    ) -> Result<Tensor<B, D>, TrainError> {
        let peer = self.peer();
        let primitive = tensor.into_primitive().tensor();
        let out = self.op(what, || all_reduce::<B>(peer, primitive, op))?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    /// `grads` of `module` replaced by their mean over replicas: every parameter that requires
    /// a gradient, in the module's visiting order (the same on every replica), a missing
    /// gradient as zeros (a parameter this replica's share did not reach).
    pub fn mean_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        module: &M,
        grads: GradientsParams,
    ) -> Result<GradientsParams, TrainError> {
        let mut visitor = MeanGrads::<B> {
            replica: self,
            grads,
            error: None,
            _backend: std::marker::PhantomData,
        };
        module.visit(&mut visitor);
        match visitor.error {
            Some(e) => Err(e),
            None => Ok(visitor.grads),
        }
    }

    /// A step's metrics over all replicas: each metric's weighted sum and weight averaged, so
    /// the means are those of the whole step (every replica logs the same numbers).
    pub fn mean_metrics<B: Backend>(
        &self,
        metrics: &MetricMeans,
        device: &B::Device,
    ) -> Result<MetricMeans, TrainError> {
        let entries = metrics.entries();
        let flat: Vec<f32> = entries
            .iter()
            .flat_map(|(_, sum, weight)| [*sum as f32, *weight as f32])
            .collect();
        if flat.is_empty() {
            return Ok(metrics.clone());
        }
        let t = Tensor::<B, 1>::from_floats(flat.as_slice(), device);
        let reduced = self.mean("the step's metrics", t)?;
        let values = reduced.into_data().convert::<f64>().to_vec::<f64>();
        let values = values.expect("converted to f64");
        Ok(MetricMeans::from_entries(
            entries
                .iter()
                .zip(values.chunks(2))
                .map(|((name, _, _), v)| (name.clone(), v[0], v[1]))
                .collect(),
        ))
    }

    /// Whether any replica says `flag` (a non-finite loss, a step to skip).
    pub fn any<B: Backend>(
        &self,
        what: &str,
        flag: bool,
        device: &B::Device,
    ) -> Result<bool, TrainError> {
        let t = Tensor::<B, 1>::from_floats([f32::from(u8::from(flag))], device);
        let v = self.mean(what, t)?.into_scalar().elem::<f64>();
        Ok(v > 0.0)
    }

    /// The hook [`ganpo_core::Ganpo::discriminator_loss_synced`] takes: this share's batch
    /// means, times its `weight`, averaged over replicas (the means of the whole micro-batch),
    /// their gradient this share's own. The first failure is kept in `error`.
    pub fn batch_means<'a, B: AutodiffBackend>(
        &'a self,
        weight: f64,
        error: &'a RefCell<Option<TrainError>>,
    ) -> impl Fn(Tensor<B, 1>) -> Tensor<B, 1> + 'a {
        move |m: Tensor<B, 1>| {
            let local = m.clone().detach().inner();
            match self.mean("GANPO's batch means", local.clone() * weight) {
                Ok(global) => m + Tensor::from_inner(global - local),
                Err(e) => {
                    error.borrow_mut().get_or_insert(e);
                    m
                }
            }
        }
    }
}

/// What a data-parallel share of a micro-batch counts for, as a multiple of an equal share:
/// `world * part / whole` of the pairs (losses, gradients, batch means, per-pair metrics) or of
/// the completion tokens (metrics that are means over tokens). All 1 on one device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ShareWeights {
    /// Of the pairs.
    pub pairs: f64,
    /// Of the chosen completions' tokens.
    pub chosen_tokens: f64,
    /// Of the rejected completions' tokens.
    pub rejected_tokens: f64,
    /// Of both completions' tokens.
    pub completion_tokens: f64,
}

impl ShareWeights {
    /// A whole micro-batch on one device.
    pub const ONE: Self = Self {
        pairs: 1.0,
        chosen_tokens: 1.0,
        rejected_tokens: 1.0,
        completion_tokens: 1.0,
    };

    /// The weight of the metric `name`: TRL's means over completion tokens (`logits/*`,
    /// `nll_loss`, `mean_token_accuracy`, `entropy`) count the share's tokens, the rest its
    /// pairs. (`gan/latent_drift*` are means over each side's positions; they count pairs, so
    /// across replicas they are the mean of the shares' values.)
    pub fn of_metric(&self, name: &str) -> f64 {
        match name {
            "logits/chosen" | "nll_loss" | "mean_token_accuracy" => self.chosen_tokens,
            "logits/rejected" => self.rejected_tokens,
            "entropy" => self.completion_tokens,
            _ => self.pairs,
        }
    }
}

/// Replaces each gradient by its mean over replicas ([`Replica::mean_grads`]).
#[cfg(feature = "collective")]
struct MeanGrads<'a, B: AutodiffBackend> {
    replica: &'a Replica,
    grads: GradientsParams,
    error: Option<TrainError>,
    _backend: std::marker::PhantomData<B>,
}

#[cfg(feature = "collective")]
impl<B: AutodiffBackend> ModuleVisitor<B> for MeanGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if self.error.is_some() || !value.is_require_grad() {
            return;
        }
        let grad = self
            .grads
            .remove::<B::InnerBackend, D>(param.id)
            .unwrap_or_else(|| value.inner().zeros_like());
        match self.replica.mean("gradients", grad) {
            Ok(mean) => self.grads.register::<B::InnerBackend, D>(param.id, mean),
            Err(e) => self.error = Some(e),
        }
    }
}

/// What the training step asks of the other replicas: each an identity on one device (or
/// without the `collective` feature), the replicas' mean in a data-parallel run.
impl<B: AutodiffBackend, M: AutodiffModule<B> + CausalLm<B>> Trainer<B, M>
where
    M::InnerModule: CausalLm<B::InnerBackend>,
{
    /// This replica's share of a micro-batch ([`Replica::share`]); all of it on one device.
    pub(super) fn share_of(
        &self,
        indices: Vec<usize>,
        host: HostBatch,
    ) -> (Vec<usize>, HostBatch, ShareWeights) {
        #[cfg(feature = "collective")]
        if let Some(r) = &self.replica {
            return r.share(indices, host);
        }
        (indices, host, ShareWeights::ONE)
    }

    /// `grads` of `module` averaged over the replicas ([`Replica::mean_grads`]).
    pub(super) fn grads_across_replicas<Mod: AutodiffModule<B>>(
        &self,
        module: &Mod,
        grads: GradientsParams,
    ) -> Result<GradientsParams, TrainError> {
        #[cfg(feature = "collective")]
        if let Some(r) = &self.replica {
            return r.mean_grads(module, grads);
        }
        let _ = module;
        Ok(grads)
    }

    /// The step's metrics over the replicas ([`Replica::mean_metrics`]).
    pub(super) fn metrics_across_replicas(
        &self,
        metrics: MetricMeans,
    ) -> Result<MetricMeans, TrainError> {
        #[cfg(feature = "collective")]
        if let Some(r) = &self.replica {
            return r.mean_metrics::<B::InnerBackend>(&metrics, &self.device);
        }
        Ok(metrics)
    }

    /// Whether any replica raises `flag`.
    pub(super) fn any_replica(&self, flag: bool) -> Result<bool, TrainError> {
        #[cfg(feature = "collective")]
        if let Some(r) = &self.replica {
            return r.any::<B::InnerBackend>("non-finite flags", flag, &self.device);
        }
        Ok(flag)
    }

    /// `ganpo`'s discriminator loss on this replica's share `latents` (weight `weight`), its
    /// batch means averaged over the replicas; the first failure lands in `error`.
    pub(super) fn discriminator_loss_across_replicas(
        &self,
        ganpo: &Ganpo<B>,
        latents: &LatentBatch<B>,
        weight: f64,
        error: &RefCell<Option<TrainError>>,
    ) -> DiscriminatorOutput<B> {
        #[cfg(feature = "collective")]
        if let Some(r) = &self.replica {
            return ganpo.discriminator_loss_synced(latents, &r.batch_means(weight, error));
        }
        let _ = (weight, error);
        ganpo.discriminator_loss(latents)
    }

    /// `ganpo`'s generator term on this replica's share, as
    /// [`Trainer::discriminator_loss_across_replicas`] does.
    pub(super) fn generator_loss_across_replicas(
        &self,
        ganpo: &Ganpo<B>,
        latents: &LatentBatch<B>,
        weight: f64,
        error: &RefCell<Option<TrainError>>,
    ) -> GeneratorOutput<B> {
        #[cfg(feature = "collective")]
        if let Some(r) = &self.replica {
            return ganpo.generator_loss_synced(latents, &r.batch_means(weight, error));
        }
        let _ = (weight, error);
        ganpo.generator_loss(latents)
    }
}
