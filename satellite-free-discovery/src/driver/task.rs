//! The driver task: the node's only owner, and the one place that drives its inputs,
//! outputs and timers.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use prost::Message;
use shoal_proto::pb;

use super::persist::{self, Loaded};
use super::snapshot::Snapshot;
use super::{Cmd, Inbound, Inner, KnownPeer, Peer, RecordFields, lock, ms};
use crate::core::node::{
    Answer, Failure, Missed, Node, Note, OpId, Outcome, Output, ReqId, Response,
};
use crate::core::store::RecordRefused;
use crate::error::DhtError;

/// What a request sent brought: its answer or failure and, for a join ping to an
/// address, that address and the error that says why it failed.
type Settled = (
    ReqId,
    Result<Answer<Peer>, Failure>,
    Option<(SocketAddr, Option<String>)>,
);
type Call = Pin<Box<dyn Future<Output = Settled> + Send>>;

/// The getters' view is published at most this often while nobody waits on a reply (a
/// reply always goes out after the view that shows its effects).
const PUBLISH_EVERY: Duration = Duration::from_millis(50);

/// Waits for `f`, or forever without one.
async fn maybe<F: Future + Unpin>(f: Option<&mut F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// An answer for someone waiting: the handle's operation or a served request.
enum Reply {
    Op(
        oneshot::Sender<Result<Outcome<Peer>, DhtError>>,
        Result<Outcome<Peer>, DhtError>,
    ),
    Served(
        oneshot::Sender<Result<Response<Peer>, RecordRefused>>,
        Result<Response<Peer>, RecordRefused>,
    ),
}

/// What woke the task.
enum Event {
    Stop,
    Loaded(Loaded),
    Cmd(Cmd),
    Inbound(Inbound),
    Settled(Settled),
    Tick,
    Publish,
    Fields(Option<RecordFields>),
}

struct Driver {
    inner: Arc<Inner>,
    node: Node<Peer>,
    calls: FuturesUnordered<Call>,
    waiters: HashMap<OpId, oneshot::Sender<Result<Outcome<Peer>, DhtError>>>,
    replies: Vec<Reply>,
    /// Why the last join ping to each address failed (join entries: a bounded set).
    dial_errors: HashMap<SocketAddr, String>,
    /// The node changed since the view was last published.
    dirty: bool,
    published: Instant,
}

/// Drives `node` until shutdown: reads what the store kept, starts operations asked
/// through `cmds` (once that is read), answers the requests the Discovery service
/// queued in `inbound`, sends the requests the node queues, feeds back their outcomes
/// and its timers, re-signs the local record when the host's `fields` change, and
/// publishes the getters' view.
pub(crate) async fn run(
    inner: Arc<Inner>,
    node: Node<Peer>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    mut inbound: mpsc::Receiver<Inbound>,
    mut fields: Option<watch::Receiver<RecordFields>>,
) {
    let mut d = Driver {
        inner: inner.clone(),
        node,
        calls: FuturesUnordered::new(),
        waiters: HashMap::new(),
        replies: Vec::new(),
        dial_errors: HashMap::new(),
        dirty: true,
        published: Instant::now(),
    };
    let mut loading = inner.config.persistence.clone().map(|store| {
        let inner = inner.clone();
        let max_records = if inner.client {
            0
        } else {
            inner.config.store.max_records
        };
        Box::pin(async move {
            persist::load(&inner, &store, shoal_proto::time::unix_ms(), max_records).await
        })
    });
    if loading.is_none() {
        inner.loaded.send_replace(true);
    }
    d.seed_closest();
    loop {
        let next = d.step();
        let publish_at = d.dirty.then(|| d.published + PUBLISH_EVERY);
        let loaded = loading.is_none();
        let ev = tokio::select! {
            _ = inner.cancel.cancelled() => Event::Stop,
            l = maybe(loading.as_mut()), if !loaded => Event::Loaded(l),
            cmd = cmds.recv(), if loaded => cmd.map_or(Event::Stop, Event::Cmd),
            req = inbound.recv() => req.map_or(Event::Stop, Event::Inbound),
            Some(s) = d.calls.next(), if !d.calls.is_empty() => Event::Settled(s),
            _ = sleep_until(&inner, next) => Event::Tick,
            _ = until(publish_at) => Event::Publish,
            changed = fields_changed(&mut fields) => Event::Fields(changed),
        };
        let (now, unix) = (inner.now(), shoal_proto::time::unix_ms());
        match ev {
            Event::Stop => break,
            Event::Publish => continue,
            Event::Loaded(l) => {
                loading = None;
                d.restore(l);
                inner.loaded.send_replace(true);
            }
            Event::Cmd(Cmd::Op { start, reply }) => {
                let op = start(&mut d.node, now, unix);
                d.waiters.insert(op, reply);
            }
            Event::Cmd(Cmd::Forget(key)) => d.node.forget_record(&key),
            Event::Cmd(Cmd::KnownClosest(reply)) => {
                let ttl = ms(inner.config.known_closest_ttl);
                let known = d.node.known_closest(now, ttl).into_iter();
                let _ = reply.send(
                    known
                        .map(|(key, age, peers)| {
                            (key, age, peers.into_iter().map(|p| p.1).collect())
                        })
                        .collect(),
                );
            }
            Event::Inbound(r) => {
                let answer = d
                    .node
                    .handle_request(now, unix, r.sender, &r.requester, r.request);
                d.replies.push(Reply::Served(r.reply, answer));
            }
            Event::Settled((req, result, dial)) => {
                if let Some((addr, error)) = dial {
                    d.dialled(addr, error);
                }
                d.node.on_response(now, unix, req, result);
            }
            Event::Tick => d.node.tick(now, unix),
            Event::Fields(Some(current)) => match inner.sign_local(&current) {
                // The nodes near us see the new sender record and dial it back.
                Ok(_) => d.node.announce(now, unix),
                Err(e) => tracing::warn!(error = %e, "cannot sign the new node record"),
            },
            Event::Fields(None) => fields = None,
        }
        d.dirty = true;
    }
    d.stop();
}

async fn sleep_until(inner: &Inner, at: Option<u64>) {
    match at {
        Some(t) => tokio::time::sleep_until(inner.epoch() + Duration::from_millis(t)).await,
        None => std::future::pending().await,
    }
}

async fn until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The host's new record fields; `None` once the host dropped its sender.
async fn fields_changed(
    fields: &mut Option<watch::Receiver<RecordFields>>,
) -> Option<RecordFields> {
    match fields.as_mut() {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

impl Driver {
    /// Carries out what the node queued, publishes the view when due (always before a
    /// reply goes out), sends the replies; returns when the node next wants a tick.
    fn step(&mut self) -> Option<u64> {
        while let Some(o) = self.node.poll_output() {
            self.carry(o);
        }
        let m = &self.inner.metrics;
        m.table_size.set(self.node.table().len() as i64);
        m.records_held.set(self.node.store().len() as i64);
        m.members
            .set(self.node.members().map_or(0, |m| m.len()) as i64);
        if self.dirty && (!self.replies.is_empty() || self.published.elapsed() >= PUBLISH_EVERY) {
            self.publish();
        }
        for r in self.replies.drain(..) {
            match r {
                Reply::Op(tx, result) => {
                    let _ = tx.send(result);
                }
                Reply::Served(tx, result) => {
                    let _ = tx.send(result);
                }
            }
        }
        self.node.next_timer()
    }

    fn publish(&mut self) {
        self.inner
            .view
            .send_replace(Arc::new(Snapshot::of(&self.node)));
        self.dirty = false;
        self.published = Instant::now();
    }

    /// Carries out one output of the node.
    fn carry(&mut self, o: Output<Peer>) {
        let m = &self.inner.metrics;
        match o {
            Output::Send {
                req,
                to,
                data,
                request,
            } => {
                let inner = self.inner.clone();
                self.calls.push(Box::pin(async move {
                    let result = inner.call(to, &data, request).await;
                    (req, result, None)
                }));
            }
            Output::Dial { req, dial, request } => {
                let inner = self.inner.clone();
                self.calls.push(Box::pin(async move {
                    let addr = dial.addr;
                    let Some(id) = dial.id else {
                        let why = "no node id to check the connection against".to_string();
                        return (req, Err(Failure::Unreachable), Some((addr, Some(why))));
                    };
                    match inner.call_at(addr, id, request).await {
                        Ok(a) => (req, Ok(a), Some((addr, None))),
                        Err((f, e)) => {
                            tracing::warn!(%addr, node = %id, error = %e, "node did not answer the join");
                            (req, Err(f), Some((addr, Some(e.to_string()))))
                        }
                    }
                }));
            }
            Output::Done { op, outcome } => {
                let result = match outcome {
                    Outcome::JoinFailed {
                        entries,
                        fallback,
                        missed,
                    } => Err(DhtError::BootstrapFailed {
                        configured: entries,
                        remembered: fallback,
                        reasons: missed
                            .iter()
                            .map(|m| self.reason(m))
                            .collect::<Vec<_>>()
                            .join("; "),
                    }),
                    o => Ok(o),
                };
                if let Some(w) = self.waiters.remove(&op) {
                    self.replies.push(Reply::Op(w, result));
                }
            }
            Output::Store(c) => {
                if let Some(tx) = &self.inner.persist_tx {
                    let _ = tx.send(c);
                }
            }
            Output::Note(n) => match n {
                Note::PeerRefused(why) => m.peers_refused.with_label_values(&[why]).inc(),
                Note::DialbackFailed => m.dialbacks_failed.inc(),
                Note::RequestFailed => m.requests_failed.inc(),
                Note::LookupStarted { record } => m
                    .lookups
                    .with_label_values(&[if record { "record" } else { "node" }])
                    .inc(),
                Note::LookupFinished { hops: None } => m.lookup_failures.inc(),
                Note::LookupFinished { hops: Some(h) } => m.lookup_hops.observe(f64::from(h)),
                Note::DirectPut => m.direct_puts.with_label_values(&["direct"]).inc(),
                Note::DirectPutFallback => m.direct_puts.with_label_values(&["fallback"]).inc(),
                Note::DirectGet => m.direct_reads.with_label_values(&["direct"]).inc(),
                Note::DirectGetFallback => m.direct_reads.with_label_values(&["fallback"]).inc(),
            },
        }
    }

    /// A join ping to `addr` came back: with the error that says why it failed, if it
    /// did.
    fn dialled(&mut self, addr: SocketAddr, error: Option<String>) {
        match error {
            Some(e) => {
                self.dial_errors.insert(addr, e);
            }
            None => {
                self.dial_errors.remove(&addr);
            }
        }
    }

    /// Why join ping `m` brought nothing, as the error of a failed join names it.
    fn reason(&self, m: &Missed) -> String {
        let addr = m.dial.addr;
        let why = match &m.bad {
            Some(bad) => DhtError::BadResponse {
                addr,
                reason: bad.to_string(),
            }
            .to_string(),
            None => self
                .dial_errors
                .get(&addr)
                .cloned()
                .unwrap_or_else(|| DhtError::Timeout { addr }.to_string()),
        };
        match m.dial.id {
            Some(id) => format!("{id}@{addr}: {why}"),
            None => format!("{addr}: {why}"),
        }
    }

    /// The task ends: the record store's last changes go to the writer, the getters'
    /// view is the node's last state, and a bootstrap waiting for the load goes on, to
    /// find the DHT shut down.
    fn stop(&mut self) {
        if let Some(tx) = &self.inner.persist_tx {
            while let Some(o) = self.node.poll_output() {
                if let Output::Store(c) = o {
                    let _ = tx.send(c);
                }
            }
        }
        self.publish();
        self.inner.loaded.send_replace(true);
    }

    /// Takes the closest of record keys an earlier run found (see
    /// [`super::DhtConfig::known_closest`]): those within the TTL, each node record
    /// checked again (signature, proof of work, addresses).
    fn seed_closest(&mut self) {
        let inner = self.inner.clone();
        let (now, unix) = (inner.now(), shoal_proto::time::unix_ms());
        let ttl = ms(inner.config.known_closest_ttl);
        for k in &inner.config.known_closest {
            if unix.saturating_sub(k.found_unix_ms) >= ttl {
                continue;
            }
            let peers: Vec<_> = k
                .nodes
                .iter()
                .filter_map(|bytes| {
                    let m = pb::NodeRecord::decode(bytes.as_slice()).ok()?;
                    let p = inner.check_node_record("known closest node", m).ok()?;
                    Some((p.node_id(), p))
                })
                .collect();
            self.node.seed_closest(k.key, peers, now);
        }
    }

    /// Takes what the store kept: the records go back into the node's record store
    /// (under its rules: bounds, expiry), the remembered peers are checked (signature,
    /// proof of work, addresses) and kept for [`super::DhtHandle::bootstrap`].
    fn restore(&mut self, loaded: Loaded) {
        let inner = &self.inner;
        let restored = self
            .node
            .restore_records(shoal_proto::time::unix_ms(), loaded.records);
        let m = &inner.metrics.records_restored;
        m.with_label_values(&["restored"])
            .inc_by(restored.restored as u64);
        m.with_label_values(&["expired"])
            .inc_by(restored.expired as u64);
        m.with_label_values(&["refused"])
            .inc_by(restored.refused as u64);
        m.with_label_values(&["invalid"])
            .inc_by(loaded.invalid as u64);
        if loaded.invalid > 0 {
            tracing::warn!(
                invalid = loaded.invalid,
                "records read back from the DHT store failed their signature or proof-of-work check; ignored"
            );
        }
        let local = inner.identity.node_id();
        let mut remembered = Vec::new();
        let mut bad = 0;
        for (bytes, seen) in loaded.peers {
            let checked = pb::NodeRecord::decode(bytes.as_slice())
                .ok()
                .and_then(|m| inner.check_node_record("remembered node record", m).ok());
            match checked {
                Some(record) if record.node_id() != local => remembered.push(KnownPeer {
                    record,
                    last_seen_unix_ms: seen,
                }),
                Some(_) => {}
                None => bad += 1,
            }
        }
        remembered.sort_unstable_by_key(|p| std::cmp::Reverse(p.last_seen_unix_ms));
        if bad > 0 {
            tracing::warn!(bad, "remembered node records failed their checks; ignored");
        }
        tracing::info!(
            records = restored.restored,
            expired = restored.expired,
            refused = restored.refused,
            peers = remembered.len(),
            "read back the DHT records held and the nodes known before"
        );
        *lock(&inner.remembered) = remembered;
    }
}
