//! Bounds on everything that arrives from the network. Conversions in
//! [`crate::messages`] enforce the field limits; servers enforce the stream limits.

/// Largest gRPC message a Shoal server or client accepts (encoded). Room for an audit
/// response: one whole block of up to [`MAX_BLOCK_SIZE`] plus the piece's hash list
/// (32 hashes at that block size) and framing.
pub const MAX_GRPC_MESSAGE: usize = MAX_BLOCK_SIZE as usize + 64 * 1024;
/// Largest data chunk in one upload or download message.
pub const MAX_CHUNK: usize = 1024 * 1024;
/// Largest piece any node stores. A 64 MiB segment at k = 1 plus encryption overhead fits.
pub const MAX_PIECE_SIZE: u64 = 128 * 1024 * 1024;
/// Smallest and largest hashed block of a piece.
pub const MIN_BLOCK_SIZE: u32 = 4 * 1024;
pub const MAX_BLOCK_SIZE: u32 = 4 * 1024 * 1024;
/// Most blocks a piece may have, which bounds the hash list sent with every download.
pub const MAX_BLOCKS: usize = (MAX_PIECE_SIZE / MIN_BLOCK_SIZE as u64) as usize;
/// Most addresses in a node record.
pub const MAX_ADDRESSES: usize = 8;
/// Longest version string in a node record.
pub const MAX_VERSION_LEN: usize = 64;
/// Longest salt of a mutable record.
pub const MAX_SALT_LEN: usize = 64;
/// Largest value of a mutable record.
pub const MAX_RECORD_VALUE: usize = 4096;
/// Most node records in one discovery response (Kademlia's k).
pub const MAX_CLOSER_NODES: usize = 20;
// An audit response (block + piece info) must fit in one message.
const _: () = assert!(
    MAX_GRPC_MESSAGE
        >= MAX_BLOCK_SIZE as usize + (MAX_PIECE_SIZE / MAX_BLOCK_SIZE as u64) as usize * 34 + 1024
);

/// Most pieces one renew order may name (32 KiB of piece ids): one order per node
/// covers this many pieces; an uplink splits larger batches.
pub const MAX_RENEW_PIECES: usize = 1024;

/// How far an order's timestamp may be from the receiver's clock, either way.
pub const ORDER_WINDOW_MS: u64 = 10 * 60 * 1000;

/// HTTP/2 frame size the piece transfer endpoints accept (RFC 9113's default is 16 KiB).
/// Piece data moves in MiB-sized messages; larger frames cut the per-frame work (headers,
/// flow-control accounting, wake-ups) on both ends.
pub const H2_MAX_FRAME: u32 = 256 * 1024;
/// HTTP/2 flow-control window per stream for piece transfers: how much one piece upload
/// or download may have in flight before the receiver reads it.
pub const H2_STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// HTTP/2 flow-control window per connection (all streams of one peer together). With
/// the per-peer stream limit it bounds what one peer can make a node buffer.
pub const H2_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
