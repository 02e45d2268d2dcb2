//! [`UplinkConfig`]: the settings of an uplink, read by every part of it (a leaf: it
//! imports only the codec's [`Scheme`] and [`CodecKind`]).

use std::time::Duration;

use crate::codec::{CodecKind, Scheme};

/// Settings of an uplink. Every field has a default (see [`UplinkConfig::default`]).
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// Redundancy for new objects. Default `29/35/80/110`.
    pub scheme: Scheme,
    /// Erasure codec for new segments. Default `reed-solomon-simd` (fastest portable).
    pub codec: CodecKind,
    /// On a network with fewer suitable nodes than `scheme.total`, store with a smaller
    /// scheme (reported in [`PutReport`]; see [`Scheme::shrink_to`] for what is given up
    /// first) instead of failing. Default `true`.
    pub allow_smaller_scheme: bool,
    /// Plaintext blocks (65,520 B) per segment. Default 1024 (64 MiB sealed).
    pub segment_blocks: u64,
    /// Segments of one object whose pieces are in flight at once. Default 2.
    pub segment_parallelism: usize,
    /// Stripes queued per piece upload; a piece whose queue is full is lagging. Default 4.
    pub piece_buffer: usize,
    /// How long lagging piece uploads may hold the others back before they are cut off
    /// (while more than `success` remain). Default 2 s.
    pub slow_piece_grace: Duration,
    /// Longest a needed piece transfer may make no progress. Default 30 s. Also bounds
    /// how long the background reaper waits for late receipts of a segment's long tail.
    pub piece_timeout: Duration,
    /// Once `success` receipts of a segment are verified, how long the other piece
    /// uploads still running get to deliver theirs. Every receipt verified by then is
    /// recorded, so a segment usually keeps all `total` pieces (on a healthy network they
    /// finish within milliseconds of each other) and survives `total − k` lost nodes.
    /// Pieces still unanswered are cancelled; those whose data was already complete are
    /// handed to a background reaper that deletes them if their receipt comes late.
    /// `0` commits with the receipts already in, as soon as `success` are. Default 2 s.
    pub long_tail_grace: Duration,
    /// A node whose last transfer failed gets no new pieces for this long (unless no
    /// other node is left), or until a transfer with it succeeds. Default 5 minutes.
    pub failed_node_backoff: Duration,
    /// Bytes of a segment's coded shards kept while it uploads, so that a piece whose
    /// node fails can be sent again, whole, to another node. Segments larger than this
    /// replace only pieces that fail in their first this-many bytes. Default 16 MiB.
    pub replacement_buffer: usize,
    /// Piece downloads started beyond `k`. Default `None`: `max(2, k / 4)`.
    pub download_margin: Option<usize>,
    /// Lease of pieces stored without an explicit expiry, and how far `renew` extends
    /// them. Default 90 days (config.toml `default_lease_secs`). Nodes refuse leases
    /// beyond their `max_lease` (default one year); renewing then asks for that limit.
    pub default_lease: Duration,
    /// Redundancy of the catalog's own blobs (deltas and snapshots). At most
    /// [`MAX_CATALOG_PIECES`] pieces, so that a head record naming one segment fits the
    /// DHT's 4 KiB. Default `8/12/16/24`.
    pub catalog_scheme: Scheme,
    /// A publish also uploads a snapshot of the whole catalog once this many deltas (of
    /// all writers) were published since the last snapshot. Default 64.
    pub snapshot_every: u64,
    /// Largest sealed head record (bytes) that carries the deltas since the writer's
    /// last blob delta inline instead of pointing at a new blob (0: every delta is a
    /// blob). Every byte of it is sent to each of the ~20 nodes holding a copy, while a
    /// blob delta costs a dozen pieces of at least 4 KiB, so past about half a record
    /// flushing is cheaper than carrying. Default 2048 (at most
    /// `shoal_proto::limits::MAX_RECORD_VALUE`).
    pub inline_head: usize,
    /// Whether a catalog blob too small to fill `catalog_scheme`'s `k` pieces of the
    /// smallest size uses a scheme fitted to it (see [`crate::codec::Scheme::fitted`]).
    /// Default true.
    pub catalog_fit_scheme: bool,
    /// Average bytes of a snapshot's leaf chunk (of encoded entries); leaves hold between
    /// a quarter of this and four times it ([`crate::catalog::tree`]). Default 32 KiB.
    pub snapshot_chunk_bytes: usize,
}

/// Default lease of new pieces, and of renewals: 90 days.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(90 * 24 * 3600);

/// Most pieces a catalog blob segment may have (see [`UplinkConfig::catalog_scheme`]).
pub const MAX_CATALOG_PIECES: u16 = 28;

impl Default for UplinkConfig {
    fn default() -> Self {
        Self {
            scheme: Scheme::default(),
            codec: CodecKind::default(),
            allow_smaller_scheme: true,
            segment_blocks: crate::segment::SEGMENT_BLOCKS,
            segment_parallelism: 2,
            piece_buffer: 4,
            slow_piece_grace: Duration::from_secs(2),
            piece_timeout: Duration::from_secs(30),
            long_tail_grace: Duration::from_secs(2),
            failed_node_backoff: Duration::from_secs(300),
            replacement_buffer: 16 << 20,
            download_margin: None,
            default_lease: DEFAULT_LEASE,
            catalog_scheme: Scheme {
                k: 8,
                repair: 12,
                success: 16,
                total: 24,
            },
            snapshot_every: 64,
            inline_head: 2048,
            catalog_fit_scheme: true,
            snapshot_chunk_bytes: 32 << 10,
        }
    }
}
