//! Listing pages (ListObjects v1 and v2, ListObjectVersions, ListMultipartUploads): the
//! paging and folding rules are the uplink library's ([`uplink::listing`], which
//! `uplink ls` uses too), re-exported here; what is S3's own, the `encoding-type=url`
//! form of names, is here.

pub use uplink::listing::{
    Cursor, Entry, MAX_KEYS, Page, Resume, Row, Sorted, after_all_with_prefix, page, walk,
};

/// Percent-encodes a key or prefix for `encoding-type=url` (RFC 3986 unreserved
/// characters and `/` stay as they are, as AWS does).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_keeps_slashes() {
        assert_eq!(url_encode("a b/ü+c"), "a%20b/%C3%BC%2Bc");
    }
}
