//! ListOffsets (key 2), versions 1–10: the offset of a partition for a timestamp or for one of
//! the special timestamps.
//!
//! Per partition, following Kafka's broker:
//! - -2 EARLIEST and -4 EARLIEST_LOCAL (v8+): the log start offset (without tiered storage the
//!   local log starts where the log does). -1 LATEST: the last fetchable offset: for consumers
//!   the high watermark (read_committed, v2+: the last stable offset, below it while a
//!   transaction is open), for followers and debugging tools the log end offset.
//!   These answer timestamp -1.
//! - -3 MAX_TIMESTAMP (v7+): the record with the largest timestamp (the first one on ties).
//! - -5 LATEST_TIERED (v9+, KIP-1005): gregor has no tiered storage, so, as Kafka answers for a
//!   topic without remote storage, offset -1, timestamp -1 and leader epoch -1 with no error.
//! - A timestamp >= 0: the first record whose timestamp is at least that, with its timestamp.
//! - Any other negative timestamp, or a special one below the version that introduced it:
//!   UNSUPPORTED_VERSION for that partition.
//!
//! A MAX_TIMESTAMP or timestamp lookup that finds nothing, or finds a record at or above the
//! last fetchable offset (not yet visible to the asker), answers offset -1 and timestamp -1
//! with no error, as Kafka does.
//!
//! `current_leader_epoch` (v4+, -1 = not given) fences stale or future clients: newer than ours
//! is UNKNOWN_LEADER_EPOCH, older is FENCED_LEADER_EPOCH. The leader epoch returned (v4+) is
//! the partition's current leader epoch; Kafka returns the epoch of the batch holding the
//! returned offset, which is the same while a partition has only ever had one leader epoch
//! (the log layer does not expose per-batch epochs yet).
//!
//! A partition named twice in one request is answered once, with INVALID_REQUEST; a topic
//! named in several entries is answered in one entry (Kafka groups the answer by topic).

use std::collections::{HashMap, HashSet};

use kafka_protocol::messages::list_offsets_request::ListOffsetsPartition;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::protocol::VersionRange;
use kafka_protocol::ResponseError;

use super::errors::{log_error_code, replica_error_code};
use super::RequestContext;
use crate::replica::Partition;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 10 };

/// The special timestamps.
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
const LATEST_TIERED_TIMESTAMP: i64 = -5;

/// `replica_id` of an ordinary consumer.
const CONSUMER_REPLICA_ID: i32 = -1;
/// `current_leader_epoch` when the client does not know it.
const UNKNOWN_EPOCH: i32 = -1;

/// A found offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    timestamp: i64,
    offset: i64,
    leader_epoch: i32,
}

/// The first version that knows a special (negative) timestamp; None for unknown ones.
fn first_version_of(timestamp: i64) -> Option<i16> {
    match timestamp {
        LATEST_TIMESTAMP | EARLIEST_TIMESTAMP => Some(1),
        MAX_TIMESTAMP => Some(7),
        EARLIEST_LOCAL_TIMESTAMP => Some(8),
        LATEST_TIERED_TIMESTAMP => Some(9),
        _ => None,
    }
}

/// Answers ListOffsets.
pub fn handle(ctx: &RequestContext, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut occurrences: HashMap<(&str, i32), usize> = HashMap::new();
    for topic in &req.topics {
        for partition in &topic.partitions {
            *occurrences
                .entry((topic.name.as_str(), partition.partition_index))
                .or_insert(0) += 1;
        }
    }

    let mut topics: Vec<ListOffsetsTopicResponse> = Vec::new();
    let mut topic_positions: HashMap<&str, usize> = HashMap::new();
    let mut answered: HashSet<(&str, i32)> = HashSet::new();
    for topic in &req.topics {
        let name = topic.name.as_str();
        for partition in &topic.partitions {
            let key = (name, partition.partition_index);
            if !answered.insert(key) {
                continue;
            }
            let response = if occurrences.get(&key).copied().unwrap_or(0) > 1 {
                error(
                    partition.partition_index,
                    ResponseError::InvalidRequest.code(),
                )
            } else {
                list_one(ctx, &req, name, partition)
            };
            let position = *topic_positions.entry(name).or_insert_with(|| {
                topics.push(ListOffsetsTopicResponse::default().with_name(topic.name.clone()));
                topics.len() - 1
            });
            if let Some(entry) = topics.get_mut(position) {
                entry.partitions.push(response);
            }
        }
    }
    ListOffsetsResponse::default()
        .with_throttle_time_ms(0)
        .with_topics(topics)
}

/// Answers one partition.
fn list_one(
    ctx: &RequestContext,
    req: &ListOffsetsRequest,
    topic: &str,
    asked: &ListOffsetsPartition,
) -> ListOffsetsPartitionResponse {
    let index = asked.partition_index;
    let timestamp = asked.timestamp;
    if timestamp < 0 && first_version_of(timestamp).is_none_or(|first| ctx.version < first) {
        return error(index, ResponseError::UnsupportedVersion.code());
    }
    let partition = match ctx.broker.replicas.leader_partition(topic, index) {
        Ok(partition) => partition,
        Err(e) => return error(index, replica_error_code(&e)),
    };
    let leader_epoch = partition.leader_epoch();
    if asked.current_leader_epoch != UNKNOWN_EPOCH {
        if asked.current_leader_epoch > leader_epoch {
            return error(index, ResponseError::UnknownLeaderEpoch.code());
        }
        if asked.current_leader_epoch < leader_epoch {
            return error(index, ResponseError::FencedLeaderEpoch.code());
        }
    }
    match find(&partition, req, timestamp, leader_epoch) {
        Ok(found) => {
            let mut response = ListOffsetsPartitionResponse::default()
                .with_partition_index(index)
                .with_error_code(0);
            if let Some(found) = found {
                response.timestamp = found.timestamp;
                response.offset = found.offset;
                if ctx.version >= 4 {
                    response.leader_epoch = found.leader_epoch;
                }
            }
            response
        }
        Err(code) => error(index, code),
    }
}

/// Looks the timestamp up in the partition's log; None when nothing (visible) matches.
fn find(
    partition: &Partition,
    req: &ListOffsetsRequest,
    timestamp: i64,
    leader_epoch: i32,
) -> Result<Option<Found>, i16> {
    let log = partition.log();
    // What the asker may see: read_committed stops at the last stable offset.
    let last_fetchable_offset = if req.replica_id.0 == CONSUMER_REPLICA_ID {
        if req.isolation_level == 1 {
            partition.last_stable_offset()
        } else {
            partition.high_watermark()
        }
    } else {
        log.log_end_offset()
    };
    let at = |offset: i64| Found {
        timestamp: -1,
        offset,
        leader_epoch,
    };
    let found = match timestamp {
        LATEST_TIMESTAMP => return Ok(Some(at(last_fetchable_offset))),
        EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => {
            return Ok(Some(at(log.log_start_offset())))
        }
        LATEST_TIERED_TIMESTAMP => {
            return Ok(Some(Found {
                timestamp: -1,
                offset: -1,
                leader_epoch: -1,
            }))
        }
        // The log answers (timestamp, offset) here...
        MAX_TIMESTAMP => log
            .max_timestamp()
            .map_err(|e| log_error_code(&e))?
            .map(|(timestamp, offset)| (offset, timestamp)),
        // ...and (offset, timestamp) here (docs/design/log-api.md).
        target => log
            .offset_for_timestamp(target)
            .map_err(|e| log_error_code(&e))?,
    };
    Ok(found
        .filter(|(offset, _)| *offset < last_fetchable_offset)
        .map(|(offset, timestamp)| Found {
            timestamp,
            offset,
            leader_epoch,
        }))
}

/// A partition answer with an error: offset and timestamp -1, no leader epoch.
fn error(partition_index: i32, code: i16) -> ListOffsetsPartitionResponse {
    ListOffsetsPartitionResponse::default()
        .with_partition_index(partition_index)
        .with_error_code(code)
        .with_timestamp(-1)
        .with_offset(-1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::broker_with;
    use crate::api::RequestContext;
    use crate::broker::Broker;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::list_offsets_request::ListOffsetsTopic;
    use kafka_protocol::messages::{ApiKey, BrokerId, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use std::sync::Arc;

    async fn broker(dir: &std::path::Path) -> Arc<Broker> {
        broker_with(dir, &[]).await
    }

    fn ctx(broker: &Arc<Broker>, version: i16) -> RequestContext {
        crate::api::test_support::ctx(broker, ApiKey::ListOffsets, version)
    }

    async fn create(broker: &Broker, name: &str, partitions: i32) {
        crate::api::test_support::create_topic(broker, name, partitions, &[]).await;
    }

    /// One v2 batch holding one record per timestamp.
    fn batch(timestamps: &[i64]) -> Bytes {
        let records: Vec<Record> = timestamps
            .iter()
            .enumerate()
            .map(|(i, ts)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i64::try_from(i).unwrap(),
                sequence: i32::try_from(i).unwrap(),
                timestamp: *ts,
                key: None,
                value: Some(Bytes::from_static(b"v")),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.freeze()
    }

    fn partition(index: i32, timestamp: i64) -> ListOffsetsPartition {
        ListOffsetsPartition::default()
            .with_partition_index(index)
            .with_timestamp(timestamp)
    }

    fn request(topic: &str, partitions: Vec<ListOffsetsPartition>) -> ListOffsetsRequest {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(CONSUMER_REPLICA_ID))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions)])
    }

    /// (error, timestamp, offset, leader epoch) of every partition answer, in order.
    fn answers(resp: &ListOffsetsResponse) -> Vec<(i16, i64, i64, i32)> {
        resp.topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| (p.error_code, p.timestamp, p.offset, p.leader_epoch))
            .collect()
    }

    fn encodes(response: &ListOffsetsResponse, version: i16) {
        let mut buf = BytesMut::new();
        response
            .encode(&mut buf, version)
            .unwrap_or_else(|e| panic!("v{version} does not encode: {e}"));
    }

    /// A topic with offsets 0..=3 at timestamps 1000, 3000, 2000 (one batch) and 5000.
    async fn filled(dir: &std::path::Path) -> Arc<Broker> {
        let b = broker(dir).await;
        create(&b, "t", 1).await;
        let p = b.replicas.leader_partition("t", 0).unwrap();
        p.append_as_leader(batch(&[1000, 3000, 2000]), 10_000)
            .unwrap();
        p.append_as_leader(batch(&[5000]), 10_000).unwrap();
        assert_eq!(p.high_watermark(), 4);
        b
    }

    #[tokio::test]
    async fn special_and_real_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let b = filled(dir.path()).await;
        let resp = handle(
            &ctx(&b, 10),
            request(
                "t",
                vec![
                    partition(0, EARLIEST_TIMESTAMP),
                    partition(1, LATEST_TIMESTAMP),
                ],
            ),
        );
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(answers(&resp), vec![(0, -1, 0, 0), (unknown, -1, -1, -1)]);
        let cases = [
            (LATEST_TIMESTAMP, (0, -1, 4, 0)),
            (EARLIEST_LOCAL_TIMESTAMP, (0, -1, 0, 0)),
            (MAX_TIMESTAMP, (0, 5000, 3, 0)),
            (LATEST_TIERED_TIMESTAMP, (0, -1, -1, -1)),
            (0, (0, 1000, 0, 0)),
            (1000, (0, 1000, 0, 0)),
            (1500, (0, 3000, 1, 0)),
            (3001, (0, 5000, 3, 0)),
            (6000, (0, -1, -1, -1)),
        ];
        for (timestamp, expected) in cases {
            let resp = handle(&ctx(&b, 10), request("t", vec![partition(0, timestamp)]));
            assert_eq!(answers(&resp), vec![expected], "timestamp {timestamp}");
        }
    }

    #[tokio::test]
    async fn special_timestamps_need_their_version() {
        let dir = tempfile::tempdir().unwrap();
        let b = filled(dir.path()).await;
        let unsupported = ResponseError::UnsupportedVersion.code();
        let cases = [
            (MAX_TIMESTAMP, 6, unsupported),
            (MAX_TIMESTAMP, 7, 0),
            (EARLIEST_LOCAL_TIMESTAMP, 7, unsupported),
            (EARLIEST_LOCAL_TIMESTAMP, 8, 0),
            (LATEST_TIERED_TIMESTAMP, 8, unsupported),
            (LATEST_TIERED_TIMESTAMP, 9, 0),
            (-6, 10, unsupported),
            (-100, 10, unsupported),
        ];
        for (timestamp, version, code) in cases {
            let resp = handle(
                &ctx(&b, version),
                request("t", vec![partition(0, timestamp)]),
            );
            assert_eq!(
                resp.topics[0].partitions[0].error_code, code,
                "timestamp {timestamp} at v{version}"
            );
        }
    }

    #[tokio::test]
    async fn leader_epoch_fencing() {
        let dir = tempfile::tempdir().unwrap();
        let b = filled(dir.path()).await;
        let p = b.replicas.leader_partition("t", 0).unwrap();
        p.set_leader_epoch(2);
        let with_epoch =
            |epoch: i32| partition(0, LATEST_TIMESTAMP).with_current_leader_epoch(epoch);
        let resp = handle(&ctx(&b, 4), request("t", vec![with_epoch(3)]));
        assert_eq!(
            resp.topics[0].partitions[0].error_code,
            ResponseError::UnknownLeaderEpoch.code()
        );
        let resp = handle(&ctx(&b, 4), request("t", vec![with_epoch(1)]));
        assert_eq!(
            resp.topics[0].partitions[0].error_code,
            ResponseError::FencedLeaderEpoch.code()
        );
        let resp = handle(&ctx(&b, 4), request("t", vec![with_epoch(2)]));
        assert_eq!(answers(&resp), vec![(0, -1, 4, 2)]);
        let resp = handle(&ctx(&b, 4), request("t", vec![with_epoch(-1)]));
        assert_eq!(answers(&resp), vec![(0, -1, 4, 2)]);
    }

    #[tokio::test]
    async fn duplicates_and_grouping() {
        let dir = tempfile::tempdir().unwrap();
        let b = filled(dir.path()).await;
        create(&b, "u", 2).await;
        let mut req = request(
            "t",
            vec![
                partition(0, LATEST_TIMESTAMP),
                partition(0, EARLIEST_TIMESTAMP),
            ],
        );
        req.topics.push(
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("u")))
                .with_partitions(vec![partition(1, LATEST_TIMESTAMP)]),
        );
        req.topics.push(
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("u")))
                .with_partitions(vec![partition(0, LATEST_TIMESTAMP)]),
        );
        let resp = handle(&ctx(&b, 5), req);
        assert_eq!(resp.topics.len(), 2);
        assert_eq!(resp.topics[0].name.as_str(), "t");
        assert_eq!(
            answers(&resp),
            vec![
                (ResponseError::InvalidRequest.code(), -1, -1, -1),
                (0, -1, 0, 0),
                (0, -1, 0, 0),
            ]
        );
        let indexes: Vec<i32> = resp.topics[1]
            .partitions
            .iter()
            .map(|p| p.partition_index)
            .collect();
        assert_eq!(indexes, vec![1, 0]);
    }

    #[tokio::test]
    async fn every_version_encodes() {
        let dir = tempfile::tempdir().unwrap();
        let b = filled(dir.path()).await;
        let timestamps = [
            EARLIEST_TIMESTAMP,
            LATEST_TIMESTAMP,
            MAX_TIMESTAMP,
            EARLIEST_LOCAL_TIMESTAMP,
            LATEST_TIERED_TIMESTAMP,
            1500,
        ];
        for version in 1..=10 {
            for timestamp in timestamps {
                let resp = handle(
                    &ctx(&b, version),
                    request("t", vec![partition(0, timestamp), partition(9, timestamp)]),
                );
                for p in resp.topics.iter().flat_map(|t| &t.partitions) {
                    if version < 4 {
                        assert_eq!(p.leader_epoch, -1, "v{version} has no leader epoch");
                    }
                }
                encodes(&resp, version);
            }
        }
    }
}
