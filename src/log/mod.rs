//! The segment log: Kafka's on-disk layout for one partition, and the manager of a data dir.
//!
//! Layout (identical to Apache Kafka's):
//! `<data-dir>/<topic>-<partition>/<20-digit base offset>.log | .index | .timeindex`, plus
//! `.txnindex` for segments holding aborted transactions' markers and
//! `<20-digit offset>.snapshot` producer-state snapshots.
//!
//! Layers, bottom up (no layer reaches past the one below it):
//! - [`batch`]: a zero-copy view of a v2 (magic 2) record batch header; validation
//!   (length, magic, CRC-32C, record count) and the base-offset / leader-epoch rewrite.
//! - [`compression`]: decompression of record sections with a bound derived from
//!   `max.message.bytes`, so a compressed bomb fails one request, never the broker.
//! - [`faults`]: failure probes (EIO on write or fsync under a directory) for fault tests.
//! - [`offset_index`]: the sparse `.index` (relative offset → file position, 8-byte entries).
//! - [`time_index`]: the sparse `.timeindex` (timestamp → relative offset, 12-byte entries).
//! - [`segment`]: one `.log` file with its two indexes; append, read, recover, truncate.
//! - [`file_slice`]: a read as a byte range of a `.log` file, sent with `sendfile(2)`.
//! - [`partition_log`]: the ordered segments of one partition; offsets, roll, retention,
//!   recovery, flush. Knows nothing of replication or the wire.
//! - [`producer_state`]: idempotent producers' epochs and last five batches per partition
//!   (duplicate and sequence checks) and their open transactions (the last stable offset),
//!   rebuilt from the log and kept in `.snapshot` files.
//! - [`txn_index`]: the aborted-transaction index (`.txnindex`) read_committed fetches use.
//! - [`leader_epoch`]: the leader epoch cache (`leader-epoch-checkpoint`): which epoch began at
//!   which offset, for replication's truncation (not yet maintained by appends).
//! - [`cleaner`]: log compaction (`cleanup.policy=compact`), Kafka's log cleaner for one
//!   partition log: the key → offset map, the recopy of segments, the crash-safe swap.
//! - [`manager`]: every partition log under one data dir; recovery-point checkpoint and the
//!   clean-shutdown marker.
//!
//! Errors are typed ([`LogError`]); the API layer maps them to Kafka error codes.

pub mod batch;
pub mod cleaner;
pub mod compression;
mod error;
pub mod faults;
pub mod file_slice;
pub mod leader_epoch;
pub mod manager;
pub mod offset_index;
pub mod partition_log;
pub mod producer_state;
pub mod segment;
pub mod time_index;
pub mod txn_index;

pub use cleaner::{Cleanable, CompactionOutcome, CompactionSettings, CompactionStats};
pub use error::LogError;
pub use file_slice::FileSlice;
pub use manager::LogManager;
pub use partition_log::{
    AppendInfo, AppendOrigin, CleanupPolicy, LogConfig, PartitionLog, TimestampType,
};
