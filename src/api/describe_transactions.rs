//! DescribeTransactions (key 65), v0: the state of transactional ids this broker coordinates
//! (`kafka-transactions.sh describe`, the admin client's `describeTransactions`).
//!
//! Per id: its state's Kafka name, producer id and epoch, transaction timeout, when the open
//! transaction began (-1 when none is open) and its partitions by topic. An id whose
//! `__transaction_state` partition this broker does not lead is NOT_COORDINATOR (loading:
//! COORDINATOR_LOAD_IN_PROGRESS); an id it does not know is TRANSACTIONAL_ID_NOT_FOUND.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use kafka_protocol::ResponseError;

use super::errors::txn_error_code;
use super::RequestContext;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 0 };

/// DescribeTransactions.
pub fn handle(
    ctx: &RequestContext,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = ctx.broker.txns.read(|coordinator| {
        req.transactional_ids
            .iter()
            .map(|id| {
                let answer = TransactionState::default()
                    .with_transactional_id(id.clone())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1);
                if let Err(error) = coordinator.serving(id.as_str()) {
                    return answer.with_error_code(txn_error_code(&error, true));
                }
                let Some(meta) = coordinator.metadata(id.as_str()) else {
                    return answer.with_error_code(ResponseError::TransactionalIdNotFound.code());
                };
                let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                for (topic, partition) in &meta.partitions {
                    topics.entry(topic.as_str()).or_default().push(*partition);
                }
                answer
                    .with_error_code(0)
                    .with_transaction_state(StrBytes::from_static_str(meta.state.name()))
                    .with_transaction_timeout_ms(meta.timeout_ms)
                    .with_transaction_start_time_ms(meta.start_ms)
                    .with_producer_id(ProducerId(meta.producer_id))
                    .with_producer_epoch(meta.producer_epoch)
                    .with_topics(
                        topics
                            .into_iter()
                            .map(|(topic, partitions)| {
                                TopicData::default()
                                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                                    .with_partitions(partitions)
                            })
                            .collect(),
                    )
            })
            .collect()
    });
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, ApiKey, InitProducerIdRequest, ListTransactionsRequest,
        TransactionalId,
    };

    use super::*;
    use crate::api::test_support::{broker_with, create_topic, ctx};

    fn id(s: &str) -> TransactionalId {
        TransactionalId(StrBytes::from_string(s.to_string()))
    }

    #[tokio::test]
    async fn describe_and_list_show_the_coordinators_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker_with(dir.path(), &[("transaction.state.log.num.partitions", "3")]).await;
        create_topic(&b, "t", 2, &[]).await;
        b.ensure_transaction_topic().await.unwrap();
        let init = crate::api::init_producer_id::handle(
            &ctx(&b, ApiKey::InitProducerId, 4),
            InitProducerIdRequest::default()
                .with_transactional_id(Some(id("tx-a")))
                .with_transaction_timeout_ms(30_000),
        )
        .await;
        assert_eq!(init.error_code, 0);
        let added = crate::api::add_partitions_to_txn::handle(
            &ctx(&b, ApiKey::AddPartitionsToTxn, 3),
            AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(id("tx-a"))
                .with_v3_and_below_producer_id(init.producer_id)
                .with_v3_and_below_producer_epoch(init.producer_epoch)
                .with_v3_and_below_topics(vec![
                    kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(StrBytes::from_static_str("t")))
                        .with_partitions(vec![1, 0]),
                ]),
        )
        .await;
        assert_eq!(
            added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
            0
        );
        let described = handle(
            &ctx(&b, ApiKey::DescribeTransactions, 0),
            DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![id("tx-a"), id("nobody")]),
        );
        let a = &described.transaction_states[0];
        assert_eq!(a.error_code, 0);
        assert_eq!(a.transaction_state.as_str(), "Ongoing");
        assert_eq!((a.producer_id, a.producer_epoch), (init.producer_id, 0));
        assert_eq!(a.transaction_timeout_ms, 30_000);
        assert!(a.transaction_start_time_ms > 0);
        assert_eq!(a.topics[0].partitions, vec![0, 1]);
        assert_eq!(
            described.transaction_states[1].error_code,
            ResponseError::TransactionalIdNotFound.code()
        );
        let list = |filters: Vec<&'static str>, version: i16| {
            crate::api::list_transactions::handle(
                &ctx(&b, ApiKey::ListTransactions, version),
                ListTransactionsRequest::default()
                    .with_state_filters(
                        filters.into_iter().map(StrBytes::from_static_str).collect(),
                    )
                    .with_duration_filter(-1),
            )
        };
        // The partition's leader shows the producer and where its open transaction begins.
        let partition = b.replicas.leader_partition("t", 1).unwrap();
        partition
            .append_as_leader(
                crate::log::batch::testing::producer_batch(
                    init.producer_id.0,
                    init.producer_epoch,
                    0,
                    2,
                    1,
                    true,
                ),
                1,
            )
            .unwrap();
        let producers = crate::api::describe_producers::handle(
            &ctx(&b, ApiKey::DescribeProducers, 0),
            kafka_protocol::messages::DescribeProducersRequest::default().with_topics(vec![
                kafka_protocol::messages::describe_producers_request::TopicRequest::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partition_indexes(vec![1, 7]),
            ]),
        );
        let p1 = &producers.topics[0].partitions[0];
        assert_eq!(p1.error_code, 0);
        assert_eq!(p1.active_producers.len(), 1);
        let active = &p1.active_producers[0];
        assert_eq!(active.producer_id, init.producer_id);
        assert_eq!(
            (active.last_sequence, active.current_txn_start_offset),
            (1, 0)
        );
        assert_eq!(
            producers.topics[0].partitions[1].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        let all = list(vec![], 1);
        assert_eq!(all.transaction_states.len(), 1);
        assert_eq!(
            all.transaction_states[0].transaction_state.as_str(),
            "Ongoing"
        );
        let none = list(vec!["CompleteCommit", "Bogus"], 1);
        assert!(none.transaction_states.is_empty());
        assert_eq!(
            none.unknown_state_filters,
            vec![StrBytes::from_static_str("Bogus")]
        );
    }
}
