//! What node-identity TLS costs per byte on loopback, both ends in this process: plain
//! TCP against TLS 1.3 with the node's own configurations (`server_config`,
//! `client_config`), and TLS over a read buffer (rustls reads the socket at most 4 KiB
//! at a time; the buffer makes those reads memory copies instead of system calls).
//!
//! `cargo run --release -p shoal-proto --example tls-pump -- [MiB] [rounds]`
//! prints, per mode, the throughput and the CPU seconds per GiB moved (both ends, the
//! whole process, from `/proc/self/stat`). `SHOAL_PUMP_BUF` sets the read buffer in KiB
//! (default 64).

use std::error::Error;
use std::io;
use std::time::Instant;

use rustls::pki_types::ServerName;
use shoal_proto::identity::Identity;
use shoal_proto::tls::{client_config, server_config};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// Bytes per write, as HTTP/2 hands over one of its (256 KiB) data frames.
const CHUNK: usize = 256 * 1024;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Plain,
    Tls,
    TlsBuffered,
}

fn read_buffer() -> usize {
    std::env::var("SHOAL_PUMP_BUF")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(64)
        * 1024
}

/// This process's user + system CPU seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime, fields 14 and 15 of stat: 12th and 13th after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

async fn pump<W, R>(mut w: W, mut r: R, total: usize) -> Result<()>
where
    W: AsyncWrite + Unpin + Send + 'static,
    R: AsyncRead + Unpin + Send + 'static,
{
    let send = tokio::spawn(async move {
        let chunk = vec![7u8; CHUNK];
        let mut sent = 0;
        while sent < total {
            w.write_all(&chunk).await?;
            sent += CHUNK;
        }
        w.flush().await
    });
    let recv = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0;
        while got < total {
            match r.read(&mut buf).await? {
                0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                n => got += n,
            }
        }
        Ok(())
    });
    let (sent, received) = tokio::join!(send, recv);
    sent??;
    received??;
    Ok(())
}

async fn run(mode: Mode, total: usize) -> Result<(f64, f64)> {
    let node = Identity::from_seed([1; 32]);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let (client, accepted) = tokio::join!(
        TcpStream::connect(listener.local_addr()?),
        listener.accept()
    );
    let (client, (server, _)) = (client?, accepted?);
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&node)?);
    let connector = tokio_rustls::TlsConnector::from(client_config(node.node_id())?);
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let start = Instant::now();
    let cpu = cpu_seconds();
    match mode {
        Mode::Plain => pump(client, server, total).await?,
        Mode::Tls => {
            let (c, s) = tokio::join!(connector.connect(name, client), acceptor.accept(server));
            pump(c?, s?, total).await?
        }
        Mode::TlsBuffered => {
            let (c, s) = tokio::join!(
                connector.connect(name, BufReader::with_capacity(read_buffer(), client)),
                acceptor.accept(BufReader::with_capacity(read_buffer(), server))
            );
            pump(c?, s?, total).await?
        }
    }
    Ok((start.elapsed().as_secs_f64(), cpu_seconds() - cpu))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2048);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let total = mib * 1024 * 1024;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for round in 0..rounds {
        for mode in [Mode::Plain, Mode::Tls, Mode::TlsBuffered] {
            let (secs, cpu) = rt.block_on(run(mode, total))?;
            println!(
                "round={round} mode={mode:?} MiB={mib} MB/s={:.0} cpu_s_per_GiB={:.3}",
                total as f64 / secs / 1e6,
                cpu / (total as f64 / (1u64 << 30) as f64)
            );
        }
    }
    Ok(())
}
