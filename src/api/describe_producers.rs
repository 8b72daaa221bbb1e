//! DescribeProducers (key 61), v0: the producers a partition's leader keeps state for
//! (`kafka-transactions.sh describe-producers`, the admin client's `describeProducers`): each
//! one's id, epoch, last sequence and timestamp, the newest coordinator epoch of its markers,
//! and where its open transaction begins (-1 when none is open), so an operator can find the
//! transaction that holds a partition's last stable offset.
//!
//! Per partition: NOT_LEADER_OR_FOLLOWER when this broker does not lead it,
//! UNKNOWN_TOPIC_OR_PARTITION when it does not exist.

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::protocol::VersionRange;

use super::errors::replica_error_code;
use super::RequestContext;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 0 };

/// DescribeProducers.
pub fn handle(ctx: &RequestContext, req: DescribeProducersRequest) -> DescribeProducersResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|&index| {
                    let answer = PartitionResponse::default().with_partition_index(index);
                    match ctx
                        .broker
                        .replicas
                        .leader_partition(topic.name.as_str(), index)
                    {
                        Err(error) => answer.with_error_code(replica_error_code(&error)),
                        Ok(partition) => answer.with_error_code(0).with_active_producers(
                            partition
                                .log()
                                .active_producers()
                                .into_iter()
                                .map(|p| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(p.producer_id))
                                        .with_producer_epoch(i32::from(p.epoch))
                                        .with_last_sequence(p.last_sequence)
                                        .with_last_timestamp(p.last_timestamp_ms)
                                        .with_coordinator_epoch(p.coordinator_epoch)
                                        .with_current_txn_start_offset(p.txn_start_offset)
                                })
                                .collect(),
                        ),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
