//! The uplink's error type. Every variant about an object names it.

use crate::catalog::log::LogError;
use crate::catalog::{CatalogError, WriterId};
use crate::codec::{CodecError, SchemeError};
use crate::crypto::CryptoError;
use crate::select::SelectionError;
use crate::store::DiscoveryError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bucket `{0}` does not exist")]
    NoSuchBucket(String),
    #[error("bucket `{0}` already exists")]
    BucketExists(String),
    #[error("bucket `{0}` is not empty; remove its objects first or use --force")]
    BucketNotEmpty(String),
    #[error("invalid bucket name `{name}`: {reason}")]
    InvalidBucket { name: String, reason: &'static str },
    #[error("invalid object key `{key}`: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("object `{bucket}/{key}` does not exist")]
    NoSuchObject { bucket: String, key: String },
    #[error("object `{bucket}/{key}` is already stored")]
    ObjectExists { bucket: String, key: String },
    #[error("range {start}-{end} is not within object `{bucket}/{key}` of {size} bytes")]
    InvalidRange {
        bucket: String,
        key: String,
        start: u64,
        end: u64,
        size: u64,
    },
    #[error("reading the data for `{bucket}/{key}`: {source}")]
    Read {
        bucket: String,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the data of `{bucket}/{key}`: {source}")]
    Write {
        bucket: String,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{bucket}/{key}`: {source}")]
    Crypto {
        bucket: String,
        key: String,
        #[source]
        source: CryptoError,
    },
    #[error("uploading `{bucket}/{key}` (segment {segment}): {reason}")]
    Upload {
        bucket: String,
        key: String,
        segment: u32,
        reason: String,
    },
    #[error("downloading `{bucket}/{key}` (segment {segment}): {reason}")]
    Download {
        bucket: String,
        key: String,
        segment: u32,
        reason: String,
    },
    #[error("the network is too small for scheme {scheme}: {source}")]
    NetworkTooSmall {
        scheme: crate::codec::Scheme,
        #[source]
        source: SelectionError,
    },
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Scheme(#[from] SchemeError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("the catalog in the network: {0}")]
    Sync(#[from] SyncError),
    #[error(
        "catalog scheme {scheme} has more than {limit} pieces: its head record would not fit the DHT"
    )]
    CatalogScheme {
        scheme: crate::codec::Scheme,
        limit: u16,
    },
    #[error("cannot register the uplink's metrics: {0}")]
    Metrics(String),
}

/// Checks a bucket name: 3 to 63 characters of `a-z`, `0-9`, `-` and `.`, starting and
/// ending with a letter or digit (the S3 rules, so the gateway can serve every bucket).
pub fn check_bucket(name: &str) -> Result<(), Error> {
    let bad = |reason| {
        Err(Error::InvalidBucket {
            name: name.to_string(),
            reason,
        })
    };
    if !(3..=63).contains(&name.len()) {
        return bad("must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return bad("may contain only lowercase letters, digits, '-' and '.'");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !name.bytes().next().is_some_and(alnum) || !name.bytes().last().is_some_and(alnum) {
        return bad("must start and end with a letter or digit");
    }
    if name.contains("..") {
        return bad("must not contain two adjacent periods");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("must not be formatted as an IP address");
    }
    if name.starts_with("xn--") || name.ends_with("-s3alias") {
        return bad("must not start with `xn--` or end with `-s3alias` (reserved by S3)");
    }
    Ok(())
}

/// Checks an object key: 1 to 1024 bytes, no NUL.
pub fn check_key(key: &str) -> Result<(), Error> {
    let bad = |reason| {
        Err(Error::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("must not be empty");
    }
    if key.len() > crate::catalog::MAX_KEY_LEN {
        return bad("must be at most 1024 bytes");
    }
    if key.contains('\0') {
        return bad("must not contain NUL");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_bucket("photos-2024.bak").is_ok());
        for bad in [
            "ab",
            "Photos",
            "-abc",
            "abc-",
            "a_b_c",
            &"a".repeat(64),
            "a..b",
            "192.168.1.1",
            "xn--abc",
        ] {
            assert!(check_bucket(bad).is_err(), "{bad}");
        }
        assert!(check_key("a/b/c.txt").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a\0b").is_err());
        assert!(check_key(&"k".repeat(1025)).is_err());
    }
}

/// Why a DHT record operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RecordError {
    pub kind: RecordErrorKind,
    /// What happened, for people.
    pub message: String,
}

/// What kind of failure a [`RecordError`] is: what the catalog decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordErrorKind {
    /// A compare-and-swap put found another seq held, and no node stored the record.
    CompareAndSwap,
    /// Nobody to ask, nothing sent: a DHT client that has not joined yet knows no
    /// closest nodes of the key (joining comes next).
    NoPeers,
    /// Anything else: no answer in time, refused for another reason.
    Failed,
}

impl RecordError {
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            kind: RecordErrorKind::Failed,
            message: message.into(),
        }
    }

    pub fn compare_and_swap(message: impl Into<String>) -> Self {
        Self {
            kind: RecordErrorKind::CompareAndSwap,
            message: message.into(),
        }
    }
}

/// Why publishing or pulling the catalog failed. Every variant names what it is about.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{what}: the DHT failed: {source}")]
    Record {
        what: String,
        #[source]
        source: RecordError,
    },
    #[error("{what}: no DHT node stored it (is the network reachable?)")]
    NotStored { what: String },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(
        "writer {writer}'s head record offers seq {offered}, older than seq {seen} already merged: refusing a rollback"
    )]
    Rollback {
        writer: WriterId,
        seen: u64,
        offered: u64,
    },
    #[error(
        "the head record of writer {writer} is missing from the DHT (the writers record lists it; seq {seen} was merged here)"
    )]
    MissingHead { writer: WriterId, seen: u64 },
    #[error(
        "delta {seq} of writer {writer} is missing: the log ends at delta {seq_after} and no snapshot covers it"
    )]
    MissingDelta {
        writer: WriterId,
        seq: u64,
        seq_after: u64,
    },
    #[error("cannot fetch {what}: {source}")]
    Fetch {
        what: String,
        #[source]
        source: Box<Error>,
    },
    #[error("{what} is not what its reference says: {reason}")]
    WrongBlob { what: String, reason: String },
    #[error("cannot store {what}: {source}")]
    Store {
        what: String,
        #[source]
        source: Box<Error>,
    },
    #[error(
        "the network holds a catalog log under this replica's writer id {writer} that this \
         replica did not write (its head is at seq {held}, this replica's at {own}): the \
         config dir was copied or restored from a backup while the other copy publishes"
    )]
    Cloned {
        writer: WriterId,
        held: u64,
        own: u64,
    },
    #[error(
        "the DHT served writers record version {held}, older than version {named} already \
         seen (named by a writer's delta or read before): a stale or replayed record may \
         leave writers out; try again when more DHT nodes answer"
    )]
    StaleWriters { held: u64, named: u64 },
    #[error("the writers record kept changing under {attempts} attempts to add writer {writer}")]
    WritersRace { writer: WriterId, attempts: usize },
    #[error("cannot sign a catalog record: {0}")]
    Sign(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("this uplink keeps its catalog on this machine only: there is nothing to rebuild from")]
    NoNetworkCatalog,
}
