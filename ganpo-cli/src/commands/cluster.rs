//! `ganpo train` across several processes or machines: the flags (and the `WORLD_SIZE`, `RANK`,
//! `MASTER_ADDR`, `MASTER_PORT` variables torchrun and Slurm scripts set) that make a process
//! one node of a run, and the coordinator node 0 serves (docs/distributed.md).

use std::net::{IpAddr, TcpListener, ToSocketAddrs, UdpSocket};

use anyhow::{Context, Result, bail};
use ganpo_train::train::Cluster;

/// Options of `ganpo train` for a run over several processes (nodes).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ClusterArgs {
    /// Train as one of N processes, usually one per machine, each on its own `--devices`
    /// (default: `WORLD_SIZE`, else 1). docs/distributed.md.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// This process's rank among the nodes, 0 to N-1 (default: `RANK`). Node 0 serves the
    /// coordinator and is the only one that writes metrics, checkpoints and the final model.
    #[arg(long)]
    pub node_rank: Option<usize>,
    /// HOST:PORT of the coordinator that node 0 serves (default: `MASTER_ADDR:MASTER_PORT`).
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: Option<String>,
    /// HOST:PORT where the other nodes reach this one's tensors (default: this machine's address
    /// toward the coordinator, on the coordinator's port + 1 + the node rank).
    #[arg(long, value_name = "HOST:PORT")]
    pub node_address: Option<String>,
}

/// The environment variable `name`, parsed, or `None` when unset; an error names it.
fn env<T: std::str::FromStr>(name: &str) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("environment variable {name}={v:?}: {e}")),
        Err(_) => Ok(None),
    }
}

impl ClusterArgs {
    /// This process's node of a run over several processes, from the flags, else from the
    /// environment; `None` for a run in one process.
    pub fn resolve(&self) -> Result<Option<Cluster>> {
        let nodes = match self.nodes {
            Some(n) => n,
            None => env::<usize>("WORLD_SIZE")?.unwrap_or(1),
        };
        if nodes <= 1 {
            if self.node_rank.is_some_and(|r| r > 0) || self.coordinator.is_some() {
                bail!("--node-rank and --coordinator need --nodes N (or WORLD_SIZE) above 1");
            }
            return Ok(None);
        }
        let node_rank = match self.node_rank {
            Some(r) => r,
            None => env::<usize>("RANK")?
                .context("a run over several nodes needs --node-rank (or RANK)")?,
        };
        let coordinator = match &self.coordinator {
            Some(c) => c.clone(),
            None => match (env::<String>("MASTER_ADDR")?, env::<u16>("MASTER_PORT")?) {
                (Some(host), Some(port)) => format!("{host}:{port}"),
                _ => bail!(
                    "a run over several nodes needs --coordinator HOST:PORT (or MASTER_ADDR and \
                     MASTER_PORT)"
                ),
            },
        };
        let node_address = match &self.node_address {
            Some(a) => a.clone(),
            None => default_node_address(&coordinator, node_rank)?,
        };
        Ok(Some(Cluster::new(
            nodes,
            node_rank,
            coordinator,
            node_address,
        )?))
    }
}

/// This machine's address toward `coordinator` (the interface a connection there would leave
/// from; nothing is sent), on the coordinator's port + 1 + `node_rank`.
fn default_node_address(coordinator: &str, node_rank: usize) -> Result<String> {
    let to = coordinator
        .to_socket_addrs()
        .with_context(|| format!("--coordinator {coordinator:?}: expected HOST:PORT"))?
        .next()
        .with_context(|| format!("--coordinator {coordinator:?}: no address"))?;
    let ip: IpAddr = UdpSocket::bind(("0.0.0.0", 0))
        .and_then(|s| {
            s.connect(to)?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .with_context(|| format!("finding this machine's address toward {coordinator}"))?;
    let port = usize::from(to.port()) + 1 + node_rank;
    let port = u16::try_from(port)
        .ok()
        .with_context(|| format!("no port {port} for node {node_rank}: pass --node-address"))?;
    Ok(format!("{ip}:{port}"))
}

/// Serves burn-collective's coordinator (its global orchestrator) on `port` of every interface,
/// in the background of this process, for the nodes of a run to register with. Its server
/// takes over Ctrl-C and SIGTERM, so they end this process here as they would have.
pub fn start_coordinator(port: u16) -> Result<()> {
    drop(
        TcpListener::bind(("0.0.0.0", port)).with_context(|| {
            format!("node 0 serves the coordinator on port {port}: it is taken")
        })?,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the coordinator's runtime")?;
    std::thread::Builder::new()
        .name("ganpo-coordinator".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(burn_collective::start_global_orchestrator(port));
                #[cfg(unix)]
                let terminate = async {
                    use tokio::signal::unix::{SignalKind, signal};
                    match signal(SignalKind::terminate()) {
                        Ok(mut s) => s.recv().await,
                        Err(_) => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let terminate = std::future::pending::<Option<()>>();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => std::process::exit(130),
                    _ = terminate => std::process::exit(143),
                }
            })
        })
        .context("starting the coordinator")?;
    tracing::info!("node 0 serves the coordinator on port {port}");
    Ok(())
}
