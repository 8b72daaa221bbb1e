//! Writes the seed corpus for `decode_request`: the default request of every API at every
//! version its request type encodes, and a few requests with nested arrays filled in, each as
//! one frame (header and body, no 4-byte size). Usage: `seed_corpus <dir>`.

use std::path::PathBuf;

use bytes::BytesMut;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, VersionRange};

#[path = "../../tests/common/request_frames.rs"]
mod request_frames;

use request_frames::{api_key_of, default_body, filled_bodies, text};

fn frame(api_key: ApiKey, version: i16, body: &RequestKind) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(text("seed")))
        .encode(&mut buf, api_key.request_header_version(version))
        .ok()?;
    body.encode(&mut buf, version).ok()?;
    Some(buf.to_vec())
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "corpus/decode_request".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let mut bodies: Vec<(ApiKey, RequestKind, VersionRange)> = ApiKey::iter()
        .map(|api_key| {
            let (body, range) = default_body(api_key);
            (api_key, body, range)
        })
        .collect();
    bodies.extend(filled_bodies().into_iter().map(|body| {
        let api_key = api_key_of(&body);
        (api_key, body, api_key.valid_versions())
    }));
    let mut written = 0;
    for (index, (api_key, body, range)) in bodies.iter().enumerate() {
        for version in range.min..=range.max {
            if let Some(bytes) = frame(*api_key, version, body) {
                std::fs::write(dir.join(format!("{api_key:?}-v{version}-{index}")), bytes)?;
                written += 1;
            }
        }
    }
    println!("wrote {written} seeds to {}", dir.display());
    Ok(())
}
