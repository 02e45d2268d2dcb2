//! What a DHT lookup costs over real sockets with node-identity TLS, and how much of it
//! is connection set-up (TCP + TLS 1.3 handshake).
//!
//! `cargo run --release -p satellite-free-discovery --example lookup-cost -- [NODES] [LOOKUPS]`
//!
//! Starts NODES (default 30) DHT nodes in this process on 127.0.{100+i}.1, port 0, all
//! joined through the first. Then, LOOKUPS (default 50) times: a fresh uplink-mode client
//! (new identity, no connections) joins through the seed and looks up a node ("cold",
//! what every uplink command does first: every node it asks is a new TLS connection),
//! and the same client looks up another node ("warm": connections reused). A
//! separate loop pings one node over a new connection each time and over one kept
//! connection, which isolates the handshake. Prints one line per measurement; CPU is
//! this process's (both sides of every call), from `/proc/self/stat`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use satellite_free_discovery::core::rate::RateConfig;
use satellite_free_discovery::{Dht, DhtConfig, DhtHandle, Mode, RecordFields};
use shoal_proto::pb::discovery_client::DiscoveryClient;
use shoal_proto::{Identity, NodeId, pb, tls};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

const DIFFICULTY: u32 = 4;

struct BenchNode {
    handle: DhtHandle,
    addr: SocketAddr,
    id: NodeId,
    _fields: watch::Sender<RecordFields>,
}

fn config(bootstrap: Vec<(NodeId, SocketAddr)>) -> DhtConfig {
    DhtConfig {
        difficulty: DIFFICULTY,
        bootstrap,
        local_network: true,
        // Every node dials from 127.0.0.1: one peer to a per-address budget.
        rate: RateConfig {
            per_second: 0.0,
            ..RateConfig::default()
        },
        ..DhtConfig::default()
    }
}

async fn start_node(
    ip: Ipv4Addr,
    bootstrap: Vec<(NodeId, SocketAddr)>,
    stop: &CancellationToken,
) -> anyhow::Result<BenchNode> {
    let identity = Arc::new(Identity::generate(DIFFICULTY)?);
    let listener = TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = watch::channel(RecordFields {
        addresses: vec![addr],
        free_space: 1 << 30,
    });
    let handle = Dht::start(identity.clone(), config(bootstrap), Mode::Node(rx))?;
    // As the storage node serves it: no Nagle delay on accepted connections.
    let incoming = tls::accept(
        TcpIncoming::from(listener).with_nodelay(Some(true)),
        tls::server_config(&identity)?,
    );
    let router = Server::builder().add_service(handle.service());
    let stop = stop.clone();
    tokio::spawn(async move {
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
        {
            eprintln!("server on {addr}: {e}");
        }
    });
    Ok(BenchNode {
        handle,
        addr,
        id: identity.node_id(),
        _fields: tx,
    })
}

/// This process's CPU time (user + system), from `/proc/self/stat` (clock ticks of 10 ms).
fn cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which ends at the last ')'): utime is the 12th, stime
    // the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

struct Sample {
    wall: Vec<Duration>,
    cpu: Duration,
}

impl Sample {
    fn print(&self, what: &str) {
        let mut w = self.wall.clone();
        w.sort();
        let n = w.len().max(1);
        let mean = w.iter().sum::<Duration>() / n as u32;
        let p50 = w.get(n / 2).copied().unwrap_or_default();
        let p99 = w.get(n * 99 / 100).copied().unwrap_or_default();
        println!(
            "case={what} n={} mean_ms={:.2} p50_ms={:.2} p99_ms={:.2} cpu_ms_per_op={:.2}",
            w.len(),
            mean.as_secs_f64() * 1e3,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            self.cpu.as_secs_f64() * 1e3 / n as f64,
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let nodes: u8 = args.next().map_or(Ok(30), |a| a.parse())?;
    let lookups: usize = args.next().map_or(Ok(50), |a| a.parse())?;
    anyhow::ensure!((2..=150).contains(&nodes), "NODES must be 2..=150");
    let stop = CancellationToken::new();

    let seed = start_node(Ipv4Addr::new(127, 0, 100, 1), vec![], &stop).await?;
    let pin = (seed.id, seed.addr);
    let mut net = vec![seed];
    for i in 1..nodes {
        let node = start_node(Ipv4Addr::new(127, 0, 100 + i, 1), vec![pin], &stop).await?;
        node.handle.bootstrap().await?;
        net.push(node);
    }
    // Everyone refreshes once more, so tables hold the whole (small) network.
    for n in &net {
        n.handle.bootstrap().await?;
    }
    println!("nodes={nodes} lookups={lookups} tls=1.3 (node identity, aws-lc-rs)");

    let mut cold = Sample {
        wall: Vec::new(),
        cpu: Duration::ZERO,
    };
    let mut warm = Sample {
        wall: Vec::new(),
        cpu: Duration::ZERO,
    };
    for i in 0..lookups {
        // Cold: what every uplink command does first, join (through the seed) and look
        // up, over connections that all start with a handshake.
        let (c0, t0) = (cpu(), Instant::now());
        let client = Dht::start(
            Arc::new(Identity::generate(DIFFICULTY)?),
            config(vec![pin]),
            Mode::Client,
        )?;
        client.bootstrap().await?;
        let target = &net[1 + i % (net.len() - 1)];
        let found = client.find_node(target.id).await?;
        cold.wall.push(t0.elapsed());
        cold.cpu += cpu().saturating_sub(c0);
        anyhow::ensure!(found.and_then(|f| f.addresses.first().copied()) == Some(target.addr));
        // Warm: the next lookup of the same client, over the connections it has.
        let target = &net[1 + (i * 7 + 3) % (net.len() - 1)];
        let (c0, t0) = (cpu(), Instant::now());
        let found = client
            .find_node(target.id)
            .await?
            .context("a lookup did not find its target")?;
        warm.wall.push(t0.elapsed());
        warm.cpu += cpu().saturating_sub(c0);
        anyhow::ensure!(found.addresses.first() == Some(&target.addr));
        client.shutdown().await;
    }
    cold.print("join-and-lookup-cold");
    warm.print("lookup-warm");

    // The handshake alone: a ping over a new connection vs over a kept one.
    let target = &net[1];
    let ping = |c: &mut DiscoveryClient<tonic::transport::Channel>| {
        let mut c = c.clone();
        async move { c.ping(pb::PingRequest { sender: None }).await }
    };
    let mut fresh = Sample {
        wall: Vec::new(),
        cpu: Duration::ZERO,
    };
    let mut kept = Sample {
        wall: Vec::new(),
        cpu: Duration::ZERO,
    };
    let mut reused = DiscoveryClient::new(tls::Connector::channel(target.id, target.addr, |e| e)?);
    ping(&mut reused).await?;
    for _ in 0..lookups * 4 {
        let mut c = DiscoveryClient::new(tls::Connector::channel(target.id, target.addr, |e| e)?);
        let (c0, t0) = (cpu(), Instant::now());
        ping(&mut c).await?;
        fresh.wall.push(t0.elapsed());
        fresh.cpu += cpu().saturating_sub(c0);
        let (c0, t0) = (cpu(), Instant::now());
        ping(&mut reused).await?;
        kept.wall.push(t0.elapsed());
        kept.cpu += cpu().saturating_sub(c0);
    }
    fresh.print("ping-new-connection");
    kept.print("ping-kept-connection");

    stop.cancel();
    for n in net {
        n.handle.shutdown().await;
    }
    Ok(())
}
