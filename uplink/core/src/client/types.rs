//! The values of the [`Uplink`](super::Uplink) API: upload options and reports, and
//! content stored but not yet in the catalog.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::catalog::{Content, ObjectEntry, PartInfo, SegmentInfo};
use crate::codec::Scheme;
use crate::crypto::{ObjectId, ObjectKey};
use crate::pieces::Progress;

/// Options of one upload.
#[derive(Default, Clone)]
pub struct PutOptions {
    /// Expected size, when known (files); lets small objects get small pieces exactly.
    pub size_hint: Option<u64>,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Pieces expire (and the object with them) after this long.
    pub expires: Option<Duration>,
    /// Overrides the configured scheme for this object.
    pub scheme: Option<Scheme>,
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for PutOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutOptions")
            .field("size_hint", &self.size_hint)
            .field("content_type", &self.content_type)
            .field("expires", &self.expires)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

/// What an upload did.
#[derive(Debug, Clone)]
pub struct PutReport {
    pub entry: ObjectEntry,
    /// Scheme asked for.
    pub requested: Scheme,
    /// Scheme used for the segments (`None` for inline objects). Differs from
    /// `requested` when the network was too small.
    pub used: Option<Scheme>,
}

/// Content stored by [`Uplink::stage`](super::Uplink::stage) and not yet in the catalog.
#[derive(Debug)]
pub struct Staged {
    pub(super) bucket: String,
    pub(super) key: String,
    pub(super) object_id: ObjectId,
    pub(super) object_key: ObjectKey,
    pub(super) content: Content,
    pub(super) size: u64,
    pub(super) created_ms: u64,
    pub(super) expires_ms: Option<u64>,
    pub(super) requested: Scheme,
    pub(super) used: Option<Scheme>,
}

impl Staged {
    /// Plaintext bytes stored.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub(super) fn segments(&self) -> &[SegmentInfo] {
        match &self.content {
            Content::Segments(s) | Content::Parts { segments: s, .. } => s,
            Content::Inline { .. } => &[],
        }
    }
}

/// One part of a multipart upload, stored on the nodes by [`Uplink::stage_part`](super::Uplink::stage_part) and
/// not yet in the catalog. Serializable, so that the S3 gateway can keep it on disk
/// until the upload completes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StagedPart {
    pub info: PartInfo,
    pub segments: Vec<SegmentInfo>,
    /// When the part was stored (unix ms).
    pub staged_ms: u64,
}
