//! Deadlines: poll a condition until it holds, and bound a whole test.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::bail;

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(10);

/// Waits until `check` returns true, polling every 10 ms; fails after `deadline`.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= end {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] for code without a runtime: polls `check` on this thread.
pub fn poll_until(
    deadline: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let end = Instant::now() + deadline;
    loop {
        if check() {
            return Ok(());
        }
        if Instant::now() >= end {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until `sample` has returned the same value for `quiet` (sampled every
/// `every`), or `limit` has passed, whichever comes first; returns the last sample. For
/// measurements that need a network at rest (a routing table that stopped changing);
/// a network that never settles is measured anyway.
pub async fn settle<T, F, Fut>(
    limit: Duration,
    quiet: Duration,
    every: Duration,
    mut sample: F,
) -> T
where
    T: PartialEq,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let end = Instant::now() + limit;
    let (mut last, mut since) = (sample().await, Instant::now());
    while since.elapsed() < quiet && Instant::now() < end {
        tokio::time::sleep(every).await;
        let now = sample().await;
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

/// Runs `test` and fails (panics: this is for tests) if it takes longer than `limit`.
pub async fn bounded<T>(limit: Duration, test: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, test).await {
        Ok(out) => out,
        Err(_) => panic!("test timed out after {limit:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_condition_that_never_holds_fails_with_what_was_awaited() {
        let err = wait_until(Duration::from_millis(30), "the moon", || async { false })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("the moon"), "{err}");
        let mut n = 0;
        poll_until(Duration::from_secs(5), "three polls", || {
            n += 1;
            n == 3
        })
        .unwrap();
        assert_eq!(bounded(Duration::from_secs(5), async { 7 }).await, 7);
        let mut k = 0;
        let settled = settle(
            Duration::from_secs(5),
            Duration::from_millis(30),
            Duration::from_millis(5),
            || {
                k += 1;
                let v = k.min(3);
                async move { v }
            },
        )
        .await;
        assert_eq!(settled, 3);
    }
}
