//! One log segment: a `.log` file of record batches with its `.index` and `.timeindex`.
//!
//! # Files
//! `<base offset, 20 digits>.log`, `.index`, `.timeindex` (Kafka's names; see
//! [`super::offset_index`] and [`super::time_index`] for the index formats). The `.log` file is
//! v2 record batches back to back, exactly as produced (after the broker's header rewrites) or
//! as the log cleaner rewrote them, nothing else. While the cleaner works, a segment's three
//! names carry a temporary suffix (Kafka's): `.cleaned` while it is written, `.swap` once it is
//! complete and about to replace older segments, `.deleted` on a replaced segment until its
//! files are removed ([`Segment::change_file_suffixes`]).
//!
//! # Invariants
//! - Batches are whole and valid stored batches (CRC-32C, header checks; see
//!   [`super::batch`]); offsets strictly increase, are all `>= base_offset`, and
//!   `offset - base_offset` fits an i32. A cleaned segment may have gaps between batches. The
//!   file stays below 2 GiB so positions fit the index's 4-byte fields.
//! - The *published* state (`size_bytes`, `next_offset`, index entries, max timestamp) only
//!   ever covers bytes that are fully written; readers never look past the published size.
//! - One writer at a time (the `writer` mutex, under the partition's append lock); readers run
//!   concurrently and never wait for the writer's I/O: data and index bytes are written first,
//!   then published under a short write lock that does no I/O (truncation excepted).
//! - Indexes are disposable: recovery rebuilds them from the `.log`, cutting a torn or corrupt
//!   tail. Lengths read from disk are bounded by the file size before anything is allocated, and
//!   batches larger than the scan window are CRC-checked in fixed-size chunks.
//! - The active segment holds disk blocks reserved past its data ([`PREALLOCATE_MIN_BYTES`] to
//!   [`PREALLOCATE_MAX_BYTES`] ahead, never counted in its size); they go back when it stops
//!   taking appends, when it is truncated, and when it is opened after a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::UNIX_EPOCH;

use bytes::{Bytes, BytesMut};
use tracing::{debug, warn};

use super::batch::{
    self, Batch, BatchHeader, ATTRIBUTES_POSITION, BATCH_HEADER_BYTES, NO_TIMESTAMP,
    PARTITION_LEADER_EPOCH_POSITION,
};
use super::file_slice::FileSlice;
use super::offset_index::{OffsetIndex, OffsetPosition, OFFSET_INDEX_ENTRY_BYTES};
use super::time_index::{TimeIndex, TimestampOffset, TIME_INDEX_ENTRY_BYTES};
use super::LogError;

/// Suffix of the data file.
pub const LOG_FILE_SUFFIX: &str = ".log";
/// Suffix of the offset index.
pub const INDEX_FILE_SUFFIX: &str = ".index";
/// Suffix of the time index.
pub const TIME_INDEX_FILE_SUFFIX: &str = ".timeindex";
/// Added to a segment's three file names while the log cleaner writes it (Kafka's `.cleaned`).
pub const CLEANED_FILE_SUFFIX: &str = ".cleaned";
/// Added to a cleaned segment's file names once it is complete and about to replace the
/// segments it was made from (Kafka's `.swap`).
pub const SWAP_FILE_SUFFIX: &str = ".swap";
/// Added to a replaced segment's file names until they are removed (Kafka's `.deleted`).
pub const DELETED_FILE_SUFFIX: &str = ".deleted";
/// The three file kinds of a segment, the `.log` first (renames follow this order, as Kafka's
/// `changeFileSuffixes` does).
pub const SEGMENT_FILE_SUFFIXES: [&str; 3] =
    [LOG_FILE_SUFFIX, INDEX_FILE_SUFFIX, TIME_INDEX_FILE_SUFFIX];
/// Largest `.log` file: positions are 4-byte signed ints in the offset index (as in Kafka).
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Read-ahead for header scans on the read path.
const SCAN_WINDOW_BYTES: usize = 64 * 1024;
/// Read-ahead for header scans that skip over batches (finding a fetch's first batch from the
/// offset index, and where its slice ends): a bigger window would copy batch bytes that are
/// then sent from the file anyway.
const HEADER_SCAN_WINDOW_BYTES: usize = 4 * 1024;
/// Read-ahead for recovery; larger batches are checked in chunks of this size.
const RECOVERY_WINDOW_BYTES: usize = 1024 * 1024;
/// Bytes 0..16 of a batch: base offset, length, partition leader epoch.
const HEAD_BYTES: usize = PARTITION_LEADER_EPOCH_POSITION + 4;

/// Locks a mutex. A poisoned lock is taken over: every structure here is published in a
/// consistent state before any call that could panic, and a panic is a bug already reported.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks an `RwLock` (poison taken over, see [`lock`]).
pub(crate) fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks an `RwLock` (poison taken over, see [`lock`]).
pub(crate) fn write_lock<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// fsyncs a directory, making creates, renames and deletes in it durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a file; one already gone is fine.
pub fn remove_if_present(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The file name stem of a segment: its base offset padded to 20 digits.
pub fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// The path of one of a segment's files: `<dir>/<20-digit base><kind><suffix>`, where `kind` is
/// one of [`SEGMENT_FILE_SUFFIXES`] and `suffix` is empty or a temporary suffix
/// ([`CLEANED_FILE_SUFFIX`], [`SWAP_FILE_SUFFIX`], [`DELETED_FILE_SUFFIX`]).
pub fn file_path(dir: &Path, base_offset: i64, kind: &str, suffix: &str) -> PathBuf {
    dir.join(format!("{}{kind}{suffix}", file_stem(base_offset)))
}

/// The base offset of a segment file named `<20 digits><suffix>`.
pub fn parse_base_offset(file_name: &str, suffix: &str) -> Option<i64> {
    let stem = file_name.strip_suffix(suffix)?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// How far past the write position an active segment's blocks are reserved ([`preallocate`]):
/// as far as the segment's size, at least the minimum and at most the maximum. So at most
/// that much disk per partition is held beyond its data (and at most its size again); it is
/// given back when the segment stops taking appends.
pub const PREALLOCATE_MIN_BYTES: u64 = 64 << 10;
/// See [`PREALLOCATE_MIN_BYTES`].
pub const PREALLOCATE_MAX_BYTES: u64 = 8 << 20;

/// Reserves the blocks of `len` bytes at `offset` without changing the file's size
/// (`fallocate(2)` with `FALLOC_FL_KEEP_SIZE`). Appends into reserved blocks skip the file
/// system's per-block delayed-allocation work: on ext4 writing 2 GiB plus its writeback took
/// about 20% less CPU (docs/BENCHMARKS.md). Truncating to the file's own size gives them back.
#[allow(unsafe_code)]
fn preallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::other("offset beyond off_t"))?;
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::other("length beyond off_t"))?;
    // SAFETY: `file` stays open for the call; no pointers are passed.
    let result =
        unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset, len) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// More disk than a file's size by over this is a [`preallocate`] reservation (block rounding
/// and the file system's extent blocks take less).
const RESERVED_SLACK_BYTES: u64 = PREALLOCATE_MIN_BYTES / 2;

/// Bytes of disk `metadata`'s file holds past its size.
fn reserved_past_end(metadata: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    metadata
        .blocks()
        .saturating_mul(512)
        .saturating_sub(metadata.len())
}

/// Reads into `buf` at `position` until it is full or the file ends; returns bytes read.
pub(super) fn read_up_to(file: &File, buf: &mut [u8], position: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], position + filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

fn write_all_vectored(mut file: &File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write whole batch",
                ))
            }
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// A read-ahead window over a file: hands out byte ranges, reading `capacity` bytes at a time.
struct FileWindow<'a> {
    file: &'a File,
    /// Never look at or past this position.
    end: u64,
    capacity: usize,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    start: u64,
}

impl<'a> FileWindow<'a> {
    fn new(file: &'a File, end: u64, capacity: usize) -> FileWindow<'a> {
        FileWindow {
            file,
            end,
            capacity,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Bytes `[position, position + length)`, or `None` if they are not all before `end`
    /// (or the file is shorter than expected). `length` must not exceed the capacity.
    fn get(&mut self, position: u64, length: usize) -> io::Result<Option<&[u8]>> {
        assert!(length <= self.capacity);
        let Some(stop) = position.checked_add(length as u64) else {
            return Ok(None);
        };
        if stop > self.end {
            return Ok(None);
        }
        let cached = position >= self.start && stop <= self.start + self.buf.len() as u64;
        if !cached {
            let want = (self.end - position).min(self.capacity as u64) as usize;
            self.buf.resize(want, 0);
            let got = read_up_to(self.file, &mut self.buf, position)?;
            self.buf.truncate(got);
            self.start = position;
            if got < length {
                return Ok(None);
            }
        }
        let from = (position - self.start) as usize;
        Ok(Some(&self.buf[from..from + length]))
    }
}

/// Where a batch sits in a segment, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLocation {
    /// Byte position in the `.log` file.
    pub position: u64,
    /// Size in bytes.
    pub size_bytes: usize,
    /// First offset.
    pub base_offset: i64,
    /// Last offset.
    pub last_offset: i64,
    /// The batch's max timestamp.
    pub max_timestamp_ms: i64,
    /// The batch's producer id (`-1` without one).
    pub producer_id: i64,
    /// The batch's producer epoch.
    pub producer_epoch: i16,
    /// The batch's first sequence.
    pub base_sequence: i32,
    /// Whether it is a control batch (transaction markers).
    pub is_control: bool,
    /// Whether it belongs to a transaction (data or marker).
    pub is_transactional: bool,
}

impl BatchLocation {
    fn from_header(header: &BatchHeader<'_>, position: u64) -> BatchLocation {
        BatchLocation {
            position,
            size_bytes: header.size_bytes(),
            base_offset: header.base_offset(),
            last_offset: header.last_offset(),
            max_timestamp_ms: header.max_timestamp_ms(),
            producer_id: header.producer_id(),
            producer_epoch: header.producer_epoch(),
            base_sequence: header.base_sequence(),
            is_control: header.is_control(),
            is_transactional: header.is_transactional(),
        }
    }
}

/// A batch ready to be written: bytes 0..16 (rewritten base offset and leader epoch) kept apart
/// from the rest so the record data is written from the producer's buffer without a copy.
#[derive(Debug, Clone)]
pub struct AppendBatch {
    head: [u8; HEAD_BYTES],
    body: Bytes,
    base_offset: i64,
    last_offset: i64,
    max_timestamp_ms: i64,
    record_count: u32,
}

impl AppendBatch {
    fn from_parts(
        head: [u8; HEAD_BYTES],
        body: Bytes,
        header: &BatchHeader<'_>,
        max_timestamp_ms: i64,
    ) -> AppendBatch {
        let base_offset = i64::from_be_bytes([
            head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
        ]);
        AppendBatch {
            head,
            body,
            base_offset,
            last_offset: base_offset + i64::from(header.last_offset_delta()),
            max_timestamp_ms,
            record_count: header.records_count() as u32,
        }
    }

    fn head_of(bytes: &[u8]) -> [u8; HEAD_BYTES] {
        let mut head = [0u8; HEAD_BYTES];
        head.copy_from_slice(&bytes[..HEAD_BYTES]);
        head
    }

    /// The batch as it is (replicated batches already carry their offsets).
    pub fn unchanged(batch: &Batch) -> AppendBatch {
        let bytes = batch.bytes();
        let header = batch.header();
        AppendBatch::from_parts(
            AppendBatch::head_of(bytes),
            bytes.slice(HEAD_BYTES..),
            &header,
            header.max_timestamp_ms(),
        )
    }

    /// The LogAppendTime path: the batch marked LogAppendTime with `now_ms` as max timestamp.
    /// This changes CRC-covered bytes, so the batch is copied and its CRC recomputed (callers
    /// do this before taking the append lock, then [`AppendBatch::assign_offsets`]).
    pub fn with_log_append_time(batch: &Batch, now_ms: i64) -> AppendBatch {
        let mut copy = BytesMut::from(&batch.bytes()[..]);
        batch::set_log_append_time(&mut copy, now_ms);
        let bytes = copy.freeze();
        AppendBatch::from_parts(
            AppendBatch::head_of(&bytes),
            bytes.slice(HEAD_BYTES..),
            &batch.header(),
            now_ms,
        )
    }

    /// The leader path: sets the base offset and partition leader epoch, both outside the CRC,
    /// in the separate 16-byte head; the record data stays shared with the request buffer.
    pub fn assign_offsets(&mut self, base_offset: i64, leader_epoch: i32) {
        let last_offset_delta = self.last_offset - self.base_offset;
        self.head[..8].copy_from_slice(&base_offset.to_be_bytes());
        self.head[PARTITION_LEADER_EPOCH_POSITION..].copy_from_slice(&leader_epoch.to_be_bytes());
        self.base_offset = base_offset;
        self.last_offset = base_offset + last_offset_delta;
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> usize {
        HEAD_BYTES + self.body.len()
    }

    /// First offset.
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Last offset.
    pub fn last_offset(&self) -> i64 {
        self.last_offset
    }

    /// Max timestamp as it will be stored.
    pub fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms
    }

    /// Number of records.
    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// The whole batch as stored (copies; for tests and diagnostics).
    pub fn to_bytes(&self) -> Bytes {
        let mut bytes = BytesMut::with_capacity(self.size_bytes());
        bytes.extend_from_slice(&self.head);
        bytes.extend_from_slice(&self.body);
        bytes.freeze()
    }
}

/// The largest timestamp of a segment and a batch holding it (the first batch to reach it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MaxTimestamp {
    timestamp_ms: i64,
    /// Last offset of that batch (Kafka's "shallow" offset of the max timestamp).
    offset: i64,
}

impl MaxTimestamp {
    const NONE: MaxTimestamp = MaxTimestamp {
        timestamp_ms: NO_TIMESTAMP,
        offset: -1,
    };

    /// Takes `timestamp_ms` at `offset` if it is larger (ties keep the earlier batch).
    fn observe(&mut self, timestamp_ms: i64, offset: i64) {
        if timestamp_ms > self.timestamp_ms {
            *self = MaxTimestamp {
                timestamp_ms,
                offset,
            };
        }
    }
}

/// What readers see.
#[derive(Debug)]
struct SegmentState {
    size_bytes: u64,
    /// Last offset + 1, or the base offset when empty.
    next_offset: i64,
    max_timestamp: MaxTimestamp,
    /// When the segment got its first batch (broker clock), for `segment.ms`.
    rolling_base_ms: Option<i64>,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
}

/// What only the writer touches.
#[derive(Debug)]
struct WriterState {
    bytes_since_last_index_entry: u64,
    /// File blocks are reserved up to here ([`preallocate`]); 0 when none are.
    preallocated_to: u64,
    /// Cleared when the file system refuses `fallocate`; appends then go without.
    preallocate: bool,
}

/// The result of [`Segment::open`].
#[derive(Debug)]
pub struct OpenedSegment {
    /// The segment, ready for reads (and appends if it is the last).
    pub segment: Segment,
    /// Whether the whole `.log` was scanned (and the indexes rebuilt).
    pub recovered: bool,
    /// Bytes cut from a torn or corrupt tail.
    pub truncated_bytes: u64,
}

/// One segment. See the module documentation for its invariants.
#[derive(Debug)]
pub struct Segment {
    base_offset: i64,
    /// The directory holding the files.
    dir: PathBuf,
    /// The `.log` path without a temporary suffix (for messages).
    log_path: PathBuf,
    /// The temporary suffix the three file names carry now (empty for a live segment); changed
    /// only by [`Segment::change_file_suffixes`].
    file_suffix: Mutex<String>,
    log_file: Arc<File>,
    offset_index_file: Arc<File>,
    time_index_file: Arc<File>,
    writer: Mutex<WriterState>,
    state: RwLock<SegmentState>,
}

impl Segment {
    /// Creates a new, empty segment in `dir` (fails if its `.log` already exists).
    pub fn create(dir: &Path, base_offset: i64, index_bytes_max: u32) -> Result<Segment, LogError> {
        Segment::create_with_suffix(dir, base_offset, index_bytes_max, "")
    }

    /// [`Segment::create`] with `suffix` after each file name (the cleaner's `.cleaned`).
    pub fn create_with_suffix(
        dir: &Path,
        base_offset: i64,
        index_bytes_max: u32,
        suffix: &str,
    ) -> Result<Segment, LogError> {
        assert!(base_offset >= 0);
        let log_file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(file_path(dir, base_offset, LOG_FILE_SUFFIX, suffix))?;
        let offset_index = OffsetIndex::create(
            file_path(dir, base_offset, INDEX_FILE_SUFFIX, suffix),
            base_offset,
            index_bytes_max,
        )?;
        let time_index = TimeIndex::create(
            file_path(dir, base_offset, TIME_INDEX_FILE_SUFFIX, suffix),
            base_offset,
            index_bytes_max,
        )?;
        Ok(Segment::assemble(
            dir,
            base_offset,
            suffix,
            log_file,
            offset_index,
            time_index,
            0,
        ))
    }

    fn assemble(
        dir: &Path,
        base_offset: i64,
        suffix: &str,
        log_file: File,
        offset_index: OffsetIndex,
        time_index: TimeIndex,
        size_bytes: u64,
    ) -> Segment {
        Segment {
            base_offset,
            dir: dir.to_path_buf(),
            log_path: file_path(dir, base_offset, LOG_FILE_SUFFIX, ""),
            file_suffix: Mutex::new(suffix.to_string()),
            log_file: Arc::new(log_file),
            offset_index_file: offset_index.file_handle(),
            time_index_file: time_index.file_handle(),
            writer: Mutex::new(WriterState {
                bytes_since_last_index_entry: 0,
                preallocated_to: 0,
                preallocate: true,
            }),
            state: RwLock::new(SegmentState {
                size_bytes,
                next_offset: base_offset,
                max_timestamp: MaxTimestamp::NONE,
                rolling_base_ms: None,
                offset_index,
                time_index,
            }),
        }
    }

    /// Opens an existing segment. With `recover`, or when an index is missing or fails its
    /// checks, or the `.log` does not end on a batch boundary, every batch is scanned and
    /// CRC-checked, a torn or corrupt tail is cut (`tracing::warn!`) and the indexes are
    /// rebuilt. Otherwise the indexes are trusted (after sanity checks) and only the batches
    /// after the last offset index entry are scanned.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        index_bytes_max: u32,
        index_interval_bytes: u32,
        recover: bool,
    ) -> Result<OpenedSegment, LogError> {
        Segment::open_with_suffix(
            dir,
            base_offset,
            index_bytes_max,
            index_interval_bytes,
            recover,
            "",
        )
    }

    /// [`Segment::open`] of files named with `suffix` (an interrupted cleaner swap's `.swap`).
    pub fn open_with_suffix(
        dir: &Path,
        base_offset: i64,
        index_bytes_max: u32,
        index_interval_bytes: u32,
        recover: bool,
        suffix: &str,
    ) -> Result<OpenedSegment, LogError> {
        assert!(base_offset >= 0);
        let log_path = file_path(dir, base_offset, LOG_FILE_SUFFIX, suffix);
        let log_file = OpenOptions::new().read(true).append(true).open(&log_path)?;
        let metadata = log_file.metadata()?;
        let size_bytes = metadata.len();
        if reserved_past_end(&metadata) > RESERVED_SLACK_BYTES {
            // Left by a process that stopped before the segment gave them back. Best effort:
            // the segment works either way.
            let released = log_file
                .set_len(size_bytes)
                .and_then(|()| log_file.set_modified(metadata.modified()?));
            if let Err(error) = released {
                warn!(segment = %log_path.display(), %error, "could not give back the blocks reserved past the end");
            }
        }
        if size_bytes > SEGMENT_BYTES_MAX {
            return Err(LogError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is {size_bytes} bytes, more than a segment can hold",
                    log_path.display()
                ),
            )));
        }
        let (offset_index, offset_index_problem) = OffsetIndex::open(
            file_path(dir, base_offset, INDEX_FILE_SUFFIX, suffix),
            base_offset,
            index_bytes_max,
            size_bytes,
        )?;
        let (time_index, time_index_problem) = TimeIndex::open(
            file_path(dir, base_offset, TIME_INDEX_FILE_SUFFIX, suffix),
            base_offset,
            index_bytes_max,
            size_bytes,
        )?;
        let segment = Segment::assemble(
            dir,
            base_offset,
            suffix,
            log_file,
            offset_index,
            time_index,
            size_bytes,
        );
        let problem = if recover {
            None
        } else if let Some(problem) = offset_index_problem {
            Some(format!("offset index: {problem}"))
        } else if let Some(problem) = time_index_problem {
            Some(format!("time index: {problem}"))
        } else {
            segment.load_tail().err()
        };
        if !recover && problem.is_none() {
            return Ok(OpenedSegment {
                segment,
                recovered: false,
                truncated_bytes: 0,
            });
        }
        if let Some(problem) = problem {
            debug!(
                segment = %segment.log_path.display(),
                problem,
                "rebuilding segment indexes"
            );
        }
        let truncated_bytes = segment.recover(index_interval_bytes)?;
        Ok(OpenedSegment {
            segment,
            recovered: true,
            truncated_bytes,
        })
    }

    /// Loads the published state of a segment whose indexes are trusted: checks the last index
    /// entries against the log and scans the batch headers after the last offset index entry.
    /// Any inconsistency is returned as a problem (the caller then recovers the segment).
    fn load_tail(&self) -> Result<(), String> {
        let file_bytes = read_lock(&self.state).size_bytes;
        let (last_offset_entry, last_time_entry) = {
            let state = read_lock(&self.state);
            (
                state.offset_index.last_entry(),
                state.time_index.last_entry(),
            )
        };
        let mut window = FileWindow::new(&self.log_file, file_bytes, SCAN_WINDOW_BYTES);
        let mut max_timestamp = MaxTimestamp::NONE;
        if let Some(entry) = last_time_entry {
            max_timestamp.observe(entry.timestamp_ms, entry.offset);
        }
        let mut position = last_offset_entry.map_or(0, |entry| u64::from(entry.position));
        let mut next_offset = self.base_offset;
        let mut first = true;
        while position < file_bytes {
            let header_bytes = window
                .get(position, BATCH_HEADER_BYTES)
                .map_err(|error| error.to_string())?
                .ok_or_else(|| format!("torn batch header at {position}"))?;
            let header = BatchHeader::parse(header_bytes).map_err(|error| error.to_string())?;
            let size = header.check().map_err(|error| error.to_string())? as u64;
            if position + size > file_bytes {
                return Err(format!("torn batch at {position}"));
            }
            if first {
                if let Some(entry) = last_offset_entry {
                    if header.last_offset() != entry.offset {
                        return Err(format!(
                            "offset index entry {entry:?} does not match the batch there"
                        ));
                    }
                }
                first = false;
            } else if header.base_offset() < next_offset {
                return Err(format!("offsets go backwards at {position}"));
            }
            if header.base_offset() < self.base_offset
                || header.last_offset() - self.base_offset > i64::from(i32::MAX)
            {
                return Err(format!("offset outside the segment at {position}"));
            }
            max_timestamp.observe(header.max_timestamp_ms(), header.last_offset());
            next_offset = header.next_offset();
            position += size;
        }
        if last_offset_entry.is_some() && next_offset == self.base_offset {
            return Err("offset index points past the end of the log".to_string());
        }
        if let Some(entry) = last_time_entry {
            if entry.offset >= next_offset {
                return Err(format!(
                    "time index entry {entry:?} past the end of the log"
                ));
            }
        }
        let rolling_base_ms = self
            .first_batch_timestamp(file_bytes)
            .map_err(|error| error.to_string())?;
        let mut state = write_lock(&self.state);
        state.next_offset = next_offset;
        state.max_timestamp = max_timestamp;
        state.rolling_base_ms = rolling_base_ms;
        drop(state);
        lock(&self.writer).bytes_since_last_index_entry =
            file_bytes - last_offset_entry.map_or(0, |entry| u64::from(entry.position));
        Ok(())
    }

    /// For a segment found on disk: the first batch's max timestamp (Kafka's rolling base), or
    /// the file's modification time when it has none. `None` for an empty segment.
    fn first_batch_timestamp(&self, file_bytes: u64) -> io::Result<Option<i64>> {
        if file_bytes < BATCH_HEADER_BYTES as u64 {
            return Ok(None);
        }
        let mut header = [0u8; BATCH_HEADER_BYTES];
        if read_up_to(&self.log_file, &mut header, 0)? < BATCH_HEADER_BYTES {
            return Ok(None);
        }
        let timestamp_ms = BatchHeader::parse(&header)
            .map(|header| header.max_timestamp_ms())
            .unwrap_or(NO_TIMESTAMP);
        if timestamp_ms >= 0 {
            Ok(Some(timestamp_ms))
        } else {
            Ok(Some(self.modified_ms()?))
        }
    }

    /// The `.log` file's modification time (Kafka's `lastModified`).
    pub fn modified_ms(&self) -> io::Result<i64> {
        let modified = self.log_file.metadata()?.modified()?;
        Ok(modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as i64))
    }

    /// Sets the `.log` file's modification time (a cleaned segment takes that of the last
    /// segment it replaces, as in Kafka, so time retention and the legacy horizon see no change).
    pub fn set_modified_ms(&self, modified_ms: i64) -> io::Result<()> {
        let Ok(millis) = u64::try_from(modified_ms) else {
            return Ok(());
        };
        self.log_file
            .set_modified(UNIX_EPOCH + std::time::Duration::from_millis(millis))
    }

    /// The max timestamp of the first batch, `None` when empty or without timestamp (Kafka's
    /// `getFirstBatchTimestamp`, used by `max.compaction.lag.ms`).
    pub fn first_batch_max_timestamp_ms(&self) -> Result<Option<i64>, LogError> {
        if self.size_bytes() < BATCH_HEADER_BYTES as u64 {
            return Ok(None);
        }
        let mut header = [0u8; BATCH_HEADER_BYTES];
        if read_up_to(&self.log_file, &mut header, 0)? < BATCH_HEADER_BYTES {
            return Ok(None);
        }
        let timestamp_ms = BatchHeader::parse(&header)?.max_timestamp_ms();
        Ok((timestamp_ms >= 0).then_some(timestamp_ms))
    }

    /// Scans every batch from the start: header checks, offsets increasing, CRC-32C (and the
    /// records of uncompressed batches). Cuts the file at the first bad batch, rebuilds both
    /// indexes, and publishes the state. Returns the bytes cut.
    fn recover(&self, index_interval_bytes: u32) -> Result<u64, LogError> {
        let mut writer = lock(&self.writer);
        let file_bytes = self.log_file.metadata()?.len();
        let (offset_entries_max, time_entries_max) = {
            let state = read_lock(&self.state);
            (
                state.offset_index.entries_max(),
                state.time_index.entries_max(),
            )
        };
        let mut window = FileWindow::new(&self.log_file, file_bytes, RECOVERY_WINDOW_BYTES);
        let mut chunk = Vec::new();
        let mut position = 0u64;
        let mut next_offset = self.base_offset;
        let mut max_timestamp = MaxTimestamp::NONE;
        let mut offset_entries: Vec<OffsetPosition> = Vec::new();
        let mut time_entries: Vec<TimestampOffset> = Vec::new();
        let mut bytes_since_last_index_entry = 0u64;
        let mut problem: Option<String> = None;
        while position < file_bytes {
            match self.check_batch_at(&mut window, &mut chunk, position, file_bytes, next_offset) {
                Ok(location) => {
                    max_timestamp.observe(location.max_timestamp_ms, location.last_offset);
                    // Same cadence as appends: an entry once more than the interval has passed.
                    if bytes_since_last_index_entry > u64::from(index_interval_bytes) {
                        if offset_entries.len() < offset_entries_max {
                            offset_entries.push(OffsetPosition {
                                offset: location.last_offset,
                                position: position as u32,
                            });
                        }
                        let accepts = max_timestamp.timestamp_ms >= 0
                            && time_entries
                                .last()
                                .is_none_or(|last| max_timestamp.timestamp_ms > last.timestamp_ms);
                        if accepts && time_entries.len() < time_entries_max {
                            time_entries.push(TimestampOffset {
                                timestamp_ms: max_timestamp.timestamp_ms,
                                offset: max_timestamp.offset,
                            });
                        }
                        bytes_since_last_index_entry = 0;
                    }
                    bytes_since_last_index_entry += location.size_bytes as u64;
                    next_offset = location.last_offset + 1;
                    position += location.size_bytes as u64;
                }
                Err(reason) => {
                    problem = Some(reason);
                    break;
                }
            }
        }
        drop(window);
        let truncated_bytes = file_bytes - position;
        if truncated_bytes > 0 {
            warn!(
                segment = %self.log_path.display(),
                valid_bytes = position,
                truncated_bytes,
                reason = problem.as_deref().unwrap_or("unknown"),
                "truncating corrupt or torn tail of segment during recovery"
            );
            self.log_file.set_len(position)?;
        }
        let rolling_base_ms = self.first_batch_timestamp(position)?;
        let mut state = write_lock(&self.state);
        state.offset_index.reset()?;
        state.time_index.reset()?;
        state.offset_index.write_entries(&offset_entries)?;
        state.offset_index.push_entries(&offset_entries);
        state.time_index.write_entries(&time_entries)?;
        state.time_index.push_entries(&time_entries);
        state.size_bytes = position;
        state.next_offset = next_offset;
        state.max_timestamp = max_timestamp;
        state.rolling_base_ms = rolling_base_ms;
        writer.bytes_since_last_index_entry = bytes_since_last_index_entry;
        Ok(truncated_bytes)
    }

    /// Checks the batch at `position` during recovery; `Err` is the reason to cut there.
    fn check_batch_at(
        &self,
        window: &mut FileWindow<'_>,
        chunk: &mut Vec<u8>,
        position: u64,
        file_bytes: u64,
        next_offset: i64,
    ) -> Result<BatchLocation, String> {
        let header_bytes = window
            .get(position, BATCH_HEADER_BYTES)
            .map_err(|error| error.to_string())?
            .ok_or_else(|| format!("torn batch header at position {position}"))?;
        let header = BatchHeader::parse(header_bytes).map_err(|error| error.to_string())?;
        let size = header.check().map_err(|error| error.to_string())?;
        let location = BatchLocation::from_header(&header, position);
        let stored_crc = header.crc();
        if position + size as u64 > file_bytes {
            return Err(format!(
                "torn batch at position {position}: {size} bytes declared, {} present",
                file_bytes - position
            ));
        }
        if location.base_offset < next_offset {
            return Err(format!(
                "batch at position {position} has base offset {} below {next_offset}",
                location.base_offset
            ));
        }
        if location.last_offset - self.base_offset > i64::from(i32::MAX) {
            return Err(format!(
                "batch at position {position} is too far from the segment base offset"
            ));
        }
        if size <= RECOVERY_WINDOW_BYTES {
            let whole = window
                .get(position, size)
                .map_err(|error| error.to_string())?
                .ok_or_else(|| format!("torn batch at position {position}"))?;
            batch::validate_stored(whole, usize::MAX).map_err(|error| error.to_string())?;
        } else {
            // Too large for the window: CRC in fixed-size chunks (no allocation from the
            // length read off disk).
            chunk.resize(RECOVERY_WINDOW_BYTES, 0);
            let mut crc = 0u32;
            let mut at = position + ATTRIBUTES_POSITION as u64;
            let stop = position + size as u64;
            while at < stop {
                let want = ((stop - at) as usize).min(chunk.len());
                let got = read_up_to(&self.log_file, &mut chunk[..want], at)
                    .map_err(|error| error.to_string())?;
                if got < want {
                    return Err(format!("torn batch at position {position}"));
                }
                crc = crc32c::crc32c_append(crc, &chunk[..want]);
                at += want as u64;
            }
            if crc != stored_crc {
                return Err(format!("CRC mismatch in batch at position {position}"));
            }
        }
        Ok(location)
    }

    /// First offset of the segment.
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Path of the `.log` file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Published size of the `.log` file.
    pub fn size_bytes(&self) -> u64 {
        read_lock(&self.state).size_bytes
    }

    /// Last offset + 1, or the base offset when empty.
    pub fn next_offset(&self) -> i64 {
        read_lock(&self.state).next_offset
    }

    /// Whether the segment holds no batch.
    pub fn is_empty(&self) -> bool {
        read_lock(&self.state).size_bytes == 0
    }

    /// Whether either index is full (the segment must roll before the next append).
    pub fn is_index_full(&self) -> bool {
        let state = read_lock(&self.state);
        state.offset_index.is_full() || state.time_index.is_full()
    }

    /// When the first batch arrived (broker clock; for segments found on disk, the first
    /// batch's max timestamp or the file time). `None` when empty.
    pub fn rolling_base_ms(&self) -> Option<i64> {
        read_lock(&self.state).rolling_base_ms
    }

    /// Largest record timestamp in the segment and the last offset of the first batch holding
    /// it; `None` when no batch has a timestamp.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let max = read_lock(&self.state).max_timestamp;
        (max.timestamp_ms >= 0).then_some((max.timestamp_ms, max.offset))
    }

    /// Kafka's `largestTimestamp` for time retention: the largest record timestamp, or the
    /// file's modification time when no record has one.
    pub fn largest_timestamp_ms(&self) -> Result<i64, LogError> {
        match self.max_timestamp() {
            Some((timestamp_ms, _)) => Ok(timestamp_ms),
            None => Ok(self.modified_ms()?),
        }
    }

    /// The offset index entries (a copy; for tests and diagnostics).
    pub fn offset_index_entries(&self) -> Vec<OffsetPosition> {
        read_lock(&self.state).offset_index.entries().to_vec()
    }

    /// The time index entries (a copy; for tests and diagnostics).
    pub fn time_index_entries(&self) -> Vec<TimestampOffset> {
        read_lock(&self.state).time_index.entries().to_vec()
    }

    /// Appends `batches` (offsets ascending, continuing this segment, all fitting it — the
    /// caller rolls first). Writes the data with one vectored write, then the index entries
    /// (one every `index_interval_bytes`), then publishes. On error nothing is published and
    /// the files are cut back (best effort); the caller takes the log offline.
    pub fn append(
        &self,
        batches: &[AppendBatch],
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let Some(last_batch) = batches.last() else {
            return Ok(());
        };
        super::faults::check(&self.dir, super::faults::Fault::Write)?;
        let mut writer = lock(&self.writer);
        let (start_size, next_offset, mut max_timestamp) = {
            let state = read_lock(&self.state);
            (state.size_bytes, state.next_offset, state.max_timestamp)
        };
        let mut expected = next_offset;
        let mut total_bytes = 0u64;
        for batch in batches {
            assert!(
                batch.base_offset >= expected,
                "segment {}: batch offset {} below {expected}",
                self.base_offset,
                batch.base_offset
            );
            assert!(batch.last_offset >= batch.base_offset);
            assert!(batch.last_offset - self.base_offset <= i64::from(i32::MAX));
            expected = batch.last_offset + 1;
            total_bytes += batch.size_bytes() as u64;
        }
        assert!(start_size + total_bytes <= SEGMENT_BYTES_MAX);

        let end = start_size + total_bytes;
        if writer.preallocate && end > writer.preallocated_to {
            let from = writer.preallocated_to.max(start_size);
            // Ahead by as much as the segment holds (so a quiet partition holds little spare
            // disk), within bounds.
            let ahead = end.clamp(PREALLOCATE_MIN_BYTES, PREALLOCATE_MAX_BYTES);
            let to = (end + ahead).min(SEGMENT_BYTES_MAX);
            match preallocate(&self.log_file, from, to - from) {
                Ok(()) => writer.preallocated_to = to,
                Err(error) => {
                    debug!(segment = %self.log_path.display(), %error, "appending without preallocation");
                    writer.preallocate = false;
                }
            }
        }
        let mut slices = Vec::with_capacity(batches.len() * 2);
        for batch in batches {
            slices.push(IoSlice::new(&batch.head));
            slices.push(IoSlice::new(&batch.body));
        }
        if let Err(error) = write_all_vectored(&self.log_file, &mut slices) {
            let _ = self.log_file.set_len(start_size);
            writer.preallocated_to = 0;
            return Err(error.into());
        }

        let mut position = start_size;
        let mut bytes_since_last_index_entry = writer.bytes_since_last_index_entry;
        let mut offset_entries = Vec::new();
        let mut time_entries: Vec<TimestampOffset> = Vec::new();
        {
            let state = read_lock(&self.state);
            for batch in batches {
                max_timestamp.observe(batch.max_timestamp_ms, batch.last_offset);
                if bytes_since_last_index_entry > u64::from(index_interval_bytes) {
                    if state.offset_index.len() + offset_entries.len()
                        < state.offset_index.entries_max()
                    {
                        offset_entries.push(OffsetPosition {
                            offset: batch.last_offset,
                            position: position as u32,
                        });
                    }
                    let accepts = match time_entries.last() {
                        Some(last) => max_timestamp.timestamp_ms > last.timestamp_ms,
                        None => state.time_index.accepts(max_timestamp.timestamp_ms),
                    };
                    if accepts
                        && state.time_index.len() + time_entries.len()
                            < state.time_index.entries_max()
                    {
                        time_entries.push(TimestampOffset {
                            timestamp_ms: max_timestamp.timestamp_ms,
                            offset: max_timestamp.offset,
                        });
                    }
                    bytes_since_last_index_entry = 0;
                }
                bytes_since_last_index_entry += batch.size_bytes() as u64;
                position += batch.size_bytes() as u64;
            }
            let written = state
                .offset_index
                .write_entries(&offset_entries)
                .and_then(|()| state.time_index.write_entries(&time_entries));
            if let Err(error) = written {
                let _ = state
                    .offset_index
                    .file_handle()
                    .set_len((state.offset_index.len() * OFFSET_INDEX_ENTRY_BYTES) as u64);
                let _ = self.log_file.set_len(start_size);
                writer.preallocated_to = 0;
                return Err(error.into());
            }
        }

        let mut state = write_lock(&self.state);
        state.offset_index.push_entries(&offset_entries);
        state.time_index.push_entries(&time_entries);
        state.size_bytes = position;
        state.next_offset = last_batch.last_offset + 1;
        state.max_timestamp = max_timestamp;
        if state.rolling_base_ms.is_none() {
            state.rolling_base_ms = Some(now_ms);
        }
        drop(state);
        writer.bytes_since_last_index_entry = bytes_since_last_index_entry;
        Ok(())
    }

    /// Called when the segment stops being the active one (roll) or on close: records the
    /// segment's max timestamp in the time index if it is not there yet (Kafka does the same,
    /// even when the index is full), so a later load knows the exact max.
    pub fn on_become_inactive(&self) -> Result<(), LogError> {
        let mut writer = lock(&self.writer);
        if let Err(error) = self.release_preallocation(&mut writer) {
            warn!(segment = %self.log_path.display(), %error, "could not give back the blocks reserved past the end");
        }
        let max = read_lock(&self.state).max_timestamp;
        let entry = [TimestampOffset {
            timestamp_ms: max.timestamp_ms,
            offset: max.offset,
        }];
        {
            let state = read_lock(&self.state);
            if !state.time_index.accepts(max.timestamp_ms) {
                return Ok(());
            }
            state.time_index.write_entries(&entry)?;
        }
        write_lock(&self.state).time_index.push_entries(&entry);
        Ok(())
    }

    /// Gives back the blocks [`preallocate`] reserved past the end (truncating to the file's own
    /// size does that), keeping the file's modification time, which time retention reads.
    fn release_preallocation(&self, writer: &mut WriterState) -> io::Result<()> {
        if writer.preallocated_to == 0 {
            return Ok(());
        }
        let size = read_lock(&self.state).size_bytes;
        let modified = self.log_file.metadata()?.modified()?;
        self.log_file.set_len(size)?;
        writer.preallocated_to = 0;
        self.log_file.set_modified(modified)
    }

    /// Reads `length` bytes at `position`, stopping early at the published end (or at the end
    /// of the file if a truncation raced with this read).
    pub fn read_bytes(&self, position: u64, length: usize) -> Result<Bytes, LogError> {
        let size = self.size_bytes();
        if position >= size {
            return Ok(Bytes::new());
        }
        let length = (length as u64).min(size - position) as usize;
        let mut buf = vec![0u8; length];
        let got = read_up_to(&self.log_file, &mut buf, position)?;
        buf.truncate(got);
        Ok(Bytes::from(buf))
    }

    /// The first batch whose last offset is `>=` `offset` (the batch holding it, or the next
    /// one), found via the offset index then a header scan; `None` if there is none.
    pub fn find_batch(&self, offset: i64) -> Result<Option<BatchLocation>, LogError> {
        let (size, start) = {
            let state = read_lock(&self.state);
            (
                state.size_bytes,
                state
                    .offset_index
                    .lookup(offset)
                    .map_or(0, |entry| u64::from(entry.position)),
            )
        };
        self.scan_from_with(start, size, HEADER_SCAN_WINDOW_BYTES, |location| {
            location.last_offset >= offset
        })
    }

    /// Scans batch headers from `position` (a batch boundary) to `end`; returns the first batch
    /// for which `stop` holds.
    fn scan_from(
        &self,
        position: u64,
        end: u64,
        stop: impl FnMut(&BatchLocation) -> bool,
    ) -> Result<Option<BatchLocation>, LogError> {
        self.scan_from_with(position, end, SCAN_WINDOW_BYTES, stop)
    }

    /// [`scan_from`](Self::scan_from) reading `window_bytes` at a time.
    fn scan_from_with(
        &self,
        mut position: u64,
        end: u64,
        window_bytes: usize,
        mut stop: impl FnMut(&BatchLocation) -> bool,
    ) -> Result<Option<BatchLocation>, LogError> {
        let mut window = FileWindow::new(&self.log_file, end, window_bytes);
        while position < end {
            let Some(header_bytes) = window.get(position, BATCH_HEADER_BYTES)? else {
                // A concurrent truncation shortened the file.
                return Ok(None);
            };
            let header = BatchHeader::parse(header_bytes)?;
            let size = header.check()?;
            // Published batches always fit; a length that does not is corruption, and must not
            // size an allocation.
            if position + size as u64 > end {
                return Err(LogError::corrupt(format!(
                    "{}: batch at position {position} of {size} bytes overruns the segment",
                    self.log_path.display()
                )));
            }
            let location = BatchLocation::from_header(&header, position);
            if stop(&location) {
                return Ok(Some(location));
            }
            position += size as u64;
        }
        Ok(None)
    }

    /// Calls `visit` with the location of every batch, in order (headers only).
    pub fn scan_batch_locations(
        &self,
        mut visit: impl FnMut(&BatchLocation),
    ) -> Result<(), LogError> {
        self.scan_from(0, self.size_bytes(), |location| {
            visit(location);
            false
        })?;
        Ok(())
    }

    /// Calls `visit` with the location of every batch whose last offset is `>= offset`, in
    /// order (headers only).
    pub fn scan_batch_locations_from(
        &self,
        offset: i64,
        mut visit: impl FnMut(&BatchLocation),
    ) -> Result<(), LogError> {
        let Some(first) = self.find_batch(offset)? else {
            return Ok(());
        };
        self.scan_from(first.position, self.size_bytes(), |location| {
            visit(location);
            false
        })?;
        Ok(())
    }

    /// Reads the whole batch at `location` and validates it (CRC included).
    pub fn read_batch(&self, location: &BatchLocation) -> Result<Batch, LogError> {
        let bytes = self.read_bytes(location.position, location.size_bytes)?;
        Batch::new_stored(bytes, usize::MAX)
    }

    /// Whole batches starting with the one holding `offset`, at most `max_bytes` of them (the
    /// first one whole regardless when `min_one_batch`), none whose last offset is `>=`
    /// `max_offset_exclusive`, as a range of the `.log` file (nothing is read into memory but
    /// batch headers). `None` when this segment has no batch at or after `offset` (the caller
    /// moves on to the next segment).
    pub fn read_slice(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
        min_one_batch: bool,
    ) -> Result<Option<FileSlice>, LogError> {
        let Some(first) = self.find_batch(offset)? else {
            return Ok(None);
        };
        if first.last_offset >= max_offset_exclusive {
            return Ok(Some(FileSlice::empty()));
        }
        let (size, next_offset) = {
            let state = read_lock(&self.state);
            (state.size_bytes, state.next_offset)
        };
        let available = size.saturating_sub(first.position);
        let mut want = (max_bytes as u64).min(available);
        if min_one_batch {
            want = want.max(first.size_bytes as u64);
        }
        if want < first.size_bytes as u64 {
            return Ok(Some(FileSlice::empty()));
        }
        let max_end = first.position + want;
        let end = if max_end == size && next_offset <= max_offset_exclusive {
            // The whole published tail qualifies: no header to look at.
            size
        } else {
            self.whole_batches_end(first, max_end, max_offset_exclusive)?
        };
        Ok(Some(FileSlice::new(
            Arc::clone(&self.log_file),
            first.position,
            (end - first.position) as usize,
        )))
    }

    /// The end of the run of whole batches from `first` (which qualifies) that ends at or
    /// before `max_end` with every last offset below `max_offset_exclusive`. The offset index
    /// skips to the last indexed batch known to qualify, so only a few headers are read.
    fn whole_batches_end(
        &self,
        first: BatchLocation,
        max_end: u64,
        max_offset_exclusive: i64,
    ) -> Result<u64, LogError> {
        let (size, skip_to) = {
            let state = read_lock(&self.state);
            let entries = state.offset_index.entries();
            // Every batch before an indexed batch starting at or before `max_end` ends by then.
            let by_bytes = entries
                .partition_point(|e| u64::from(e.position) <= max_end)
                .checked_sub(1)
                .map(|i| u64::from(entries[i].position));
            // An entry records a batch's last offset: the batches before it end below that
            // batch's base offset, so below `max_offset_exclusive` if the entry's offset is.
            let by_offset = state
                .offset_index
                .lookup(max_offset_exclusive)
                .map(|e| u64::from(e.position));
            let skip_to = match (by_bytes, by_offset) {
                (Some(a), Some(b)) => a.min(b),
                _ => first.position,
            };
            (state.size_bytes, skip_to.max(first.position))
        };
        let mut end = skip_to;
        // Scan to the published end: a batch crossing `max_end` is left out, not corrupt.
        self.scan_from_with(skip_to, size, HEADER_SCAN_WINDOW_BYTES, |location| {
            let fits = location.position + location.size_bytes as u64 <= max_end
                && location.last_offset < max_offset_exclusive;
            if fits {
                end = location.position + location.size_bytes as u64;
            }
            !fits
        })?;
        Ok(end.max(first.position))
    }

    /// The first record at or after `starting_offset` whose timestamp is `>= target_ms`, as
    /// (offset, timestamp): the time index gives where to start, batch headers skip batches
    /// whose max timestamp is below the target, and candidate batches are decoded (to at most
    /// `decompressed_max_bytes` each).
    pub fn find_offset_by_timestamp(
        &self,
        target_ms: i64,
        starting_offset: i64,
        decompressed_max_bytes: usize,
    ) -> Result<Option<(i64, i64)>, LogError> {
        let (size, start) = {
            let state = read_lock(&self.state);
            let indexed_offset = state
                .time_index
                .lookup(target_ms)
                .map_or(self.base_offset, |entry| entry.offset);
            let from = indexed_offset.max(starting_offset);
            (
                state.size_bytes,
                state
                    .offset_index
                    .lookup(from)
                    .map_or(0, |entry| u64::from(entry.position)),
            )
        };
        let mut position = start;
        loop {
            let candidate = self.scan_from(position, size, |location| {
                location.last_offset >= starting_offset && location.max_timestamp_ms >= target_ms
            })?;
            let Some(location) = candidate else {
                return Ok(None);
            };
            let batch = self.read_batch(&location)?;
            for (offset, timestamp_ms) in batch::record_timestamps(&batch, decompressed_max_bytes)?
            {
                if offset >= starting_offset && timestamp_ms >= target_ms {
                    return Ok(Some((offset, timestamp_ms)));
                }
            }
            position = location.position + location.size_bytes as u64;
        }
    }

    /// The record with the segment's largest timestamp (the first one on ties), as
    /// (timestamp, offset); `None` when no record has a timestamp. Batches decompress to at
    /// most `decompressed_max_bytes`.
    pub fn max_timestamp_record(
        &self,
        decompressed_max_bytes: usize,
    ) -> Result<Option<(i64, i64)>, LogError> {
        let Some((timestamp_ms, shallow_offset)) = self.max_timestamp() else {
            return Ok(None);
        };
        let Some(location) = self.find_batch(shallow_offset)? else {
            return Ok(Some((timestamp_ms, shallow_offset)));
        };
        let batch = self.read_batch(&location)?;
        let exact = batch::record_timestamps(&batch, decompressed_max_bytes)?
            .into_iter()
            .find(|&(_, record_timestamp_ms)| record_timestamp_ms == timestamp_ms)
            .map_or(location.last_offset, |(offset, _)| offset);
        Ok(Some((timestamp_ms, exact)))
    }

    /// Drops every batch from the one holding `offset` on (a batch is never cut in two), and
    /// the index entries pointing there. Returns the new next offset.
    pub fn truncate_to(&self, offset: i64) -> Result<i64, LogError> {
        let mut writer = lock(&self.writer);
        let Some(cut) = self.find_batch(offset)? else {
            return Ok(self.next_offset());
        };
        let new_next_offset = cut.base_offset;
        {
            // Publish the shorter size first so readers stop before the cut.
            let mut state = write_lock(&self.state);
            state.size_bytes = cut.position;
            state.next_offset = new_next_offset;
            state.offset_index.truncate_to(new_next_offset)?;
            state.time_index.truncate_to(new_next_offset)?;
            if cut.position == 0 {
                state.rolling_base_ms = None;
            }
        }
        self.log_file.set_len(cut.position)?;
        // That also gave back any blocks reserved past the old end.
        writer.preallocated_to = 0;
        // Recompute the max timestamp: the last surviving time index entry covers everything
        // up to the last surviving offset index entry; scan the rest.
        let (start, mut max_timestamp) = {
            let state = read_lock(&self.state);
            let mut max = MaxTimestamp::NONE;
            if let Some(entry) = state.time_index.last_entry() {
                max.observe(entry.timestamp_ms, entry.offset);
            }
            (
                state
                    .offset_index
                    .last_entry()
                    .map_or(0, |entry| u64::from(entry.position)),
                max,
            )
        };
        self.scan_from(start, cut.position, |location| {
            max_timestamp.observe(location.max_timestamp_ms, location.last_offset);
            false
        })?;
        write_lock(&self.state).max_timestamp = max_timestamp;
        writer.bytes_since_last_index_entry = cut.position - start;
        debug!(
            segment = %self.log_path.display(),
            offset,
            new_next_offset,
            "truncated segment"
        );
        Ok(new_next_offset)
    }

    /// fsyncs the `.log` and both indexes (no lock held: appends continue meanwhile).
    pub fn sync(&self) -> Result<(), LogError> {
        super::faults::check(&self.dir, super::faults::Fault::Fsync)?;
        self.log_file.sync_data()?;
        self.offset_index_file.sync_data()?;
        self.time_index_file.sync_data()?;
        Ok(())
    }

    /// Removes the three files (missing files are fine), under whatever temporary suffix they
    /// carry now. Readers holding this segment keep reading from the open handle.
    pub fn delete_files(&self) -> Result<(), LogError> {
        let suffix = lock(&self.file_suffix);
        for kind in SEGMENT_FILE_SUFFIXES {
            remove_if_present(&file_path(&self.dir, self.base_offset, kind, &suffix))?;
        }
        Ok(())
    }

    /// Renames the three files from suffix `from` to suffix `to` (Kafka's
    /// `changeFileSuffixes`), the `.log` first. The open handles stay valid, so readers are not
    /// disturbed. The caller fsyncs the directory.
    pub fn change_file_suffixes(&self, from: &str, to: &str) -> Result<(), LogError> {
        let mut suffix = lock(&self.file_suffix);
        if *suffix != from {
            return Err(LogError::Io(io::Error::other(format!(
                "{}: files carry suffix {:?}, not {from:?}",
                self.log_path.display(),
                *suffix
            ))));
        }
        for kind in SEGMENT_FILE_SUFFIXES {
            fs::rename(
                file_path(&self.dir, self.base_offset, kind, from),
                file_path(&self.dir, self.base_offset, kind, to),
            )?;
        }
        *suffix = to.to_string();
        Ok(())
    }

    /// Size of the offset index in bytes (its entries; the file is never preallocated).
    pub fn offset_index_bytes(&self) -> u64 {
        (read_lock(&self.state).offset_index.len() * OFFSET_INDEX_ENTRY_BYTES) as u64
    }

    /// Size of the time index in bytes.
    pub fn time_index_bytes(&self) -> u64 {
        (read_lock(&self.state).time_index.len() * TIME_INDEX_ENTRY_BYTES) as u64
    }

    /// The stored batches from `position` (a batch boundary) to the published end, read a chunk
    /// at a time and validated as stored batches (the log cleaner's reader).
    pub fn batches_from(&self, position: u64) -> SegmentBatches<'_> {
        SegmentBatches {
            segment: self,
            position,
            end: self.size_bytes(),
            chunk: Bytes::new(),
            chunk_start: 0,
            failed: false,
        }
    }
}

/// Bytes read at a time by [`SegmentBatches`] (Kafka's cleaner I/O buffer is 512 KiB).
const BATCH_READ_CHUNK_BYTES: usize = 512 * 1024;

/// Iterator of [`Segment::batches_from`]: `(position, batch)` pairs; stops after an error.
#[derive(Debug)]
pub struct SegmentBatches<'a> {
    segment: &'a Segment,
    position: u64,
    end: u64,
    /// Bytes of the file from `chunk_start`.
    chunk: Bytes,
    chunk_start: u64,
    failed: bool,
}

impl SegmentBatches<'_> {
    /// Makes `[self.position, self.position + length)` available in the chunk (reading at
    /// least a chunk's worth); `false` if the file ends first.
    fn fill(&mut self, length: usize) -> Result<bool, LogError> {
        let chunk_end = self.chunk_start + self.chunk.len() as u64;
        if self.position >= self.chunk_start && self.position + length as u64 <= chunk_end {
            return Ok(true);
        }
        let want = length.max(BATCH_READ_CHUNK_BYTES);
        self.chunk = self.segment.read_bytes(self.position, want)?;
        self.chunk_start = self.position;
        Ok(self.chunk.len() >= length)
    }

    fn next_batch(&mut self) -> Result<(u64, Batch), LogError> {
        let corrupt = |what: &str, position: u64| {
            LogError::corrupt(format!(
                "{}: {what} at position {position}",
                self.segment.log_path.display()
            ))
        };
        if !self.fill(BATCH_HEADER_BYTES)? {
            return Err(corrupt("torn batch header", self.position));
        }
        let from = (self.position - self.chunk_start) as usize;
        let size = BatchHeader::parse(&self.chunk[from..])?.check()?;
        if self.position + size as u64 > self.end {
            return Err(corrupt("batch overruns the segment", self.position));
        }
        if !self.fill(size)? {
            return Err(corrupt("torn batch", self.position));
        }
        let from = (self.position - self.chunk_start) as usize;
        let batch = Batch::new_stored(self.chunk.slice(from..from + size), usize::MAX)?;
        let position = self.position;
        self.position += size as u64;
        Ok((position, batch))
    }
}

impl Iterator for SegmentBatches<'_> {
    type Item = Result<(u64, Batch), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.end {
            return None;
        }
        let next = self.next_batch();
        self.failed = next.is_err();
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::testing::{batch, batch_with};
    use kafka_protocol::records::Compression;

    /// What [`Segment::read_slice`] gives, read into memory.
    fn read(
        segment: &Segment,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
        min_one_batch: bool,
    ) -> Result<Option<Bytes>, LogError> {
        match segment.read_slice(offset, max_bytes, max_offset_exclusive, min_one_batch)? {
            Some(slice) => Ok(Some(slice.read()?)),
            None => Ok(None),
        }
    }

    const INDEX_BYTES: u32 = 10 * 1024 * 1024;

    fn append_one(segment: &Segment, bytes: Bytes, now_ms: i64, interval: u32) -> AppendBatch {
        let batch = Batch::new(bytes, usize::MAX).expect("valid");
        let append = AppendBatch::unchanged(&batch);
        segment
            .append(std::slice::from_ref(&append), interval, now_ms)
            .expect("append");
        append
    }

    /// A segment at base 0 with `batches` batches of 3 records (offsets 0..3*batches).
    fn filled(dir: &Path, batches: i64, interval: u32) -> (Segment, Vec<Bytes>) {
        let segment = Segment::create(dir, 0, INDEX_BYTES).expect("create");
        let mut stored = Vec::new();
        for i in 0..batches {
            let bytes = batch_with(
                i * 3,
                &[i * 10, i * 10 + 5, i * 10 + 1],
                100,
                Compression::None,
            );
            append_one(&segment, bytes.clone(), 1, interval);
            stored.push(bytes);
        }
        (segment, stored)
    }

    #[test]
    fn file_names_are_zero_padded() {
        assert_eq!(file_stem(42), "00000000000000000042");
        assert_eq!(
            parse_base_offset("00000000000000000042.log", LOG_FILE_SUFFIX),
            Some(42)
        );
        assert_eq!(parse_base_offset("42.log", LOG_FILE_SUFFIX), None);
        assert_eq!(
            parse_base_offset("0000000000000000004x.log", LOG_FILE_SUFFIX),
            None
        );
    }

    #[test]
    fn append_then_read_and_find() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (segment, stored) = filled(dir.path(), 20, 500);
        assert_eq!(segment.next_offset(), 60);
        assert!(!segment.offset_index_entries().is_empty());
        let all: Vec<u8> = stored.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(segment.size_bytes(), all.len() as u64);
        assert_eq!(
            &segment.read_bytes(0, all.len()).expect("read")[..],
            &all[..]
        );
        for offset in 0..60 {
            let location = segment.find_batch(offset).expect("find").expect("found");
            assert_eq!(location.base_offset, offset / 3 * 3);
            let batch = segment.read_batch(&location).expect("batch");
            assert_eq!(batch.bytes(), &stored[(offset / 3) as usize]);
        }
        assert_eq!(segment.find_batch(60).expect("find"), None);
        assert_eq!(segment.max_timestamp(), Some((195, 59)));
        assert_eq!(
            segment.max_timestamp_record(usize::MAX).expect("max"),
            Some((195, 58))
        );
    }

    #[test]
    fn read_respects_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (segment, stored) = filled(dir.path(), 5, 500);
        let size = stored[0].len();
        // Inside a batch: the whole batch.
        let got = read(&segment, 4, 10_000, i64::MAX, false)
            .expect("read")
            .expect("some");
        assert_eq!(
            &got[..],
            &[
                &stored[1][..],
                &stored[2][..],
                &stored[3][..],
                &stored[4][..]
            ]
            .concat()[..]
        );
        // max_bytes cuts at whole batches.
        let got = read(&segment, 0, size * 2 + 10, i64::MAX, false)
            .expect("read")
            .expect("some");
        assert_eq!(got.len(), size * 2);
        // Too small without min_one_batch: nothing; with it: the first batch.
        let got = read(&segment, 0, 10, i64::MAX, false)
            .expect("read")
            .expect("some");
        assert!(got.is_empty());
        let got = read(&segment, 0, 10, i64::MAX, true)
            .expect("read")
            .expect("some");
        assert_eq!(&got[..], &stored[0][..]);
        // max_offset_exclusive: batches whose last offset reaches it are left out.
        let got = read(&segment, 0, 10_000, 6, false)
            .expect("read")
            .expect("some");
        assert_eq!(got.len(), size * 2);
        let got = read(&segment, 0, 10_000, 5, false)
            .expect("read")
            .expect("some");
        assert_eq!(got.len(), size);
        // Past the end.
        assert_eq!(
            read(&segment, 15, 10_000, i64::MAX, true).expect("read"),
            None
        );
    }

    /// Bytes of disk the segment's `.log` holds past its size.
    fn reserved(segment: &Segment) -> u64 {
        reserved_past_end(&fs::metadata(segment.log_path()).expect("metadata"))
    }

    fn all_bytes(segment: &Segment) -> Bytes {
        read(segment, 0, usize::MAX, i64::MAX, true)
            .expect("read")
            .unwrap_or_default()
    }

    #[test]
    fn appends_reserve_blocks_ahead_which_go_back_when_the_segment_is_inactive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (segment, stored) = filled(dir.path(), 20, 300);
        let size = segment.size_bytes();
        assert!(lock(&segment.writer).preallocate, "fallocate refused here");
        assert_eq!(fs::metadata(segment.log_path()).expect("meta").len(), size);
        assert!(reserved(&segment) > RESERVED_SLACK_BYTES);

        let modified_ms = 1_600_000_000_000;
        segment.set_modified_ms(modified_ms).expect("mtime");
        segment.on_become_inactive().expect("inactive");
        assert!(reserved(&segment) <= RESERVED_SLACK_BYTES);
        assert_eq!(fs::metadata(segment.log_path()).expect("meta").len(), size);
        assert_eq!(segment.modified_ms().expect("mtime"), modified_ms);
        assert_eq!(all_bytes(&segment), stored.concat());
    }

    #[test]
    fn a_reservation_left_by_a_crash_goes_back_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let modified_ms = 1_600_000_000_000;
        let stored = {
            let (segment, stored) = filled(dir.path(), 20, 300);
            assert!(reserved(&segment) > RESERVED_SLACK_BYTES);
            segment.set_modified_ms(modified_ms).expect("mtime");
            // Dropped without on_become_inactive, as by a crash.
            stored
        };
        let opened = Segment::open(dir.path(), 0, INDEX_BYTES, 300, true).expect("open");
        assert_eq!(opened.truncated_bytes, 0);
        assert!(reserved(&opened.segment) <= RESERVED_SLACK_BYTES);
        assert_eq!(opened.segment.modified_ms().expect("mtime"), modified_ms);
        assert_eq!(all_bytes(&opened.segment), stored.concat());
        // Appends reserve again.
        append_one(&opened.segment, batch(60, 2, 1000), 5, 300);
        assert!(reserved(&opened.segment) > RESERVED_SLACK_BYTES);
    }

    #[test]
    fn truncation_gives_back_the_reservation_and_appends_take_a_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (segment, stored) = filled(dir.path(), 20, 300);
        assert_eq!(segment.truncate_to(30).expect("truncate"), 30);
        let kept = stored[..10].concat();
        assert!(reserved(&segment) <= RESERVED_SLACK_BYTES);
        assert_eq!(lock(&segment.writer).preallocated_to, 0);
        let appended = append_one(&segment, batch(30, 2, 1000), 5, 300);
        assert!(reserved(&segment) > RESERVED_SLACK_BYTES);
        assert_eq!(
            all_bytes(&segment),
            [kept, appended.to_bytes().to_vec()].concat()
        );
    }

    #[test]
    fn reopen_clean_uses_indexes_and_recover_rebuilds_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (entries, time_entries) = {
            let (segment, _) = filled(dir.path(), 50, 300);
            segment.on_become_inactive().expect("inactive");
            (segment.offset_index_entries(), segment.time_index_entries())
        };
        let opened = Segment::open(dir.path(), 0, INDEX_BYTES, 300, false).expect("open");
        assert!(!opened.recovered);
        assert_eq!(opened.segment.next_offset(), 150);
        assert_eq!(opened.segment.offset_index_entries(), entries);
        assert_eq!(opened.segment.max_timestamp(), Some((495, 149)));
        assert_eq!(opened.segment.time_index_entries(), time_entries);
        drop(opened);

        let opened = Segment::open(dir.path(), 0, INDEX_BYTES, 300, true).expect("open");
        assert!(opened.recovered);
        assert_eq!(opened.truncated_bytes, 0);
        assert_eq!(opened.segment.next_offset(), 150);
        assert_eq!(opened.segment.max_timestamp(), Some((495, 149)));
        assert!(!opened.segment.offset_index_entries().is_empty());
        for offset in [0, 1, 77, 149] {
            let location = opened
                .segment
                .find_batch(offset)
                .expect("find")
                .expect("some");
            assert_eq!(location.base_offset, offset / 3 * 3);
        }
    }

    #[test]
    fn deleted_index_files_are_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entries = {
            let (segment, _) = filled(dir.path(), 50, 300);
            segment.offset_index_entries()
        };
        fs::remove_file(dir.path().join("00000000000000000000.index")).expect("rm");
        fs::remove_file(dir.path().join("00000000000000000000.timeindex")).expect("rm");
        let opened = Segment::open(dir.path(), 0, INDEX_BYTES, 300, false).expect("open");
        assert!(opened.recovered);
        assert_eq!(opened.segment.next_offset(), 150);
        assert!(!opened.segment.offset_index_entries().is_empty());
        // Rebuilt with the same spacing rule as appends: identical entries.
        assert_eq!(opened.segment.offset_index_entries(), entries);
        assert!(dir.path().join("00000000000000000000.index").exists());
        assert_eq!(opened.segment.max_timestamp(), Some((495, 149)));
        for offset in 0..150 {
            let location = opened
                .segment
                .find_batch(offset)
                .expect("find")
                .expect("some");
            assert_eq!(location.base_offset, offset / 3 * 3);
        }
    }

    #[test]
    fn recovery_cuts_a_zero_filled_tail() {
        // After a power loss, the file's size can cover reserved blocks the data never
        // reached: they read as zeros.
        let dir = tempfile::tempdir().expect("tempdir");
        let (size, stored) = {
            let (segment, stored) = filled(dir.path(), 4, 100);
            let size = segment.size_bytes();
            OpenOptions::new()
                .write(true)
                .open(segment.log_path())
                .expect("open")
                .set_len(size + 70_000)
                .expect("extend");
            (size, stored)
        };
        let opened = Segment::open(dir.path(), 0, INDEX_BYTES, 300, true).expect("open");
        assert_eq!(opened.truncated_bytes, 70_000);
        assert_eq!(opened.segment.size_bytes(), size);
        assert_eq!(opened.segment.next_offset(), 12);
        assert_eq!(all_bytes(&opened.segment), stored.concat());
    }

    #[test]
    fn recovery_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = {
            let (segment, stored) = filled(dir.path(), 4, 100);
            let size = segment.size_bytes();
            // A torn write: half a batch at the end.
            let mut file = OpenOptions::new()
                .append(true)
                .open(dir.path().join("00000000000000000000.log"))
                .expect("open");
            file.write_all(&stored[0][..40]).expect("write");
            size
        };
        let opened = Segment::open(dir.path(), 0, INDEX_BYTES, 300, true).expect("open");
        assert_eq!(opened.truncated_bytes, 40);
        assert_eq!(opened.segment.size_bytes(), size);
        assert_eq!(opened.segment.next_offset(), 12);
        assert_eq!(
            fs::metadata(dir.path().join("00000000000000000000.log"))
                .expect("meta")
                .len(),
            size
        );
    }

    #[test]
    fn recovery_cuts_a_corrupt_last_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let last_position = {
            let (segment, stored) = filled(dir.path(), 4, 100);
            segment.size_bytes() - stored[3].len() as u64
        };
        // Garbage in the middle of the last batch (header intact, CRC now wrong).
        let file = OpenOptions::new()
            .write(true)
            .open(dir.path().join("00000000000000000000.log"))
            .expect("open");
        file.write_all_at(b"garbage!", last_position + 100)
            .expect("write");
        drop(file);
        // A clean open does not CRC-check, a recovering one does.
        let opened = Segment::open(dir.path(), 0, INDEX_BYTES, 300, true).expect("open");
        assert!(opened.truncated_bytes > 0);
        assert_eq!(opened.segment.size_bytes(), last_position);
        assert_eq!(opened.segment.next_offset(), 9);
        assert_eq!(opened.segment.max_timestamp(), Some((25, 8)));
    }

    #[test]
    fn recovery_checks_large_batches_in_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segment = Segment::create(dir.path(), 0, INDEX_BYTES).expect("create");
        let big = batch_with(0, &[1, 2], RECOVERY_WINDOW_BYTES, Compression::None);
        assert!(big.len() > RECOVERY_WINDOW_BYTES);
        append_one(&segment, big.clone(), 1, 4096);
        append_one(&segment, batch(2, 1, 3), 1, 4096);
        drop(segment);
        let opened = Segment::open(dir.path(), 0, INDEX_BYTES, 300, true).expect("open");
        assert_eq!(opened.truncated_bytes, 0);
        assert_eq!(opened.segment.next_offset(), 3);
        drop(opened);
        // Corrupt the big batch: recovery cuts it and everything after.
        let file = OpenOptions::new()
            .write(true)
            .open(dir.path().join("00000000000000000000.log"))
            .expect("open");
        // The value is padded with b'x'; write something else.
        file.write_all_at(b"\0", (big.len() - 10) as u64)
            .expect("write");
        drop(file);
        let opened = Segment::open(dir.path(), 0, INDEX_BYTES, 300, true).expect("open");
        assert_eq!(opened.segment.size_bytes(), 0);
        assert_eq!(opened.segment.next_offset(), 0);
    }

    #[test]
    fn truncate_drops_whole_batches_and_index_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (segment, stored) = filled(dir.path(), 30, 200);
        let before = segment.offset_index_entries().len();
        // Offset 31 is inside the batch 30..33: the batch goes too.
        assert_eq!(segment.truncate_to(31).expect("truncate"), 30);
        assert_eq!(segment.next_offset(), 30);
        let kept: usize = stored[..10].iter().map(Bytes::len).sum();
        assert_eq!(segment.size_bytes(), kept as u64);
        assert!(segment.offset_index_entries().len() < before);
        assert!(segment
            .offset_index_entries()
            .iter()
            .all(|entry| entry.offset < 30));
        assert_eq!(segment.max_timestamp(), Some((95, 29)));
        // Appends continue from there.
        append_one(&segment, batch(30, 2, 1000), 5, 200);
        assert_eq!(segment.next_offset(), 32);
        assert_eq!(segment.max_timestamp(), Some((1000, 31)));
        assert_eq!(segment.truncate_to(0).expect("truncate"), 0);
        assert!(segment.is_empty());
        assert_eq!(segment.max_timestamp(), None);
    }

    #[test]
    fn offset_by_timestamp_decodes_compressed_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segment = Segment::create(dir.path(), 0, INDEX_BYTES).expect("create");
        let codecs = [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        for (i, codec) in codecs.iter().enumerate() {
            let base = i as i64 * 4;
            let t = i as i64 * 100;
            // Out of order inside the batch: the first record >= target is not the max.
            append_one(
                &segment,
                batch_with(base, &[t + 10, t + 50, t + 30, t + 60], 200, *codec),
                1,
                100,
            );
        }
        assert_eq!(
            segment
                .find_offset_by_timestamp(0, 0, usize::MAX)
                .expect("find"),
            Some((0, 10))
        );
        assert_eq!(
            segment
                .find_offset_by_timestamp(120, 0, usize::MAX)
                .expect("find"),
            Some((5, 150))
        );
        assert_eq!(
            segment
                .find_offset_by_timestamp(225, 0, usize::MAX)
                .expect("find"),
            Some((9, 250))
        );
        assert_eq!(
            segment
                .find_offset_by_timestamp(355, 0, usize::MAX)
                .expect("find"),
            Some((15, 360))
        );
        assert_eq!(
            segment
                .find_offset_by_timestamp(361, 0, usize::MAX)
                .expect("find"),
            None
        );
        // Starting offset excludes earlier records.
        assert_eq!(
            segment
                .find_offset_by_timestamp(0, 6, usize::MAX)
                .expect("find"),
            Some((6, 130))
        );
    }
}
