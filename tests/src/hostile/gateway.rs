//! The hostile client against a live S3 gateway (`live.gateway_http`): an
//! [`uplink_gateway::Gateway`] serving an uplink over the harness's nodes, attacked on
//! its HTTP port by a client without credentials (or with valid ones, where the attack
//! is past authentication) and checked after each round with a signed PUT and GET.
//!
//! Every case asserts the refusal it must get, and that the refusal is bounded:
//! - an anonymous 1 GiB PUT (with a length, or chunked) answers 403 AccessDenied, and a
//!   1 GiB browser form POST (PostObject) 501 NotImplemented, while the client has
//!   written at most [`MAX_READ_BEFORE_ANSWER`] of the body (socket buffers): the
//!   gateway answers without reading it;
//! - SigV2, in the `Authorization` header or in the query (with the gateway's own
//!   access key), answers 400 InvalidRequest;
//! - a request head over hyper's limit (one huge header, or too many) answers 431, or
//!   the connection is reset before the client reads that answer (the client is still
//!   writing when the gateway closes);
//! - a DeleteObjects or CompleteMultipartUpload whose XML body declares 1 GiB answers
//!   400 MaxMessageLengthExceeded when signed (refused by its declared length, over the
//!   4 MiB XML limit) and 403 AccessDenied unsigned, and one sent chunked (no length)
//!   411 MissingContentLength when signed, with at most [`MAX_READ_BEFORE_ANSWER`]
//!   written;
//! - a signed PUT whose body stops half way answers 400 IncompleteBody, no sooner than
//!   half the gateway's body idle timeout and no later than [`IDLE_SLACK`] after it;
//! - mutated request heads get whatever answer, within the client's patience.
//!
//! "Stays responsive" is the check after every round: a signed PUT of an object that
//! goes to the nodes and a GET of it, within a deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use rand::RngExt;
use rand::rngs::SmallRng;
use shoal_proto::fuzz::generate;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uplink::catalog::Catalog;
use uplink::{Access, RootSecret, UplinkConfig};
use uplink_gateway::{Gateway, GatewayConfig};

use crate::Cluster;
use crate::e2e::{candidates, cluster_uplink};
use crate::sigv4::{self, hex};

const ACCESS_KEY: &str = "HOSTILEHARNESSKEY";
const SECRET_KEY: &str = "hostile-harness-secret-0123456789";
const BUCKET: &str = "hostile";

/// The gateway's body idle timeout in the harness (60 s in production).
pub const BODY_IDLE: Duration = Duration::from_secs(1);
/// How much later than [`BODY_IDLE`] a stalled body may end.
pub const IDLE_SLACK: Duration = Duration::from_secs(5);
/// Most of a refused body the client may write before the answer: what loopback socket
/// buffers take (a few MiB) with room to spare, far below the 1 GiB declared.
pub const MAX_READ_BEFORE_ANSWER: u64 = 48 << 20;
/// The size every oversized body declares.
const HUGE: u64 = 1 << 30;
/// Longest one exchange may take before the case fails as "no answer".
const PATIENCE: Duration = Duration::from_secs(15);

/// A gateway running in this process over the harness's nodes.
#[derive(Debug)]
pub struct LiveGateway {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), uplink::Error>>>,
    checks: std::sync::atomic::AtomicU64,
}

/// One HTTP/1.1 answer: status and body.
#[derive(Debug, Default)]
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    /// The `<Code>` of an S3 error document.
    fn code(&self) -> &str {
        let text = std::str::from_utf8(&self.body).unwrap_or_default();
        text.split_once("<Code>")
            .and_then(|(_, rest)| rest.split_once("</Code>"))
            .map_or("", |(code, _)| code)
    }

    fn expect(&self, status: u16, code: &str, what: &str) -> anyhow::Result<()> {
        ensure!(
            self.status == status && self.code() == code,
            "{what}: expected {status} {code}, got {} {} ({:?})",
            self.status,
            self.code(),
            String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
        );
        Ok(())
    }
}

impl LiveGateway {
    /// A gateway on 127.0.0.1 (port 0) over `cluster`'s nodes (scheme 1/1/2/2 over two
    /// nodes), with bucket [`BUCKET`] and a [`BODY_IDLE`] body idle timeout.
    pub async fn start(cluster: &Cluster) -> anyhow::Result<Self> {
        let config = UplinkConfig {
            scheme: "1/1/2/2".parse()?,
            allow_smaller_scheme: false,
            ..UplinkConfig::default()
        };
        let up = cluster_uplink(
            Access::new(RootSecret::random(), Vec::new()),
            candidates(cluster),
            Catalog::temporary()?,
            config,
        )?;
        up.create_bucket(BUCKET)?;
        let mut gw = GatewayConfig::new(ACCESS_KEY.into(), SECRET_KEY.into());
        gw.body_idle_timeout = BODY_IDLE;
        let gateway = Gateway::bind(up, "127.0.0.1:0".parse()?, gw).await?;
        let addr = gateway.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gateway.run(async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            stop: Some(stop),
            task: Some(task),
            checks: Default::default(),
        })
    }

    /// One hostile case; `input` receives the bytes sent (for the report).
    pub async fn case(&self, rng: &mut SmallRng, input: &mut Vec<u8>) -> anyhow::Result<()> {
        match rng.random_range(0..10) {
            0 => self.anonymous_put(rng, input).await,
            1 => self.post_object(input).await,
            2 => self.sigv2(rng, input).await,
            3 => self.oversized_head(rng, input).await,
            4 | 5 => self.oversized_xml(rng, input).await,
            6 => self.slow_body(rng, input).await,
            _ => self.mutated(rng, input).await,
        }
    }

    /// An anonymous PUT declaring 1 GiB (or chunked, with no end): 403 before the body.
    async fn anonymous_put(&self, rng: &mut SmallRng, input: &mut Vec<u8>) -> anyhow::Result<()> {
        let chunked = rng.random_bool(0.5);
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {HUGE}")
        };
        *input =
            format!("PUT /{BUCKET}/anonymous HTTP/1.1\r\nHost: localhost\r\n{framing}\r\n\r\n")
                .into_bytes();
        let (answer, written) = self.send_huge(input, chunked).await?;
        let answer = answer.context("an anonymous 1 GiB PUT got no answer")?;
        answer.expect(403, "AccessDenied", "an anonymous 1 GiB PUT")?;
        bounded(written, "an anonymous 1 GiB PUT")
    }

    /// A browser form upload (PostObject) declaring 1 GiB: 501 before the body.
    async fn post_object(&self, input: &mut Vec<u8>) -> anyhow::Result<()> {
        *input = format!(
            "POST /{BUCKET} HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=xx\r\nContent-Length: {HUGE}\r\n\r\n--xx\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk\r\n"
        )
        .into_bytes();
        let (answer, written) = self.send_huge(input, false).await?;
        let answer = answer.context("a 1 GiB form POST got no answer")?;
        answer.expect(501, "NotImplemented", "a 1 GiB form POST")?;
        bounded(written, "a 1 GiB form POST")
    }

    /// SigV2 in the header or the query, with the gateway's own key: 400.
    async fn sigv2(&self, rng: &mut SmallRng, input: &mut Vec<u8>) -> anyhow::Result<()> {
        let date = httpdate(SystemTime::now());
        *input = if rng.random_bool(0.5) {
            format!(
                "GET /{BUCKET}/k HTTP/1.1\r\nHost: localhost\r\nDate: {date}\r\nAuthorization: AWS {ACCESS_KEY}:{}\r\n\r\n",
                hex(&rng.random::<[u8; 20]>())
            )
        } else {
            format!(
                "GET /{BUCKET}/k?AWSAccessKeyId={ACCESS_KEY}&Expires=2000000000&Signature={} HTTP/1.1\r\nHost: localhost\r\n\r\n",
                hex(&rng.random::<[u8; 20]>())
            )
        }
        .into_bytes();
        let answer = self.exchange(input).await?;
        answer.expect(400, "InvalidRequest", "a SigV2 request")
    }

    /// A request head over hyper's limit: one huge header, or too many headers.
    async fn oversized_head(&self, rng: &mut SmallRng, input: &mut Vec<u8>) -> anyhow::Result<()> {
        let mut head = format!("GET /{BUCKET}/k HTTP/1.1\r\nHost: localhost\r\n");
        if rng.random_bool(0.5) {
            let n = rng.random_range(512 << 10..2 << 20);
            head.push_str(&format!("X-Big: {}\r\n", "a".repeat(n)));
        } else {
            for i in 0..rng.random_range(120..1000) {
                head.push_str(&format!("X-Header-{i}: {i}\r\n"));
            }
        }
        head.push_str("\r\n");
        *input = head.into_bytes();
        let (answer, _) = self.send_watching(input, 0, false).await?;
        match answer {
            Some(a) => {
                ensure!(
                    a.status == 431,
                    "an oversized request head: expected 431, got {}",
                    a.status
                );
                Ok(())
            }
            // Reset while the client was still writing: refused all the same.
            None => Ok(()),
        }
    }

    /// DeleteObjects or CompleteMultipartUpload with an XML body declaring 1 GiB.
    async fn oversized_xml(&self, rng: &mut SmallRng, input: &mut Vec<u8>) -> anyhow::Result<()> {
        let (path, query, opening) = if rng.random_bool(0.5) {
            (format!("/{BUCKET}"), "delete=".to_string(), "<Delete>")
        } else {
            let upload = hex(&rng.random::<[u8; 16]>());
            (
                format!("/{BUCKET}/k"),
                format!("uploadId={upload}"),
                "<CompleteMultipartUpload>",
            )
        };
        let signed = rng.random_bool(0.7);
        let chunked = rng.random_bool(0.3);
        let auth = if signed {
            sign("POST", &path, &query, SystemTime::now())
        } else {
            String::new()
        };
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {HUGE}")
        };
        *input = format!(
            "POST {path}?{query} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/xml\r\n{framing}\r\n{auth}\r\n"
        )
        .into_bytes();
        if !chunked {
            input.extend_from_slice(opening.as_bytes());
        }
        let (answer, written) = self.send_huge(input, chunked).await?;
        let answer = answer.context("a 1 GiB XML body got no answer")?;
        match (signed, chunked) {
            (true, false) => {
                answer.expect(400, "MaxMessageLengthExceeded", "a signed 1 GiB XML body")?;
            }
            (true, true) => {
                answer.expect(411, "MissingContentLength", "a signed chunked XML body")?;
            }
            (false, _) => answer.expect(403, "AccessDenied", "an anonymous 1 GiB XML body")?,
        }
        bounded(written, "a 1 GiB XML body")
    }

    /// A signed PUT whose body stops half way: the gateway ends it after its body idle
    /// timeout.
    async fn slow_body(&self, rng: &mut SmallRng, input: &mut Vec<u8>) -> anyhow::Result<()> {
        let path = format!("/{BUCKET}/slow-{}", rng.random::<u32>());
        let auth = sign("PUT", &path, "", SystemTime::now());
        let sent = rng.random_range(0..64 << 10);
        let mut bytes = format!(
            "PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n{auth}\r\n",
            1 << 20
        )
        .into_bytes();
        bytes.extend((0..sent).map(|_| rng.random::<u8>()));
        input.clone_from(&bytes);
        let started = Instant::now();
        let mut tcp = TcpStream::connect(self.addr).await?;
        tcp.write_all(&bytes).await?;
        let limit = BODY_IDLE + IDLE_SLACK;
        // The body never goes on: the answer (or the end of the connection) must come.
        let ended = tokio::time::timeout(limit, read_answer(&mut tcp)).await;
        let answer = match ended {
            Ok(a) => a.context("a stalled body got no answer")?,
            Err(_) => bail!(
                "a stalled body was still open {limit:?} after it stopped (idle timeout {BODY_IDLE:?})"
            ),
        };
        answer.expect(400, "IncompleteBody", "a stalled body")?;
        ensure!(
            started.elapsed() >= BODY_IDLE / 2,
            "a stalled body was ended before the idle timeout ({:?})",
            started.elapsed()
        );
        Ok(())
    }

    /// Mutated request heads (and short bodies): any answer, or none, within patience.
    async fn mutated(&self, rng: &mut SmallRng, input: &mut Vec<u8>) -> anyhow::Result<()> {
        let now = SystemTime::now();
        let seeds: Vec<Vec<u8>> = [
            format!("GET /{BUCKET}?list-type=2 HTTP/1.1\r\nHost: localhost\r\n{}\r\n", sign("GET", &format!("/{BUCKET}"), "list-type=2", now)),
            format!("PUT /{BUCKET}/m HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n{}\r\nhello", sign("PUT", &format!("/{BUCKET}/m"), "", now)),
            format!("GET /{BUCKET}/m HTTP/1.1\r\nHost: {BUCKET}.localhost\r\nRange: bytes=0-1\r\n\r\n"),
            format!("POST /{BUCKET}/m?uploads HTTP/1.1\r\nHost: localhost\r\nx-amz-meta-a: \u{e9}\r\n\r\n"),
            "GET /_shoal/metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".to_string(),
            format!("PUT /{BUCKET}/m?partNumber=1&uploadId=00 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nx-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect();
        generate(rng, &seeds, input);
        let mut tcp = TcpStream::connect(self.addr).await?;
        let exchange = async {
            tcp.write_all(input).await?;
            let mut buf = [0u8; 4096];
            while tcp.read(&mut buf).await? > 0 {}
            Ok::<_, std::io::Error>(())
        };
        let _ = tokio::time::timeout(Duration::from_millis(1500), exchange).await;
        Ok(())
    }

    /// After a round: a signed PUT of an object stored on the nodes, and a GET of it.
    pub async fn check(&self) -> anyhow::Result<()> {
        let n = self
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = format!("/{BUCKET}/check-{n}");
        let data = shoal_test_kit::test_data(20_000, n);
        let mut put = format!(
            "PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n{}\r\n",
            data.len(),
            sign("PUT", &path, "", SystemTime::now())
        )
        .into_bytes();
        put.extend_from_slice(&data);
        let answer = self.exchange(&put).await.context("a signed PUT")?;
        ensure!(
            answer.status == 200,
            "a signed PUT after the round: {} {}",
            answer.status,
            answer.code()
        );
        let get = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
            sign("GET", &path, "", SystemTime::now())
        );
        let answer = self
            .exchange(get.as_bytes())
            .await
            .context("a signed GET")?;
        ensure!(
            answer.status == 200 && answer.body == data,
            "a signed GET after the round: {} ({} bytes)",
            answer.status,
            answer.body.len()
        );
        Ok(())
    }

    /// Stops the gateway (requests in flight get its shutdown grace).
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }

    /// Sends `bytes` and reads one answer.
    async fn exchange(&self, bytes: &[u8]) -> anyhow::Result<Answer> {
        let run = async {
            let mut tcp = TcpStream::connect(self.addr).await?;
            tcp.write_all(bytes).await?;
            read_answer(&mut tcp).await
        };
        tokio::time::timeout(PATIENCE, run)
            .await
            .context("no answer within the patience")?
    }

    /// `head`, then a body of [`HUGE`] zero bytes (chunked: chunks without end).
    async fn send_huge(&self, head: &[u8], chunked: bool) -> anyhow::Result<(Option<Answer>, u64)> {
        self.send_watching(head, HUGE, chunked).await
    }

    /// Sends `head` and then up to `body` bytes, reading the answer meanwhile; returns
    /// the answer (none when the connection ended without one) and the body bytes
    /// written before it came.
    async fn send_watching(
        &self,
        head: &[u8],
        body: u64,
        chunked: bool,
    ) -> anyhow::Result<(Option<Answer>, u64)> {
        let tcp = TcpStream::connect(self.addr).await?;
        let (mut rd, mut wr) = tcp.into_split();
        let reader = tokio::spawn(async move { read_answer(&mut rd).await });
        tokio::pin!(reader);
        let chunk = vec![0u8; 64 << 10];
        let framed: Vec<u8> = if chunked {
            let mut f = format!("{:x}\r\n", chunk.len()).into_bytes();
            f.extend_from_slice(&chunk);
            f.extend_from_slice(b"\r\n");
            f
        } else {
            chunk
        };
        let run = async {
            let mut written = 0u64;
            let mut failed = wr.write_all(head).await.is_err();
            while !failed && written < body {
                tokio::select! {
                    answer = &mut reader => return (answer.ok().and_then(Result::ok), written),
                    r = wr.write_all(&framed) => match r {
                        Ok(()) => written += framed.len() as u64,
                        Err(_) => failed = true,
                    },
                }
            }
            // Written in full, or the gateway stopped taking it: the answer, if any.
            (reader.await.ok().and_then(Result::ok), written)
        };
        tokio::time::timeout(PATIENCE, run)
            .await
            .context("neither an answer nor the end of the connection within the patience")
    }
}

fn bounded(written: u64, what: &str) -> anyhow::Result<()> {
    ensure!(
        written <= MAX_READ_BEFORE_ANSWER,
        "{what}: the client wrote {written} bytes before the answer (at most {MAX_READ_BEFORE_ANSWER})"
    );
    Ok(())
}

/// Reads one HTTP/1.1 answer (a `Content-Length` body, or none).
async fn read_answer<R: AsyncRead + Unpin>(r: &mut R) -> anyhow::Result<Answer> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        ensure!(buf.len() < 64 << 10, "an answer head over 64 KiB");
        let n = r.read(&mut tmp).await?;
        if n == 0 {
            bail!("the connection ended without an answer");
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let len: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    ensure!(len <= 16 << 20, "an answer body of {len} bytes");
    let mut body = buf[end + 4..].to_vec();
    while body.len() < len {
        let n = r.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    body.truncate(len);
    Ok(Answer { status, body })
}

/// The SigV4 headers (`x-amz-date`, `x-amz-content-sha256: UNSIGNED-PAYLOAD`,
/// `Authorization`, each line ending in CRLF) of a request for `path` with `query`
/// (`name=value` pairs joined by `&`) on host `localhost`, signed with the harness's key.
fn sign(method: &str, path: &str, query: &str, now: SystemTime) -> String {
    let payload = "UNSIGNED-PAYLOAD";
    let pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect();
    let (auth, stamp) = sigv4::authorization(
        ACCESS_KEY,
        SECRET_KEY,
        method,
        path,
        &pairs,
        "localhost",
        payload,
        unix(now),
    );
    format!("x-amz-date: {stamp}\r\nx-amz-content-sha256: {payload}\r\nAuthorization: {auth}\r\n")
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn httpdate(t: SystemTime) -> String {
    sigv4::httpdate(unix(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Every kind of attack, each variant a few times, gets the refusal it must get,
    /// and the gateway still serves a signed PUT and GET afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_attack_gets_its_refusal() {
        let cluster = Cluster::start(2, crate::NodeOptions::default())
            .await
            .unwrap();
        let gw = LiveGateway::start(&cluster).await.unwrap();
        gw.check().await.unwrap();
        let mut rng = SmallRng::seed_from_u64(27);
        let mut input = Vec::new();
        for round in 0..4 {
            let ok = |kind: &str, r: anyhow::Result<()>| {
                if let Err(e) = r {
                    panic!("{kind} (round {round}): {e:#}");
                }
            };
            ok(
                "anonymous PUT",
                gw.anonymous_put(&mut rng, &mut input).await,
            );
            ok("PostObject", gw.post_object(&mut input).await);
            ok("SigV2", gw.sigv2(&mut rng, &mut input).await);
            ok(
                "oversized head",
                gw.oversized_head(&mut rng, &mut input).await,
            );
            ok(
                "oversized XML",
                gw.oversized_xml(&mut rng, &mut input).await,
            );
            ok("stalled body", gw.slow_body(&mut rng, &mut input).await);
            ok("mutated", gw.mutated(&mut rng, &mut input).await);
        }
        gw.check().await.unwrap();
        gw.shutdown().await.unwrap();
        cluster.shutdown().await.unwrap();
    }
}
