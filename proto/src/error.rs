//! Typed errors of this crate: one enum for malformed wire input, one for identities.

use std::path::PathBuf;

use crate::domain::Domain;

/// Why a protobuf message was rejected on its way into a domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("required field `{field}` is missing")]
    Missing { field: &'static str },
    #[error("field `{field}` is {actual} bytes long, expected {expected}")]
    WrongLength {
        field: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("field `{field}` is {actual} bytes, over the limit of {limit}")]
    TooLong {
        field: &'static str,
        limit: usize,
        actual: usize,
    },
    #[error("field `{field}` has {actual} entries, over the limit of {limit}")]
    TooMany {
        field: &'static str,
        limit: usize,
        actual: usize,
    },
    #[error("field `{field}` is out of range: {reason}")]
    OutOfRange { field: &'static str, reason: String },
    #[error("field `{field}` is not a valid ed25519 public key")]
    BadKey { field: &'static str },
    #[error("field `{field}` is malformed: {reason}")]
    Malformed { field: &'static str, reason: String },
    #[error("signature on {domain} does not verify")]
    BadSignature { domain: Domain },
}

/// Errors from identities: key files, proof of work and signing.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no identity file at {path}; create one with `setup` first")]
    Missing { path: PathBuf },
    #[error("identity file {path} already exists; refusing to overwrite it")]
    AlreadyExists { path: PathBuf },
    #[error("identity file {path} is {actual} bytes, expected {expected}: not a Shoal identity")]
    WrongLength {
        path: PathBuf,
        expected: usize,
        actual: usize,
    },
    #[error("identity file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: &'static str },
    #[error("identity file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("cannot access identity file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "node id {node_id} has {actual} bits of proof of work, the network requires {required}"
    )]
    InsufficientWork {
        node_id: String,
        actual: u32,
        required: u32,
    },
    #[error(
        "the publisher key's work nonce proves {actual} bits of proof of work, the network requires {required}"
    )]
    InsufficientPublisherWork { actual: u32, required: u32 },
    #[error("difficulty {0} is above the maximum of {max}", max = crate::limits::MAX_DIFFICULTY)]
    DifficultyTooHigh(u32),
    #[error("identity generation was cancelled")]
    Cancelled,
    #[error("signing key does not match the signer named in the {domain} message")]
    WrongSigner { domain: Domain },
}
