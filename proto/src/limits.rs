//! Bounds on everything that arrives from the network. Conversions in
//! [`crate::messages`] enforce the field limits; servers enforce the stream limits.

/// Highest node-id difficulty accepted: 2^32 attempts is already about a day of one core.
pub const MAX_DIFFICULTY: u32 = 32;
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

/// Longest tag an upload trailer may carry (see `UploadTrailer::tag`): room for the
/// uplink's sealed description of a catalog piece (109 bytes of fields and a 16-byte
/// AEAD tag), with a little to spare; nodes store it with the piece's metadata.
pub const MAX_PIECE_TAG: usize = 128;

/// Most pieces one `ListPieces` page may ask for (and a node may answer with): a page
/// of 1000 pieces with full tags is about 180 KiB.
pub const MAX_LIST_PIECES: u32 = 1000;

/// How far an order's timestamp may lag the receiver's clock.
pub const ORDER_WINDOW_MS: u64 = 10 * 60 * 1000;
/// How far an order's timestamp may run ahead of the receiver's clock: enough for clock
/// skew between honest machines, short enough that an order dated ahead does not hold a
/// replay entry much past the window.
pub const ORDER_MAX_AHEAD_MS: u64 = 60 * 1000;

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

/// HTTP/2 PING interval on every gRPC connection, client and server: a peer that
/// vanished without closing (power loss, a dropped NAT mapping) is noticed within
/// interval + timeout instead of holding streams until the OS gives up (hours).
pub const H2_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a PING may go unanswered before the connection is closed.
pub const H2_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The pause after a failed `accept` (out of file descriptors and the like), shared by
/// every accept loop: doubling from 5 ms to at most 1 s, reset by the next success, so a
/// server neither spins on the error nor stays deaf for long once it clears.
#[derive(Debug, Clone, Default)]
pub struct AcceptBackoff {
    current: std::time::Duration,
}

impl AcceptBackoff {
    const MIN: std::time::Duration = std::time::Duration::from_millis(5);
    const MAX: std::time::Duration = std::time::Duration::from_secs(1);

    /// An accept failed: how long to pause before the next one.
    pub fn failed(&mut self) -> std::time::Duration {
        self.current = (self.current * 2).clamp(Self::MIN, Self::MAX);
        self.current
    }

    /// An accept succeeded.
    pub fn succeeded(&mut self) {
        self.current = std::time::Duration::ZERO;
    }
}

/// Connection caps, global and per peer group ([`crate::address::peer_group`]): a
/// connection past either is closed as soon as it is accepted, before it costs anything
/// (a TLS handshake on a node, a request on the gateway).
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_peer: usize,
    open: std::sync::Mutex<(usize, std::collections::HashMap<std::net::IpAddr, usize>)>,
}

/// One admitted connection; released when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: std::sync::Arc<ConnectionLimits>,
    group: std::net::IpAddr,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_peer: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            max_total,
            max_per_peer,
            open: std::sync::Mutex::new((0, std::collections::HashMap::new())),
        })
    }

    /// A slot for a connection from `peer`, or `None` past a cap.
    pub fn admit(self: &std::sync::Arc<Self>, peer: std::net::IpAddr) -> Option<ConnectionSlot> {
        let group = crate::address::peer_group(peer);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_peer) = &mut *open;
        let mine = per_peer.entry(group).or_insert(0);
        if *total >= self.max_total || *mine >= self.max_per_peer {
            if *mine == 0 {
                per_peer.remove(&group);
            }
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(ConnectionSlot {
            limits: std::sync::Arc::clone(self),
            group,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_peer) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = per_peer.get_mut(&self.group) {
            *n -= 1;
            if *n == 0 {
                per_peer.remove(&self.group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn accept_backoff_doubles_up_to_a_second_and_resets() {
        let mut b = AcceptBackoff::default();
        let pauses: Vec<Duration> = (0..10).map(|_| b.failed()).collect();
        assert_eq!(pauses[0], Duration::from_millis(5));
        assert_eq!(pauses[1], Duration::from_millis(10));
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(pauses[9], Duration::from_secs(1));
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(5));
    }

    #[test]
    fn connections_are_capped_globally_and_per_peer_and_given_back() {
        let limits = ConnectionLimits::new(3, 2);
        let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
        let a1 = limits.admit(ip("203.0.114.1")).unwrap();
        let _a2 = limits.admit(ip("203.0.114.1")).unwrap();
        assert!(limits.admit(ip("203.0.114.1")).is_none(), "per peer");
        // An IPv6 /64 is one peer.
        let _b1 = limits.admit(ip("2001:db8::1")).unwrap();
        assert!(limits.admit(ip("2001:db8::2")).is_none(), "global");
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _b2 = limits.admit(ip("2001:db8::2")).unwrap();
        assert!(
            limits.admit(ip("2001:db8::3")).is_none(),
            "the /64 is at its cap"
        );
    }
}
