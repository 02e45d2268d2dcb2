//! What a running gateway does besides answering: pull other writers' changes, and
//! sweep multipart uploads past their age.

use std::time::Duration;

use super::s3::{ShoalS3, abort};
use uplink::Uplink;

/// Merges other writers' changes now and then.
pub(super) async fn pull(uplink: Uplink, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = uplink.pull().await {
            tracing::warn!(error = %e, "cannot pull the catalog; retrying later");
        }
    }
}

/// Aborts multipart uploads older than `max_age` and forgets old completion records.
pub(super) async fn sweep(s3: ShoalS3, max_age: Duration, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    loop {
        tick.tick().await;
        let cutoff = shoal_proto::time::unix_ms().saturating_sub(max_age.as_millis() as u64);
        if let Err(e) = sweep_once(&s3, cutoff).await {
            tracing::warn!(error = %e, "cannot read the multipart uploads");
        }
    }
}

/// Aborts the uploads started before `cutoff_ms` (deleting their parts' pieces) and
/// drops completion records older than it. Returns how many uploads were aborted.
pub(super) async fn sweep_once(
    s3: &ShoalS3,
    cutoff_ms: u64,
) -> Result<usize, uplink::catalog::CatalogError> {
    let (uploads, completed) = s3.uploads.expired(cutoff_ms)?;
    let mut aborted = 0;
    for id in uploads {
        tracing::info!(upload = %id, "aborting a multipart upload past its age");
        match abort(s3, &id).await {
            Ok(()) => aborted += 1,
            Err(e) => tracing::warn!(upload = %id, error = ?e, "cannot abort an old upload"),
        }
    }
    for id in completed {
        s3.uploads.forget_completed(&id)?;
    }
    Ok(aborted)
}
