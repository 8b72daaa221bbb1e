//! Hostile request frames against `decode_request`: no frame may abort or panic the process,
//! resident memory stays bounded, and valid frames decode exactly as before.
//!
//! `kafka-protocol` sizes vectors from element counts read off the wire. With the guard's
//! mapping route switched off, this binary dies on its first hostile frame ("memory allocation
//! of 412316860224 bytes failed", SIGABRT), so every test here depends on `protocol::guard`.
//! Every test also checks that the guard caught no panic: a caught panic is a decoder bug worth
//! knowing about even though the broker survives it.

use std::sync::{Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};
use gregor::protocol::codec::{decode_request, DecodeError, Decoded};
use gregor::protocol::guard;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, VersionRange};
use proptest::prelude::*;
use proptest::sample::Index;

/// Resident memory the test process may reach, hostile frames included.
const RSS_LIMIT_BYTES: u64 = 512 << 20;

/// Largest count an `Array` can claim.
const I32_COUNT: [u8; 4] = [0x7f, 0xff, 0xff, 0xff];
/// Largest count a `CompactArray` can claim: varint 0xFFFF_FFFF (n - 1 = 2^32 - 2 elements).
const VARINT_COUNT: [u8; 5] = [0xff, 0xff, 0xff, 0xff, 0x0f];

/// Tests run one at a time: they read the guard's process-wide counters and the process's
/// peak RSS.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn every_version(api_key: ApiKey) -> Option<VersionRange> {
    Some(api_key.valid_versions())
}

/// Reads a `kB` line of /proc/self/status, in bytes.
fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .unwrap_or_else(|| panic!("{field} missing from /proc/self/status"));
    let kilobytes: u64 = line
        .trim_start_matches(field)
        .trim_start_matches(':')
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kilobytes * 1024
}

fn assert_memory_bounded() {
    let peak = proc_status_bytes("VmHWM");
    assert!(
        peak < RSS_LIMIT_BYTES,
        "peak RSS {} MiB exceeds {} MiB",
        peak >> 20,
        RSS_LIMIT_BYTES >> 20
    );
}

/// Decodes a frame, which must come back as `Ok` or `Err` without the guard catching a panic.
fn decode_survives(frame: &[u8]) -> bool {
    let panics_before = guard::stats().panics_caught_total;
    let result = decode_request(Bytes::copy_from_slice(frame), every_version);
    assert_eq!(
        guard::stats().panics_caught_total,
        panics_before,
        "decoder panicked on {frame:02x?}: {result:?}"
    );
    result.is_ok()
}

#[path = "common/request_frames.rs"]
mod request_frames;

use request_frames::{api_key_of, default_body, filled_bodies, text};

/// A valid request frame (without the 4-byte size) and where its body starts.
#[derive(Debug, Clone)]
struct Frame {
    api_key: ApiKey,
    version: i16,
    bytes: Vec<u8>,
    body_start: usize,
}

/// The request header every test frame starts with.
fn encode_header(api_key: ApiKey, version: i16) -> BytesMut {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(0x0102_0304)
        .with_client_id(Some(text("hostile-frames")))
        .encode(&mut buf, api_key.request_header_version(version))
        .expect("every header version encodes");
    buf
}

fn encode_frame(api_key: ApiKey, version: i16, body: &RequestKind) -> Option<Frame> {
    let mut buf = encode_header(api_key, version);
    let body_start = buf.len();
    body.encode(&mut buf, version).ok()?;
    Some(Frame {
        api_key,
        version,
        bytes: buf.to_vec(),
        body_start,
    })
}

/// Every valid frame the tests start from: the default body of every API at every version,
/// then the filled bodies at every version that can encode them.
fn valid_frames() -> Vec<Frame> {
    let mut frames = Vec::new();
    for api_key in ApiKey::iter() {
        let (body, range) = default_body(api_key);
        for version in range.min..=range.max {
            let frame = encode_frame(api_key, version, &body);
            let frame = frame.unwrap_or_else(|| panic!("{api_key:?} v{version} default"));
            frames.push(frame);
        }
    }
    for body in filled_bodies() {
        let api_key = api_key_of(&body);
        let range = api_key.valid_versions();
        frames.extend((range.min..=range.max).filter_map(|v| encode_frame(api_key, v, &body)));
    }
    frames
}

/// The frames of hostile counts built on one valid frame: at every body offset, the largest
/// `Array` and `CompactArray` counts, written over the bytes there and inserted before them.
fn count_bombs(frame: &Frame) -> impl Iterator<Item = Vec<u8>> + '_ {
    (frame.body_start..=frame.bytes.len()).flat_map(move |at| {
        [&I32_COUNT[..], &VARINT_COUNT[..]]
            .into_iter()
            .flat_map(move |count| {
                let mut overwritten = frame.bytes.clone();
                let end = (at + count.len()).min(overwritten.len());
                overwritten.splice(at..end, count.iter().copied());
                let mut inserted = frame.bytes.clone();
                inserted.splice(at..at, count.iter().copied());
                [overwritten, inserted]
            })
    })
}

/// The header of `frame` followed by `filler` repeated to 64 bytes.
fn header_then(frame: &Frame, filler: &[u8]) -> Vec<u8> {
    let mut bytes = frame.bytes[..frame.body_start].to_vec();
    bytes.extend(filler.iter().copied().cycle().take(64));
    bytes
}

#[test]
fn first_count_of_every_api_and_version_claims_the_maximum() {
    let _serial = serial();
    let before = guard::stats();
    let mut frames = 0;
    for api_key in ApiKey::iter() {
        let range = api_key.valid_versions();
        for version in range.min..=range.max {
            let header = encode_header(api_key, version).to_vec();
            let body_start = header.len();
            let frame = Frame {
                api_key,
                version,
                bytes: header,
                body_start,
            };
            for filler in [&[0xff][..], &I32_COUNT[..], &VARINT_COUNT[..]] {
                decode_survives(&header_then(&frame, filler));
                frames += 1;
            }
        }
    }
    let after = guard::stats();
    assert!(frames > 3 * 87, "only {frames} frames");
    assert!(
        after.mapped_blocks_in_decode_total > before.mapped_blocks_in_decode_total,
        "no hostile count reached an allocation: the test is not testing anything"
    );
    assert_eq!(
        after.mapped_bytes, before.mapped_bytes,
        "a reservation leaked"
    );
    assert_memory_bounded();
}

/// What the fuzzer found after 373 executions with the guard disabled: an UpdateRaftVoter v0
/// frame whose compact array count asks for 2^32 - 2 elements of 96 bytes (384 GiB), which
/// aborted the process.
#[test]
fn fuzzer_finding_without_the_guard_is_an_error() {
    let _serial = serial();
    let mut frame = vec![0x00, 0x52, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01];
    frame.extend_from_slice(&[0x00, 0x04, b's', b'e', b'e', b'd', 0x00, 0x01]);
    frame.extend_from_slice(&[0x00; 24]);
    frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
    let before = guard::stats();
    assert!(!decode_survives(&frame));
    let after = guard::stats();
    assert!(after.mapped_blocks_in_decode_total > before.mapped_blocks_in_decode_total);
    assert!(after.mapped_bytes_peak >= (u64::from(u32::MAX) - 1) * 96);
    assert!(matches!(
        decode_request(Bytes::from(frame), every_version),
        Err(DecodeError::Malformed {
            api_key: ApiKey::UpdateRaftVoter,
            version: 0,
            ..
        })
    ));
}

#[test]
fn maximum_count_at_every_offset_of_every_valid_frame() {
    let _serial = serial();
    let before = guard::stats();
    let mut decoded = 0usize;
    for frame in valid_frames() {
        for bomb in count_bombs(&frame) {
            decode_survives(&bomb);
            decoded += 1;
        }
    }
    let after = guard::stats();
    let reserved = after.mapped_blocks_in_decode_total - before.mapped_blocks_in_decode_total;
    eprintln!(
        "{decoded} count bombs, {reserved} reservations, peak {} GiB of address space",
        after.mapped_bytes_peak >> 30
    );
    assert!(
        reserved > 1000,
        "only {reserved} count bombs reached an allocation"
    );
    assert_eq!(
        after.mapped_bytes, before.mapped_bytes,
        "a reservation leaked"
    );
    assert_eq!(after.map_failures_total, before.map_failures_total);
    assert_memory_bounded();
}

#[test]
fn valid_frames_decode_exactly_as_encoded() {
    let _serial = serial();
    let frames = valid_frames();
    assert!(frames.len() > 500, "only {} valid frames", frames.len());
    for frame in &frames {
        let decoded = decode_request(Bytes::from(frame.bytes.clone()), every_version)
            .unwrap_or_else(|e| panic!("{:?} v{}: {e}", frame.api_key, frame.version));
        let Decoded::Request {
            header,
            api_key,
            version,
            body,
        } = decoded
        else {
            panic!(
                "{:?} v{} not decoded as a request",
                frame.api_key, frame.version
            );
        };
        assert_eq!((api_key, version), (frame.api_key, frame.version));
        let reencoded = encode_frame(api_key, version, &body).expect("decoded body encodes");
        assert_eq!(header.correlation_id, 0x0102_0304);
        assert_eq!(
            reencoded.bytes, frame.bytes,
            "{api_key:?} v{version} does not round-trip"
        );
    }
}

#[test]
fn honest_frame_with_a_huge_array_decodes_through_the_mapped_route() {
    let _serial = serial();
    // Enough single-letter topics that the topic vector crosses the mapping threshold.
    let element_bytes = std::mem::size_of::<MetadataRequestTopic>();
    let topics = guard::MAPPED_BYTES_MIN / element_bytes + 1;
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::Metadata as i16);
    frame.put_i16(1);
    frame.put_i32(9);
    frame.put_i16(-1); // no client id
    frame.put_i32(i32::try_from(topics).unwrap());
    for _ in 0..topics {
        frame.put_i16(1);
        frame.put_u8(b't');
    }
    let before = guard::stats();
    let decoded = decode_request(frame.freeze(), every_version).unwrap();
    let after = guard::stats();
    assert!(after.mapped_blocks_in_decode_total > before.mapped_blocks_in_decode_total);
    let Decoded::Request {
        body: RequestKind::Metadata(request),
        ..
    } = decoded
    else {
        panic!("not a metadata request");
    };
    let decoded_topics = request.topics.unwrap();
    assert_eq!(decoded_topics.len(), topics);
    let expected_name = Some(TopicName(text("t")));
    assert!(decoded_topics
        .iter()
        .all(|topic| topic.name == expected_name));
    drop(decoded_topics);
    assert_eq!(guard::stats().mapped_bytes, before.mapped_bytes);
    assert_memory_bounded();
}

/// One change to a frame.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Truncate(Index),
    /// Write an `Array` count (or any big-endian i32) over four bytes.
    InflateI32(Index, i32),
    /// Insert an unsigned varint (a `CompactArray` count, a tag, a length).
    InsertVarint(Index, u32),
    Duplicate(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let big_i32 = prop_oneof![Just(i32::MAX), Just(0x0100_0000), Just(-2), any::<i32>()];
    let big_u32 = prop_oneof![
        Just(u32::MAX),
        Just(u32::MAX - 1),
        Just(1 << 28),
        any::<u32>()
    ];
    prop_oneof![
        3 => (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte(at, byte)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        3 => (any::<Index>(), big_i32).prop_map(|(at, count)| Mutation::InflateI32(at, count)),
        3 => (any::<Index>(), big_u32).prop_map(|(at, count)| Mutation::InsertVarint(at, count)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(from, to)| Mutation::Duplicate(from, to)),
    ]
}

fn varint(mut value: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    while value >= 0x80 {
        bytes.push((value as u8) | 0x80);
        value >>= 7;
    }
    bytes.push(value as u8);
    bytes
}

/// Applies a mutation to the body part of a frame (the api key and version stay, so the
/// decoder gets past the version check and into the body).
fn apply(frame: &mut Vec<u8>, mutation: &Mutation) {
    const KEEP: usize = 4;
    if frame.len() <= KEEP {
        return;
    }
    let span = frame.len() - KEEP;
    match mutation {
        Mutation::FlipBit(at, bit) => frame[KEEP + at.index(span)] ^= 1 << bit,
        Mutation::SetByte(at, byte) => frame[KEEP + at.index(span)] = *byte,
        Mutation::Truncate(at) => frame.truncate(KEEP + at.index(span)),
        Mutation::InflateI32(at, count) => {
            let at = KEEP + at.index(span);
            let end = (at + 4).min(frame.len());
            frame.splice(at..end, count.to_be_bytes());
        }
        Mutation::InsertVarint(at, count) => {
            let at = KEEP + at.index(span + 1);
            frame.splice(at..at, varint(*count));
        }
        Mutation::Duplicate(from, to) => {
            let from = KEEP + from.index(span);
            let end = (from + 16).min(frame.len());
            let piece = frame[from..end].to_vec();
            let to = KEEP + to.index(span + 1);
            frame.splice(to..to, piece);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_valid_frames_never_abort_or_panic(
        pick in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        thread_local! {
            static FRAMES: Vec<Frame> = valid_frames();
        }
        let _serial = serial();
        let mut bytes = FRAMES.with(|frames| frames[pick.index(frames.len())].bytes.clone());
        for mutation in &mutations {
            apply(&mut bytes, mutation);
        }
        let before = guard::stats();
        decode_survives(&bytes);
        prop_assert_eq!(guard::stats().mapped_bytes, before.mapped_bytes);
        prop_assert!(proc_status_bytes("VmRSS") < RSS_LIMIT_BYTES);
    }
}
