//! Test doubles. [`MemoryPieceStore`]: an in-memory piece store that follows the node side of the piece protocol, with
//! switchable misbehaviour (dead, stalled, corrupting, refusing). For tests of the uplink
//! and of anything built on it; it is small and has no I/O, so it is always compiled.
//! [`fake_net::FakeNetwork`]: the same store behind real gRPC servers on loopback.

pub mod fake_net;
mod records;

pub use records::MemoryRecords;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use shoal_proto::messages::{
    AuditOrder, DeleteOrder, DownloadOrder, ListPiecesOrder, ListedPiece, NodeRecord, Receipt,
    RenewOrder, RenewResult, RenewStatus, UploadOrder,
};
use shoal_proto::piece_hash::{PieceHasher, PieceInfo};
use shoal_proto::{Identity, NodeId, PieceId, PublicKey, Signed};

use crate::store::{
    DownloadPart, DownloadStream, NodeAddress, NodeCandidate, PieceError, PieceStore, UploadPart,
};

/// How a fake node behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behaviour {
    #[default]
    Honest,
    /// Every call fails at once, as if the host were down.
    Dead,
    /// Every call hangs forever.
    Stalled,
    /// Stores pieces but flips a bit in every block it serves.
    Corrupt,
    /// Accepts uploads but returns a receipt over the wrong hash.
    LyingReceipt,
    /// Stores uploads at once but answers with the receipt only this long after.
    LateReceipt(std::time::Duration),
}

#[derive(Debug)]
struct StoredPiece {
    owner: PublicKey,
    data: Bytes,
    info: PieceInfo,
    expires_at_ms: u64,
    tag: Vec<u8>,
}

#[derive(Debug)]
struct FakeNode {
    identity: Identity,
    address: SocketAddr,
    behaviour: Behaviour,
    free_space: u64,
    pieces: HashMap<PieceId, StoredPiece>,
}

/// A network of fake nodes in one process.
#[derive(Debug, Clone, Default)]
pub struct MemoryPieceStore {
    nodes: Arc<Mutex<HashMap<NodeId, FakeNode>>>,
    /// Keep only each piece's hashes, not its bytes (upload benchmarks of large objects).
    discard: Arc<std::sync::atomic::AtomicBool>,
    uploads: Arc<AtomicU64>,
    downloads: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryPieceStore {
    /// `n` honest nodes, node `i` on its own /24 (`127.0.i.1`).
    pub fn with_nodes(n: usize) -> Self {
        let s = Self::default();
        for i in 0..n {
            let addr = SocketAddr::from((
                Ipv4Addr::new(127, (i / 250) as u8, (i % 250) as u8 + 1, 1),
                7000,
            ));
            s.add_node(addr, 1 << 40);
        }
        s
    }

    pub fn add_node(&self, address: SocketAddr, free_space: u64) -> NodeId {
        let identity = Identity::random();
        let id = identity.node_id();
        lock(&self.nodes).insert(
            id,
            FakeNode {
                identity,
                address,
                behaviour: Behaviour::Honest,
                free_space,
                pieces: HashMap::new(),
            },
        );
        id
    }

    /// Runs `f` with the identity of node `id` (e.g. to build its TLS configuration).
    pub fn with_identity<R>(&self, id: &NodeId, f: impl FnOnce(&Identity) -> R) -> Option<R> {
        lock(&self.nodes).get(id).map(|n| f(&n.identity))
    }

    /// From now on, store only the hashes of new pieces and drop their bytes, so that
    /// uploads of large objects can be measured without holding them in memory.
    /// Downloads of such pieces then serve zero bytes (and fail verification).
    pub fn discard_data(&self, discard: bool) {
        self.discard.store(discard, Ordering::Relaxed);
    }

    /// Every node, sorted by address, as the discovery layer would list them.
    pub fn candidates(&self) -> Vec<NodeCandidate> {
        let mut v: Vec<NodeCandidate> = lock(&self.nodes)
            .iter()
            .map(|(id, n)| NodeCandidate {
                id: *id,
                public_key: Some(*n.identity.public_key()),
                address: n.address,
                free_space: n.free_space,
            })
            .collect();
        v.sort_by_key(|c| c.address);
        v
    }

    pub fn set_behaviour(&self, node: &NodeId, behaviour: Behaviour) {
        if let Some(n) = lock(&self.nodes).get_mut(node) {
            n.behaviour = behaviour;
        }
    }

    /// Flips one byte of piece `piece` on `node`, as a bad disk or a lying node would;
    /// returns whether the node held that piece.
    pub fn tamper_piece(&self, node: &NodeId, piece: &PieceId) -> bool {
        let mut nodes = lock(&self.nodes);
        let Some(p) = nodes.get_mut(node).and_then(|n| n.pieces.get_mut(piece)) else {
            return false;
        };
        let mut data = p.data.to_vec();
        if let Some(b) = data.first_mut() {
            *b ^= 0x55;
        }
        p.data = Bytes::from(data);
        true
    }

    /// Node ids holding at least one piece.
    pub fn nodes_with_pieces(&self) -> Vec<NodeId> {
        lock(&self.nodes)
            .iter()
            .filter(|(_, n)| !n.pieces.is_empty())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The lease of `piece` on `node`, if it holds it.
    pub fn lease(&self, node: &NodeId, piece: &PieceId) -> Option<u64> {
        lock(&self.nodes)
            .get(node)
            .and_then(|n| n.pieces.get(piece))
            .map(|p| p.expires_at_ms)
    }

    /// Drops every piece whose lease has ended (as of [`shoal_proto::time::unix_ms`]),
    /// as each node's garbage collection would; returns how many went.
    pub fn collect_expired(&self) -> usize {
        let now = shoal_proto::time::unix_ms();
        let mut gone = 0;
        for n in lock(&self.nodes).values_mut() {
            let before = n.pieces.len();
            n.pieces.retain(|_, p| p.expires_at_ms > now);
            gone += before - n.pieces.len();
        }
        gone
    }

    pub fn piece_count(&self) -> usize {
        lock(&self.nodes).values().map(|n| n.pieces.len()).sum()
    }

    /// Upload and download calls started so far.
    pub fn calls(&self) -> (u64, u64) {
        (
            self.uploads.load(Ordering::Relaxed),
            self.downloads.load(Ordering::Relaxed),
        )
    }

    /// The node's signed record, as its DHT would publish it.
    pub fn node_record(&self, node: &NodeId) -> Option<Signed<NodeRecord>> {
        let nodes = lock(&self.nodes);
        let n = nodes.get(node)?;
        let now = shoal_proto::time::unix_ms();
        let record = NodeRecord {
            public_key: *n.identity.public_key(),
            addresses: vec![n.address],
            free_space: n.free_space,
            version: "fake".into(),
            started_at_ms: now,
            timestamp_ms: now,
        };
        Signed::sign(record, &n.identity).ok()
    }

    fn behaviour(&self, node: &NodeId) -> Option<Behaviour> {
        lock(&self.nodes).get(node).map(|n| n.behaviour)
    }

    /// How `node` takes a transfer: an unknown or dead node refuses the connection, a
    /// stalled one never answers; otherwise its behaviour.
    async fn answer(&self, node: NodeAddress) -> Result<Behaviour, PieceError> {
        match self.behaviour(&node.id) {
            None | Some(Behaviour::Dead) => Err(unreachable(node)),
            Some(Behaviour::Stalled) => futures::future::pending().await,
            Some(b) => Ok(b),
        }
    }
}

fn unreachable(node: NodeAddress) -> PieceError {
    PieceError::Unreachable {
        node: node.id,
        address: node.address,
        reason: "connection refused".into(),
    }
}

fn refused(node: NodeId, reason: impl Into<String>) -> PieceError {
    PieceError::Refused {
        node,
        reason: reason.into(),
    }
}

impl PieceStore for MemoryPieceStore {
    fn upload(
        &self,
        node: NodeAddress,
        order: Signed<UploadOrder>,
        mut body: BoxStream<'static, UploadPart>,
    ) -> BoxFuture<'static, Result<Signed<Receipt>, PieceError>> {
        let this = self.clone();
        this.uploads.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let id = node.id;
            this.answer(node).await?;
            if order.header.node_id != id {
                return Err(refused(id, "order is addressed to another node"));
            }
            let mut hasher = PieceHasher::new(order.block_size);
            let mut data = Vec::new();
            let mut received = 0u64;
            let keep = !this.discard.load(Ordering::Relaxed);
            let trailer = loop {
                match body.next().await {
                    Some(UploadPart::Chunk(c)) => {
                        received += c.len() as u64;
                        if received > order.max_size {
                            return Err(refused(id, "piece larger than the order's max size"));
                        }
                        hasher.update(&c);
                        if keep {
                            data.extend_from_slice(&c);
                        }
                    }
                    Some(UploadPart::Trailer(t)) => break t,
                    None => return Err(refused(id, "upload ended without a trailer")),
                }
            };
            let info = hasher.finish();
            if trailer.piece_id != order.piece_id
                || trailer.owner_key != order.header.owner_key
                || trailer.size != received
                || trailer.piece_hash != info.root()
            {
                return Err(refused(id, "trailer does not match the data"));
            }
            let stored = (|| {
                let mut nodes = lock(&this.nodes);
                let Some(n) = nodes.get_mut(&id) else {
                    return Err(refused(id, "node vanished"));
                };
                if n.pieces.contains_key(&order.piece_id) {
                    return Err(refused(id, "piece already exists"));
                }
                let mut hash = info.root();
                if n.behaviour == Behaviour::LyingReceipt {
                    hash.0[0] ^= 1;
                }
                let receipt = Receipt {
                    piece_id: order.piece_id,
                    node_key: *n.identity.public_key(),
                    owner_key: order.header.owner_key,
                    size: received,
                    piece_hash: hash,
                    expires_at_ms: order.expires_at_ms,
                    timestamp_ms: shoal_proto::time::unix_ms(),
                };
                let signed =
                    Signed::sign(receipt, &n.identity).map_err(|e| refused(id, e.to_string()))?;
                n.pieces.insert(
                    order.piece_id,
                    StoredPiece {
                        owner: order.header.owner_key,
                        data: Bytes::from(data),
                        info,
                        expires_at_ms: order.expires_at_ms,
                        tag: trailer.tag.clone(),
                    },
                );
                Ok((signed, n.behaviour))
            })();
            let (signed, behaviour) = stored?;
            if let Behaviour::LateReceipt(after) = behaviour {
                tokio::time::sleep(after).await;
            }
            Ok(signed)
        })
    }

    fn download(
        &self,
        node: NodeAddress,
        order: Signed<DownloadOrder>,
    ) -> BoxFuture<'static, Result<DownloadStream, PieceError>> {
        let this = self.clone();
        this.downloads.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let id = node.id;
            let behaviour = this.answer(node).await?;
            if order.header.node_id != id {
                return Err(refused(id, "order is addressed to another node"));
            }
            let (data, info) = {
                let nodes = lock(&this.nodes);
                let piece = nodes
                    .get(&id)
                    .and_then(|n| n.pieces.get(&order.piece_id))
                    .ok_or_else(|| refused(id, "no such piece"))?;
                if piece.owner != order.header.owner_key {
                    return Err(refused(id, "not the piece's owner"));
                }
                (piece.data.clone(), piece.info.clone())
            };
            let bs = u64::from(info.block_size);
            let size = data.len() as u64;
            let end = if order.length == 0 {
                size
            } else {
                (order.offset + order.length).min(size)
            };
            let first = order.offset / bs * bs;
            let last = end.div_ceil(bs) * bs;
            let mut parts = vec![Ok(DownloadPart::Info(info))];
            let mut at = first;
            while at < last.min(size) {
                let to = (at + bs).min(size);
                let mut block = data.slice(at as usize..to as usize);
                if behaviour == Behaviour::Corrupt {
                    let mut v = block.to_vec();
                    v[0] ^= 1;
                    block = Bytes::from(v);
                }
                parts.push(Ok(DownloadPart::Data {
                    offset: at,
                    data: block,
                }));
                at = to;
            }
            Ok(futures::stream::iter(parts).boxed())
        })
    }

    fn delete(
        &self,
        node: NodeAddress,
        order: Signed<DeleteOrder>,
    ) -> BoxFuture<'static, Result<(), PieceError>> {
        let this = self.clone();
        Box::pin(async move {
            // A dead node refuses, a stalled one never answers.
            this.answer(node).await?;
            let mut nodes = lock(&this.nodes);
            let n = nodes
                .get_mut(&node.id)
                .ok_or_else(|| refused(node.id, "unknown node"))?;
            match n.pieces.get(&order.piece_id) {
                Some(p) if p.owner != order.header.owner_key => {
                    Err(refused(node.id, "not the piece's owner"))
                }
                Some(_) => {
                    n.pieces.remove(&order.piece_id);
                    Ok(())
                }
                None => Ok(()),
            }
        })
    }

    fn renew(
        &self,
        node: NodeAddress,
        order: Signed<RenewOrder>,
    ) -> BoxFuture<'static, Result<Vec<RenewResult>, PieceError>> {
        let this = self.clone();
        Box::pin(async move {
            this.answer(node).await?;
            let mut nodes = lock(&this.nodes);
            let n = nodes
                .get_mut(&node.id)
                .ok_or_else(|| refused(node.id, "unknown node"))?;
            let results = order
                .piece_ids
                .iter()
                .map(|id| {
                    let status = match n.pieces.get_mut(id) {
                        None => RenewStatus::NotFound,
                        Some(p) if p.owner != order.header.owner_key => RenewStatus::NotOwner,
                        Some(p) => {
                            p.expires_at_ms = p.expires_at_ms.max(order.expires_at_ms);
                            RenewStatus::Renewed {
                                expires_at_ms: p.expires_at_ms,
                            }
                        }
                    };
                    RenewResult {
                        piece_id: *id,
                        status,
                    }
                })
                .collect();
            Ok(results)
        })
    }

    fn audit(
        &self,
        node: NodeAddress,
        order: Signed<AuditOrder>,
    ) -> BoxFuture<'static, Result<(PieceInfo, Bytes), PieceError>> {
        let this = self.clone();
        Box::pin(async move {
            let behaviour = this.answer(node).await?;
            let nodes = lock(&this.nodes);
            let piece = nodes
                .get(&node.id)
                .and_then(|n| n.pieces.get(&order.piece_id))
                .ok_or_else(|| refused(node.id, "no such piece"))?;
            if piece.owner != order.header.owner_key {
                return Err(refused(node.id, "not the piece's owner"));
            }
            let (start, end) = piece
                .info
                .block_range(u64::from(order.block_index))
                .ok_or_else(|| refused(node.id, "no such block"))?;
            let mut block = piece
                .data
                .get(start as usize..end as usize)
                .map(Bytes::copy_from_slice)
                .unwrap_or_default();
            if behaviour == Behaviour::Corrupt {
                let mut v = block.to_vec();
                if let Some(b) = v.first_mut() {
                    *b ^= 1;
                }
                block = Bytes::from(v);
            }
            Ok((piece.info.clone(), block))
        })
    }

    fn list_pieces(
        &self,
        node: NodeAddress,
        order: Signed<ListPiecesOrder>,
    ) -> BoxFuture<'static, Result<Vec<ListedPiece>, PieceError>> {
        let this = self.clone();
        Box::pin(async move {
            this.answer(node).await?;
            if order.header.node_id != node.id {
                return Err(refused(node.id, "order is addressed to another node"));
            }
            let nodes = lock(&this.nodes);
            let n = nodes
                .get(&node.id)
                .ok_or_else(|| refused(node.id, "unknown node"))?;
            let mut mine: Vec<ListedPiece> = n
                .pieces
                .iter()
                .filter(|(id, p)| {
                    p.owner == order.header.owner_key && order.after.is_none_or(|a| **id > a)
                })
                .map(|(id, p)| ListedPiece {
                    piece_id: *id,
                    size: p.info.size,
                    expires_at_ms: p.expires_at_ms,
                    tag: p.tag.clone(),
                })
                .collect();
            mine.sort_by_key(|p| p.piece_id);
            mine.truncate(order.limit as usize);
            Ok(mine)
        })
    }
}
