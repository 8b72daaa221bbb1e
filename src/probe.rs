//! `gregor health`: asks a broker for ApiVersions and says whether it answered.
//!
//! A `FROM scratch` image has no shell, `nc` or `curl`, so its Docker `HEALTHCHECK` runs the
//! gregor binary itself. The probe opens one client connection, sends ApiVersions v3 (the
//! request every Kafka client sends first) and accepts only an answer with no error that
//! lists Produce and Fetch: a broker that is up and serving its client listener.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The ApiVersions version the probe sends.
const PROBE_VERSION: i16 = 3;
/// The largest answer the probe reads (an ApiVersions answer is a few hundred bytes).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("{addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr}: cannot encode or decode ApiVersions: {reason}")]
    Protocol { addr: String, reason: String },
    #[error("{addr}: ApiVersions answered error code {code}")]
    Refused { addr: String, code: i16 },
    #[error("{addr}: the answer lists no Produce or Fetch: not a serving broker")]
    NotServing { addr: String },
}

/// What a healthy broker answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthy {
    /// How many APIs the broker advertised.
    pub apis: usize,
}

/// Asks the broker at `addr` (`host:port`) for ApiVersions within `timeout`.
pub async fn probe(addr: &str, timeout: Duration) -> Result<Healthy, ProbeError> {
    tokio::time::timeout(timeout, exchange(addr))
        .await
        .map_err(|_| ProbeError::Timeout {
            addr: addr.to_string(),
            timeout,
        })?
}

async fn exchange(addr: &str) -> Result<Healthy, ProbeError> {
    let io = |source| ProbeError::Io {
        addr: addr.to_string(),
        source,
    };
    let protocol = |reason: String| ProbeError::Protocol {
        addr: addr.to_string(),
        reason,
    };
    let mut stream = TcpStream::connect(addr).await.map_err(io)?;
    let key = ApiKey::ApiVersions;
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(PROBE_VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("gregor-health")))
        .encode(&mut body, key.request_header_version(PROBE_VERSION))
        .map_err(|e| protocol(e.to_string()))?;
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("gregor-health"))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")))
        .encode(&mut body, PROBE_VERSION)
        .map_err(|e| protocol(e.to_string()))?;
    let mut frame = BytesMut::with_capacity(body.len() + 4);
    frame.put_u32(body.len() as u32);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await.map_err(io)?;
    let size = stream.read_u32().await.map_err(io)? as usize;
    if size > MAX_RESPONSE_BYTES {
        return Err(protocol(format!("a {size}-byte answer")));
    }
    let mut response = vec![0u8; size];
    stream.read_exact(&mut response).await.map_err(io)?;
    let mut response = bytes::Bytes::from(response);
    let header = ResponseHeader::decode(&mut response, key.response_header_version(PROBE_VERSION))
        .map_err(|e| protocol(e.to_string()))?;
    if header.correlation_id != 1 {
        return Err(protocol(format!(
            "correlation id {} for 1",
            header.correlation_id
        )));
    }
    let answer = ApiVersionsResponse::decode(&mut response, PROBE_VERSION)
        .map_err(|e| protocol(e.to_string()))?;
    if response.has_remaining() {
        return Err(protocol(format!(
            "{} bytes after the answer",
            response.remaining()
        )));
    }
    if answer.error_code != 0 {
        return Err(ProbeError::Refused {
            addr: addr.to_string(),
            code: answer.error_code,
        });
    }
    let lists = |key: ApiKey| answer.api_keys.iter().any(|k| k.api_key == key as i16);
    if !lists(ApiKey::Produce) || !lists(ApiKey::Fetch) {
        return Err(ProbeError::NotServing {
            addr: addr.to_string(),
        });
    }
    Ok(Healthy {
        apis: answer.api_keys.len(),
    })
}

/// The address `gregor health` probes when given none: the port of `listen` (a
/// `GREGOR_LISTEN`-style `host:port`) on 127.0.0.1 when it listens on every address.
pub fn local_address(listen: &str) -> String {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => format!("127.0.0.1:{}", addr.port()),
        Ok(addr) => addr.to_string(),
        Err(_) => listen.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_address_is_the_listen_port_on_loopback() {
        assert_eq!(local_address("0.0.0.0:9092"), "127.0.0.1:9092");
        assert_eq!(local_address("[::]:9093"), "127.0.0.1:9093");
        assert_eq!(local_address("10.0.0.5:9092"), "10.0.0.5:9092");
        assert_eq!(local_address("gregor-1:9092"), "gregor-1:9092");
    }

    #[tokio::test]
    async fn a_closed_port_fails_and_a_silent_one_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        // Accepted by the kernel's backlog but never answered.
        let silent = probe(&addr, Duration::from_millis(200)).await;
        assert!(
            matches!(silent, Err(ProbeError::Timeout { .. })),
            "{silent:?}"
        );
        drop(listener);
        let closed = probe(&addr, Duration::from_secs(2)).await;
        assert!(matches!(closed, Err(ProbeError::Io { .. })), "{closed:?}");
    }
}
