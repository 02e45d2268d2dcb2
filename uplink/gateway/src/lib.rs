//! `uplink gateway`: the S3 API over HTTP on top of [`Uplink`](uplink::Uplink), for the
//! access in the config dir. The gateway runs on the user's own machine, so the keys
//! never leave it.
//!
//! [s3s](https://crates.io/crates/s3s) parses requests (path- and virtual-host-style),
//! checks SigV4 signatures (headers, presigned URLs with their expiry, aws-chunked
//! bodies with chunk signatures, `UNSIGNED-PAYLOAD`, the unsigned trailer form) and
//! writes S3's XML. [`s3::ShoalS3`] maps operations onto the uplink, one file per
//! family of operations; the protocol rules that are ours (listing pages, conditional
//! requests, digests, multipart completion, object attributes, addressing) are plain
//! code in the rule modules, tested without sockets.
//!
//! Every write (PUT, completed multipart upload, copy, delete, bucket change) is
//! acknowledged only once its catalog change is in the network
//! ([`Uplink::flush`](uplink::Uplink::flush); concurrent requests share one publish).
//!
//! Modules and the direction of their imports (arrows are `use` edges; none points back
//! up). This file only declares the modules and re-exports from `config`, `metrics`,
//! `request` and `server`.
//!
//! ```text
//!                         server          the hyper edge: bind, accept loop, shutdown
//!   ┌────────┬────────┬─────┴─────┬──────────┬────────┐
//!   ▼        ▼        ▼           ▼          ▼        ▼
//! config    host    request    background   auth    metrics
//!                   │     │        │
//!                   ▼     ▼        ▼
//!                 auth  metrics    s3         the S3 operations (s3/mod.rs draws its files)
//!                                  │
//!                                  ▼
//!        rules: listing, conditions, digest, multipart, attrs   (leaves: plain code)
//! ```
//!
//! `server` also uses `s3` (to build the service) and `multipart` (the upload records)
//! directly; `fuzz` (feature `fuzz`, for `shoal-fuzz`) drives the rule modules and `s3`'s
//! range and part selection.
//!
//! # Between the crates
//!
//! ```text
//!   uplink-cli (`uplink gateway`) ──> uplink-gateway (this crate) ──> uplink (the library)
//! ```
//! Every module may use the uplink library's public API (`uplink::`): [`Uplink`] for the
//! data path and the catalog, `uplink::maintain::spawn_renewer` for the background lease
//! renewal. Nothing in the library uses the gateway; only the CLI, which starts it.
//!
//! [`Uplink`]: uplink::Uplink

pub mod attrs;
mod auth;
mod background;
pub mod conditions;
mod config;
pub mod digest;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod host;
pub mod listing;
mod metrics;
pub mod multipart;
mod request;
pub(crate) mod s3;
mod server;
#[cfg(test)]
mod tests;

pub use config::{GatewayConfig, derived_credentials};
pub use metrics::GatewayMetrics;
pub use request::{BODY_IDLE_TIMEOUT, MAX_PRESIGNED_EXPIRY_S, METRICS_PATH};
pub use server::{Gateway, GatewayError};
