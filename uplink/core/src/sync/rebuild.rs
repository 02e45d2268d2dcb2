//! `uplink catalog rebuild`: the catalog back from the nodes alone, when the DHT has
//! lost every record of the owner (the last resort; a normal pull needs the records).
//!
//! 1. **List.** Every node the discovery layer knows is asked, on orders signed by the
//!    owner key, for the owner's pieces, a page of [`LIST_PAGE`] at a time (each page
//!    under the piece deadline, [`LIST_PARALLELISM`] nodes at once, at most
//!    [`MAX_PAGES_PER_NODE`] pages from one node).
//! 2. **Open.** Catalog pieces carry a tag sealed with the access ([`crate::catalog::tag`]);
//!    a tag that does not open (a data piece has none; a node may make one up) is
//!    skipped. Expired pieces and pieces whose listed size is not what their tag implies
//!    are skipped too.
//! 3. **Group** ([`group`], plain code): tags name their blob, segment and piece index,
//!    so pieces fall into [`BlobRef`]s; a blob is complete when its segments hold its
//!    size and each has `k` pieces.
//! 4. **Fetch and merge.** Per writer, its newest recoverable snapshot, then every delta
//!    after what the snapshots cover, each fetched and checked as a pull checks them
//!    (AES-GCM blocks, piece hashes, that a delta is the writer's delta `seq`). The
//!    catalog is a CRDT, so merging more than a head chain (a delta re-sent after a
//!    failed publish) changes nothing a pull would not.
//! 5. **Republish.** Each writer's head record (pointing at its newest delta) and the
//!    writers record, so that every other config dir and a fresh import work again.
//!
//! What cannot be recovered (a writer's deltas missing from the nodes, a blob without
//! `k` pieces anywhere) is reported by name; the rest is merged regardless.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;
use shoal_proto::PieceId;
use shoal_proto::limits::MAX_LIST_PIECES;
use shoal_proto::messages::ListedPiece;

use super::CatalogSync;
use crate::catalog::log::{self, Blob, BlobRef, Head, HeadDelta, SnapshotRef};
use crate::catalog::tag::{BlobKind, BlobTag, PieceTag, SegmentTag, TagSealer};
use crate::catalog::{SegmentInfo, WriterId};
use crate::crypto::{ObjectId, sealed_len};
use crate::segment::Layout;
use crate::store::{NodeAddress, NodeCandidate, PieceError, PiecePlacement};
use crate::sync::SyncError;

/// Pieces asked for per listing page (the protocol's most).
pub const LIST_PAGE: u32 = MAX_LIST_PIECES;
/// Nodes listed at once.
pub const LIST_PARALLELISM: usize = 8;
/// Pages read from one node at most (ten million pieces of one owner).
pub const MAX_PAGES_PER_NODE: usize = 10_000;
/// Nodes asked for from the discovery layer: all it can find.
const ALL_NODES: usize = 100_000;

/// One catalog piece a node listed, its tag opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPiece {
    pub node: NodeAddress,
    pub piece_id: PieceId,
    pub tag: PieceTag,
}

/// A blob put back together from its pieces' tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundBlob {
    pub tag: BlobTag,
    pub blob: BlobRef,
}

impl FoundBlob {
    pub fn name(&self) -> String {
        blob_name(&self.tag)
    }
}

fn blob_name(t: &BlobTag) -> String {
    match t.kind {
        BlobKind::Delta => format!("delta {} of writer {}", t.seq, t.writer),
        BlobKind::Snapshot => format!("snapshot at delta {} of writer {}", t.seq, t.writer),
        BlobKind::Chunk => format!(
            "snapshot chunk in blob {} of writer {}",
            shoal_proto::ids::to_hex(&t.object_id.0),
            t.writer
        ),
    }
}

/// Something the rebuild found a trace of but could not get back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unrecovered {
    pub what: String,
    pub reason: String,
}

/// What [`group`] made of the pieces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grouped {
    /// Complete blobs, by writer, kind and seq.
    pub blobs: Vec<FoundBlob>,
    /// Blobs with too few pieces or inconsistent tags.
    pub incomplete: Vec<Unrecovered>,
}

/// The size a piece of `seg` has: what its tag implies (see [`crate::catalog::tag`]).
pub fn piece_size(seg: &SegmentTag) -> u64 {
    Layout {
        k: usize::from(seg.scheme.k),
        shard_size: seg.shard_size as usize,
        sealed_size: sealed_len(seg.plain_size),
    }
    .piece_size()
}

/// Puts pieces together into blobs. A blob is complete when its segments are numbered
/// from 0 without a gap, hold exactly the blob's size, and each has at least `k`
/// distinct pieces. All tags of a blob (of a segment) must agree on what it is: they are
/// authentic, so a disagreement can only be a bug, and such a blob is reported rather
/// than guessed at. A piece index listed twice (a node listing another node's piece)
/// keeps its first placement; the download's checks sort out a wrong one.
pub fn group(pieces: Vec<FoundPiece>) -> Grouped {
    struct Seg {
        tag: SegmentTag,
        pieces: BTreeMap<u16, PiecePlacement>,
    }
    struct Group {
        tag: BlobTag,
        segments: BTreeMap<u32, Seg>,
        conflict: Option<&'static str>,
    }
    let mut groups: BTreeMap<[u8; 16], Group> = BTreeMap::new();
    for p in pieces {
        let seg = p.tag.segment;
        let g = groups.entry(seg.blob.object_id.0).or_insert_with(|| Group {
            tag: seg.blob,
            segments: BTreeMap::new(),
            conflict: None,
        });
        if g.tag != seg.blob {
            g.conflict = Some("its pieces disagree on what the blob is");
            continue;
        }
        let s = g.segments.entry(seg.segment).or_insert_with(|| Seg {
            tag: seg,
            pieces: BTreeMap::new(),
        });
        if s.tag != seg {
            g.conflict = Some("its pieces disagree on a segment's layout");
            continue;
        }
        s.pieces.entry(p.tag.piece_index).or_insert(PiecePlacement {
            index: p.tag.piece_index,
            node_id: p.node.id.0,
            address: p.node.address,
            piece_id: p.piece_id.0,
            piece_hash: p.tag.piece_hash,
        });
    }
    let mut out = Grouped::default();
    for (_, g) in groups {
        let what = blob_name(&g.tag);
        let lost = |reason: String| Unrecovered {
            what: what.clone(),
            reason,
        };
        if let Some(reason) = g.conflict {
            out.incomplete.push(lost(reason.into()));
            continue;
        }
        let mut segments = Vec::with_capacity(g.segments.len());
        let mut problem = None;
        for (expected, (index, s)) in (0u32..).zip(g.segments) {
            if index != expected {
                problem = Some(format!("segment {expected} has no piece left on any node"));
                break;
            }
            let k = usize::from(s.tag.scheme.k);
            if s.pieces.len() < k {
                problem = Some(format!(
                    "segment {index} has {} of the {k} pieces it needs",
                    s.pieces.len()
                ));
                break;
            }
            segments.push(SegmentInfo {
                index,
                plain_size: s.tag.plain_size,
                sealed_size: sealed_len(s.tag.plain_size),
                codec: s.tag.codec,
                scheme: s.tag.scheme,
                shard_size: s.tag.shard_size,
                piece_size: piece_size(&s.tag),
                pieces: s.pieces.into_values().collect(),
            });
        }
        let held: u64 = segments.iter().map(|s| s.plain_size).sum();
        if problem.is_none() && held != g.tag.blob_size {
            problem = Some(format!(
                "its segments found hold {held} of its {} bytes",
                g.tag.blob_size
            ));
        }
        match problem {
            Some(reason) => out.incomplete.push(lost(reason)),
            None => out.blobs.push(FoundBlob {
                tag: g.tag,
                blob: BlobRef {
                    object_id: ObjectId(g.tag.object_id.0),
                    size: g.tag.blob_size,
                    segments,
                },
            }),
        }
    }
    out.blobs
        .sort_by_key(|b| (b.tag.writer, b.tag.kind, b.tag.seq, b.tag.object_id.0));
    out
}

/// What the rebuild found of one writer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriterFound {
    /// The snapshot merged (the seq of the delta it was taken with), if any.
    pub snapshot: Option<u64>,
    /// Deltas merged.
    pub deltas: Vec<u64>,
    /// The newest delta, which the republished head record names.
    pub head: Option<u64>,
    /// Whether its head record is in the DHT again.
    pub head_republished: bool,
}

/// What `uplink catalog rebuild` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RebuildReport {
    pub nodes_asked: usize,
    pub nodes_answered: usize,
    /// Pieces of this owner the nodes listed (data and catalog).
    pub pieces_listed: u64,
    /// Of those, catalog pieces whose tag opened.
    pub catalog_pieces: u64,
    /// Tags that did not open (another access's, or made up), expired or wrongly sized
    /// pieces: skipped.
    pub pieces_skipped: u64,
    pub blobs_found: usize,
    pub blobs_merged: usize,
    pub changes_applied: usize,
    pub writers: BTreeMap<WriterId, WriterFound>,
    pub buckets: usize,
    pub objects: usize,
    /// Whether the writers record is in the DHT again.
    pub writers_republished: bool,
    /// What could not be recovered, and why (nodes that did not answer included).
    pub unrecovered: Vec<Unrecovered>,
}

/// One node's listing: its catalog pieces (tags opened) and counts.
struct NodeListing {
    found: Vec<FoundPiece>,
    listed: u64,
    skipped: u64,
}

impl CatalogSync {
    /// Every page of the owner's pieces on `node`, tags opened.
    async fn list_node(
        &self,
        node: NodeCandidate,
        sealer: &TagSealer,
        now_ms: u64,
    ) -> Result<NodeListing, PieceError> {
        let address = node.address();
        let mut out = NodeListing {
            found: Vec::new(),
            listed: 0,
            skipped: 0,
        };
        let mut after: Option<PieceId> = None;
        for _ in 0..MAX_PAGES_PER_NODE {
            let page: Vec<ListedPiece> = self.pieces.list_page(address, after, LIST_PAGE).await?;
            let full = page.len() >= LIST_PAGE as usize;
            after = page.last().map(|p| p.piece_id);
            for p in page {
                out.listed += 1;
                if p.tag.is_empty() {
                    continue;
                }
                match sealer.open(&p.piece_id, &p.tag) {
                    Ok(tag) if p.expires_at_ms > now_ms && p.size == piece_size(&tag.segment) => {
                        out.found.push(FoundPiece {
                            node: address,
                            piece_id: p.piece_id,
                            tag,
                        });
                    }
                    _ => out.skipped += 1,
                }
            }
            if !full || after.is_none() {
                return Ok(out);
            }
        }
        tracing::warn!(node = %node.id, pages = MAX_PAGES_PER_NODE, "listing cut off");
        Ok(out)
    }

    /// Fetches `b` and checks it is what its tag says.
    async fn fetch_found(self: &Arc<Self>, b: &FoundBlob) -> Result<Blob, SyncError> {
        let what = b.name();
        let blob = self.get_blob(&what, &b.blob).await?;
        let t = &b.tag;
        let ok = match &blob {
            Blob::Delta(d) => t.kind == BlobKind::Delta && d.writer == t.writer && d.seq == t.seq,
            Blob::Snapshot(s) => {
                t.kind == BlobKind::Snapshot && s.covers.get(&t.writer) == Some(&t.seq)
            }
            Blob::Chunk(_) => t.kind == BlobKind::Chunk,
        };
        if !ok {
            return Err(SyncError::WrongBlob {
                what,
                reason: "its contents are not what its pieces' tags say".into(),
            });
        }
        Ok(blob)
    }

    pub(crate) async fn rebuild(self: &Arc<Self>) -> Result<RebuildReport, crate::Error> {
        let Some(sync) = self.sync() else {
            return Err(crate::Error::Sync(SyncError::NoNetworkCatalog));
        };
        let mut report = RebuildReport::default();
        let nodes = self.pieces.nodes().sample(ALL_NODES).await?;
        report.nodes_asked = nodes.len();
        let sealer = TagSealer::new(self.access.catalog_key());
        let now = shoal_proto::time::unix_ms();
        let mut listings = futures::stream::iter(nodes)
            .map(|n| {
                let sealer = &sealer;
                async move { (n.id, self.list_node(n, sealer, now).await) }
            })
            .buffer_unordered(LIST_PARALLELISM);
        let mut found = Vec::new();
        while let Some((id, r)) = listings.next().await {
            match r {
                Ok(l) => {
                    report.nodes_answered += 1;
                    report.pieces_listed += l.listed;
                    report.pieces_skipped += l.skipped;
                    report.catalog_pieces += l.found.len() as u64;
                    found.extend(l.found);
                }
                Err(e) => report.unrecovered.push(Unrecovered {
                    what: format!("the pieces on node {id}"),
                    reason: e.to_string(),
                }),
            }
        }
        drop(listings);
        let grouped = group(found);
        report.blobs_found = grouped.blobs.len();
        report.unrecovered.extend(grouped.incomplete);

        let mut by_writer: BTreeMap<WriterId, Vec<FoundBlob>> = BTreeMap::new();
        for b in grouped.blobs {
            by_writer.entry(b.tag.writer).or_default().push(b);
        }
        let mut applied = crate::sync::applied(self)?;
        // Snapshots first: each writer's newest that can be fetched.
        for (w, blobs) in &by_writer {
            let mut snaps: Vec<&FoundBlob> = blobs
                .iter()
                .filter(|b| b.tag.kind == BlobKind::Snapshot)
                .collect();
            snaps.sort_by_key(|b| std::cmp::Reverse(b.tag.seq));
            for b in snaps {
                match self.fetch_found(b).await {
                    Ok(Blob::Snapshot(s)) => {
                        // The tree under the manifest, through the chunks it names.
                        match self.apply_tree(&s, 0, None).await {
                            Ok(n) => report.changes_applied += n,
                            Err(SyncError::Catalog(e)) => return Err(SyncError::Catalog(e).into()),
                            Err(e) => {
                                report.unrecovered.push(Unrecovered {
                                    what: b.name(),
                                    reason: e.to_string(),
                                });
                                continue;
                            }
                        }
                        for (cw, seq) in &s.covers {
                            let e = applied.entry(*cw).or_insert(0);
                            *e = (*e).max(*seq);
                        }
                        crate::sync::set_applied(self, &applied)?;
                        report.blobs_merged += 1;
                        report.writers.entry(*w).or_default().snapshot = Some(b.tag.seq);
                        break;
                    }
                    Ok(Blob::Delta(_) | Blob::Chunk(_)) => {}
                    Err(e) => report.unrecovered.push(Unrecovered {
                        what: b.name(),
                        reason: e.to_string(),
                    }),
                }
            }
        }
        // Then every writer's deltas after what is merged, and its newest for the head.
        let mut newest_snapshot: Option<SnapshotRef> = None;
        let mut heads: Vec<Head> = Vec::new();
        // The newest writers record version any delta names: the record put back must
        // be newer, or every reader would take it as stale.
        let mut writers_seq = 0;
        for (w, blobs) in &by_writer {
            let merged = applied.get(w).copied().unwrap_or(0);
            let mut deltas: Vec<&FoundBlob> = blobs
                .iter()
                .filter(|b| b.tag.kind == BlobKind::Delta)
                .collect();
            deltas.sort_by_key(|b| b.tag.seq);
            let Some(top) = deltas.last().map(|b| b.tag.seq) else {
                continue;
            };
            let entry = report.writers.entry(*w).or_default();
            let mut got: BTreeSet<u64> = BTreeSet::new();
            let mut spans: Vec<(u64, u64)> = Vec::new();
            let mut head: Option<Head> = None;
            for b in deltas
                .iter()
                .filter(|b| b.tag.seq > merged || b.tag.seq == top)
            {
                match self.fetch_found(b).await {
                    Ok(Blob::Delta(d)) => {
                        writers_seq = writers_seq.max(d.writers_seq);
                        for c in &d.changes {
                            report.changes_applied += usize::from(self.catalog.apply_remote(c)?);
                        }
                        if let Some(s) = &d.snapshot
                            && newest_snapshot
                                .as_ref()
                                .is_none_or(|n| n.taken_at < s.taken_at)
                        {
                            newest_snapshot = Some(s.clone());
                        }
                        report.blobs_merged += 1;
                        if got.insert(d.seq) {
                            entry.deltas.push(d.seq);
                        }
                        // A delta after inline ones carries their changes.
                        spans.push((d.prev_seq() + 1, d.seq));
                        if d.seq == top {
                            head = Some(Head {
                                writer: *w,
                                seq: top,
                                delta: HeadDelta::Blob(b.blob.clone()),
                            });
                        }
                    }
                    Ok(Blob::Snapshot(_) | Blob::Chunk(_)) => {}
                    Err(e) => report.unrecovered.push(Unrecovered {
                        what: b.name(),
                        reason: e.to_string(),
                    }),
                }
            }
            for seq in merged + 1..=top {
                if !got.contains(&seq) && !spans.iter().any(|(a, b)| (*a..=*b).contains(&seq)) {
                    report.unrecovered.push(Unrecovered {
                        what: format!("delta {seq} of writer {w}"),
                        reason: "not on any node that answered (or too few of its pieces)".into(),
                    });
                }
            }
            if let Some(h) = head {
                entry.head = Some(h.seq);
                let e = applied.entry(*w).or_insert(0);
                *e = (*e).max(h.seq);
                heads.push(h);
            }
        }
        crate::sync::set_applied(self, &applied)?;
        if let Some(s) = newest_snapshot
            && !s.is_ahead_of(&applied)
        {
            crate::sync::remember_snapshot(self, &s)?;
        }
        self.catalog.flush()?;

        // Back into the DHT: each head (unless a newer one is there), then the writers.
        for h in heads {
            let republished = self.republish_head(sync, &h).await;
            let entry = report.writers.entry(h.writer).or_default();
            match republished {
                Ok(()) => entry.head_republished = true,
                Err(e) => report.unrecovered.push(Unrecovered {
                    what: format!("the head record of writer {}", h.writer),
                    reason: e.to_string(),
                }),
            }
        }
        let known: BTreeSet<WriterId> = applied.keys().copied().collect();
        self.catalog.update_sync(|tx| {
            let seen = tx.sync_value::<u64>(super::WRITERS_SEEN)?.unwrap_or(0);
            tx.set_sync_value(super::WRITERS_SEEN, &seen.max(writers_seq))
        })?;
        match self.register(sync, &known).await {
            Ok(_) => report.writers_republished = true,
            Err(e) => report.unrecovered.push(Unrecovered {
                what: "the writers record".into(),
                reason: e.to_string(),
            }),
        }
        let buckets = self.catalog.buckets()?;
        report.buckets = buckets.len();
        for b in &buckets {
            report.objects += self.catalog.objects(&b.name, "")?.len();
        }
        Ok(report)
    }

    /// Stores `h` as writer `h.writer`'s head record, unless the DHT already holds one
    /// as new or newer.
    async fn republish_head(
        self: &Arc<Self>,
        sync: &super::SyncState,
        h: &Head,
    ) -> Result<(), SyncError> {
        let key = self.catalog_key();
        let salt = log::head_salt(key, &h.writer);
        let what = format!("head record of writer {}", h.writer);
        if let Some(r) = self.get_record(sync, &what, &salt).await?
            && r.seq >= h.seq
        {
            return Ok(());
        }
        let value = log::seal_head(key, h)?;
        self.put_record(sync, &what, salt, h.seq, value, None)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::codec::{CodecKind, Scheme};
    use shoal_proto::NodeId;

    fn seg(blob: BlobTag, segment: u32, plain_size: u64) -> SegmentTag {
        SegmentTag {
            blob,
            segment,
            plain_size,
            codec: CodecKind::default(),
            scheme: Scheme::new(2, 3, 3, 4).unwrap(),
            shard_size: 4096,
        }
    }

    fn blob(seq: u64, size: u64) -> BlobTag {
        BlobTag {
            writer: WriterId([1; 16]),
            kind: BlobKind::Delta,
            seq,
            object_id: ObjectId([seq as u8; 16]),
            blob_size: size,
        }
    }

    fn piece(s: SegmentTag, index: u16) -> FoundPiece {
        FoundPiece {
            node: NodeAddress {
                id: NodeId([index as u8 + 1; 32]),
                address: ([127, 0, index as u8 + 1, 1], 7000).into(),
            },
            piece_id: PieceId([index as u8 + 50 + s.segment as u8; 32]),
            tag: PieceTag {
                segment: s,
                piece_index: index,
                piece_hash: [index as u8; 32],
            },
        }
    }

    #[test]
    fn pieces_group_into_blobs_with_their_segments_in_order() {
        let b = blob(3, 150_000);
        let (s0, s1) = (seg(b, 0, 100_000), seg(b, 1, 50_000));
        // Out of order, one index listed twice, one piece short of all four.
        let pieces = vec![
            piece(s1, 3),
            piece(s0, 0),
            piece(s1, 0),
            piece(s0, 2),
            piece(s0, 2),
        ];
        let g = group(pieces);
        assert!(g.incomplete.is_empty(), "{:?}", g.incomplete);
        assert_eq!(g.blobs.len(), 1);
        let r = &g.blobs[0].blob;
        assert_eq!((r.object_id, r.size), (ObjectId([3; 16]), 150_000));
        let idx: Vec<Vec<u16>> = r
            .segments
            .iter()
            .map(|s| s.pieces.iter().map(|p| p.index).collect())
            .collect();
        assert_eq!(idx, vec![vec![0, 2], vec![0, 3]]);
        assert_eq!(r.segments[0].sealed_size, sealed_len(100_000));
        assert_eq!(r.segments[0].piece_size, piece_size(&s0));
        assert_eq!(r.segments[1].pieces[1].piece_hash, [3; 32]);
    }

    #[test]
    fn a_blob_short_of_pieces_segments_or_bytes_is_reported_not_guessed() {
        let b = blob(1, 100);
        let few = group(vec![piece(seg(b, 0, 100), 0)]);
        assert!(few.blobs.is_empty());
        assert!(few.incomplete[0].reason.contains("1 of the 2"), "{few:?}");
        // Segment 0 lost entirely.
        let b2 = blob(2, 200);
        let gap = group(vec![piece(seg(b2, 1, 100), 0), piece(seg(b2, 1, 100), 1)]);
        assert!(gap.incomplete[0].reason.contains("segment 0"), "{gap:?}");
        // The last segment lost: the bytes do not add up.
        let short = group(vec![piece(seg(b2, 0, 100), 0), piece(seg(b2, 0, 100), 1)]);
        assert!(
            short.incomplete[0].reason.contains("100 of its 200"),
            "{short:?}"
        );
        // Pieces that disagree on the layout.
        let mut other = seg(b, 0, 100);
        other.shard_size = 8192;
        let conflict = group(vec![
            piece(seg(b, 0, 100), 0),
            piece(seg(b, 0, 100), 1),
            piece(other, 2),
        ]);
        assert!(conflict.blobs.is_empty());
        assert!(conflict.incomplete[0].reason.contains("disagree"));
        // Each blob on its own: a complete one next to these still comes back.
        let ok = blob(4, 100);
        let mixed = group(vec![
            piece(seg(ok, 0, 100), 0),
            piece(seg(ok, 0, 100), 1),
            piece(seg(b, 0, 100), 0),
        ]);
        assert_eq!(mixed.blobs.len(), 1);
        assert_eq!(mixed.incomplete.len(), 1);
        assert_eq!(
            mixed.blobs[0].name(),
            format!("delta 4 of writer {}", ok.writer)
        );
    }
}
