//! Shoal's Kademlia DHT, the discovery layer that replaces Storj's satellite.
//!
//! - [`core`]: sans-IO state machines — the routing table ([`core::table`]), iterative
//!   lookups ([`core::lookup`]), record-store rules ([`core::store`]), the membership
//!   sampler ([`core::membership`]) and, above them, the one protocol state machine
//!   ([`core::node::Node`]) that holds every rule of the protocol. It takes messages,
//!   ticks and `now`, and returns messages to send and finished operations; the tokio
//!   driver and the `dht-sim` simulator ([`sim`]) both drive it.
//! - [`driver`]: tokio + tonic. [`Dht::start`] returns a [`DhtHandle`]: the Discovery gRPC
//!   service to mount, bootstrap, lookups, records, membership samples and shutdown; one
//!   task owns and drives the node (the getters read the view it publishes).
//!   With a [`DhtPersistence`], the records a node holds and the nodes it verified
//!   survive its restarts, and it joins through any node it knew.
//! - [`metrics`]: the `shoal_dht_*` Prometheus metrics.
//! - [`error`]: [`DhtError`], and the gRPC status of every refusal in one place.

pub mod core;
pub mod driver;
pub mod error;
pub mod fuzz;
pub mod metrics;
pub mod sim;

pub use driver::{
    Dht, DhtConfig, DhtHandle, DhtPersistence, DiscoveryService, KnownClosest, KnownPeer,
    MemberInfo, MemoryPersistence, Mode, Peer, PersistError, PutReport, RecordFields, TableEntry,
};
pub use error::DhtError;
pub use metrics::Metrics;
