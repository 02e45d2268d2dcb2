//! What the stages of an upload pass each other: the object being uploaded, the
//! messages to a piece upload, its slot, ticket and outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use shoal_proto::messages::Receipt;
use shoal_proto::{NodeId, PieceHash, PieceId, Signed};
use tokio::sync::mpsc;

use crate::catalog::tag::{BlobTag, SegmentTag};
use crate::codec::Scheme;
use crate::crypto::BlockCipher;
use crate::error::Error;
use crate::pieces::service::Progress;
use crate::select::NodeStats;
use crate::store::{NodeCandidate, PieceError};

pub(crate) struct ObjectUpload<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub cipher: &'a BlockCipher,
    pub scheme: Scheme,
    pub expires_ms: u64,
    pub size_hint: Option<u64>,
    pub progress: Option<Progress>,
    /// Overrides [`crate::UplinkConfig::allow_smaller_scheme`] (catalog blobs always
    /// take what the network can hold rather than fail the command).
    pub allow_smaller: Option<bool>,
    /// Set for catalog blobs: every piece's trailer then carries its sealed tag
    /// ([`crate::catalog::tag`]), so that the blob can be found on the nodes alone.
    pub tag: Option<BlobTag>,
}

impl ObjectUpload<'_> {
    pub(super) fn err(&self, segment: u32, reason: impl Into<String>) -> Error {
        Error::Upload {
            bucket: self.bucket.to_string(),
            key: self.key.to_string(),
            segment,
            reason: reason.into(),
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) struct SegmentPlan {
    pub(super) index: u32,
    pub(super) scheme: Scheme,
    pub(super) shard: usize,
    pub(super) piece_bound: u64,
    pub(super) expected_blocks: u64,
    pub(super) nodes: Vec<NodeCandidate>,
    /// The object's candidates when the segment was planned, and the uplink's history
    /// with them: where replacements for failed pieces come from.
    pub(super) pool: Vec<NodeCandidate>,
    pub(super) history: Arc<HashMap<NodeId, NodeStats>>,
}

#[derive(Debug, Clone)]
pub(super) enum PieceMsg {
    Shard(Bytes),
    /// The end of the data; with the segment's part of the piece's tag, if it has one.
    Finish(Option<SegmentTag>),
}

pub(super) struct Slot {
    pub(super) node: NodeId,
    pub(super) tx: Option<mpsc::Sender<PieceMsg>>,
}

pub(super) struct PieceOutcome {
    pub(super) index: u16,
    pub(super) node: NodeCandidate,
    pub(super) piece_id: PieceId,
    pub(super) result: Result<Signed<Receipt>, PieceError>,
}

/// How far one piece upload's data has gone; shared by its stream and the commit, and
/// changed under one lock so that a piece is either cancelled before its trailer or
/// complete, never both.
#[derive(Debug, Clone, Copy, Default)]
pub(super) enum Handover {
    /// Data is still being sent; no trailer yet.
    #[default]
    Sending,
    /// Every byte and the signed trailer were handed to the transport: the node may
    /// store the piece (and must answer with a receipt for this size and hash).
    Complete { size: u64, hash: PieceHash },
    /// Given up before the trailer: the stream ends without it and the node discards
    /// the piece.
    Cancelled,
}

/// One started piece upload of a segment, as the commit and the reaper see it.
pub(super) struct PieceTicket {
    pub(super) index: u16,
    pub(super) node: NodeCandidate,
    pub(super) task: tokio::task::AbortHandle,
    pub(super) handover: Arc<Mutex<Handover>>,
}
