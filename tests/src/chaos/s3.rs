//! A minimal S3 client for the chaos run's gateway worker: path-style requests signed
//! with AWS Signature Version 4 (header auth, signed payload), over HTTP/1.1, one
//! connection per request, each bounded by a deadline.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};

use crate::sigv4::{authorization, hex, uri_encode};

/// A gateway endpoint and its credentials.
#[derive(Debug, Clone)]
pub struct S3 {
    pub addr: SocketAddr,
    pub access_key: String,
    pub secret_key: String,
    /// Deadline of one request.
    pub limit: Duration,
}

/// What the gateway answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl S3 {
    /// One signed request: `method /path?query` with `body`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: Vec<u8>,
    ) -> anyhow::Result<Answer> {
        tokio::time::timeout(self.limit, self.send(method, path, query, body))
            .await
            .with_context(|| format!("{method} {path}: no answer within {:?}", self.limit))?
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: Vec<u8>,
    ) -> anyhow::Result<Answer> {
        let host = self.addr.to_string();
        let payload_hash = hex(&Sha256::digest(&body));
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (auth, stamp) = authorization(
            &self.access_key,
            &self.secret_key,
            method,
            path,
            query,
            &host,
            &payload_hash,
            unix,
        );
        let mut uri = uri_encode(path, true);
        if !query.is_empty() {
            uri.push('?');
            uri.push_str(
                &query
                    .iter()
                    .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
                    .collect::<Vec<_>>()
                    .join("&"),
            );
        }
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", &host)
            .header("x-amz-content-sha256", &payload_hash)
            .header("x-amz-date", stamp)
            .header("authorization", auth)
            .body(Full::new(Bytes::from(body)))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        drop(sender);
        conn.abort();
        Ok(Answer { status, body })
    }
}
