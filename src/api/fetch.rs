//! Fetch (key 1), v4 upward: read stored batches for consumers.
//!
//! - Partitions are named (v4–v12) or given by topic id (v13+, UNKNOWN_TOPIC_ID when unknown).
//! - Bytes: the response holds at most `min(max_bytes, fetch.max.bytes)` of records, each
//!   partition at most `partition_max_bytes`, except that the first partition with data returns
//!   its first batch whole however large (KIP-74), so a consumer can always make progress.
//!   A fetch offset inside a batch returns that whole batch (the log reads from the batch that
//!   contains the offset).
//! - Long poll: if fewer than `min_bytes` are available and no partition has an error, the
//!   request waits, without holding up the connection, until enough bytes arrive (any requested
//!   partition's high watermark moving wakes it) or `max_wait_ms` passes (capped by
//!   `fetch.max.wait.ms.max`). A stopping broker answers parked long polls at once, so a
//!   consumer's long poll never delays a shutdown.
//! - Fetch sessions (KIP-227, v7+) are declined: every response carries session id 0, which
//!   tells the client to keep sending full fetch requests.
//! - NOT_LEADER_OR_FOLLOWER and FENCED_LEADER_EPOCH carry the current leader and its endpoint
//!   from v16 (KIP-951).
//! - Only the cluster's brokers, on the authenticated internal listener, may fetch as replicas;
//!   a follower fetch from any other connection gets TOPIC_AUTHORIZATION_FAILED for every
//!   partition (Kafka requires CLUSTER_ACTION for it).
//! - Followers (a `replica_id`, in `replica_state` from v15) read up to the log end rather than
//!   the high watermark, their fetch offset tells the leader how far their copy goes (which
//!   moves the high watermark), and their long polls wake on appends. A follower whose
//!   `last_fetched_epoch` (v12+) does not end where its fetch offset says gets the
//!   `diverging_epoch` where this log's history of that epoch ends (KIP-320) and no records.
//! - `read_committed` reads stop at the last stable offset (the first offset of the oldest
//!   open transaction, or of a closed one whose marker the high watermark has not passed) and
//!   carry the aborted transactions from the fetch offset to the last stable offset (the
//!   aborted-transaction index), so the client drops their records; read_uncommitted reads go
//!   to the high watermark and get no list.
//! - Records are not read into memory: a partition's answer of at least
//!   [`SENDFILE_MIN_BYTES`] is a range of its segment file that the connection sends with
//!   `sendfile` (a [`FileRefs`] placeholder in the response); smaller ones are read, since one
//!   `sendfile` per tiny partition would cost more than the copy.

use std::time::Duration;

use bytes::Bytes;
use futures::future::select_all;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint,
    PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, ResponseKind};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use kafka_protocol::ResponseError;

use super::errors::{replica_error_code, LeaderHints};
use super::{Reply, RequestContext};
use crate::log::{FileSlice, LogError};
use crate::protocol::FileRefs;
use crate::replica::{FollowerFetch, ReplicaError};
use crate::server::Principal;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 4, max: 18 };

/// Kafka's FINAL_EPOCH: a full fetch without a session.
const FINAL_EPOCH: i32 = -1;

/// A partition's records of at least this many bytes are sent from the file (`sendfile`);
/// smaller ones are read into the response.
pub const SENDFILE_MIN_BYTES: usize = 16 * 1024;

/// Phase one of Fetch: answer now if there is enough data, else wait in phase two.
pub fn handle(ctx: RequestContext, req: FetchRequest) -> Reply {
    let version = ctx.version;
    if version >= 7 {
        if req.session_id != 0 {
            return Reply::Ready(ResponseKind::Fetch(
                FetchResponse::default()
                    .with_error_code(ResponseError::FetchSessionIdNotFound.code()),
            ));
        }
        if req.session_epoch != 0 && req.session_epoch != FINAL_EPOCH {
            return Reply::Ready(ResponseKind::Fetch(
                FetchResponse::default()
                    .with_error_code(ResponseError::InvalidFetchSessionEpoch.code()),
            ));
        }
    }
    let response_max_bytes = usize::try_from(req.max_bytes.max(0))
        .unwrap_or(0)
        .min(ctx.broker.config.fetch_max_bytes());
    let min_bytes = usize::try_from(req.min_bytes.max(0)).unwrap_or(0);
    let max_wait = Duration::from_millis(
        u64::try_from(req.max_wait_ms.max(0))
            .unwrap_or(0)
            .min(ctx.broker.config.fetch_max_wait_ms_max()),
    );
    let read_committed = req.isolation_level == 1;
    let follower = follower_of(&req, version);
    let topics = req.topics;
    if follower.is_some() && ctx.principal != Principal::Broker {
        // Only the cluster's own brokers fetch as replicas (Kafka requires CLUSTER_ACTION): a
        // client claiming a replica id would read past the high watermark and move it.
        tracing::warn!(peer = %ctx.peer, "a client fetched as a replica; refused");
        return Reply::Ready(ResponseKind::Fetch(refuse_all(
            &topics,
            version,
            ResponseError::TopicAuthorizationFailed.code(),
        )));
    }

    let (response, files, bytes, has_error) =
        read_all(&ctx, &topics, response_max_bytes, read_committed, follower);
    if bytes >= min_bytes || has_error || max_wait.is_zero() {
        return Reply::ReadyFiles(ResponseKind::Fetch(response), files);
    }
    drop(files);
    Reply::DeferredFiles(Box::pin(async move {
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut watchers = Vec::new();
        for topic in &topics {
            let name = topic_name(&ctx, topic, version);
            for p in &topic.partitions {
                if let Some(name) = name.as_deref() {
                    if let Ok(partition) = ctx.broker.replicas.leader_partition(name, p.partition) {
                        // A follower waits for new records, a consumer for committed ones.
                        watchers.push(if follower.is_some() {
                            partition.subscribe_log_end()
                        } else {
                            partition.subscribe_high_watermark()
                        });
                    }
                }
            }
        }
        let mut shutdown = ctx.broker.shutdown_signal();
        loop {
            // Read again now that the watchers are subscribed: a record appended between phase
            // one's read and the subscriptions would otherwise wake nobody.
            let (response, files, bytes, has_error) =
                read_all(&ctx, &topics, response_max_bytes, read_committed, follower);
            let stopping = *shutdown.borrow_and_update();
            if bytes >= min_bytes
                || has_error
                || stopping
                || tokio::time::Instant::now() >= deadline
            {
                return Some((ResponseKind::Fetch(response), files));
            }
            // A watcher whose partition went away (topic deleted) reports its index so it is
            // dropped instead of waking this loop again and again.
            let changes = async {
                if watchers.is_empty() {
                    std::future::pending::<Option<usize>>().await
                } else {
                    let (changed, index, _) =
                        select_all(watchers.iter_mut().map(|w| Box::pin(w.changed()))).await;
                    changed.is_err().then_some(index)
                }
            };
            let closed = tokio::select! {
                closed = changes => closed,
                _ = tokio::time::sleep_until(deadline) => None,
                _ = shutdown.changed() => None,
            };
            if let Some(index) = closed {
                watchers.swap_remove(index);
            }
        }
    }))
}

/// Every requested partition answered with `error_code`.
fn refuse_all(topics: &[FetchTopic], version: i16, error_code: i16) -> FetchResponse {
    let responses = topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_error_code(error_code)
                        .with_high_watermark(-1)
                        .with_last_stable_offset(-1)
                        .with_log_start_offset(-1)
                        .with_records(Some(Bytes::new()))
                })
                .collect();
            let mut entry = FetchableTopicResponse::default().with_partitions(partitions);
            if version >= 13 {
                entry.topic_id = topic.topic_id;
            } else {
                entry.topic = topic.topic.clone();
            }
            entry
        })
        .collect();
    FetchResponse::default().with_responses(responses)
}

/// The topic name a request entry refers to (by id from v13).
fn topic_name(ctx: &RequestContext, topic: &FetchTopic, version: i16) -> Option<String> {
    if version >= 13 {
        ctx.broker
            .controller
            .image()
            .topic_by_id(&topic.topic_id)
            .map(|t| t.name.clone())
    } else {
        Some(topic.topic.as_str().to_string())
    }
}

/// The broker a follower fetch comes from (`replica_id`, in `replica_state` from v15), or
/// `None` for a consumer.
fn follower_of(req: &FetchRequest, version: i16) -> Option<i32> {
    let id = if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    (id >= 0).then_some(id)
}

/// Reads every requested partition once. Returns the response, the file slices its record
/// placeholders stand for, the record bytes in it, and whether any partition has an error. A
/// follower's fetch offset is its log end: recording it may move the high watermark, and it
/// reads up to the log end.
fn read_all(
    ctx: &RequestContext,
    topics: &[FetchTopic],
    response_max_bytes: usize,
    read_committed: bool,
    follower: Option<i32>,
) -> (FetchResponse, FileRefs, usize, bool) {
    let mut files = FileRefs::new();
    let version = ctx.version;
    let mut remaining = response_max_bytes;
    let mut total = 0usize;
    let mut has_error = false;
    let mut first_data = true;
    let mut responses = Vec::with_capacity(topics.len());
    for topic in topics {
        let name = topic_name(ctx, topic, version);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let mut data = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_records(Some(Bytes::new()));
            if read_committed {
                data.aborted_transactions = Some(Vec::new());
            }
            let Some(name) = name.as_deref() else {
                data.error_code = ResponseError::UnknownTopicId.code();
                has_error = true;
                partitions.push(data);
                continue;
            };
            let partition = match ctx.broker.replicas.leader_partition(name, p.partition) {
                Ok(partition) => partition,
                Err(e) => {
                    data.error_code = replica_error_code(&e);
                    // As Kafka checks the epoch first: a fetcher that names a newer leader
                    // epoch than this copy's has seen metadata this broker has not applied yet
                    // (it may be the new leader a moment from now): UNKNOWN_LEADER_EPOCH, retry
                    // soon, rather than NOT_LEADER_OR_FOLLOWER.
                    let newer =
                        version >= 9
                            && ctx.broker.replicas.hosted(name, p.partition).is_some_and(
                                |hosted| p.current_leader_epoch > hosted.leader_epoch(),
                            );
                    if newer {
                        data.error_code = ResponseError::UnknownLeaderEpoch.code();
                    }
                    has_error = true;
                    partitions.push(data);
                    continue;
                }
            };
            if version >= 9 && p.current_leader_epoch >= 0 {
                if let Err(e) = partition.check_leader_epoch(p.current_leader_epoch) {
                    data.error_code = replica_error_code(&e);
                    has_error = true;
                    partitions.push(data);
                    continue;
                }
            }
            let partition_max = usize::try_from(p.partition_max_bytes.max(0)).unwrap_or(0);
            let max_bytes = partition_max.min(remaining);
            let read = match follower {
                Some(id) => {
                    // KIP-320 (v12+): the epoch of the follower's last batch.
                    let last_epoch = (version >= 12).then_some(p.last_fetched_epoch);
                    let now = crate::replica::manager::now_ms();
                    match partition.serve_follower_fetch(
                        id,
                        p.fetch_offset,
                        last_epoch,
                        max_bytes,
                        now,
                    ) {
                        Ok(FollowerFetch::Records(read)) => Ok(read),
                        Ok(FollowerFetch::Diverging {
                            epoch,
                            end_offset,
                            high_watermark,
                            log_start_offset,
                        }) => {
                            data.diverging_epoch = EpochEndOffset::default()
                                .with_epoch(epoch)
                                .with_end_offset(end_offset);
                            data.high_watermark = high_watermark;
                            data.last_stable_offset = high_watermark;
                            data.log_start_offset = log_start_offset;
                            // Answer at once: the follower must truncate before it fetches again.
                            has_error = true;
                            partitions.push(data);
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
                None => partition.read(p.fetch_offset, max_bytes, first_data, read_committed),
            };
            let read = read.and_then(|read| {
                let records = records_field(read.records, &mut files)?;
                Ok((
                    read.high_watermark,
                    read.last_stable_offset,
                    read.log_start_offset,
                    read.aborted,
                    records,
                ))
            });
            match read {
                Ok((high_watermark, last_stable_offset, log_start_offset, aborted, records)) => {
                    data.high_watermark = high_watermark;
                    data.last_stable_offset = last_stable_offset;
                    data.log_start_offset = log_start_offset;
                    if read_committed {
                        data.aborted_transactions = Some(
                            aborted
                                .iter()
                                .map(|a| {
                                    AbortedTransaction::default()
                                        .with_producer_id(ProducerId(a.producer_id))
                                        .with_first_offset(a.first_offset)
                                })
                                .collect(),
                        );
                    }
                    let len = records.len();
                    if len > 0 {
                        first_data = false;
                    }
                    remaining = remaining.saturating_sub(len);
                    total += len;
                    data.records = Some(records);
                }
                Err(e) => {
                    data.error_code = replica_error_code(&e);
                    data.high_watermark = partition.high_watermark();
                    data.last_stable_offset = partition.last_stable_offset();
                    data.log_start_offset = partition.log().log_start_offset();
                    has_error = true;
                }
            }
            partitions.push(data);
        }
        let mut entry = FetchableTopicResponse::default().with_partitions(partitions);
        if version >= 13 {
            entry.topic_id = topic.topic_id;
        } else {
            entry.topic = topic.topic.clone();
        }
        responses.push(entry);
    }
    let mut response = FetchResponse::default().with_responses(responses);
    if has_error {
        add_leader_hints(ctx, &mut response, version);
    }
    (response, files, total, has_error)
}

/// The records field for `slice`: a placeholder the connection sends from the file, or (small
/// or too large to stand for) the bytes read now.
fn records_field(slice: FileSlice, files: &mut FileRefs) -> Result<Bytes, ReplicaError> {
    if slice.len() >= SENDFILE_MIN_BYTES {
        if let Some(field) = files.placeholder(slice.clone()) {
            return Ok(field);
        }
    }
    Ok(slice.read_batches().map_err(LogError::from)?)
}

/// KIP-951 (v16+): a partition refused with NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH names
/// its current leader and epoch, and the response carries those leaders' endpoints.
fn add_leader_hints(ctx: &RequestContext, response: &mut FetchResponse, version: i16) {
    if version < 16 {
        return;
    }
    let hinted = [
        ResponseError::NotLeaderOrFollower.code(),
        ResponseError::FencedLeaderEpoch.code(),
    ];
    let image = ctx.broker.controller.image();
    let mut hints = LeaderHints::default();
    for topic in &mut response.responses {
        let Some(info) = image.topic_by_id(&topic.topic_id) else {
            continue;
        };
        for p in &mut topic.partitions {
            if !hinted.contains(&p.error_code) {
                continue;
            }
            if let Some((leader, epoch)) = hints.leader_of(info, p.partition_index) {
                p.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
            }
        }
    }
    response.node_endpoints = hints
        .endpoints(&image)
        .into_iter()
        .map(|b| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(StrBytes::from_string(b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.map(StrBytes::from_string))
        })
        .collect();
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_request::FetchPartition;
    use kafka_protocol::messages::{ApiKey, TopicName};
    use kafka_protocol::protocol::{Decodable, HeaderVersion};
    use kafka_protocol::records::Compression;

    use super::*;
    use crate::api::test_support::{broker_with, create_topic, ctx};
    use crate::log::batch::testing::{batch, batch_with};
    use crate::protocol::{codec, Chunk};

    /// A partition with at least SENDFILE_MIN_BYTES to return goes out as a file chunk, a
    /// small one in memory; decoded, the frame holds exactly what the log holds.
    #[tokio::test]
    async fn large_reads_are_sent_from_the_file_small_ones_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker_with(dir.path(), &[]).await;
        create_topic(&b, "big", 2, &[]).await;
        let large = b.replicas.leader_partition("big", 0).unwrap();
        let small = b.replicas.leader_partition("big", 1).unwrap();
        for _ in 0..4 {
            large
                .append_as_leader(batch_with(0, &[1; 10], 1000, Compression::None), 1)
                .unwrap();
        }
        small.append_as_leader(batch(0, 2, 1), 1).unwrap();
        let stored: Vec<Bytes> = [&large, &small]
            .iter()
            .map(|p| p.log().read(0, 1 << 20, i64::MAX, true).unwrap())
            .collect();
        assert!(stored[0].len() >= SENDFILE_MIN_BYTES);
        assert!(stored[1].len() < SENDFILE_MIN_BYTES);

        let version = 12;
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_bytes(1 << 20)
            .with_session_epoch(FINAL_EPOCH)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("big")))
                .with_partitions(
                    (0..2)
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_partition_max_bytes(1 << 20)
                        })
                        .collect(),
                )]);
        let Reply::ReadyFiles(body, files) = handle(ctx(&b, ApiKey::Fetch, version), req) else {
            panic!("expected a ready fetch with file slices");
        };
        assert!(!files.is_empty());
        let frame =
            codec::encode_response_with_files(9, ApiKey::Fetch, version, &body, &files).unwrap();
        let file_chunks = frame
            .chunks()
            .iter()
            .filter(|c| matches!(c, Chunk::File(_)))
            .count();
        assert_eq!(
            file_chunks, 1,
            "only the large partition is sent from the file"
        );
        // Without the refs the placeholder would go out as zeros: encoding refuses.
        assert!(codec::encode_response(9, ApiKey::Fetch, version, &body).is_err());

        let mut bytes = frame.to_contiguous().unwrap();
        assert_eq!(bytes.len(), frame.len());
        let _size = bytes.split_to(4);
        let header = kafka_protocol::messages::ResponseHeader::decode(
            &mut bytes,
            FetchResponse::header_version(version),
        )
        .unwrap();
        assert_eq!(header.correlation_id, 9);
        let decoded = FetchResponse::decode(&mut bytes, version).unwrap();
        let got: Vec<Bytes> = decoded.responses[0]
            .partitions
            .iter()
            .map(|p| p.records.clone().unwrap_or_default())
            .collect();
        assert_eq!(got, stored);
    }
}
