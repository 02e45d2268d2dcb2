//! Shoal's Kademlia DHT, the discovery layer that replaces Storj's satellite.
//!
//! - [`core`]: sans-IO state machines — the routing table ([`core::table`]), iterative
//!   lookups ([`core::lookup`]), record-store rules ([`core::store`]) and the membership
//!   sampler ([`core::membership`]). They take messages and `now`, return decisions, and are
//!   driven both by the tokio driver and by the `dht-sim` simulator ([`sim`]).
//! - [`driver`]: tokio + tonic. [`Dht::start`] returns a [`DhtHandle`]: the Discovery gRPC
//!   service to mount, bootstrap, lookups, records, membership samples, background
//!   workers and shutdown.
//! - [`metrics`]: the `shoal_dht_*` Prometheus metrics.
//! - [`error`]: [`DhtError`], and the gRPC status of every refusal in one place.

pub mod core;
pub mod driver;
pub mod error;
pub mod metrics;
pub mod sim;

pub use driver::{
    Dht, DhtConfig, DhtHandle, DiscoveryService, MemberInfo, Mode, Peer, PutReport, RecordFields,
    TableEntry,
};
pub use error::DhtError;
pub use metrics::Metrics;
