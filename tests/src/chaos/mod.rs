//! `shoal-chaos`: the whole system under continuous failure on the network-namespace
//! harness ([`crate::netns`]), and what it proves (nothing acknowledged is lost).
//!
//! - [`schedule`]: the faults as a deterministic schedule from a seed (plain code):
//!   `kill -9`, restarts, cut links, partitions and heals, never more than `total −
//!   repair` nodes down at once, everything restored at the end.
//! - [`s3`]: a minimal SigV4 S3 client for the gateway worker.
//! - [`run`]: the run (30 nodes, 3 of them the DHT seeds, CLI workers and a gateway
//!   worker) and its [`run::Report`].
//!
//! ```text
//!   run ──▶ schedule, s3, netns
//! ```

pub mod run;
pub mod s3;
pub mod schedule;
