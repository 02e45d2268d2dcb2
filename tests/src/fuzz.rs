//! The `shoal-fuzz` runner: every decoder target of every crate (on a thread of their
//! own, time-sliced) and the hostile-client harness against live nodes
//! ([`crate::hostile`], time-sliced across its kinds of traffic, concurrently), for a
//! given time. A case fails on a panic (anywhere in the process, nodes included), on a
//! hang (a case past its deadline) or, for the live targets, on a node that no longer
//! answers or keeps a reservation after a round.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use shoal_proto::fuzz::{Target, case_rng, generate};

use crate::hostile::{Harness, Live};

/// Panics anywhere in the process since the counter was installed.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts every panic (the default hook still prints it).
pub fn install_panic_counter() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

pub fn panics() -> usize {
    PANICS.load(Ordering::SeqCst)
}

/// Every decoder target of the workspace.
pub fn decoder_targets() -> Vec<Target> {
    let mut t = shoal_proto::fuzz::targets();
    t.extend(satellite_free_discovery::fuzz::targets());
    t.extend(uplink::fuzz::targets());
    t.extend(uplink_gateway::fuzz::targets());
    t.extend(storage_node::fuzz::targets());
    t
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub seed: u64,
    /// Only targets whose name contains this.
    pub only: Option<String>,
    /// Longest one decoder case may take.
    pub decoder_deadline: Duration,
    /// Longest one live case (or the check after a round) may take.
    pub live_deadline: Duration,
    /// Time given to one target before the next one's turn.
    pub slice: Duration,
}

impl Options {
    pub fn new(duration: Duration, seed: u64) -> Self {
        Self {
            duration,
            seed,
            only: None,
            decoder_deadline: Duration::from_secs(10),
            live_deadline: Duration::from_secs(60),
            slice: Duration::from_millis(250),
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.only.as_ref().is_none_or(|o| name.contains(o.as_str()))
    }
}

/// One failure, with what reproduces it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub target: String,
    pub case: u64,
    pub what: String,
    pub input: Vec<u8>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut hex = String::with_capacity(self.input.len() * 2);
        for b in &self.input {
            let _ = write!(hex, "{b:02x}");
        }
        write!(
            f,
            "{} case {}: {}\n  input ({} bytes): {hex}",
            self.target,
            self.case,
            self.what,
            self.input.len()
        )
    }
}

/// Cases run per target, and the failures.
#[derive(Debug, Default)]
pub struct Report {
    pub iterations: BTreeMap<String, u64>,
    pub rounds: BTreeMap<String, u64>,
    pub failures: Vec<Failure>,
}

/// The decoder case in progress, for the watchdog.
#[derive(Debug, Default)]
struct Current {
    target: String,
    case: u64,
    input: Vec<u8>,
    started: Option<Instant>,
}

/// Runs the decoder targets until `deadline` (or `stop`), slice by slice.
fn run_decoders(
    opts: &Options,
    targets: Vec<Target>,
    deadline: Instant,
    stop: &AtomicBool,
    current: &Mutex<Current>,
) -> (BTreeMap<String, u64>, Vec<Failure>) {
    let targets: Vec<(Target, Vec<Vec<u8>>)> = targets
        .into_iter()
        .filter(|t| opts.wants(t.name))
        .map(|t| (t, (t.seeds)()))
        .collect();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut buf = Vec::new();
    'run: while Instant::now() < deadline && !targets.is_empty() {
        for (t, seeds) in &targets {
            let end = Instant::now() + opts.slice;
            let count = counts.entry(t.name.to_string()).or_default();
            while Instant::now() < end {
                if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    break 'run;
                }
                let case = *count;
                generate(&mut case_rng(opts.seed, t.name, case), seeds, &mut buf);
                {
                    let mut c = current.lock().unwrap_or_else(|p| p.into_inner());
                    c.target.clear();
                    c.target.push_str(t.name);
                    c.case = case;
                    c.input.clone_from(&buf);
                    c.started = Some(Instant::now());
                }
                // This thread's own panics; a panic elsewhere (a node) is the live
                // harness's to report.
                let outcome = catch_unwind(AssertUnwindSafe(|| (t.run)(&buf)));
                current.lock().unwrap_or_else(|p| p.into_inner()).started = None;
                *count += 1;
                if outcome.is_err() {
                    failures.push(Failure {
                        target: t.name.to_string(),
                        case,
                        what: "panicked (message above)".into(),
                        input: buf.clone(),
                    });
                    break 'run;
                }
            }
        }
    }
    (counts, failures)
}

/// Runs the live targets until `deadline`: slices of cases against the harness's
/// nodes, each slice followed by the check.
async fn run_live(opts: &Options, deadline: Instant, report: &mut Report) -> anyhow::Result<()> {
    let lives: Vec<Live> = Live::ALL
        .into_iter()
        .filter(|l| opts.wants(l.name()))
        .collect();
    if lives.is_empty() {
        return Ok(());
    }
    let harness = Harness::start().await?;
    let mut input = Vec::new();
    // Live cases take milliseconds each: give them longer turns than decoders.
    let slice = (opts.slice * 8).max(Duration::from_secs(1));
    // The first pass runs every kind for at least one case and its check, however short
    // the run, so that no kind goes unexercised.
    let mut first_pass = true;
    'run: while first_pass || Instant::now() < deadline {
        for &live in &lives {
            let name = live.name().to_string();
            let end = (Instant::now() + slice).min(deadline);
            loop {
                let case = *report.iterations.get(&name).unwrap_or(&0);
                let mut rng = case_rng(opts.seed, live.name(), case);
                let before = panics();
                let run = harness.case(live, &mut rng, &mut input);
                let outcome = tokio::time::timeout(opts.live_deadline, run).await;
                *report.iterations.entry(name.clone()).or_default() += 1;
                let what = match outcome {
                    Err(_) => Some(format!("hung past {:?}", opts.live_deadline)),
                    Ok(Err(e)) => Some(format!("harness error: {e:#}")),
                    Ok(Ok(())) if panics() != before => Some("a panic (message above)".into()),
                    Ok(Ok(())) => None,
                };
                if let Some(what) = what {
                    report.failures.push(Failure {
                        target: name,
                        case,
                        what,
                        input: input.clone(),
                    });
                    break 'run;
                }
                if Instant::now() >= end {
                    break;
                }
            }
            // The round is over: the node must still work and hold nothing.
            let before = panics();
            let check = tokio::time::timeout(opts.live_deadline, harness.check()).await;
            *report.rounds.entry(name.clone()).or_default() += 1;
            let what = match check {
                Err(_) => Some("the check after the round hung".to_string()),
                Ok(Err(e)) => Some(format!("after the round: {e:#}")),
                Ok(Ok(())) if panics() != before => Some("a panic (message above)".into()),
                Ok(Ok(())) => None,
            };
            if let Some(what) = what {
                let case = report.iterations.get(&name).copied().unwrap_or(0);
                report.failures.push(Failure {
                    target: name,
                    case: case.saturating_sub(1),
                    what,
                    input: input.clone(),
                });
                break 'run;
            }
            if Instant::now() >= deadline && !first_pass {
                break 'run;
            }
        }
        first_pass = false;
    }
    harness.shutdown().await
}

/// Runs `decoders` (normally [`decoder_targets`]) and the live harness for
/// `opts.duration`; decoders on a thread of their own, watched for hangs, the live
/// harness on the current runtime.
pub async fn run(opts: Options, decoders: Vec<Target>) -> anyhow::Result<Report> {
    install_panic_counter();
    let deadline = Instant::now() + opts.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let current = Arc::new(Mutex::new(Current::default()));
    let decoders = {
        let (opts, stop, current) = (opts.clone(), stop.clone(), current.clone());
        std::thread::Builder::new()
            .name("fuzz-decoders".into())
            .spawn(move || run_decoders(&opts, decoders, deadline, &stop, &current))?
    };
    let mut report = Report::default();
    // The watchdog: a decoder case past its deadline is a hang; it cannot be stopped,
    // so it is reported from here.
    let hang = {
        let (current, stop) = (current.clone(), stop.clone());
        let limit = opts.decoder_deadline;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                let c = current.lock().unwrap_or_else(|p| p.into_inner());
                if c.started.is_some_and(|s| s.elapsed() > limit) {
                    stop.store(true, Ordering::Relaxed);
                    return Some(Failure {
                        target: c.target.clone(),
                        case: c.case,
                        what: format!("hung past {limit:?}"),
                        input: c.input.clone(),
                    });
                }
            }
        })
    };
    let live = run_live(&opts, deadline, &mut report).await;
    // Wait for the decoders, unless one of them hangs.
    while !decoders.is_finished() {
        if hang.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    if let Ok(Some(f)) = hang.await {
        report.failures.push(f);
        return Ok(report);
    }
    match decoders.join() {
        Ok((counts, failures)) => {
            report.iterations.extend(counts);
            report.failures.extend(failures);
        }
        Err(_) => anyhow::bail!("the decoder thread died"),
    }
    live?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(only: &str) -> Options {
        let mut o = Options::new(Duration::from_secs(2), 7);
        o.only = Some(only.into());
        o.slice = Duration::from_millis(50);
        o
    }

    #[tokio::test]
    async fn a_panicking_decoder_is_reported_with_its_input() {
        let t = Target {
            name: "test.panics",
            seeds: || vec![b"seed".to_vec()],
            run: |d| assert!(!d.starts_with(b"se"), "a planted bug"),
        };
        let report = run(options("test."), vec![t]).await.unwrap();
        let f = &report.failures[0];
        assert_eq!(f.target, "test.panics");
        assert!(f.input.starts_with(b"se"), "{f}");
        // The reported case reproduces from the seed and index alone.
        let mut again = Vec::new();
        generate(
            &mut case_rng(7, "test.panics", f.case),
            &[b"seed".to_vec()],
            &mut again,
        );
        assert_eq!(again, f.input);
    }

    #[tokio::test]
    async fn a_hanging_decoder_is_reported() {
        let t = Target {
            name: "test.hangs",
            seeds: Vec::new,
            run: |_| std::thread::sleep(Duration::from_millis(800)),
        };
        let mut o = options("test.");
        o.decoder_deadline = Duration::from_millis(200);
        let report = run(o, vec![t]).await.unwrap();
        assert!(
            report.failures[0].what.contains("hung"),
            "{:?}",
            report.failures
        );
    }

    #[tokio::test]
    async fn sound_decoders_run_clean_and_are_counted() {
        let report = run(options("proto."), shoal_proto::fuzz::targets())
            .await
            .unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert_eq!(report.iterations.len(), shoal_proto::fuzz::targets().len());
        assert!(report.iterations.values().all(|n| *n > 0));
    }
}
