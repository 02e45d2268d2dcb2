//! The order envelope: what every order an owner sends a node carries ([`OrderHeader`]),
//! and the [`Order`] trait each order kind implements. The trait fixes one signed layout
//! for all of them, so no order spells out its addressing, freshness or nonce itself:
//!
//! ```text
//! tag || 0x00 || target || node_id || owner_key || terms || timestamp_ms || nonce
//! ```
//!
//! `target` is what the order acts on (one piece id, a list of them, or nothing) and
//! `terms` its own fields. This is byte for byte the layout each order signed before the
//! envelope was a type, so old signatures stay valid.

use crate::error::WireError;
use crate::ids::{NodeId, Nonce, PublicKey};
use crate::signing::{Canonical, Domain, Signable};

use super::nonzero;

/// The fields every order shares: to which node, signed by which owner, when, and the
/// nonce that makes it unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderHeader {
    /// The node the order is addressed to; any other node refuses it.
    pub node_id: NodeId,
    /// The owner's key, which signs the order (and owns the pieces it names).
    pub owner_key: PublicKey,
    /// When the order was made; a node accepts it only within the order window.
    pub timestamp_ms: u64,
    /// Makes the order unique: a node accepts it once.
    pub nonce: Nonce,
}

impl OrderHeader {
    /// Reads the envelope's wire fields, each checked (ids and keys well-formed, a
    /// timestamp, a nonce of the right length).
    pub fn from_wire(
        node_id: &[u8],
        owner_key: &[u8],
        timestamp_ms: u64,
        nonce: &[u8],
    ) -> Result<Self, WireError> {
        Ok(Self {
            node_id: NodeId::from_wire("node_id", node_id)?,
            owner_key: PublicKey::from_bytes("owner_key", owner_key)?,
            timestamp_ms: nonzero("timestamp_ms", timestamp_ms)?,
            nonce: Nonce::from_wire("nonce", nonce)?,
        })
    }
}

/// An order from a piece's owner to one node: an [`OrderHeader`] plus the order's own
/// fields. Every order is [`Signable`] through this trait, with the layout in the module
/// doc; what a node checks of any order (addressed here, fresh, new, and a lease within
/// its limit) reads only what this trait exposes.
pub trait Order {
    /// The signature domain of this order kind.
    const DOMAIN: Domain;
    /// The protobuf message this order travels as.
    type Wire;

    /// The envelope.
    fn header(&self) -> &OrderHeader;

    /// The lease the order asks for, if it sets one (upload, renew): a node checks it
    /// against its `max_lease`.
    fn lease_ms(&self) -> Option<u64> {
        None
    }

    /// Signs what the order acts on, before the header's node id (none by default).
    fn encode_target(&self, _c: &mut Canonical) {}

    /// Signs the order's own fields, between the owner key and the timestamp.
    fn encode_terms(&self, c: &mut Canonical);
}

impl<O: Order> Signable for O {
    const DOMAIN: Domain = O::DOMAIN;

    fn signer(&self) -> &PublicKey {
        &self.header().owner_key
    }

    fn encode(&self, c: &mut Canonical) {
        let h = self.header();
        self.encode_target(c);
        c.fixed(h.node_id.as_bytes()).fixed(h.owner_key.as_bytes());
        self.encode_terms(c);
        c.u64(h.timestamp_ms).fixed(h.nonce.as_bytes());
    }
}
