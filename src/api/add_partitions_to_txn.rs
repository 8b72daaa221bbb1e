//! AddPartitionsToTxn (key 24), v0–v3: a transactional producer names the partitions it is
//! about to write in its transaction.
//!
//! Versions 4 and 5 batch several transactions and add `verify_only`: Kafka sends them between
//! brokers only (KIP-890), so they are not advertised. Every partition gets the one answer of
//! the coordinator ([`crate::txn::TxnCoordinator::add_partitions`]), except that, as Kafka,
//! a request naming a partition that does not exist adds nothing: those partitions get
//! UNKNOWN_TOPIC_OR_PARTITION and the others OPERATION_NOT_ATTEMPTED. PRODUCER_FENCED is
//! INVALID_PRODUCER_EPOCH before v2 (KIP-588).

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};
use kafka_protocol::protocol::VersionRange;
use kafka_protocol::ResponseError;

use super::errors::txn_error_code;
use super::RequestContext;

/// Handled versions (the client versions).
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 3 };

/// AddPartitionsToTxn.
pub async fn handle(
    ctx: &RequestContext,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let image = ctx.broker.controller.image();
    let partitions: Vec<(String, i32)> = req
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.to_string(), *p)))
        .collect();
    let unknown = |topic: &str, index: i32| image.partition(topic, index).is_none();
    let any_unknown = partitions.iter().any(|(t, p)| unknown(t, *p));
    let answer = if any_unknown {
        None
    } else {
        let id = req.v3_and_below_transactional_id.to_string();
        let producer_id = req.v3_and_below_producer_id.0;
        let epoch = req.v3_and_below_producer_epoch;
        Some(
            ctx.broker
                .txns
                .call(|c, now, token| {
                    c.add_partitions(now, token, &id, producer_id, epoch, &partitions)
                })
                .await,
        )
    };
    let code_for = |topic: &str, index: i32| match &answer {
        Some(Ok(_)) => 0,
        Some(Err(error)) => txn_error_code(error, ctx.version >= 2),
        None if unknown(topic, index) => ResponseError::UnknownTopicOrPartition.code(),
        None => ResponseError::OperationNotAttempted.code(),
    };
    let results = req
        .v3_and_below_topics
        .iter()
        .map(|topic| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(topic.name.clone())
                .with_results_by_partition(
                    topic
                        .partitions
                        .iter()
                        .map(|&index| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(index)
                                .with_partition_error_code(code_for(topic.name.as_str(), index))
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}
