//! A zero-copy view of a v2 (magic 2) record batch, its validation, and the few header rewrites
//! the broker makes.
//!
//! # Format (Kafka's `DefaultRecordBatch`, all integers big-endian)
//!
//! ```text
//! byte  0  baseOffset            i64   first offset of the batch
//! byte  8  batchLength           i32   bytes that follow this field (total size - 12)
//! byte 12  partitionLeaderEpoch  i32
//! byte 16  magic                 i8    2
//! byte 17  crc                   u32   CRC-32C of bytes 21..end
//! byte 21  attributes            i16   bits 0-2 compression, 3 timestamp type (1 = LogAppendTime),
//!                                      4 transactional, 5 control, 6 delete horizon
//! byte 23  lastOffsetDelta       i32   last offset - base offset
//! byte 27  baseTimestamp         i64
//! byte 35  maxTimestamp          i64
//! byte 43  producerId            i64
//! byte 51  producerEpoch         i16
//! byte 53  baseSequence          i32
//! byte 57  recordsCount          i32
//! byte 61  records (possibly compressed)
//! ```
//!
//! # Two shapes of batch
//! - *Produced* batches (what a producer sends; checked by [`validate`]): `recordsCount >= 1`,
//!   `lastOffsetDelta == recordsCount - 1`, and record offset deltas are exactly
//!   `0..recordsCount`.
//! - *Stored* batches (checked by [`validate_stored`]) may also have been rewritten by the log
//!   cleaner, which keeps the batch's base offset and `lastOffsetDelta` but drops records
//!   (Kafka's `MemoryRecords.filterTo`): offset deltas then only strictly ascend inside
//!   `0..=lastOffsetDelta`, and a batch may hold no record at all (a 61-byte header the cleaner
//!   keeps for its last offset). Everything that reads the log (recovery, follower appends,
//!   reads, timestamp lookups) accepts stored batches; only the leader append insists on the
//!   produced shape.
//!
//! # Invariants
//! - A [`Batch`] has passed [`validate`] or [`validate_stored`]: its length matches its bytes,
//!   magic is 2, the CRC matches, and (uncompressed) the records fill the batch exactly.
//! - The CRC does not cover bytes 0..21, so rewriting the base offset or the partition leader
//!   epoch keeps a batch valid; any other rewrite recomputes the CRC.
//! - Nothing here allocates from a length read out of a buffer: every length is checked against
//!   the bytes actually present first.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::Compression;

use super::compression;
use super::LogError;

/// Position of `baseOffset`.
pub const BASE_OFFSET_POSITION: usize = 0;
/// Position of `batchLength`.
pub const BATCH_LENGTH_POSITION: usize = 8;
/// Position of `partitionLeaderEpoch`.
pub const PARTITION_LEADER_EPOCH_POSITION: usize = 12;
/// Position of `magic`.
pub const MAGIC_POSITION: usize = 16;
/// Position of `crc`.
pub const CRC_POSITION: usize = 17;
/// Position of `attributes`; the CRC covers from here to the end of the batch.
pub const ATTRIBUTES_POSITION: usize = 21;
/// Position of `lastOffsetDelta`.
pub const LAST_OFFSET_DELTA_POSITION: usize = 23;
/// Position of `baseTimestamp`.
pub const BASE_TIMESTAMP_POSITION: usize = 27;
/// Position of `maxTimestamp`.
pub const MAX_TIMESTAMP_POSITION: usize = 35;
/// Position of `producerId`.
pub const PRODUCER_ID_POSITION: usize = 43;
/// Position of `producerEpoch`.
pub const PRODUCER_EPOCH_POSITION: usize = 51;
/// Position of `baseSequence`.
pub const BASE_SEQUENCE_POSITION: usize = 53;
/// Position of `recordsCount`.
pub const RECORDS_COUNT_POSITION: usize = 57;
/// Size of the batch header; records start here.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes not counted by `batchLength` (base offset and the length itself).
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The only supported record batch format.
pub const MAGIC_V2: i8 = 2;
/// The smallest possible v2 record: length, attributes, timestamp delta, offset delta, key
/// length, value length and header count, one byte each.
pub const RECORD_BYTES_MIN: usize = 7;
/// Attribute bits holding the compression codec.
pub const COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit set when timestamps are LogAppendTime.
pub const TIMESTAMP_TYPE_MASK: i16 = 0x08;
/// Attribute bit of transactional batches.
pub const TRANSACTIONAL_MASK: i16 = 0x10;
/// Attribute bit of control batches (transaction markers).
pub const CONTROL_MASK: i16 = 0x20;
/// Attribute bit saying `baseTimestamp` holds the batch's delete horizon (KIP-534): the time
/// after which the log cleaner may drop its tombstones.
pub const DELETE_HORIZON_MASK: i16 = 0x40;
/// Kafka's "no timestamp".
pub const NO_TIMESTAMP: i64 = -1;

/// What a batch's timestamps mean (attribute bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the broker when the batch was appended (the batch's max timestamp).
    LogAppendTime,
}

fn get_i16(bytes: &[u8], at: usize) -> i16 {
    let mut raw = [0u8; 2];
    raw.copy_from_slice(&bytes[at..at + 2]);
    i16::from_be_bytes(raw)
}

fn get_i32(bytes: &[u8], at: usize) -> i32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    i32::from_be_bytes(raw)
}

fn get_i64(bytes: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(raw)
}

/// A read-only view of the 61-byte header at the start of `bytes` (which may or may not hold
/// the rest of the batch). Getters read straight from the buffer.
#[derive(Debug, Clone, Copy)]
pub struct BatchHeader<'a> {
    /// At least [`BATCH_HEADER_BYTES`] long.
    bytes: &'a [u8],
}

impl<'a> BatchHeader<'a> {
    /// Views the header at the start of `bytes`; only checks that 61 bytes are present.
    pub fn parse(bytes: &'a [u8]) -> Result<BatchHeader<'a>, LogError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(LogError::corrupt(format!(
                "truncated batch header: {} bytes, need {BATCH_HEADER_BYTES}",
                bytes.len()
            )));
        }
        Ok(BatchHeader { bytes })
    }

    /// `baseOffset`.
    pub fn base_offset(&self) -> i64 {
        get_i64(self.bytes, BASE_OFFSET_POSITION)
    }

    /// `batchLength` as stored (unchecked).
    pub fn batch_length(&self) -> i32 {
        get_i32(self.bytes, BATCH_LENGTH_POSITION)
    }

    /// `partitionLeaderEpoch`.
    pub fn partition_leader_epoch(&self) -> i32 {
        get_i32(self.bytes, PARTITION_LEADER_EPOCH_POSITION)
    }

    /// `magic`.
    pub fn magic(&self) -> i8 {
        i8::from_be_bytes([self.bytes[MAGIC_POSITION]])
    }

    /// `crc` as stored.
    pub fn crc(&self) -> u32 {
        get_i32(self.bytes, CRC_POSITION) as u32
    }

    /// `attributes`.
    pub fn attributes(&self) -> i16 {
        get_i16(self.bytes, ATTRIBUTES_POSITION)
    }

    /// `lastOffsetDelta`.
    pub fn last_offset_delta(&self) -> i32 {
        get_i32(self.bytes, LAST_OFFSET_DELTA_POSITION)
    }

    /// `baseTimestamp`.
    pub fn base_timestamp_ms(&self) -> i64 {
        get_i64(self.bytes, BASE_TIMESTAMP_POSITION)
    }

    /// `maxTimestamp`.
    pub fn max_timestamp_ms(&self) -> i64 {
        get_i64(self.bytes, MAX_TIMESTAMP_POSITION)
    }

    /// `producerId`.
    pub fn producer_id(&self) -> i64 {
        get_i64(self.bytes, PRODUCER_ID_POSITION)
    }

    /// `producerEpoch`.
    pub fn producer_epoch(&self) -> i16 {
        get_i16(self.bytes, PRODUCER_EPOCH_POSITION)
    }

    /// `baseSequence`.
    pub fn base_sequence(&self) -> i32 {
        get_i32(self.bytes, BASE_SEQUENCE_POSITION)
    }

    /// `recordsCount`.
    pub fn records_count(&self) -> i32 {
        get_i32(self.bytes, RECORDS_COUNT_POSITION)
    }

    /// Size of the whole batch in bytes (`12 + batchLength`; 12 when the length is negative,
    /// which [`BatchHeader::check`] rejects).
    pub fn size_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + usize::try_from(self.batch_length()).unwrap_or(0)
    }

    /// `baseOffset + lastOffsetDelta` (saturating; [`BatchHeader::check`] rejects overflow).
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .saturating_add(i64::from(self.last_offset_delta()))
    }

    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    /// The timestamp type attribute.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & TIMESTAMP_TYPE_MASK != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// The compression codec attribute.
    pub fn compression(&self) -> Result<Compression, LogError> {
        match self.attributes() & COMPRESSION_MASK {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(LogError::corrupt(format!(
                "unknown compression codec {other}"
            ))),
        }
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_MASK != 0
    }

    /// Whether the batch holds control records (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_MASK != 0
    }

    /// The delete horizon the log cleaner stored in `baseTimestamp` (KIP-534), if it set one.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes() & DELETE_HORIZON_MASK != 0).then(|| self.base_timestamp_ms())
    }

    /// Header-level checks that need no record bytes and hold for every stored batch (see the
    /// module doc): length, magic, `0 <= recordsCount <= lastOffsetDelta + 1`, offsets that do
    /// not overflow, a known compression codec. Returns the batch size in bytes.
    pub fn check(&self) -> Result<usize, LogError> {
        let batch_length = self.batch_length();
        if batch_length < (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
            return Err(LogError::corrupt(format!(
                "batch length {batch_length} is shorter than the {} header bytes after it",
                BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES
            )));
        }
        if self.magic() != MAGIC_V2 {
            return Err(LogError::UnsupportedMagic(self.magic()));
        }
        let count = self.records_count();
        let delta = self.last_offset_delta();
        if count < 0 || delta < 0 || i64::from(count) > i64::from(delta) + 1 {
            return Err(LogError::corrupt(format!(
                "inconsistent batch: lastOffsetDelta {delta} but {count} records"
            )));
        }
        if self.base_offset() < 0 || self.base_offset().checked_add(i64::from(delta)).is_none() {
            return Err(LogError::corrupt(format!(
                "invalid base offset {}",
                self.base_offset()
            )));
        }
        self.compression()?;
        Ok(self.size_bytes())
    }

    /// The produced shape on top of [`BatchHeader::check`]: at least one record and
    /// `lastOffsetDelta == recordsCount - 1` (Kafka's "inconsistent batch offset range and
    /// record count").
    pub fn check_produced(&self) -> Result<(), LogError> {
        let count = self.records_count();
        if count < 1 {
            return Err(LogError::corrupt(format!(
                "record count {count} is not positive"
            )));
        }
        let delta = self.last_offset_delta();
        if i64::from(delta) != i64::from(count) - 1 {
            return Err(LogError::corrupt(format!(
                "inconsistent batch: lastOffsetDelta {delta} but {count} records"
            )));
        }
        Ok(())
    }
}

/// CRC-32C of a whole batch as Kafka computes it (from the attributes field to the end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_POSITION..])
}

/// Reads the size of the batch at the start of `buf` and checks it against the bytes present.
/// Order of checks follows Kafka: length sanity, truncation, then magic.
pub fn frame_size(buf: &[u8]) -> Result<usize, LogError> {
    if buf.len() < LOG_OVERHEAD_BYTES {
        return Err(LogError::corrupt(format!(
            "truncated batch: {} bytes left, less than the {LOG_OVERHEAD_BYTES}-byte log overhead",
            buf.len()
        )));
    }
    let batch_length = get_i32(buf, BATCH_LENGTH_POSITION);
    let Ok(length) = usize::try_from(batch_length) else {
        return Err(LogError::corrupt(format!(
            "negative batch length {batch_length}"
        )));
    };
    let size = LOG_OVERHEAD_BYTES + length;
    if size > buf.len() {
        return Err(LogError::corrupt(format!(
            "truncated batch: length says {size} bytes, {} present",
            buf.len()
        )));
    }
    if size > MAGIC_POSITION {
        let magic = i8::from_be_bytes([buf[MAGIC_POSITION]]);
        if magic != MAGIC_V2 {
            return Err(LogError::UnsupportedMagic(magic));
        }
    }
    if size < BATCH_HEADER_BYTES {
        return Err(LogError::corrupt(format!(
            "batch of {size} bytes is shorter than the {BATCH_HEADER_BYTES}-byte header"
        )));
    }
    Ok(size)
}

/// Bytes of the whole batches at the start of `records` (stops at the first incomplete or
/// unreadable one): what is left of a read that a truncation cut short.
pub fn whole_batches_len(records: &[u8]) -> usize {
    let mut end = 0;
    while let Ok(size) = frame_size(&records[end..]) {
        end += size;
    }
    end
}

/// Validates `batch` as a *produced* batch (see the module doc), which must be exactly one
/// whole batch: length consistent with the buffer, magic 2, size at most `max_message_bytes`,
/// CRC-32C, record count consistent with `lastOffsetDelta`, and for uncompressed batches the
/// records themselves (see [`check_records`]). Compressed record data is not decompressed here
/// (see [`check_decompressed_size`] for the produce path's bound).
pub fn validate(batch: &[u8], max_message_bytes: usize) -> Result<BatchHeader<'_>, LogError> {
    validate_shape(batch, max_message_bytes, Check::Produced)
}

/// Validates `batch` as a *stored* batch (see the module doc): the checks of [`validate`],
/// except that records may be missing (a cleaned batch), so offset deltas only have to ascend
/// inside `0..=lastOffsetDelta` and the record count may be zero.
pub fn validate_stored(
    batch: &[u8],
    max_message_bytes: usize,
) -> Result<BatchHeader<'_>, LogError> {
    validate_shape(batch, max_message_bytes, Check::Stored)
}

/// Validates `batch` as a follower receives it from its leader: the header checks and the CRC
/// of [`validate_stored`], without walking the records. The CRC covers every record byte, so a
/// match means these are the bytes the leader stored, which it walked when it took them (Kafka's
/// follower append checks no more).
pub fn validate_replicated(
    batch: &[u8],
    max_message_bytes: usize,
) -> Result<BatchHeader<'_>, LogError> {
    validate_shape(batch, max_message_bytes, Check::Replicated)
}

/// How much of a batch to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// A producer's batch: the produced shape, every record walked.
    Produced,
    /// A stored batch (possibly cleaned): every record walked.
    Stored,
    /// A leader's stored batch on its way to a follower: header and CRC.
    Replicated,
}

fn validate_shape(
    batch: &[u8],
    max_message_bytes: usize,
    check: Check,
) -> Result<BatchHeader<'_>, LogError> {
    let produced = check == Check::Produced;
    let size = frame_size(batch)?;
    if size != batch.len() {
        return Err(LogError::corrupt(format!(
            "batch length says {size} bytes, buffer holds {}",
            batch.len()
        )));
    }
    if size > max_message_bytes {
        return Err(LogError::BatchTooLarge {
            size,
            max: max_message_bytes,
        });
    }
    let header = BatchHeader::parse(batch)?;
    header.check()?;
    if produced {
        header.check_produced()?;
    }
    let crc = compute_crc(batch);
    if crc != header.crc() {
        return Err(LogError::corrupt(format!(
            "CRC mismatch: stored {:#010x}, computed {crc:#010x}",
            header.crc()
        )));
    }
    if check == Check::Replicated {
        header.compression()?;
        return Ok(header);
    }
    if header.compression()? == Compression::None {
        let deltas = if produced {
            OffsetDeltas::Dense
        } else {
            OffsetDeltas::Ascending {
                last_offset_delta: header.last_offset_delta(),
            }
        };
        walk_raw_records(
            &batch[BATCH_HEADER_BYTES..],
            header.records_count(),
            deltas,
            |_| {},
        )?;
    }
    Ok(header)
}

/// How far a compressed batch's records expand, counted (not kept) and refused beyond
/// `max_bytes` ([`compression::decompressed_max_bytes`]) with INVALID_RECORD: the leader
/// checks every produced batch, so a bomb is refused on produce rather than met by a read path
/// later. Uncompressed batches pass at no cost.
pub fn check_decompressed_size(batch: &Batch, max_bytes: usize) -> Result<(), LogError> {
    let header = batch.header();
    match header.compression()? {
        Compression::None => Ok(()),
        codec => {
            compression::decompressed_len(codec, &batch.bytes()[BATCH_HEADER_BYTES..], max_bytes)
                .map(|_| ())
        }
    }
}

/// Reads a zigzag varint of at most `bytes_max` bytes at `*position`.
fn read_zigzag(buf: &[u8], position: &mut usize, bytes_max: u32) -> Result<i64, LogError> {
    let mut value: u64 = 0;
    for index in 0..bytes_max {
        let Some(&byte) = buf.get(*position) else {
            return Err(LogError::corrupt("record truncated inside a varint"));
        };
        *position += 1;
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(LogError::corrupt("varint too long"))
}

fn read_varint(buf: &[u8], position: &mut usize) -> Result<i32, LogError> {
    let value = read_zigzag(buf, position, 5)?;
    i32::try_from(value).map_err(|_| LogError::corrupt("varint out of i32 range"))
}

fn read_varlong(buf: &[u8], position: &mut usize) -> Result<i64, LogError> {
    read_zigzag(buf, position, 10)
}

/// Reads a length-prefixed field (`-1` = null when `nullable`); returns its bytes.
fn read_field<'a>(
    buf: &'a [u8],
    position: &mut usize,
    nullable: bool,
    what: &str,
) -> Result<Option<&'a [u8]>, LogError> {
    let length = read_varint(buf, position)?;
    if length == -1 && nullable {
        return Ok(None);
    }
    let Ok(length) = usize::try_from(length) else {
        return Err(LogError::corrupt(format!(
            "negative {what} length {length}"
        )));
    };
    if length > buf.len() - *position {
        return Err(LogError::corrupt(format!(
            "{what} of {length} bytes overruns its record"
        )));
    }
    let field = &buf[*position..*position + length];
    *position += length;
    Ok(Some(field))
}

/// One record's place in its batch, as [`walk_records`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPosition {
    /// Offset delta from the batch's base offset.
    pub offset_delta: i32,
    /// Timestamp delta from the batch's base timestamp.
    pub timestamp_delta_ms: i64,
}

/// How the offset deltas of a batch's records must run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetDeltas {
    /// Exactly `0..recordsCount` (a produced batch).
    Dense,
    /// Strictly ascending inside `0..=last_offset_delta` (a stored batch, maybe cleaned).
    Ascending {
        /// The batch's `lastOffsetDelta`.
        last_offset_delta: i32,
    },
}

/// One record of an uncompressed record section, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Offset delta from the batch's base offset.
    pub offset_delta: i32,
    /// Timestamp delta from the batch's base timestamp.
    pub timestamp_delta_ms: i64,
    /// The key; `None` is a null key.
    pub key: Option<&'a [u8]>,
    /// The value; `None` is a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    /// The record after its length prefix: attributes, timestamp delta, then `tail`.
    pub body: &'a [u8],
    /// The record from its offset delta to its end (offset delta, key, value, headers): what a
    /// rewrite with another base timestamp copies unchanged.
    pub tail: &'a [u8],
}

/// Walks uncompressed v2 records (the bytes after the batch header, decompressed if needed):
/// exactly `count` records whose length prefixes, keys, values and headers stay inside their
/// record, whose offset deltas run as `deltas` says, and that fill `records` exactly. Calls
/// `visit` for each. Bounds every count by the bytes present, so hostile counts cannot cause
/// allocations downstream (kafka-protocol's decoder pre-allocates from these counts).
pub fn walk_raw_records<'a>(
    records: &'a [u8],
    count: i32,
    deltas: OffsetDeltas,
    mut visit: impl FnMut(RawRecord<'a>),
) -> Result<(), LogError> {
    let Ok(count) = usize::try_from(count) else {
        return Err(LogError::corrupt(format!("negative record count {count}")));
    };
    if count > records.len() / RECORD_BYTES_MIN {
        return Err(LogError::corrupt(format!(
            "{count} records cannot fit in {} bytes",
            records.len()
        )));
    }
    let mut position = 0usize;
    let mut previous_delta: i64 = -1;
    for index in 0..count {
        let length = read_varint(records, &mut position)?;
        let Ok(length) = usize::try_from(length) else {
            return Err(LogError::corrupt(format!(
                "negative record length {length}"
            )));
        };
        if length > records.len() - position {
            return Err(LogError::corrupt(format!(
                "record {index} of {length} bytes overruns the batch"
            )));
        }
        let record = &records[position..position + length];
        position += length;

        // Attributes (unused in v2).
        let mut cursor = 1usize;
        if record.is_empty() {
            return Err(LogError::corrupt("empty record"));
        }
        let timestamp_delta_ms = read_varlong(record, &mut cursor)?;
        let tail_start = cursor;
        let offset_delta = read_varint(record, &mut cursor)?;
        let delta_ok = match deltas {
            OffsetDeltas::Dense => usize::try_from(offset_delta).ok() == Some(index),
            OffsetDeltas::Ascending { last_offset_delta } => {
                i64::from(offset_delta) > previous_delta && offset_delta <= last_offset_delta
            }
        };
        if !delta_ok {
            return Err(LogError::corrupt(format!(
                "record {index} has offset delta {offset_delta}"
            )));
        }
        previous_delta = i64::from(offset_delta);
        let key = read_field(record, &mut cursor, true, "key")?;
        let value = read_field(record, &mut cursor, true, "value")?;
        let header_count = read_varint(record, &mut cursor)?;
        let Ok(header_count) = usize::try_from(header_count) else {
            return Err(LogError::corrupt(format!(
                "negative header count {header_count}"
            )));
        };
        // Each header takes at least two bytes (key length and value length).
        if header_count > (record.len() - cursor) / 2 {
            return Err(LogError::corrupt(format!(
                "{header_count} headers cannot fit in record {index}"
            )));
        }
        for _ in 0..header_count {
            read_field(record, &mut cursor, false, "header key")?;
            read_field(record, &mut cursor, true, "header value")?;
        }
        if cursor != record.len() {
            return Err(LogError::corrupt(format!(
                "record {index} declares {length} bytes but uses {cursor}"
            )));
        }
        visit(RawRecord {
            offset_delta,
            timestamp_delta_ms,
            key,
            value,
            body: record,
            tail: &record[tail_start..],
        });
    }
    if position != records.len() {
        return Err(LogError::corrupt(format!(
            "{} bytes left after the declared {count} records",
            records.len() - position
        )));
    }
    Ok(())
}

/// [`walk_raw_records`] over a produced batch's records (dense offset deltas).
pub fn walk_records(
    records: &[u8],
    count: i32,
    mut visit: impl FnMut(RecordPosition),
) -> Result<(), LogError> {
    walk_raw_records(records, count, OffsetDeltas::Dense, |record| {
        visit(RecordPosition {
            offset_delta: record.offset_delta,
            timestamp_delta_ms: record.timestamp_delta_ms,
        })
    })
}

/// [`walk_records`] without a visitor.
pub fn check_records(records: &[u8], count: i32) -> Result<(), LogError> {
    walk_records(records, count, |_| {})
}

/// Overwrites `baseOffset` (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    assert!(batch.len() >= BATCH_HEADER_BYTES);
    batch[BASE_OFFSET_POSITION..BASE_OFFSET_POSITION + 8]
        .copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrites `partitionLeaderEpoch` (outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], leader_epoch: i32) {
    assert!(batch.len() >= BATCH_HEADER_BYTES);
    batch[PARTITION_LEADER_EPOCH_POSITION..PARTITION_LEADER_EPOCH_POSITION + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Marks the batch LogAppendTime with `max_timestamp_ms` as its max timestamp (what consumers
/// then see for every record), and recomputes the CRC. Record timestamp deltas are left alone,
/// as Kafka does.
pub fn set_log_append_time(batch: &mut [u8], max_timestamp_ms: i64) {
    assert!(batch.len() >= BATCH_HEADER_BYTES);
    let attributes = get_i16(batch, ATTRIBUTES_POSITION) | TIMESTAMP_TYPE_MASK;
    batch[ATTRIBUTES_POSITION..ATTRIBUTES_POSITION + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_POSITION..MAX_TIMESTAMP_POSITION + 8]
        .copy_from_slice(&max_timestamp_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_POSITION..CRC_POSITION + 4].copy_from_slice(&crc.to_be_bytes());
}

/// One whole batch that passed [`validate`], sharing the caller's buffer.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Exactly the batch; at least [`BATCH_HEADER_BYTES`] long.
    bytes: Bytes,
}

impl Batch {
    /// Validates `bytes` as exactly one produced batch ([`validate`]).
    pub fn new(bytes: Bytes, max_message_bytes: usize) -> Result<Batch, LogError> {
        validate(&bytes, max_message_bytes)?;
        Ok(Batch { bytes })
    }

    /// Validates `bytes` as exactly one stored batch ([`validate_stored`]).
    pub fn new_stored(bytes: Bytes, max_message_bytes: usize) -> Result<Batch, LogError> {
        validate_stored(&bytes, max_message_bytes)?;
        Ok(Batch { bytes })
    }

    /// The header view.
    pub fn header(&self) -> BatchHeader<'_> {
        BatchHeader { bytes: &self.bytes }
    }

    /// The batch's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The batch's bytes, owned.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> usize {
        self.bytes.len()
    }
}

/// Splits back-to-back batches into validated [`Batch`]es without copying (each is a
/// `Bytes::slice` of the input). Stops after the first error.
#[derive(Debug)]
pub struct BatchIter {
    remaining: Bytes,
    max_message_bytes: usize,
    /// Which validation each batch gets.
    check: Check,
    failed: bool,
}

/// Iterates over the produced batches in `records`, validating each against
/// `max_message_bytes`.
pub fn batches(records: Bytes, max_message_bytes: usize) -> BatchIter {
    BatchIter {
        remaining: records,
        max_message_bytes,
        check: Check::Produced,
        failed: false,
    }
}

/// Iterates over stored batches (a read of the log, a follower's fetch), validating each.
pub fn stored_batches(records: Bytes, max_message_bytes: usize) -> BatchIter {
    BatchIter {
        remaining: records,
        max_message_bytes,
        check: Check::Stored,
        failed: false,
    }
}

impl Iterator for BatchIter {
    type Item = Result<Batch, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.remaining.is_empty() {
            return None;
        }
        let size = match frame_size(&self.remaining) {
            Ok(size) => size,
            Err(error) => {
                self.failed = true;
                return Some(Err(error));
            }
        };
        let bytes = self.remaining.split_to(size);
        let checked = validate_shape(&bytes, self.max_message_bytes, self.check).map(|_| ());
        let batch = checked.map(|()| Batch { bytes });
        match batch {
            Ok(batch) => Some(Ok(batch)),
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

/// Validates every produced batch in `records` (at least one) before anything is written.
pub fn validate_all(records: Bytes, max_message_bytes: usize) -> Result<Vec<Batch>, LogError> {
    collect_at_least_one(batches(records, max_message_bytes))
}

/// Validates every stored batch in `records` (at least one): a follower's append of what its
/// leader stored, cleaned batches included.
pub fn validate_all_stored(
    records: Bytes,
    max_message_bytes: usize,
) -> Result<Vec<Batch>, LogError> {
    collect_at_least_one(stored_batches(records, max_message_bytes))
}

/// Validates every batch a follower fetched from its leader (at least one) with
/// [`validate_replicated`]: header and CRC, records not walked.
pub fn validate_all_replicated(
    records: Bytes,
    max_message_bytes: usize,
) -> Result<Vec<Batch>, LogError> {
    collect_at_least_one(BatchIter {
        remaining: records,
        max_message_bytes,
        check: Check::Replicated,
        failed: false,
    })
}

fn collect_at_least_one(iter: BatchIter) -> Result<Vec<Batch>, LogError> {
    let result: Result<Vec<Batch>, LogError> = iter.collect();
    let all = result?;
    if all.is_empty() {
        return Err(LogError::corrupt("no record batch"));
    }
    Ok(all)
}

/// The record section of a batch, decompressed (a slice of the batch when uncompressed), at
/// most `max_bytes` of it ([`compression::decompressed_max_bytes`]); the records are not
/// checked here.
pub fn decompressed_records(batch: &Batch, max_bytes: usize) -> Result<Bytes, LogError> {
    let header = batch.header();
    let compressed = batch.bytes().slice(BATCH_HEADER_BYTES..);
    if header.records_count() == 0 && compressed.is_empty() {
        // An emptied batch (the cleaner keeps its header only).
        return Ok(compressed);
    }
    match header.compression()? {
        Compression::None => Ok(compressed),
        codec => compression::decompress(codec, &compressed, max_bytes),
    }
}

/// Compresses an uncompressed record section with `codec` (Kafka's framings, as
/// kafka-protocol's encoder writes them), appending to `out`.
pub fn compress_records(
    codec: Compression,
    records: &[u8],
    out: &mut BytesMut,
) -> Result<(), LogError> {
    use bytes::BufMut;
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

    let fill = |buffer: &mut BytesMut| {
        buffer.put_slice(records);
        Ok(())
    };
    let result = match codec {
        Compression::None => {
            out.put_slice(records);
            Ok(())
        }
        Compression::Gzip => <Gzip as Compressor<BytesMut>>::compress(out, fill),
        Compression::Snappy => <Snappy as Compressor<BytesMut>>::compress(out, fill),
        Compression::Lz4 => <Lz4 as Compressor<BytesMut>>::compress(out, fill),
        Compression::Zstd => <Zstd as Compressor<BytesMut>>::compress(out, fill),
    };
    result.map_err(|error| {
        LogError::Io(std::io::Error::other(format!(
            "cannot compress records with {codec:?}: {error:#}"
        )))
    })
}

/// Walks every record of a stored batch (decompressing it first if needed, to at most
/// `max_bytes`), checking the records as [`validate_stored`] does. `visit` sees each record
/// borrowed from `records`, the decompressed section this returns through the closure's
/// lifetime.
pub fn for_each_record(
    batch: &Batch,
    max_bytes: usize,
    visit: impl FnMut(RawRecord<'_>),
) -> Result<(), LogError> {
    let header = batch.header();
    let records = decompressed_records(batch, max_bytes)?;
    walk_raw_records(
        &records,
        header.records_count(),
        OffsetDeltas::Ascending {
            last_offset_delta: header.last_offset_delta(),
        },
        visit,
    )
}

/// The indexes (in batch order) of the records with a null key: what a compacted topic refuses
/// (Kafka's "Compacted topic cannot accept message without key"). Control batches carry no
/// user keys and give none.
pub fn keyless_record_indexes(batch: &Batch, max_bytes: usize) -> Result<Vec<usize>, LogError> {
    let mut keyless = Vec::new();
    if batch.header().is_control() {
        return Ok(keyless);
    }
    let mut index = 0usize;
    for_each_record(batch, max_bytes, |record| {
        if record.key.is_none() {
            keyless.push(index);
        }
        index += 1;
    })?;
    Ok(keyless)
}

/// Header fields of a batch being written by the broker itself (the log cleaner's rewrites).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchFields {
    /// `baseOffset`.
    pub base_offset: i64,
    /// `partitionLeaderEpoch`.
    pub partition_leader_epoch: i32,
    /// `attributes`, compression bits included; the CRC is computed here.
    pub attributes: i16,
    /// `lastOffsetDelta`.
    pub last_offset_delta: i32,
    /// `baseTimestamp` (the delete horizon when that attribute bit is set).
    pub base_timestamp_ms: i64,
    /// `maxTimestamp`.
    pub max_timestamp_ms: i64,
    /// `producerId`.
    pub producer_id: i64,
    /// `producerEpoch`.
    pub producer_epoch: i16,
    /// `baseSequence`.
    pub base_sequence: i32,
}

/// Encodes one batch: `fields`, then `records` (uncompressed v2 records, `count` of them)
/// compressed with the codec of `fields.attributes`, then length and CRC-32C. The result
/// passes [`validate_stored`] (checked before it is returned).
pub fn encode_batch(fields: &BatchFields, records: &[u8], count: i32) -> Result<Bytes, LogError> {
    use bytes::BufMut;

    let codec = match fields.attributes & COMPRESSION_MASK {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        other => {
            return Err(LogError::corrupt(format!(
                "unknown compression codec {other}"
            )))
        }
    };
    let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + records.len());
    out.put_i64(fields.base_offset);
    out.put_i32(0); // batchLength, filled below
    out.put_i32(fields.partition_leader_epoch);
    out.put_i8(MAGIC_V2);
    out.put_u32(0); // crc, filled below
    out.put_i16(fields.attributes);
    out.put_i32(fields.last_offset_delta);
    out.put_i64(fields.base_timestamp_ms);
    out.put_i64(fields.max_timestamp_ms);
    out.put_i64(fields.producer_id);
    out.put_i16(fields.producer_epoch);
    out.put_i32(fields.base_sequence);
    out.put_i32(count);
    if count > 0 {
        compress_records(codec, records, &mut out)?;
    }
    let Ok(batch_length) = i32::try_from(out.len() - LOG_OVERHEAD_BYTES) else {
        return Err(LogError::BatchTooLarge {
            size: out.len(),
            max: i32::MAX as usize,
        });
    };
    out[BATCH_LENGTH_POSITION..BATCH_LENGTH_POSITION + 4]
        .copy_from_slice(&batch_length.to_be_bytes());
    let crc = compute_crc(&out);
    out[CRC_POSITION..CRC_POSITION + 4].copy_from_slice(&crc.to_be_bytes());
    let bytes = out.freeze();
    validate_stored(&bytes, usize::MAX)?;
    Ok(bytes)
}

/// Appends one uncompressed v2 record: its length, then `attributes`, `timestamp_delta_ms`, and
/// `tail` (offset delta, key, value, headers) as they were.
pub fn put_record(out: &mut Vec<u8>, attributes: u8, timestamp_delta_ms: i64, tail: &[u8]) {
    let mut head = Vec::with_capacity(11);
    head.push(attributes);
    put_varlong(&mut head, timestamp_delta_ms);
    let length = (head.len() + tail.len()) as i64;
    put_varlong(out, length);
    out.extend_from_slice(&head);
    out.extend_from_slice(tail);
}

/// Appends a zigzag varint (Kafka's varint and varlong share the encoding).
fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// Control record type of an ABORT marker (the key's second field).
pub const CONTROL_TYPE_ABORT: i16 = 0;
/// Control record type of a COMMIT marker.
pub const CONTROL_TYPE_COMMIT: i16 = 1;

/// A transaction marker's fields as stored in a control batch's one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerRecord {
    /// COMMIT (true) or ABORT (false).
    pub commit: bool,
    /// The transaction coordinator's epoch.
    pub coordinator_epoch: i32,
}

/// The control batch of a transaction marker (Kafka's `EndTransactionMarker`): transactional
/// and control attribute bits, no sequence, one uncompressed record whose key is
/// `i16 version (0) | i16 type` and whose value is `i16 version (0) | i32 coordinator epoch`.
/// Base offset 0 (the log assigns it).
pub fn encode_marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: MarkerRecord,
    timestamp_ms: i64,
) -> Result<Bytes, LogError> {
    let kind = if marker.commit {
        CONTROL_TYPE_COMMIT
    } else {
        CONTROL_TYPE_ABORT
    };
    let mut tail = Vec::with_capacity(16);
    put_varlong(&mut tail, 0); // offset delta
    put_varlong(&mut tail, 4);
    tail.extend_from_slice(&0i16.to_be_bytes());
    tail.extend_from_slice(&kind.to_be_bytes());
    put_varlong(&mut tail, 6);
    tail.extend_from_slice(&0i16.to_be_bytes());
    tail.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    put_varlong(&mut tail, 0); // headers
    let mut records = Vec::with_capacity(24);
    put_record(&mut records, 0, 0, &tail);
    encode_batch(
        &BatchFields {
            base_offset: 0,
            partition_leader_epoch: -1,
            attributes: TRANSACTIONAL_MASK | CONTROL_MASK,
            last_offset_delta: 0,
            base_timestamp_ms: timestamp_ms,
            max_timestamp_ms: timestamp_ms,
            producer_id,
            producer_epoch,
            base_sequence: -1,
        },
        &records,
        1,
    )
}

/// The transaction marker a control batch holds; `None` for a batch that is not a control
/// batch, or whose control record is of another type (Kafka ignores unknown control types).
pub fn marker_record(batch: &Batch, max_bytes: usize) -> Result<Option<MarkerRecord>, LogError> {
    if !batch.header().is_control() {
        return Ok(None);
    }
    let mut found: Option<Result<Option<MarkerRecord>, LogError>> = None;
    for_each_record(batch, max_bytes, |record| {
        if found.is_some() {
            return;
        }
        found = Some(parse_marker_record(record.key, record.value));
    })?;
    found.unwrap_or(Ok(None))
}

/// Parses a control record's key and value (see [`encode_marker_batch`]).
fn parse_marker_record(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<Option<MarkerRecord>, LogError> {
    let Some(key) = key.filter(|key| key.len() >= 4) else {
        return Err(LogError::corrupt("control record without a 4-byte key"));
    };
    let kind = i16::from_be_bytes([key[2], key[3]]);
    let commit = match kind {
        CONTROL_TYPE_COMMIT => true,
        CONTROL_TYPE_ABORT => false,
        _ => return Ok(None),
    };
    let Some(value) = value.filter(|value| value.len() >= 6) else {
        return Err(LogError::corrupt(
            "transaction marker without a 6-byte value",
        ));
    };
    Ok(Some(MarkerRecord {
        commit,
        coordinator_epoch: i32::from_be_bytes([value[2], value[3], value[4], value[5]]),
    }))
}

/// Every record of a stored batch, decoded with kafka-protocol's `RecordBatchDecoder` (any
/// compression, decompressed to at most `max_bytes` by [`compression`]). The decompressed
/// records pass the stored-batch checks of [`walk_raw_records`] before the decoder sees them,
/// because the decoder pre-allocates from record and header counts.
pub fn decode_records(
    batch: &Batch,
    max_bytes: usize,
) -> Result<Vec<kafka_protocol::records::Record>, LogError> {
    use kafka_protocol::records::RecordBatchDecoder;

    let header = batch.header();
    let count = header.records_count();
    let deltas = OffsetDeltas::Ascending {
        last_offset_delta: header.last_offset_delta(),
    };
    let mut bytes = batch.bytes().clone();
    let decoded = RecordBatchDecoder::decode_with_custom_compression(
        &mut bytes,
        Some(|compressed: &mut Bytes, codec: Compression| {
            let records = match codec {
                Compression::None => std::mem::take(compressed),
                codec => {
                    let records =
                        compression::decompress(codec, compressed, max_bytes).map_err(|error| {
                            std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string())
                        })?;
                    *compressed = Bytes::new();
                    records
                }
            };
            if let Err(error) = walk_raw_records(&records, count, deltas, |_| {}) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    error.to_string(),
                )
                .into());
            }
            Ok(records)
        }),
    )
    .map_err(|error| LogError::corrupt(format!("cannot decode batch records: {error:#}")))?;
    if decoded.records.len() != count as usize {
        return Err(LogError::corrupt(format!(
            "batch declares {count} records, decoded {}",
            decoded.records.len()
        )));
    }
    Ok(decoded.records)
}

/// Offset and timestamp of every record of a stored batch ([`decode_records`]). With
/// LogAppendTime every record's timestamp is the batch's max timestamp, as Kafka reports it.
pub fn record_timestamps(batch: &Batch, max_bytes: usize) -> Result<Vec<(i64, i64)>, LogError> {
    let header = batch.header();
    let log_append_time = header.timestamp_type() == TimestampType::LogAppendTime;
    let max_timestamp_ms = header.max_timestamp_ms();
    Ok(decode_records(batch, max_bytes)?
        .iter()
        .map(|record| {
            let timestamp_ms = if log_append_time {
                max_timestamp_ms
            } else {
                record.timestamp
            };
            (record.offset, timestamp_ms)
        })
        .collect())
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builders of real batches with kafka-protocol's encoder.

    use bytes::{Bytes, BytesMut};
    use indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// One batch whose records have the given timestamps and `value_bytes`-byte values.
    pub(crate) fn batch_with(
        base_offset: i64,
        timestamps: &[i64],
        value_bytes: usize,
        compression: Compression,
    ) -> Bytes {
        let records: Vec<Record> = timestamps
            .iter()
            .enumerate()
            .map(|(index, &timestamp)| {
                let offset = base_offset + index as i64;
                let mut value = format!("value-{offset}-").into_bytes();
                value.resize(value_bytes.max(value.len()), b'x');
                Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: 0,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset,
                    // One batch: the encoder splits whenever offset - sequence changes.
                    sequence: index as i32,
                    timestamp,
                    key: Some(Bytes::from(format!("key-{offset}"))),
                    value: Some(Bytes::from(value)),
                    headers: IndexMap::new(),
                }
            })
            .collect();
        encode(&records, compression)
    }

    /// One uncompressed batch of an idempotent producer: `count` records from sequence
    /// `base_sequence`, all at `timestamp`.
    pub(crate) fn idempotent_batch(
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
        count: usize,
        timestamp: i64,
    ) -> Bytes {
        producer_batch(
            producer_id,
            producer_epoch,
            base_sequence,
            count,
            timestamp,
            false,
        )
    }

    /// One uncompressed batch of a producer, transactional or not: `count` records from
    /// sequence `base_sequence`, all at `timestamp`.
    pub(crate) fn producer_batch(
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
        count: usize,
        timestamp: i64,
        transactional: bool,
    ) -> Bytes {
        let records: Vec<Record> = (0..count)
            .map(|index| Record {
                transactional,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: index as i64,
                sequence: base_sequence + index as i32,
                timestamp,
                key: Some(Bytes::from(format!(
                    "key-{producer_id}-{base_sequence}-{index}"
                ))),
                value: Some(Bytes::from_static(b"value")),
                headers: IndexMap::new(),
            })
            .collect();
        encode(&records, Compression::None)
    }

    /// `records` as v2 batches (one when their `offset - sequence` is constant).
    fn encode(records: &[Record], compression: Compression) -> Bytes {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode batch");
        buf.freeze()
    }

    /// One uncompressed batch of `count` records, all at `timestamp`.
    pub(crate) fn batch(base_offset: i64, count: usize, timestamp: i64) -> Bytes {
        batch_with(base_offset, &vec![timestamp; count], 10, Compression::None)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{batch, batch_with};
    use super::*;
    use bytes::BytesMut;

    const MAX: usize = 1 << 20;

    #[test]
    fn transaction_markers_encode_as_kafkas_control_batches_and_parse_back() {
        for commit in [true, false] {
            let marker = MarkerRecord {
                commit,
                coordinator_epoch: 7,
            };
            let bytes = encode_marker_batch(42, 3, marker, 1_000).expect("encode");
            let batch = Batch::new(bytes.clone(), MAX).expect("a valid produced-shape batch");
            let header = batch.header();
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id(), header.producer_epoch()), (42, 3));
            assert_eq!(header.base_sequence(), -1);
            assert_eq!(marker_record(&batch, MAX).expect("parse"), Some(marker));
            // kafka-protocol's decoder reads it as Kafka's EndTransactionMarker record.
            let records = decode_records(&batch, MAX).expect("decode");
            assert_eq!(records.len(), 1);
            let key = records[0].key.clone().expect("key");
            assert_eq!(&key[..], &[0, 0, 0, u8::from(commit)]);
            let value = records[0].value.clone().expect("value");
            assert_eq!(&value[..], &[0, 0, 0, 0, 0, 7]);
        }
        // A data batch holds no marker.
        let data = Batch::new(batch(0, 1, 5), MAX).expect("batch");
        assert_eq!(marker_record(&data, MAX).expect("parse"), None);
    }

    #[test]
    fn header_fields_of_an_encoded_batch() {
        let bytes = batch_with(5, &[100, 300, 200], 10, Compression::None);
        let header = validate(&bytes, MAX).expect("valid");
        assert_eq!(header.base_offset(), 5);
        assert_eq!(header.last_offset(), 7);
        assert_eq!(header.records_count(), 3);
        assert_eq!(header.last_offset_delta(), 2);
        assert_eq!(header.base_timestamp_ms(), 100);
        assert_eq!(header.max_timestamp_ms(), 300);
        assert_eq!(header.magic(), 2);
        assert_eq!(header.size_bytes(), bytes.len());
        assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
        assert_eq!(header.compression().expect("codec"), Compression::None);
        assert_eq!(header.producer_id(), -1);
    }

    #[test]
    fn compressed_batches_validate() {
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = batch_with(0, &[1, 2, 3, 4], 100, compression);
            let header = validate(&bytes, MAX).expect("valid");
            assert_eq!(header.compression().expect("codec"), compression);
            assert_eq!(header.records_count(), 4);
        }
    }

    #[test]
    fn bad_crc_is_corrupt() {
        let mut bytes = BytesMut::from(&batch(0, 3, 10)[..]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert!(matches!(
            validate(&bytes, MAX),
            Err(LogError::CorruptBatch(message)) if message.contains("CRC")
        ));
    }

    #[test]
    fn truncated_batch_is_corrupt() {
        let bytes = batch(0, 3, 10);
        for cut in [0, 5, 11, 12, 40, bytes.len() - 1] {
            let result = batches(bytes.slice(..cut), MAX).collect::<Result<Vec<_>, _>>();
            if cut == 0 {
                assert!(matches!(result, Ok(ref v) if v.is_empty()));
            } else {
                assert!(
                    matches!(result, Err(LogError::CorruptBatch(_))),
                    "cut {cut}: {result:?}"
                );
            }
        }
        assert!(matches!(
            validate_all(Bytes::new(), MAX),
            Err(LogError::CorruptBatch(_))
        ));
    }

    #[test]
    fn bad_magic_is_unsupported() {
        let mut bytes = BytesMut::from(&batch(0, 1, 10)[..]);
        bytes[MAGIC_POSITION] = 1;
        assert!(matches!(
            validate(&bytes, MAX),
            Err(LogError::UnsupportedMagic(1))
        ));
    }

    #[test]
    fn count_mismatch_is_corrupt() {
        // lastOffsetDelta disagreeing with recordsCount (CRC fixed up so only the count is wrong).
        let mut bytes = BytesMut::from(&batch(0, 3, 10)[..]);
        bytes[LAST_OFFSET_DELTA_POSITION..LAST_OFFSET_DELTA_POSITION + 4]
            .copy_from_slice(&5i32.to_be_bytes());
        let crc = compute_crc(&bytes);
        bytes[CRC_POSITION..CRC_POSITION + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&bytes, MAX),
            Err(LogError::CorruptBatch(message)) if message.contains("inconsistent")
        ));

        // Both header fields agree but the records do not.
        let mut bytes = BytesMut::from(&batch(0, 3, 10)[..]);
        bytes[LAST_OFFSET_DELTA_POSITION..LAST_OFFSET_DELTA_POSITION + 4]
            .copy_from_slice(&3i32.to_be_bytes());
        bytes[RECORDS_COUNT_POSITION..RECORDS_COUNT_POSITION + 4]
            .copy_from_slice(&4i32.to_be_bytes());
        let crc = compute_crc(&bytes);
        bytes[CRC_POSITION..CRC_POSITION + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&bytes, MAX),
            Err(LogError::CorruptBatch(_))
        ));

        // Zero records.
        let mut bytes = BytesMut::from(&batch(0, 1, 10)[..]);
        bytes[LAST_OFFSET_DELTA_POSITION..LAST_OFFSET_DELTA_POSITION + 4]
            .copy_from_slice(&(-1i32).to_be_bytes());
        bytes[RECORDS_COUNT_POSITION..RECORDS_COUNT_POSITION + 4]
            .copy_from_slice(&0i32.to_be_bytes());
        let crc = compute_crc(&bytes);
        bytes[CRC_POSITION..CRC_POSITION + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&bytes, MAX),
            Err(LogError::CorruptBatch(_))
        ));
    }

    #[test]
    fn hostile_header_count_is_corrupt() {
        // A record claiming i32::MAX headers must be rejected before anything allocates.
        let mut bytes = BytesMut::from(&batch(0, 1, 10)[..]);
        // The last byte of the single record is its header count (0).
        let last = bytes.len() - 1;
        assert_eq!(bytes[last], 0);
        bytes[last] = 0x7e; // zigzag 63
        let crc = compute_crc(&bytes);
        bytes[CRC_POSITION..CRC_POSITION + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&bytes, MAX),
            Err(LogError::CorruptBatch(_))
        ));
    }

    #[test]
    fn too_large_batch_is_rejected() {
        let bytes = batch_with(0, &[1, 2], 1000, Compression::None);
        assert!(matches!(
            validate(&bytes, 500),
            Err(LogError::BatchTooLarge { size, max: 500 }) if size == bytes.len()
        ));
        assert!(validate(&bytes, bytes.len()).is_ok());
    }

    #[test]
    fn iterator_splits_without_copying() {
        let mut all = BytesMut::new();
        all.extend_from_slice(&batch(0, 2, 10));
        all.extend_from_slice(&batch(2, 3, 20));
        all.extend_from_slice(&batch_with(5, &[1], 10, Compression::Zstd));
        let all = all.freeze();
        let split = validate_all(all.clone(), MAX).expect("valid");
        assert_eq!(split.len(), 3);
        assert_eq!(split[1].header().base_offset(), 2);
        assert_eq!(split[2].header().last_offset(), 5);
        // Zero-copy: the slices point into the original buffer.
        let start = all.as_ptr() as usize;
        let second = split[1].bytes().as_ptr() as usize;
        assert_eq!(second - start, split[0].size_bytes());
        // A bad batch in the middle stops the iteration with an error.
        let mut bad = BytesMut::from(&all[..]);
        let middle = split[0].size_bytes() + 30;
        bad[middle] ^= 1;
        let results: Vec<_> = batches(bad.freeze(), MAX).collect();
        assert_eq!(results.len(), 2);
        assert!(results[0].is_ok());
        assert!(results[1].is_err());
    }

    #[test]
    fn offset_and_epoch_rewrite_keep_crc() {
        let mut bytes = BytesMut::from(&batch(0, 3, 10)[..]);
        set_base_offset(&mut bytes, 1234);
        set_partition_leader_epoch(&mut bytes, 7);
        let header = validate(&bytes, MAX).expect("still valid");
        assert_eq!(header.base_offset(), 1234);
        assert_eq!(header.last_offset(), 1236);
        assert_eq!(header.partition_leader_epoch(), 7);
    }

    #[test]
    fn log_append_time_rewrite_recomputes_crc() {
        for compression in [Compression::None, Compression::Lz4] {
            let mut bytes = BytesMut::from(&batch_with(0, &[5, 6], 10, compression)[..]);
            set_log_append_time(&mut bytes, 99_000);
            let header = validate(&bytes, MAX).expect("valid after rewrite");
            assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
            assert_eq!(header.max_timestamp_ms(), 99_000);
            // The kafka-protocol decoder (an independent CRC check) accepts it too.
            let mut frozen = bytes.freeze();
            let set =
                kafka_protocol::records::RecordBatchDecoder::decode(&mut frozen).expect("decodes");
            assert_eq!(set.records.len(), 2);
            assert_eq!(
                set.records[0].timestamp_type,
                kafka_protocol::records::TimestampType::LogAppend
            );
        }
    }

    #[test]
    fn replicated_batches_are_checked_by_header_and_crc_only() {
        let original = batch_with(100, &[1, 2, 3], 10, Compression::None);
        assert!(validate_replicated(&original, MAX).is_ok());
        // A record varint the walk rejects, under a recomputed CRC: only the walk notices.
        let mut bad = BytesMut::from(&original[..]);
        bad[BATCH_HEADER_BYTES] = 0xff;
        let crc = compute_crc(&bad);
        bad[CRC_POSITION..CRC_POSITION + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(validate_stored(&bad, MAX).is_err());
        assert!(validate_replicated(&bad, MAX).is_ok());
        // Any changed byte under the old CRC fails both.
        let mut flipped = BytesMut::from(&original[..]);
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(validate_stored(&flipped, MAX).is_err());
        assert!(matches!(
            validate_replicated(&flipped, MAX),
            Err(LogError::CorruptBatch(message)) if message.contains("CRC")
        ));
        // Several back to back, and the shape checks still apply.
        let two = [
            original.clone(),
            batch_with(103, &[4], 10, Compression::None),
        ]
        .concat();
        assert_eq!(
            validate_all_replicated(Bytes::from(two), MAX)
                .expect("valid")
                .len(),
            2
        );
        assert!(matches!(
            validate_replicated(&original, 10),
            Err(LogError::BatchTooLarge { .. })
        ));
        assert!(validate_all_replicated(Bytes::new(), MAX).is_err());
    }

    #[test]
    fn whole_batches_len_stops_at_a_cut_batch() {
        let a = batch_with(0, &[1, 2], 10, Compression::None);
        let b = batch_with(2, &[3], 10, Compression::None);
        let both = [a.clone(), b.clone()].concat();
        assert_eq!(whole_batches_len(&both), both.len());
        assert_eq!(whole_batches_len(&both[..both.len() - 1]), a.len());
        assert_eq!(whole_batches_len(&both[..5]), 0);
        assert_eq!(whole_batches_len(&[]), 0);
    }

    #[test]
    fn stored_batches_may_be_sparse_or_empty_produced_ones_may_not() {
        let original = batch_with(100, &[1, 2, 3], 10, Compression::None);
        let batch = Batch::new(original.clone(), MAX).expect("valid");
        let header = batch.header();
        // Keep records 0 and 2 (offset deltas 0 and 2) under the original lastOffsetDelta.
        let mut records = Vec::new();
        let mut index = 0;
        for_each_record(&batch, usize::MAX, |record| {
            if index != 1 {
                put_record(
                    &mut records,
                    record.body[0],
                    record.timestamp_delta_ms,
                    record.tail,
                );
            }
            index += 1;
        })
        .expect("walk");
        let fields = BatchFields {
            base_offset: header.base_offset(),
            partition_leader_epoch: 3,
            attributes: header.attributes(),
            last_offset_delta: header.last_offset_delta(),
            base_timestamp_ms: header.base_timestamp_ms(),
            max_timestamp_ms: 3,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        };
        let sparse = encode_batch(&fields, &records, 2).expect("encode");
        assert!(validate_stored(&sparse, MAX).is_ok());
        assert!(matches!(
            validate(&sparse, MAX),
            Err(LogError::CorruptBatch(message)) if message.contains("inconsistent")
        ));
        let stored = Batch::new_stored(sparse, MAX).expect("stored");
        assert_eq!(
            record_timestamps(&stored, usize::MAX).expect("decode"),
            vec![(100, 1), (102, 3)]
        );
        // A header-only batch (what the cleaner keeps for its last offset).
        let empty = encode_batch(&fields, &[], 0).expect("encode");
        assert_eq!(empty.len(), BATCH_HEADER_BYTES);
        let empty = Batch::new_stored(empty, MAX).expect("stored");
        assert_eq!(empty.header().last_offset(), 102);
        assert!(decode_records(&empty, usize::MAX)
            .expect("decode")
            .is_empty());
        assert!(validate(empty.bytes(), MAX).is_err());
        // Offset deltas that do not ascend, or pass lastOffsetDelta, are corrupt even stored.
        for (count, delta) in [(2, 1), (3, 1)] {
            let mut bad_fields = fields;
            bad_fields.last_offset_delta = delta;
            let encoded = encode_batch(&bad_fields, &records, count);
            assert!(encoded.is_err(), "count {count} delta {delta}");
        }
    }

    #[test]
    fn keyless_records_are_found_in_every_codec() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let keyed = Batch::new(batch_with(0, &[1, 2], 10, compression), MAX).expect("valid");
            assert_eq!(
                keyless_record_indexes(&keyed, usize::MAX).expect("walk"),
                Vec::<usize>::new()
            );
            let records: Vec<kafka_protocol::records::Record> = decode_records(&keyed, usize::MAX)
                .expect("decode")
                .into_iter()
                .enumerate()
                .map(|(index, mut record)| {
                    if index == 1 {
                        record.key = None;
                    }
                    record
                })
                .collect();
            let mut buf = BytesMut::new();
            kafka_protocol::records::RecordBatchEncoder::encode(
                &mut buf,
                &records,
                &kafka_protocol::records::RecordEncodeOptions {
                    version: 2,
                    compression,
                },
            )
            .expect("encode");
            let keyless = Batch::new(buf.freeze(), MAX).expect("valid");
            assert_eq!(
                keyless_record_indexes(&keyless, usize::MAX).expect("walk"),
                vec![1]
            );
            // Compression round trip of the records section.
            let raw = decompressed_records(&keyless, usize::MAX).expect("decompress");
            let mut again = BytesMut::new();
            compress_records(compression, &raw, &mut again).expect("compress");
            assert!(!again.is_empty());
        }
    }

    #[test]
    fn varints_decode() {
        let mut position = 0;
        assert_eq!(read_varlong(&[0x01], &mut position).expect("ok"), -1);
        position = 0;
        assert_eq!(read_varlong(&[0xac, 0x02], &mut position).expect("ok"), 150);
        position = 0;
        assert!(read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut position).is_err());
        position = 0;
        assert!(read_varint(&[0x80], &mut position).is_err());
    }

    #[test]
    fn record_timestamps_of_compressed_batches() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = batch_with(10, &[7, 3, 9], 50, compression);
            let batch = Batch::new(bytes, MAX).expect("valid");
            assert_eq!(
                record_timestamps(&batch, usize::MAX).expect("decode"),
                vec![(10, 7), (11, 3), (12, 9)],
                "{compression:?}"
            );
            let mut rewritten = BytesMut::from(&batch.bytes()[..]);
            set_log_append_time(&mut rewritten, 500);
            let batch = Batch::new(rewritten.freeze(), MAX).expect("valid");
            assert_eq!(
                record_timestamps(&batch, usize::MAX).expect("decode"),
                vec![(10, 500), (11, 500), (12, 500)]
            );
        }
    }
}
