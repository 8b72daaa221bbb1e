//! The client side of the internal listener: what one broker uses to send Kafka requests to
//! another (replica fetches, transaction markers, KIP-890 verification).
//!
//! [`connect`] opens a connection with the magic that says it carries Kafka frames as a broker
//! and proves this broker holds `cluster.secret` ([`peer_auth`]); [`exchange`] sends one
//! request and reads its response, refusing a response larger than
//! `internal.socket.request.max.bytes` and one for another correlation id. One request at a
//! time per connection. [`PeerPool`] keeps a few idle connections per broker for the
//! request/response traffic between brokers (the replica fetchers hold their own).
//!
//! A pooled connection may have been closed by the other side since it was last used: the
//! other broker closes internal connections idle for `connections.max.idle.ms`, and a broker
//! that restarted has closed them all. As Kafka's clients do, the pool drops a connection idle
//! for half that limit before the other side would, skips one whose peer has already closed
//! it, and sends again once on a new connection when a pooled one fails before its response.
//! What it carries may be repeated: a verification question reads, and the marker channel
//! already writes a round's markers again when any of them failed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// A connection idle this long is dropped rather than reused.
    max_idle: Duration,
    /// Broker id -> idle connections.
    idle: Mutex<HashMap<i32, Vec<Pooled>>>,
    correlation: AtomicI32,
}

/// An idle connection.
struct Pooled {
    /// The address it was opened to.
    addr: String,
    stream: TcpStream,
    /// When it went back to the pool.
    since: Instant,
}

impl Pooled {
    /// Whether it can carry a request: opened to `addr`, idle for less than `max_idle`, and
    /// not closed by the other side (nothing is ever sent unasked on these connections, so any
    /// readable byte or end of stream means it is done with).
    fn usable(&self, addr: &str, max_idle: Duration) -> bool {
        if self.addr != addr || self.since.elapsed() >= max_idle {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(
            self.stream.try_read(&mut probe),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }
}

impl std::fmt::Debug for PeerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerPool").finish_non_exhaustive()
    }
}

impl PeerPool {
    /// A pool connecting with `magic`, proving `secret` (none: every send fails), reading
    /// responses of at most `frame_max_bytes`, for peers that close connections idle for
    /// `peer_max_idle` (`connections.max.idle.ms`).
    pub fn new(
        secret: Option<ClusterSecret>,
        magic: &'static [u8; 4],
        frame_max_bytes: usize,
        peer_max_idle: Duration,
    ) -> PeerPool {
        PeerPool {
            secret,
            magic,
            frame_max_bytes,
            max_idle: peer_max_idle / 2,
            idle: Mutex::new(HashMap::new()),
            correlation: AtomicI32::new(0),
        }
    }

    /// Sends `request` to broker `broker` (internal listener at `addr`) on an idle connection
    /// or a new one and waits at most `bound` for the response; the connection goes back to
    /// the pool after a complete exchange and is dropped after a failed one. A pooled
    /// connection that fails before its response is replaced by a new one once.
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
        let pooled = self.take_idle(broker, addr);
        let attempts = async {
            if let Some(stream) = pooled {
                match self.exchange_on(stream, what, request).await {
                    Ok(done) => return Ok(done),
                    Err(e) => tracing::debug!(
                        broker,
                        api = ?what.api_key,
                        error = %e,
                        "a pooled connection failed; sending again on a new one"
                    ),
                }
            }
            let stream = connect(addr, secret, self.magic).await?;
            self.exchange_on(stream, what, request).await
        };
        let (stream, response) = tokio::time::timeout(bound, attempts)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if let Ok(mut idle) = self.idle.lock() {
            let kept = idle.entry(broker).or_default();
            if kept.len() < POOL_PER_BROKER {
                kept.push(Pooled {
                    addr: addr.to_string(),
                    stream,
                    since: Instant::now(),
                });
            }
        }
        Ok(response)
    }

    /// The most recently used idle connection to `broker` at `addr` that is still usable;
    /// the unusable ones met on the way are dropped.
    fn take_idle(&self, broker: i32, addr: &str) -> Option<TcpStream> {
        let mut idle = self.idle.lock().ok()?;
        let kept = idle.get_mut(&broker)?;
        while let Some(pooled) = kept.pop() {
            if pooled.usable(addr, self.max_idle) {
                return Some(pooled.stream);
            }
        }
        None
    }

    /// One exchange on `stream`, which is handed back with the response.
    async fn exchange_on<Req, Resp>(
        &self,
        mut stream: TcpStream,
        what: PeerRequest,
        request: &Req,
    ) -> std::io::Result<(TcpStream, Resp)>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        let call = Call {
            api_key: what.api_key,
            version: what.version,
            correlation_id: self.correlation.fetch_add(1, Ordering::Relaxed),
            client_id: what.client_id,
        };
        let mut received = BytesMut::new();
        let response = exchange(
            &mut stream,
            call,
            request,
            &mut received,
            self.frame_max_bytes,
        )
        .await?;
        Ok((stream, response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
    use tokio::net::TcpListener;

    const MAGIC: &[u8; 4] = b"TEST";
    const SECRET: &str = "peer-pool-test-secret";
    const API_VERSIONS: PeerRequest = PeerRequest {
        api_key: ApiKey::ApiVersions,
        version: 0,
        client_id: "peer-pool-test",
    };

    /// What the stand-in peer does after reading a request.
    #[derive(Debug, Clone, Copy)]
    enum Then {
        Answer,
        /// Closes the connection without an answer (a peer gone mid-request).
        Close,
    }

    /// A stand-in for another broker's internal listener: the magic and the handshake, then
    /// for the n-th connection the n-th plan, request by request. A connection whose plan ends
    /// in [`Then::Close`] closes then; the others stay open until every plan is done. Returns
    /// the address, and a task that yields how many requests each connection read.
    async fn peer(plans: Vec<Vec<Then>>) -> (String, tokio::task::JoinHandle<Vec<usize>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let secret = ClusterSecret::new(SECRET);
            let mut served = Vec::new();
            let mut open = Vec::new();
            for plan in plans {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut magic = [0u8; 4];
                stream.read_exact(&mut magic).await.unwrap();
                peer_auth::accept(&mut stream, &secret, MAGIC)
                    .await
                    .unwrap();
                let mut read = 0;
                for then in plan {
                    let size = stream.read_i32().await.unwrap();
                    let mut body = vec![0u8; usize::try_from(size).unwrap()];
                    stream.read_exact(&mut body).await.unwrap();
                    read += 1;
                    if let Then::Close = then {
                        stream.shutdown().await.unwrap();
                        break;
                    }
                    // The request header: key, version, then the correlation id.
                    let correlation = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                    let mut frame = BytesMut::new();
                    ResponseHeader::default()
                        .with_correlation_id(correlation)
                        .encode(&mut frame, 0)
                        .unwrap();
                    ApiVersionsResponse::default()
                        .encode(&mut frame, 0)
                        .unwrap();
                    stream.write_i32(frame.len() as i32).await.unwrap();
                    stream.write_all(&frame).await.unwrap();
                }
                served.push(read);
                open.push(stream);
            }
            served
        });
        (addr, task)
    }

    async fn ask(pool: &PeerPool, addr: &str) -> std::io::Result<ApiVersionsResponse> {
        pool.send(
            2,
            addr,
            API_VERSIONS,
            &ApiVersionsRequest::default(),
            Duration::from_secs(10),
        )
        .await
    }

    #[tokio::test]
    async fn a_pooled_connection_that_fails_before_its_answer_is_replaced_once() {
        let (addr, peer) = peer(vec![vec![Then::Answer, Then::Close], vec![Then::Answer]]).await;
        let pool = PeerPool::new(
            Some(ClusterSecret::new(SECRET)),
            MAGIC,
            1 << 20,
            Duration::from_secs(600),
        );
        ask(&pool, &addr).await.expect("first request");
        ask(&pool, &addr)
            .await
            .expect("the second request, sent again on a new connection");
        assert_eq!(peer.await.unwrap(), vec![2, 1]);
    }

    #[tokio::test]
    async fn a_connection_idle_for_half_the_peers_limit_is_not_reused() {
        let (addr, peer) = peer(vec![vec![Then::Answer], vec![Then::Answer, Then::Answer]]).await;
        let pool = PeerPool::new(
            Some(ClusterSecret::new(SECRET)),
            MAGIC,
            1 << 20,
            Duration::from_millis(400),
        );
        ask(&pool, &addr).await.expect("first request");
        tokio::time::sleep(Duration::from_millis(250)).await;
        ask(&pool, &addr).await.expect("second request");
        // Used again at once: the same connection.
        ask(&pool, &addr).await.expect("third request");
        assert_eq!(peer.await.unwrap(), vec![1, 2]);
    }
}
