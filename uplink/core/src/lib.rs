//! The Shoal uplink: everything a data owner runs on their own machine.
//!
//! Data path (see `DESIGN.md`): object → segments (≤ 64 MiB; ≤ 4 KiB inline) → sealed
//! blocks → erasure-coded stripes → one piece per node, and back.
//!
//! # Rooms and doors
//!
//! [`Uplink`] (in [`client`]) is the API the CLI (`uplink-cli`) and the S3 gateway
//! (`uplink-gateway`) use, the two crates built on this one; it composes two
//! services and talks to nothing else:
//! - [`pieces::Pieces`]: the one door to the storage nodes. It owns the piece store, the
//!   node source, order signing, node selection and the node statistics, and offers
//!   upload, download, delete, audit, renew and repair of pieces (private fields).
//! - `sync::CatalogSync`: the catalog in the network. It owns the sync state (DHT
//!   records, group commit) and stores its blobs through `Pieces`; [`rebuild`] (its
//!   child) rebuilds the catalog from the nodes alone.
//!
//! [`maintain::Maintenance`] runs `renew` / `check` / `repair` over an `Uplink`'s
//! catalog and the same two services, with the rules in [`health`]; `Uplink` itself is
//! only composition and the data path.
//!
//! # The one direction of imports
//!
//! ```text
//!   maintain ──> client ──> sync ──> pieces ──> orders, select, segment, health
//!      │           │         │         │
//!      └───────────┴─────────┴─────────┴──> catalog, codec, crypto, store, access,
//!                                           settings, metrics, error, listing
//!                                           (the leaves)
//! ```
//! A module imports only modules to its right or below; the leaves import only each
//! other (`catalog → codec, crypto, listing, select, store`; `error → catalog, codec, crypto,
//! select, store`; `select → store`). Checked by listing each module's `crate::` paths
//! and looking for strongly connected groups (see the architecture notes).
//!
//! # The crates built on this one
//!
//! ```text
//!   uplink-cli (the `uplink` binary) ──> uplink-gateway (the S3 edge) ──> uplink (this)
//!        └───────────────────────────────────────────────────────────────────^
//! ```
//! Both use only this library's public API; nothing here imports them.
//!
//! # The modules
//!
//! - [`access`]: the root secret, the keys derived from it, access grant strings.
//! - [`crypto`]: per-object keys, key wrapping, block encryption (AES-256-GCM).
//! - [`codec`]: the redundancy [`Scheme`] and the erasure [`codec::Codec`] interface with
//!   its two Reed-Solomon implementations ([`CodecKind`]).
//! - [`segment`]: the synchronous pipeline: blocks → stripes → shards, and back.
//! - [`store`]: the two traits at the edges: [`PieceStore`] (talk to one node) and
//!   [`NodeSource`] (find candidate nodes); [`grpc`] implements them over tonic.
//! - [`select`]: node selection, a pure function, and [`select::NodeStats`] (the one
//!   rule of node statistics from a piece outcome, `NodeStats::from_outcome`).
//! - [`settings`]: the settings of an uplink, [`UplinkConfig`].
//! - [`catalog`]: buckets, objects and node history in SQLite (serde structs); its
//!   [`catalog::model`] is the CRDT (versions, tombstones, merge) and [`catalog::log`]
//!   the network formats (deltas, snapshots, head and writers records).
//! - [`pieces`]: upload / download orchestration over the traits (parallel pieces,
//!   long-tail cancellation, erasures, replacement pieces), deletes, audits, renewals.
//! - [`sync`]: publishing and pulling the catalog in the network; [`rebuild`]: the
//!   catalog back from the nodes alone (piece tags, [`catalog::tag`]) when the DHT has
//!   lost its records.
//! - [`client`]: the entry point, [`Uplink`].
//! - [`health`]: the rules of keeping data alive (segment health, repair placement,
//!   renew batches, audit blocks, `check` exit statuses), plain code; [`maintain`] runs
//!   them: renew, check (audit), repair ([`maintain::Maintenance`]), and the background
//!   [`maintain::spawn_renewer`].
//! - [`listing`]: the one rule of listing pages (fold common prefixes at a delimiter,
//!   cut at `max-keys`, resume), over a [`listing::Cursor`] that seeks past what it
//!   folds; the catalog's objects are one ([`catalog::ObjectCursor`]). A leaf: it
//!   imports nothing of the crate.
//! - [`config`]: the CLI's files and `config.toml`; [`metrics`]: Prometheus metrics.
//! - `testing` (feature `testing`, on in this crate's own tests): an in-memory piece
//!   store with misbehaving nodes, and the same behind real gRPC servers on loopback;
//!   `fuzz` (feature `fuzz`): the decoders' fuzz targets, for `shoal-fuzz` (the
//!   gateway's are in `uplink_gateway::fuzz`).

pub mod access;
pub mod catalog;
pub mod client;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod discovery;
pub mod error;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod grpc;
pub mod health;
mod hexser;
pub mod listing;
pub mod maintain;
pub mod metrics;
pub mod orders;
pub mod peers;
pub mod pieces;
pub mod segment;
pub mod select;
pub mod settings;
pub mod store;
pub mod sync;
pub mod work;
pub use sync::rebuild;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use access::{Access, RootSecret};
pub use client::{
    DeleteReport, Progress, PutOptions, PutReport, Staged, StagedPart, Uplink, UplinkConfig,
};
pub use codec::{CodecKind, Scheme};
pub use error::Error;
pub use store::{NodeCandidate, NodeSource, PieceStore, StaticNodes};
