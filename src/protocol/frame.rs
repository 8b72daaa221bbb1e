//! Response frames as a list of byte chunks, so stored record batches are sent without copying.
//!
//! `kafka-protocol` encodes into any `ByteBufMut`, and writes a `bytes` field with one
//! `put_slice` of the whole field. [`FrameBuf`] is a `ByteBufMut` that knows the record
//! `Bytes` of a Fetch response (read from the segment files): when the encoder hands it one of
//! those exact slices, it appends a reference to the `Bytes` as a chunk of its own instead of
//! copying it. Everything else is copied into small owned chunks as usual. The connection then
//! writes the chunks with vectored writes. Net effect: a fetched batch is copied once, by the
//! kernel, from the page cache into the socket path via `pread` + `writev`, never by gregor.
//!
//! `ByteBufMut::seek`/`range` (used only by the record-batch encoder's size gaps, never by
//! message encoders) work within the owned chunk being written; a gap that would span a
//! referenced chunk is impossible for message encoding and yields an empty slice.

// `BufMut` is an unsafe trait: the two unsafe items below only delegate to `BytesMut`.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Slices shorter than this are copied even if registered: a reference costs an iovec.
const REFERENCE_MIN_BYTES: usize = 512;

/// An encoded response: chunks to write back to back.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Frame {
    /// A frame of one contiguous buffer.
    pub fn single(bytes: Bytes) -> Frame {
        let len = bytes.len();
        Frame {
            chunks: vec![bytes],
            len,
        }
    }
    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the frame is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The chunks, in order.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }
    /// The whole frame in one buffer (tests and small frames).
    pub fn to_contiguous(&self) -> Bytes {
        if self.chunks.len() == 1 {
            return self.chunks[0].clone();
        }
        let mut out = BytesMut::with_capacity(self.len);
        for c in &self.chunks {
            out.extend_from_slice(c);
        }
        out.freeze()
    }
}

impl IntoIterator for Frame {
    type Item = Bytes;
    type IntoIter = std::vec::IntoIter<Bytes>;
    fn into_iter(self) -> Self::IntoIter {
        self.chunks.into_iter()
    }
}

/// A `ByteBufMut` that passes registered `Bytes` by reference (see the module doc).
#[derive(Debug)]
pub struct FrameBuf {
    done: Vec<Bytes>,
    done_len: usize,
    current: BytesMut,
    references: HashMap<(usize, usize), Bytes>,
}

impl FrameBuf {
    /// An empty buffer; `references` are the slices to pass by reference when met.
    pub fn new(references: impl IntoIterator<Item = Bytes>) -> FrameBuf {
        let references = references
            .into_iter()
            .filter(|b| b.len() >= REFERENCE_MIN_BYTES)
            .map(|b| ((b.as_ptr() as usize, b.len()), b))
            .collect();
        FrameBuf {
            done: Vec::new(),
            done_len: 0,
            current: BytesMut::with_capacity(256),
            references,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.done_len + self.current.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Overwrites the first 4 bytes (a frame's size field); they must have been written into
    /// the first owned chunk.
    pub fn patch_prefix(&mut self, prefix: [u8; 4]) -> bool {
        if self.done.is_empty() {
            if self.current.len() >= 4 {
                self.current[..4].copy_from_slice(&prefix);
                return true;
            }
            return false;
        }
        // The first chunk was frozen: rebuild it with the new prefix (it is a small owned one).
        let first = &self.done[0];
        if first.len() < 4 {
            return false;
        }
        let mut patched = BytesMut::with_capacity(first.len());
        patched.extend_from_slice(&prefix);
        patched.extend_from_slice(&first[4..]);
        self.done[0] = patched.freeze();
        true
    }

    /// Finishes the frame.
    pub fn finish(mut self) -> Frame {
        if !self.current.is_empty() {
            let tail = self.current.split().freeze();
            self.done_len += tail.len();
            self.done.push(tail);
        }
        Frame {
            chunks: self.done,
            len: self.done_len,
        }
    }

    fn push_reference(&mut self, bytes: Bytes) {
        if !self.current.is_empty() {
            let owned = self.current.split().freeze();
            self.done_len += owned.len();
            self.done.push(owned);
        }
        self.done_len += bytes.len();
        self.done.push(bytes);
    }
}

// SAFETY: every method delegates to the inner `BytesMut`, which upholds `BufMut`'s contract;
// `put_slice` either delegates or records a chunk without touching the inner buffer.
unsafe impl BufMut for FrameBuf {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller guarantees `cnt` bytes of `chunk_mut()` were initialised; that
        // chunk is the inner buffer's.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= REFERENCE_MIN_BYTES {
            if let Some(bytes) = self.references.get(&(src.as_ptr() as usize, src.len())) {
                let bytes = bytes.clone();
                self.push_reference(bytes);
                return;
            }
        }
        self.current.extend_from_slice(src);
    }
}

impl ByteBufMut for FrameBuf {
    fn offset(&self) -> usize {
        self.len()
    }

    fn seek(&mut self, offset: usize) {
        // Only positions inside the owned chunk being written can be revisited.
        if offset >= self.done_len {
            let local = offset - self.done_len;
            if local <= self.current.len() {
                self.current.truncate(local);
            }
        }
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        if r.start >= self.done_len && r.end >= r.start {
            let start = r.start - self.done_len;
            let end = r.end - self.done_len;
            if end <= self.current.len() {
                return &mut self.current[start..end];
            }
        }
        &mut []
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn registered_records_are_referenced_not_copied_and_bytes_match() {
        let records = Bytes::from(vec![7u8; 4096]);
        let response =
            FetchResponse::default()
                .with_responses(vec![FetchableTopicResponse::default().with_partitions(
                    vec![PartitionData::default().with_records(Some(records.clone()))],
                )]);
        for version in [4i16, 12, 16] {
            let mut plain = BytesMut::new();
            response.encode(&mut plain, version).unwrap();
            let mut chunked = FrameBuf::new([records.clone()]);
            response.encode(&mut chunked, version).unwrap();
            let frame = chunked.finish();
            assert_eq!(frame.to_contiguous(), plain.freeze(), "v{version}");
            assert!(
                frame
                    .chunks()
                    .iter()
                    .any(|c| c.as_ptr() == records.as_ptr()),
                "records were copied at v{version}"
            );
        }
    }

    #[test]
    fn patch_prefix_after_reference() {
        let records = Bytes::from(vec![1u8; 1024]);
        let mut buf = FrameBuf::new([records.clone()]);
        buf.put_i32(0);
        buf.put_slice(&records);
        buf.put_u8(9);
        assert!(buf.patch_prefix(5i32.to_be_bytes()));
        let frame = buf.finish();
        assert_eq!(frame.len(), 4 + 1024 + 1);
        let all = frame.to_contiguous();
        assert_eq!(&all[..4], &5i32.to_be_bytes());
        assert_eq!(all[all.len() - 1], 9);
    }
}
