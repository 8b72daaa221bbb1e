//! The one place where layer errors become Kafka error codes.

use kafka_protocol::ResponseError;

use crate::cluster::ControllerError;
use crate::group::GroupError;
use crate::log::producer_state::SequenceError;
use crate::log::LogError;
use crate::replica::ReplicaError;
use crate::txn::TxnError;

/// The Kafka error code for a log error.
pub fn log_error_code(e: &LogError) -> i16 {
    match e {
        LogError::CorruptBatch(_) => ResponseError::CorruptMessage.code(),
        LogError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat.code(),
        LogError::BatchTooLarge { .. } => ResponseError::MessageTooLarge.code(),
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange.code(),
        LogError::NonMonotonicOffset { .. } => ResponseError::UnknownServerError.code(),
        LogError::InvalidRecord { .. } => ResponseError::InvalidRecord.code(),
        LogError::Sequence(SequenceError::StaleEpoch { .. }) => {
            ResponseError::InvalidProducerEpoch.code()
        }
        LogError::Sequence(SequenceError::OutOfOrder { .. }) => {
            ResponseError::OutOfOrderSequenceNumber.code()
        }
        LogError::Sequence(SequenceError::InvalidSequence { .. }) => {
            ResponseError::InvalidRecord.code()
        }
        LogError::Sequence(
            SequenceError::InvalidTxnState { .. } | SequenceError::NotVerified { .. },
        ) => ResponseError::InvalidTxnState.code(),
        LogError::Sequence(SequenceError::CoordinatorFenced { .. }) => {
            ResponseError::TransactionCoordinatorFenced.code()
        }
        LogError::Io(_) => ResponseError::KafkaStorageError.code(),
    }
}

/// The Kafka error code for a replica error.
pub fn replica_error_code(e: &ReplicaError) -> i16 {
    match e {
        ReplicaError::UnknownTopicOrPartition { .. } => {
            ResponseError::UnknownTopicOrPartition.code()
        }
        ReplicaError::NotLeader { .. } => ResponseError::NotLeaderOrFollower.code(),
        ReplicaError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch.code(),
        ReplicaError::UnknownLeaderEpoch { .. } => ResponseError::UnknownLeaderEpoch.code(),
        ReplicaError::Log(log) => log_error_code(log),
        ReplicaError::Flush(_) => ResponseError::KafkaStorageError.code(),
    }
}

/// The Kafka error code for a controller error.
pub fn controller_error_code(e: &ControllerError) -> i16 {
    match e {
        ControllerError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists.code(),
        ControllerError::InvalidTopic(_) => ResponseError::InvalidTopicException.code(),
        ControllerError::InvalidPartitions(_) => ResponseError::InvalidPartitions.code(),
        ControllerError::InvalidReplicationFactor(_) => {
            ResponseError::InvalidReplicationFactor.code()
        }
        ControllerError::InvalidConfig(_) => ResponseError::InvalidConfig.code(),
        ControllerError::InvalidReplicaAssignment(_) => {
            ResponseError::InvalidReplicaAssignment.code()
        }
        ControllerError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition.code(),
        ControllerError::InternalTopic(_) => ResponseError::InvalidRequest.code(),
        ControllerError::PolicyViolation(_) => ResponseError::PolicyViolation.code(),
        ControllerError::DeletionDisabled => ResponseError::TopicDeletionDisabled.code(),
        ControllerError::NotController(_) => ResponseError::NotController.code(),
        ControllerError::Storage(_) => ResponseError::KafkaStorageError.code(),
    }
}

/// The Kafka error code for a group coordinator error.
pub fn group_error_code(e: GroupError) -> i16 {
    let error = match e {
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
        GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        GroupError::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::MemberIdRequired => ResponseError::MemberIdRequired,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        GroupError::OffsetMetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
        GroupError::InvalidCommitOffsetSize => ResponseError::InvalidCommitOffsetSize,
        GroupError::UnknownServerError => ResponseError::UnknownServerError,
        GroupError::UnstableOffsetCommit => ResponseError::UnstableOffsetCommit,
        GroupError::InvalidProducerEpoch => ResponseError::InvalidProducerEpoch,
        GroupError::InvalidTxnState => ResponseError::InvalidTxnState,
        GroupError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
    };
    error.code()
}

/// The code of an optional group error (0 for none).
pub fn group_code(e: Option<GroupError>) -> i16 {
    e.map_or(0, group_error_code)
}

/// Shorthand for a code of [`ResponseError`].
pub fn code(e: ResponseError) -> i16 {
    e.code()
}

/// Why one item of a request (a topic, a resource) was refused: a Kafka error code and the
/// message for the client.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) code: i16,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(error: ResponseError, message: impl Into<String>) -> Refusal {
        Refusal {
            code: error.code(),
            message: message.into(),
        }
    }
}

impl From<ControllerError> for Refusal {
    fn from(e: ControllerError) -> Refusal {
        Refusal {
            code: controller_error_code(&e),
            message: e.to_string(),
        }
    }
}

/// KIP-951 hints for partitions refused with NOT_LEADER_OR_FOLLOWER (or FENCED_LEADER_EPOCH):
/// each refused partition's current leader and epoch, and then the endpoints of those leaders,
/// so a client can move on without a Metadata round trip. Produce and Fetch fill their own
/// response types from it.
#[derive(Debug, Default)]
pub(crate) struct LeaderHints {
    leaders: std::collections::BTreeSet<i32>,
}

impl LeaderHints {
    /// The leader and leader epoch of partition `index` of `topic`, remembering the leader.
    pub(crate) fn leader_of(
        &mut self,
        topic: &crate::cluster::TopicInfo,
        index: i32,
    ) -> Option<(i32, i32)> {
        let placement = usize::try_from(index)
            .ok()
            .and_then(|i| topic.partitions.get(i))?;
        if placement.leader >= 0 {
            self.leaders.insert(placement.leader);
        }
        Some((placement.leader, placement.leader_epoch))
    }

    /// The remembered leaders that `image` knows, in node id order.
    pub(crate) fn endpoints(
        self,
        image: &crate::cluster::MetadataImage,
    ) -> Vec<crate::cluster::BrokerInfo> {
        self.leaders
            .into_iter()
            .filter_map(|id| image.brokers.get(&id).cloned())
            .collect()
    }
}

/// The Kafka error code for a transaction coordinator error. Requests older than KIP-588's
/// versions (`fenced_supported` false) get INVALID_PRODUCER_EPOCH for PRODUCER_FENCED, as
/// Kafka answers them.
pub fn txn_error_code(e: &TxnError, fenced_supported: bool) -> i16 {
    match e {
        TxnError::NotCoordinator => ResponseError::NotCoordinator.code(),
        TxnError::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress.code(),
        TxnError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable.code(),
        TxnError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping.code(),
        TxnError::ProducerFenced if fenced_supported => ResponseError::ProducerFenced.code(),
        TxnError::ProducerFenced => ResponseError::InvalidProducerEpoch.code(),
        TxnError::ConcurrentTransactions => ResponseError::ConcurrentTransactions.code(),
        TxnError::InvalidTxnState => ResponseError::InvalidTxnState.code(),
        TxnError::InvalidTransactionTimeout => ResponseError::InvalidTransactionTimeout.code(),
    }
}
