//! The node's typed errors, and their one mapping to gRPC status codes and metric reasons.

use std::path::PathBuf;

use shoal_proto::time::Freshness;
use shoal_proto::{IdentityError, NodeId, PieceId, WireError};

/// Why the metadata database failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "{path} has schema version {found}, newer than this storage-node knows ({known}); run the newer version"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("cannot migrate the sled metadata in {path}: {source}")]
    Sled {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("cannot migrate the sled metadata in {path}: {detail}")]
    SledData { path: PathBuf, detail: String },
    #[error("tag of {len} bytes is over the limit of {max}", max = shoal_proto::limits::MAX_PIECE_TAG)]
    TagTooLong { len: usize },
}

/// Why a piece-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("malformed request: {0}")]
    Wire(#[from] WireError),
    #[error("order is addressed to node {got}, this is node {this}")]
    WrongNode { this: NodeId, got: NodeId },
    #[error("order refused: {0}")]
    Stale(Freshness),
    #[error("the order's key does not own piece {0}")]
    NotOwner(PieceId),
    #[error("piece {0} not found")]
    NotFound(PieceId),
    #[error("piece {0} already exists; pieces are never overwritten")]
    AlreadyExists(PieceId),
    #[error("piece {0} is being written or removed; retry later")]
    Busy(PieceId),
    #[error("not enough space: {requested} bytes requested, {free} bytes free")]
    NoSpace { requested: u64, free: u64 },
    #[error(
        "the owner's limit on this node is {limit} bytes: it stores or reserves {used}, {requested} more requested"
    )]
    OwnerQuota {
        limit: u64,
        used: u64,
        requested: u64,
    },
    #[error("max_size 0: an upload order must allow at least one byte")]
    ZeroMaxSize,
    #[error("too many concurrent streams from {peer} (limit {limit})")]
    TooManyStreams { peer: String, limit: usize },
    #[error("too many requests from {peer} (limit {per_second} a second); retry shortly")]
    RateLimited { peer: String, per_second: u32 },
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("chunk of {len} bytes is over the limit of {limit}")]
    ChunkTooLarge { len: usize, limit: usize },
    #[error("upload sent more than the order's max_size of {max_size} bytes")]
    OverMaxSize { max_size: u64 },
    #[error("trailer declares {declared} bytes, {received} were received")]
    SizeMismatch { declared: u64, received: u64 },
    #[error("the data does not hash to the trailer's piece hash")]
    HashMismatch,
    #[error("trailer does not match the order: {0}")]
    TrailerMismatch(&'static str),
    #[error("lease expiry {expires_at_ms} is not in the future")]
    Expired { expires_at_ms: u64 },
    #[error(
        "lease expiry {expires_at_ms} is beyond this node's max_lease of {max_lease_ms} ms from now"
    )]
    LeaseTooLong {
        expires_at_ms: u64,
        max_lease_ms: u64,
    },
    #[error("{0}")]
    Replay(#[from] crate::replay::ReplayError),
    #[error("{what} is out of range: {detail}")]
    OutOfRange { what: &'static str, detail: String },
    #[error("upload stalled: no message for {timeout_ms} ms")]
    Stalled { timeout_ms: u64 },
    #[error(
        "upload too slow: {received} bytes in {elapsed_ms} ms, below the minimum of {min_rate} bytes/s"
    )]
    TooSlow {
        received: u64,
        elapsed_ms: u64,
        min_rate: u64,
    },
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("the client went away")]
    Cancelled,
    #[error("stream error: {}", .0.message())]
    Stream(tonic::Status),
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata database: {0}")]
    Db(#[from] DbError),
    #[error("metadata of piece {piece} is corrupt: {detail}")]
    Corrupt { piece: String, detail: &'static str },
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("background task failed: {0}")]
    Task(String),
    #[error("discovery (DHT): {0}")]
    Dht(#[from] satellite_free_discovery::DhtError),
    #[error("TLS: {0}")]
    Tls(#[from] shoal_proto::tls::TlsError),
}

impl Error {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// The label under which this failure is counted in `shoal_node_request_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Wire(_) => "malformed",
            Error::WrongNode { .. } => "wrong_node",
            Error::Stale(_) => "stale_order",
            Error::NotOwner(_) => "not_owner",
            Error::NotFound(_) => "not_found",
            Error::AlreadyExists(_) => "already_exists",
            Error::Busy(_) => "busy",
            Error::NoSpace { .. } => "no_space",
            Error::OwnerQuota { .. } => "owner_quota",
            Error::ZeroMaxSize => "zero_max_size",
            Error::TooManyStreams { .. } => "too_many_streams",
            Error::RateLimited { .. } => "rate_limited",
            Error::Protocol(_) => "protocol",
            Error::ChunkTooLarge { .. } => "chunk_too_large",
            Error::OverMaxSize { .. } => "over_max_size",
            Error::SizeMismatch { .. } => "size_mismatch",
            Error::HashMismatch => "hash_mismatch",
            Error::TrailerMismatch(_) => "trailer_mismatch",
            Error::Expired { .. } => "expired",
            Error::LeaseTooLong { .. } => "lease_too_long",
            Error::Replay(crate::replay::ReplayError::Replayed) => "replayed",
            Error::Replay(crate::replay::ReplayError::Full { .. }) => "replay_set_full",
            Error::Replay(crate::replay::ReplayError::OwnerFull { .. }) => "replay_owner_full",
            Error::Replay(crate::replay::ReplayError::GroupFull { .. }) => "replay_group_full",
            Error::OutOfRange { .. } => "out_of_range",
            Error::Stalled { .. } => "stalled",
            Error::TooSlow { .. } => "too_slow",
            Error::ShuttingDown => "shutdown",
            Error::Cancelled => "cancelled",
            Error::Stream(_) => "stream",
            Error::Io { .. } => "io",
            Error::Db(DbError::TagTooLong { .. }) => "tag_too_long",
            Error::Db(_) => "db",
            Error::Corrupt { .. } => "corrupt",
            Error::Identity(_)
            | Error::Metrics(_)
            | Error::Task(_)
            | Error::Dht(_)
            | Error::Tls(_) => "internal",
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Code;
        let code = match &e {
            // Keep the transport's own code (e.g. OUT_OF_RANGE for an oversize message).
            Error::Stream(s) => return tonic::Status::new(s.code(), e.to_string()),
            Error::Wire(_)
            | Error::WrongNode { .. }
            | Error::Stale(_)
            | Error::Protocol(_)
            | Error::ChunkTooLarge { .. }
            | Error::OverMaxSize { .. }
            | Error::SizeMismatch { .. }
            | Error::HashMismatch
            | Error::TrailerMismatch(_)
            | Error::Expired { .. }
            | Error::Db(DbError::TagTooLong { .. })
            | Error::ZeroMaxSize => Code::InvalidArgument,
            Error::NotOwner(_) => Code::PermissionDenied,
            // The uplink acts on these two codes: it renews at the node's limit (given in
            // the `x-shoal-max-lease-ms` metadata) and never retries a replayed order.
            Error::LeaseTooLong { max_lease_ms, .. } => {
                let mut status = tonic::Status::new(Code::FailedPrecondition, e.to_string());
                if let Ok(v) = max_lease_ms.to_string().parse() {
                    status
                        .metadata_mut()
                        .insert(shoal_proto::messages::MAX_LEASE_METADATA, v);
                }
                return status;
            }
            Error::Replay(crate::replay::ReplayError::Replayed) => Code::Aborted,
            Error::Replay(
                crate::replay::ReplayError::Full { .. }
                | crate::replay::ReplayError::OwnerFull { .. }
                | crate::replay::ReplayError::GroupFull { .. },
            ) => Code::ResourceExhausted,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Busy(_) | Error::ShuttingDown => Code::Unavailable,
            Error::NoSpace { .. }
            | Error::OwnerQuota { .. }
            | Error::TooManyStreams { .. }
            | Error::RateLimited { .. } => Code::ResourceExhausted,
            Error::OutOfRange { .. } => Code::OutOfRange,
            Error::Stalled { .. } | Error::TooSlow { .. } => Code::DeadlineExceeded,
            Error::Cancelled => Code::Cancelled,
            Error::Corrupt { .. } => Code::DataLoss,
            Error::Io { .. }
            | Error::Db(_)
            | Error::Identity(_)
            | Error::Metrics(_)
            | Error::Task(_)
            | Error::Dht(_)
            | Error::Tls(_) => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}

/// Why configuration or setup failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{source_name} {key}: {reason}")]
    Invalid {
        source_name: &'static str,
        key: String,
        reason: String,
    },
    #[error(
        "{dir} is already set up; pass --force to redo the setup (this deletes every stored piece)"
    )]
    AlreadySetUp { dir: PathBuf },
    #[error("no allocation given: pass --allocate SIZE (for example 500GB)")]
    NoAllocation,
    #[error("{dir} is not set up: run `storage-node setup --dir {dir} --allocate SIZE` first")]
    NotSetUp { dir: PathBuf },
    #[error(transparent)]
    Identity(#[from] IdentityError),
}
