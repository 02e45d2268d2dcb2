//! The sans-IO core: routing table, lookups, record rules and membership. Inputs are
//! messages and a caller-supplied `now` in milliseconds; outputs are decisions. Nothing
//! here opens a socket, reads a clock or draws randomness.

pub mod key;
pub mod lookup;
pub mod membership;
pub mod store;
pub mod table;
pub mod verified;
