//! Request decoding and response encoding for one frame.
//!
//! A request frame (after its 4-byte size) starts with `api_key: i16, api_version: i16,
//! correlation_id: i32` in every header version, so those are read before anything else: an
//! unknown key or unhandled version is known without decoding the rest. The full header is then
//! decoded at the version `kafka-protocol` gives for that API and version, and the body after it,
//! under [`guard`](super::guard) because the body is untrusted.
//!
//! Responses get `ResponseHeader` at the API's response header version, except ApiVersions,
//! which always uses header v0 (no tagged-field section: clients read the ApiVersions response
//! before they know which header versions the broker speaks).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, VersionRange};

use super::frame::{FileRefs, Frame, FrameBuf};
use super::guard;

/// Bytes of the fixed request header prefix: api key, api version, correlation id.
const HEADER_PREFIX_BYTES: usize = 8;

/// A decoded request frame.
// The large variant is the common one and is moved once.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Decoded {
    /// A request of a handled API at a handled version.
    Request {
        /// The request header (client id, correlation id, ...).
        header: RequestHeader,
        /// The API.
        api_key: ApiKey,
        /// The API version the client used.
        version: i16,
        /// The request body.
        body: RequestKind,
    },
    /// ApiVersions at a version this broker does not handle: Kafka answers with a v0 response
    /// carrying UNSUPPORTED_VERSION and its ranges, so the client can downgrade.
    ApiVersionsUnsupported {
        /// To echo in the response header.
        correlation_id: i32,
        /// The version the client asked for.
        version: i16,
    },
}

/// Why a frame could not be decoded. Each closes the connection, as Kafka does.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the fixed header prefix.
    #[error("frame of {0} bytes is shorter than a request header")]
    TooShort(usize),
    /// An API key this broker does not know.
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    /// A known API at a version outside the handled range (other than ApiVersions).
    #[error("unsupported version {version} of {api_key:?}")]
    UnsupportedVersion {
        /// The API.
        api_key: ApiKey,
        /// The version asked for.
        version: i16,
    },
    /// The header or body does not decode.
    #[error("malformed {api_key:?} v{version} request: {reason}")]
    Malformed {
        /// The API.
        api_key: ApiKey,
        /// The version.
        version: i16,
        /// What the decoder said.
        reason: String,
    },
}

/// Encoding a response failed (a handler set a field its version lacks: a bug, logged).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {api_key:?} v{version} response: {reason}")]
pub struct EncodeError {
    /// The API.
    pub api_key: ApiKey,
    /// The version.
    pub version: i16,
    /// What the encoder said.
    pub reason: String,
}

/// Reads the api key, version and correlation id of a frame without decoding it.
pub fn peek_header(frame: &[u8]) -> Option<(i16, i16, i32)> {
    if frame.len() < HEADER_PREFIX_BYTES {
        return None;
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    Some((api_key, version, correlation_id))
}

/// Decodes one request frame. `supported` is the API layer's version table.
pub fn decode_request(
    mut frame: Bytes,
    supported: impl Fn(ApiKey) -> Option<VersionRange>,
) -> Result<Decoded, DecodeError> {
    let (raw_key, version, correlation_id) =
        peek_header(&frame).ok_or(DecodeError::TooShort(frame.len()))?;
    let api_key = ApiKey::try_from(raw_key).map_err(|_| DecodeError::UnknownApiKey(raw_key))?;
    let range = supported(api_key).ok_or(DecodeError::UnknownApiKey(raw_key))?;
    if version < range.min || version > range.max {
        if api_key == ApiKey::ApiVersions {
            return Ok(Decoded::ApiVersionsUnsupported {
                correlation_id,
                version,
            });
        }
        return Err(DecodeError::UnsupportedVersion { api_key, version });
    }
    let malformed = |reason: String| DecodeError::Malformed {
        api_key,
        version,
        reason,
    };
    let frame_len = frame.len();
    let header_version = api_key.request_header_version(version);
    let header = guard::guarded(frame_len, || {
        RequestHeader::decode(&mut frame, header_version)
    })
    .map_err(|e| malformed(format!("header: {e:#}")))?;
    let body = guard::guarded(frame_len, || {
        RequestKind::decode(api_key, &mut frame, version)
    })
    .map_err(|e| malformed(format!("body: {e:#}")))?;
    Ok(Decoded::Request {
        header,
        api_key,
        version,
        body,
    })
}

/// The response header version of an API, with ApiVersions pinned to v0.
pub fn response_header_version(api_key: ApiKey, version: i16) -> i16 {
    if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    }
}

/// Encodes a response as a complete frame (4-byte size first). The record batches of a Fetch
/// response are passed by reference, not copied ([`FrameBuf`]).
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &ResponseKind,
) -> Result<Frame, EncodeError> {
    encode_response_with_files(correlation_id, api_key, version, body, &FileRefs::new())
}

/// [`encode_response`] for a Fetch response whose record fields include placeholders from
/// `files`: each becomes a file chunk of the frame.
pub fn encode_response_with_files(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &ResponseKind,
    files: &FileRefs,
) -> Result<Frame, EncodeError> {
    let fail = |e: anyhow::Error| EncodeError {
        api_key,
        version,
        reason: format!("{e:#}"),
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = response_header_version(api_key, version);
    let too_large = || EncodeError {
        api_key,
        version,
        reason: "response larger than 2 GiB".to_string(),
    };
    match body {
        ResponseKind::Fetch(fetch) => {
            let references = fetch
                .responses
                .iter()
                .flat_map(|t| t.partitions.iter())
                .filter_map(|p| p.records.clone());
            let mut buf = FrameBuf::new(references, files);
            buf.put_i32(0);
            header.encode(&mut buf, header_version).map_err(fail)?;
            fetch.encode(&mut buf, version).map_err(fail)?;
            if buf.has_unresolved_placeholder() {
                return Err(EncodeError {
                    api_key,
                    version,
                    reason: "a record placeholder without its file slice".to_string(),
                });
            }
            let size = i32::try_from(buf.len() - 4).map_err(|_| too_large())?;
            buf.patch_prefix(size.to_be_bytes());
            Ok(buf.finish())
        }
        other => {
            let mut buf = BytesMut::with_capacity(256);
            buf.put_i32(0);
            header.encode(&mut buf, header_version).map_err(fail)?;
            other.encode(&mut buf, version).map_err(fail)?;
            let size = i32::try_from(buf.len() - 4).map_err(|_| too_large())?;
            buf[0..4].copy_from_slice(&size.to_be_bytes());
            Ok(Frame::single(buf.freeze()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::StrBytes;

    fn all(api_key: ApiKey) -> Option<VersionRange> {
        Some(api_key.valid_versions())
    }

    fn frame<T: Encodable>(api_key: ApiKey, version: i16, body: &T) -> Bytes {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("test")))
            .encode(&mut buf, api_key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn decodes_metadata_at_every_version() {
        let range = ApiKey::Metadata.valid_versions();
        for v in range.min..=range.max {
            let f = frame(ApiKey::Metadata, v, &MetadataRequest::default());
            match decode_request(f, all).unwrap() {
                Decoded::Request {
                    header, version, ..
                } => {
                    assert_eq!(header.correlation_id, 7);
                    assert_eq!(version, v);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn api_versions_too_new_is_downgraded() {
        let f = frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        let mut raw = f.to_vec();
        raw[2..4].copy_from_slice(&99i16.to_be_bytes());
        let d = decode_request(Bytes::from(raw), all).unwrap();
        assert!(matches!(
            d,
            Decoded::ApiVersionsUnsupported {
                correlation_id: 7,
                version: 99
            }
        ));
    }

    #[test]
    fn unknown_key_and_version_and_garbage_are_errors() {
        let mut raw = frame(ApiKey::Metadata, 1, &MetadataRequest::default()).to_vec();
        raw[0..2].copy_from_slice(&999i16.to_be_bytes());
        assert!(matches!(
            decode_request(Bytes::from(raw), all),
            Err(DecodeError::UnknownApiKey(999))
        ));
        let mut raw = frame(ApiKey::Metadata, 1, &MetadataRequest::default()).to_vec();
        raw[2..4].copy_from_slice(&99i16.to_be_bytes());
        assert!(matches!(
            decode_request(Bytes::from(raw), all),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 3]), all),
            Err(DecodeError::TooShort(2))
        ));
        let mut raw = frame(ApiKey::Metadata, 12, &MetadataRequest::default()).to_vec();
        raw.truncate(raw.len() - 2);
        assert!(matches!(
            decode_request(Bytes::from(raw), all),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn api_versions_response_uses_header_v0() {
        let body = ResponseKind::ApiVersions(Default::default());
        let f = encode_response(5, ApiKey::ApiVersions, 3, &body)
            .unwrap()
            .to_contiguous()
            .unwrap();
        // size, correlation id, then straight into the body (error code 0): no tag byte.
        assert_eq!(&f[4..8], &5i32.to_be_bytes());
        assert_eq!(&f[8..10], &0i16.to_be_bytes());
        let size = i32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize;
        assert_eq!(size, f.len() - 4);
    }
}
