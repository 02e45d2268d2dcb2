//! What the handle's synchronous getters read: a copy of the node's routing table,
//! membership list and dial-backs, published by the driver task (the node's only owner)
//! after the steps that may change them.

use super::{Peer, TableEntry};
use crate::core::membership::Member;
use crate::core::node::Node;

/// The node's state as the getters see it.
// LATER: the membership list is copied whole at each publish (before a reply that
// follows a change, else at most every 50 ms); with tens of thousands of members an
// incrementally kept copy would cost less.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// The routing table's entries, each with when it last answered (core ms).
    pub table: Vec<(TableEntry, u64)>,
    /// The membership list, if the node keeps one.
    pub members: Option<Vec<Member<Peer>>>,
    /// Dial-backs and liveness checks in flight.
    pub dialing: usize,
}

impl Snapshot {
    pub(crate) fn of(node: &Node<Peer>) -> Self {
        Self {
            table: node
                .table()
                .iter()
                .map(|e| {
                    let entry = TableEntry {
                        record: e.data.clone(),
                        subnet: e.subnet,
                        failures: e.failures,
                    };
                    (entry, e.last_seen)
                })
                .collect(),
            members: node.members().map(|m| m.iter().cloned().collect()),
            dialing: node.dialing(),
        }
    }
}
