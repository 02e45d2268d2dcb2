//! The `PieceStore` gRPC service: converts wire messages into checked domain types once,
//! applies [`crate::protocol`]'s checks, and drives the [`PieceStore`]. Disk work runs on
//! blocking threads so that hashing and fsync never stall the runtime.
//!
//! Every handler starts with one [`PieceStoreService::accept`]: count the request, hold
//! the peer to its request rate, take one of the peer's stream slots, decode the order
//! (shape and signature), and admit it (addressed here, fresh, a lease within
//! `max_lease` when it sets one, the pieces it names are the signer's, never seen
//! before). What follows in each handler is only what that order kind does.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_proto::limits::MAX_CHUNK;
use shoal_proto::messages::{
    AuditOrder, DeleteOrder, DownloadOrder, ListPiecesOrder, Order, Receipt, RenewOrder,
    UploadOrder, UploadTrailer, required,
};
use shoal_proto::pb::{self, piece_store_server, upload_request};
use shoal_proto::rate::{RateConfig, RateLimiter};
use shoal_proto::subnet::Subnet;
use shoal_proto::time::unix_ms;
use shoal_proto::{Identity, Signed, WireError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, instrument};

use crate::error::Error;
use crate::meta::PieceMeta;
use crate::metrics::NodeMetrics;
use crate::protocol;
use crate::replay::ReplayGuard;
use crate::store::{PieceData, PieceStore};

/// Peer groups whose request rate is tracked at once (see [`RateLimiter`]).
const RATE_PEERS: usize = 16_384;

/// The peer's IP address (unspecified when the transport gives none).
fn remote_ip(remote: Option<SocketAddr>) -> IpAddr {
    remote.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip())
}

/// Bounds the service applies per request and per peer.
#[derive(Debug, Clone, Copy)]
pub struct ServiceLimits {
    /// Longest wait for the next message of an upload before it is aborted.
    pub stall_timeout: Duration,
    /// Most piece-store requests one IP address (IPv6: one /64) may have open at once.
    pub max_streams_per_peer: usize,
    /// Most piece-store requests one IP address (IPv6: one /64) may start per second
    /// (bursts of twice that); 0 turns the limit off.
    pub piece_calls_per_second: u32,
    /// Latest lease expiry an order may ask for, from now (config `max_lease`).
    pub max_lease_ms: u64,
    /// Minimum average upload rate (bytes/s) once `upload_grace` has passed
    /// ([`protocol::check_upload_rate`]); 0 turns it off.
    pub min_upload_rate: u64,
    pub upload_grace: Duration,
}

/// The piece-store service; cheap to clone.
#[derive(Debug, Clone)]
pub struct PieceStoreService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    identity: Arc<Identity>,
    store: Arc<PieceStore>,
    metrics: NodeMetrics,
    limits: ServiceLimits,
    shutdown: CancellationToken,
    peers: Mutex<HashMap<IpAddr, usize>>,
    /// Request rate per peer group ([`ServiceLimits::piece_calls_per_second`]).
    rate: Mutex<RateLimiter>,
    /// Nonces of the orders accepted within the order window.
    replay: ReplayGuard,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

/// Counts one request and its outcome; records its latency when dropped.
struct Tracked {
    metrics: NodeMetrics,
    op: &'static str,
    started: Instant,
}

impl Tracked {
    fn start(metrics: &NodeMetrics, op: &'static str) -> Self {
        metrics.requests.with_label_values(&[op]).inc();
        metrics.active_streams.inc();
        Self {
            metrics: metrics.clone(),
            op,
            started: Instant::now(),
        }
    }

    fn failed(&self, e: &Error) {
        debug!(op = self.op, reason = e.reason(), error = %e, "request failed");
        self.metrics
            .failures
            .with_label_values(&[self.op, e.reason()])
            .inc();
    }

    fn outcome<T>(&self, r: Result<T, Error>) -> Result<T, Status> {
        r.map_err(|e| {
            self.failed(&e);
            Status::from(e)
        })
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.metrics.active_streams.dec();
        self.metrics
            .latency
            .with_label_values(&[self.op])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// One of a peer's concurrent streams; released when dropped.
struct PeerPermit {
    inner: Arc<Inner>,
    ip: IpAddr,
}

impl Drop for PeerPermit {
    fn drop(&mut self) {
        let mut peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = peers.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.ip);
            }
        }
    }
}

impl PieceStoreService {
    pub fn new(
        identity: Arc<Identity>,
        store: Arc<PieceStore>,
        metrics: NodeMetrics,
        limits: ServiceLimits,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                identity,
                store,
                metrics,
                limits,
                shutdown,
                peers: Mutex::new(HashMap::new()),
                rate: Mutex::new(RateLimiter::new(RateConfig {
                    per_second: f64::from(limits.piece_calls_per_second),
                    burst: 2.0 * f64::from(limits.piece_calls_per_second),
                    max_peers: RATE_PEERS,
                })),
                replay: ReplayGuard::default(),
            }),
        }
    }

    /// The tonic server for this service, with the protocol's message bounds.
    pub fn into_server(self) -> piece_store_server::PieceStoreServer<Self> {
        piece_store_server::PieceStoreServer::new(self)
            .max_decoding_message_size(shoal_proto::limits::MAX_GRPC_MESSAGE)
            .max_encoding_message_size(shoal_proto::limits::MAX_GRPC_MESSAGE)
    }

    /// One of the peer's concurrent streams; peers are counted per IPv4 address or IPv6
    /// /64 (one subscriber's prefix), so a host cannot multiply its limit by its
    /// addresses.
    fn permit(&self, remote: Option<SocketAddr>) -> Result<PeerPermit, Error> {
        let ip = shoal_proto::address::peer_group(remote_ip(remote));
        let limit = self.inner.limits.max_streams_per_peer;
        let mut peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        let n = peers.entry(ip).or_insert(0);
        if *n >= limit {
            return Err(Error::TooManyStreams {
                peer: ip.to_string(),
                limit,
            });
        }
        *n += 1;
        Ok(PeerPermit {
            inner: Arc::clone(&self.inner),
            ip,
        })
    }

    /// What every handler does first, in this order: count the request as `op`, hold
    /// the peer to its request rate, take one of the peer's stream slots, decode the
    /// order that `wire` yields (shape and signature), and admit it ([`Inner::admit`]).
    /// A refusal at any step is counted as the request's failure.
    async fn accept<O>(
        &self,
        op: &'static str,
        remote: Option<SocketAddr>,
        wire: impl Future<Output = Result<O::Wire, Error>>,
    ) -> Result<Accepted<O>, Status>
    where
        O: Order + protocol::Claims,
        Signed<O>: TryFrom<O::Wire, Error = WireError>,
    {
        let tracked = Tracked::start(&self.inner.metrics, op);
        tracked.outcome(self.inner.rate_check(remote))?;
        let permit = tracked.outcome(self.permit(remote))?;
        let admitted = async {
            let order: Signed<O> = wire.await?.try_into()?;
            let now_ms = unix_ms();
            let group = Subnet::of(&remote_ip(remote));
            self.inner.admit(&*order, group, now_ms).await?;
            Ok::<_, Error>((order, now_ms))
        }
        .await;
        let (order, now_ms) = tracked.outcome(admitted)?;
        Ok(Accepted {
            tracked,
            permit,
            order,
            now_ms,
        })
    }

    /// A unary request end to end: [`Self::accept`] its order, run `handle` with the
    /// order and the time it was admitted at while the peer's slot is held, and count
    /// the outcome.
    async fn unary<O, R>(
        &self,
        op: &'static str,
        remote: Option<SocketAddr>,
        order: Option<O::Wire>,
        handle: impl AsyncFnOnce(Signed<O>, u64) -> Result<R, Error>,
    ) -> Result<Response<R>, Status>
    where
        O: Order + protocol::Claims,
        Signed<O>: TryFrom<O::Wire, Error = WireError>,
    {
        let Accepted {
            tracked,
            permit: _permit,
            order,
            now_ms,
        } = self.accept::<O>(op, remote, unary(order)).await?;
        let r = handle(order, now_ms).await;
        tracked.outcome(r).map(Response::new)
    }
}

/// An order that passed [`PieceStoreService::accept`], with what the handler still holds.
struct Accepted<O> {
    /// Counts the rest of the request's outcome.
    tracked: Tracked,
    /// The peer's stream slot, held until the request ends.
    permit: PeerPermit,
    order: Signed<O>,
    /// The time the order was admitted at.
    now_ms: u64,
}

/// The order of a unary request, which must be present.
fn unary<W>(order: Option<W>) -> impl Future<Output = Result<W, Error>> {
    std::future::ready(required("order", order).map_err(Error::from))
}

impl Inner {
    /// The checks every order passes before it is acted on, in this order: addressed
    /// here, fresh and a lease within `max_lease` ([`protocol::check_envelope`]; signature
    /// and shape were checked by the conversion), the pieces it claims are here and the
    /// signer's ([`protocol::check_claim`]), then never seen before: the replay guard
    /// records it against its owner's and its peer group's shares. An order that fails
    /// a check before the last uses no replay entry.
    async fn admit<O: Order + protocol::Claims>(
        &self,
        order: &O,
        group: Subnet,
        now_ms: u64,
    ) -> Result<(), Error> {
        protocol::check_envelope(
            &self.identity.node_id(),
            order,
            now_ms,
            self.limits.max_lease_ms,
        )?;
        let h = order.header();
        let claimed = order.claimed().to_vec();
        if !claimed.is_empty() {
            let store = Arc::clone(&self.store);
            let owner = h.owner_key;
            let claim = blocking(move || {
                protocol::check_claim(&claimed, &owner, |p| {
                    Ok(store.meta().get(p)?.map(|m| m.owner))
                })
            })
            .await;
            match claim {
                Ok(()) => {}
                // Served as it is, unrecorded: it changes nothing (see `Claims`).
                Err(Error::NotFound(_) | Error::NotOwner(_)) if !O::REFUSE_UNCLAIMED => {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        self.replay
            .check(&h.owner_key, &h.nonce, group, h.timestamp_ms, now_ms)?;
        Ok(())
    }

    /// Takes one request of the peer's rate ([`ServiceLimits::piece_calls_per_second`]).
    fn rate_check(&self, remote: Option<SocketAddr>) -> Result<(), Error> {
        let ip = remote_ip(remote);
        let admitted = self
            .rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(ip, unix_ms());
        if admitted {
            Ok(())
        } else {
            Err(Error::RateLimited {
                peer: shoal_proto::address::peer_group(ip).to_string(),
                per_second: self.limits.piece_calls_per_second,
            })
        }
    }

    fn receipt(&self, meta: &PieceMeta, piece: shoal_proto::PieceId) -> Result<pb::Receipt, Error> {
        let receipt = Signed::sign(
            Receipt {
                piece_id: piece,
                node_key: *self.identity.public_key(),
                owner_key: meta.owner,
                size: meta.info.size,
                piece_hash: meta.piece_hash,
                expires_at_ms: meta.expires_at_ms,
                timestamp_ms: unix_ms(),
            },
            &self.identity,
        )?;
        Ok((&receipt).into())
    }

    /// The next upload message, or why there is none: stall, shutdown or stream error.
    async fn next(
        &self,
        stream: &mut Streaming<pb::UploadRequest>,
    ) -> Result<Option<pb::UploadRequest>, Error> {
        let timeout = self.limits.stall_timeout;
        tokio::select! {
            () = self.shutdown.cancelled() => Err(Error::ShuttingDown),
            r = tokio::time::timeout(timeout, stream.message()) => match r {
                Err(_) => Err(Error::Stalled { timeout_ms: timeout.as_millis() as u64 }),
                Ok(Err(status)) => Err(Error::Stream(status)),
                Ok(Ok(m)) => Ok(m),
            }
        }
    }

    /// The first message of an upload, which must be its order.
    async fn first_order(
        &self,
        stream: &mut Streaming<pb::UploadRequest>,
    ) -> Result<pb::UploadOrder, Error> {
        let first = self.next(stream).await?;
        let Some(upload_request::Message::Order(order)) = first.and_then(|m| m.message) else {
            return Err(Error::Protocol(
                "the first upload message must be the order",
            ));
        };
        Ok(order)
    }

    /// The rest of an upload whose order was accepted: the data, then the trailer.
    async fn upload(
        &self,
        order: Signed<UploadOrder>,
        mut stream: Streaming<pb::UploadRequest>,
    ) -> Result<pb::UploadResponse, Error> {
        let store = Arc::clone(&self.store);
        let o = (*order).clone();
        let mut pending = blocking(move || {
            store.begin_upload(
                o.piece_id,
                o.header.owner_key,
                o.max_size,
                o.block_size,
                o.expires_at_ms,
            )
        })
        .await?;
        let bytes = self.metrics.bytes.with_label_values(&["upload"]);
        let started = Instant::now();
        loop {
            let message = self.next(&mut stream).await?;
            // A trickle (one byte per stall period) is cut once the grace is over.
            protocol::check_upload_rate(
                pending.received(),
                started.elapsed(),
                self.limits.upload_grace,
                self.limits.min_upload_rate,
            )?;
            match message.and_then(|m| m.message) {
                Some(upload_request::Message::Chunk(data)) => {
                    if data.len() > MAX_CHUNK {
                        return Err(Error::ChunkTooLarge {
                            len: data.len(),
                            limit: MAX_CHUNK,
                        });
                    }
                    bytes.inc_by(data.len() as u64);
                    if pending.is_inline() {
                        // A copy into memory (at most INLINE_MAX bytes): no hand-off.
                        pending.write(&data)?;
                    } else {
                        pending = blocking(move || pending.write(&data).map(|()| pending)).await?;
                    }
                }
                Some(upload_request::Message::Trailer(trailer)) => {
                    let trailer: Signed<UploadTrailer> = trailer.try_into()?;
                    protocol::check_trailer(&order, &trailer)?;
                    let (size, hash) = (trailer.size, trailer.piece_hash);
                    pending.set_tag(trailer.into_body().tag)?;
                    let meta = blocking(move || pending.commit(size, &hash, unix_ms())).await?;
                    return Ok(pb::UploadResponse {
                        receipt: Some(self.receipt(&meta, order.piece_id)?),
                    });
                }
                Some(upload_request::Message::Order(_)) => {
                    return Err(Error::Protocol("a second order in one upload"));
                }
                None => return Err(Error::Protocol("the upload ended without a trailer")),
            }
        }
    }

    async fn open_for_owner(
        &self,
        piece: shoal_proto::PieceId,
        owner: shoal_proto::PublicKey,
    ) -> Result<(PieceMeta, PieceData), Error> {
        let store = Arc::clone(&self.store);
        let (meta, file) = blocking(move || store.open_piece(&piece, unix_ms())).await?;
        protocol::check_owner(&meta, &owner, &piece)?;
        Ok((meta, file))
    }
}

type DownloadStream = ReceiverStream<Result<pb::DownloadResponse, Status>>;

#[tonic::async_trait]
impl piece_store_server::PieceStore for PieceStoreService {
    #[instrument(skip_all, fields(peer = ?request.remote_addr()))]
    async fn upload(
        &self,
        request: Request<Streaming<pb::UploadRequest>>,
    ) -> Result<Response<pb::UploadResponse>, Status> {
        let remote = request.remote_addr();
        let mut stream = request.into_inner();
        let first = self.inner.first_order(&mut stream);
        let a = self.accept::<UploadOrder>("upload", remote, first).await?;
        let _permit = a.permit;
        let r = self.inner.upload(a.order, stream).await;
        a.tracked.outcome(r).map(Response::new)
    }

    type DownloadStream = DownloadStream;

    #[instrument(skip_all, fields(peer = ?request.remote_addr()))]
    async fn download(
        &self,
        request: Request<pb::DownloadRequest>,
    ) -> Result<Response<DownloadStream>, Status> {
        let remote = request.remote_addr();
        let order = unary(request.into_inner().order);
        let Accepted {
            tracked: t,
            permit,
            order,
            ..
        } = self
            .accept::<DownloadOrder>("download", remote, order)
            .await?;
        let inner = Arc::clone(&self.inner);
        let opened = async {
            let (meta, file) = inner
                .open_for_owner(order.piece_id, order.header.owner_key)
                .await?;
            let plan = protocol::plan_download(&meta.info, order.offset, order.length)?;
            Ok::<_, Error>((meta, file, plan))
        }
        .await;
        let (meta, file, plan) = t.outcome(opened)?;
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let _permit = permit;
            let bytes = inner.metrics.bytes.with_label_values(&["download"]);
            let mut info = Some(pb::PieceInfo::from(&meta.info));
            let mut file = Some(file);
            let start = plan.chunks.first().map_or(0, |c| c.0);
            let end = plan.chunks.last().map_or(0, |c| c.0 + c.1 as u64);
            for (offset, len) in plan.chunks {
                let Some(mut f) = file.take() else { break };
                let read = blocking(move || {
                    f.advise_read(start, end, offset, len as u64);
                    f.read_at(offset, len)
                        .map(|d| (d, f))
                        .map_err(|e| Error::io("cannot read piece", "", e))
                });
                let result = tokio::select! {
                    () = inner.shutdown.cancelled() => Err(Error::ShuttingDown),
                    r = read => r,
                };
                let msg = match result {
                    Ok((data, f)) => {
                        file = Some(f);
                        bytes.inc_by(data.len() as u64);
                        Ok(pb::DownloadResponse {
                            info: info.take(),
                            offset,
                            data: data.into(),
                        })
                    }
                    Err(e) => {
                        t.failed(&e);
                        Err(Status::from(e))
                    }
                };
                let failed = msg.is_err();
                // A client that stops reading must not hold up shutdown.
                let sent = tokio::select! {
                    () = inner.shutdown.cancelled() => {
                        t.failed(&Error::ShuttingDown);
                        let _ = tx.try_send(Err(Status::from(Error::ShuttingDown)));
                        break;
                    }
                    r = tx.send(msg) => r.is_ok(),
                };
                if !sent {
                    t.failed(&Error::Cancelled);
                    break;
                }
                if failed {
                    break;
                }
            }
            drop(t);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    #[instrument(skip_all, fields(peer = ?request.remote_addr()))]
    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let remote = request.remote_addr();
        let order = request.into_inner().order;
        self.unary::<DeleteOrder, _>("delete", remote, order, async |order, _| {
            let store = Arc::clone(&self.inner.store);
            let o = order.into_body();
            blocking(move || store.delete(&o.piece_id, Some(&o.header.owner_key))).await?;
            Ok(pb::DeleteResponse {})
        })
        .await
    }

    #[instrument(skip_all, fields(peer = ?request.remote_addr()))]
    async fn audit(
        &self,
        request: Request<pb::AuditRequest>,
    ) -> Result<Response<pb::AuditResponse>, Status> {
        let remote = request.remote_addr();
        let order = request.into_inner().order;
        self.unary::<AuditOrder, _>("audit", remote, order, async |order, _| {
            let (meta, mut file) = self
                .inner
                .open_for_owner(order.piece_id, order.header.owner_key)
                .await?;
            let index = u64::from(order.block_index);
            let (start, end) = meta
                .info
                .block_range(index)
                .ok_or_else(|| Error::OutOfRange {
                    what: "audit block",
                    detail: format!(
                        "block {index} of a piece of {} blocks",
                        meta.info.block_hashes.len()
                    ),
                })?;
            let block = blocking(move || {
                file.read_at(start, (end - start) as usize)
                    .map_err(|e| Error::io("cannot read piece", "", e))
            })
            .await?;
            self.inner
                .metrics
                .bytes
                .with_label_values(&["audit"])
                .inc_by(block.len() as u64);
            Ok(pb::AuditResponse {
                info: Some(pb::PieceInfo::from(&meta.info)),
                block,
            })
        })
        .await
    }

    /// A page of the signer's own pieces: the order must be addressed here, fresh and
    /// new; only pieces whose owner is the order's signer are listed.
    #[instrument(skip_all, fields(peer = ?request.remote_addr()))]
    async fn list_pieces(
        &self,
        request: Request<pb::ListPiecesRequest>,
    ) -> Result<Response<pb::ListPiecesResponse>, Status> {
        let remote = request.remote_addr();
        let order = request.into_inner().order;
        self.unary::<ListPiecesOrder, _>("list_pieces", remote, order, async |order, _| {
            let store = Arc::clone(&self.inner.store);
            let o = order.into_body();
            let pieces = blocking(move || {
                store
                    .meta()
                    .owner_pieces(&o.header.owner_key, o.after.as_ref(), o.limit as usize)
            })
            .await?;
            Ok(pb::ListPiecesResponse {
                pieces: pieces
                    .into_iter()
                    .map(|p| pb::ListedPiece {
                        piece_id: p.id.0.to_vec(),
                        size: p.size,
                        expires_at_ms: p.expires_at_ms,
                        tag: p.tag,
                    })
                    .collect(),
            })
        })
        .await
    }

    #[instrument(skip_all, fields(peer = ?request.remote_addr()))]
    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let remote = request.remote_addr();
        let order = request.into_inner().order;
        self.unary::<RenewOrder, _>("renew", remote, order, async |order, now| {
            let store = Arc::clone(&self.inner.store);
            let o = order.into_body();
            let results = blocking(move || {
                store.renew(&o.piece_ids, &o.header.owner_key, o.expires_at_ms, now)
            })
            .await?;
            Ok(pb::RenewResponse {
                results: results.iter().map(pb::RenewResult::from).collect(),
            })
        })
        .await
    }
}
