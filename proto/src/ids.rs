//! Fixed-size identifiers, public keys and signatures.

use std::fmt;

use crate::error::WireError;

/// Hex encoding for ids in logs, file names and CLI output.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Parses lowercase or uppercase hex of exactly `N` bytes.
pub fn from_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return None;
    }
    let nibble = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// Reads a fixed-length byte field from the wire.
pub(crate) fn fixed<const N: usize>(
    field: &'static str,
    bytes: &[u8],
) -> Result<[u8; N], WireError> {
    if bytes.is_empty() {
        return Err(WireError::Missing { field });
    }
    bytes.try_into().map_err(|_| WireError::WrongLength {
        field,
        expected: N,
        actual: bytes.len(),
    })
}

macro_rules! id32 {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub const LEN: usize = 32;

            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            pub fn to_hex(&self) -> String {
                to_hex(&self.0)
            }

            pub fn from_hex(s: &str) -> Option<Self> {
                from_hex::<32>(s).map(Self)
            }

            /// Converts a wire field, naming it in the error.
            pub fn from_wire(field: &'static str, bytes: &[u8]) -> Result<Self, WireError> {
                fixed::<32>(field, bytes).map(Self)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..16])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

id32!(
    /// A node's identity on the network: the BLAKE3 hash (domain `shoal v1 node id`) of its
    /// ed25519 public key. Its trailing zero bits are the node's proof of work.
    NodeId
);
id32!(
    /// Names one piece on one node. Derived with [`PieceId::derive`], so that nodes cannot
    /// tell which of their pieces belong to the same segment.
    PieceId
);
id32!(
    /// Root hash of a piece: its size, block size and per-block hashes hashed together.
    PieceHash
);
id32!(
    /// Where a mutable record lives in the DHT: `H(public key, salt)`.
    RecordKey
);
id32!(
    /// The random per-segment root that every piece id of the segment is derived from.
    SegmentRoot
);

const NODE_ID_CONTEXT: &str = "shoal v1 node id";
const PIECE_ID_CONTEXT: &str = "shoal v1 piece id";

impl NodeId {
    /// The node id of a public key.
    pub fn from_public_key(key: &PublicKey) -> Self {
        Self(blake3::derive_key(NODE_ID_CONTEXT, key.as_bytes()))
    }

    /// Proof of work carried by this id: its number of trailing zero bits, counting from
    /// the least significant bit of the last byte. Trailing (not leading) bits, so that
    /// work never skews ids towards one part of the Kademlia key space.
    pub fn difficulty(&self) -> u32 {
        let mut bits = 0;
        for byte in self.0.iter().rev() {
            if *byte == 0 {
                bits += 8;
            } else {
                bits += byte.trailing_zeros();
                break;
            }
        }
        bits
    }

    /// Kademlia XOR distance to another id.
    pub fn distance(&self, other: &NodeId) -> [u8; 32] {
        let mut d = [0u8; 32];
        for (i, out) in d.iter_mut().enumerate() {
            *out = self.0[i] ^ other.0[i];
        }
        d
    }
}

impl PieceId {
    /// `H(root, node_id, piece_index)`: the id of piece `index` of a segment on `node`.
    pub fn derive(root: &SegmentRoot, node: &NodeId, index: u16) -> Self {
        let mut h = blake3::Hasher::new_derive_key(PIECE_ID_CONTEXT);
        h.update(&root.0);
        h.update(&node.0);
        h.update(&index.to_be_bytes());
        Self(*h.finalize().as_bytes())
    }
}

impl SegmentRoot {
    /// A fresh random root for a new segment.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

/// 16 random bytes that make an order unique: a node accepts each (owner, nonce) once
/// within the order window (see `storage-node`'s replay guard).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nonce(pub [u8; 16]);

impl Nonce {
    pub const LEN: usize = 16;

    /// A fresh random nonce for a new order.
    pub fn random() -> Self {
        Self(rand::random())
    }

    pub fn from_wire(field: &'static str, bytes: &[u8]) -> Result<Self, WireError> {
        fixed::<16>(field, bytes).map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", to_hex(&self.0))
    }
}

/// An ed25519 public key that is a valid curve point.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    pub const LEN: usize = 32;

    pub fn from_bytes(field: &'static str, bytes: &[u8]) -> Result<Self, WireError> {
        let raw = fixed::<32>(field, bytes)?;
        ed25519_dalek::VerifyingKey::from_bytes(&raw)
            .map(Self)
            .map_err(|_| WireError::BadKey { field })
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(self)
    }

    pub(crate) fn verifying_key(&self) -> &ed25519_dalek::VerifyingKey {
        &self.0
    }

    pub(crate) fn from_verifying_key(key: ed25519_dalek::VerifyingKey) -> Self {
        Self(key)
    }

    pub fn to_hex(&self) -> String {
        to_hex(self.as_bytes())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &self.to_hex()[..16])
    }
}

/// A 64-byte ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    pub const LEN: usize = 64;

    pub fn from_wire(field: &'static str, bytes: &[u8]) -> Result<Self, WireError> {
        fixed::<64>(field, bytes).map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", &to_hex(&self.0)[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn difficulty_counts_trailing_zero_bits() {
        let mut id = NodeId([0xff; 32]);
        assert_eq!(id.difficulty(), 0);
        id.0[31] = 0b1000_0000;
        assert_eq!(id.difficulty(), 7);
        id.0[31] = 0;
        id.0[30] = 0b0000_0100;
        assert_eq!(id.difficulty(), 10);
        assert_eq!(NodeId([0; 32]).difficulty(), 256);
    }

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        let id = NodeId([0xa5; 32]);
        assert_eq!(NodeId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(NodeId::from_hex("zz"), None);
        assert_eq!(NodeId::from_hex(&"g".repeat(64)), None);
        assert_eq!(NodeId::from_hex(&"a".repeat(63)), None);
    }

    #[test]
    fn fixed_fields_reject_wrong_length() {
        assert_eq!(
            NodeId::from_wire("node_id", &[1; 31]),
            Err(WireError::WrongLength {
                field: "node_id",
                expected: 32,
                actual: 31
            })
        );
        assert_eq!(
            NodeId::from_wire("node_id", &[]),
            Err(WireError::Missing { field: "node_id" })
        );
    }

    proptest! {
        // Derivation is a pure function of (root, node, index)...
        #[test]
        fn piece_id_is_deterministic(root: [u8; 32], node: [u8; 32], index: u16) {
            let (root, node) = (SegmentRoot(root), NodeId(node));
            prop_assert_eq!(PieceId::derive(&root, &node, index), PieceId::derive(&root, &node, index));
        }

        // ...and distinct across nodes and indices of the same segment.
        #[test]
        fn piece_id_is_distinct(root: [u8; 32], a: [u8; 32], b: [u8; 32], i: u16, j: u16) {
            let root = SegmentRoot(root);
            let (a, b) = (NodeId(a), NodeId(b));
            prop_assume!(a != b || i != j);
            prop_assert_ne!(PieceId::derive(&root, &a, i), PieceId::derive(&root, &b, j));
        }

        // Different segments give different ids for the same node and index.
        #[test]
        fn piece_id_is_distinct_across_segments(r1: [u8; 32], r2: [u8; 32], node: [u8; 32], i: u16) {
            prop_assume!(r1 != r2);
            let node = NodeId(node);
            prop_assert_ne!(
                PieceId::derive(&SegmentRoot(r1), &node, i),
                PieceId::derive(&SegmentRoot(r2), &node, i)
            );
        }
    }

    #[test]
    fn all_indices_of_one_segment_on_many_nodes_are_distinct() {
        let root = SegmentRoot([7; 32]);
        let mut seen = std::collections::HashSet::new();
        for n in 0..110u8 {
            let node = NodeId([n; 32]);
            for i in 0..110u16 {
                assert!(seen.insert(PieceId::derive(&root, &node, i)));
            }
        }
    }
}
