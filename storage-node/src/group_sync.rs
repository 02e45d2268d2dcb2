//! Group commit: one sync shared by every commit that asked for it before it started.
//!
//! A commit that needs "everything I wrote so far is durable" calls [`GroupSync::run`]
//! with the sync to make (an fsync, a database flush). If no sync is running, it runs
//! one itself; if one is running, it waits for it to end and then for the next one,
//! which a single waiter runs for all who queued meanwhile. A caller is released only
//! by a successful run that *started after it asked*, so that run covers every write
//! the caller made before asking. A failed run releases nobody: its leader gets the
//! error, and each waiter it would have covered runs (or joins) a new attempt.
//!
//! Under load this turns N concurrent syncs into about two; alone, a commit pays one
//! sync as before.

use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct State {
    /// Tickets handed out: one per call.
    requested: u64,
    /// Every ticket up to this one is covered by a successful run.
    completed: u64,
    /// A run is in progress.
    running: bool,
    /// Runs started (for tests and metrics).
    runs: u64,
}

/// A sync shared among concurrent callers (see the module docs).
#[derive(Debug, Default)]
pub struct GroupSync {
    state: Mutex<State>,
    changed: Condvar,
}

impl GroupSync {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few counters updated together under the lock: still valid
        // after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once a successful run of a sync that started after this call began has
    /// ended; runs `sync` itself when no other caller is running one. Returns the error
    /// of `sync` if this caller ran it and it failed.
    pub fn run<E>(&self, sync: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        let mut s = self.lock();
        s.requested += 1;
        let ticket = s.requested;
        loop {
            if s.completed >= ticket {
                return Ok(());
            }
            if !s.running {
                s.running = true;
                s.runs += 1;
                // Every ticket handed out so far was asked for before this run starts.
                let covers = s.requested;
                drop(s);
                let result = sync();
                let mut s = self.lock();
                s.running = false;
                if result.is_ok() {
                    s.completed = s.completed.max(covers);
                }
                drop(s);
                self.changed.notify_all();
                return result;
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Runs started so far.
    pub fn runs(&self) -> u64 {
        self.lock().runs
    }

    /// Calls made so far (each either ran a sync or was covered by one).
    pub fn requests(&self) -> u64 {
        self.lock().requested
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    /// Waits (bounded) until `check` holds.
    fn wait_for(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn callers_queued_during_a_run_share_the_next_one() {
        const N: u64 = 8;
        let group = Arc::new(GroupSync::new());
        let syncs = Arc::new(AtomicU64::new(0));
        let first = {
            let (group, syncs) = (group.clone(), syncs.clone());
            let inner = group.clone();
            std::thread::spawn(move || {
                group.run(|| {
                    // Hold the first run until every other caller has queued.
                    wait_for("all callers queued", || inner.requests() == N);
                    syncs.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), ()>(())
                })
            })
        };
        wait_for("the first run", || group.runs() == 1);
        let others: Vec<_> = (1..N)
            .map(|_| {
                let (group, syncs) = (group.clone(), syncs.clone());
                std::thread::spawn(move || {
                    group.run(|| {
                        syncs.fetch_add(1, Ordering::SeqCst);
                        Ok::<(), ()>(())
                    })
                })
            })
            .collect();
        assert_eq!(first.join().unwrap(), Ok(()));
        for t in others {
            assert_eq!(t.join().unwrap(), Ok(()));
        }
        // The callers that queued during the first run asked after it started, so it
        // does not cover them; one second run covers all seven.
        assert_eq!(syncs.load(Ordering::SeqCst), 2);
        assert_eq!(group.runs(), 2);
    }

    #[test]
    fn a_failed_run_covers_nobody_and_its_waiters_try_again() {
        let group = Arc::new(GroupSync::new());
        let leader = {
            let group = group.clone();
            let inner = group.clone();
            std::thread::spawn(move || {
                group.run(|| {
                    wait_for("the waiter queued", || inner.requests() == 2);
                    Err("disk full")
                })
            })
        };
        wait_for("the first run", || group.runs() == 1);
        let waiter = {
            let group = group.clone();
            std::thread::spawn(move || group.run(|| Ok::<(), &str>(())))
        };
        assert_eq!(leader.join().unwrap(), Err("disk full"));
        assert_eq!(waiter.join().unwrap(), Ok(()));
        assert_eq!(group.runs(), 2);
        // A lone caller after that runs its own sync.
        assert_eq!(group.run(|| Ok::<(), &str>(())), Ok(()));
        assert_eq!(group.runs(), 3);
    }
}
