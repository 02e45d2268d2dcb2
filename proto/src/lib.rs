//! Shoal's wire protocol and the identity every participant carries.
//!
//! - [`pb`]: the protobuf/gRPC types generated from `proto/shoal/v1/*.proto` at build time
//!   (with `protox`, so no system `protoc`). They stay at the edges: convert them once with
//!   `TryFrom` into the domain types of [`messages`], which reject malformed input.
//! - [`ids`]: fixed-size identifiers ([`NodeId`], [`PieceId`]), keys and signatures.
//! - [`identity`]: ed25519 key pairs, node-id proof of work and key files.
//! - [`domain`]: what a signature is for, one tag per signed message kind.
//! - [`signing`]: domain-separated signatures over one canonical byte encoding, and
//!   [`Signed<T>`], a value whose signature has been checked.
//! - [`messages`]: the order envelope ([`messages::OrderHeader`], [`messages::Order`]),
//!   the orders, receipts, node records and mutable records.
//! - [`piece_hash`]: per-block BLAKE3 hashes of a piece and the root they hash to.
//! - [`private`]: directories (0700) and files (0600) that hold secrets.
//! - [`limits`]: every bound applied to what comes from the network.
//! - [`tls`]: TLS 1.3 whose certificate key is the node identity, pinned by node id.
//! - [`address`]: which addresses a network may dial (public, or `local_network`).
//! - [`subnet`]: the /24 (IPv4) or /48 (IPv6) that placement limits count.
//! - [`rate`]: the per-peer token bucket every service limits request rates with.
//! - [`call`]: what a failed gRPC call says about the peer (unreachable, timed out,
//!   refused).
//! - [`http`]: who may read the local HTTP pages and metrics (`Host`, bearer token).
//! - [`time`]: unix-millisecond clock helpers and the freshness window for orders.
//! - [`fuzz`]: the fuzz input generator every crate's decoder targets share, and this
//!   crate's targets.
//!
//! Imports point down only: each row uses only rows below it (checked for cycles by a
//! script that graphs the `crate::` and `super::` paths of every module).
//!
//! ```text
//!   fuzz
//!   messages     (order <- orders <- pieces; records)
//!   signing      tls
//!   identity     piece_hash     rate
//!   ids
//!   error
//!   limits
//!   domain       address     time     pb     subnet     call     private     http
//! ```

pub mod address;
pub mod call;
pub mod domain;
pub mod error;
pub mod fuzz;
pub mod http;
pub mod identity;
pub mod ids;
pub mod limits;
pub mod messages;
pub mod piece_hash;
pub mod private;
pub mod rate;
pub mod rtt;
pub mod signing;
pub mod subnet;
pub mod time;
pub mod tls;
pub mod work;

/// Generated protobuf and gRPC code (`shoal.v1`).
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod pb {
    tonic::include_proto!("shoal.v1");
}

pub use error::{IdentityError, WireError};
pub use identity::{DEFAULT_DIFFICULTY, Identity};
pub use ids::{NodeId, Nonce, PieceHash, PieceId, PublicKey, RecordKey, SegmentRoot, Signature};
pub use signing::{Domain, Signable, Signed};
