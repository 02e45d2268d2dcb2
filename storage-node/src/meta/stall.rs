//! Which DB calls are in flight and since when, so [`super::MetaDb::stall`] can tell how
//! long the oldest one has been running.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// DB calls in flight and when each started (see [`MetaDb::stall`]).
#[derive(Debug, Default)]
pub(super) struct StallWatch {
    next: AtomicU64,
    calls: Mutex<HashMap<u64, (Instant, &'static str)>>,
}

impl StallWatch {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, (Instant, &'static str)>> {
        // A map of start times: still valid after a panic elsewhere.
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn enter(&self, what: &'static str) -> StallGuard<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, (Instant::now(), what));
        StallGuard { watch: self, id }
    }

    pub(super) fn longest(&self) -> Option<(Duration, &'static str)> {
        self.lock()
            .values()
            .map(|(started, what)| (started.elapsed(), *what))
            .max_by_key(|(d, _)| *d)
    }
}

pub(super) struct StallGuard<'a> {
    watch: &'a StallWatch,
    id: u64,
}

impl Drop for StallGuard<'_> {
    fn drop(&mut self) {
        self.watch.lock().remove(&self.id);
    }
}
