//! Reading a stream into plaintext blocks, one segment's worth at a time.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::crypto::PLAIN_BLOCK;

/// Reads plaintext in [`PLAIN_BLOCK`]s with one block of look-ahead, so that the last
/// block of the object is known as such when it is sealed.
pub(crate) struct BlockReader<R> {
    pub(super) reader: R,
    pub(super) pending: Option<Vec<u8>>,
    pub(super) eof: bool,
}

impl<R: AsyncRead + Unpin> BlockReader<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            pending: None,
            eof: false,
        }
    }

    pub(super) async fn read_full(&mut self) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; PLAIN_BLOCK];
        let mut filled = 0;
        while filled < PLAIN_BLOCK {
            let n = self.reader.read(&mut buf[filled..]).await?;
            if n == 0 {
                self.eof = true;
                break;
            }
            filled += n;
        }
        buf.truncate(filled);
        Ok(buf)
    }

    /// The next block and whether it is the object's last; `None` after the last.
    pub async fn next(&mut self) -> std::io::Result<Option<(Vec<u8>, bool)>> {
        let current = match self.pending.take() {
            Some(b) => b,
            None if self.eof => return Ok(None),
            None => {
                let b = self.read_full().await?;
                if self.eof {
                    return Ok(if b.is_empty() { None } else { Some((b, true)) });
                }
                b
            }
        };
        if self.eof {
            return Ok(Some((current, true)));
        }
        let next = self.read_full().await?;
        if next.is_empty() {
            return Ok(Some((current, true)));
        }
        self.pending = Some(next);
        Ok(Some((current, false)))
    }
}
