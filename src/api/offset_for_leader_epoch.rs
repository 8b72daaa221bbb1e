//! OffsetForLeaderEpoch (key 23), versions 2–4: where a leader epoch ends in the leader's log
//! (KIP-101, KIP-279), from the partition's leader epoch cache.
//!
//! Per partition: the largest epoch `<=` the one asked for that the log knows, and its end
//! offset (where the next epoch began, or the log end offset for the latest epoch); an epoch
//! older than everything in the log answers epoch -1 and offset -1 (Kafka's
//! UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET) with no error. Clients (librdkafka, the Java
//! consumer) use it after a leader change to check that the offset they were at still exists
//! in the new leader's history; followers may use it to find where to truncate.
//!
//! Only the leader answers (NOT_LEADER_OR_FOLLOWER elsewhere). `current_leader_epoch` (-1 = not
//! given) fences stale or future askers: newer than ours is UNKNOWN_LEADER_EPOCH, older is
//! FENCED_LEADER_EPOCH. Unknown topics and partitions get UNKNOWN_TOPIC_OR_PARTITION.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::protocol::VersionRange;
use kafka_protocol::ResponseError;

use super::errors::replica_error_code;
use super::RequestContext;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 2, max: 4 };

/// Answers OffsetForLeaderEpoch.
pub fn handle(
    ctx: &RequestContext,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let answer = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let partition = match ctx
                        .broker
                        .replicas
                        .leader_partition(topic.topic.as_str(), p.partition)
                    {
                        Ok(partition) => partition,
                        Err(e) => return answer.with_error_code(replica_error_code(&e)),
                    };
                    if p.current_leader_epoch >= 0 {
                        let ours = partition.leader_epoch();
                        if p.current_leader_epoch > ours {
                            return answer
                                .with_error_code(ResponseError::UnknownLeaderEpoch.code());
                        }
                        if p.current_leader_epoch < ours {
                            return answer.with_error_code(ResponseError::FencedLeaderEpoch.code());
                        }
                    }
                    match partition.log().end_offset_for_epoch(p.leader_epoch) {
                        Some((epoch, end)) => answer.with_leader_epoch(epoch).with_end_offset(end),
                        None => answer,
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::{ApiKey, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::api::test_support::{broker_with, create_topic, ctx};
    use crate::log::batch::testing::batch;

    fn ask(partition: i32, current: i32, epoch: i32) -> OffsetForLeaderTopic {
        OffsetForLeaderTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("epochs")))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(current)
                .with_leader_epoch(epoch)])
    }

    #[tokio::test]
    async fn answers_where_each_epoch_ends_and_fences_stale_askers() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker_with(dir.path(), &[]).await;
        create_topic(&b, "epochs", 1, &[]).await;
        let partition = b.replicas.leader_partition("epochs", 0).unwrap();
        // Epoch 0 wrote offsets 0..6; the log's later history is epoch 3 (from 6).
        for _ in 0..3 {
            partition.log().append(batch(0, 2, 1), 1, 0).unwrap();
        }
        partition.log().append(batch(0, 4, 1), 1, 3).unwrap();
        for version in 2..=4 {
            let c = ctx(&b, ApiKey::OffsetForLeaderEpoch, version);
            let req = OffsetForLeaderEpochRequest::default().with_topics(vec![
                ask(0, -1, 0),
                ask(0, -1, 2),
                ask(0, -1, 3),
                ask(0, 0, 0),
                ask(0, 1, 0),
                ask(7, -1, 0),
            ]);
            let resp = handle(&c, req);
            let got: Vec<(i16, i32, i64)> = resp
                .topics
                .iter()
                .map(|t| {
                    let p = &t.partitions[0];
                    (p.error_code, p.leader_epoch, p.end_offset)
                })
                .collect();
            assert_eq!(
                got,
                vec![
                    (0, 0, 6),
                    (0, 0, 6),
                    (0, 3, 10),
                    (0, 0, 6),
                    (ResponseError::UnknownLeaderEpoch.code(), -1, -1),
                    (ResponseError::UnknownTopicOrPartition.code(), -1, -1),
                ],
                "v{version}"
            );
        }
    }
}
