//! The one error type of the log layer.
//!
//! Every fallible function in `src/log` returns [`LogError`]. The API layer maps each variant to
//! exactly one Kafka error code (see the comment on each variant); nothing below it knows about
//! wire error codes.
//!
//! Invariant: data read from disk that fails a check is reported as [`LogError::CorruptBatch`]
//! (or repaired during recovery), never trusted and never a panic.

use std::io;

/// What went wrong in the log layer.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A record batch failed validation: bad CRC, bad length, bad record count, truncated.
    /// Maps to `CORRUPT_MESSAGE`.
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    /// The batch is not magic 2 (legacy message sets are not supported).
    /// Maps to `UNSUPPORTED_FOR_MESSAGE_FORMAT`.
    #[error("unsupported record batch magic {0} (only magic 2 is supported)")]
    UnsupportedMagic(i8),
    /// A batch is larger than `max.message.bytes`. Maps to `MESSAGE_TOO_LARGE`.
    #[error("record batch of {size} bytes is larger than the maximum of {max} bytes")]
    BatchTooLarge {
        /// Size of the batch in bytes, including the 12-byte log overhead.
        size: usize,
        /// The `max.message.bytes` in force.
        max: usize,
    },
    /// The requested offset is outside `[log_start_offset, log_end_offset]`.
    /// Maps to `OFFSET_OUT_OF_RANGE`.
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// The first offset still in the log.
        log_start_offset: i64,
        /// The next offset to be assigned.
        log_end_offset: i64,
    },
    /// A replicated append whose offsets do not continue the log (gap or overlap).
    #[error("non-monotonic offset: expected at least {expected_at_least}, got {got}")]
    NonMonotonicOffset {
        /// The smallest acceptable offset.
        expected_at_least: i64,
        /// The offset found.
        got: i64,
    },
    /// Records the log refuses: a compacted log's records without a key. Maps to
    /// `INVALID_RECORD`, with the records named by their index in the batch.
    #[error("{message}")]
    InvalidRecord {
        /// Why, in Kafka's words.
        message: String,
        /// Indexes (in the batch) of the refused records.
        record_indexes: Vec<usize>,
    },
    /// An idempotent producer's batch the producer state refuses: INVALID_PRODUCER_EPOCH,
    /// OUT_OF_ORDER_SEQUENCE_NUMBER or INVALID_RECORD by kind.
    #[error(transparent)]
    Sequence(#[from] super::producer_state::SequenceError),
    /// A disk error. Maps to `KAFKA_STORAGE_ERROR`.
    #[error("log I/O error: {0}")]
    Io(#[from] io::Error),
}

impl LogError {
    /// A [`LogError::CorruptBatch`] with a message.
    pub(crate) fn corrupt(message: impl Into<String>) -> LogError {
        LogError::CorruptBatch(message.into())
    }
}
