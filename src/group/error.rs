//! The errors of the group coordinator.
//!
//! [`GroupError`] is what a request gets back; the API layer maps each variant to exactly one
//! Kafka error code (named on each variant) and nothing in `src/group` knows the numbers.
//! [`AppendError`] is what the caller reports when it failed to append the records the
//! coordinator asked it to persist; [`RecordError`] is a `__consumer_offsets` record that does
//! not decode, and [`ReplayError`] a record that cannot be replayed.

/// Why a group request failed. Each variant maps to the one Kafka error named on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum GroupError {
    /// This broker does not lead the group's `__consumer_offsets` partition. `NOT_COORDINATOR`.
    #[error("this broker is not the coordinator of the group")]
    NotCoordinator,
    /// The coordinator cannot serve the request right now (its log append failed in a way that
    /// may pass). `COORDINATOR_NOT_AVAILABLE`.
    #[error("the group coordinator is not available")]
    CoordinatorNotAvailable,
    /// The group's `__consumer_offsets` partition is still being replayed.
    /// `COORDINATOR_LOAD_IN_PROGRESS`.
    #[error("the group coordinator is loading the group")]
    CoordinatorLoadInProgress,
    /// The group id is empty where the API needs one. `INVALID_GROUP_ID`.
    #[error("invalid group id")]
    InvalidGroupId,
    /// The member id is not (or no longer) a member of the group. `UNKNOWN_MEMBER_ID`.
    #[error("unknown member id")]
    UnknownMemberId,
    /// A first JoinGroup (v4+) must be retried with the member id in the response.
    /// `MEMBER_ID_REQUIRED`.
    #[error("the member must rejoin with the member id it was given")]
    MemberIdRequired,
    /// The generation in the request is not the group's current one. `ILLEGAL_GENERATION`.
    #[error("illegal generation")]
    IllegalGeneration,
    /// The group is rebalancing: the member must rejoin. `REBALANCE_IN_PROGRESS`.
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    /// The member's protocol type differs from the group's, or it shares no protocol with
    /// every other member. `INCONSISTENT_GROUP_PROTOCOL`.
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    /// The session timeout is outside `[group.min.session.timeout.ms,
    /// group.max.session.timeout.ms]`. `INVALID_SESSION_TIMEOUT`.
    #[error("invalid session timeout")]
    InvalidSessionTimeout,
    /// The group already has `group.max.size` members. `GROUP_MAX_SIZE_REACHED`.
    #[error("the group has reached its maximum size")]
    GroupMaxSizeReached,
    /// A static member (group.instance.id) was replaced by a newer instance with the same id.
    /// `FENCED_INSTANCE_ID`.
    #[error("the static member was fenced by a newer instance")]
    FencedInstanceId,
    /// DeleteGroups on a group that still has members, or OffsetDelete on a non-consumer group
    /// with members. `NON_EMPTY_GROUP`.
    #[error("the group is not empty")]
    NonEmptyGroup,
    /// The group does not exist. `GROUP_ID_NOT_FOUND`.
    #[error("the group does not exist")]
    GroupIdNotFound,
    /// OffsetDelete of a topic that an active member is subscribed to.
    /// `GROUP_SUBSCRIBED_TO_TOPIC`.
    #[error("the group is subscribed to the topic")]
    GroupSubscribedToTopic,
    /// The commit metadata string is longer than `offset.metadata.max.bytes`.
    /// `OFFSET_METADATA_TOO_LARGE`.
    #[error("the offset metadata is too large")]
    OffsetMetadataTooLarge,
    /// The commit records were too large for the log. `INVALID_COMMIT_OFFSET_SIZE`.
    #[error("the offset commit is too large")]
    InvalidCommitOffsetSize,
    /// An append failed for a reason the client cannot act on. `UNKNOWN_SERVER_ERROR`.
    #[error("unknown server error")]
    UnknownServerError,
    /// A transaction's offset commit for the partition is pending and the caller asked for
    /// stable offsets. `UNSTABLE_OFFSET_COMMIT` (retriable).
    #[error("a transactional offset commit is pending")]
    UnstableOffsetCommit,
    /// The transactional batch's producer epoch is stale. `INVALID_PRODUCER_EPOCH`.
    #[error("the producer epoch is stale")]
    InvalidProducerEpoch,
    /// The transaction coordinator did not confirm that the group's partition is in the
    /// producer's transaction (KIP-890). `INVALID_TXN_STATE`.
    #[error("the group's partition is not in the producer's transaction")]
    InvalidTxnState,
    /// The transaction coordinator does not know the producer id for the transactional id
    /// (KIP-890 verification). `INVALID_PRODUCER_ID_MAPPING`.
    #[error("the producer id does not match the transactional id")]
    InvalidProducerIdMapping,
}

/// Why the caller could not append records to `__consumer_offsets`; passed to
/// [`crate::group::GroupCoordinator::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// This broker no longer leads the partition.
    #[error("not the leader of the __consumer_offsets partition")]
    NotLeader,
    /// Too few in-sync replicas to accept the append.
    #[error("not enough replicas")]
    NotEnoughReplicas,
    /// The append did not complete in time.
    #[error("append timed out")]
    Timeout,
    /// The records were larger than the partition accepts.
    #[error("records too large")]
    RecordTooLarge,
    /// The log directory failed.
    #[error("storage error")]
    Storage,
    /// A transactional batch's producer epoch is older than the partition's for the producer.
    #[error("stale producer epoch")]
    StaleProducerEpoch,
    /// A transactional batch would open the producer's transaction on the partition without a
    /// verification with the transaction coordinator that still holds (KIP-890).
    #[error("transactional write not verified")]
    NotVerified,
}

impl AppendError {
    /// The error a group-metadata write failure becomes (Kafka's
    /// `appendGroupMetadataErrorToResponseError`).
    pub fn for_group_metadata(self) -> GroupError {
        match self {
            AppendError::NotLeader | AppendError::Storage => GroupError::NotCoordinator,
            AppendError::NotEnoughReplicas | AppendError::Timeout => {
                GroupError::CoordinatorNotAvailable
            }
            AppendError::RecordTooLarge
            | AppendError::StaleProducerEpoch
            | AppendError::NotVerified => GroupError::UnknownServerError,
        }
    }

    /// The error an offset-commit write failure becomes: as for group metadata, except that a
    /// too-large append is `INVALID_COMMIT_OFFSET_SIZE`.
    pub fn for_offset_commit(self) -> GroupError {
        match self {
            AppendError::RecordTooLarge => GroupError::InvalidCommitOffsetSize,
            other => other.for_group_metadata(),
        }
    }

    /// The error a transactional offset commit's write failure becomes: as for OffsetCommit,
    /// except that a stale producer epoch is the producer's to hear.
    pub fn for_txn_offset_commit(self) -> GroupError {
        match self {
            AppendError::StaleProducerEpoch => GroupError::InvalidProducerEpoch,
            AppendError::NotVerified => GroupError::InvalidTxnState,
            other => other.for_offset_commit(),
        }
    }
}

/// A `__consumer_offsets` record that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The record ended before a field did.
    #[error("record truncated while reading {0}")]
    Truncated(&'static str),
    /// A string field is not UTF-8.
    #[error("invalid UTF-8 in {0}")]
    InvalidUtf8(&'static str),
    /// A length or count is negative where it may not be, or larger than the record.
    #[error("invalid length {length} for {field}")]
    InvalidLength {
        /// The field being read.
        field: &'static str,
        /// The length found.
        length: i64,
    },
    /// The key's version names a record type this coordinator does not know (the consumer,
    /// share and streams group records of newer Kafka versions).
    #[error("unknown record key version {0}")]
    UnknownKeyVersion(i16),
    /// The value's version is newer than this coordinator reads.
    #[error("unsupported {record} value version {version}")]
    UnsupportedValueVersion {
        /// The record type.
        record: &'static str,
        /// The version found.
        version: i16,
    },
    /// Bytes were left over after the value (non-flexible versions only).
    #[error("{0} trailing bytes after the record")]
    TrailingBytes(usize),
}

/// A record that [`crate::group::GroupCoordinator::replay`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The partition is not being loaded (call `begin_loading` first).
    #[error("__consumer_offsets partition {0} is not loading")]
    NotLoading(i32),
    /// The record's group belongs to another `__consumer_offsets` partition.
    #[error("group {group} belongs to partition {expected}, not {actual}")]
    WrongPartition {
        /// The group id.
        group: String,
        /// The partition the group maps to.
        expected: i32,
        /// The partition being loaded.
        actual: i32,
    },
    /// The record does not decode.
    #[error(transparent)]
    Record(#[from] RecordError),
}
