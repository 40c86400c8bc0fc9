//! A data-parallel run across several processes, usually one per machine ("nodes"): where this
//! process stands ([`Cluster`]), the check that every node trains the same run before the first
//! step ([`agree`]), and the naming of a node that is gone ([`lost_nodes`]).
//!
//! The tensors travel through burn-collective's global level: every node registers its local
//! replicas with the coordinator (burn-collective's global orchestrator, which node 0's
//! `ganpo train` starts), then all-reduces with the other nodes directly, each serving its
//! tensors on its own address.

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::collective::{AllReduceStrategy, CollectiveConfig, ReduceOperation};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use ganpo_models::CausalLm;
use serde::{Deserialize, Serialize};

use super::checkpoint::value_differences;
use super::collective::Replica;
use super::trainer::{TrainError, Trainer};
use crate::config::RunConfig;

/// Called when a multi-node run cannot go on (a node is gone or hangs): a process waiting in a
/// cross-process all-reduce cannot be interrupted, so a program ends here.
pub type OnLost = Arc<dyn Fn(&str) + Send + Sync>;

/// This process's place in a run over `nodes` processes: each trains on its own devices
/// (`train.devices`, the same count on every node), and node 0 logs, evaluates and writes.
#[derive(Clone)]
pub struct Cluster {
    /// How many processes (nodes) train together.
    pub nodes: usize,
    /// This process's rank among them, `0..nodes`.
    pub node_rank: usize,
    /// The coordinator every node registers with, `HOST:PORT` (node 0 runs it).
    pub coordinator: String,
    /// Where the other nodes reach this one's tensors, `HOST:PORT` (this node serves on
    /// `0.0.0.0:PORT`).
    pub node_address: String,
    /// What the watchdog does when a node is lost or hangs past `train.sync_timeout_s`, with
    /// a message naming it; [`Cluster::new`]'s default prints it and exits with status 1.
    pub on_lost: OnLost,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.nodes)
            .field("node_rank", &self.node_rank)
            .field("coordinator", &self.coordinator)
            .field("node_address", &self.node_address)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Node `node_rank` of `nodes`, registering with `coordinator` and serving its tensors at
    /// `node_address` (both `HOST:PORT`); refused when the rank is out of range or an address
    /// is not `HOST:PORT`.
    pub fn new(
        nodes: usize,
        node_rank: usize,
        coordinator: impl Into<String>,
        node_address: impl Into<String>,
    ) -> Result<Self, TrainError> {
        let (coordinator, node_address) = (coordinator.into(), node_address.into());
        let bad = |what: &str| TrainError::DataParallel(what.to_string());
        if nodes == 0 {
            return Err(bad("--nodes must be at least 1"));
        }
        if node_rank >= nodes {
            return Err(bad(&format!(
                "--node-rank {node_rank} is out of range: {nodes} nodes have ranks 0 to {}",
                nodes - 1
            )));
        }
        for (name, address) in [
            ("--coordinator", &coordinator),
            ("--node-address", &node_address),
        ] {
            port_of(address).ok_or_else(|| {
                bad(&format!(
                    "{name} {address:?}: expected HOST:PORT, e.g. 10.0.0.1:29500"
                ))
            })?;
        }
        Ok(Self {
            nodes,
            node_rank,
            coordinator,
            node_address,
            on_lost: Arc::new(|why| {
                eprintln!("error: {why}");
                std::process::exit(1);
            }),
        })
    }

    /// Whether this node writes the run (metrics, checkpoints, the final model): node 0 only.
    pub fn writes(&self) -> bool {
        self.node_rank == 0
    }

    /// The coordinator's port, which node 0 serves it on.
    pub fn coordinator_port(&self) -> u16 {
        port_of(&self.coordinator).expect("checked by new")
    }

    /// The same, calling `on_lost` instead of exiting when a node is lost.
    pub fn with_on_lost(mut self, on_lost: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_lost = Arc::new(on_lost);
        self
    }

    /// burn-collective's configuration for this node with `local` replicas: the global level
    /// through the coordinator, a tree all-reduce between nodes (a ring cannot reduce tensors
    /// smaller than the node count, such as a batch mean).
    pub(crate) fn collective_config(&self, local: usize) -> CollectiveConfig {
        let ws = |a: &str| {
            format!("ws://{a}")
                .parse()
                .expect("any string is an address")
        };
        CollectiveConfig::default()
            .with_num_devices(local)
            .with_num_nodes(self.nodes as u32)
            .with_global_address(ws(&self.coordinator))
            .with_node_address(ws(&self.node_address))
            .with_data_service_port(port_of(&self.node_address).expect("checked by new"))
            .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2))
    }

    /// Checks, before registering, that this node's port is free and that the coordinator
    /// answers within `timeout` (it may still be starting): burn-collective would otherwise
    /// wait for it forever.
    pub(crate) fn check_reachable(&self, timeout: Duration) -> Result<(), TrainError> {
        let port = port_of(&self.node_address).expect("checked by new");
        if let Err(e) = TcpListener::bind(("0.0.0.0", port)) {
            return Err(TrainError::DataParallel(format!(
                "node {}: cannot serve its tensors on port {port} of --node-address {} ({e})",
                self.node_rank, self.node_address
            )));
        }
        let start = Instant::now();
        loop {
            match connect(&self.coordinator, Duration::from_secs(2)) {
                Ok(()) => return Ok(()),
                Err(e) if start.elapsed() >= timeout => {
                    return Err(TrainError::DataParallel(format!(
                        "node {}: the coordinator {} cannot be reached ({e}; tried for {} s, \
                         train.sync_timeout_s); node 0 starts it: is it running, and is the \
                         address right?",
                        self.node_rank,
                        self.coordinator,
                        timeout.as_secs()
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

/// The port of `HOST:PORT`.
fn port_of(address: &str) -> Option<u16> {
    let (host, port) = address.rsplit_once(':')?;
    (!host.is_empty()).then_some(())?;
    port.parse().ok()
}

/// Opens (and closes) a TCP connection to `address`.
fn connect(address: &str, timeout: Duration) -> Result<(), String> {
    let addrs: Vec<_> = address
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .collect();
    let mut last = "no address".to_string();
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// The nodes of `addresses` (rank, address) other than `me` that no longer accept connections,
/// each as `node R (ADDRESS): WHY`.
pub(crate) fn lost_nodes(addresses: &[(usize, String)], me: usize) -> Vec<String> {
    addresses
        .iter()
        .filter(|(rank, _)| *rank != me)
        .filter_map(|(rank, a)| {
            connect(a, Duration::from_secs(2))
                .err()
                .map(|why| format!("node {rank} ({a}): {why}"))
        })
        .collect()
}

/// What one node shows the others before the first step.
#[derive(Serialize, Deserialize)]
struct NodeCard {
    version: String,
    address: String,
    devices: usize,
    config: RunConfig,
    data_fingerprint: String,
    train_pairs: usize,
    model_fingerprint: String,
    step: usize,
}

/// A run configuration as nodes compare it: paths (each machine has its own; the data's and
/// the models' fingerprints are compared instead), the output directory (only node 0 writes)
/// and the device indices (their count is compared) are left out.
fn comparable(c: &RunConfig) -> toml::Value {
    let mut c = c.clone();
    c.model.path = Default::default();
    c.model.reference = c.model.reference.map(|_| Default::default());
    c.data.train.clear();
    c.data.eval.clear();
    c.train.output_dir = Default::default();
    c.train.device = None;
    c.train.devices = None;
    toml::Value::try_from(c).expect("configs serialize")
}

/// The node addresses of a run, by rank, once the nodes have agreed ([`agree`]).
pub(crate) type Addresses = Arc<Mutex<Vec<(usize, String)>>>;

/// Before the first step: every node shows the others its resolved configuration, data and
/// model fingerprints, position (a resumed run) and device count, through two all-reduces; every
/// replica of every node then decides alike, so either all go on or all stop with the same
/// error naming the nodes and what differs. Returns the nodes' addresses.
pub(crate) fn agree<B: AutodiffBackend, M: AutodiffModule<B> + CausalLm<B>>(
    trainer: &Trainer<B, M>,
    replica: &Replica,
    cluster: &Cluster,
) -> Result<Vec<(usize, String)>, TrainError>
where
    M::InnerModule: CausalLm<B::InnerBackend>,
{
    let nodes = cluster.nodes;
    let speaks = replica.is_lead();
    let card = NodeCard {
        version: env!("CARGO_PKG_VERSION").to_string(),
        address: cluster.node_address.clone(),
        devices: replica.local_world,
        config: trainer.config.clone(),
        data_fingerprint: trainer.data_fingerprint.clone(),
        train_pairs: trainer.train.len(),
        model_fingerprint: trainer.model_fingerprint.clone(),
        step: trainer.state.step,
    };
    let bytes = serde_json::to_vec(&card).expect("cards serialize");
    let device = trainer.device.clone();
    let sum = |what: &str, values: Vec<f32>| -> Result<Vec<f32>, TrainError> {
        let n = values.len();
        let t = Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(values, [n]), &device);
        let t = replica.reduce(what, t, ReduceOperation::Sum)?;
        Ok(t.into_data().to_vec::<f32>().expect("f32 data"))
    };
    // Which ranks are taken, and how long each card is.
    let mut heads = vec![0.0; 2 * nodes];
    if speaks {
        heads[cluster.node_rank] = 1.0;
        heads[nodes + cluster.node_rank] = bytes.len() as f32;
    }
    let heads = sum("the nodes' ranks", heads)?;
    let claims: Vec<String> = (0..nodes)
        .filter(|&r| heads[r] != 1.0)
        .map(|r| match heads[r] as usize {
            0 => format!("no process is node {r}"),
            k => format!("{k} processes are node {r}"),
        })
        .collect();
    if !claims.is_empty() {
        return Err(TrainError::DataParallel(format!(
            "the nodes' ranks do not cover 0 to {} once each: {} (check --node-rank / RANK)",
            nodes - 1,
            claims.join("; ")
        )));
    }
    let lengths: Vec<usize> = heads[nodes..].iter().map(|&l| l as usize).collect();
    let offsets: Vec<usize> = lengths
        .iter()
        .scan(0, |at, &l| {
            let start = *at;
            *at += l;
            Some(start)
        })
        .collect();
    let mut all = vec![0.0; lengths.iter().sum()];
    if speaks {
        let at = offsets[cluster.node_rank];
        for (slot, b) in all[at..at + bytes.len()].iter_mut().zip(&bytes) {
            *slot = f32::from(*b);
        }
    }
    let all = sum("the nodes' configurations", all)?;
    let mut cards = Vec::with_capacity(nodes);
    for rank in 0..nodes {
        let at = offsets[rank];
        let raw: Vec<u8> = all[at..at + lengths[rank]]
            .iter()
            .map(|&b| b as u8)
            .collect();
        let card: NodeCard = serde_json::from_slice(&raw).map_err(|e| {
            TrainError::DataParallel(format!(
                "node {rank}'s description cannot be read ({e}): is it running another version \
                 of ganpo?"
            ))
        })?;
        cards.push(card);
    }
    let differences = differences(&cards);
    if !differences.is_empty() {
        return Err(TrainError::DataParallel(format!(
            "the nodes must train the same run: {}",
            differences.join(". ")
        )));
    }
    Ok(cards
        .into_iter()
        .enumerate()
        .map(|(rank, c)| (rank, c.address))
        .collect())
}

/// How each node's card differs from node 0's, a sentence per node that differs.
fn differences(cards: &[NodeCard]) -> Vec<String> {
    let first = &cards[0];
    let mut out = Vec::new();
    for (rank, card) in cards.iter().enumerate().skip(1) {
        let mut what = Vec::new();
        let mut differ = |name: &str, a: &dyn std::fmt::Display, b: &dyn std::fmt::Display| {
            what.push(format!("{name}: {a} on node 0, {b} on node {rank}"))
        };
        if card.version != first.version {
            differ("ganpo version", &first.version, &card.version);
        }
        if card.devices != first.devices {
            differ("devices", &first.devices, &card.devices);
        }
        for change in value_differences(&comparable(&first.config), &comparable(&card.config), 0) {
            let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
            differ(&change.key, &show(&change.was), &show(&change.now));
        }
        if (&card.data_fingerprint, card.train_pairs)
            != (&first.data_fingerprint, first.train_pairs)
        {
            differ(
                "training data (fingerprint, pairs)",
                &format!("({}, {})", first.data_fingerprint, first.train_pairs),
                &format!("({}, {})", card.data_fingerprint, card.train_pairs),
            );
        }
        if card.model_fingerprint != first.model_fingerprint {
            differ(
                "model fingerprint",
                &first.model_fingerprint,
                &card.model_fingerprint,
            );
        }
        if card.step != first.step {
            differ("starting step", &first.step, &card.step);
        }
        if !what.is_empty() {
            out.push(format!(
                "node {rank} differs from node 0: {}",
                what.join("; ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(config: RunConfig) -> NodeCard {
        NodeCard {
            version: "0.1.0".into(),
            address: "10.0.0.1:29501".into(),
            devices: 2,
            config,
            data_fingerprint: "abc".into(),
            train_pairs: 100,
            model_fingerprint: "m1".into(),
            step: 0,
        }
    }

    #[test]
    fn nodes_differ_by_settings_data_and_position_but_not_by_paths() {
        let base = RunConfig::default();
        let mut own_paths = base.clone();
        own_paths.model.path = "/scratch/node1/model".into();
        own_paths.data.train = vec!["/scratch/node1/pairs.jsonl".into()];
        own_paths.train.output_dir = "/scratch/node1/out".into();
        own_paths.train.devices = Some(vec![2, 3]);
        let mut other = base.clone();
        other.train.lr *= 2.0;
        let mut third = card(base.clone());
        third.data_fingerprint = "abd".into();
        third.step = 40;
        third.devices = 1;
        let cards = vec![card(base.clone()), card(own_paths), card(other), third];
        let d = differences(&cards);
        assert_eq!(d.len(), 2, "{d:?}");
        let lr = base.train.lr;
        assert_eq!(
            d[0],
            format!(
                "node 2 differs from node 0: train.lr: {} on node 0, {} on node 2",
                toml::Value::Float(lr),
                toml::Value::Float(lr * 2.0)
            )
        );
        assert_eq!(
            d[1],
            "node 3 differs from node 0: devices: 2 on node 0, 1 on node 3; training data \
             (fingerprint, pairs): (abc, 100) on node 0, (abd, 100) on node 3; starting step: 0 \
             on node 0, 40 on node 3"
        );
    }

    #[test]
    fn ranks_and_addresses_are_checked() {
        let err = |r: Result<Cluster, TrainError>| r.unwrap_err().to_string();
        assert!(err(Cluster::new(2, 2, "h:1", "h:2")).contains("--node-rank 2 is out of range"));
        assert!(err(Cluster::new(2, 1, "h", "h:2")).contains("--coordinator \"h\": expected"));
        assert!(err(Cluster::new(2, 1, "h:1", ":2")).contains("--node-address \":2\""));
        let c = Cluster::new(2, 1, "10.0.0.1:29500", "10.0.0.2:29502").unwrap();
        let config = c.collective_config(4);
        assert!(config.is_valid());
    }

    #[test]
    fn a_node_whose_port_refuses_connections_is_named_lost() {
        let alive = TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = TcpListener::bind("127.0.0.1:0").unwrap();
        let (a, g) = (alive.local_addr().unwrap(), gone.local_addr().unwrap());
        drop(gone);
        let nodes = [(0, a.to_string()), (1, a.to_string()), (2, g.to_string())];
        let lost = lost_nodes(&nodes, 0);
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].starts_with(&format!("node 2 ({g}): ")), "{lost:?}");
    }
}
