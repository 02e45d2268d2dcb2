//! The Shoal storage node: rents out a fixed part of a disk to the network.
//!
//! - [`config`]: the node's one `Config`, resolved from `config.toml`, `SHOAL_NODE_*`
//!   environment variables and flags; [`size`] parses `500GB`/`2TiB`.
//! - [`setup`]: creates a node directory (identity with proof of work, documented config).
//! - [`meta`]: the metadata store (SQLite: piece records, space counters, per-owner
//!   totals, inline pieces, DHT records and known peers; migrates an older sled store);
//!   [`store`]: piece files,
//!   reservations, crash recovery and expiry; [`group_sync`]: syncs shared among
//!   concurrent commits.
//! - [`protocol`]: the piece protocol's checks as plain functions; [`service`]: the
//!   tonic `PieceStore` service that applies them.
//! - [`metrics`]: every Prometheus metric; [`http`]: `/metrics`, `/api/status`, dashboard.
//! - [`dht_persist`]: the DHT's records and known peers in the node's metadata store.
//! - [`node`]: starts all of the above and stops it through one shutdown path; [`net`]:
//!   connections that shutdown can cut after a drain period.
//! - [`error`]: typed errors and their gRPC status codes.
#![forbid(unsafe_code)]

pub mod config;
pub mod dht_persist;
pub mod error;
pub mod fuzz;
pub mod group_sync;
pub mod http;
pub mod info;
pub mod meta;
pub mod metrics;
pub mod net;
pub mod node;
pub mod piece_file;
pub mod protocol;
pub mod replay;
pub mod service;
pub mod setup;
pub mod size;
pub mod store;

pub use config::{Config, Overrides};
pub use error::{ConfigError, Error};
pub use node::{RunningNode, start};
pub use size::ByteSize;
pub use store::{PieceStore, Space, StoreOptions};
