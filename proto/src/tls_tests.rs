use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn identity(seed: u8) -> Identity {
    Identity::from_seed([seed; 32])
}

/// A server on `accept` fed with one in-memory connection; returns the client end.
fn serve_one(
    server: &Identity,
) -> (
    DuplexStream,
    impl Stream<Item = io::Result<TlsIo<DuplexStream>>>,
) {
    let (client, server_end) = tokio::io::duplex(64 * 1024);
    let config = server_config(server).unwrap();
    let incoming = futures::stream::iter(vec![Ok::<_, io::Error>(server_end)]);
    (client, Box::pin(accept(incoming, config)))
}

async fn dial(
    io: DuplexStream,
    expected: NodeId,
) -> io::Result<tokio_rustls::client::TlsStream<DuplexStream>> {
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    tokio_rustls::TlsConnector::from(client_config(expected).unwrap())
        .connect(name, io)
        .await
}

#[tokio::test]
async fn pinned_node_completes_a_tls13_handshake() {
    let node = identity(1);
    let (client, mut incoming) = serve_one(&node);
    let (tls, server) = tokio::join!(dial(client, node.node_id()), incoming.next());
    let mut tls = tls.unwrap();
    let mut server = server.unwrap().unwrap();
    let (_, conn) = tls.get_ref();
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(conn.alpn_protocol(), Some(ALPN_H2));
    let cert = &conn.peer_certificates().unwrap()[0];
    assert_eq!(node_id_of_certificate(cert).unwrap(), node.node_id());
    tls.write_all(b"ping").await.unwrap();
    tls.flush().await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn wrong_pinned_id_is_refused_naming_both_ids() {
    let node = identity(1);
    let expected = identity(2).node_id();
    let (client, mut incoming) = serve_one(&node);
    // The server's handshakes run while its stream is polled, as tonic does.
    let (dialled, served) = tokio::join!(dial(client, expected), incoming.next());
    let err = dialled.unwrap_err();
    let wrong = wrong_node(&err).unwrap();
    assert_eq!(wrong.expected, expected);
    assert_eq!(wrong.actual, node.node_id());
    let text = error_chain(&err);
    assert!(text.contains(&expected.to_hex()), "{text}");
    assert!(text.contains(&node.node_id().to_hex()), "{text}");
    // The server never hands the failed connection to the application.
    assert!(served.is_none());
}

#[tokio::test]
async fn plaintext_client_is_refused() {
    let node = identity(1);
    let (mut client, mut incoming) = serve_one(&node);
    // An HTTP/2 prior-knowledge client starts with the connection preface.
    client
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    assert!(
        incoming.next().await.is_none(),
        "plaintext connection accepted"
    );
    // The server side is gone: whatever it sent (an alert at most), the stream ends.
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest).await;
    assert!(
        !rest.starts_with(b"\x00\x00"),
        "server answered with HTTP/2 frames"
    );
}

#[tokio::test(start_paused = true)]
async fn stalled_handshake_is_dropped_after_the_deadline() {
    let node = identity(1);
    let (_client, mut incoming) = serve_one(&node);
    // The client never sends its hello; the paused clock jumps past the deadline.
    assert!(incoming.next().await.is_none());
}

#[test]
fn non_ed25519_certificate_is_refused() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&key)
        .unwrap();
    assert!(node_id_of_certificate(cert.der()).is_err());
    assert!(node_id_of_certificate(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).is_err());
}

#[test]
fn pinned_peers_parse_and_print() {
    let id = identity(3).node_id();
    let p: PinnedPeer = format!("{}@127.0.0.1:7777", id.to_hex()).parse().unwrap();
    assert_eq!(p, PinnedPeer::new(id, "127.0.0.1:7777"));
    assert_eq!(p.to_string().parse::<PinnedPeer>().unwrap(), p);
    let named: PinnedPeer = format!(" {}@seed.example.net:7777 ", id.to_hex())
        .parse()
        .unwrap();
    assert_eq!(named.address, "seed.example.net:7777");
    assert!(matches!(
        "127.0.0.1:7777".parse::<PinnedPeer>(),
        Err(PinnedPeerError::Unpinned(_))
    ));
    assert!(matches!(
        "abcd@127.0.0.1:7777".parse::<PinnedPeer>(),
        Err(PinnedPeerError::BadId(_))
    ));
    for bad in ["", "host", ":7777", "host:", "host:99999"] {
        assert!(
            matches!(
                format!("{}@{bad}", id.to_hex()).parse::<PinnedPeer>(),
                Err(PinnedPeerError::BadAddress(..))
            ),
            "{bad}"
        );
    }
}

/// Issue 27: a few addresses that stall their handshakes cannot queue out everyone
/// else: past `per_group` pending handshakes a group's new connections are closed at
/// once, other groups still complete theirs, and a stalled handshake is dropped after
/// [`SERVER_HANDSHAKE_TIMEOUT`].
#[tokio::test]
async fn stalled_handshakes_of_one_group_hold_up_no_other() {
    use tokio::net::{TcpListener, TcpSocket};
    let node = identity(1);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stream = Box::pin(futures::stream::unfold(listener, |l| async move {
        let conn = l.accept().await.map(|(s, _)| s);
        Some((conn, l))
    }));
    let mut incoming = accept_with(stream, server_config(&node).unwrap(), 2);
    let (tx, mut served) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        while let Some(conn) = incoming.next().await {
            let _ = tx.send(conn);
        }
    });
    let from = |ip: [u8; 4]| async move {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::from((ip, 0))).unwrap();
        s.connect(addr).await.unwrap()
    };
    // Two stalled handshakes fill 127.0.0.1's share; its third connection is closed.
    let mut stalled = vec![from([127, 0, 0, 1]).await, from([127, 0, 0, 1]).await];
    let mut third = from([127, 0, 0, 1]).await;
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "a group past its share is closed at once: {closed:?}"
    );
    // Another group completes its handshake meanwhile.
    let other = from([127, 0, 0, 2]).await;
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let tls = tokio_rustls::TlsConnector::from(client_config(node.node_id()).unwrap())
        .connect(name, other);
    tokio::time::timeout(Duration::from_secs(10), tls)
        .await
        .expect("handshake of another group within its deadline")
        .unwrap();
    assert!(served.recv().await.unwrap().is_ok());
    // The stalled ones are dropped once their deadline passes.
    for s in &mut stalled {
        let r = tokio::time::timeout(SERVER_HANDSHAKE_TIMEOUT * 3, s.read(&mut buf)).await;
        assert!(
            matches!(r, Ok(Ok(0) | Err(_))),
            "stalled handshake dropped: {r:?}"
        );
    }
    server.abort();
}
