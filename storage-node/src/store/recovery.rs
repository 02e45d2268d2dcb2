//! What the store repairs at startup ([`Recovery`]: the trash, temp files of unfinished
//! or uncommitted uploads, renames a crash interrupted) and the full consistency check of
//! metadata, counters and files ([`Consistency`], for tests and tools).

use std::fs;

use shoal_proto::PieceId;

use super::{PieceStore, sync_dir};
use crate::error::Error;
use crate::meta::{Counters, PIECE_OVERHEAD};

/// What startup found and repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Temp files of unfinished uploads, removed.
    pub temp_files_removed: u64,
    /// Committed uploads whose rename a crash interrupted, completed.
    pub renames_completed: u64,
    /// Removals whose file a crash left behind, completed.
    pub removals_completed: u64,
}

/// A full check of metadata, counters and files (walks everything: tests and tools only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consistency {
    pub counters: Counters,
    /// Sum and count over the metadata records (sizes, not charged bytes).
    pub meta_bytes: u64,
    pub meta_pieces: u64,
    /// Sum and count over the piece files.
    pub file_bytes: u64,
    pub file_count: u64,
    /// Sum and count over the inline pieces' bytes.
    pub inline_bytes: u64,
    pub inline_count: u64,
    /// Pieces with metadata but no file, or a file of the wrong size.
    pub missing_or_wrong: Vec<PieceId>,
    pub temp_files: u64,
}

impl Consistency {
    pub fn is_consistent(&self) -> bool {
        self.counters.used == self.meta_bytes + self.meta_pieces * PIECE_OVERHEAD
            && self.counters.pieces == self.meta_pieces
            && self.file_bytes + self.inline_bytes == self.meta_bytes
            && self.file_count + self.inline_count == self.meta_pieces
            && self.missing_or_wrong.is_empty()
            && self.temp_files == 0
    }
}

impl PieceStore {
    /// Finishes what a crash left behind (see the module docs of [`crate::store`]).
    pub(super) fn recover(&self) -> Result<Recovery, Error> {
        let mut r = Recovery::default();
        for piece in self.meta.trash()? {
            match fs::remove_file(self.piece_path(&piece)) {
                Ok(()) => r.removals_completed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("cannot remove", self.piece_path(&piece), e)),
            }
            self.meta.clear_trash(&piece)?;
        }
        let entries =
            fs::read_dir(&self.tmp_dir).map_err(|e| Error::io("cannot list", &self.tmp_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("cannot list", &self.tmp_dir, e))?;
            let path = entry.path();
            let committed = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".tmp"))
                .and_then(PieceId::from_hex)
                .map(|id| self.meta.contains(&id).map(|c| c.then_some(id)))
                .transpose()?
                .flatten();
            match committed {
                Some(id) if !self.piece_path(&id).exists() => {
                    self.place(&path, &id, true)?;
                    r.renames_completed += 1;
                }
                _ => {
                    fs::remove_file(&path).map_err(|e| Error::io("cannot remove", &path, e))?;
                    r.temp_files_removed += 1;
                }
            }
        }
        sync_dir(&self.tmp_dir)?;
        self.meta.flush()?;
        Ok(r)
    }

    /// Walks metadata and files and compares them with the counters.
    pub fn check(&self) -> Result<Consistency, Error> {
        let mut c = Consistency {
            counters: self.meta.counters()?,
            ..Default::default()
        };
        self.meta.for_each_piece(|id, meta, inline| {
            c.meta_bytes += meta.info.size;
            c.meta_pieces += 1;
            if let Some(len) = inline {
                c.inline_bytes += len;
                c.inline_count += 1;
                if len != meta.info.size {
                    c.missing_or_wrong.push(id);
                }
                return;
            }
            match fs::metadata(self.piece_path(&id)) {
                Ok(m) if m.len() == meta.info.size => {}
                _ => c.missing_or_wrong.push(id),
            }
        })?;
        let mut stack = vec![self.pieces_dir.clone()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).map_err(|e| Error::io("cannot list", &dir, e))? {
                let entry = entry.map_err(|e| Error::io("cannot list", &dir, e))?;
                let m = entry
                    .metadata()
                    .map_err(|e| Error::io("cannot stat", entry.path(), e))?;
                if m.is_dir() {
                    stack.push(entry.path());
                } else {
                    c.file_bytes += m.len();
                    c.file_count += 1;
                }
            }
        }
        c.temp_files = fs::read_dir(&self.tmp_dir)
            .map_err(|e| Error::io("cannot list", &self.tmp_dir, e))?
            .count() as u64;
        Ok(c)
    }
}
