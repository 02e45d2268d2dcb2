//! Digests of request bodies: the MD5 every ETag is made of, the `x-amz-checksum-*`
//! values a client asks to be checked (in headers or in an aws-chunked trailer), and
//! `Content-MD5`. [`BodyReader`] computes them while the body streams into the uplink;
//! [`verify`] compares them, as plain code, before the gateway commits anything.

use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest, Md5};
use s3s::checksum::ChecksumHasher;
use s3s::dto::Checksum;
use tokio::io::{AsyncRead, ReadBuf};

/// The checksum algorithms S3 defines, by their header names.
pub const CHECKSUM_HEADERS: [&str; 5] = [
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
];

/// What the client said the body's digests are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// `Content-MD5`, base64 as sent.
    pub content_md5: Option<String>,
    /// Checksums by header name (`x-amz-checksum-crc32` ...), base64 as sent.
    pub checksums: Vec<(String, String)>,
    /// Algorithms to compute whose values come later (a trailer) or are only asked for
    /// (`x-amz-checksum-algorithm`), by header name.
    pub compute: Vec<String>,
}

impl Expected {
    /// Adds the values an aws-chunked trailer carried.
    pub fn add_trailer(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        if CHECKSUM_HEADERS.contains(&name.as_str()) {
            self.checksums.push((name, value.trim().to_string()));
        }
    }

    fn hasher(&self) -> ChecksumHasher {
        let mut h = ChecksumHasher::default();
        let names = self
            .checksums
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(self.compute.iter().map(String::as_str));
        for n in names {
            match n {
                "x-amz-checksum-crc32" => h.crc32 = Some(Default::default()),
                "x-amz-checksum-crc32c" => h.crc32c = Some(Default::default()),
                "x-amz-checksum-crc64nvme" => h.crc64nvme = Some(Default::default()),
                "x-amz-checksum-sha1" => h.sha1 = Some(Default::default()),
                "x-amz-checksum-sha256" => h.sha256 = Some(Default::default()),
                _ => {}
            }
        }
        h
    }
}

/// The header name of a checksum algorithm (`CRC32` → `x-amz-checksum-crc32`), or
/// `None` for one S3 does not define.
pub fn checksum_header(algorithm: &str) -> Option<String> {
    let name = format!("x-amz-checksum-{}", algorithm.to_ascii_lowercase());
    CHECKSUM_HEADERS.contains(&name.as_str()).then_some(name)
}

/// What was computed over a body.
#[derive(Debug, Clone)]
pub struct Computed {
    pub md5: [u8; 16],
    pub checksums: Checksum,
    pub received: u64,
}

impl Computed {
    fn value(&self, name: &str) -> Option<&str> {
        let c = &self.checksums;
        match name {
            "x-amz-checksum-crc32" => c.checksum_crc32.as_deref(),
            "x-amz-checksum-crc32c" => c.checksum_crc32c.as_deref(),
            "x-amz-checksum-crc64nvme" => c.checksum_crc64nvme.as_deref(),
            "x-amz-checksum-sha1" => c.checksum_sha1.as_deref(),
            "x-amz-checksum-sha256" => c.checksum_sha256.as_deref(),
            _ => None,
        }
    }
}

/// Why a body's digests were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// `Content-MD5` is not the base64 of 16 bytes (S3: `InvalidDigest`).
    #[error("Content-MD5 is not a base64-encoded MD5 digest")]
    InvalidDigest,
    /// `Content-MD5` does not match the body (S3: `BadDigest`).
    #[error("the Content-MD5 you specified did not match what we received")]
    BadDigest,
    /// An `x-amz-checksum-*` value does not match (S3: `BadDigest`, 400).
    #[error("the {0} you specified did not match the calculated checksum")]
    ChecksumMismatch(String),
}

/// Checks every expected digest against what was computed.
pub fn verify(expected: &Expected, computed: &Computed) -> Result<(), DigestError> {
    if let Some(b64) = &expected.content_md5 {
        let raw = STANDARD
            .decode(b64.trim())
            .map_err(|_| DigestError::InvalidDigest)?;
        if raw.len() != 16 {
            return Err(DigestError::InvalidDigest);
        }
        if raw != computed.md5 {
            return Err(DigestError::BadDigest);
        }
    }
    for (name, value) in &expected.checksums {
        if computed.value(name) != Some(value.as_str()) {
            return Err(DigestError::ChecksumMismatch(name.clone()));
        }
    }
    Ok(())
}

/// Hex of an MD5 digest: the ETag of a single-part object.
pub fn md5_hex(md5: &[u8; 16]) -> String {
    shoal_proto::ids::to_hex(md5)
}

/// The ETag S3 gives a multipart object: the MD5 of the parts' MD5s, `-` and the number
/// of parts.
pub fn multipart_etag(part_md5s: &[[u8; 16]]) -> String {
    let mut h = Md5::new();
    for m in part_md5s {
        h.update(m);
    }
    let d: [u8; 16] = h.finalize().into();
    format!("{}-{}", md5_hex(&d), part_md5s.len())
}

/// Parses a part's ETag as a client sends it back (quotes optional).
pub fn parse_md5_etag(etag: &str) -> Option<[u8; 16]> {
    let t = etag.trim().trim_matches('"');
    shoal_proto::ids::from_hex::<16>(t)
}

/// Computes MD5 and the asked-for checksums of everything read through it, and refuses
/// to read past `limit` bytes.
#[derive(Debug)]
pub struct BodyReader<R> {
    inner: R,
    md5: Md5,
    checksums: HasherBox,
    received: u64,
    limit: u64,
    /// Set when the body went past `limit`.
    pub too_large: bool,
    /// Set when the body stream failed (a signature or hash that s3s checks, or the
    /// client going away).
    pub failed: bool,
}

/// `ChecksumHasher` has no `Debug`.
struct HasherBox(ChecksumHasher);

impl std::fmt::Debug for HasherBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChecksumHasher")
    }
}

impl<R> BodyReader<R> {
    pub fn new(inner: R, expected: &Expected, limit: u64) -> Self {
        Self {
            inner,
            md5: Md5::new(),
            checksums: HasherBox(expected.hasher()),
            received: 0,
            limit,
            too_large: false,
            failed: false,
        }
    }

    pub fn finish(self) -> Computed {
        Computed {
            md5: self.md5.finalize().into(),
            checksums: self.checksums.0.finalize(),
            received: self.received,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for BodyReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                this.received += n as u64;
                if this.received > this.limit {
                    this.too_large = true;
                    // An error hands back no data.
                    buf.set_filled(before);
                    return Poll::Ready(Err(std::io::Error::other("body exceeds the size limit")));
                }
                let new = &buf.filled()[before..];
                this.md5.update(new);
                this.checksums.0.update(new);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                this.failed = true;
                Poll::Ready(Err(e))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn compute(data: &[u8], expected: &Expected) -> Computed {
        let mut r = BodyReader::new(data, expected, u64::MAX);
        let mut sink = Vec::new();
        r.read_to_end(&mut sink).await.unwrap();
        assert_eq!(sink, data);
        r.finish()
    }

    #[tokio::test]
    async fn content_md5_is_checked() {
        let data = b"The quick brown fox";
        let md5: [u8; 16] = Md5::digest(data).into();
        let good = Expected {
            content_md5: Some(STANDARD.encode(md5)),
            ..Default::default()
        };
        let c = compute(data, &good).await;
        assert_eq!(c.md5, md5);
        assert_eq!(verify(&good, &c), Ok(()));
        let bad = Expected {
            content_md5: Some(STANDARD.encode([0u8; 16])),
            ..Default::default()
        };
        assert_eq!(verify(&bad, &c), Err(DigestError::BadDigest));
        let malformed = Expected {
            content_md5: Some("abc".into()),
            ..Default::default()
        };
        assert_eq!(verify(&malformed, &c), Err(DigestError::InvalidDigest));
    }

    #[tokio::test]
    async fn checksums_from_headers_and_trailers() {
        let data = b"hello world";
        // CRC32 of "hello world" is 0x0d4a1185.
        let crc = STANDARD.encode(0x0d4a_1185u32.to_be_bytes());
        let mut e = Expected {
            compute: vec!["x-amz-checksum-crc32".into()],
            ..Default::default()
        };
        e.add_trailer("X-Amz-Checksum-Crc32", &crc);
        let c = compute(data, &e).await;
        assert_eq!(verify(&e, &c), Ok(()));
        let mut wrong = e.clone();
        wrong.checksums[0].1 = STANDARD.encode(1u32.to_be_bytes());
        assert!(matches!(
            verify(&wrong, &c),
            Err(DigestError::ChecksumMismatch(_))
        ));
        // A checksum that was never computed cannot pass.
        let sha = Expected {
            checksums: vec![("x-amz-checksum-sha1".into(), "x".into())],
            ..Default::default()
        };
        let c = compute(data, &Expected::default()).await;
        assert!(verify(&sha, &c).is_err());
    }

    #[tokio::test]
    async fn the_limit_is_enforced() {
        let mut r = BodyReader::new(&[0u8; 100][..], &Expected::default(), 10);
        let mut sink = Vec::new();
        assert!(r.read_to_end(&mut sink).await.is_err());
        assert!(r.too_large);
    }

    #[test]
    fn multipart_etags_match_s3() {
        // Two parts whose MD5s are known: md5("a") and md5("b").
        let a = parse_md5_etag("\"0cc175b9c0f1b6a831c399e269772661\"").unwrap();
        let b = parse_md5_etag("92eb5ffee6ae2fec3ad71c777531578f").unwrap();
        let etag = multipart_etag(&[a, b]);
        assert!(etag.ends_with("-2"));
        let mut h = Md5::new();
        h.update(a);
        h.update(b);
        let d: [u8; 16] = h.finalize().into();
        assert_eq!(etag, format!("{}-2", md5_hex(&d)));
        assert_eq!(parse_md5_etag("zz"), None);
        assert_eq!(
            checksum_header("CRC32C").as_deref(),
            Some("x-amz-checksum-crc32c")
        );
        assert_eq!(checksum_header("MD5"), None);
    }
}
