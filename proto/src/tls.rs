//! Node-identity TLS: every gRPC connection (pieces and DHT) runs over TLS 1.3 whose
//! certificate key is the node's ed25519 identity key, the idea of Storj's node identity
//! and libp2p's TLS handshake.
//!
//! - A node presents a self-signed certificate over its identity key. Nothing about the
//!   certificate is trusted except that key: the TLS 1.3 handshake signature proves the
//!   server holds it, and the client accepts the connection only if the key hashes to
//!   the [`NodeId`] it meant to reach ([`NodeIdVerifier`]). There are no CAs, names or
//!   validity dates to check.
//! - A dialler therefore always knows the id it expects: the DHT from signed node
//!   records, an uplink from its placements, and configuration from pinned entries
//!   written `NODEID@HOST:PORT` ([`PinnedPeer`]).
//! - Clients do not present certificates: pieces are authorised by signed orders and DHT
//!   senders by their signed records and a dial-back.
//! - The server side ([`accept_with`]) handshakes accepted connections concurrently,
//!   each within [`SERVER_HANDSHAKE_TIMEOUT`] and at most a few per peer group, so peers
//!   that stall their handshakes hold nothing else up; a plaintext client fails the
//!   handshake and is dropped.
//!
//! The crypto provider is aws-lc-rs (rustls's default; measured against ring in the
//! commit that brought this module: faster AES-GCM and handshakes, and it builds with
//! gcc alone).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use ed25519_dalek::pkcs8::EncodePrivateKey;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::identity::Identity;
use crate::ids::{NodeId, PublicKey};
use crate::rtt::Wire;

/// How long a dialler's TCP connect and TLS handshake may take together.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a server waits for a client to finish its TLS handshake: a TLS 1.3
/// handshake is one round trip of the client's, so an honest client across the world
/// needs well under a second; a client that stalls holds its slot no longer than this.
pub const SERVER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// Server handshakes in progress at most; connections past this wait in the backlog.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// Server handshakes in progress at most from one peer group (an IPv4 address or an
/// IPv6 /64, [`crate::address::peer_group`]) on a public node: a few addresses that
/// stall their handshakes cannot take the slots of everyone else. Past it, a new
/// connection from that group is closed at once.
pub const MAX_PENDING_PER_GROUP: usize = 4;

/// The one protocol spoken over these connections.
const ALPN_H2: &[u8] = b"h2";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (33 bytes, 0 unused bits) }, then the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a TLS setup or connection failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot build the TLS certificate of the node identity: {0}")]
    Certificate(String),
    #[error("cannot configure TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// The certificate a dialler got belongs to another node than the one it pinned.
#[derive(Debug, Clone, thiserror::Error)]
#[error("peer is node {actual}, not the expected node {expected}")]
pub struct WrongNode {
    pub expected: NodeId,
    pub actual: NodeId,
}

/// A peer given as `NODEID@HOST:PORT`: where to dial and whom to expect there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PinnedPeer {
    pub id: NodeId,
    /// `HOST:PORT` (a name or an IP).
    pub address: String,
}

/// Why a `NODEID@HOST:PORT` entry does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinnedPeerError {
    #[error(
        "`{0}` has no node id: write it NODEID@HOST:PORT (the node id is on the node's `ready` line and in `storage-node info`)"
    )]
    Unpinned(String),
    #[error("`{0}`: the node id must be 64 hex digits")]
    BadId(String),
    #[error("`{0}`: `{1}` is not HOST:PORT")]
    BadAddress(String, String),
}

impl FromStr for PinnedPeer {
    type Err = PinnedPeerError;

    fn from_str(entry: &str) -> Result<Self, PinnedPeerError> {
        let entry = entry.trim();
        let Some((id, address)) = entry.split_once('@') else {
            return Err(PinnedPeerError::Unpinned(entry.to_owned()));
        };
        let id = NodeId::from_hex(id.trim()).ok_or_else(|| PinnedPeerError::BadId(entry.into()))?;
        let address = address.trim();
        let port_ok = address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(PinnedPeerError::BadAddress(entry.into(), address.into()));
        }
        Ok(Self {
            id,
            address: address.to_owned(),
        })
    }
}

impl fmt::Display for PinnedPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id.to_hex(), self.address)
    }
}

impl PinnedPeer {
    pub fn new(id: NodeId, address: impl fmt::Display) -> Self {
        Self {
            id,
            address: address.to_string(),
        }
    }

    /// Resolves the address; each resulting socket address keeps the pinned id.
    pub async fn resolve(&self) -> io::Result<Vec<(NodeId, SocketAddr)>> {
        Ok(tokio::net::lookup_host(self.address.as_str())
            .await?
            .map(|a| (self.id, a))
            .collect())
    }
}

static PROVIDER: LazyLock<Arc<CryptoProvider>> = LazyLock::new(|| {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // TLS 1.3 suites only, AES-128-GCM first: the fastest here with AES-NI.
    provider.cipher_suites = vec![
        rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
        rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
        rustls::crypto::aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
});

/// The TLS server configuration of a node: a self-signed certificate over its identity
/// key, TLS 1.3 only, HTTP/2 only.
pub fn server_config(identity: &Identity) -> Result<Arc<ServerConfig>, TlsError> {
    let pkcs8 = identity
        .signing_key()
        .to_pkcs8_der()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let key_der = PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &rcgen::PKCS_ED25519)
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, identity.node_id().to_hex());
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(PROVIDER.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(key_der))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that accepts exactly the node `expected`.
pub fn client_config(expected: NodeId) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(PROVIDER.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeIdVerifier { expected }))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // A resumed session skips certificate verification; every connection proves the
    // node's key afresh (connections are long-lived HTTP/2 channels anyway).
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The node id whose identity key is in this certificate, if it is an Ed25519 one.
pub fn node_id_of_certificate(cert: &CertificateDer<'_>) -> Result<NodeId, rustls::Error> {
    let bad = |what: &str| {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            Arc::new(io::Error::new(io::ErrorKind::InvalidData, what.to_owned())),
        )))
    };
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
    let spki = parsed.subject_public_key_info();
    let key = spki
        .as_ref()
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .ok_or_else(|| bad("the certificate key is not an Ed25519 node identity key"))?;
    let key = PublicKey::from_bytes("certificate key", key)
        .map_err(|_| bad("the certificate key is not a valid Ed25519 key"))?;
    Ok(key.node_id())
}

/// Accepts a server certificate only if its key hashes to `expected`; the handshake
/// signature must be Ed25519 by that key.
#[derive(Debug)]
pub struct NodeIdVerifier {
    expected: NodeId,
}

impl ServerCertVerifier for NodeIdVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = node_id_of_certificate(end_entity)?;
        if actual != self.expected {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(WrongNode {
                    expected: self.expected,
                    actual,
                }))),
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ));
        }
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &PROVIDER.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The [`WrongNode`] somewhere in an error's source chain, if any.
pub fn wrong_node<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a WrongNode> {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if let Some(w) = e.downcast_ref::<WrongNode>() {
            return Some(w);
        }
        if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) =
            e.downcast_ref::<rustls::Error>()
            && let Some(w) = o.0.downcast_ref::<WrongNode>()
        {
            return Some(w);
        }
        // io::Error's source() skips the error it wraps; look at that one first.
        cur = match e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// Whether an error (a `tonic::Status` from a call, say) comes from the connection
/// rather than from the peer's answer: a transport, HTTP/2 or socket error somewhere in
/// its source chain. Decided on the types in the chain, never on the message text.
pub fn connection_failed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if e.is::<tonic::transport::Error>() || e.is::<hyper::Error>() || e.is::<io::Error>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// An error and its sources, `a: b: c` (tonic's transport errors hide the cause).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut cur = error.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    // rustls prints a certificate error with Debug (shortened ids): say it in full.
    if let Some(w) = wrong_node(error) {
        out.push_str(": ");
        out.push_str(&w.to_string());
    }
    out
}

/// Dials one node over node-identity TLS: TCP (no delay), then a TLS 1.3 handshake that
/// succeeds only if the peer proves the key of `expected`, all within
/// [`HANDSHAKE_TIMEOUT`]. Plug it into `Endpoint::connect_with_connector_lazy`.
#[derive(Debug, Clone)]
pub struct Connector {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
}

impl Connector {
    pub fn new(expected: NodeId, addr: SocketAddr) -> Result<Self, TlsError> {
        Ok(Self {
            addr,
            config: client_config(expected)?,
        })
    }

    /// A lazily connecting channel to `expected` at `addr`, with the given endpoint
    /// settings (message sizes, windows, timeouts).
    pub fn channel(
        expected: NodeId,
        addr: SocketAddr,
        configure: impl FnOnce(tonic::transport::Endpoint) -> tonic::transport::Endpoint,
    ) -> Result<tonic::transport::Channel, TlsError> {
        // The URI only fills HTTP/2's :authority; the connector ignores it and dials
        // `addr`. `http` keeps tonic's own TLS layer (not compiled in) out of the way.
        let endpoint = tonic::transport::Endpoint::from(endpoint_uri(addr));
        Ok(configure(endpoint).connect_with_connector_lazy(Self::new(expected, addr)?))
    }

    async fn connect(self) -> io::Result<TokioIo<tokio_rustls::client::TlsStream<Wire>>> {
        let dial = async {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            // Behind a delay line in a `bench-rtt` build asked for one (crate::rtt).
            let tcp = Wire::dialled(tcp).await;
            let name = ServerName::IpAddress(self.addr.ip().into());
            tokio_rustls::TlsConnector::from(self.config)
                .connect(name, tcp)
                .await
        };
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, dial)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TLS connection to {} timed out", self.addr),
                )
            })??;
        Ok(TokioIo::new(tls))
    }
}

fn endpoint_uri(addr: SocketAddr) -> tonic::codegen::http::Uri {
    let mut parts = tonic::codegen::http::uri::Parts::default();
    parts.scheme = Some(tonic::codegen::http::uri::Scheme::HTTP);
    parts.authority = tonic::codegen::http::uri::Authority::try_from(addr.to_string()).ok();
    parts.path_and_query = Some(tonic::codegen::http::uri::PathAndQuery::from_static("/"));
    tonic::codegen::http::Uri::from_parts(parts).unwrap_or_default()
}

impl tonic::codegen::Service<tonic::codegen::http::Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<Wire>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: tonic::codegen::http::Uri) -> Self::Future {
        Box::pin(self.clone().connect())
    }
}

/// A server-side TLS connection over an accepted transport `T`.
#[derive(Debug)]
pub struct TlsIo<T>(tokio_rustls::server::TlsStream<T>);

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl<T: Connected> Connected for TlsIo<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> T::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

/// [`accept_with`] where every peer group may use all [`MAX_PENDING_HANDSHAKES`]: for a
/// network on one machine or LAN (tests, a devnet, `local_network`), where every peer
/// dials from the same address. A public node uses [`accept_with`] and
/// [`MAX_PENDING_PER_GROUP`].
pub fn accept<S, T, E>(incoming: S, config: Arc<ServerConfig>) -> TlsIncoming<S, T>
where
    S: Stream<Item = Result<T, E>> + Unpin,
    T: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    T::ConnectInfo: RemoteAddr,
    E: fmt::Display,
{
    accept_with(incoming, config, MAX_PENDING_HANDSHAKES)
}

/// Turns a stream of accepted connections into a stream of TLS connections for
/// `serve_with_incoming`. Handshakes run concurrently, each within
/// [`SERVER_HANDSHAKE_TIMEOUT`], at most [`MAX_PENDING_HANDSHAKES`] at once (further
/// connections wait in the listen backlog) and at most `per_group` from one peer group
/// (further connections from it are closed at once); failed handshakes (plaintext
/// clients among them) are dropped. Accept errors are logged and retried after a
/// growing pause (up to 1 s). No task is spawned: dropping the stream closes the
/// listener and every pending handshake at once, so a restarted server can bind the
/// same port.
pub fn accept_with<S, T, E>(
    incoming: S,
    config: Arc<ServerConfig>,
    per_group: usize,
) -> TlsIncoming<S, T>
where
    S: Stream<Item = Result<T, E>> + Unpin,
    T: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    T::ConnectInfo: RemoteAddr,
    E: fmt::Display,
{
    TlsIncoming {
        incoming: Some(incoming),
        acceptor: tokio_rustls::TlsAcceptor::from(config),
        handshakes: FuturesUnordered::new(),
        per_group: per_group.max(1),
        pending: HashMap::new(),
        pause: None,
        backoff: crate::limits::AcceptBackoff::default(),
    }
}

/// Where a connection comes from, for the per-group handshake cap.
pub trait RemoteAddr {
    fn remote(&self) -> Option<SocketAddr>;
}

impl RemoteAddr for TcpConnectInfo {
    fn remote(&self) -> Option<SocketAddr> {
        self.remote_addr()
    }
}

/// An in-memory connection (tests): no address, all in one group.
impl RemoteAddr for () {
    fn remote(&self) -> Option<SocketAddr> {
        None
    }
}

type Handshake<T> = Pin<Box<dyn Future<Output = (IpAddr, Option<TlsIo<T>>)> + Send>>;

/// The stream [`accept_with`] returns.
pub struct TlsIncoming<S, T> {
    /// `None` once the underlying stream has ended.
    incoming: Option<S>,
    acceptor: tokio_rustls::TlsAcceptor,
    handshakes: FuturesUnordered<Handshake<T>>,
    /// Pending handshakes allowed per peer group, and those in progress.
    per_group: usize,
    pending: HashMap<IpAddr, usize>,
    /// Set after an accept error: no accepting until it elapses.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    backoff: crate::limits::AcceptBackoff,
}

impl<S, T> fmt::Debug for TlsIncoming<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIncoming")
            .field("pending_handshakes", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}

impl<S, T> TlsIncoming<S, T>
where
    T: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    T::ConnectInfo: RemoteAddr,
{
    /// Starts the handshake of `conn`, unless its peer group has its share in progress
    /// (then `conn` is dropped: closed).
    fn start(&mut self, conn: T) {
        let ip = conn
            .connect_info()
            .remote()
            .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let group = crate::address::peer_group(ip);
        let n = self.pending.entry(group).or_default();
        if *n >= self.per_group {
            tracing::debug!(peer = %ip, "connection closed: its group has {n} handshakes pending");
            return;
        }
        *n += 1;
        let accepting = self.acceptor.accept(conn);
        self.handshakes.push(Box::pin(async move {
            match tokio::time::timeout(SERVER_HANDSHAKE_TIMEOUT, accepting).await {
                Ok(Ok(tls)) => (group, Some(TlsIo(tls))),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    (group, None)
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    (group, None)
                }
            }
        }));
    }

    fn finished(&mut self, group: IpAddr) {
        if let Some(n) = self.pending.get_mut(&group) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.pending.remove(&group);
            }
        }
    }
}

impl<S, T, E> Stream for TlsIncoming<S, T>
where
    S: Stream<Item = Result<T, E>> + Unpin,
    T: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    T::ConnectInfo: RemoteAddr,
    E: fmt::Display,
{
    type Item = Result<TlsIo<T>, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            this.take_in(cx);
            // Hand out finished handshakes; one that failed frees a slot, so take in
            // again (the listener may not have been polled while the slots were full).
            match this.handshakes.poll_next_unpin(cx) {
                Poll::Ready(Some((group, done))) => {
                    this.finished(group);
                    if let Some(tls) = done {
                        return Poll::Ready(Some(Ok(tls)));
                    }
                }
                Poll::Ready(None) if this.incoming.is_none() => return Poll::Ready(None),
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S, T, E> TlsIncoming<S, T>
where
    S: Stream<Item = Result<T, E>> + Unpin,
    T: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    T::ConnectInfo: RemoteAddr,
    E: fmt::Display,
{
    /// Takes in new connections while there is room for their handshakes.
    fn take_in(&mut self, cx: &mut Context<'_>) {
        loop {
            if let Some(pause) = self.pause.as_mut() {
                if pause.as_mut().poll(cx).is_pending() {
                    return;
                }
                self.pause = None;
            }
            if self.handshakes.len() >= MAX_PENDING_HANDSHAKES {
                return;
            }
            let Some(incoming) = self.incoming.as_mut() else {
                return;
            };
            match Pin::new(incoming).poll_next(cx) {
                Poll::Pending => return,
                Poll::Ready(None) => self.incoming = None,
                Poll::Ready(Some(Ok(conn))) => {
                    self.backoff.succeeded();
                    self.start(conn);
                }
                Poll::Ready(Some(Err(e))) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    let pause = self.backoff.failed();
                    tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "accept failed");
                    self.pause = Some(Box::pin(tokio::time::sleep(pause)));
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
