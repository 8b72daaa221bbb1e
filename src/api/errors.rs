//! The one place where layer errors become Kafka error codes.

use kafka_protocol::ResponseError;

use crate::cluster::ControllerError;
use crate::log::LogError;
use crate::replica::ReplicaError;

/// The Kafka error code for a log error.
pub fn log_error_code(e: &LogError) -> i16 {
    match e {
        LogError::CorruptBatch(_) => ResponseError::CorruptMessage.code(),
        LogError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat.code(),
        LogError::BatchTooLarge { .. } => ResponseError::MessageTooLarge.code(),
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange.code(),
        LogError::NonMonotonicOffset { .. } => ResponseError::UnknownServerError.code(),
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
        ControllerError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition.code(),
        ControllerError::PolicyViolation(_) => ResponseError::PolicyViolation.code(),
        ControllerError::DeletionDisabled => ResponseError::TopicDeletionDisabled.code(),
        ControllerError::Storage(_) => ResponseError::KafkaStorageError.code(),
    }
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
