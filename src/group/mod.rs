//! Consumer groups (classic protocol) and committed offsets: Apache Kafka's group coordinator
//! as a state machine that does no I/O.
//!
//! What it owns: the groups whose `__consumer_offsets` partition this broker leads — their
//! members, generations, assignments and committed offsets — and the rules of JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups,
//! DeleteGroups and OffsetDelete. What it does not own: sockets, the clock, the log. The API
//! handlers call [`GroupCoordinator`] with decoded requests and `now_ms`; a timer task calls
//! [`GroupCoordinator::tick`] at [`GroupCoordinator::next_deadline`]; whoever owns the
//! `__consumer_offsets` partitions appends the records the coordinator returns, calls
//! [`GroupCoordinator::complete`] after each append, and replays a partition's records through
//! [`GroupCoordinator::replay`] when it becomes its leader.
//!
//! - [`coordinator`]: the state machine and its invariants (every waiting request is answered
//!   exactly once; a response that depends on a write is released only after it).
//! - [`state`]: one group's membership and offsets, [`GroupState`].
//! - [`records`]: the `__consumer_offsets` key/value formats (Kafka's own, so Kafka tools read
//!   them).
//! - [`types`]: requests, responses and the [`Output`] of a step.
//! - [`error`]: [`GroupError`] (one variant per Kafka error code the coordinator returns; the
//!   API layer maps them), [`AppendError`], [`RecordError`], [`ReplayError`].
//! - [`config`]: [`GroupConfig`], Kafka's settings and defaults.
//! - [`partition_for`]: which `__consumer_offsets` partition holds a group (Kafka's mapping).
//!
//! Invariant: nothing in this module blocks, sleeps, reads a clock or does I/O, so every
//! behaviour is reproducible in a unit test with a manual clock.

pub mod config;
pub mod coordinator;
pub mod error;
pub mod records;
pub mod state;
mod timers;
pub mod types;

#[cfg(test)]
mod tests;

pub use config::GroupConfig;
pub use coordinator::GroupCoordinator;
pub use error::{AppendError, GroupError, RecordError, ReplayError};
pub use records::{CoordinatorRecord, Record};
pub use state::GroupState;
pub use types::*;

/// Java's `String.hashCode()`: `s[0]*31^(n-1) + ... + s[n-1]` over the UTF-16 code units, in
/// wrapping 32-bit arithmetic.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The `__consumer_offsets` partition of a group: Kafka's
/// `Utils.abs(groupId.hashCode()) % offsets.topic.num.partitions`, where `Utils.abs` is
/// `Math.abs` except that `Integer.MIN_VALUE` maps to 0. (That is not `hash & 0x7fffffff`,
/// the producer partitioner's `toPositive`: the two differ for every other negative hash.)
pub fn partition_for(group_id: &str, num_partitions: i32) -> i32 {
    let hash = java_string_hash(group_id);
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % num_partitions.max(1)
}
