//! Response frames as a list of chunks, so stored record batches are sent without copying.
//!
//! `kafka-protocol` encodes into any `ByteBufMut`, and writes a `bytes` field with one
//! `put_slice` of the whole field. [`FrameBuf`] is a `ByteBufMut` that recognises two kinds of
//! record field when the encoder hands them over, and appends them as chunks of their own
//! instead of copying them; everything else is copied into small owned chunks as usual:
//! - record `Bytes` held in memory (a Fetch answer read from a segment, a small one): a
//!   reference to the same `Bytes`;
//! - a placeholder from [`FileRefs`] standing for a [`FileSlice`] of a segment file: the slice
//!   itself. The placeholder is a view of a static zero region that nothing ever reads, at a
//!   position unique within its response, so its address says which slice it stands for. A
//!   placeholder met without its slice (a bug) fails the encoding rather than sending zeros.
//!
//! The connection writes memory chunks with vectored writes and file chunks with `sendfile`:
//! a fetched batch goes from the page cache to the socket without passing through gregor.
//!
//! `ByteBufMut::seek`/`range` (used only by the record-batch encoder's size gaps, never by
//! message encoders) work within the owned chunk being written; a gap that would span a
//! referenced chunk is impossible for message encoding and yields an empty slice.

// `BufMut` is an unsafe trait: the two unsafe items below only delegate to `BytesMut`.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::OnceLock;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

use crate::log::FileSlice;

/// Slices shorter than this are copied even if registered: a reference costs an iovec.
const REFERENCE_MIN_BYTES: usize = 512;

/// Size of the placeholder region: the largest file slice one placeholder can stand for, less
/// the number of placeholders before it in the response. It is never read, so it costs
/// address space only.
const PLACEHOLDER_BYTES: usize = 64 << 20;

/// What placeholders point into: zeroed memory allocated once and never written, so its
/// pages are never touched (a `static` array would put 64 MiB of zeros into the binary).
fn placeholder() -> &'static [u8] {
    static PLACEHOLDER: OnceLock<&'static [u8]> = OnceLock::new();
    PLACEHOLDER.get_or_init(|| Box::leak(vec![0u8; PLACEHOLDER_BYTES].into_boxed_slice()))
}

fn is_placeholder(src: &[u8]) -> bool {
    let start = placeholder().as_ptr() as usize;
    let at = src.as_ptr() as usize;
    at >= start && at < start + PLACEHOLDER_BYTES
}

/// The file slices a response's record fields stand for (see the module doc).
#[derive(Debug, Default)]
pub struct FileRefs {
    slices: HashMap<(usize, usize), FileSlice>,
}

impl FileRefs {
    /// No slices.
    pub fn new() -> FileRefs {
        FileRefs::default()
    }

    /// Whether no placeholder was handed out.
    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }

    /// A record field standing for `slice`, to be encoded with these refs; `None` when the
    /// slice is empty or too large to stand for (the caller reads it into memory instead).
    pub fn placeholder(&mut self, slice: FileSlice) -> Option<Bytes> {
        let at = self.slices.len();
        let end = at.checked_add(slice.len())?;
        if slice.is_empty() || end > PLACEHOLDER_BYTES {
            return None;
        }
        let field = Bytes::from_static(&placeholder()[at..end]);
        self.slices
            .insert((field.as_ptr() as usize, field.len()), slice);
        Some(field)
    }
}

/// One piece of a frame.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Bytes in memory.
    Memory(Bytes),
    /// A range of a segment file, sent with `sendfile`.
    File(FileSlice),
}

impl Chunk {
    /// Bytes left in the chunk.
    pub fn len(&self) -> usize {
        match self {
            Chunk::Memory(bytes) => bytes.len(),
            Chunk::File(slice) => slice.len(),
        }
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the first `n` bytes (after a partial write).
    pub fn advance(&mut self, n: usize) {
        match self {
            Chunk::Memory(bytes) => bytes.advance(n.min(bytes.len())),
            Chunk::File(slice) => slice.advance(n),
        }
    }
}

/// An encoded response: chunks to write back to back.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    chunks: Vec<Chunk>,
    len: usize,
}

impl Frame {
    /// A frame of one contiguous buffer.
    pub fn single(bytes: Bytes) -> Frame {
        let len = bytes.len();
        Frame {
            chunks: vec![Chunk::Memory(bytes)],
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
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }
    /// The whole frame in one buffer (file chunks read into it): for tests and tools.
    pub fn to_contiguous(&self) -> io::Result<Bytes> {
        if let [Chunk::Memory(only)] = self.chunks.as_slice() {
            return Ok(only.clone());
        }
        let mut out = BytesMut::with_capacity(self.len);
        for chunk in &self.chunks {
            match chunk {
                Chunk::Memory(bytes) => out.extend_from_slice(bytes),
                Chunk::File(slice) => {
                    let bytes = slice.read()?;
                    if bytes.len() != slice.len() {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "segment file truncated",
                        ));
                    }
                    out.extend_from_slice(&bytes);
                }
            }
        }
        Ok(out.freeze())
    }
}

impl IntoIterator for Frame {
    type Item = Chunk;
    type IntoIter = std::vec::IntoIter<Chunk>;
    fn into_iter(self) -> Self::IntoIter {
        self.chunks.into_iter()
    }
}

/// A `ByteBufMut` that passes registered `Bytes` by reference (see the module doc).
#[derive(Debug)]
pub struct FrameBuf<'a> {
    done: Vec<Chunk>,
    done_len: usize,
    current: BytesMut,
    references: HashMap<(usize, usize), Bytes>,
    files: &'a FileRefs,
    /// A placeholder was met that `files` does not know.
    unresolved: bool,
}

impl<'a> FrameBuf<'a> {
    /// An empty buffer; `references` are the slices to pass by reference when met, `files`
    /// the file slices behind placeholders.
    pub fn new(references: impl IntoIterator<Item = Bytes>, files: &'a FileRefs) -> FrameBuf<'a> {
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
            files,
            unresolved: false,
        }
    }

    /// Whether a placeholder without a file slice was written (the frame must not be sent).
    pub fn has_unresolved_placeholder(&self) -> bool {
        self.unresolved
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
        let Chunk::Memory(first) = &self.done[0] else {
            return false;
        };
        if first.len() < 4 {
            return false;
        }
        let mut patched = BytesMut::with_capacity(first.len());
        patched.extend_from_slice(&prefix);
        patched.extend_from_slice(&first[4..]);
        self.done[0] = Chunk::Memory(patched.freeze());
        true
    }

    /// Finishes the frame.
    pub fn finish(mut self) -> Frame {
        if !self.current.is_empty() {
            let tail = self.current.split().freeze();
            self.done_len += tail.len();
            self.done.push(Chunk::Memory(tail));
        }
        Frame {
            chunks: self.done,
            len: self.done_len,
        }
    }

    fn push_reference(&mut self, chunk: Chunk) {
        if !self.current.is_empty() {
            let owned = self.current.split().freeze();
            self.done_len += owned.len();
            self.done.push(Chunk::Memory(owned));
        }
        self.done_len += chunk.len();
        self.done.push(chunk);
    }
}

// SAFETY: every method delegates to the inner `BytesMut`, which upholds `BufMut`'s contract;
// `put_slice` either delegates or records a chunk without touching the inner buffer.
unsafe impl BufMut for FrameBuf<'_> {
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
        let key = (src.as_ptr() as usize, src.len());
        if !src.is_empty() && is_placeholder(src) {
            match self.files.slices.get(&key) {
                Some(slice) => {
                    let chunk = Chunk::File(slice.clone());
                    self.push_reference(chunk);
                }
                None => {
                    self.unresolved = true;
                    self.current.extend_from_slice(src);
                }
            }
            return;
        }
        if src.len() >= REFERENCE_MIN_BYTES {
            if let Some(bytes) = self.references.get(&key) {
                let chunk = Chunk::Memory(bytes.clone());
                self.push_reference(chunk);
                return;
            }
        }
        self.current.extend_from_slice(src);
    }
}

impl ByteBufMut for FrameBuf<'_> {
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
    use std::sync::Arc;

    fn fetch_response(records: Vec<Bytes>) -> FetchResponse {
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_partitions(
                records
                    .into_iter()
                    .map(|r| PartitionData::default().with_records(Some(r)))
                    .collect(),
            )])
    }

    #[test]
    fn registered_records_are_referenced_not_copied_and_bytes_match() {
        let records = Bytes::from(vec![7u8; 4096]);
        let response = fetch_response(vec![records.clone()]);
        let files = FileRefs::new();
        for version in 4i16..=18 {
            let mut plain = BytesMut::new();
            response.encode(&mut plain, version).unwrap();
            let mut chunked = FrameBuf::new([records.clone()], &files);
            response.encode(&mut chunked, version).unwrap();
            let frame = chunked.finish();
            assert_eq!(frame.to_contiguous().unwrap(), plain.freeze(), "v{version}");
            assert!(
                frame
                    .chunks()
                    .iter()
                    .any(|c| matches!(c, Chunk::Memory(b) if b.as_ptr() == records.as_ptr())),
                "records were copied at v{version}"
            );
        }
    }

    #[test]
    fn placeholders_become_file_chunks_with_the_file_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = Arc::new(std::fs::File::open(&path).unwrap());
        let mut files = FileRefs::new();
        // Two slices of the same length: distinct placeholders.
        let a = files
            .placeholder(FileSlice::new(file.clone(), 0, 3000))
            .unwrap();
        let b = files
            .placeholder(FileSlice::new(file.clone(), 5000, 3000))
            .unwrap();
        let small = files.placeholder(FileSlice::new(file, 9000, 10)).unwrap();
        assert_ne!(a.as_ptr(), b.as_ptr());
        let response = fetch_response(vec![a, b, small]);
        let expected = fetch_response(vec![
            Bytes::copy_from_slice(&data[0..3000]),
            Bytes::copy_from_slice(&data[5000..8000]),
            Bytes::copy_from_slice(&data[9000..9010]),
        ]);
        for version in 4i16..=18 {
            let mut plain = BytesMut::new();
            expected.encode(&mut plain, version).unwrap();
            let mut chunked = FrameBuf::new(Vec::new(), &files);
            response.encode(&mut chunked, version).unwrap();
            assert!(!chunked.has_unresolved_placeholder());
            let frame = chunked.finish();
            let file_chunks = frame
                .chunks()
                .iter()
                .filter(|c| matches!(c, Chunk::File(_)))
                .count();
            assert_eq!(file_chunks, 3, "v{version}");
            assert_eq!(frame.len(), plain.len());
            assert_eq!(frame.to_contiguous().unwrap(), plain.freeze(), "v{version}");
        }
    }

    #[test]
    fn a_placeholder_without_its_slice_is_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, [1u8; 100]).unwrap();
        let file = Arc::new(std::fs::File::open(&path).unwrap());
        let mut files = FileRefs::new();
        let field = files.placeholder(FileSlice::new(file, 0, 100)).unwrap();
        let other = FileRefs::new();
        let mut buf = FrameBuf::new(Vec::new(), &other);
        fetch_response(vec![field]).encode(&mut buf, 12).unwrap();
        assert!(buf.has_unresolved_placeholder());
        assert!(FileRefs::new().placeholder(FileSlice::empty()).is_none());
    }

    #[test]
    fn patch_prefix_after_reference() {
        let records = Bytes::from(vec![1u8; 1024]);
        let files = FileRefs::new();
        let mut buf = FrameBuf::new([records.clone()], &files);
        buf.put_i32(0);
        buf.put_slice(&records);
        buf.put_u8(9);
        assert!(buf.patch_prefix(5i32.to_be_bytes()));
        let frame = buf.finish();
        assert_eq!(frame.len(), 4 + 1024 + 1);
        let all = frame.to_contiguous().unwrap();
        assert_eq!(&all[..4], &5i32.to_be_bytes());
        assert_eq!(all[all.len() - 1], 9);
    }
}
