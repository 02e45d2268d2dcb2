//! Unix-millisecond time, and the freshness check applied to signed orders.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    let real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    #[cfg(feature = "test-clock")]
    let real = real.saturating_add(test_clock::OFFSET_MS.load(std::sync::atomic::Ordering::SeqCst));
    real
}

/// Tests that need months to pass (leases, record expiry) move this process's
/// [`unix_ms`] forward. Only with the `test-clock` feature, which no binary enables.
#[cfg(feature = "test-clock")]
pub mod test_clock {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    pub(super) static OFFSET_MS: AtomicU64 = AtomicU64::new(0);

    /// Moves [`super::unix_ms`] forward by `by`, for the whole process.
    pub fn advance(by: Duration) {
        OFFSET_MS.fetch_add(
            u64::try_from(by.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }
}

/// Why a timestamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Freshness {
    #[error("timestamp is {age_ms} ms old, beyond the {window_ms} ms window")]
    Stale { age_ms: u64, window_ms: u64 },
    #[error("timestamp is {ahead_ms} ms in the future, beyond the {window_ms} ms window")]
    Future { ahead_ms: u64, window_ms: u64 },
}

/// Accepts `timestamp_ms` if it lies within `window_ms` of `now_ms`, either side.
pub fn check_fresh(timestamp_ms: u64, now_ms: u64, window_ms: u64) -> Result<(), Freshness> {
    check_within(timestamp_ms, now_ms, window_ms, window_ms)
}

/// Accepts `timestamp_ms` if it lies at most `behind_ms` before `now_ms` and at most
/// `ahead_ms` after it.
pub fn check_within(
    timestamp_ms: u64,
    now_ms: u64,
    behind_ms: u64,
    ahead_ms: u64,
) -> Result<(), Freshness> {
    if timestamp_ms.saturating_add(behind_ms) < now_ms {
        return Err(Freshness::Stale {
            age_ms: now_ms - timestamp_ms,
            window_ms: behind_ms,
        });
    }
    if timestamp_ms > now_ms.saturating_add(ahead_ms) {
        return Err(Freshness::Future {
            ahead_ms: timestamp_ms - now_ms,
            window_ms: ahead_ms,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_both_sides() {
        let now = 1_000_000;
        assert_eq!(check_fresh(now, now, 10), Ok(()));
        assert_eq!(check_fresh(now - 10, now, 10), Ok(()));
        assert_eq!(check_fresh(now + 10, now, 10), Ok(()));
        assert!(matches!(
            check_fresh(now - 11, now, 10),
            Err(Freshness::Stale { age_ms: 11, .. })
        ));
        assert!(matches!(
            check_fresh(now + 11, now, 10),
            Err(Freshness::Future { ahead_ms: 11, .. })
        ));
        // A timestamp near u64::MAX must not overflow.
        assert!(check_fresh(u64::MAX - 5, now, 10).is_err());
        // Asymmetric: far behind, little ahead.
        assert_eq!(check_within(now - 100, now, 100, 5), Ok(()));
        assert_eq!(check_within(now + 5, now, 100, 5), Ok(()));
        assert!(matches!(
            check_within(now + 6, now, 100, 5),
            Err(Freshness::Future {
                ahead_ms: 6,
                window_ms: 5
            })
        ));
    }
}
