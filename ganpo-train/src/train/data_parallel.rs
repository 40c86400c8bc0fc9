//! One run on several devices of one process (data parallelism, as PyTorch's DDP does it): a
//! replica of the trainer per device, each on its share of every micro-batch, their gradients,
//! GANPO's batch means and the step's metrics averaged through burn-collective, so that every
//! replica takes the same step and the run computes what one device would on the whole batch.
//!
//! The trainer itself is replica 0 (it logs, evaluates and writes checkpoints); the others are
//! copies of its state made when training starts (same parameter ids, so their gradients pair
//! up), each on its own thread, taking steps only. A replica that fails or panics stops the others at once (it
//! resets the collective, so their pending all-reduce fails); one that does not reach an
//! all-reduce within `train.sync_timeout_s` while another waits there is reported as hung.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::collective::{CollectiveConfig, PeerId, finish_collective, register, reset_collective};
use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;
use ganpo_models::CausalLm;

use super::cluster::{Addresses, Cluster, agree, lost_nodes};
use super::collective::Replica;
use super::metrics::MetricMeans;
use super::trainer::{LogEntry, TrainError, Trainer, adamw};
use crate::data::PreferenceDataset;

/// burn-collective has one session per backend and process: data-parallel runs take turns.
static SESSION: Mutex<()> = Mutex::new(());

/// The first failure of a run, kept by whoever sees it first (a replica, the watchdog).
type FirstFailure = Arc<Mutex<Option<String>>>;

impl<B: AutodiffBackend, M: AutodiffModule<B> + CausalLm<B>> Trainer<B, M>
where
    M::InnerModule: CausalLm<B::InnerBackend>,
{
    /// Trains as [`Trainer::fit`] does, with one replica per device of `devices` (this
    /// trainer is the first: `devices[0]` must be its device). Each micro-batch of
    /// `train.batch_size` pairs is split between the replicas as evenly as possible, in order
    /// (with weights, so that an uneven split still averages to the whole micro-batch's loss);
    /// before every optimizer step the policy's and the discriminators' gradients are averaged,
    /// and GANPO's batch means are averaged before they update the running means. On the CPU
    /// backend every device is the CPU: the replicas share its cores (a check of the
    /// synchronisation more than a speed-up). With one device this is [`Trainer::fit`].
    ///
    /// Unpaired data (KTO) is refused: its micro-batches' shares can hold examples of one label
    /// only, whose metrics and discriminator sets differ between replicas.
    pub fn fit_data_parallel(
        &mut self,
        devices: &[B::Device],
        on_log: impl FnMut(&LogEntry),
    ) -> Result<(), TrainError>
    where
        M: Send + 'static,
        M::InnerModule: Send,
        B: 'static,
    {
        self.data_parallel(devices, |trainer| match trainer.is_writer() {
            true => trainer.fit(on_log),
            false => trainer.follow(),
        })
    }

    /// Makes this trainer one node of a run across several processes ([`Cluster`]): its
    /// data-parallel runs register with the cluster's coordinator, check that every node
    /// trains the same run before the first step, and average with the replicas of every node.
    /// Only node 0 logs, evaluates and writes ([`Trainer::is_writer`]).
    pub fn set_cluster(&mut self, cluster: Cluster) {
        self.cluster = Some(cluster);
    }

    /// Whether this trainer logs, evaluates and writes checkpoints: false on the nodes of a
    /// multi-node run other than node 0, which only take the steps.
    pub fn is_writer(&self) -> bool {
        self.cluster.as_ref().is_none_or(Cluster::writes)
    }

    /// Takes the steps until [`Trainer::total_steps`], writing nothing: what a replica does.
    fn follow(&mut self) -> Result<(), TrainError> {
        while self.state.step < self.total_steps() {
            self.step()?;
        }
        Ok(())
    }

    /// Runs `lead` on this trainer as replica 0 of a data-parallel run on `devices` (see
    /// [`Trainer::fit_data_parallel`]), while the replicas on the other devices take steps until
    /// [`Trainer::total_steps`]: `lead` must take those steps too (it is [`Trainer::fit`] for a
    /// run, a timed loop of [`Trainer::step`] for a benchmark). With one device it runs `lead`.
    /// With a [`Cluster`] of several nodes, this process's replicas join those of the others.
    pub fn data_parallel<T>(
        &mut self,
        devices: &[B::Device],
        lead: impl FnOnce(&mut Self) -> Result<T, TrainError>,
    ) -> Result<T, TrainError>
    where
        M: Send + 'static,
        M::InnerModule: Send,
        B: 'static,
    {
        let local = devices.len();
        let cluster = self.cluster.clone().filter(|c| c.nodes > 1).map(Arc::new);
        let (nodes, node_rank) = cluster.as_ref().map_or((1, 0), |c| (c.nodes, c.node_rank));
        let world = local * nodes;
        if world <= 1 {
            return lead(self);
        }
        if devices[0] != self.device {
            return Err(TrainError::DataParallel(format!(
                "the first of train.devices ({:?}) must be the device the trainer was built on \
                 ({:?})",
                devices[0], self.device
            )));
        }
        if self.config.loss.is_unpaired() {
            return Err(TrainError::DataParallel(
                "train.devices: data-parallel training of unpaired data (loss kto) is not \
                 supported; train it on one device"
                    .into(),
            ));
        }
        let timeout = Duration::from_secs(self.config.train.sync_timeout_s);
        if let Some(c) = &cluster {
            c.check_reachable(timeout)?;
        }
        let _session = SESSION.lock().unwrap_or_else(|p| p.into_inner());
        reset_collective::<B::InnerBackend>();
        let ops: Vec<Arc<AtomicU64>> = (0..local).map(|_| Arc::default()).collect();
        let replica = |index: usize| Replica {
            rank: node_rank * local + index,
            world,
            local_world: local,
            cluster: cluster.clone(),
            ops: ops[index].clone(),
        };
        let failure: FirstFailure = Arc::default();
        let addresses: Addresses = Arc::default();
        let (done_tx, done_rx) = mpsc::channel();
        for (index, device) in devices.iter().enumerate().skip(1) {
            let mut trainer = self.replica_on(device, replica(index));
            let (failure, addresses, done) = (failure.clone(), addresses.clone(), done_tx.clone());
            let rank = trainer.replica.as_ref().expect("a replica").rank;
            std::thread::Builder::new()
                .name(format!("ganpo-replica-{rank}"))
                // As deep as the main thread's stack may need to be (8 MiB), and more.
                .stack_size(64 << 20)
                .spawn(move || {
                    let out = run_replica(&mut trainer, &failure, &addresses, Self::follow);
                    let _ = done.send((rank, out));
                })
                .map_err(|e| TrainError::DataParallel(format!("starting replica {rank}: {e}")))?;
        }
        drop(done_tx);
        let finished = Arc::new(AtomicBool::new(false));
        let watchdog = spawn_watchdog::<B>(Watch {
            ops: ops.clone(),
            first_rank: node_rank * local,
            timeout,
            finished: finished.clone(),
            failure: failure.clone(),
            cluster: cluster.clone(),
            addresses: addresses.clone(),
        });
        self.replica = Some(replica(0));
        let lead = run_replica(self, &failure, &addresses, lead);
        self.replica = None;
        // The others are done, or will be within the timeout (their next all-reduce fails).
        let limit = Duration::from_secs(self.config.train.sync_timeout_s.max(1) + 5);
        let mut others = Vec::new();
        for _ in 1..local {
            match done_rx.recv_timeout(limit) {
                Ok(result) => others.push(result),
                Err(_) => break,
            }
        }
        finished.store(true, Ordering::SeqCst);
        let _ = watchdog.join();
        // An all-reduce with another node that failed: name the nodes that are gone.
        if let (Err(e @ TrainError::Collective { .. }), Some(c)) = (&lead, &cluster) {
            let lost = lost_nodes(&lock(&addresses), c.node_rank);
            if !lost.is_empty() {
                return Err(TrainError::DataParallel(format!(
                    "node {}: lost {} ({e}); the run was stopped",
                    c.node_rank,
                    lost.join(", ")
                )));
            }
        }
        // Replica 0's own failure is returned as it is (the same error as on one device); a
        // failed all-reduce there is the echo of another replica's failure, named instead.
        if let Err(e) = &lead
            && !matches!(e, TrainError::Collective { .. })
        {
            return lead;
        }
        if let Some(why) = lock(&failure).take() {
            return Err(TrainError::DataParallel(why));
        }
        for (_, out) in others {
            out?;
        }
        lead
    }

    /// A copy of this trainer's state on `device`, as replica `replica.rank`: the policy and
    /// the reference forked there (same parameter ids), the discriminators rebuilt and loaded
    /// from this trainer's record (their running means and spectral-norm vectors are state that
    /// a clone would share), both optimizers' states, the position in the data. It holds no
    /// held-out split: only replica 0 evaluates.
    fn replica_on(&self, device: &B::Device, replica: Replica) -> Self {
        let config = self.config.clone();
        let ganpo = self.ganpo.as_ref().map(|g| {
            let settings = config
                .ganpo
                .as_ref()
                .expect("a run with GANPO configures it");
            settings
                .init::<B>(self.policy.hidden_size(), device)
                .load_record(g.clone().into_record())
        });
        Self {
            policy_optim: adamw(&config)
                .init()
                .load_record(self.policy_optim.to_record()),
            ganpo_optim: adamw(&config)
                .init()
                .load_record(self.ganpo_optim.to_record()),
            device: device.clone(),
            policy: self.policy.clone().fork(device),
            reference: self.reference.clone().map(|r| r.fork(device)),
            lora: self.lora,
            ganpo,
            train: self.train.clone(),
            eval: PreferenceDataset::default(),
            pad_id: self.pad_id,
            ref_cache: self.ref_cache.clone(),
            eval_ref_cache: None,
            state: self.state.clone(),
            window: MetricMeans::default(),
            config_changes: self.config_changes.clone(),
            order: None,
            data_fingerprint: self.data_fingerprint.clone(),
            model_fingerprint: self.model_fingerprint.clone(),
            profile: None,
            replica: Some(replica),
            cluster: None,
            config,
        }
    }
}

/// Locks `m`, also after a panic elsewhere (what it guards stays usable).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One replica's part of the run: joins the collective (on several nodes, checks with the
/// other nodes that they train the same run, and keeps their addresses), trains, leaves it. On
/// a failure (or a panic) it records the first failure of the run and resets the collective, so
/// the other replicas' pending all-reduce fails instead of waiting for it.
fn run_replica<B: AutodiffBackend, M: AutodiffModule<B> + CausalLm<B>, T>(
    trainer: &mut Trainer<B, M>,
    failure: &FirstFailure,
    addresses: &Addresses,
    work: impl FnOnce(&mut Trainer<B, M>) -> Result<T, TrainError>,
) -> Result<T, TrainError>
where
    M::InnerModule: CausalLm<B::InnerBackend>,
{
    let replica = trainer.replica.clone().expect("a replica");
    let peer = PeerId::from(replica.rank);
    let config = match &replica.cluster {
        Some(c) => c.collective_config(replica.local_world),
        None => CollectiveConfig::default().with_num_devices(replica.world),
    };
    let run = std::panic::AssertUnwindSafe(|| {
        let device = trainer.device.clone();
        replica.op("registration", || {
            register::<B::InnerBackend>(peer, device, config)
        })?;
        if let Some(cluster) = &replica.cluster {
            let known = agree(trainer, &replica, cluster)?;
            *lock(addresses) = known;
        }
        let out = work(trainer)?;
        finish::<B>(peer, replica.cluster.is_some());
        Ok(out)
    });
    let out = std::panic::catch_unwind(run).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        Err(TrainError::DataParallel(format!(
            "replica {} panicked: {msg}",
            replica.rank
        )))
    });
    if let Err(e) = &out {
        let mut first = lock(failure);
        // A failed all-reduce is the echo of another replica's failure, not its cause; the
        // lead replica's own failures are returned as they are.
        let cause = !matches!(e, TrainError::Collective { .. });
        if first.is_none() && cause && !replica.is_lead() {
            *first = Some(format!(
                "replica {} (device {:?}) failed at step {}: {e}; the other replicas were stopped",
                replica.rank,
                trainer.device,
                trainer.state.step + 1
            ));
        }
        drop(first);
        // Across nodes, a failed all-reduce means burn-collective's server for this process
        // has stopped (it panics when a peer is lost), and resetting it would panic too.
        if replica.cluster.is_none() || cause {
            reset::<B>();
        }
    }
    out
}

/// Resets burn-collective's server of this process (pending operations fail), unless it has
/// stopped already.
fn reset<B: AutodiffBackend>() {
    let _ = std::panic::catch_unwind(reset_collective::<B::InnerBackend>);
}

/// Leaves the collective. Across nodes, leaving also tells the coordinator, which node 0's
/// process serves and may already have stopped with it: that is waited for 10 s at most.
fn finish<B: AutodiffBackend>(peer: PeerId, across_nodes: bool) {
    if !across_nodes {
        let _ = finish_collective::<B::InnerBackend>(peer);
        return;
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = finish_collective::<B::InnerBackend>(peer);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(10));
}

/// What the watchdog watches: this process's replicas (`ops[i]` is replica `first_rank + i`).
struct Watch {
    ops: Vec<Arc<AtomicU64>>,
    first_rank: usize,
    timeout: Duration,
    finished: Arc<AtomicBool>,
    failure: FirstFailure,
    cluster: Option<Arc<Cluster>>,
    addresses: Addresses,
}

/// Watches the replicas' collective operations: when one replica has waited in an all-reduce
/// for `timeout` while another has not reached it, records which replicas are behind and
/// resets the collective (the waiting replicas' all-reduce then fails). Across nodes a
/// replica waiting that long is waiting for another node, which cannot be interrupted: it names
/// the nodes that are gone (or says that all still answer) and calls the cluster's `on_lost`.
fn spawn_watchdog<B: AutodiffBackend>(w: Watch) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut seen: Vec<(u64, Instant)> = w
            .ops
            .iter()
            .map(|o| (o.load(Ordering::SeqCst), Instant::now()))
            .collect();
        while !w.finished.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            let now = Instant::now();
            for (count, (last, since)) in w.ops.iter().zip(seen.iter_mut()) {
                let c = count.load(Ordering::SeqCst);
                if c != *last {
                    *last = c;
                    *since = now;
                }
            }
            let most = seen.iter().map(|(c, _)| *c).max().unwrap_or(0);
            let stuck_waiting = seen
                .iter()
                .any(|(c, since)| c % 2 == 1 && now.duration_since(*since) >= w.timeout);
            if !stuck_waiting {
                continue;
            }
            let behind: Vec<String> = seen
                .iter()
                .enumerate()
                .filter(|(_, (c, _))| *c < most)
                .map(|(i, _)| (w.first_rank + i).to_string())
                .collect();
            let secs = w.timeout.as_secs();
            let why = match &w.cluster {
                Some(c) if behind.is_empty() => {
                    across_nodes(c, &lock(&w.addresses), seen[0].0, secs)
                }
                _ => format!(
                    "replica {} did not reach the next all-reduce within train.sync_timeout_s = \
                     {secs} s while the others waited there; the run was stopped",
                    behind.join(", "),
                ),
            };
            lock(&w.failure).get_or_insert_with(|| why.clone());
            if let Some(c) = &w.cluster {
                (c.on_lost)(&why);
            }
            reset::<B>();
            return;
        }
    })
}

/// Why this node's replicas have waited `secs` seconds for the other nodes, the first of them
/// after `ops` counts of its collective operations (two each: registration, then the nodes'
/// two all-reduces of [`agree`]).
fn across_nodes(c: &Cluster, addresses: &[(usize, String)], ops: u64, secs: u64) -> String {
    let me = c.node_rank;
    if addresses.is_empty() && ops >= 5 {
        // Registered, one all-reduce done, waiting in the second: where burn-collective 0.21.0
        // as published hangs between nodes (vendor/README.md).
        return format!(
            "node {me}: the second all-reduce between the nodes did not finish within \
             train.sync_timeout_s = {secs} s, though all of them joined; burn-collective 0.21.0 \
             as published hangs there: build with ganpo's patched burn-collective \
             (vendor/README.md), or a node was lost while starting"
        );
    }
    if addresses.is_empty() {
        return format!(
            "node {me}: the {} nodes did not all join through the coordinator {} within \
             train.sync_timeout_s = {secs} s: a node has not started or failed before joining, \
             or another process took its --node-rank",
            c.nodes, c.coordinator
        );
    }
    match lost_nodes(addresses, me).as_slice() {
        [] => format!(
            "node {me}: waited {secs} s (train.sync_timeout_s) in an all-reduce with the other \
             nodes; all of them still answer, so one hangs or is slower than the timeout allows"
        ),
        lost => format!(
            "node {me}: lost {}; it stopped answering while this node waited {secs} s \
             (train.sync_timeout_s) in an all-reduce; the run was stopped",
            lost.join(", ")
        ),
    }
}
