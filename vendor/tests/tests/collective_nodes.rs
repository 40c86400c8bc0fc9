//! burn-collective's global level (vendor/README.md, burn-collective change 1): two processes,
//! each a node with one CPU device, all-reduce 12 times through a coordinator. Burn 0.21.0's
//! barrier at the end of every global all-reduce kept the first sync's peers, so the second
//! all-reduce never returned; this test then fails after its 60-second limit.
//!
//! The test runs node 0 (and the coordinator) itself and starts its own binary again as node 1.

use std::process::Command;
use std::time::{Duration, Instant};

use burn::backend::NdArray;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_collective::{
    AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation, all_reduce, finish_collective,
    register,
};

type B = NdArray<f32>;

const NODE: &str = "GANPO_TEST_COLLECTIVE_NODE";
const PORTS: &str = "GANPO_TEST_COLLECTIVE_PORTS";
const OPS: usize = 12;

/// Node `rank` of two: registers, all-reduces `[rank + i, 10 * i]` (sum) for each op `i` and
/// checks each result, leaves.
fn node(rank: u32, ports: [u16; 3]) {
    let device = Default::default();
    let address = |port: u16| format!("ws://127.0.0.1:{port}").parse().unwrap();
    let config = CollectiveConfig::default()
        .with_num_devices(1)
        .with_num_nodes(2)
        .with_global_address(address(ports[0]))
        .with_node_address(address(ports[1 + rank as usize]))
        .with_data_service_port(ports[1 + rank as usize])
        .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2));
    let peer = PeerId::from(rank);
    register::<B>(peer, device, config).unwrap();
    for i in 0..OPS {
        let x = Tensor::<B, 1>::from_floats([rank as f32 + i as f32, 10.0 * i as f32], &device);
        let out = all_reduce::<B>(peer, x.into_primitive().tensor(), ReduceOperation::Sum)
            .unwrap_or_else(|e| panic!("node {rank}, all-reduce {i}: {e:?}"));
        let out: Vec<f32> = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(out))
            .into_data()
            .to_vec()
            .unwrap();
        let i = i as f32;
        assert_eq!(
            out,
            [1.0 + 2.0 * i, 20.0 * i],
            "node {rank}, all-reduce {i}"
        );
    }
    finish_collective::<B>(peer).unwrap();
}

#[test]
fn two_nodes_all_reduce_again_and_again() {
    if let Ok(rank) = std::env::var(NODE) {
        let ports: Vec<u16> = std::env::var(PORTS)
            .unwrap()
            .split(',')
            .map(|p| p.parse().unwrap())
            .collect();
        node(rank.parse().unwrap(), [ports[0], ports[1], ports[2]]);
        return;
    }
    let listeners: Vec<_> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    drop(listeners);
    let coordinator = ports[0];
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
            .block_on(burn_collective::start_global_orchestrator(coordinator))
    });
    let list = ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut other = Command::new(std::env::current_exe().unwrap())
        .args(["two_nodes_all_reduce_again_and_again", "--exact"])
        .env(NODE, "1")
        .env(PORTS, &list)
        .spawn()
        .unwrap();
    let here = std::thread::spawn(move || node(0, [ports[0], ports[1], ports[2]]));
    let start = Instant::now();
    while !here.is_finished() || other.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = other.kill();
            panic!("the two nodes did not finish {OPS} all-reduces within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    here.join().unwrap();
    assert!(other.wait().unwrap().success(), "node 1 failed");
}
