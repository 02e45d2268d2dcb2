//! The piece store: piece files on disk, metadata and counters in [`MetaDb`], and the
//! space reservations of uploads in flight.
//!
//! Layout under the storage directory:
//! - `pieces/ab/cd/<piece id hex>`: one file per piece, fanned out by the id's first two
//!   bytes (directories are created on first use);
//! - `tmp/<piece id hex>.tmp`: uploads being received;
//! - `metadata.sqlite` (with its `-wal` and `-shm`): the metadata database, [`MetaDb`]
//!   (an older version's sled `meta/` is migrated into it on first open).
//!
//! An upload is written to its temp file, which is fsynced, and `tmp/` is fsynced (so
//! the file is durable under its temp name); its metadata and the counters are then
//! committed in one SQLite transaction and flushed; only then is the file renamed into
//! place and the piece acknowledged. A crash before the commit leaves a temp file that
//! startup removes; a crash after it leaves a complete, fsynced temp file that startup
//! renames into place. Removal runs the other way (metadata out and into the trash in one
//! transaction, then the file), so startup only ever looks at `tmp/` and the trash, never
//! at the piece files, and the counters are always exactly the committed pieces.
//!
//! **Group commit.** The `tmp/` fsync and the metadata flush are each shared among the
//! commits that run at the same time ([`GroupSync`]: a commit waits for a sync that
//! *started after* it asked, so that sync covers its own temp file and its own
//! transaction), and the rename is not followed by a directory fsync. Why an
//! acknowledged piece is still durable, on disk and in the metadata:
//! - before the acknowledgment, the piece's bytes are fsynced (its own fsync), its temp
//!   name is durable (a `tmp/` fsync that started after the file was complete), and its
//!   metadata is durable (a flush that started after its transaction: its WAL fsync
//!   covers every transaction committed before it, see [`MetaDb::flush`]), in that
//!   order: the metadata never becomes durable before the file it describes, so a
//!   crash at any point leaves either no metadata (startup removes the temp file) or
//!   metadata and a complete temp file;
//! - the rename may or may not have reached the disk when the node crashes. If it did,
//!   the piece is in place. If it did not, the directory still holds the temp name
//!   (a rename is atomic), and startup sees a temp file whose piece is committed and
//!   whose final path is missing, and renames it into place with the directory
//!   fsyncs, as it always did for a crash between the commit and the rename;
//! - a removal or renewal after that acts on the metadata first (flushed) and then on
//!   the final path; a removal whose rename never reached the disk leaves a temp file
//!   without metadata, which startup removes.
//!
//! So the old per-piece fsync of the piece's directory bought nothing that recovery
//! does not already redo, while the `tmp/` fsync makes explicit what the file fsync gave
//! only on file systems that persist a new file's name with it (ext4 does).
//! `tests/crash.rs` kills the node with SIGKILL mid-stream and checks every
//! acknowledged piece after restart.
//!
//! Piece data is written with `O_DIRECT` where the file system allows it (see
//! [`crate::piece_file`]); the steps above are unchanged: the temp file is cut to its exact
//! size and fsynced before the metadata commit.
//!
//! **Small pieces have no file.** A piece whose order allows at most [`INLINE_MAX`]
//! bytes is received in memory and its bytes are written into the metadata database in
//! the same transaction as its metadata and the counters (the `inline_pieces` table), then
//! flushed before the acknowledgment like any commit. So it is durable exactly when its
//! metadata is (one atomic transaction: a crash leaves all of it or none), and it costs
//! no temp file, file fsync, `tmp/` fsync, rename or inode. Measured on the 20-process
//! bench, creating a file (ext4's inode allocation) was the largest single cost of a
//! small piece. Removal drops the bytes with the metadata; such pieces never enter the
//! trash. Stores from before this hold only file pieces, which keep working unchanged.
//!
//! This module holds [`PieceStore`] (layout, space, admission, begin, open, delete,
//! renew, expiry); its children import from it, never the other way but for their types:
//!
//! ```text
//!   store (PieceStore)
//!    ^-- pending   PendingPiece: an upload being received, and its commit
//!    ^-- recovery  Recovery at startup; Consistency, the full check
//!    ^-- data      PieceData: a stored piece opened for reading
//! ```

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use shoal_proto::messages::{RenewResult, RenewStatus};
use shoal_proto::piece_hash::PieceHasher;
use shoal_proto::{PieceId, PublicKey};

use crate::error::Error;
use crate::group_sync::GroupSync;
use crate::meta::{Counters, MetaDb, PieceMeta};
pub use crate::meta::{PIECE_OVERHEAD, Usage, charged};
use crate::piece_file::{PieceWriter, Refuse};

mod data;
mod pending;
mod recovery;

pub use data::PieceData;
pub use pending::PendingPiece;
pub use recovery::{Consistency, Recovery};

/// Pieces whose order's `max_size` is at most this many bytes are kept in the metadata
/// database rather than in a file of their own (see the module docs); an upload in
/// flight buffers at most this much in memory. Why 4 KiB: a blob of up to about one
/// SQLite page (4 KiB) costs one page and one overflow page at most, so an inline piece
/// is written with its row in the same WAL commit; much larger pieces would make the
/// database the bulk store, which the file store does better. (The limit was chosen for
/// sled's page layout before; it stays so that stores keep their split.) Pieces of a
/// 4 KiB + 1 object at k = 3 are ~1.4 KiB.
pub const INLINE_MAX: u64 = 4 * 1024;

/// How much of an upload's `max_size` is reserved at a time: the first step when the
/// upload is admitted, one more each time its data outgrows what it holds.
pub const RESERVE_STEP: u64 = 1 << 20;

/// How the store writes piece files and what one owner may store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Write piece data with `O_DIRECT` (Linux), falling back to buffered writes on a
    /// file system that refuses it. Default true.
    pub direct_io: bool,
    /// Most bytes one owner key may store and reserve (charged bytes: sizes plus
    /// [`PIECE_OVERHEAD`] each). Default none: only the allocation bounds an owner.
    pub max_bytes_per_owner: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            direct_io: true,
            max_bytes_per_owner: None,
        }
    }
}

/// Space as the node accounts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Space {
    /// Bytes the operator allocated.
    pub allocated: u64,
    /// Bytes of committed pieces, each charged its size plus [`PIECE_OVERHEAD`].
    pub used: u64,
    /// Bytes reserved by uploads in flight: what each has received, rounded up to a
    /// whole [`RESERVE_STEP`] (at most its order's `max_size`), plus [`PIECE_OVERHEAD`].
    pub reserved: u64,
    /// Bytes a new upload may still reserve: `allocated - used - reserved`.
    pub free: u64,
    /// Committed pieces.
    pub pieces: u64,
}

#[derive(Debug, Default)]
struct State {
    used: u64,
    pieces: u64,
    reserved: u64,
    /// Reservations per owner (only owners with an upload in flight).
    owner_reserved: HashMap<PublicKey, u64>,
    /// Pieces with a write, removal or renewal in progress.
    busy: HashSet<PieceId>,
}

impl State {
    fn reserve(&mut self, owner: PublicKey, bytes: u64) {
        self.reserved += bytes;
        *self.owner_reserved.entry(owner).or_default() += bytes;
    }

    fn release(&mut self, owner: &PublicKey, bytes: u64) {
        self.reserved = self.reserved.saturating_sub(bytes);
        if let Some(r) = self.owner_reserved.get_mut(owner) {
            *r = r.saturating_sub(bytes);
            if *r == 0 {
                self.owner_reserved.remove(owner);
            }
        }
    }
}

/// What [`PieceStore::inspect`] reads: the counters, the largest owners (most first) and
/// the owner count.
pub type Inspection = (Counters, Vec<(PublicKey, Usage)>, usize);

/// Pieces on disk.
#[derive(Debug)]
pub struct PieceStore {
    pieces_dir: PathBuf,
    tmp_dir: PathBuf,
    meta: MetaDb,
    allocated: u64,
    max_bytes_per_owner: Option<u64>,
    state: Mutex<State>,
    /// Cleared (for good) the first time the file system refuses `O_DIRECT`.
    direct_io: AtomicBool,
    inject: Refuse,
    /// The `tmp/` fsync and the metadata flush of commits, each shared among concurrent
    /// commits (see the module docs).
    tmp_sync: GroupSync,
    meta_sync: GroupSync,
}

fn sync_dir(path: &Path) -> Result<(), Error> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot sync directory", path, e))
}

impl PieceStore {
    /// Opens the store under `dir`, creating it if needed, and repairs what a crash left
    /// behind (see the module docs). Does not walk the piece files.
    ///
    /// LATER: compare the allocation with the file system's real free space (statvfs
    /// needs `unsafe` or a new crate) and warn when the disk cannot hold it.
    pub fn open(dir: &Path, allocated: u64) -> Result<(Arc<Self>, Recovery), Error> {
        Self::open_with(dir, allocated, StoreOptions::default())
    }

    /// [`PieceStore::open`] with options.
    pub fn open_with(
        dir: &Path,
        allocated: u64,
        options: StoreOptions,
    ) -> Result<(Arc<Self>, Recovery), Error> {
        Self::open_inner(dir, allocated, options, Refuse::default())
    }

    /// A store whose file system refuses `O_DIRECT` as `inject` says (tests).
    #[cfg(test)]
    pub(crate) fn open_refusing(
        dir: &Path,
        allocated: u64,
        inject: Refuse,
    ) -> Result<(Arc<Self>, Recovery), Error> {
        Self::open_inner(dir, allocated, StoreOptions::default(), inject)
    }

    fn open_inner(
        dir: &Path,
        allocated: u64,
        options: StoreOptions,
        inject: Refuse,
    ) -> Result<(Arc<Self>, Recovery), Error> {
        let pieces_dir = dir.join("pieces");
        let tmp_dir = dir.join("tmp");
        for d in [dir, &pieces_dir, &tmp_dir] {
            shoal_proto::private::create_dir(d)
                .map_err(|e| Error::io("cannot create directory", d, e))?;
        }
        let meta = MetaDb::open_in(dir)?;
        let store = Self {
            pieces_dir,
            tmp_dir,
            meta,
            allocated,
            max_bytes_per_owner: options.max_bytes_per_owner,
            state: Mutex::new(State::default()),
            direct_io: AtomicBool::new(options.direct_io),
            inject,
            tmp_sync: GroupSync::new(),
            meta_sync: GroupSync::new(),
        };
        let recovery = store.recover()?;
        let counters = store.meta.counters()?;
        {
            let mut s = store.lock();
            s.used = counters.used;
            s.pieces = counters.pieces;
        }
        Ok((Arc::new(store), recovery))
    }

    /// Reads the committed counters of the store under `dir`, its `top` largest owners
    /// and its owner count, without repairing anything (also while a node runs on it:
    /// SQLite readers never wait for the node's writes).
    pub fn inspect(dir: &Path, top: usize) -> Result<Inspection, Error> {
        let meta = MetaDb::open_in(dir)?;
        Ok((meta.counters()?, meta.top_owners(top)?, meta.owner_count()?))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters half-updated (each
        // update is a few assignments), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether new uploads are written with `O_DIRECT` (false if configured off or
    /// after the file system refused it).
    pub fn direct_io(&self) -> bool {
        self.direct_io.load(Ordering::Relaxed)
    }

    /// The file system refused `O_DIRECT`: stop using it for this store, saying so once.
    fn direct_refused(&self, path: &Path, error: &std::io::Error) {
        if self.direct_io.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                path = %path.display(),
                %error,
                "the file system refuses O_DIRECT; writing pieces through the page cache"
            );
        }
    }

    fn piece_path(&self, piece: &PieceId) -> PathBuf {
        let hex = piece.to_hex();
        self.pieces_dir.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }

    fn tmp_path(&self, piece: &PieceId) -> PathBuf {
        self.tmp_dir.join(format!("{}.tmp", piece.to_hex()))
    }

    /// Renames a complete temp file into place, creating fan-out directories durably;
    /// with `sync_leaf`, also fsyncs the piece's directory (recovery does; a commit need
    /// not, see the module docs).
    fn place(&self, tmp: &Path, piece: &PieceId, sync_leaf: bool) -> Result<(), Error> {
        let path = self.piece_path(piece);
        let leaf = path.parent().unwrap_or(&self.pieces_dir);
        if !leaf.exists() {
            fs::create_dir_all(leaf).map_err(|e| Error::io("cannot create directory", leaf, e))?;
            let mid = leaf.parent().unwrap_or(&self.pieces_dir);
            sync_dir(mid)?;
            sync_dir(&self.pieces_dir)?;
        }
        fs::rename(tmp, &path).map_err(|e| Error::io("cannot rename into", &path, e))?;
        if sync_leaf {
            sync_dir(leaf)?;
        }
        Ok(())
    }

    pub fn space(&self) -> Space {
        let s = self.lock();
        Space {
            allocated: self.allocated,
            used: s.used,
            reserved: s.reserved,
            free: self.allocated.saturating_sub(s.used + s.reserved),
            pieces: s.pieces,
        }
    }

    /// Bytes a new upload could still reserve (what the node record advertises).
    pub fn free_space(&self) -> u64 {
        self.space().free
    }

    /// Bytes of committed pieces.
    pub fn used_space(&self) -> u64 {
        self.space().used
    }

    /// What `owner` stores (committed, charged bytes and pieces).
    pub fn owner_usage(&self, owner: &PublicKey) -> Result<Usage, Error> {
        self.meta.owner_usage(owner)
    }

    /// The `n` owners storing the most, most first, and how many owners there are.
    pub fn top_owners(&self, n: usize) -> Result<(Vec<(PublicKey, Usage)>, usize), Error> {
        Ok((self.meta.top_owners(n)?, self.meta.owner_count()?))
    }

    /// The per-owner limit, if any.
    pub fn max_bytes_per_owner(&self) -> Option<u64> {
        self.max_bytes_per_owner
    }

    /// Whether `owner` may take `bytes` (charged) more now: refuses with `NoSpace` past
    /// the allocation, `OwnerQuota` past the per-owner limit. Called with the state
    /// lock held: commits update the owner's stored total under it too, so stored +
    /// reserved never counts a piece twice or not at all.
    fn admit(&self, s: &State, owner: &PublicKey, bytes: u64) -> Result<(), Error> {
        let free = self.allocated.saturating_sub(s.used + s.reserved);
        if bytes > free {
            return Err(Error::NoSpace {
                requested: bytes,
                free,
            });
        }
        if let Some(limit) = self.max_bytes_per_owner {
            let used = self.meta.owner_usage(owner)?.bytes
                + s.owner_reserved.get(owner).copied().unwrap_or(0);
            if used.saturating_add(bytes) > limit {
                return Err(Error::OwnerQuota {
                    limit,
                    used,
                    requested: bytes,
                });
            }
        }
        Ok(())
    }

    /// Reserves `bytes` more for `owner`'s upload in flight, if [`Self::admit`] allows.
    fn grow_reservation(&self, owner: &PublicKey, bytes: u64) -> Result<(), Error> {
        let mut s = self.lock();
        self.admit(&s, owner, bytes)?;
        s.reserve(*owner, bytes);
        Ok(())
    }

    /// Admits a new piece and opens its temp file. Refuses, before any data: `max_size`
    /// 0, an existing piece id, a piece whose whole `max_size` (charged: plus
    /// [`PIECE_OVERHEAD`]) does not fit in the free space now, and one that would take
    /// its owner past the per-owner limit (counting the owner's stored pieces and
    /// reservations in flight).
    ///
    /// Space is reserved incrementally: [`RESERVE_STEP`] (plus the overhead) now, then
    /// one more step whenever the data outgrows it ([`PendingPiece::write`], which can
    /// then refuse with `NoSpace` or `OwnerQuota`). So a slow upload holds at most what
    /// it has sent plus one step, not its whole `max_size`, until the minimum-rate check
    /// cuts it.
    pub fn begin_upload(
        self: &Arc<Self>,
        piece: PieceId,
        owner: PublicKey,
        max_size: u64,
        block_size: u32,
        expires_at_ms: u64,
    ) -> Result<PendingPiece, Error> {
        if max_size == 0 {
            return Err(Error::ZeroMaxSize);
        }
        let first = charged(max_size.min(RESERVE_STEP));
        {
            let mut s = self.lock();
            if s.busy.contains(&piece) {
                return Err(Error::Busy(piece));
            }
            if self.meta.contains(&piece)? {
                return Err(Error::AlreadyExists(piece));
            }
            self.admit(&s, &owner, charged(max_size))?;
            s.reserve(owner, first);
            s.busy.insert(piece);
        }
        let mut pending = PendingPiece {
            store: Arc::clone(self),
            piece,
            owner,
            expires_at_ms,
            max_size,
            reserved: first,
            tmp_path: self.tmp_path(&piece),
            writer: None,
            inline: None,
            hasher: PieceHasher::new(block_size),
            meta_committed: false,
            tag: Vec::new(),
        };
        if max_size <= INLINE_MAX {
            // At most INLINE_MAX: checked above, so the cast is lossless.
            pending.inline = Some(Vec::with_capacity(max_size as usize));
            return Ok(pending);
        }
        let writer =
            PieceWriter::create_with(&pending.tmp_path, self.direct_io(), max_size, self.inject);
        pending.writer =
            Some(writer.map_err(|e| Error::io("cannot create", &pending.tmp_path, e))?);
        pending.note_refusal();
        Ok(pending)
    }

    /// A piece's metadata, if it is stored and its lease has not ended.
    pub fn get(&self, piece: &PieceId, now_ms: u64) -> Result<PieceMeta, Error> {
        match self.meta.get(piece)? {
            Some(m) if m.expires_at_ms > now_ms => Ok(m),
            _ => Err(Error::NotFound(*piece)),
        }
    }

    /// Opens a piece for reading: its file, or its bytes if it is inline.
    pub fn open_piece(
        &self,
        piece: &PieceId,
        now_ms: u64,
    ) -> Result<(PieceMeta, PieceData), Error> {
        let meta = self.get(piece, now_ms)?;
        if let Some(bytes) = self.meta.inline(piece)? {
            return Ok((meta, PieceData::Inline(bytes)));
        }
        let path = self.piece_path(piece);
        match File::open(&path) {
            Ok(f) => Ok((meta, PieceData::File(f))),
            // Metadata is committed just before the rename: a read in that instant waits.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && self.lock().busy.contains(piece) =>
            {
                Err(Error::Busy(*piece))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Corrupt {
                piece: piece.to_hex(),
                detail: "metadata present but the file is missing",
            }),
            Err(e) => Err(Error::io("cannot open", path, e)),
        }
    }

    fn mark_busy(&self, piece: &PieceId) -> Result<BusyGuard<'_>, Error> {
        let mut s = self.lock();
        if !s.busy.insert(*piece) {
            return Err(Error::Busy(*piece));
        }
        Ok(BusyGuard {
            store: self,
            piece: *piece,
        })
    }

    /// Removes a piece. With `owner`, only if that key uploaded it.
    pub fn delete(&self, piece: &PieceId, owner: Option<&PublicKey>) -> Result<PieceMeta, Error> {
        let _busy = self.mark_busy(piece)?;
        let meta = self.meta.get(piece)?.ok_or(Error::NotFound(*piece))?;
        if let Some(owner) = owner
            && *owner != meta.owner
        {
            return Err(Error::NotOwner(*piece));
        }
        self.remove_marked(piece)
    }

    fn remove_marked(&self, piece: &PieceId) -> Result<PieceMeta, Error> {
        let (meta, inline) = {
            let mut s = self.lock();
            let (meta, counters, inline) = self.meta.remove(piece)?;
            s.used = counters.used;
            s.pieces = counters.pieces;
            (meta, inline)
        };
        self.meta.flush()?;
        if inline {
            return Ok(meta);
        }
        let path = self.piece_path(piece);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("cannot remove", path, e)),
        }
        self.meta.clear_trash(piece)?;
        Ok(meta)
    }

    /// Extends the leases of `pieces` to at least `expires_at_ms`: one renew order's
    /// worth. Per piece: only its owner may; a lease is never shortened (renewing is
    /// monotonic, so an old order cannot roll a lease back, and idempotent); a piece busy
    /// with a write or removal, missing, or already expired is reported as such and
    /// left alone. One metadata flush for the whole batch.
    pub fn renew(
        &self,
        pieces: &[PieceId],
        owner: &PublicKey,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<RenewResult>, Error> {
        let mut out = Vec::with_capacity(pieces.len());
        let mut changed = false;
        for piece in pieces {
            let status = match self.mark_busy(piece) {
                Err(_) => RenewStatus::Busy,
                Ok(_busy) => match self.get(piece, now_ms) {
                    Err(Error::NotFound(_)) => RenewStatus::NotFound,
                    Err(e) => return Err(e),
                    Ok(meta) if meta.owner != *owner => RenewStatus::NotOwner,
                    Ok(meta) if meta.expires_at_ms >= expires_at_ms => RenewStatus::Renewed {
                        expires_at_ms: meta.expires_at_ms,
                    },
                    Ok(_) => {
                        let meta = self.meta.set_expiry(piece, expires_at_ms)?;
                        changed = true;
                        RenewStatus::Renewed {
                            expires_at_ms: meta.expires_at_ms,
                        }
                    }
                },
            };
            out.push(RenewResult {
                piece_id: *piece,
                status,
            });
        }
        if changed {
            self.meta.flush()?;
        }
        Ok(out)
    }

    /// Removes up to `limit` pieces whose lease ended at or before `now_ms`; returns how
    /// many. Pieces busy with another operation are left for the next round.
    pub fn collect_expired(&self, now_ms: u64, limit: usize) -> Result<u64, Error> {
        let mut removed = 0;
        for piece in self.meta.expired(now_ms, limit)? {
            let Ok(_busy) = self.mark_busy(&piece) else {
                continue;
            };
            match self.meta.get(&piece)? {
                Some(m) if m.expires_at_ms <= now_ms => {
                    self.remove_marked(&piece)?;
                    removed += 1;
                }
                _ => {}
            }
        }
        Ok(removed)
    }

    /// Number of temp files (uploads in progress or left behind).
    pub fn temp_file_count(&self) -> u64 {
        fs::read_dir(&self.tmp_dir)
            .map(|d| d.count() as u64)
            .unwrap_or(0)
    }

    /// Makes all committed metadata durable (at shutdown).
    pub fn flush(&self) -> Result<(), Error> {
        self.meta.flush()
    }

    /// The metadata database (benchmarks and tools).
    pub fn meta(&self) -> &MetaDb {
        &self.meta
    }
}

struct BusyGuard<'a> {
    store: &'a PieceStore,
    piece: PieceId,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.store.lock().busy.remove(&self.piece);
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
