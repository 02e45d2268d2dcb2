//! The test kit: scaffolding shared by every crate's tests and benchmarks, each piece
//! written once.
//!
//! - [`data`]: the xorshift generator behind every test's deterministic bytes.
//! - [`wait`]: [`wait_until`] (async) and [`poll_until`] (a thread), which poll a
//!   condition up to a deadline (tests never sleep a fixed time), [`settle`], which waits
//!   until a sample stops changing, and [`bounded`], which fails a test that runs past
//!   its limit.
//! - [`tools`]: [`require_tool`], which fails a test that needs a missing program with
//!   what to install (a test never returns early and passes).
//! - [`files`]: [`files_under`], the files of a tree (to compare what went up with
//!   what came back).
//! - [`paths`]: [`repo_root`] and [`build_binary`] (a workspace binary for a test).
//! - [`sigv4`]: AWS Signature Version 4 (the `Authorization` header of an S3 request),
//!   for every S3 client of the tests and benchmarks.
//! - [`cli`]: [`Cli`], the runner of the `uplink` binary on a config dir, and [`Run`],
//!   what one run did.
//!
//! Imports point one way: `cli` uses `wait` ([`bounded`] runs); no other module imports
//! another.
//!
//! ```text
//!   cli ──▶ wait        data        files        tools        paths        sigv4
//! ```
//!
//! The kit depends on no crate of the workspace, so any crate may dev-depend on it. What
//! needs running nodes (`Cluster`, the CLI network with its DHT probe) lives in
//! `shoal-tests`, which builds on the kit.
#![allow(clippy::missing_panics_doc)]

pub mod cli;
pub mod data;
pub mod files;
pub mod paths;
pub mod sigv4;
pub mod tools;
pub mod wait;

pub use cli::{Cli, Run};
pub use data::{Xorshift, test_data, xorshift_bytes};
pub use files::{copy_dir, files_under};
pub use paths::{build_binary, repo_root};
pub use tools::require_tool;
pub use wait::{bounded, poll_until, settle, wait_until};
