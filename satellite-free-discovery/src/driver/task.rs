//! The driver task: the one place that drives the node's outputs and timers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot, watch};

use prost::Message;
use shoal_proto::pb;

use super::persist::{self, DhtPersistence};
use super::{Cmd, Inner, KnownPeer, Peer, RecordFields, lock};
use crate::core::node::{Answer, Failure, Note, OpId, Outcome, Output, ReqId};

type Call = Pin<Box<dyn Future<Output = (ReqId, Result<Answer<Peer>, Failure>)> + Send>>;

/// Drives `inner.node` until shutdown: starts operations asked through `cmds`, sends
/// the requests it queues, feeds back their outcomes and its timers, and re-signs the
/// local record when the host's `fields` change.
pub(crate) async fn run(
    inner: Arc<Inner>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    mut fields: Option<watch::Receiver<RecordFields>>,
) {
    let mut calls: FuturesUnordered<Call> = FuturesUnordered::new();
    let mut waiters: HashMap<OpId, oneshot::Sender<Outcome<Peer>>> = HashMap::new();
    if let Some(store) = inner.config.persistence.clone() {
        tokio::select! {
            _ = inner.cancel.cancelled() => {
                // A bootstrap waiting for the load goes on, to find the DHT shut down.
                inner.loaded.send_replace(true);
                return;
            }
            () = restore(&inner, &store) => {}
        }
    }
    inner.loaded.send_replace(true);
    loop {
        let next = drain(&inner, &mut calls, &mut waiters);
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(inner.epoch() + Duration::from_millis(t)).await,
                None => futures::future::pending().await,
            }
        };
        let fields_changed = async {
            match fields.as_mut() {
                Some(rx) => match rx.changed().await {
                    Ok(()) => Some(rx.borrow_and_update().clone()),
                    Err(_) => None,
                },
                None => futures::future::pending().await,
            }
        };
        let mut host_gone = false;
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else { return };
                let op = inner.with_node(|n, now, unix| (cmd.start)(n, now, unix));
                waiters.insert(op, cmd.reply);
            }
            Some((req, result)) = calls.next(), if !calls.is_empty() => {
                inner.with_node(|n, now, unix| n.on_response(now, unix, req, result));
            }
            _ = sleep => inner.with_node(|n, now, unix| n.tick(now, unix)),
            _ = inner.wake.notified() => {}
            changed = fields_changed => match changed {
                Some(current) => match inner.sign_local(&current) {
                    // The nodes near us see the new sender record and dial it back.
                    Ok(_) => inner.with_node(|n, now, unix| n.announce(now, unix)),
                    Err(e) => tracing::warn!(error = %e, "cannot sign the new node record"),
                },
                None => host_gone = true,
            },
        }
        if host_gone {
            fields = None;
        }
    }
}

/// Carries out what the node queued; returns when it next wants a tick.
fn drain(
    inner: &Arc<Inner>,
    calls: &mut FuturesUnordered<Call>,
    waiters: &mut HashMap<OpId, oneshot::Sender<Outcome<Peer>>>,
) -> Option<u64> {
    let (outputs, next, table, records, members) = {
        let mut node = lock(&inner.node);
        let mut outputs = Vec::new();
        while let Some(o) = node.poll_output() {
            outputs.push(o);
        }
        (
            outputs,
            node.next_timer(),
            node.table().len(),
            node.store().len(),
            node.members().map_or(0, |m| m.len()),
        )
    };
    let m = &inner.metrics;
    m.table_size.set(table as i64);
    m.records_held.set(records as i64);
    m.members.set(members as i64);
    for o in outputs {
        match o {
            Output::Send {
                req,
                to,
                data,
                request,
            } => {
                let inner = inner.clone();
                calls.push(Box::pin(async move {
                    let result = inner.call(to, &data, request).await;
                    (req, result)
                }));
            }
            Output::Done { op, outcome } => {
                if let Some(w) = waiters.remove(&op) {
                    let _ = w.send(outcome);
                }
            }
            Output::Store(c) => {
                if let Some(tx) = &inner.persist_tx {
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
            },
        }
    }
    next
}

/// Reads what the store kept: the records go back into the node's record store (under
/// its rules: bounds, expiry), the remembered peers are checked (signature, proof of
/// work, addresses) and kept for [`super::DhtHandle::bootstrap`].
async fn restore(inner: &Arc<Inner>, store: &Arc<dyn DhtPersistence>) {
    let max_records = if inner.client {
        0
    } else {
        inner.config.store.max_records
    };
    let loaded = persist::load(inner, store, shoal_proto::time::unix_ms(), max_records).await;
    let restored = inner.with_node(|n, _, unix| n.restore_records(unix, loaded.records));
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
            "records read back from the DHT store failed their signature check; ignored"
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
