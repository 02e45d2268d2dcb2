//! Listing pages (ListObjects v1 and v2, ListObjectVersions) as plain code: given the
//! keys after a start position, in key order, fold common prefixes at the delimiter and
//! cut the page at `max-keys`, as S3 does.
//!
//! Continuation tokens are opaque to clients: `base64url("k" key)` resumes after an
//! object key, `base64url("p" prefix)` after every key under a common prefix. A token
//! that does not decode is refused (`InvalidArgument`), never guessed at.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Most keys one page returns (S3's cap on `max-keys`).
pub const MAX_KEYS: usize = 1000;

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// From the first key under the prefix.
    Start,
    /// After this key (exclusive): `start-after`, a v1 `marker`, or a token naming a key.
    AfterKey(String),
    /// After every key that starts with this common prefix.
    AfterPrefix(String),
}

impl Resume {
    /// The key to start scanning from (exclusive bound handled by [`page`]).
    pub fn scan_from(&self) -> Option<&str> {
        match self {
            Resume::Start => None,
            Resume::AfterKey(k) | Resume::AfterPrefix(k) => Some(k),
        }
    }

    /// The opaque token for this position.
    pub fn token(&self) -> Option<String> {
        match self {
            Resume::Start => None,
            Resume::AfterKey(k) => Some(URL_SAFE_NO_PAD.encode([b"k", k.as_bytes()].concat())),
            Resume::AfterPrefix(p) => Some(URL_SAFE_NO_PAD.encode([b"p", p.as_bytes()].concat())),
        }
    }

    /// Decodes a continuation token made by [`Resume::token`].
    pub fn from_token(token: &str) -> Option<Resume> {
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        let (kind, rest) = raw.split_first()?;
        let s = String::from_utf8(rest.to_vec()).ok()?;
        match kind {
            b'k' => Some(Resume::AfterKey(s)),
            b'p' => Some(Resume::AfterPrefix(s)),
            _ => None,
        }
    }

    /// A v1 `marker` or v2 `start-after`: a plain key. A marker that is a common prefix
    /// a previous page returned (v1 `NextMarker`) skips that prefix's keys too.
    pub fn from_marker(marker: &str, delimiter: Option<&str>) -> Resume {
        if marker.is_empty() {
            Resume::Start
        } else if delimiter.is_some_and(|d| !d.is_empty() && marker.ends_with(d)) {
            Resume::AfterPrefix(marker.to_string())
        } else {
            Resume::AfterKey(marker.to_string())
        }
    }
}

/// One row of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row<T> {
    Object(T),
    CommonPrefix(String),
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub rows: Vec<Row<T>>,
    /// Where the next page starts, when the listing was cut at `max_keys`.
    pub next: Option<Resume>,
}

impl<T> Page<T> {
    pub fn is_truncated(&self) -> bool {
        self.next.is_some()
    }

    pub fn objects(&self) -> impl Iterator<Item = &T> {
        self.rows.iter().filter_map(|r| match r {
            Row::Object(o) => Some(o),
            Row::CommonPrefix(_) => None,
        })
    }

    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        self.rows.iter().filter_map(|r| match r {
            Row::CommonPrefix(p) => Some(p.as_str()),
            Row::Object(_) => None,
        })
    }
}

/// Builds one page from `entries`: every `(key, item)` whose key starts with `prefix`,
/// in ascending key order, starting at or after the resume position (the caller may
/// pass keys before it; they are skipped). `max_keys` counts objects and common
/// prefixes together; 0 returns an empty, untruncated page, as S3 does.
pub fn page<T, E>(
    entries: impl IntoIterator<Item = Result<(String, T), E>>,
    prefix: &str,
    delimiter: Option<&str>,
    resume: &Resume,
    max_keys: usize,
) -> Result<Page<T>, E> {
    let delimiter = delimiter.filter(|d| !d.is_empty());
    let max_keys = max_keys.min(MAX_KEYS);
    let mut rows: Vec<Row<T>> = Vec::new();
    let mut last: Option<Resume> = None;
    if max_keys == 0 {
        return Ok(Page { rows, next: None });
    }
    for item in entries {
        let (key, value) = item?;
        if !key.starts_with(prefix) {
            continue;
        }
        match resume {
            Resume::Start => {}
            Resume::AfterKey(after) if key.as_str() <= after.as_str() => continue,
            Resume::AfterPrefix(p) if key.starts_with(p.as_str()) || key.as_str() <= p.as_str() => {
                continue;
            }
            _ => {}
        }
        // A key under the common prefix just emitted folds into it.
        if let Some(Resume::AfterPrefix(p)) = &last
            && key.starts_with(p.as_str())
        {
            continue;
        }
        let folded = delimiter.and_then(|d| {
            key[prefix.len()..]
                .find(d)
                .map(|at| key[..prefix.len() + at + d.len()].to_string())
        });
        if rows.len() == max_keys {
            // One more row exists: the page is cut here.
            return Ok(Page { rows, next: last });
        }
        match folded {
            Some(p) => {
                rows.push(Row::CommonPrefix(p.clone()));
                last = Some(Resume::AfterPrefix(p));
            }
            None => {
                rows.push(Row::Object(value));
                last = Some(Resume::AfterKey(key));
            }
        }
    }
    Ok(Page { rows, next: None })
}

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

    fn keys(ks: &[&str]) -> Vec<Result<(String, String), ()>> {
        ks.iter()
            .map(|k| Ok((k.to_string(), k.to_string())))
            .collect()
    }

    fn render(p: &Page<String>) -> Vec<String> {
        p.rows
            .iter()
            .map(|r| match r {
                Row::Object(o) => o.clone(),
                Row::CommonPrefix(p) => format!("P:{p}"),
            })
            .collect()
    }

    const TREE: &[&str] = &[
        "a.txt", "dir/", "dir/x", "dir/y/z", "dir2/a", "e", "f/g", "f/h", "z",
    ];

    #[test]
    fn folds_at_the_delimiter_in_key_order() {
        let p = page(keys(TREE), "", Some("/"), &Resume::Start, 1000).unwrap();
        assert_eq!(render(&p), ["a.txt", "P:dir/", "P:dir2/", "e", "P:f/", "z"]);
        assert!(!p.is_truncated());
        let p = page(keys(TREE), "dir/", Some("/"), &Resume::Start, 1000).unwrap();
        assert_eq!(render(&p), ["dir/", "dir/x", "P:dir/y/"]);
        let p = page(keys(TREE), "", None, &Resume::Start, 1000).unwrap();
        assert_eq!(render(&p).len(), TREE.len());
    }

    #[test]
    fn pages_join_up_to_the_whole_listing() {
        for delimiter in [None, Some("/")] {
            let whole = render(&page(keys(TREE), "", delimiter, &Resume::Start, 1000).unwrap());
            for max in 1..=4 {
                let mut got = Vec::new();
                let mut resume = Resume::Start;
                loop {
                    let p = page(keys(TREE), "", delimiter, &resume, max).unwrap();
                    assert!(p.rows.len() <= max);
                    got.extend(render(&p));
                    match p.next {
                        // Through the opaque token, as a client would send it back.
                        Some(next) => {
                            resume = Resume::from_token(&next.token().unwrap()).unwrap();
                        }
                        None => break,
                    }
                }
                assert_eq!(got, whole, "max-keys {max}, delimiter {delimiter:?}");
            }
        }
    }

    #[test]
    fn max_keys_zero_and_start_after() {
        let p = page(keys(TREE), "", Some("/"), &Resume::Start, 0).unwrap();
        assert!(p.rows.is_empty() && !p.is_truncated());
        let r = Resume::from_marker("dir/x", None);
        let p = page(keys(TREE), "", None, &r, 2).unwrap();
        assert_eq!(render(&p), ["dir/y/z", "dir2/a"]);
        assert!(p.is_truncated());
        // A v1 NextMarker that is a common prefix skips its keys.
        let r = Resume::from_marker("dir/", Some("/"));
        let p = page(keys(TREE), "", Some("/"), &r, 1).unwrap();
        assert_eq!(render(&p), ["P:dir2/"]);
    }

    #[test]
    fn tokens_are_checked() {
        assert_eq!(Resume::from_token("not base64!"), None);
        assert_eq!(Resume::from_token(&URL_SAFE_NO_PAD.encode(b"xabc")), None);
        assert_eq!(Resume::from_token(""), None);
        let t = Resume::AfterKey("ü/k".into()).token().unwrap();
        assert_eq!(Resume::from_token(&t), Some(Resume::AfterKey("ü/k".into())));
    }

    #[test]
    fn url_encoding_keeps_slashes() {
        assert_eq!(url_encode("a b/ü+c"), "a%20b/%C3%BC%2Bc");
    }
}
