//! Per-peer request rate limit: one rule, in `shoal_proto`, shared with the storage
//! node's piece service.

pub use shoal_proto::rate::{RateConfig, RateLimiter};
