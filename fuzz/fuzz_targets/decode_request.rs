//! Feeds arbitrary bytes to `decode_request` as one request frame (the bytes after the 4-byte
//! size), with every version of every API accepted.
//!
//! A finding is any abort (an allocation the guard let through), any panic (libfuzzer-sys
//! installs a panic hook that aborts, so even a panic the guard would catch is reported), a
//! leaked reservation, or resident memory past libFuzzer's `-rss_limit_mb`.

#![no_main]

use bytes::Bytes;
use gregor::protocol::codec::decode_request;
use gregor::protocol::guard;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let result = decode_request(Bytes::copy_from_slice(data), |api_key| {
        Some(api_key.valid_versions())
    });
    drop(result);
    // Nothing else in this process maps: every reservation a decode made is gone again.
    assert_eq!(
        guard::stats().mapped_bytes,
        0,
        "a reservation outlived its decode"
    );
});
