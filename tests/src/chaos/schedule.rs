//! The chaos run's faults as a deterministic schedule: from a seed, which node is killed,
//! restarted, cut off, partitioned or healed, and when. Plain code: the run applies it;
//! the rules (never more than `max_down` nodes unavailable at once, everything restored
//! at the end) are checked here by tests.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_test_kit::Xorshift;

/// One fault, or its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` of node `i`.
    Kill(usize),
    /// Node `i` started again on its directory.
    Restart(usize),
    /// Node `i`'s link goes down.
    Cut(usize),
    /// Node `i`'s link comes back.
    Reconnect(usize),
    /// These nodes are split off on a bridge of their own (they reach only each other).
    Partition(Vec<usize>),
    /// The partition's nodes join the rest again.
    Heal(Vec<usize>),
}

/// A fault and when it happens, from the start of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: Duration,
    pub fault: Fault,
}

/// What the schedule is made for.
#[derive(Debug, Clone)]
pub struct Params {
    pub nodes: usize,
    /// Most nodes unavailable (killed, cut or partitioned off) at once: `total - repair`
    /// of the scheme, which bounds the holders of any segment that are down.
    pub max_down: usize,
    /// Faults start within this; at its end everything is restored.
    pub duration: Duration,
    /// Pause between two events: uniform in `gap.0..=gap.1`.
    pub gap: (Duration, Duration),
}

/// Which nodes are down, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub killed: BTreeSet<usize>,
    pub cut: BTreeSet<usize>,
    pub partitioned: BTreeSet<usize>,
}

impl State {
    /// Nodes unavailable to the clients for any reason.
    pub fn down(&self) -> BTreeSet<usize> {
        self.killed
            .iter()
            .chain(&self.cut)
            .chain(&self.partitioned)
            .copied()
            .collect()
    }

    /// Applies `f`; fails on an event that does not fit the state (the schedule's bug).
    pub fn apply(&mut self, f: &Fault) -> Result<(), String> {
        let ok = match f {
            Fault::Kill(i) => self.killed.insert(*i),
            Fault::Restart(i) => self.killed.remove(i),
            Fault::Cut(i) => self.cut.insert(*i),
            Fault::Reconnect(i) => self.cut.remove(i),
            Fault::Partition(g) => {
                let fresh = self.partitioned.is_empty() && !g.is_empty();
                self.partitioned.extend(g);
                fresh
            }
            Fault::Heal(g) => {
                let same = self.partitioned.iter().copied().eq(g.iter().copied());
                self.partitioned.clear();
                same
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!("{f:?} does not fit {self:?}"))
        }
    }
}

fn pick<T: Copy>(rng: &mut Xorshift, from: &[T]) -> Option<T> {
    if from.is_empty() {
        None
    } else {
        Some(from[(rng.next_u64() % from.len() as u64) as usize])
    }
}

/// The schedule for `seed`: the same seed always gives the same events.
pub fn schedule(seed: u64, p: &Params) -> Vec<Event> {
    let mut rng = Xorshift::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut state = State::default();
    let mut events = Vec::new();
    let (lo, hi) = (p.gap.0.as_millis() as u64, p.gap.1.as_millis() as u64);
    let mut at = Duration::ZERO;
    loop {
        at += Duration::from_millis(lo + rng.next_u64() % (hi.saturating_sub(lo) + 1));
        if at >= p.duration {
            break;
        }
        let down = state.down();
        let fine: Vec<usize> = (0..p.nodes).filter(|i| !down.contains(i)).collect();
        let room = p.max_down.saturating_sub(down.len());
        let mut restores: Vec<Fault> = Vec::new();
        restores.extend(state.killed.iter().map(|&i| Fault::Restart(i)));
        restores.extend(state.cut.iter().map(|&i| Fault::Reconnect(i)));
        if !state.partitioned.is_empty() {
            restores.push(Fault::Heal(state.partitioned.iter().copied().collect()));
        }
        // Break something with room to, and always when nothing is broken.
        let fault = room > 0 && (restores.is_empty() || rng.next_u64() % 5 < 3);
        let f = if fault {
            match rng.next_u64() % 10 {
                0..=4 => pick(&mut rng, &fine).map(Fault::Kill),
                5..=7 => pick(&mut rng, &fine).map(Fault::Cut),
                _ if state.partitioned.is_empty() => {
                    let size = 1 + (rng.next_u64() % room.min(4) as u64) as usize;
                    let mut g = BTreeSet::new();
                    while g.len() < size.min(fine.len()) {
                        if let Some(i) = pick(&mut rng, &fine) {
                            g.insert(i);
                        }
                    }
                    Some(Fault::Partition(g.into_iter().collect()))
                }
                _ => pick(&mut rng, &fine).map(Fault::Kill),
            }
        } else {
            let i = (rng.next_u64() % restores.len().max(1) as u64) as usize;
            restores.get(i).cloned()
        };
        if let Some(f) = f {
            // Generated from the state, so it fits.
            if state.apply(&f).is_ok() {
                events.push(Event { at, fault: f });
            }
        }
    }
    // The end: everything back.
    let mut end: Vec<Fault> = Vec::new();
    if !state.partitioned.is_empty() {
        end.push(Fault::Heal(state.partitioned.iter().copied().collect()));
    }
    end.extend(state.cut.iter().map(|&i| Fault::Reconnect(i)));
    end.extend(state.killed.iter().map(|&i| Fault::Restart(i)));
    events.extend(end.into_iter().map(|fault| Event {
        at: p.duration,
        fault,
    }));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            nodes: 30,
            max_down: 8,
            duration: Duration::from_secs(600),
            gap: (Duration::from_secs(2), Duration::from_secs(8)),
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        assert_eq!(schedule(7, &params()), schedule(7, &params()));
        assert_ne!(schedule(7, &params()), schedule(8, &params()));
    }

    #[test]
    fn never_more_than_max_down_nodes_are_down_and_all_come_back() {
        for seed in 0..300 {
            let p = Params {
                max_down: 1 + seed as usize % 9,
                ..params()
            };
            let events = schedule(seed, &p);
            let mut state = State::default();
            let mut last = Duration::ZERO;
            let mut most = 0;
            for e in &events {
                assert!(e.at >= last && e.at <= p.duration, "seed {seed}: order");
                last = e.at;
                state.apply(&e.fault).unwrap();
                let down = state.down();
                assert!(down.len() <= p.max_down, "seed {seed}: {down:?} down");
                assert!(down.iter().all(|&i| i < p.nodes));
                most = most.max(down.len());
            }
            assert_eq!(state, State::default(), "seed {seed}: not all restored");
            assert!(most > 0, "seed {seed}: nothing ever went down");
        }
    }

    #[test]
    fn every_kind_of_fault_happens_in_a_ten_minute_run() {
        let events = schedule(1, &params());
        let has = |f: fn(&Fault) -> bool| events.iter().any(|e| f(&e.fault));
        assert!(has(|f| matches!(f, Fault::Kill(_))));
        assert!(has(|f| matches!(f, Fault::Restart(_))));
        assert!(has(|f| matches!(f, Fault::Cut(_))));
        assert!(has(|f| matches!(f, Fault::Reconnect(_))));
        assert!(has(|f| matches!(f, Fault::Partition(_))));
        assert!(has(|f| matches!(f, Fault::Heal(_))));
        assert!(events.len() > 60, "{} events", events.len());
    }

    #[test]
    fn a_state_refuses_events_that_do_not_fit() {
        let mut s = State::default();
        assert!(s.apply(&Fault::Restart(1)).is_err());
        s.apply(&Fault::Kill(1)).unwrap();
        assert!(s.apply(&Fault::Kill(1)).is_err());
        s.apply(&Fault::Partition(vec![2, 3])).unwrap();
        assert!(s.apply(&Fault::Partition(vec![4])).is_err());
        assert!(s.apply(&Fault::Heal(vec![2])).is_err());
    }
}
