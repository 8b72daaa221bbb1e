//! [`FileSlice`]: whole stored batches as a byte range of a segment's `.log` file, so a Fetch
//! answer can go from the page cache to the socket with `sendfile(2)` instead of being read
//! into memory first (Kafka's `FileRecords.writeTo`).
//!
//! A slice holds the segment's open file, so it stays readable when the segment is deleted or
//! replaced by the cleaner after the slice was taken (the inode lives until the last handle
//! closes). A truncation of the file (a leader stepping down and cutting a diverging tail)
//! makes a pending send come up short: [`FileSlice::send_to`] then fails, and the connection
//! is closed, as Kafka closes it. Reading the slice into memory ([`FileSlice::read`]) is the
//! fallback for small slices and for callers that need the bytes.

// `sendfile` is a libc call; the one unsafe block below only passes valid descriptors and a
// pointer to a local.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use bytes::Bytes;

/// A byte range of a file: `len` bytes at `position`.
#[derive(Debug, Clone, Default)]
pub struct FileSlice {
    file: Option<Arc<File>>,
    position: u64,
    len: usize,
}

impl FileSlice {
    /// The range `[position, position + len)` of `file`.
    pub fn new(file: Arc<File>, position: u64, len: usize) -> FileSlice {
        FileSlice {
            file: Some(file),
            position,
            len,
        }
    }

    /// No bytes.
    pub fn empty() -> FileSlice {
        FileSlice::default()
    }

    /// Bytes in the slice.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the slice has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// File position of the first byte.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Drops the first `n` bytes (after a partial send).
    pub fn advance(&mut self, n: usize) {
        let n = n.min(self.len);
        self.position += n as u64;
        self.len -= n;
    }

    /// Reads the slice into memory. Shorter than [`len`](Self::len) only if the file was
    /// truncated meanwhile.
    pub fn read(&self) -> io::Result<Bytes> {
        let Some(file) = self.file.as_ref().filter(|_| self.len > 0) else {
            return Ok(Bytes::new());
        };
        let mut buf = vec![0u8; self.len];
        let filled = super::segment::read_up_to(file, &mut buf, self.position)?;
        buf.truncate(filled);
        Ok(Bytes::from(buf))
    }

    /// [`read`](Self::read) for a slice of whole batches (what the log hands out): a read cut
    /// short by a racing truncation keeps the whole batches it got.
    pub fn read_batches(&self) -> io::Result<Bytes> {
        let bytes = self.read()?;
        if bytes.len() == self.len {
            return Ok(bytes);
        }
        let whole = super::batch::whole_batches_len(&bytes);
        Ok(bytes.slice(..whole))
    }

    /// Sends up to the whole slice to the socket `socket` with `sendfile(2)`; returns the bytes
    /// sent (the caller [`advance`](Self::advance)s). `WouldBlock` when the socket is full.
    /// Reaching the end of the file before the slice ends is an error: the file was truncated
    /// after the slice was taken, and what was promised can no longer be sent.
    pub fn send_to(&self, socket: RawFd) -> io::Result<usize> {
        let Some(file) = self.file.as_ref().filter(|_| self.len > 0) else {
            return Ok(0);
        };
        let mut offset = libc::off_t::try_from(self.position)
            .map_err(|_| io::Error::other("file position beyond off_t"))?;
        // SAFETY: both descriptors are open for the duration of the call (`file` is borrowed,
        // `socket` belongs to the caller's live stream) and `offset` is a valid local.
        let sent = unsafe { libc::sendfile(socket, file.as_raw_fd(), &mut offset, self.len) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        if sent == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment file truncated while its batches were being sent",
            ));
        }
        Ok(sent as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, Arc<File>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, bytes).expect("write");
        let file = File::open(&path).expect("open");
        (dir, Arc::new(file))
    }

    #[test]
    fn read_and_send_give_the_same_bytes() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let (_dir, file) = file_with(&data);
        let mut slice = FileSlice::new(file, 100, 5000);
        assert_eq!(&slice.read().expect("read")[..], &data[100..5100]);
        let (mut a, b) = UnixStream::pair().expect("pair");
        while !slice.is_empty() {
            let sent = slice.send_to(b.as_raw_fd()).expect("send");
            slice.advance(sent);
        }
        drop(b);
        let mut got = Vec::new();
        a.read_to_end(&mut got).expect("read back");
        assert_eq!(&got[..], &data[100..5100]);
    }

    #[test]
    fn truncated_file_fails_the_send_and_shortens_the_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut f = File::create(&path).expect("create");
        f.write_all(&[7u8; 4096]).expect("write");
        let file = Arc::new(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .expect("open"),
        );
        let slice = FileSlice::new(file.clone(), 1000, 3000);
        file.set_len(2000).expect("truncate");
        assert_eq!(slice.read().expect("read").len(), 1000);
        let mut rest = slice.clone();
        rest.advance(1000);
        let (_a, b) = UnixStream::pair().expect("pair");
        let error = rest.send_to(b.as_raw_fd()).expect_err("past the end");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn read_batches_keeps_the_whole_batches_a_truncation_left() {
        let a = crate::log::batch::testing::batch(0, 3, 1);
        let b = crate::log::batch::testing::batch(3, 3, 1);
        let (_dir, file) = file_with(&[a.clone(), b.clone()].concat());
        let slice = FileSlice::new(file.clone(), 0, a.len() + b.len());
        assert_eq!(slice.read_batches().expect("read").len(), a.len() + b.len());
        let writable = std::fs::OpenOptions::new()
            .write(true)
            .open(_dir.path().join("f"))
            .expect("open");
        writable
            .set_len((a.len() + b.len() / 2) as u64)
            .expect("truncate");
        assert_eq!(&slice.read_batches().expect("read")[..], &a[..]);
    }

    #[test]
    fn empty_slice_sends_and_reads_nothing() {
        let slice = FileSlice::empty();
        assert!(slice.read().expect("read").is_empty());
        let (_a, b) = UnixStream::pair().expect("pair");
        assert_eq!(slice.send_to(b.as_raw_fd()).expect("send"), 0);
    }
}
