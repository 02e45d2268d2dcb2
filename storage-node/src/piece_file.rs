//! Writing and reading piece files.
//!
//! Piece data is written with `O_DIRECT` (Linux): buffered writes spent a quarter of the
//! node's CPU copying into the page cache, and the data is fsynced and rarely read back
//! soon, so the cache bought nothing. Incoming chunks are gathered in a 4096-aligned
//! buffer ([`BUFFER`] bytes, or less for small pieces) and written whole; the tail is
//! padded to 4096 and the file cut to its exact size with `set_len` before the commit's
//! fsync. A file system that refuses `O_DIRECT` (`EINVAL`/`EOPNOTSUPP` at open or at a
//! write) gets the old buffered path for the rest of that piece, and the caller is told
//! (through [`PieceWriter::take_refusal`]) so the store stops trying.
//!
//! Reads stay buffered: [`advise_read`] asks the kernel to read ahead, a window at a
//! time, the range a download streams. On cold pieces it measured about as fast as plain buffered
//! reads and no worse than `O_DIRECT` reads overall (BENCHMARKS.md, "Direct I/O"), and
//! `O_DIRECT` reads would need aligned ranges and a copy out of an aligned buffer into
//! the message's `Vec`. LATER: `O_DIRECT` reads used 2–3× less CPU per MB in most
//! measurements; try them for downloads in the end-to-end bench, where CPU is the limit.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The alignment `O_DIRECT` needs of offsets, lengths and buffer addresses (the page
/// size; a multiple of every logical block size in use).
pub const ALIGN: usize = 4096;
/// The most a piece buffers before a direct write.
pub const BUFFER: usize = 1 << 20;
/// Pieces whose order allows less than this are written buffered even when direct I/O
/// is on: copying a few KiB costs nothing, while a direct write of a tiny piece waits
/// for the device and needs a `set_len` (4 KiB + 1 byte pieces: 1,219 commits/s direct
/// against 2,072 buffered from 16 threads, BENCHMARKS.md "Direct I/O").
pub const DIRECT_MIN_SIZE: u64 = 64 * 1024;

/// Whether an error means "this file system does not do `O_DIRECT` (here)".
pub fn is_direct_refusal(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::Unsupported)
}

/// A zeroed heap buffer whose usable part starts at a 4096-aligned address, without
/// `unsafe`: over-allocate by [`ALIGN`] and start at the first aligned byte.
#[derive(Debug)]
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    cap: usize,
    len: usize,
}

impl AlignedBuf {
    /// `None` if no aligned start exists (`align_offset` may refuse; then go buffered).
    fn new(cap: usize) -> Option<Self> {
        let raw = vec![0u8; cap + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        (start < ALIGN).then_some(Self {
            raw,
            start,
            cap,
            len: 0,
        })
    }

    /// Copies as much of `data` as fits; returns how much.
    fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.cap - self.len);
        let at = self.start + self.len;
        self.raw[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    fn is_full(&self) -> bool {
        self.len == self.cap
    }

    /// The filled part, zero-padded up to the next multiple of [`ALIGN`].
    fn padded(&mut self) -> &[u8] {
        let end = self.len.next_multiple_of(ALIGN);
        let (from, to) = (self.start + self.len, self.start + end);
        self.raw[from..to].fill(0);
        &self.raw[self.start..to]
    }

    fn filled(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

/// Fault injection for tests: refuse `O_DIRECT` as some file systems do (every file
/// system on the development machine, tmpfs included, accepts it).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Refuse {
    /// Refuse at open.
    pub open: bool,
    /// Refuse direct writes at or past this offset.
    pub writes_from: Option<u64>,
}

#[derive(Debug)]
enum Mode {
    Direct(AlignedBuf),
    Buffered,
}

/// A piece file being written, direct or buffered.
#[derive(Debug)]
pub struct PieceWriter {
    file: File,
    path: PathBuf,
    mode: Mode,
    /// Bytes of data in the file (in direct mode a multiple of [`ALIGN`] until
    /// [`PieceWriter::finish`]).
    written: u64,
    refusal: Option<io::Error>,
    inject: Refuse,
}

impl PieceWriter {
    /// Creates `path` (which must not exist). With `direct` and a `max_size` of at
    /// least [`DIRECT_MIN_SIZE`], opens it with `O_DIRECT` and a buffer of `BUFFER`
    /// bytes, or less if `max_size` is smaller; falls back to buffered writes if the
    /// file system refuses.
    pub fn create(path: &Path, direct: bool, max_size: u64) -> io::Result<Self> {
        Self::create_with(path, direct, max_size, Refuse::default())
    }

    pub(crate) fn create_with(
        path: &Path,
        direct: bool,
        max_size: u64,
        inject: Refuse,
    ) -> io::Result<Self> {
        let mut w = Self {
            file: OpenOptions::new().write(true).create_new(true).open(path)?,
            path: path.to_owned(),
            mode: Mode::Buffered,
            written: 0,
            refusal: None,
            inject,
        };
        if direct
            && max_size >= DIRECT_MIN_SIZE
            && let Err(e) = w.go_direct(max_size)
        {
            if !is_direct_refusal(&e) {
                return Err(e);
            }
            w.refusal = Some(e);
        }
        Ok(w)
    }

    /// Reopens the (new, empty) file with `O_DIRECT`. Opening the file buffered first
    /// and reopening it means a refusal never leaves a half-created file behind and
    /// `create_new` still guards against an existing file.
    #[cfg(target_os = "linux")]
    fn go_direct(&mut self, max_size: u64) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        if self.inject.open {
            return Err(ErrorKind::InvalidInput.into());
        }
        let cap = usize::try_from(max_size)
            .unwrap_or(BUFFER)
            .clamp(1, BUFFER)
            .next_multiple_of(ALIGN);
        let Some(buf) = AlignedBuf::new(cap) else {
            return Err(io::Error::new(
                ErrorKind::Unsupported,
                "no aligned buffer for O_DIRECT",
            ));
        };
        let flags = rustix::fs::OFlags::DIRECT.bits();
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(i32::try_from(flags).map_err(|_| ErrorKind::Unsupported)?)
            .open(&self.path)?;
        self.file = file;
        self.mode = Mode::Direct(buf);
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn go_direct(&mut self, _max_size: u64) -> io::Result<()> {
        Err(io::Error::new(
            ErrorKind::Unsupported,
            "O_DIRECT is only used on Linux",
        ))
    }

    /// Whether data currently goes through `O_DIRECT`.
    pub fn is_direct(&self) -> bool {
        matches!(self.mode, Mode::Direct(_))
    }

    /// The error with which the file system refused `O_DIRECT`, once.
    pub fn take_refusal(&mut self) -> Option<io::Error> {
        self.refusal.take()
    }

    /// Appends `data`.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let Mode::Direct(buf) = &mut self.mode else {
                self.file.write_all_at(data, self.written)?;
                self.written += data.len() as u64;
                return Ok(());
            };
            let n = buf.push(data);
            data = &data[n..];
            if buf.is_full() {
                self.flush_direct()?;
            }
        }
        Ok(())
    }

    /// Writes the buffer (padded to [`ALIGN`]) at `written`; on a refusal switches to
    /// buffered and writes what is left of it that way.
    fn flush_direct(&mut self) -> io::Result<()> {
        let Mode::Direct(buf) = &mut self.mode else {
            return Ok(());
        };
        let len = buf.len;
        let padded = buf.padded();
        let mut done = 0;
        while done < padded.len() {
            let at = self.written + done as u64;
            let result = match self.inject.writes_from {
                Some(from) if at >= from => Err(ErrorKind::InvalidInput.into()),
                _ => self.file.write_at(&padded[done..], at),
            };
            match result {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_direct_refusal(&e) => {
                    let rest = buf.filled().get(done..).unwrap_or_default().to_vec();
                    let at = self.written + done.min(len) as u64;
                    self.file = OpenOptions::new().write(true).open(&self.path)?;
                    self.mode = Mode::Buffered;
                    self.refusal = Some(e);
                    self.file.write_all_at(&rest, at)?;
                    self.written = at + rest.len() as u64;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        buf.len = 0;
        self.written += len as u64;
        Ok(())
    }

    /// Writes what is buffered and cuts the file to the exact size of the data. The
    /// padding of the last direct write never survives: `set_len` runs before the fsync
    /// ([`PieceWriter::sync`]) that makes the piece durable. Check
    /// [`PieceWriter::take_refusal`] afterwards: the tail may be what was refused.
    pub fn finish(&mut self) -> io::Result<()> {
        if let Mode::Direct(buf) = &self.mode {
            let padded = buf.len % ALIGN != 0;
            self.flush_direct()?;
            if padded || !self.is_direct() {
                self.file.set_len(self.written)?;
            }
        }
        Ok(())
    }

    /// `fsync`: data and metadata (size, extents) durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// How far ahead of a download's reads the kernel is asked to read.
pub const READ_AHEAD: u64 = 4 << 20;

/// Read-ahead for a download that reads `start..end` of a piece in order, called before
/// reading `offset..offset + len`. Pieces are written with `O_DIRECT`, so a download
/// usually finds them cold. Each call asks for the [`READ_AHEAD`] bytes from `offset`, so
/// the disk works ahead of the reads, yet a download cancelled early (the uplink races
/// more pieces than it keeps) has cost at most a window. Advice only: errors are ignored. Call it off the async runtime:
/// `WILLNEED` can block while it queues the reads.
pub fn advise_read(file: &File, start: u64, end: u64, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{Advice, fadvise};
        use std::num::NonZeroU64;
        if offset <= start {
            let _ = fadvise(
                file,
                start,
                NonZeroU64::new(end.saturating_sub(start)),
                Advice::Sequential,
            );
        }
        if let Some((from, to)) = read_ahead_range(start, end, offset, len) {
            let _ = fadvise(file, from, NonZeroU64::new(to - from), Advice::WillNeed);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, start, end, offset, len);
}

/// The bytes [`advise_read`] asks for before reading `offset..offset + len` of a
/// download of `start..end`: the window of [`READ_AHEAD`] bytes from `offset`, cut at
/// `end` (pages already cached or under way cost the kernel a lookup, not a read).
pub fn read_ahead_range(start: u64, end: u64, offset: u64, len: u64) -> Option<(u64, u64)> {
    let from = offset.max(start);
    let to = from.saturating_add(READ_AHEAD.max(len)).min(end);
    (to > from).then_some((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    /// Writes `bytes` in chunks of `chunk` and returns the file's contents.
    fn round_trip(
        dir: &Path,
        direct: bool,
        inject: Refuse,
        bytes: &[u8],
        chunk: usize,
    ) -> (Vec<u8>, bool, bool) {
        let path = dir.join(format!("p{}-{chunk}-{direct}-{inject:?}", bytes.len()));
        // The order's bound, not the data, decides direct or not: small data under a
        // large bound still exercises the padded tail.
        let max_size = (bytes.len() as u64).max(DIRECT_MIN_SIZE);
        let mut w = PieceWriter::create_with(&path, direct, max_size, inject).unwrap();
        let started_direct = w.is_direct();
        for c in bytes.chunks(chunk.max(1)) {
            w.write(c).unwrap();
        }
        w.finish().unwrap();
        let ended_direct = w.is_direct();
        let refused = w.take_refusal().is_some();
        assert!(w.take_refusal().is_none(), "a refusal is reported once");
        w.sync().unwrap();
        drop(w);
        assert_eq!(started_direct && !ended_direct, refused && started_direct);
        let got = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        (got, started_direct, refused)
    }

    #[test]
    fn aligned_buffer_is_aligned_and_pads_with_zeros() {
        let mut b = AlignedBuf::new(2 * ALIGN).unwrap();
        assert_eq!(b.filled().as_ptr().align_offset(ALIGN), 0);
        assert_eq!(b.push(&[7; 5000]), 5000);
        assert_eq!(b.push(&[8; 5000]), 2 * ALIGN - 5000);
        assert!(b.is_full());
        b.len = 10;
        b.raw[b.start + 10] = 1;
        let p = b.padded();
        assert_eq!(p.len(), ALIGN);
        assert!(p[10..].iter().all(|&x| x == 0));
    }

    #[test]
    fn direct_and_buffered_write_the_same_bytes_at_every_size() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0,
            1,
            4095,
            4096,
            4097,
            BUFFER - 1,
            BUFFER,
            BUFFER + 1,
            3 * BUFFER + 12_345,
        ] {
            let bytes = data(len);
            for chunk in [1000, 65_536, BUFFER + 7] {
                let (direct, was_direct, refused) =
                    round_trip(dir.path(), true, Refuse::default(), &bytes, chunk);
                assert!(was_direct && !refused, "this file system takes O_DIRECT");
                assert_eq!(direct.len(), len);
                assert!(direct == bytes, "direct, len {len} chunk {chunk}");
                let (buffered, was_direct, _) =
                    round_trip(dir.path(), false, Refuse::default(), &bytes, chunk);
                assert!(!was_direct);
                assert!(buffered == bytes, "buffered, len {len} chunk {chunk}");
            }
        }
    }

    #[test]
    fn small_pieces_get_a_small_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let w = PieceWriter::create(&dir.path().join("small"), true, DIRECT_MIN_SIZE + 1).unwrap();
        match &w.mode {
            Mode::Direct(b) => assert_eq!(b.cap, DIRECT_MIN_SIZE as usize + ALIGN),
            Mode::Buffered => panic!("expected direct"),
        }
        // The kernel agrees that the descriptor bypasses the page cache.
        let direct = rustix::fs::OFlags::DIRECT.bits();
        assert_ne!(fd_flags(&w.file) & direct, 0);
        let b = PieceWriter::create(&dir.path().join("buffered"), false, 1 << 30).unwrap();
        assert_eq!(fd_flags(&b.file) & direct, 0);
        let tiny = PieceWriter::create(&dir.path().join("tiny"), true, DIRECT_MIN_SIZE - 1);
        let tiny = tiny.unwrap();
        assert!(!tiny.is_direct(), "tiny pieces are written buffered");
        assert_eq!(fd_flags(&tiny.file) & direct, 0);
    }

    /// The open flags of a descriptor, as the kernel reports them.
    fn fd_flags(file: &File) -> u32 {
        use std::os::unix::io::AsRawFd;
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", file.as_raw_fd())).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap()
    }

    #[test]
    fn refusal_at_open_or_any_write_falls_back_without_losing_a_byte() {
        let dir = tempfile::tempdir().unwrap();
        let len = 3 * BUFFER + 5000;
        let bytes = data(len);
        let cases = [
            Refuse {
                open: true,
                writes_from: None,
            },
            Refuse {
                open: false,
                writes_from: Some(0),
            },
            Refuse {
                open: false,
                writes_from: Some(BUFFER as u64),
            },
            Refuse {
                open: false,
                writes_from: Some(3 * BUFFER as u64),
            },
        ];
        for inject in cases {
            for chunk in [4096, 1 << 20] {
                let (got, _, refused) = round_trip(dir.path(), true, inject, &bytes, chunk);
                assert!(refused, "{inject:?}");
                assert!(got == bytes, "{inject:?} chunk {chunk}");
            }
        }
        // Refused only at the padded tail: the whole data went direct except the tail.
        let (got, _, refused) = round_trip(
            dir.path(),
            true,
            Refuse {
                open: false,
                writes_from: Some(BUFFER as u64),
            },
            &bytes[..BUFFER + 10],
            BUFFER,
        );
        assert!(refused && got == bytes[..BUFFER + 10]);
    }

    #[test]
    fn other_errors_are_not_refusals() {
        assert!(is_direct_refusal(&ErrorKind::InvalidInput.into()));
        assert!(is_direct_refusal(&ErrorKind::Unsupported.into()));
        assert!(!is_direct_refusal(&ErrorKind::StorageFull.into()));
        assert!(!is_direct_refusal(&ErrorKind::PermissionDenied.into()));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exists");
        std::fs::write(&path, b"x").unwrap();
        let e = PieceWriter::create(&path, true, 10).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    }

    #[test]
    fn read_ahead_covers_each_byte_once_and_stays_in_the_range() {
        const MIB: u64 = 1 << 20;
        for (start, end) in [
            (0, 21 * MIB + 123),
            (5 * MIB, 6 * MIB),
            (0, 3 * MIB),
            (7, 7),
        ] {
            let mut asked = Vec::new();
            let mut at = start;
            while at < end {
                let len = MIB.min(end - at);
                asked.extend(read_ahead_range(start, end, at, len));
                at += len;
            }
            // Each request starts at the chunk about to be read, reaches a window ahead
            // of it and never past `end`: together they cover the range.
            let mut covered = start;
            for (from, to) in &asked {
                assert!(*from <= covered, "{start}..{end}: gap before {from}");
                assert!(to > from && *to <= end);
                assert!(*to == end || to - from >= READ_AHEAD);
                covered = covered.max(*to);
            }
            assert_eq!(covered, end, "{start}..{end}: {asked:?}");
        }
    }

    #[test]
    fn advice_on_any_file_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, data(10_000)).unwrap();
        let f = File::open(&path).unwrap();
        advise_read(&f, 0, 0, 0, 0);
        advise_read(&f, 5000, 100_000, 5000, 4096);
        advise_read(&f, 0, 10_000, 8192, 4096);
        let mut buf = vec![0; 10];
        f.read_exact_at(&mut buf, 4096).unwrap();
        assert_eq!(buf, data(10_000)[4096..4106]);
    }
}
