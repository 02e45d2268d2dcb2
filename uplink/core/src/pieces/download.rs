//! Download orchestration: range → segments → stripes, from any `k` verified pieces.
//!
//! Per segment, the uplink starts `k + margin` piece downloads for exactly the stripes
//! the range needs (data pieces first: if they all answer, no decoding is needed), and
//! keeps the first `k` to deliver a verified shard; the rest are cancelled. Each piece
//! download checks the node's piece info against the hash recorded at upload, then
//! every block against the info, before a shard reaches the decoder. A piece that fails,
//! stalls (`piece_timeout`) or serves a bad block is dropped as an erasure, the node is
//! remembered, and the next unused piece of the segment takes over from the current
//! stripe. Output is therefore either right or an error, never wrong.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use shoal_proto::piece_hash::PieceInfo;
use shoal_proto::{NodeId, PieceHash, PieceId};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::service::{Pieces, Progress};
use crate::catalog::SegmentInfo;
use crate::crypto::BlockCipher;
use crate::error::Error;
use crate::orders::Orders;
use crate::segment::{BlockOpener, StripeDecoder, plan_range};
use crate::select::{NodeStats, Transfer};
use crate::store::{DownloadPart, PieceError, PiecePlacement};

/// Least time data pieces still racing may trail the k-th piece to arrive (phase 1).
///
/// A decode of a whole 64 MiB segment at 3/10 costs ~250 ms of CPU here, while a data
/// piece read cold from a busy disk can trail the others by tens of ms: waiting is the
/// cheaper side. A dead data node answers with an error and ends the wait at once; only
/// a stalled one costs it.
const PREFER_DATA_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

pub(crate) struct ObjectDownload<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub cipher: &'a BlockCipher,
    pub progress: Option<Progress>,
}

impl ObjectDownload<'_> {
    fn err(&self, segment: u32, reason: impl Into<String>) -> Error {
        Error::Download {
            bucket: self.bucket.to_string(),
            key: self.key.to_string(),
            segment,
            reason: reason.into(),
        }
    }
}

/// Plaintext handed from a segment's download to the writer in chunks of about this size.
const CHUNK: usize = 1 << 20;
/// Chunks a segment may have decoded ahead of the writer.
const CHUNKS_AHEAD: usize = 8;
/// Most piece data the segments downloaded *ahead* of the one being written may hold.
/// Each of a segment's `k + margin` piece streams buffers up to its HTTP/2 stream window
/// plus its shard queue (or the whole piece, if smaller): at 3/10 about 22 MiB per
/// segment, so one segment goes ahead; at 29/110 about 99 MiB, so none does, and the
/// uplink's peak RSS stays where it was (measured: 276 MiB with one ahead at 29/110).
const AHEAD_BUDGET: u64 = 32 << 20;
/// Shards queued per piece download (see `start_piece`).
const PIECE_QUEUE: usize = 8;

fn margin(pieces: &Pieces, k: usize) -> usize {
    pieces.config.download_margin.unwrap_or((k / 4).max(2))
}

/// What the piece downloads of one segment may buffer (see `AHEAD_BUDGET`).
fn segment_buffer(pieces: &Pieces, seg: &SegmentInfo) -> u64 {
    let k = usize::from(seg.scheme.k);
    let streams = (k + margin(pieces, k)).min(seg.pieces.len()) as u64;
    let per_piece = seg
        .piece_size
        .min(u64::from(shoal_proto::limits::H2_STREAM_WINDOW))
        + PIECE_QUEUE as u64 * u64::from(seg.shard_size);
    streams * per_piece
}

/// Writes plaintext `[start, end)` of an object made of `segments`.
///
/// Segments are pipelined: up to `segment_parallelism` of them download at once (fewer
/// when their piece buffers would pass `AHEAD_BUDGET`), each into its own bounded queue
/// of plaintext chunks, and the writer drains the queues in segment order. So the next
/// segment's piece downloads start (and its first stripes decode) while the current one
/// drains, and a slow `writer` only holds the decoders back once their queues are full.
/// Memory stays bounded: per segment in flight, its piece buffers and `CHUNKS_AHEAD`
/// chunks.
pub(super) async fn download_range<W: AsyncWrite + Unpin + Send>(
    pieces: &Arc<Pieces>,
    ctx: ObjectDownload<'_>,
    segments: &[SegmentInfo],
    start: u64,
    end: u64,
    writer: &mut W,
) -> Result<u64, Error> {
    let mut parts = Vec::new();
    let mut offset = 0u64;
    for (i, seg) in segments.iter().enumerate() {
        let (seg_start, seg_end) = (offset, offset + seg.plain_size);
        offset = seg_end;
        if seg_end <= start || seg_start >= end {
            continue;
        }
        let a = start.max(seg_start) - seg_start;
        let b = end.min(seg_end) - seg_start;
        parts.push((seg, i + 1 == segments.len(), a, b));
    }
    let (senders, receivers): (Vec<_>, Vec<_>) = parts
        .iter()
        .map(|_| mpsc::channel::<Vec<u8>>(CHUNKS_AHEAD))
        .unzip();
    let ctx = &ctx;
    let widest = parts
        .iter()
        .map(|(seg, ..)| segment_buffer(pieces, seg))
        .max()
        .unwrap_or(0);
    let ahead = usize::try_from(AHEAD_BUDGET / widest.max(1)).unwrap_or(usize::MAX);
    let depth = pieces
        .config
        .segment_parallelism
        .clamp(1, ahead.saturating_add(1));
    // The futures are made up front (they start only when polled): a closure inside the
    // stream would make the whole download non-`Send` for callers that spawn it.
    let segment_downloads: Vec<_> = parts
        .into_iter()
        .zip(senders)
        .map(|((seg, last, a, b), tx)| download_segment(pieces, ctx, seg, last, a, b, tx))
        .collect();
    let produce = futures::stream::iter(segment_downloads)
        .buffered(depth)
        .try_for_each(|_| std::future::ready(Ok(())));
    let write = async {
        let mut written = 0u64;
        for mut rx in receivers {
            while let Some(chunk) = rx.recv().await {
                writer
                    .write_all(&chunk)
                    .await
                    .map_err(|source| Error::Write {
                        bucket: ctx.bucket.to_string(),
                        key: ctx.key.to_string(),
                        source,
                    })?;
                written += chunk.len() as u64;
                if let Some(p) = &ctx.progress {
                    p(chunk.len() as u64);
                }
            }
        }
        Ok(written)
    };
    let ((), written) = futures::try_join!(produce, write)?;
    Ok(written)
}

/// A running piece download that yields verified shards; cancelled when dropped.
struct Active {
    placement: PiecePlacement,
    rx: mpsc::Receiver<Result<Bytes, PieceError>>,
    task: JoinHandle<()>,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start_piece(
    pieces: &Arc<Pieces>,
    seg: &SegmentInfo,
    p: &PiecePlacement,
    from_stripe: u64,
    stripes: u64,
) -> Active {
    // A few shards of slack per piece, so that one slow moment of the decoder or the
    // writer does not stall every node stream at once.
    let (tx, rx) = mpsc::channel(PIECE_QUEUE);
    let task = tokio::spawn(piece_download(
        pieces.clone(),
        p.clone(),
        seg.shard_size,
        seg.piece_size,
        from_stripe,
        stripes,
        tx,
    ));
    Active {
        placement: p.clone(),
        rx,
        task,
    }
}

pub(super) async fn piece_download(
    pieces: Arc<Pieces>,
    p: PiecePlacement,
    shard_size: u32,
    piece_size: u64,
    from_stripe: u64,
    stripes: u64,
    tx: mpsc::Sender<Result<Bytes, PieceError>>,
) {
    let node = NodeId(p.node_id);
    let protocol = |reason: String| PieceError::Protocol { node, reason };
    let bs = u64::from(shard_size);
    let run = async {
        let order = Orders::new(pieces.access.owner())
            .download(
                node,
                PieceId(p.piece_id),
                from_stripe * bs,
                stripes * bs,
                shoal_proto::time::unix_ms(),
            )
            .map_err(|e| protocol(e.to_string()))?;
        let mut stream = pieces.store.download(p.node(), order).await?;
        let info: PieceInfo = match stream.next().await {
            Some(Ok(DownloadPart::Info(info))) => info,
            Some(Err(e)) => return Err(e),
            _ => return Err(protocol("the first message was not the piece info".into())),
        };
        if info.root() != PieceHash(p.piece_hash) {
            return Err(PieceError::Corrupt {
                node,
                reason: "piece info does not hash to the recorded piece hash".into(),
            });
        }
        if info.block_size != shard_size || info.size != piece_size {
            return Err(protocol(format!(
                "piece info says {} bytes in blocks of {}, expected {piece_size} in {shard_size}",
                info.size, info.block_size
            )));
        }
        let mut next_offset = from_stripe * bs;
        let end = (from_stripe + stripes) * bs;
        let mut buf = BytesMut::new();
        while next_offset < end {
            let Some(part) = stream.next().await else {
                return Err(protocol(format!(
                    "stream ended at byte {next_offset} of {end}"
                )));
            };
            let (offset, data) = match part? {
                DownloadPart::Data { offset, data } => (offset, data),
                DownloadPart::Info(_) => return Err(protocol("piece info sent twice".into())),
            };
            let have = next_offset + buf.len() as u64;
            if offset > have || offset + (data.len() as u64) < have {
                return Err(protocol(format!("data at {offset}, expected {have}")));
            }
            // Whole blocks may start before what we still need: skip the overlap.
            let mut data = data.slice((have - offset) as usize..);
            loop {
                if next_offset >= end {
                    break;
                }
                // Blocks wholly inside the message are slices of it (no copy); a block
                // split between messages is gathered in `buf`.
                let block = if buf.is_empty() && data.len() as u64 >= bs {
                    data.split_to(bs as usize)
                } else {
                    let take = (bs as usize - buf.len()).min(data.len());
                    buf.extend_from_slice(&data.split_to(take));
                    if (buf.len() as u64) < bs {
                        break;
                    }
                    buf.split().freeze()
                };
                let index = next_offset / bs;
                if !info.verify_block(index, &block) {
                    return Err(PieceError::Corrupt {
                        node,
                        reason: format!("block {index} does not match its hash"),
                    });
                }
                next_offset += bs;
                if tx.send(Ok(block)).await.is_err() {
                    return Ok(()); // cancelled
                }
            }
        }
        Ok(())
    };
    if let Err(e) = run.await {
        let _ = tx.send(Err(e)).await;
    }
}

fn record(pieces: &Pieces, node: [u8; 32], error: Option<&PieceError>) {
    let label = match error {
        None => "ok",
        Some(PieceError::Corrupt { .. }) => "corrupt",
        Some(_) => "failed",
    };
    let delta = NodeStats::from_outcome(
        Transfer::Download,
        error.map_or(Ok(()), Err),
        None,
        shoal_proto::time::unix_ms(),
    );
    pieces
        .metrics
        .piece_downloads
        .with_label_values(&[label])
        .inc();
    let _ = pieces.catalog.record_node(&NodeId(node), delta);
}

fn describe(
    node: [u8; 32],
    r: Result<Option<Result<Bytes, PieceError>>, tokio::time::error::Elapsed>,
    secs: f64,
) -> PieceError {
    let node = NodeId(node);
    match r {
        Ok(Some(Err(e))) => e,
        Ok(_) => PieceError::Protocol {
            node,
            reason: "piece download ended early".into(),
        },
        Err(_) => PieceError::Timeout {
            node,
            seconds: secs,
        },
    }
}

/// Downloads plaintext `[start, end)` of one segment into `out`, in chunks of about
/// `CHUNK` bytes. Returns early, with `Ok`, if the writer has gone (its own error is the
/// one reported).
async fn download_segment(
    pieces: &Arc<Pieces>,
    ctx: &ObjectDownload<'_>,
    seg: &SegmentInfo,
    last_segment: bool,
    start: u64,
    end: u64,
    out: mpsc::Sender<Vec<u8>>,
) -> Result<(), Error> {
    let plan = plan_range(seg, start, end);
    let k = usize::from(seg.scheme.k);
    let timeout = pieces.config.piece_timeout;
    let secs = timeout.as_secs_f64();
    let history = pieces.catalog.node_stats()?;
    // Data pieces first (no decoding if they all answer), nodes that served corrupt data
    // last, and before them nodes whose last transfer failed lately (likely gone: nodes
    // seen working are asked first); otherwise in piece order.
    let now = shoal_proto::time::unix_ms();
    let mut order: Vec<&PiecePlacement> = seg.pieces.iter().collect();
    order.sort_by_key(|p| {
        let stats = history.get(&NodeId(p.node_id));
        let bad = stats.is_some_and(|s| s.is_excluded());
        let failing = stats.is_some_and(|s| s.backing_off(now, pieces.config.failed_node_backoff));
        (bad, failing, usize::from(p.index) >= k, p.index)
    });
    let mut reserve: VecDeque<&PiecePlacement> = order.into();
    let want = (k + margin(pieces, k)).min(reserve.len());
    let mut errors: Vec<String> = Vec::new();
    let not_enough = |errors: &[String], have: usize| {
        let sample: Vec<&str> = errors.iter().take(3).map(String::as_str).collect();
        ctx.err(
            seg.index,
            format!(
                "only {have} of the {k} pieces needed could be read ({} failed, e.g. {})",
                errors.len(),
                sample.join("; ")
            ),
        )
    };

    // Phase 1: race k + margin pieces to their first verified shard. Keep the first k,
    // except that data pieces are preferred: with all k of them no stripe needs decoding
    // (a copy instead of an erasure decode, ~250 ms of CPU per segment at 3/10). Once k
    // pieces are in, data pieces still racing get as long again as that took (at least
    // `PREFER_DATA_WAIT`) to arrive.
    let is_data = |index: u16| usize::from(index) < k;
    let race = |p: &PiecePlacement| {
        let mut a = start_piece(pieces, seg, p, plan.first_stripe, plan.stripes);
        async move {
            let r = tokio::time::timeout(timeout, a.rx.recv()).await;
            (a, r)
        }
    };
    let started = tokio::time::Instant::now();
    let mut racing = FuturesUnordered::new();
    let mut racing_data = 0usize;
    for _ in 0..want {
        if let Some(p) = reserve.pop_front() {
            racing_data += usize::from(is_data(p.index));
            racing.push(race(p));
        }
    }
    let mut arrived: Vec<(Active, Bytes)> = Vec::with_capacity(want);
    let mut failed: Vec<u16> = Vec::new();
    let mut prefer_until: Option<tokio::time::Instant> = None;
    loop {
        let data_in = arrived.iter().filter(|(a, _)| is_data(a.placement.index));
        if arrived.len() >= k && (data_in.count() >= k || racing_data == 0) {
            break;
        }
        let next = match prefer_until {
            Some(until) => match tokio::time::timeout_at(until, racing.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => racing.next().await,
        };
        let Some((a, r)) = next else {
            if arrived.len() >= k {
                break;
            }
            return Err(not_enough(&errors, arrived.len()));
        };
        racing_data -= usize::from(is_data(a.placement.index));
        match r {
            Ok(Some(Ok(shard))) => {
                arrived.push((a, shard));
                if arrived.len() == k {
                    // As long again as the k pieces took, at least PREFER_DATA_WAIT.
                    let wait = started.elapsed().max(PREFER_DATA_WAIT).min(timeout);
                    prefer_until = Some(tokio::time::Instant::now() + wait);
                }
            }
            other => {
                let e = describe(a.placement.node_id, other, secs);
                record(pieces, a.placement.node_id, Some(&e));
                errors.push(e.to_string());
                failed.push(a.placement.index);
                if arrived.len() < k
                    && let Some(p) = reserve.pop_front()
                {
                    racing_data += usize::from(is_data(p.index));
                    racing.push(race(p));
                }
            }
        }
    }
    // Data pieces first, then in order of arrival; pieces beyond k are cancelled.
    arrived.sort_by_key(|(a, _)| !is_data(a.placement.index));
    let mut spare: Vec<PiecePlacement> = Vec::new();
    let mut active: Vec<Active> = Vec::with_capacity(k);
    let mut shards: Vec<(u16, Bytes)> = Vec::with_capacity(k);
    for (a, shard) in arrived {
        if active.len() < k {
            shards.push((a.placement.index, shard));
            active.push(a);
        } else {
            spare.push(a.placement.clone());
        }
    }
    // Cancel the rest; they stay usable as replacements, after the untried pieces.
    let cancelled = racing.len() as u64;
    drop(racing);
    pieces
        .metrics
        .piece_downloads
        .with_label_values(&["cancelled"])
        .inc_by(cancelled);
    let mut unused: VecDeque<PiecePlacement> = reserve.iter().map(|p| (*p).clone()).collect();
    unused.extend(spare.iter().cloned());
    for p in &seg.pieces {
        let used = active.iter().any(|a| a.placement.index == p.index)
            || failed.contains(&p.index)
            || reserve.iter().any(|r| r.index == p.index)
            || spare.iter().any(|r| r.index == p.index);
        if !used {
            unused.push_back(p.clone());
        }
    }

    // Phase 2: stripe by stripe from the k active pieces.
    let mut decoder = StripeDecoder::new(seg.codec, seg.scheme, seg.shard_size as usize)?;
    let mut opener = BlockOpener::new(ctx.cipher, seg, last_segment, &plan);
    let stripe_bytes = k * seg.shard_size as usize;
    let mut stripe = Vec::new();
    let mut plain = Vec::with_capacity(CHUNK + stripe_bytes);
    for s in 0..plan.stripes {
        if s > 0 {
            shards.clear();
            let mut replacements = Vec::new();
            let mut i = 0;
            while i < active.len() {
                let r = tokio::time::timeout(timeout, active[i].rx.recv()).await;
                match r {
                    Ok(Some(Ok(shard))) => {
                        shards.push((active[i].placement.index, shard));
                        i += 1;
                        continue;
                    }
                    other => {
                        let a = active.remove(i);
                        let e = describe(a.placement.node_id, other, secs);
                        record(pieces, a.placement.node_id, Some(&e));
                        errors.push(e.to_string());
                    }
                }
                // Replace the lost piece from the current stripe on.
                loop {
                    let Some(p) = unused.pop_front() else {
                        return Err(not_enough(&errors, active.len() + replacements.len()));
                    };
                    let from = plan.first_stripe + s;
                    let mut a = start_piece(pieces, seg, &p, from, plan.stripes - s);
                    match tokio::time::timeout(timeout, a.rx.recv()).await {
                        Ok(Some(Ok(shard))) => {
                            shards.push((a.placement.index, shard));
                            replacements.push(a);
                            break;
                        }
                        other => {
                            let e = describe(a.placement.node_id, other, secs);
                            record(pieces, a.placement.node_id, Some(&e));
                            errors.push(e.to_string());
                        }
                    }
                }
            }
            active.extend(replacements);
        }
        let crypto_err = |source| Error::Crypto {
            bucket: ctx.bucket.to_string(),
            key: ctx.key.to_string(),
            source,
        };
        // With every data shard in, the stripe is their concatenation: open them where
        // they are instead of copying them into `stripe` first.
        if let Some(data) = decoder.data_in_order(&shards) {
            for shard in data {
                opener.push(shard, &mut plain).map_err(crypto_err)?;
            }
        } else {
            stripe.clear();
            let decoded = decoder
                .decode(&shards, &mut stripe)
                .map_err(|e| ctx.err(seg.index, e.to_string()))?;
            if decoded {
                pieces.metrics.stripes_decoded.inc();
            }
            opener.push(&stripe, &mut plain).map_err(crypto_err)?;
        }
        let done = opener.done();
        if plain.len() >= CHUNK || (done && !plain.is_empty()) {
            let full = std::mem::replace(&mut plain, Vec::with_capacity(CHUNK + stripe_bytes));
            if out.send(full).await.is_err() {
                return Ok(()); // the writer failed; it reports why
            }
        }
        if done {
            break;
        }
    }
    if !plain.is_empty() && out.send(plain).await.is_err() {
        return Ok(());
    }
    for a in &active {
        record(pieces, a.placement.node_id, None);
    }
    pieces.metrics.segments_downloaded.inc();
    Ok(())
}
