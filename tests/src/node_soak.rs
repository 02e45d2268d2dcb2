//! `node-soak`: many `storage-node` processes take small pieces (inline and file-backed)
//! from concurrent owners over the real piece protocol while nodes are killed with
//! SIGKILL and restarted at random. Afterwards every acknowledged piece must download
//! byte for byte from its node, every node must stop within 30 s of SIGTERM, and every
//! node's metadata (opened directly, after the stop) must have counters and per-owner
//! totals equal to the sums over its pieces, and piece files matching the metadata.
//!
//! Nodes are `storage-node run` on `127.0.{i}.1` (port 0, so a restarted node has a new
//! port, which the clients pick up), set up and started by [`crate::process_net`]'s
//! helpers; node 1 is the DHT seed. Every process is ours, killed by its handle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use shoal_proto::{NodeId, PieceId};
use shoal_test_kit::test_data;
use storage_node::PieceStore;
use storage_node::config::NodeDir;
use storage_node::meta::{OwnedPiece, charged};
use storage_node::store::INLINE_MAX;
use uplink::grpc::NodeClient;
use uplink::store::NodeAddress;

use crate::Owner;
use crate::process_net::{Binaries, NodeProcess, run_node, setup_node};

/// What a soak does.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// The `storage-node` binary.
    pub storage_node: PathBuf,
    /// Node processes (at most 254).
    pub nodes: usize,
    /// Acknowledged pieces to reach.
    pub pieces: usize,
    /// Longest the upload phase may run; the soak fails if it has not reached `pieces`
    /// by then.
    pub seconds: u64,
    /// Concurrent uploading owners.
    pub clients: usize,
    /// Mean pause between two kills (each kill is followed by an immediate restart).
    pub kill_every: Duration,
}

/// What a soak measured.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    pub acked: usize,
    pub inline: usize,
    pub file: usize,
    /// Uploads that failed (a node killed under them, or restarting).
    pub failed: usize,
    pub kills: usize,
    pub upload_secs: f64,
    pub verified: usize,
    /// Longest a node took to stop after SIGTERM at the end.
    pub slowest_stop_secs: f64,
    /// Sum over the nodes of their committed pieces (at least `acked`: an upload whose
    /// node died after its commit but before the receipt arrived is stored and not
    /// acknowledged).
    pub stored: u64,
}

/// How long a node may take to stop after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// Deadline of one upload or download.
const CALL_DEADLINE: Duration = Duration::from_secs(20);

/// One node: its directory, its current address (changes at each restart) and process.
#[derive(Debug)]
struct Slot {
    dir: PathBuf,
    id: NodeId,
    grpc: SocketAddr,
    process: Option<NodeProcess>,
}

#[derive(Debug, Clone, Copy)]
struct Acked {
    node: usize,
    owner: usize,
    piece: PieceId,
    len: usize,
}

fn seed_of(piece: &PieceId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&piece.0[..8]);
    u64::from_le_bytes(b)
}

fn parse_pinned(pinned: &str) -> anyhow::Result<(NodeId, SocketAddr)> {
    let (id, addr) = pinned
        .split_once('@')
        .with_context(|| format!("not NODEID@ADDR: {pinned}"))?;
    let id = NodeId::from_hex(id).with_context(|| format!("bad node id in {pinned}"))?;
    Ok((id, addr.parse()?))
}

async fn start_node(
    bins: &Binaries,
    dir: &Path,
    i: usize,
) -> anyhow::Result<(NodeProcess, NodeId, SocketAddr)> {
    let (bins, dir) = (bins.clone(), dir.to_owned());
    let (process, pinned) =
        tokio::task::spawn_blocking(move || run_node(&bins, &dir, i + 1, None)).await??;
    let (id, grpc) = parse_pinned(&pinned)?;
    Ok((process, id, grpc))
}

/// SIGTERM, then waits (at most [`STOP_DEADLINE`]) for the exit; returns how long it took.
async fn stop_node(mut process: NodeProcess) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let pid = rustix::process::Pid::from_child(&process.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    let waited = tokio::task::spawn_blocking(move || {
        loop {
            match process.child.try_wait() {
                Ok(Some(status)) => return Ok(Some(status)),
                Ok(None) if t.elapsed() > STOP_DEADLINE => {
                    let _ = process.child.kill();
                    let _ = process.child.wait();
                    return Ok(None);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(e),
            }
        }
    })
    .await??;
    match waited {
        Some(_) => Ok(t.elapsed()),
        None => bail!("a node did not stop within {STOP_DEADLINE:?} of SIGTERM"),
    }
}

fn kill_now(mut process: NodeProcess) {
    let _ = process.child.kill();
    let _ = process.child.wait();
}

/// The processes still running when the soak ends (also on an error): killed.
struct Nodes(Arc<Mutex<Vec<Slot>>>);

impl Drop for Nodes {
    fn drop(&mut self) {
        let mut slots = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for s in slots.iter_mut() {
            if let Some(p) = s.process.take() {
                kill_now(p);
            }
        }
    }
}

/// Runs the soak (see the module docs).
pub async fn run(opts: &SoakOptions) -> anyhow::Result<SoakReport> {
    if !(1..=254).contains(&opts.nodes) {
        bail!("between 1 and 254 nodes, not {}", opts.nodes);
    }
    let bins = Binaries {
        storage_node: opts.storage_node.clone(),
        uplink: PathBuf::new(),
    };
    let root = tempfile::Builder::new()
        .prefix("shoal-node-soak")
        .tempdir()?;
    let dir = |i: usize| root.path().join(format!("node{:03}", i + 1));
    let t = Instant::now();
    {
        let (b, d) = (bins.clone(), dir(0));
        tokio::task::spawn_blocking(move || setup_node(&b, &d, 1, None)).await??;
    }
    let nodes = Nodes(Arc::new(Mutex::new(Vec::new())));
    let (p, id, grpc) = start_node(&bins, &dir(0), 0).await?;
    let seed = format!("{id}@{grpc}");
    lock(&nodes.0).push(Slot {
        dir: dir(0),
        id,
        grpc,
        process: Some(p),
    });
    for i in 1..opts.nodes {
        let (b, d, s) = (bins.clone(), dir(i), seed.clone());
        tokio::task::spawn_blocking(move || setup_node(&b, &d, i + 1, Some(&s))).await??;
        let (p, id, grpc) = start_node(&bins, &dir(i), i).await?;
        lock(&nodes.0).push(Slot {
            dir: dir(i),
            id,
            grpc,
            process: Some(p),
        });
    }
    eprintln!(
        "node-soak: {} nodes up in {:.1} s",
        opts.nodes,
        t.elapsed().as_secs_f64()
    );

    let owners: Arc<Vec<Owner>> =
        Arc::new((0..opts.clients.max(1)).map(|_| Owner::new()).collect());
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let failed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(opts.seconds);

    let killer = {
        let (slots, done, kills, bins) = (
            Arc::clone(&nodes.0),
            Arc::clone(&done),
            Arc::clone(&kills),
            bins.clone(),
        );
        let mean = opts.kill_every;
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let pause = mean.mul_f64(0.5 + rand::random::<f64>());
                tokio::time::sleep(pause).await;
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let i = rand::random_range(0..lock(&slots).len());
                let (process, dir) = {
                    let mut s = lock(&slots);
                    (s[i].process.take(), s[i].dir.clone())
                };
                if let Some(p) = process {
                    tokio::task::spawn_blocking(move || kill_now(p)).await?;
                    kills.fetch_add(1, Ordering::Relaxed);
                }
                let (p, id, grpc) = start_node(&bins, &dir, i).await?;
                let mut s = lock(&slots);
                if s[i].id != id {
                    bail!("node {} came back with another id", i + 1);
                }
                s[i].grpc = grpc;
                s[i].process = Some(p);
            }
            Ok::<_, anyhow::Error>(())
        })
    };

    let mut clients = Vec::new();
    for c in 0..opts.clients.max(1) {
        let (slots, owners, acked, failed, done) = (
            Arc::clone(&nodes.0),
            Arc::clone(&owners),
            Arc::clone(&acked),
            Arc::clone(&failed),
            Arc::clone(&done),
        );
        let target = opts.pieces;
        clients.push(tokio::spawn(async move {
            let owner = &owners[c];
            let mut conns: HashMap<usize, (SocketAddr, NodeClient)> = HashMap::new();
            while !done.load(Ordering::Relaxed)
                && lock(&acked).len() < target
                && Instant::now() < deadline
            {
                let node = rand::random_range(0..lock(&slots).len());
                let (id, grpc) = {
                    let s = lock(&slots);
                    (s[node].id, s[node].grpc)
                };
                if conns.get(&node).is_none_or(|(a, _)| *a != grpc) {
                    let client =
                        NodeClient::new(NodeAddress { id, address: grpc }, Duration::from_secs(5))?;
                    conns.insert(node, (grpc, client));
                }
                let Some((_, client)) = conns.get_mut(&node) else {
                    continue;
                };
                // Half inline (at most INLINE_MAX), half in files of up to 32 KiB.
                let len = if rand::random::<bool>() {
                    rand::random_range(1..=INLINE_MAX as usize)
                } else {
                    rand::random_range(INLINE_MAX as usize + 1..=32 * 1024)
                };
                let piece = PieceId(rand::random());
                let data = test_data(len, seed_of(&piece));
                let up = tokio::time::timeout(
                    CALL_DEADLINE,
                    owner.upload(client, id, piece, &data, 4096),
                )
                .await;
                match up {
                    Ok(Ok(_receipt)) => lock(&acked).push(Acked {
                        node,
                        owner: c,
                        piece,
                        len,
                    }),
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        conns.remove(&node);
                    }
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for c in clients {
        c.await??;
    }
    done.store(true, Ordering::Relaxed);
    killer.await??;
    let upload_secs = started.elapsed().as_secs_f64();
    let acked: Vec<Acked> = std::mem::take(&mut *lock(&acked));
    if acked.len() < opts.pieces {
        bail!(
            "only {} of {} pieces acknowledged within {} s ({} uploads failed)",
            acked.len(),
            opts.pieces,
            opts.seconds,
            failed.load(Ordering::Relaxed)
        );
    }
    let inline = acked.iter().filter(|a| a.len as u64 <= INLINE_MAX).count();
    eprintln!(
        "node-soak: {} pieces acknowledged ({inline} inline) in {upload_secs:.1} s, {} kills, {} failed uploads; verifying",
        acked.len(),
        kills.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );

    // Every acknowledged piece downloads, byte for byte, from its node.
    let addrs: Vec<(NodeId, SocketAddr)> = lock(&nodes.0).iter().map(|s| (s.id, s.grpc)).collect();
    let verified = AtomicUsize::new(0);
    let checks = futures::stream::iter(acked.iter().copied())
        .map(|a| {
            let (owners, addrs, verified) = (&owners, &addrs, &verified);
            async move {
                let (id, grpc) = addrs[a.node];
                let mut client =
                    NodeClient::new(NodeAddress { id, address: grpc }, Duration::from_secs(5))?;
                let (_, start, got) = tokio::time::timeout(
                    CALL_DEADLINE,
                    owners[a.owner].download(&mut client, id, a.piece, 0, a.len as u64),
                )
                .await
                .with_context(|| {
                    format!("download of {} from node {} timed out", a.piece, a.node + 1)
                })?
                .with_context(|| {
                    format!(
                        "acknowledged piece {} is not readable on node {}",
                        a.piece,
                        a.node + 1
                    )
                })?;
                if start != 0 || got != test_data(a.len, seed_of(&a.piece)) {
                    bail!(
                        "acknowledged piece {} on node {} came back different",
                        a.piece,
                        a.node + 1
                    );
                }
                verified.fetch_add(1, Ordering::Relaxed);
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    for c in checks {
        c?;
    }

    // Every node stops within the deadline of SIGTERM.
    let mut slowest = Duration::ZERO;
    let processes: Vec<NodeProcess> = lock(&nodes.0)
        .iter_mut()
        .filter_map(|s| s.process.take())
        .collect();
    for p in processes {
        slowest = slowest.max(stop_node(p).await?);
    }

    // Counters and owner totals equal the sums over the pieces, files match metadata.
    let dirs: Vec<PathBuf> = lock(&nodes.0).iter().map(|s| s.dir.clone()).collect();
    let acked_per_node = {
        let mut m: HashMap<usize, Vec<PieceId>> = HashMap::new();
        for a in &acked {
            m.entry(a.node).or_default().push(a.piece);
        }
        m
    };
    let stored =
        tokio::task::spawn_blocking(move || check_stores(&dirs, &acked_per_node)).await??;
    Ok(SoakReport {
        acked: acked.len(),
        inline,
        file: acked.len() - inline,
        failed: failed.load(Ordering::Relaxed),
        kills: kills.load(Ordering::Relaxed),
        upload_secs,
        verified: verified.load(Ordering::Relaxed),
        slowest_stop_secs: slowest.as_secs_f64(),
        stored,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens every stopped node's store and checks it; returns the pieces stored in all.
fn check_stores(dirs: &[PathBuf], acked: &HashMap<usize, Vec<PieceId>>) -> anyhow::Result<u64> {
    let mut stored = 0;
    for (i, dir) in dirs.iter().enumerate() {
        let storage = NodeDir(dir.clone()).storage();
        let (store, _) = PieceStore::open(&storage, u64::MAX / 2)
            .with_context(|| format!("cannot open the store of node {}", i + 1))?;
        let c = store.check()?;
        if !c.is_consistent() {
            bail!("node {}: counters do not match its pieces: {c:?}", i + 1);
        }
        for piece in acked.get(&i).map_or(&[][..], Vec::as_slice) {
            if store.meta().get(piece)?.is_none() {
                bail!("node {}: acknowledged piece {piece} has no metadata", i + 1);
            }
        }
        let (owners, count) = store.top_owners(usize::MAX >> 1)?;
        if owners.len() != count {
            bail!("node {}: {} owners listed of {count}", i + 1, owners.len());
        }
        let (mut sum_bytes, mut sum_pieces) = (0, 0);
        for (owner, usage) in &owners {
            let (mut bytes, mut pieces, mut after) = (0, 0, None::<PieceId>);
            loop {
                let page: Vec<OwnedPiece> =
                    store.meta().owner_pieces(owner, after.as_ref(), 1000)?;
                let Some(last) = page.last() else { break };
                after = Some(last.id);
                pieces += page.len() as u64;
                bytes += page.iter().map(|p| charged(p.size)).sum::<u64>();
            }
            if (bytes, pieces) != (usage.bytes, usage.pieces) {
                bail!(
                    "node {}: owner {owner:?} has {usage:?} recorded but {bytes} bytes in {pieces} pieces",
                    i + 1
                );
            }
            sum_bytes += bytes;
            sum_pieces += pieces;
        }
        if (sum_bytes, sum_pieces) != (c.counters.used, c.counters.pieces) {
            bail!("node {}: owner totals do not add up to the counters", i + 1);
        }
        stored += c.counters.pieces;
    }
    Ok(stored)
}
