//! A stored piece's bytes opened for reading ([`PieceData`]): a piece file, or an inline
//! piece's bytes from the metadata database.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// A stored piece's bytes, opened for reading.
#[derive(Debug)]
pub enum PieceData {
    /// A piece file.
    File(File),
    /// An inline piece's bytes (see [`super::INLINE_MAX`]).
    Inline(Vec<u8>),
}

impl PieceData {
    /// Reads `len` bytes at `offset`.
    pub fn read_at(&mut self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        match self {
            Self::File(file) => {
                let mut buf = vec![0u8; len];
                file.seek(SeekFrom::Start(offset))?;
                file.read_exact(&mut buf)?;
                Ok(buf)
            }
            Self::Inline(bytes) => usize::try_from(offset)
                .ok()
                .and_then(|start| bytes.get(start..start.checked_add(len)?))
                .map(<[u8]>::to_vec)
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
        }
    }

    /// The piece's size in bytes as stored.
    pub fn size(&self) -> std::io::Result<u64> {
        match self {
            Self::File(file) => Ok(file.metadata()?.len()),
            Self::Inline(bytes) => Ok(bytes.len() as u64),
        }
    }

    /// Tells the kernel which part of a piece file is read next (nothing to do for an
    /// inline piece).
    pub fn advise_read(&self, start: u64, end: u64, offset: u64, len: u64) {
        if let Self::File(file) = self {
            crate::piece_file::advise_read(file, start, end, offset, len);
        }
    }
}
