//! Shoal's Kademlia DHT, the discovery layer that replaces Storj's satellite.
//!
//! - [`core`]: sans-IO state machines — the routing table ([`core::table`]), iterative
//!   lookups ([`core::lookup`]), record-store rules ([`core::store`]) and the membership
//!   sampler ([`core::membership`]). They take messages and `now`, return decisions, and are
//!   driven both by the tokio driver and by the `dht-sim` simulator.

pub mod core;
