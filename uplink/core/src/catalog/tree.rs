//! Incremental snapshots: a catalog state as a tree of immutable, content-addressed
//! chunks (a prolly tree, or content-defined B-tree). Plain code, no I/O: chunking a
//! sorted stream of [`Change`]s into leaves and the leaves' references into interior
//! chunks, chunk ids, and the checks a reader makes on a chunk from the network.
//! [`crate::sync`] stores and fetches the chunks as catalog blobs.
//!
//! - **Leaves** hold entries (changes) in key order; **interior chunks** (level ≥ 1)
//!   hold the references to the chunks one level down, in order. The root is a single
//!   chunk; an empty catalog is one empty leaf.
//! - **Boundaries by content.** A leaf ends after an entry whose *key* hashes (keyed
//!   BLAKE3, under a key derived from the catalog key: nodes, and whoever names the
//!   objects, cannot steer it) below a threshold proportional to the entry's encoded size,
//!   so leaves hold about [`Params::leaf_target`] bytes. An interior chunk ends after a
//!   child whose id (already a keyed hash) falls below `1 / node_target`. Because the
//!   decision depends only on the entries themselves, the same entries make the same
//!   chunks whatever the history that led to them, and one changed entry rewrites its
//!   leaf (rarely also a neighbour) and the one chunk above it on each level: O(log n)
//!   chunks.
//! - **Bounded.** No boundary is taken before `leaf_min` bytes (`node_min` children),
//!   and one is forced at `leaf_max` bytes (`node_max` children), so neither an unlucky
//!   nor a hostile stream makes tiny or huge chunks. (A forced boundary shifts the chunks
//!   after it until the next content boundary: still O(1) chunks per change.) A single
//!   entry larger than `leaf_max` makes a leaf of its own.
//! - **Identity.** A chunk's id is the keyed BLAKE3 hash of its *logical* content: a
//!   leaf's entries (each as its postcard bytes with a length prefix); an interior
//!   chunk's level and its children's ids and entry counts — not where the children are
//!   stored (the `R` of [`Child`]), so a chunk stored again elsewhere keeps its id and a
//!   parent stays valid. A reader recomputes the id of every chunk it fetches
//!   ([`verify`]) and checks its level and entry count against the reference that led
//!   to it; counts and depth are bounded ([`MAX_LEAF_ENTRIES`], [`MAX_CHILDREN`],
//!   [`MAX_DEPTH`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::model::Change;

const TREE_KEY_CONTEXT: &str = "shoal v1 catalog snapshot chunk id";
const LEAF_DOMAIN: u8 = 0;
const NODE_DOMAIN: u8 = 1;

/// Most entries a leaf from the network may hold (a leaf closes at `leaf_max` bytes,
/// and no entry encodes to fewer than a few bytes).
pub const MAX_LEAF_ENTRIES: usize = 1 << 17;
/// Most children an interior chunk from the network may hold.
pub const MAX_CHILDREN: usize = 4096;
/// Deepest a snapshot tree from the network may be (root level). With at least two
/// children per interior chunk this is far beyond any catalog.
pub const MAX_DEPTH: u8 = 24;

/// The id of a chunk: keyed BLAKE3 of its logical content.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChunkId(#[serde(with = "crate::hexser")] pub [u8; 32]);

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shoal_proto::ids::to_hex(&self.0[..8]))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({self})")
    }
}

/// The key chunk ids and boundaries are computed under (derived from the catalog key).
#[derive(Clone)]
pub struct TreeKey([u8; 32]);

impl TreeKey {
    pub fn new(catalog_key: &[u8; 32]) -> Self {
        Self(blake3::derive_key(TREE_KEY_CONTEXT, catalog_key))
    }
}

impl fmt::Debug for TreeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TreeKey(..)")
    }
}

/// A reference to a chunk one level down (or to the root), with `R` saying where it is
/// stored (a [`crate::catalog::log::BlobRef`] in the network).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Child<R> {
    pub id: ChunkId,
    /// Entries in the chunk's subtree.
    pub entries: u64,
    pub at: R,
}

/// What a chunk holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Chunk<R> {
    Leaf(Vec<Change>),
    Node { level: u8, children: Vec<Child<R>> },
}

impl<R> Chunk<R> {
    pub fn level(&self) -> u8 {
        match self {
            Chunk::Leaf(_) => 0,
            Chunk::Node { level, .. } => *level,
        }
    }

    /// Entries in the chunk's subtree (saturating: counts come from the network).
    pub fn entries(&self) -> u64 {
        match self {
            Chunk::Leaf(c) => c.len() as u64,
            Chunk::Node { children, .. } => children
                .iter()
                .fold(0u64, |a, c| a.saturating_add(c.entries)),
        }
    }
}

/// Why a chunk was refused, or a tree could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("snapshot chunk {expected} holds content whose id is {found}: not the chunk named")]
    WrongId { expected: ChunkId, found: ChunkId },
    #[error("snapshot chunk {id} is at level {found}, where level {expected} was expected")]
    WrongLevel {
        id: ChunkId,
        expected: u8,
        found: u8,
    },
    #[error("snapshot chunk {id} holds {found} entries, its reference says {expected}")]
    WrongCount {
        id: ChunkId,
        expected: u64,
        found: u64,
    },
    #[error("snapshot chunk {id} has {count} {what}, over the limit of {limit}")]
    TooMany {
        id: ChunkId,
        what: &'static str,
        count: u64,
        limit: u64,
    },
    #[error("a snapshot tree of level {level} is deeper than the limit of {limit}")]
    TooDeep { level: u8, limit: u8 },
    #[error("snapshot chunk {id} is an interior chunk without children")]
    Empty { id: ChunkId },
    #[error("a catalog entry cannot be encoded: {reason}")]
    Encode { reason: String },
    #[error("the snapshot builder was used out of order: {0}")]
    Misuse(&'static str),
}

/// Chunk size rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Bytes (of encoded entries) before which a leaf never ends.
    pub leaf_min: usize,
    /// Average bytes of a leaf.
    pub leaf_target: usize,
    /// Bytes at which a leaf always ends.
    pub leaf_max: usize,
    pub node_min: usize,
    pub node_target: usize,
    pub node_max: usize,
}

impl Default for Params {
    /// Leaves of ~32 KiB (8 to 128 KiB), interior chunks of ~32 children (4 to 256):
    /// a million entries of ~300 bytes make ~9,000 leaves under a root of level 3.
    fn default() -> Self {
        Self {
            leaf_min: 8 << 10,
            leaf_target: 32 << 10,
            leaf_max: 128 << 10,
            node_min: 4,
            node_target: 32,
            node_max: 256,
        }
    }
}

/// A chunk the builder closed, waiting for the caller to store it (see [`Builder`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed<R> {
    pub id: ChunkId,
    pub entries: u64,
    pub chunk: Chunk<R>,
}

fn encode_entry(c: &Change) -> Result<Vec<u8>, TreeError> {
    postcard::to_allocvec(c).map_err(|e| TreeError::Encode {
        reason: e.to_string(),
    })
}

fn keyed(key: &TreeKey) -> blake3::Hasher {
    blake3::Hasher::new_keyed(&key.0)
}

fn leaf_hasher(key: &TreeKey) -> blake3::Hasher {
    let mut h = keyed(key);
    h.update(&[LEAF_DOMAIN]);
    h
}

fn hash_entry_into(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn node_id<R>(key: &TreeKey, level: u8, children: &[Child<R>]) -> ChunkId {
    let mut h = keyed(key);
    h.update(&[NODE_DOMAIN, level]);
    for c in children {
        h.update(&c.id.0);
        h.update(&c.entries.to_be_bytes());
    }
    ChunkId(*h.finalize().as_bytes())
}

/// The id of a chunk, computed from its content.
pub fn chunk_id<R>(key: &TreeKey, chunk: &Chunk<R>) -> Result<ChunkId, TreeError> {
    match chunk {
        Chunk::Leaf(changes) => {
            let mut h = leaf_hasher(key);
            for c in changes {
                hash_entry_into(&mut h, &encode_entry(c)?);
            }
            Ok(ChunkId(*h.finalize().as_bytes()))
        }
        Chunk::Node { level, children } => Ok(node_id(key, *level, children)),
    }
}

/// Checks a chunk fetched from the network against the reference that named it: its
/// id (recomputed from its content), its level and entry count, and the bounds on its
/// children and entries. An interior chunk's children are checked when they are fetched.
pub fn verify<R>(
    key: &TreeKey,
    id: &ChunkId,
    level: u8,
    entries: u64,
    chunk: &Chunk<R>,
) -> Result<(), TreeError> {
    if level > MAX_DEPTH {
        return Err(TreeError::TooDeep {
            level,
            limit: MAX_DEPTH,
        });
    }
    let (count, limit, what) = match chunk {
        Chunk::Leaf(c) => (c.len(), MAX_LEAF_ENTRIES, "entries"),
        Chunk::Node { children, .. } => (children.len(), MAX_CHILDREN, "children"),
    };
    if count > limit {
        return Err(TreeError::TooMany {
            id: *id,
            what,
            count: count as u64,
            limit: limit as u64,
        });
    }
    if chunk.level() != level {
        return Err(TreeError::WrongLevel {
            id: *id,
            expected: level,
            found: chunk.level(),
        });
    }
    if let Chunk::Node { children, .. } = chunk
        && children.is_empty()
    {
        return Err(TreeError::Empty { id: *id });
    }
    let found = chunk_id(key, chunk)?;
    if found != *id {
        return Err(TreeError::WrongId {
            expected: *id,
            found,
        });
    }
    if chunk.entries() != entries {
        return Err(TreeError::WrongCount {
            id: *id,
            expected: entries,
            found: chunk.entries(),
        });
    }
    Ok(())
}

/// Whether the leaf boundary falls after an entry of key hash `h` and `len` bytes: with
/// probability `len / target`, so leaves average `target` bytes.
fn leaf_boundary(h: u64, len: usize, target: usize) -> bool {
    let target = target.max(1) as u128;
    (u128::from(h) * target) < (u128::from(u64::MAX) * len as u128)
}

fn key_hash(key: &TreeKey, c: &Change) -> Result<u64, TreeError> {
    let k = postcard::to_allocvec(&c.key).map_err(|e| TreeError::Encode {
        reason: e.to_string(),
    })?;
    let mut h = keyed(key);
    h.update(b"boundary");
    h.update(&k);
    let b = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&b.as_bytes()[..8]);
    Ok(u64::from_be_bytes(first))
}

fn node_boundary(id: &ChunkId, target: usize) -> bool {
    let mut first = [0u8; 8];
    first.copy_from_slice(&id.0[24..]);
    u64::from_be_bytes(first) % (target.max(1) as u64) == 0
}

/// Builds a tree from entries in strictly increasing key order, one chunk at a time:
///
/// ```text
/// for each entry { b.push(entry)?; while let Some(s) = b.take() { b.attach(store(s)?)?; } }
/// b.finish();     while let Some(s) = b.take() { b.attach(store(s)?)?; }
/// let root = b.root();
/// ```
///
/// At most one closed chunk waits for its reference at a time, and the builder holds
/// one open chunk per level: memory is bounded by the chunk size rules, not by the
/// catalog. The caller decides how a chunk is stored (and may re-use one stored before
/// under the same id).
#[derive(Debug)]
pub struct Builder<R> {
    key: TreeKey,
    params: Params,
    leaf: Vec<Change>,
    leaf_bytes: usize,
    leaf_hash: blake3::Hasher,
    /// Open interior chunks: `nodes[i]` is at level `i + 1`.
    nodes: Vec<Vec<Child<R>>>,
    /// A closed chunk not yet taken by the caller.
    ready: Option<Sealed<R>>,
    /// The chunk taken and not yet attached: its level, id and entries.
    taken: Option<(u8, ChunkId, u64)>,
    finished: bool,
    root: Option<(u8, Child<R>)>,
    entries: u64,
}

impl<R: Clone> Builder<R> {
    /// A builder under `key` (`params.node_min` is at least 2, so that the tree
    /// narrows on every level).
    pub fn new(key: TreeKey, mut params: Params) -> Self {
        params.node_min = params.node_min.max(2);
        params.node_max = params.node_max.max(params.node_min);
        params.leaf_max = params.leaf_max.max(params.leaf_min).max(1);
        let leaf_hash = leaf_hasher(&key);
        Self {
            key,
            params,
            leaf: Vec::new(),
            leaf_bytes: 0,
            leaf_hash,
            nodes: Vec::new(),
            ready: None,
            taken: None,
            finished: false,
            root: None,
            entries: 0,
        }
    }

    /// Entries pushed so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    fn busy(&self) -> bool {
        self.ready.is_some() || self.taken.is_some()
    }

    /// Adds the next entry (keys strictly increasing; the caller's order is trusted).
    pub fn push(&mut self, c: Change) -> Result<(), TreeError> {
        if self.finished || self.busy() {
            return Err(TreeError::Misuse(
                "push while a chunk waits or after finish",
            ));
        }
        let bytes = encode_entry(&c)?;
        let h = key_hash(&self.key, &c)?;
        hash_entry_into(&mut self.leaf_hash, &bytes);
        self.leaf_bytes += bytes.len();
        self.leaf.push(c);
        self.entries += 1;
        let p = &self.params;
        let close = self.leaf_bytes >= p.leaf_max
            || (self.leaf_bytes >= p.leaf_min && leaf_boundary(h, bytes.len(), p.leaf_target));
        if close {
            self.close_leaf();
        }
        Ok(())
    }

    fn close_leaf(&mut self) {
        let changes = std::mem::take(&mut self.leaf);
        let h = std::mem::replace(&mut self.leaf_hash, leaf_hasher(&self.key));
        self.leaf_bytes = 0;
        self.ready = Some(Sealed {
            id: ChunkId(*h.finalize().as_bytes()),
            entries: changes.len() as u64,
            chunk: Chunk::Leaf(changes),
        });
    }

    fn close_node(&mut self, level: u8) {
        let i = usize::from(level) - 1;
        let children = std::mem::take(&mut self.nodes[i]);
        let id = node_id(&self.key, level, &children);
        let entries = children.iter().map(|c| c.entries).sum();
        self.ready = Some(Sealed {
            id,
            entries,
            chunk: Chunk::Node { level, children },
        });
    }

    /// The closed chunk to store next, if any. Its reference must be given to
    /// [`Builder::attach`] before anything else.
    pub fn take(&mut self) -> Option<Sealed<R>> {
        if self.ready.is_none() && self.taken.is_none() && self.finished && self.root.is_none() {
            self.finish_step();
        }
        let s = self.ready.take()?;
        self.taken = Some((s.chunk.level(), s.id, s.entries));
        Some(s)
    }

    /// Where the chunk last taken is stored: adds it to the chunk above.
    pub fn attach(&mut self, at: R) -> Result<(), TreeError> {
        let Some((level, id, entries)) = self.taken.take() else {
            return Err(TreeError::Misuse("attach without a chunk taken"));
        };
        let child = Child { id, entries, at };
        let parent = level + 1;
        if parent > MAX_DEPTH {
            return Err(TreeError::TooDeep {
                level: parent,
                limit: MAX_DEPTH,
            });
        }
        let i = usize::from(level);
        if self.nodes.len() <= i {
            self.nodes.resize_with(i + 1, Vec::new);
        }
        self.nodes[i].push(child);
        let n = self.nodes[i].len();
        let p = &self.params;
        if n >= p.node_max || (n >= p.node_min && node_boundary(&id, p.node_target)) {
            self.close_node(parent);
        }
        Ok(())
    }

    /// No more entries: the open chunks close, bottom up, through [`Builder::take`].
    pub fn finish(&mut self) {
        self.finished = true;
    }

    fn finish_step(&mut self) {
        // The lowest open level closes; a level holding one child with nothing open
        // above it makes that child the root. An empty catalog is one empty leaf.
        let nothing = self.nodes.iter().all(Vec::is_empty);
        if !self.leaf.is_empty() || (nothing && self.entries == 0) {
            self.close_leaf();
            return;
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_empty() {
                continue;
            }
            let level = (i + 1) as u8;
            let above_empty = self.nodes[i + 1..].iter().all(Vec::is_empty);
            if above_empty && self.nodes[i].len() == 1 {
                if let Some(c) = self.nodes[i].pop() {
                    self.root = Some((level - 1, c));
                }
                return;
            }
            self.close_node(level);
            return;
        }
    }

    /// The root (its level and reference), once everything is finished and attached.
    pub fn root(&self) -> Option<(u8, Child<R>)> {
        self.root.clone()
    }
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
