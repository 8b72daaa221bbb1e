//! The group coordinator's settings, under Apache Kafka's names (dots become underscores).
//!
//! `src/config.rs` owns parsing; it builds a [`GroupConfig`] from the broker settings. The
//! defaults here are Kafka's.

/// The settings the group coordinator obeys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`: the smallest session timeout a member may ask for.
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`: the largest session timeout a member may ask for.
    pub group_max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits
    /// for more members (extended by each new member, up to the rebalance timeout).
    pub group_initial_rebalance_delay_ms: i32,
    /// `group.max.size`: the most members a classic group may have.
    pub group_max_size: usize,
    /// How long a new member's JoinGroup may wait before the member is dropped (Kafka's
    /// `NewMemberJoinTimeoutMs`, 5 minutes): new members have no member id to heartbeat with.
    pub new_member_join_timeout_ms: i64,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets`.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.retention.minutes`: how long the offsets of an empty group (or of a standalone
    /// consumer) are kept.
    pub offsets_retention_minutes: i64,
    /// `offsets.retention.check.interval.ms`: how often expired offsets are looked for.
    pub offsets_retention_check_interval_ms: i64,
    /// `offset.metadata.max.bytes`: the longest metadata string a commit may carry.
    pub offset_metadata_max_bytes: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            group_max_size: i32::MAX as usize,
            new_member_join_timeout_ms: 300_000,
            offsets_topic_num_partitions: 50,
            offsets_retention_minutes: 10_080,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4_096,
        }
    }
}

impl GroupConfig {
    /// `offsets.retention.minutes` in milliseconds.
    pub fn offsets_retention_ms(&self) -> i64 {
        self.offsets_retention_minutes.saturating_mul(60_000)
    }
}
