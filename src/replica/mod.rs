//! Partitions hosted by this broker and the manager that owns them.
//!
//! - [`partition`]: one hosted partition: its log, leader epoch, high watermark (published on a
//!   `watch` channel so long-poll fetches wake on appends) and group commit of fsyncs.
//! - [`manager`]: creates, opens and deletes partitions as the metadata image says, answers
//!   "which partition is this" for handlers, and runs the periodic log duties (time-based
//!   roll, retention, `flush.ms`).
//!
//! - [`group_commit`]: fsyncs shared by every waiter, exact across truncations, cancel-safe.
//! - [`fetcher`]: follower side of replication: one task per leader followed, fetching with
//!   Kafka's Fetch (a `replica_id`) over the internal listener.
//!
//! Handlers go through [`ReplicaManager::leader_partition`], which answers
//! NOT_LEADER_OR_FOLLOWER for partitions led elsewhere. On the leader, a partition's high
//! watermark is the smallest log end offset in its ISR (followers report theirs with each
//! fetch); acks=all waits for it.

pub mod fetcher;
pub mod group_commit;
pub mod manager;
pub mod partition;
#[cfg(test)]
mod simulation_tests;

pub use manager::ReplicaManager;
pub use partition::{
    FetchedData, FetchedFromLeader, FollowerApply, FollowerFetch, IsrNotMade, Partition,
};

use crate::log::LogError;

/// Why a partition operation failed; mapped to a Kafka error code by the API layer.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// UNKNOWN_TOPIC_OR_PARTITION.
    #[error("unknown topic or partition {topic}-{partition}")]
    UnknownTopicOrPartition {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// NOT_LEADER_OR_FOLLOWER.
    #[error("this broker does not lead {topic}-{partition}")]
    NotLeader {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// FENCED_LEADER_EPOCH: the request knew an older leader epoch.
    #[error("leader epoch {requested} is older than the current {epoch}")]
    FencedLeaderEpoch {
        /// The request's epoch.
        requested: i32,
        /// This broker's.
        epoch: i32,
    },
    /// UNKNOWN_LEADER_EPOCH: the request knew a newer leader epoch than this broker.
    #[error("leader epoch {requested} is newer than the current {epoch}")]
    UnknownLeaderEpoch {
        /// The request's epoch.
        requested: i32,
        /// This broker's.
        epoch: i32,
    },
    /// A log error (corrupt batch, out of range, I/O...).
    #[error(transparent)]
    Log(#[from] LogError),
    /// The log could not be made durable (fsync failed).
    #[error("flush failed: {0}")]
    Flush(String),
}
