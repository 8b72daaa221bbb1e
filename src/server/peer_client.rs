//! The client side of the internal listener: what one broker uses to send Kafka requests to
//! another (replica fetches, transaction markers).
//!
//! [`connect`] opens a connection with the magic that says it carries Kafka frames as a broker
//! and proves this broker holds `cluster.secret` ([`peer_auth`]); [`exchange`] sends one
//! request and reads its response, refusing a response larger than
//! `internal.socket.request.max.bytes` and one for another correlation id. One request at a
//! time per connection.

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
