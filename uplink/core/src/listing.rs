//! Listing pages as plain code, the one rule every listing of Shoal folds and pages by
//! (S3's ListObjects v1 and v2, ListObjectVersions and ListMultipartUploads in the
//! gateway, `uplink ls` through [`crate::catalog::Catalog::list`]): given the keys
//! after a start position, in key order, fold common prefixes at the delimiter and cut
//! the page at `max-keys`, as S3 does.
//!
//! Keys are read through a [`Cursor`] that can seek: a listing seeks past every common
//! prefix it folds, so it costs time in what it returns, not in the keys it skips.
//! [`walk`] hands out the rows one by one (for a listing of any length); [`page`] cuts
//! them at `max-keys` and says where the next page starts.
//!
//! Continuation tokens are opaque to clients: `base64url("k" key)` resumes after an
//! object key, `base64url("p" prefix)` after every key under a common prefix. A token
//! that does not decode is refused by the caller (`None` here), never guessed at.

use std::ops::ControlFlow;

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

    /// The same page with each object mapped by `f` (common prefixes unchanged).
    pub fn try_map<U, E>(self, mut f: impl FnMut(T) -> Result<U, E>) -> Result<Page<U>, E> {
        let rows = self
            .rows
            .into_iter()
            .map(|r| {
                Ok(match r {
                    Row::Object(o) => Row::Object(f(o)?),
                    Row::CommonPrefix(p) => Row::CommonPrefix(p),
                })
            })
            .collect::<Result<Vec<_>, E>>()?;
        Ok(Page {
            rows,
            next: self.next,
        })
    }

    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        self.rows.iter().filter_map(|r| match r {
            Row::CommonPrefix(p) => Some(p.as_str()),
            Row::Object(_) => None,
        })
    }
}

/// Keys in ascending order, with their items, that can skip ahead: what a page is read
/// from. A listing seeks past every common prefix it folds, so it costs time in what it
/// returns, not in the keys it skips.
pub trait Cursor {
    type Item;
    type Error;
    /// The next `(key, item)` at or after the position, in ascending key order.
    fn next_entry(&mut self) -> Option<Entry<Self::Item, Self::Error>>;
    /// Moves to the first key at or after `key` (never backwards: a `key` before the
    /// position is ignored).
    fn seek(&mut self, key: &str);
}

/// One entry a [`Cursor`] hands out: its key and item, or why it could not be read.
pub type Entry<T, E> = Result<(String, T), E>;

/// The smallest string greater than every string that starts with `p` (`p` with its
/// last character raised by one, dropping characters that cannot be raised), or `None`
/// when there is none (every later key starts with `p`). Byte order and code-point
/// order agree in UTF-8, so this bound holds for the catalog's byte-ordered keys.
pub fn after_all_with_prefix(p: &str) -> Option<String> {
    let mut s = p.to_string();
    while let Some(c) = s.pop() {
        let mut next = c as u32 + 1;
        // Surrogates are not characters: skip over them.
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(n) = char::from_u32(next) {
            s.push(n);
            return Some(s);
        }
    }
    None
}

/// Builds one page from `cursor`: every `(key, item)` whose key starts with `prefix`,
/// in ascending key order, from the resume position on. `max_keys` counts objects and
/// common prefixes together; 0 returns an empty, untruncated page, as S3 does. Reads
/// at most one key past the page, and none under a common prefix after its first.
pub fn page<C: Cursor>(
    cursor: &mut C,
    prefix: &str,
    delimiter: Option<&str>,
    resume: &Resume,
    max_keys: usize,
) -> Result<Page<C::Item>, C::Error> {
    let max_keys = max_keys.min(MAX_KEYS);
    let mut rows: Vec<Row<C::Item>> = Vec::new();
    let mut last: Option<Resume> = None;
    let mut cut = false;
    if max_keys == 0 {
        return Ok(Page { rows, next: None });
    }
    walk(cursor, prefix, delimiter, resume, |at, row| {
        if rows.len() == max_keys {
            // One more row exists: the page is cut here.
            cut = true;
            return Ok(ControlFlow::Break(()));
        }
        rows.push(row);
        last = Some(at);
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(Page {
        rows,
        next: if cut { last } else { None },
    })
}

/// Hands `visit` every row of the listing of `prefix` from `resume` on, in key order,
/// with the position just after the row (where a listing cut there resumes), until
/// the rows run out or `visit` breaks. Keys that contain `delimiter` after the prefix
/// fold into one [`Row::CommonPrefix`] each (cut just after the delimiter), and the
/// cursor seeks past the rest of their keys: it reads one key per common prefix.
pub fn walk<C: Cursor>(
    cursor: &mut C,
    prefix: &str,
    delimiter: Option<&str>,
    resume: &Resume,
    mut visit: impl FnMut(Resume, Row<C::Item>) -> Result<ControlFlow<()>, C::Error>,
) -> Result<(), C::Error> {
    let delimiter = delimiter.filter(|d| !d.is_empty());
    // Where the listing starts: the prefix, or past the resume position.
    match resume {
        Resume::Start => cursor.seek(prefix),
        Resume::AfterKey(k) => cursor.seek(if k.as_str() > prefix { k } else { prefix }),
        Resume::AfterPrefix(p) => match after_all_with_prefix(p) {
            Some(after) if after.as_str() > prefix => cursor.seek(&after),
            Some(_) => cursor.seek(prefix),
            None => return Ok(()),
        },
    }
    // The common prefix of the row just handed out, if that row was one.
    let mut folding: Option<String> = None;
    while let Some(item) = cursor.next_entry() {
        let (key, value) = item?;
        if !key.starts_with(prefix) {
            if key.as_str() > prefix {
                // Keys are in order: nothing later starts with the prefix.
                break;
            }
            continue;
        }
        match resume {
            Resume::AfterKey(after) if key.as_str() <= after.as_str() => continue,
            Resume::AfterPrefix(p) if key.starts_with(p.as_str()) || key.as_str() <= p.as_str() => {
                continue;
            }
            _ => {}
        }
        // A key under the common prefix just handed out folds into it (a cursor need
        // not honour a seek).
        if let Some(p) = &folding
            && key.starts_with(p.as_str())
        {
            continue;
        }
        let folded = delimiter.and_then(|d| {
            key[prefix.len()..]
                .find(d)
                .map(|at| key[..prefix.len() + at + d.len()].to_string())
        });
        match folded {
            Some(p) => {
                let after = after_all_with_prefix(&p);
                if visit(Resume::AfterPrefix(p.clone()), Row::CommonPrefix(p.clone()))?.is_break() {
                    return Ok(());
                }
                folding = Some(p);
                // Skip every other key under the prefix just folded.
                match after {
                    Some(a) => cursor.seek(&a),
                    None => break,
                }
            }
            None => {
                folding = None;
                if visit(Resume::AfterKey(key), Row::Object(value))?.is_break() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Items in memory, in key order, as a [`Cursor`] (for what is not in the catalog's
/// objects table, such as the gateway's multipart uploads). Several items may share a
/// key; they keep the order they were given in.
#[derive(Debug, Clone)]
pub struct Sorted<T> {
    items: std::collections::VecDeque<(String, T)>,
}

impl<T> Sorted<T> {
    /// The items, sorted by key (a stable sort: items of one key keep their order).
    pub fn new(mut items: Vec<(String, T)>) -> Self {
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Self {
            items: items.into(),
        }
    }
}

impl<T> Cursor for Sorted<T> {
    type Item = T;
    type Error = std::convert::Infallible;

    fn next_entry(&mut self) -> Option<Entry<T, Self::Error>> {
        self.items.pop_front().map(Ok)
    }

    fn seek(&mut self, key: &str) {
        while self.items.front().is_some_and(|(k, _)| k.as_str() < key) {
            self.items.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sorted list as a cursor, counting the entries it hands out.
    struct Keys {
        keys: Vec<String>,
        at: usize,
        read: usize,
    }

    impl Cursor for Keys {
        type Item = String;
        type Error = ();
        fn next_entry(&mut self) -> Option<Result<(String, String), ()>> {
            let k = self.keys.get(self.at)?.clone();
            self.at += 1;
            self.read += 1;
            Some(Ok((k.clone(), k)))
        }
        fn seek(&mut self, key: &str) {
            let to = self.keys.partition_point(|k| k.as_str() < key);
            self.at = self.at.max(to);
        }
    }

    fn keys(ks: &[&str]) -> Keys {
        let mut keys: Vec<String> = ks.iter().map(|k| k.to_string()).collect();
        keys.sort();
        Keys {
            keys,
            at: 0,
            read: 0,
        }
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
        let p = page(&mut keys(TREE), "", Some("/"), &Resume::Start, 1000).unwrap();
        assert_eq!(render(&p), ["a.txt", "P:dir/", "P:dir2/", "e", "P:f/", "z"]);
        assert!(!p.is_truncated());
        let p = page(&mut keys(TREE), "dir/", Some("/"), &Resume::Start, 1000).unwrap();
        assert_eq!(render(&p), ["dir/", "dir/x", "P:dir/y/"]);
        let p = page(&mut keys(TREE), "", None, &Resume::Start, 1000).unwrap();
        assert_eq!(render(&p).len(), TREE.len());
    }

    #[test]
    fn pages_join_up_to_the_whole_listing() {
        for delimiter in [None, Some("/")] {
            let whole =
                render(&page(&mut keys(TREE), "", delimiter, &Resume::Start, 1000).unwrap());
            for max in 1..=4 {
                let mut got = Vec::new();
                let mut resume = Resume::Start;
                loop {
                    let p = page(&mut keys(TREE), "", delimiter, &resume, max).unwrap();
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
        let p = page(&mut keys(TREE), "", Some("/"), &Resume::Start, 0).unwrap();
        assert!(p.rows.is_empty() && !p.is_truncated());
        let r = Resume::from_marker("dir/x", None);
        let p = page(&mut keys(TREE), "", None, &r, 2).unwrap();
        assert_eq!(render(&p), ["dir/y/z", "dir2/a"]);
        assert!(p.is_truncated());
        // A v1 NextMarker that is a common prefix skips its keys.
        let r = Resume::from_marker("dir/", Some("/"));
        let p = page(&mut keys(TREE), "", Some("/"), &r, 1).unwrap();
        assert_eq!(render(&p), ["P:dir2/"]);
    }

    #[test]
    fn a_folded_listing_reads_what_it_returns_not_what_it_skips() {
        // 200 sub-prefixes of 50 keys each, and keys around them.
        let mut all = vec!["a".to_string(), "big0".to_string(), "c/d".to_string()];
        for d in 0..200 {
            for f in 0..50 {
                all.push(format!("big/d{d:03}/f{f:02}"));
            }
        }
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut c = keys(&refs);
        let p = page(&mut c, "big/", Some("/"), &Resume::Start, 1000).unwrap();
        assert_eq!(p.prefixes().count(), 200);
        assert!(!p.is_truncated());
        // One key per common prefix, and one past the end ("big0").
        assert_eq!(c.read, 201);

        // A page cut at 10 reads 11 keys, and the next page starts past the 10th prefix.
        let mut c = keys(&refs);
        let p = page(&mut c, "big/", Some("/"), &Resume::Start, 10).unwrap();
        assert_eq!(c.read, 11);
        let next = p.next.unwrap();
        assert_eq!(next, Resume::AfterPrefix("big/d009/".into()));
        let mut c = keys(&refs);
        let p = page(&mut c, "big/", Some("/"), &next, 10).unwrap();
        assert_eq!(p.prefixes().next(), Some("big/d010/"));
        assert_eq!(c.read, 11);
    }

    /// The page as a plain scan of every key computes it (the rules written out again,
    /// only here, to check the seeking version against).
    fn reference(
        all: &[String],
        prefix: &str,
        delimiter: Option<&str>,
        resume: &Resume,
        max: usize,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for k in all {
            if !k.starts_with(prefix) {
                continue;
            }
            let skip = match resume {
                Resume::Start => false,
                Resume::AfterKey(a) => k <= a,
                Resume::AfterPrefix(p) => k.starts_with(p.as_str()) || k <= p,
            };
            if skip {
                continue;
            }
            let row = match delimiter.and_then(|d| k[prefix.len()..].find(d).map(|at| (at, d))) {
                Some((at, d)) => format!("P:{}", &k[..prefix.len() + at + d.len()]),
                None => k.clone(),
            };
            if out.last() != Some(&row) {
                out.push(row);
            }
        }
        out.truncate(max);
        out
    }

    #[test]
    fn seeking_pages_equal_a_plain_scan() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = ['a', 'b', '/', '-', 'é', '0', '\u{10FFFF}'];
        for _ in 0..300 {
            let mut all: Vec<String> = (0..rng.random_range(0..40))
                .map(|_| {
                    (0..rng.random_range(1..6))
                        .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                        .collect()
                })
                .collect();
            all.sort();
            all.dedup();
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            let prefix = ["", "a", "a/", "b/", "\u{10FFFF}"][rng.random_range(0..5)];
            let delimiter =
                [None, Some("/"), Some("-"), Some("é"), Some("a/")][rng.random_range(0..5)];
            let max = rng.random_range(1..6);
            let resume = match rng.random_range(0..3) {
                0 => Resume::Start,
                1 => Resume::AfterKey(
                    all.get(rng.random_range(0..all.len().max(1)))
                        .cloned()
                        .unwrap_or_default(),
                ),
                _ => Resume::AfterPrefix(
                    ["a/", "b", "\u{10FFFF}", "é"][rng.random_range(0..4)].to_string(),
                ),
            };
            let got = render(&page(&mut keys(&refs), prefix, delimiter, &resume, max).unwrap());
            assert_eq!(
                got,
                reference(&all, prefix, delimiter, &resume, max),
                "keys {all:?} prefix {prefix:?} delimiter {delimiter:?} resume {resume:?} max {max}"
            );
        }
    }

    #[test]
    fn walk_hands_out_every_row_with_where_the_next_starts() {
        let mut got = Vec::new();
        walk(&mut keys(TREE), "", Some("/"), &Resume::Start, |at, row| {
            got.push((at, row));
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        let whole = page(&mut keys(TREE), "", Some("/"), &Resume::Start, 1000).unwrap();
        assert_eq!(
            got.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
            whole.rows
        );
        assert_eq!(got[1].0, Resume::AfterPrefix("dir/".into()));
        assert_eq!(got[3].0, Resume::AfterKey("e".into()));
        // A walk may run past 1,000 rows (a page never does), and stops when told.
        let many: Vec<String> = (0..2500).map(|i| format!("k{i:05}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut n = 0;
        walk(&mut keys(&refs), "", None, &Resume::Start, |_, _| {
            n += 1;
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        assert_eq!(n, 2500);
        let mut c = keys(&refs);
        walk(&mut c, "", None, &Resume::Start, |_, _| {
            Ok(ControlFlow::Break(()))
        })
        .unwrap();
        assert_eq!(c.read, 1);
    }

    #[test]
    fn sorted_items_share_keys_and_keep_their_order() {
        let items = vec![
            ("b/x".to_string(), 1),
            ("a".to_string(), 2),
            ("b/x".to_string(), 3),
            ("b/y/z".to_string(), 4),
            ("c".to_string(), 5),
        ];
        let render = |p: &Page<i32>| -> Vec<String> {
            p.rows
                .iter()
                .map(|r| match r {
                    Row::Object(o) => o.to_string(),
                    Row::CommonPrefix(p) => format!("P:{p}"),
                })
                .collect()
        };
        let Ok(p) = page(
            &mut Sorted::new(items.clone()),
            "b/",
            Some("/"),
            &Resume::Start,
            1000,
        );
        assert_eq!(render(&p), ["1", "3", "P:b/y/"]);
        // Cut between two items of one key: the next page starts after the key.
        let Ok(p) = page(&mut Sorted::new(items.clone()), "", None, &Resume::Start, 2);
        assert_eq!(render(&p), ["2", "1"]);
        assert_eq!(p.next, Some(Resume::AfterKey("b/x".into())));
        let Ok(p) = page(&mut Sorted::new(items), "", Some("/"), &Resume::Start, 2);
        assert_eq!(render(&p), ["2", "P:b/"]);
        assert_eq!(p.next, Some(Resume::AfterPrefix("b/".into())));
    }

    #[test]
    fn the_bound_after_a_prefix() {
        assert_eq!(after_all_with_prefix("dir/").as_deref(), Some("dir0"));
        assert_eq!(
            after_all_with_prefix("a\u{D7FF}").as_deref(),
            Some("a\u{E000}")
        );
        assert_eq!(after_all_with_prefix("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(after_all_with_prefix("\u{10FFFF}"), None);
        assert_eq!(after_all_with_prefix(""), None);
        // Every key under the prefix sorts before the bound, byte-wise as well.
        let b = after_all_with_prefix("é/").unwrap();
        for k in ["é/", "é/\u{10FFFF}\u{10FFFF}", "é/zz"] {
            assert!(k.as_bytes() < b.as_bytes(), "{k:?}");
        }
    }

    #[test]
    fn tokens_are_checked() {
        assert_eq!(Resume::from_token("not base64!"), None);
        assert_eq!(Resume::from_token(&URL_SAFE_NO_PAD.encode(b"xabc")), None);
        assert_eq!(Resume::from_token(""), None);
        let t = Resume::AfterKey("ü/k".into()).token().unwrap();
        assert_eq!(Resume::from_token(&t), Some(Resume::AfterKey("ü/k".into())));
    }
}
