//! AddPartitionsToTxn (key 24): a transactional producer names the partitions it is about to
//! write in its transaction (v0–3).
//!
//! Versions 4 and 5 batch several transactions and add `verify_only`; they come from brokers
//! only (a client gets CLUSTER_AUTHORIZATION_FAILED, as Kafka without CLUSTER_ACTION). A
//! partition leader uses them before a producer's first transactional write to it (KIP-890
//! part 1, see `api::produce`): each partition is NONE if it is in the producer's open
//! transaction, INVALID_TXN_STATE if not, or the coordinator's error (NOT_COORDINATOR,
//! PRODUCER_FENCED, INVALID_PRODUCER_ID_MAPPING, CONCURRENT_TRANSACTIONS...). Version 5 differs
//! only in that it may answer TRANSACTION_ABORTABLE, which this coordinator never needs to.
//! Adding (v0–3, or v4+ without `verify_only`): every partition gets the one answer of
//! the coordinator ([`crate::txn::TxnCoordinator::add_partitions`]), except that, as Kafka,
//! a request naming a partition that does not exist adds nothing: those partitions get
//! UNKNOWN_TOPIC_OR_PARTITION and the others OPERATION_NOT_ATTEMPTED. PRODUCER_FENCED is
//! INVALID_PRODUCER_EPOCH before v2 (KIP-588).

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};
use kafka_protocol::protocol::VersionRange;
use kafka_protocol::ResponseError;

use super::errors::txn_error_code;
use super::{txn_verification, RequestContext};
use crate::server::Principal;

/// Handled versions: 0–3 from clients, 4–5 (batched, `verify_only`) from brokers.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

/// AddPartitionsToTxn.
pub async fn handle(
    ctx: &RequestContext,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if ctx.version >= 4 {
        return handle_batched(ctx, req).await;
    }
    let results = add(
        ctx,
        req.v3_and_below_transactional_id.as_str(),
        req.v3_and_below_producer_id.0,
        req.v3_and_below_producer_epoch,
        &req.v3_and_below_topics,
    )
    .await;
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

/// Versions 4 and 5: several transactions, each added or (`verify_only`) checked; brokers
/// only (Kafka asks for CLUSTER_ACTION), so a client gets CLUSTER_AUTHORIZATION_FAILED.
async fn handle_batched(
    ctx: &RequestContext,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if ctx.principal != Principal::Broker {
        tracing::warn!(peer = %ctx.peer, "AddPartitionsToTxn v{} from a client; refused", ctx.version);
        return AddPartitionsToTxnResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let mut results = Vec::with_capacity(req.transactions.len());
    for txn in &req.transactions {
        let id = txn.transactional_id.as_str();
        let topic_results = if txn.verify_only {
            let partitions = partitions_of(&txn.topics);
            let verdict = ctx.broker.txns.read(|c| {
                c.verify_partitions(id, txn.producer_id.0, txn.producer_epoch, &partitions)
            });
            let mut codes = txn_verification::codes(verdict, partitions.len()).into_iter();
            // `partitions` lists the topics' partitions in order: one code each.
            txn.topics
                .iter()
                .map(|topic| topic_result(topic, codes.by_ref().take(topic.partitions.len())))
                .collect()
        } else {
            add(ctx, id, txn.producer_id.0, txn.producer_epoch, &txn.topics).await
        };
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(txn.transactional_id.clone())
                .with_topic_results(topic_results),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

fn partitions_of(topics: &[AddPartitionsToTxnTopic]) -> Vec<(String, i32)> {
    topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.to_string(), *p)))
        .collect()
}

fn topic_result(
    topic: &AddPartitionsToTxnTopic,
    codes: impl Iterator<Item = i16>,
) -> AddPartitionsToTxnTopicResult {
    AddPartitionsToTxnTopicResult::default()
        .with_name(topic.name.clone())
        .with_results_by_partition(
            topic
                .partitions
                .iter()
                .zip(codes)
                .map(|(&index, code)| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(index)
                        .with_partition_error_code(code)
                })
                .collect(),
        )
}

/// Adds `topics` to the producer's transaction: one answer of the coordinator for every
/// partition, or, when one does not exist, UNKNOWN_TOPIC_OR_PARTITION for it and
/// OPERATION_NOT_ATTEMPTED for the others.
async fn add(
    ctx: &RequestContext,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
) -> Vec<AddPartitionsToTxnTopicResult> {
    let image = ctx.broker.controller.image();
    let partitions = partitions_of(topics);
    let unknown = |topic: &str, index: i32| image.partition(topic, index).is_none();
    let any_unknown = partitions.iter().any(|(t, p)| unknown(t, *p));
    let answer = if any_unknown {
        None
    } else {
        let id = transactional_id.to_string();
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
    topics
        .iter()
        .map(|topic| {
            topic_result(
                topic,
                topic
                    .partitions
                    .iter()
                    .map(|&index| code_for(topic.name.as_str(), index)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTransaction;
    use kafka_protocol::messages::{ApiKey, ProducerId, TopicName, TransactionalId};
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::api::test_support::{broker_with, ctx};

    fn verify_request() -> AddPartitionsToTxnRequest {
        AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(StrBytes::from_static_str("tx")))
                .with_producer_id(ProducerId(7))
                .with_producer_epoch(0)
                .with_verify_only(true)
                .with_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![0, 1])]),
        ])
    }

    #[tokio::test]
    async fn batched_versions_are_for_brokers_only_and_answer_each_partition() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker_with(dir.path(), &[]).await;
        for version in [4, 5] {
            let refused = handle(
                &ctx(&b, ApiKey::AddPartitionsToTxn, version),
                verify_request(),
            )
            .await;
            assert_eq!(
                refused.error_code,
                ResponseError::ClusterAuthorizationFailed.code()
            );
            assert!(refused.results_by_transaction.is_empty());
            let mut as_broker = ctx(&b, ApiKey::AddPartitionsToTxn, version);
            as_broker.principal = Principal::Broker;
            let answered = handle(&as_broker, verify_request()).await;
            assert_eq!(answered.error_code, 0);
            let codes: Vec<i16> = answered.results_by_transaction[0].topic_results[0]
                .results_by_partition
                .iter()
                .map(|p| p.partition_error_code)
                .collect();
            // This broker hosts no `__transaction_state` partition yet.
            assert_eq!(codes, vec![ResponseError::NotCoordinator.code(); 2]);
        }
    }
}
