//! Background workers. Each is a loop over one interval that stops when the DHT's
//! cancellation token fires (see [`super::DhtHandle::shutdown`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Inner, RecordFields, dial_addr, lock, ms};

/// Runs `step` every `every` until shutdown; the first run is one interval after start.
async fn every<F, Fut>(inner: &Arc<Inner>, every: Duration, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tick.tick() => step().await,
        }
    }
}

pub(crate) fn spawn_all(inner: &Arc<Inner>) {
    // Bucket refresh and liveness checks of entries not heard from lately.
    let me = inner.clone();
    inner.spawn(async move {
        let period = me.config.liveness_interval.min(me.config.refresh_interval);
        let m = me.clone();
        every(&me, period, move || {
            let m = m.clone();
            async move {
                m.refresh(ms(m.config.refresh_interval)).await;
                let stale = lock(&m.table).stale(m.now(), ms(m.config.liveness_interval));
                for id in stale.into_iter().take(2 * m.config.k) {
                    let addr = lock(&m.table).get(&id).and_then(|e| dial_addr(&e.data));
                    if let Some(addr) = addr {
                        match m.ping(addr, id).await {
                            Ok(p) => m.on_answered(&p, addr),
                            Err(_) => m.on_request_failed(&id),
                        }
                    }
                }
                let now = shoal_proto::time::unix_ms();
                let mut store = lock(&m.store);
                store.expire(now);
                m.metrics.records_held.set(store.len() as i64);
            }
        })
        .await;
    });

    // Republish of records this handle put.
    let me = inner.clone();
    inner.spawn(async move {
        let m = me.clone();
        every(&me, me.config.republish_interval, move || {
            let m = m.clone();
            async move {
                let now = shoal_proto::time::unix_ms();
                let owned: Vec<_> = {
                    let mut owned = lock(&m.owned);
                    owned.retain(|_, r| r.expires_at_ms > now);
                    owned.values().cloned().collect()
                };
                for r in owned {
                    if let Err(e) = m.put_record(&r, None).await {
                        tracing::debug!(error = %e, "republish failed");
                    }
                }
            }
        })
        .await;
    });

    // Re-replication: held records go to the k closest we currently know, so records
    // survive the nodes that held them leaving. Bounded per round.
    if !inner.client {
        let me = inner.clone();
        inner.spawn(async move {
            let m = me.clone();
            every(&me, me.config.replicate_interval, move || {
                let m = m.clone();
                async move {
                    let records: Vec<_> = lock(&m.store).iter().take(1000).cloned().collect();
                    for r in records {
                        let to: Vec<_> = lock(&m.table)
                            .closest(&r.key().0, m.config.k, true)
                            .into_iter()
                            .map(|e| e.data.clone())
                            .collect();
                        let _ = m.put_to(&r, None, &to).await;
                    }
                }
            })
            .await;
        });
    }

    // Membership crawl at a bounded rate.
    if inner.config.crawl {
        let me = inner.clone();
        inner.spawn(async move {
            let m = me.clone();
            every(&me, me.config.crawl_interval, move || {
                let m = m.clone();
                async move { m.crawl_step().await }
            })
            .await;
        });
    }
}

impl Inner {
    /// Re-signs the local record whenever the host changes its fields, then tells the
    /// nodes near us (a self-lookup carries the new record; they dial it back).
    pub(crate) async fn publish_worker(self: Arc<Self>, mut rx: watch::Receiver<RecordFields>) {
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            let fields = rx.borrow_and_update().clone();
            match self.sign_local(&fields) {
                Ok(_) => {
                    if !lock(&self.table).is_empty()
                        && let Err(e) = self.lookup(self.identity.node_id().0, None).await
                    {
                        tracing::debug!(error = %e, "announcing the new record failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot sign the new node record"),
            }
        }
    }
}
