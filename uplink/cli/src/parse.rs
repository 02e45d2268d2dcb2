//! Parsing and formatting on the command line: `shoal://` locations, byte ranges,
//! durations, times. Pure functions.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

/// `shoal://bucket/key` split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) bucket: String,
    pub(crate) key: String,
}

pub(super) fn parse_location(s: &str) -> Option<Location> {
    let rest = s.strip_prefix("shoal://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    Some(Location {
        bucket: bucket.to_string(),
        key: key.to_string(),
    })
}

pub(crate) fn require_location(s: &str) -> Result<Location> {
    parse_location(s).ok_or_else(|| anyhow!("`{s}` is not a shoal://BUCKET[/KEY] location"))
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("`{s}` is not a duration like 7d or 12h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        "w" => n * 7 * 86_400,
        other => bail!("unknown duration unit `{other}` in `{s}` (use s, m, h, d or w)"),
    };
    Ok(Duration::from_secs(secs))
}

/// `START-END` (inclusive) → `[start, end)`; `END` empty = to `size`.
pub(super) fn parse_range(s: &str, size: u64) -> Result<(u64, u64)> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| anyhow!("range `{s}` is not START-END"))?;
    let start: u64 = a
        .trim()
        .parse()
        .with_context(|| format!("bad range start in `{s}`"))?;
    let end = if b.trim().is_empty() {
        size
    } else {
        let e: u64 = b
            .trim()
            .parse()
            .with_context(|| format!("bad range end in `{s}`"))?;
        e.saturating_add(1).min(size)
    };
    if start > end {
        bail!("range `{s}` is empty or outside the object of {size} bytes");
    }
    Ok((start, end))
}

pub(crate) fn format_time(ms: u64) -> String {
    // Seconds since the epoch as UTC date and time, without a date library.
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02}")
}
