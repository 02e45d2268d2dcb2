//! Round trips as a figure (issue 26): a delay on every connection this process dials,
//! so that a benchmark on loopback can show what a command costs between machines 20–100
//! ms apart.
//!
//! [`Wire`] is what [`crate::tls::Connector`] dials: the TCP stream itself, unless the
//! delay is on. Then connecting takes one round trip more (the TCP handshake), and every
//! byte the peer sends becomes readable one round trip after it arrived (a delay line:
//! order and content unchanged, requests in flight overlap as on a real link), so each
//! request and answer costs one round trip. Bytes sent go out at once.
//!
//! The delay is on only in a build with the `bench-rtt` feature (the bench scripts build
//! one apart; no binary enables it) and when `SHOAL_BENCH_RTT_MS` is set to a positive
//! number of milliseconds. Without the feature the variable is never read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Read from the socket at most this much at a time into the delay line.
#[cfg(any(test, feature = "bench-rtt"))]
const CHUNK: usize = 64 * 1024;
/// Chunks in the delay line at most: with [`CHUNK`], 16 MiB in flight (a 40 ms link at
/// 3 Gbit/s) before the reader waits.
#[cfg(any(test, feature = "bench-rtt"))]
const LINE: usize = 256;

/// The round trip to add to every dialled connection: `SHOAL_BENCH_RTT_MS` in a
/// `bench-rtt` build, else none.
pub fn bench_rtt() -> Option<Duration> {
    #[cfg(feature = "bench-rtt")]
    {
        static RTT: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
        *RTT.get_or_init(|| {
            std::env::var("SHOAL_BENCH_RTT_MS")
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis)
        })
    }
    #[cfg(not(feature = "bench-rtt"))]
    None
}

/// A dialled connection: the TCP stream, or it behind a delay line (see the module doc).
#[derive(Debug)]
pub struct Wire(Inner);

#[derive(Debug)]
enum Inner {
    Direct(TcpStream),
    #[cfg(any(test, feature = "bench-rtt"))]
    Delayed(delayed::Delayed),
}

impl Wire {
    /// `tcp` just connected, delayed by [`bench_rtt`] if that is on.
    pub async fn dialled(tcp: TcpStream) -> Self {
        match bench_rtt() {
            #[cfg(feature = "bench-rtt")]
            Some(rtt) => Self::delayed(tcp, rtt).await,
            _ => Self(Inner::Direct(tcp)),
        }
    }

    /// `tcp` behind a delay line of `rtt`; takes `rtt` (the TCP handshake's round trip).
    #[cfg(any(test, feature = "bench-rtt"))]
    pub async fn delayed(tcp: TcpStream, rtt: Duration) -> Self {
        tokio::time::sleep(rtt).await;
        Self(Inner::Delayed(delayed::Delayed::new(tcp, rtt)))
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Direct(t) => Pin::new(t).poll_read(cx, buf),
            #[cfg(any(test, feature = "bench-rtt"))]
            Inner::Delayed(d) => d.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Inner::Direct(t) => Pin::new(t).poll_write(cx, buf),
            #[cfg(any(test, feature = "bench-rtt"))]
            Inner::Delayed(d) => Pin::new(&mut d.write).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Inner::Direct(t) => Pin::new(t).poll_write_vectored(cx, bufs),
            #[cfg(any(test, feature = "bench-rtt"))]
            Inner::Delayed(d) => Pin::new(&mut d.write).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            Inner::Direct(t) => t.is_write_vectored(),
            #[cfg(any(test, feature = "bench-rtt"))]
            Inner::Delayed(d) => d.write.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Direct(t) => Pin::new(t).poll_flush(cx),
            #[cfg(any(test, feature = "bench-rtt"))]
            Inner::Delayed(d) => Pin::new(&mut d.write).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Direct(t) => Pin::new(t).poll_shutdown(cx),
            #[cfg(any(test, feature = "bench-rtt"))]
            Inner::Delayed(d) => Pin::new(&mut d.write).poll_shutdown(cx),
        }
    }
}

#[cfg(any(test, feature = "bench-rtt"))]
mod delayed {
    use super::*;
    use std::future::Future;
    use tokio::io::AsyncReadExt;
    use tokio::net::tcp::OwnedWriteHalf;
    use tokio::sync::mpsc;
    use tokio::time::{Instant, Sleep};

    /// What the reader task hands over: when it may be read, and the bytes (empty: the
    /// peer closed) or the error.
    type Arrival = (Instant, io::Result<Vec<u8>>);

    #[derive(Debug)]
    pub(super) struct Delayed {
        pub(super) write: OwnedWriteHalf,
        line: mpsc::Receiver<Arrival>,
        /// The next arrival, waiting for its time.
        next: Option<Arrival>,
        /// Bytes due and not read yet.
        ready: Vec<u8>,
        at: usize,
        sleep: Pin<Box<Sleep>>,
    }

    impl Delayed {
        pub(super) fn new(tcp: TcpStream, rtt: Duration) -> Self {
            let (mut read, write) = tcp.into_split();
            let (tx, line) = mpsc::channel(LINE);
            // Ends at the peer's close or an error, or when the connection is dropped.
            tokio::spawn(async move {
                loop {
                    let mut buf = vec![0u8; CHUNK];
                    let got = read.read(&mut buf).await.map(|n| {
                        buf.truncate(n);
                        buf
                    });
                    let end = got.as_ref().map_or(true, Vec::is_empty);
                    if tx.send((Instant::now() + rtt, got)).await.is_err() || end {
                        return;
                    }
                }
            });
            Self {
                write,
                line,
                next: None,
                ready: Vec::new(),
                at: 0,
                sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            }
        }

        pub(super) fn poll_read(
            &mut self,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            loop {
                if self.at < self.ready.len() {
                    let n = buf.remaining().min(self.ready.len() - self.at);
                    buf.put_slice(&self.ready[self.at..self.at + n]);
                    self.at += n;
                    return Poll::Ready(Ok(()));
                }
                if self.next.is_none() {
                    match self.line.poll_recv(cx) {
                        Poll::Ready(Some(a)) => self.next = Some(a),
                        // The reader task is gone: the peer closed.
                        Poll::Ready(None) => return Poll::Ready(Ok(())),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                let Some((due, _)) = &self.next else { continue };
                if Instant::now() < *due {
                    self.sleep.as_mut().reset(*due);
                    if self.sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                match self.next.take() {
                    Some((_, Ok(bytes))) if bytes.is_empty() => return Poll::Ready(Ok(())),
                    Some((_, Ok(bytes))) => {
                        self.ready = bytes;
                        self.at = 0;
                    }
                    Some((_, Err(e))) => return Poll::Ready(Err(e)),
                    None => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An echo server on loopback; returns its address.
    async fn echo() -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_delayed_wire_costs_a_round_trip_per_exchange_and_keeps_every_byte_in_order() {
        let addr = echo().await;
        let rtt = Duration::from_millis(60);
        let started = tokio::time::Instant::now();
        let mut wire = Wire::delayed(TcpStream::connect(addr).await.unwrap(), rtt).await;
        assert!(started.elapsed() >= rtt, "connecting takes a round trip");
        // Two exchanges in sequence: at least two more round trips.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let t = tokio::time::Instant::now();
        for part in data.chunks(100_000) {
            wire.write_all(part).await.unwrap();
            let mut back = vec![0u8; part.len()];
            wire.read_exact(&mut back).await.unwrap();
            assert_eq!(back, part);
        }
        assert!(t.elapsed() >= 2 * rtt, "{:?}", t.elapsed());
        // The peer's close reads as the end, after the data.
        wire.shutdown().await.unwrap();
        let mut rest = Vec::new();
        wire.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn without_the_feature_and_variable_a_wire_is_the_stream_itself() {
        // This test binary is built without `bench-rtt` unless asked: then the variable
        // is never read and nothing is delayed.
        if cfg!(not(feature = "bench-rtt")) {
            assert_eq!(bench_rtt(), None);
        }
        let addr = echo().await;
        let mut wire = Wire::dialled(TcpStream::connect(addr).await.unwrap()).await;
        wire.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        wire.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
    }
}
