//! The client side of the internal listener: what one broker uses to send Kafka requests to
//! another (replica fetches, transaction markers, KIP-890 verification).
//!
//! [`connect`] opens a connection with the magic that says it carries Kafka frames as a broker
//! and proves this broker holds `cluster.secret` ([`peer_auth`]); [`exchange`] sends one
//! request and reads its response, refusing a response larger than
//! `internal.socket.request.max.bytes` and one for another correlation id. One request at a
//! time per connection. [`PeerPool`] keeps a few idle connections per broker for the
//! request/response traffic between brokers (the replica fetchers hold their own).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::peer_auth::{self, ClusterSecret};

/// Connects to a broker's internal listener at `addr` and runs the handshake for `magic`.
pub async fn connect(
    addr: &str,
    secret: &ClusterSecret,
    magic: &[u8; 4],
) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    stream.write_all(magic).await?;
    peer_auth::connect(&mut stream, secret, magic)
        .await
        .map_err(std::io::Error::other)?;
    Ok(stream)
}

/// One request's identity on the wire.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// The API.
    pub api_key: ApiKey,
    /// Its version.
    pub version: i16,
    /// The correlation id.
    pub correlation_id: i32,
    /// The client id the other broker logs.
    pub client_id: &'static str,
}

/// Sends one request and reads its response into `received` (the response's byte fields are
/// views of it, so a caller that keeps the buffer reuses its memory).
pub async fn exchange<Req, Resp>(
    stream: &mut TcpStream,
    call: Call,
    request: &Req,
    received: &mut BytesMut,
    frame_max_bytes: usize,
) -> std::io::Result<Resp>
where
    Req: Encodable + HeaderVersion,
    Resp: Decodable + HeaderVersion,
{
    let header = RequestHeader::default()
        .with_request_api_key(call.api_key as i16)
        .with_request_api_version(call.version)
        .with_correlation_id(call.correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(call.client_id)));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, Req::header_version(call.version))
        .map_err(std::io::Error::other)?;
    request
        .encode(&mut body, call.version)
        .map_err(std::io::Error::other)?;
    let mut frame = BytesMut::with_capacity(body.len() + 4);
    frame.put_i32(i32::try_from(body.len()).map_err(std::io::Error::other)?);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await?;
    let size = stream.read_i32().await?;
    let size =
        usize::try_from(size).map_err(|_| std::io::Error::other("negative response size"))?;
    if size > frame_max_bytes {
        return Err(std::io::Error::other(format!(
            "a {:?} response of {size} bytes is over internal.socket.request.max.bytes \
             ({frame_max_bytes})",
            call.api_key
        )));
    }
    received.clear();
    received.reserve(size);
    while received.len() < size {
        let want = (size - received.len()) as u64;
        if (&mut *stream).take(want).read_buf(received).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    let mut buf = received.split().freeze();
    let header = ResponseHeader::decode(&mut buf, Resp::header_version(call.version))
        .map_err(std::io::Error::other)?;
    if header.correlation_id != call.correlation_id {
        return Err(std::io::Error::other(format!(
            "response to request {} while waiting for {}",
            header.correlation_id, call.correlation_id
        )));
    }
    let response = Resp::decode(&mut buf, call.version).map_err(std::io::Error::other)?;
    if buf.has_remaining() {
        return Err(std::io::Error::other(format!(
            "trailing bytes after a {:?} response",
            call.api_key
        )));
    }
    Ok(response)
}

/// Idle connections kept per broker.
const POOL_PER_BROKER: usize = 4;

/// Which request a [`PeerPool::send`] makes.
#[derive(Debug, Clone, Copy)]
pub struct PeerRequest {
    /// The API.
    pub api_key: ApiKey,
    /// Its version.
    pub version: i16,
    /// The client id the other broker logs.
    pub client_id: &'static str,
}

/// Connections to other brokers' internal listeners, reused across requests.
pub struct PeerPool {
    secret: Option<ClusterSecret>,
    magic: &'static [u8; 4],
    frame_max_bytes: usize,
    /// Broker id -> idle connections with the address they were opened to.
    idle: Mutex<HashMap<i32, Vec<(String, TcpStream)>>>,
    correlation: AtomicI32,
}

impl std::fmt::Debug for PeerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerPool").finish_non_exhaustive()
    }
}

impl PeerPool {
    /// A pool connecting with `magic`, proving `secret` (none: every send fails), reading
    /// responses of at most `frame_max_bytes`.
    pub fn new(
        secret: Option<ClusterSecret>,
        magic: &'static [u8; 4],
        frame_max_bytes: usize,
    ) -> PeerPool {
        PeerPool {
            secret,
            magic,
            frame_max_bytes,
            idle: Mutex::new(HashMap::new()),
            correlation: AtomicI32::new(0),
        }
    }

    /// Sends `request` to broker `broker` (internal listener at `addr`) on an idle connection
    /// or a new one and waits at most `bound` for the response; the connection goes back to
    /// the pool after a complete exchange and is dropped after a failed one.
    pub async fn send<Req, Resp>(
        &self,
        broker: i32,
        addr: &str,
        what: PeerRequest,
        request: &Req,
        bound: Duration,
    ) -> std::io::Result<Resp>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        let secret = self
            .secret
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no cluster.secret to reach other brokers"))?;
        let pooled = self
            .idle
            .lock()
            .ok()
            .and_then(|mut idle| idle.get_mut(&broker)?.pop())
            .filter(|(pooled_addr, _)| pooled_addr == addr);
        let call = Call {
            api_key: what.api_key,
            version: what.version,
            correlation_id: self.correlation.fetch_add(1, Ordering::Relaxed),
            client_id: what.client_id,
        };
        let exchange = async {
            let mut stream = match pooled {
                Some((_, stream)) => stream,
                None => connect(addr, secret, self.magic).await?,
            };
            let mut received = BytesMut::new();
            let response: Resp = exchange(
                &mut stream,
                call,
                request,
                &mut received,
                self.frame_max_bytes,
            )
            .await?;
            Ok::<_, std::io::Error>((stream, response))
        };
        let (stream, response) = tokio::time::timeout(bound, exchange)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if let Ok(mut idle) = self.idle.lock() {
            let kept = idle.entry(broker).or_default();
            if kept.len() < POOL_PER_BROKER {
                kept.push((addr.to_string(), stream));
            }
        }
        Ok(response)
    }
}
