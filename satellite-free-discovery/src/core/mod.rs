//! The sans-IO core: routing table, lookups, record rules, membership, and the one
//! protocol state machine ([`node::Node`]) that holds every rule above them. Inputs are
//! messages and a caller-supplied `now` in milliseconds; outputs are messages to send
//! and decisions. Nothing here opens a socket, reads a clock or reads an entropy source
//! (randomness comes from a caller-supplied seed).

pub mod key;
pub mod lookup;
pub mod membership;
pub mod node;
pub mod rate;
pub mod store;
pub mod table;
pub mod verified;
