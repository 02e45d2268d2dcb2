//! The Shoal uplink: everything a data owner runs on their own machine.
//!
//! - [`access`]: the root secret, keys derived from it, and access grant strings.
//! - [`crypto`]: per-object keys, key wrapping, and block encryption (AES-256-GCM).
//! - [`codec`]: the redundancy [`Scheme`](codec::Scheme) and the erasure [`Codec`](codec::Codec)
//!   interface with its two Reed-Solomon implementations.
pub mod access;
pub mod catalog;
pub mod client;
pub mod codec;
pub mod config;
pub mod crypto;
mod download;
pub mod error;
pub mod grpc;
mod hexser;
pub mod metrics;
pub mod segment;
pub mod select;
pub mod store;
pub mod testing;
mod upload;

pub use access::{Access, RootSecret};
pub use client::{DeleteReport, Progress, PutOptions, PutReport, Uplink, UplinkConfig};
pub use codec::{CodecKind, Scheme};
pub use error::Error;
pub use store::{NodeCandidate, NodeSource, PieceStore, StaticNodes};
