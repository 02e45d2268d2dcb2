//! A piece being received ([`PendingPiece`]): its reservation, its temp file or inline
//! bytes, its running hash, and the commit that makes it durable (see the group-commit
//! rules in [`crate::store`]).

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use shoal_proto::piece_hash::PieceHasher;
use shoal_proto::{PieceHash, PieceId, PublicKey};

use super::{PIECE_OVERHEAD, PieceStore, RESERVE_STEP, sync_dir};
use crate::error::Error;
use crate::meta::PieceMeta;
use crate::piece_file::PieceWriter;

/// A piece being received: its reservation, temp file (or, if inline, its bytes so far)
/// and running hash. Dropping it before [`PendingPiece::commit`] removes the temp file
/// and releases the reservation.
#[derive(Debug)]
pub struct PendingPiece {
    pub(super) store: Arc<PieceStore>,
    pub(super) piece: PieceId,
    pub(super) owner: PublicKey,
    pub(super) expires_at_ms: u64,
    pub(super) max_size: u64,
    pub(super) reserved: u64,
    pub(super) tmp_path: PathBuf,
    pub(super) writer: Option<PieceWriter>,
    /// The bytes of an inline piece (`max_size` at most [`super::INLINE_MAX`]); no temp file.
    pub(super) inline: Option<Vec<u8>>,
    pub(super) hasher: PieceHasher,
    pub(super) meta_committed: bool,
    /// The owner's tag from the trailer (see [`PieceMeta::tag`]), stored with the
    /// metadata at commit.
    pub(super) tag: Vec<u8>,
}

impl PendingPiece {
    pub fn piece_id(&self) -> &PieceId {
        &self.piece
    }

    /// Sets the tag the piece is stored with (from its upload order); refuses one over
    /// [`crate::meta::MAX_TAG`] bytes.
    pub fn set_tag(&mut self, tag: Vec<u8>) -> Result<(), Error> {
        if tag.len() > crate::meta::MAX_TAG {
            return Err(Error::Db(crate::meta::DbError::TagTooLong {
                len: tag.len(),
            }));
        }
        self.tag = tag;
        Ok(())
    }

    /// Whether this piece is being written with `O_DIRECT`.
    pub fn is_direct(&self) -> bool {
        self.writer.as_ref().is_some_and(PieceWriter::is_direct)
    }

    pub(super) fn note_refusal(&mut self) {
        if let Some(e) = self.writer.as_mut().and_then(PieceWriter::take_refusal) {
            self.store.direct_refused(&self.tmp_path, &e);
        }
    }

    /// Whether this piece is received in memory (see [`super::INLINE_MAX`]): its writes do no
    /// I/O, so they need no blocking thread.
    pub fn is_inline(&self) -> bool {
        self.inline.is_some()
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.hasher.size()
    }

    /// Appends data; refuses to go past the order's `max_size`, and past the space or
    /// the owner's limit when the data outgrows its reservation (which then grows by
    /// whole [`RESERVE_STEP`]s).
    pub fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        let end = self.hasher.size() + data.len() as u64;
        if end > self.max_size {
            return Err(Error::OverMaxSize {
                max_size: self.max_size,
            });
        }
        let covered = self.reserved.saturating_sub(PIECE_OVERHEAD);
        if end > covered {
            let target = end.div_ceil(RESERVE_STEP).saturating_mul(RESERVE_STEP);
            let extra = target.min(self.max_size) - covered;
            self.store.grow_reservation(&self.owner, extra)?;
            self.reserved += extra;
        }
        if let Some(bytes) = self.inline.as_mut() {
            bytes.extend_from_slice(data);
            self.hasher.update(data);
            return Ok(());
        }
        let writer = self
            .writer
            .as_mut()
            .ok_or(Error::Protocol("upload already closed"))?;
        let written = writer.write(data);
        self.note_refusal();
        written.map_err(|e| Error::io("cannot write", &self.tmp_path, e))?;
        self.hasher.update(data);
        Ok(())
    }

    /// Checks the data against the trailer's size and hash, then makes the piece durable
    /// and visible (see the module docs for the order of steps).
    pub fn commit(
        mut self,
        declared_size: u64,
        declared_hash: &PieceHash,
        now_ms: u64,
    ) -> Result<PieceMeta, Error> {
        let received = self.hasher.size();
        if declared_size != received {
            return Err(Error::SizeMismatch {
                declared: declared_size,
                received,
            });
        }
        let info = self.hasher.clone().finish();
        if info.root() != *declared_hash {
            return Err(Error::HashMismatch);
        }
        if let Some(writer) = self.writer.as_mut() {
            // Writes the padded tail and cuts the file to its exact size: what is
            // fsynced next is the piece, byte for byte.
            let finished = writer.finish();
            self.note_refusal();
            finished.map_err(|e| Error::io("cannot write", &self.tmp_path, e))?;
        }
        if let Some(writer) = self.writer.take() {
            writer
                .sync()
                .map_err(|e| Error::io("cannot sync", &self.tmp_path, e))?;
        }
        let inline = self.inline.take();
        if inline.is_none() {
            let tmp_dir = &self.store.tmp_dir;
            self.store.tmp_sync.run(|| sync_dir(tmp_dir))?;
        }
        let meta = PieceMeta {
            owner: self.owner,
            piece_hash: *declared_hash,
            info,
            created_at_ms: now_ms,
            expires_at_ms: self.expires_at_ms,
            tag: std::mem::take(&mut self.tag),
        };
        {
            let mut s = self.store.lock();
            let counters = self
                .store
                .meta
                .insert(&self.piece, &meta, inline.as_deref())?;
            s.used = counters.used;
            s.pieces = counters.pieces;
            s.release(&self.owner, self.reserved);
            self.reserved = 0;
            // From here on the temp file is the committed piece: never delete it.
            self.meta_committed = true;
        }
        let db = &self.store.meta;
        self.store.meta_sync.run(|| db.flush())?;
        if inline.is_none() {
            self.store.place(&self.tmp_path, &self.piece, false)?;
        }
        Ok(meta)
    }
}

impl Drop for PendingPiece {
    fn drop(&mut self) {
        self.writer = None;
        // An inline piece has no temp file (after a failed commit took its bytes, the
        // removal finds nothing, which is fine).
        if !self.meta_committed && self.inline.is_none() {
            let _ = fs::remove_file(&self.tmp_path);
        }
        let mut s = self.store.lock();
        s.release(&self.owner, self.reserved);
        s.busy.remove(&self.piece);
    }
}
