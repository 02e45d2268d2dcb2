//! The Shoal storage node: rents out a fixed part of a disk to the network.
//!
//! - [`config`]: the node's one `Config`, resolved from `config.toml`, `SHOAL_NODE_*`
//!   environment variables and flags; [`size`] parses `500GB`/`2TiB`.
//! - [`setup`]: creates a node directory (identity with proof of work, documented config).
//! - [`meta`]: the metadata store (SQLite: piece records, space counters, per-owner
//!   totals, inline pieces, DHT records and known peers; migrates an older sled store);
//!   [`store`]: piece files, reservations, crash recovery and expiry; [`group_sync`]:
//!   syncs shared among concurrent commits; [`piece_file`]: piece files with `O_DIRECT`.
//! - [`protocol`]: the piece protocol's checks as plain functions (the order check:
//!   [`protocol::check_envelope`]); [`replay`]: each order accepted once; [`service`]:
//!   the tonic `PieceStore` service, whose one `accept` applies them to every order.
//! - [`metrics`]: every Prometheus metric; [`http`]: `/metrics`, `/api/status`, dashboard,
//!   reading the [`state`] of the running node; [`info`]: `storage-node info`.
//! - [`dht_persist`]: the DHT's records and known peers in the node's metadata store.
//! - [`node`]: starts all of the above and stops it through one shutdown path; [`net`]:
//!   connections that shutdown can cut after a drain period.
//! - [`error`]: typed errors and their gRPC status codes.
//!
//! Imports point down only: each row uses only rows below it (checked for cycles by a
//! script that graphs the `crate::` and `super::` paths of every module).
//!
//! ```text
//!   node
//!   info
//!   http
//!   state        service      setup        fuzz
//!   metrics      dht_persist  config
//!   store        protocol
//!   meta         (schema, row, stall, dht, sled_import)
//!   error
//!   replay       size         net          piece_file   group_sync
//! ```

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
pub mod state;
pub mod store;

pub use config::{Config, Overrides};
pub use error::{ConfigError, Error};
pub use node::{RunningNode, start};
pub use size::ByteSize;
pub use store::{PieceStore, Space, StoreOptions};
