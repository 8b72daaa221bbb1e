//! Produce (key 0), v3 upward: append record batches to partition logs.
//!
//! Phase one (in arrival order on the connection): validate `acks`, resolve each topic (by name,
//! or by id from v13), and append each partition's batch to its log, which validates it (magic
//! 2, length, CRC-32C, record count, `max.message.bytes`) and assigns offsets. Phase two waits
//! for what the acknowledgement promises (the fsync when `flush.messages` asks for one; for
//! acks=all, the high watermark passing the batch, i.e. every in-sync replica holding it, within
//! the request's `timeout_ms`, else REQUEST_TIMED_OUT) and builds the response. acks=all is
//! refused with NOT_ENOUGH_REPLICAS before appending when the ISR is smaller than
//! `min.insync.replicas`. acks=0 gets no
//! response at all, as in Kafka.
//!
//! Idempotent producers' batches are checked against the partition's producer state (see
//! `log::producer_state`): a retry of a batch the log holds is answered with the original
//! offsets (and, as Kafka does, its stored timestamp in `log_append_time_ms`) and still waits for
//! acks=all like the original; a stale epoch is INVALID_PRODUCER_EPOCH, a sequence gap
//! OUT_OF_ORDER_SEQUENCE_NUMBER, the same at every Produce version (as Kafka).
//!
//! Control batches are INVALID_RECORD: only the broker writes transaction markers. A
//! transactional batch needs the request's `transactional_id` (INVALID_RECORD without one, as
//! Kafka's "Produce requests with transactional records must have a transactionalId"); it opens
//! the producer's transaction on the partition, which holds the last stable offset until the
//! coordinator's marker closes it. Before a batch opens a transaction, the coordinator is asked
//! whether the partition was added to it (KIP-890 part 1, `transaction.partition.verification.
//! enable`, on by default; see [`super::txn_verification`]): a partition that was not gets
//! INVALID_TXN_STATE, one whose coordinator cannot answer now NOT_ENOUGH_REPLICAS (retried).
//! The question is asked in phase one, so the connection's next request waits for it, as each
//! Kafka connection waits for its previous request.
//!
//! Errors are per partition; one bad partition does not fail the others. NOT_LEADER_OR_FOLLOWER
//! carries the current leader and its endpoint from v10 (KIP-951). A compacted topic
//! refuses records without a key (INVALID_RECORD, with `record_errors` naming them, as Kafka);
//! the log layer checks that, so only compacted topics pay for looking inside batches. The record data is
//! never copied: the `records` field is a slice of the request frame, written to the segment.

use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use kafka_protocol::ResponseError;

use super::errors::{replica_error_code, LeaderHints};
use super::txn_verification::{produce_error, verify, Question, Verifier};
use super::{Reply, RequestContext};
use crate::cluster::metadata::reserved_topic;
use crate::cluster::MetadataImage;
use crate::log::batch::{frame_size, BatchHeader};
use crate::log::producer_state::TxnVerification;
use crate::log::{LogError, TimestampType};
use crate::replica::manager::now_ms;
use crate::replica::{Partition, ReplicaError};
use std::collections::HashMap;
use std::sync::Arc;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 3, max: 13 };

/// One partition's outcome of phase one.
struct Appended {
    response: PartitionProduceResponse,
    /// Offset the fsync must pass before the response may go out.
    flush_to: Option<(Arc<Partition>, i64)>,
    /// acks=all: offset the high watermark must reach (the ISR has the batch) and the leader
    /// epoch the batch was appended in.
    replicate_to: Option<(Arc<Partition>, i64, i32)>,
}

/// Phase one of Produce.
pub async fn handle(ctx: RequestContext, req: ProduceRequest) -> Reply {
    let version = ctx.version;
    let acks = req.acks;
    let valid_acks = matches!(acks, -1..=1);
    let image = ctx.broker.controller.image();
    let verification_on =
        req.transactional_id.is_some() && ctx.broker.config.transaction_partition_verification();
    let mut verified = if verification_on {
        verify_first_writes(&ctx, &req, &image).await
    } else {
        HashMap::new()
    };
    let now = now_ms();

    let mut topics: Vec<(TopicProduceResponse, Vec<Appended>)> = Vec::new();
    for topic_data in req.topic_data {
        let topic = if version >= 13 {
            image.topic_by_id(&topic_data.topic_id)
        } else {
            image.topic(topic_data.name.as_str())
        };
        let mut topic_response = TopicProduceResponse::default();
        if version >= 13 {
            topic_response.topic_id = topic_data.topic_id;
        } else {
            topic_response.name = topic_data.name.clone();
        }
        let unknown_topic_code = if version >= 13 {
            ResponseError::UnknownTopicId.code()
        } else {
            ResponseError::UnknownTopicOrPartition.code()
        };
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for partition_data in topic_data.partition_data {
            let index = partition_data.index;
            let error = |code: i16, message: Option<String>| Appended {
                response: partition_response(version, index, code, message),
                flush_to: None,
                replicate_to: None,
            };
            if !valid_acks {
                partitions.push(error(ResponseError::InvalidRequiredAcks.code(), None));
                continue;
            }
            let Some(topic) = topic else {
                partitions.push(error(unknown_topic_code, None));
                continue;
            };
            if topic.internal || reserved_topic(&topic.name).is_some() {
                // Only the broker writes internal topics (Kafka: "Cannot append to internal
                // topic").
                partitions.push(error(
                    ResponseError::InvalidTopicException.code(),
                    Some(format!("cannot append to internal topic {}", topic.name)),
                ));
                continue;
            }
            let partition = match ctx.broker.replicas.leader_partition(&topic.name, index) {
                Ok(p) => p,
                Err(e) => {
                    partitions.push(error(replica_error_code(&e), None));
                    continue;
                }
            };
            let Some(records) = partition_data.records.filter(|r| !r.is_empty()) else {
                partitions.push(error(
                    ResponseError::InvalidRecord.code(),
                    Some("a produce must carry one record batch per partition".to_string()),
                ));
                continue;
            };
            // Kafka takes exactly one batch per partition from v3 on.
            if matches!(frame_size(&records), Ok(size) if size < records.len()) {
                partitions.push(error(
                    ResponseError::InvalidRecord.code(),
                    Some(
                        "produce requests from v3 carry exactly one record batch per partition"
                            .to_string(),
                    ),
                ));
                continue;
            }
            if let Some(message) = refused_batch_kind(&records, req.transactional_id.is_some()) {
                partitions.push(error(ResponseError::InvalidRecord.code(), Some(message)));
                continue;
            }
            if acks == -1 {
                if let Err((isr, min)) = partition.check_min_isr() {
                    partitions.push(error(
                        ResponseError::NotEnoughReplicas.code(),
                        Some(format!(
                            "the ISR has {isr} member(s), min.insync.replicas is {min}"
                        )),
                    ));
                    continue;
                }
            }
            let verification = match verified.remove(&(topic.name.to_string(), index)) {
                Some(Ok(verification)) => verification,
                Some(Err(code)) => {
                    partitions.push(error(
                        code,
                        Some(format!(
                            "the transaction coordinator did not confirm that {}-{index} is in \
                             the producer's transaction",
                            topic.name
                        )),
                    ));
                    continue;
                }
                None if verification_on => TxnVerification::Guard(None),
                None => TxnVerification::Off,
            };
            match partition.append_verified(records, now, verification) {
                Ok(info) => {
                    let mut response = partition_response(version, index, 0, None)
                        .with_base_offset(info.base_offset);
                    response.log_append_time_ms = if info.duplicate
                        || partition.log().config().message_timestamp_type
                            == TimestampType::LogAppendTime
                    {
                        info.log_append_time_ms
                    } else {
                        -1
                    };
                    if version >= 5 {
                        response.log_start_offset = info.log_start_offset;
                    }
                    let flush_to = info
                        .flush_needed
                        .then(|| (partition.clone(), info.last_offset + 1));
                    let replicate_to = (acks == -1
                        && partition.high_watermark() <= info.last_offset)
                        .then(|| (partition.clone(), info.last_offset + 1, info.leader_epoch));
                    partitions.push(Appended {
                        response,
                        flush_to,
                        replicate_to,
                    });
                }
                Err(e) => {
                    tracing::debug!(topic = %topic.name, partition = index, error = %e, "produce refused");
                    let mut refused = error(replica_error_code(&e), Some(e.to_string()));
                    if version >= 8 {
                        refused.response.record_errors = record_errors(&e);
                    }
                    partitions.push(refused);
                }
            }
        }
        topics.push((topic_response, partitions));
    }

    if acks == 0 && valid_acks {
        // No response; durability waits still happen in the background so flush.messages is
        // honoured for acks=0 producers too.
        let waits: Vec<_> = topics
            .into_iter()
            .flat_map(|(_, p)| p.into_iter().filter_map(|a| a.flush_to))
            .collect();
        if !waits.is_empty() {
            tokio::spawn(async move {
                for (partition, offset) in waits {
                    let _ = partition.flush_to(offset).await;
                }
            });
        }
        return Reply::NoResponse;
    }

    let needs_wait = topics.iter().any(|(_, p)| {
        p.iter()
            .any(|a| a.flush_to.is_some() || a.replicate_to.is_some())
    });
    let timeout =
        std::time::Duration::from_millis(u64::try_from(req.timeout_ms.max(0)).unwrap_or(0));
    if !needs_wait {
        let mut response = build(topics);
        add_leader_hints(&mut response, &image, version);
        return Reply::Ready(ResponseKind::Produce(response));
    }
    Reply::Deferred(Box::pin(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        for (_, partitions) in topics.iter_mut() {
            for appended in partitions.iter_mut() {
                if let Some((partition, offset, epoch)) = appended.replicate_to.take() {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let waited =
                        tokio::time::timeout(left, partition.wait_replicated(offset, epoch)).await;
                    let code = match waited {
                        Ok(Ok(())) => 0,
                        // Leadership moved while waiting: the batch may be truncated away, so
                        // it is not acknowledged (the producer retries on the new leader).
                        Ok(Err(e)) => replica_error_code(&e),
                        // As Kafka: the batch stays in the leader's log, the producer hears
                        // that the ISR did not confirm it in time.
                        Err(_) => ResponseError::RequestTimedOut.code(),
                    };
                    if code != 0 {
                        appended.response.error_code = code;
                        appended.response.base_offset = -1;
                        continue;
                    }
                    if partition.check_min_isr().is_err() {
                        // The ISR shrank below min.insync.replicas while waiting: the batch is
                        // in the log but not as safe as acks=all promises.
                        appended.response.error_code =
                            ResponseError::NotEnoughReplicasAfterAppend.code();
                        appended.response.base_offset = -1;
                        continue;
                    }
                }
                if let Some((partition, offset)) = appended.flush_to.take() {
                    if let Err(e) = partition.flush_to(offset).await {
                        tracing::error!(topic = partition.topic(), partition = partition.index(), error = %e, "fsync failed; produce not acknowledged");
                        appended.response.error_code = replica_error_code(&e);
                        appended.response.base_offset = -1;
                    }
                }
            }
        }
        let mut response = build(topics);
        // Leadership may have moved while waiting: hint at the leaders as they are now.
        add_leader_hints(&mut response, &ctx.broker.controller.image(), version);
        Some(ResponseKind::Produce(response))
    }))
}

/// KIP-890 part 1 (see [`super::txn_verification`]): for each partition whose batch would open
/// the producer's transaction here, takes a verification guard and asks the coordinator; the
/// outcome by (topic, partition): the verification to append with, or the error code to answer.
/// Partitions not listed open no transaction (or are refused later for other reasons).
async fn verify_first_writes(
    ctx: &RequestContext,
    req: &ProduceRequest,
    image: &MetadataImage,
) -> HashMap<(String, i32), Result<TxnVerification, i16>> {
    let mut outcome = HashMap::new();
    let Some(transactional_id) = req.transactional_id.as_ref() else {
        return outcome;
    };
    let mut question = Question {
        transactional_id: transactional_id.as_str(),
        producer_id: -1,
        epoch: -1,
        partitions: Vec::new(),
    };
    let mut guards = Vec::new();
    for topic_data in &req.topic_data {
        let topic = if ctx.version >= 13 {
            image.topic_by_id(&topic_data.topic_id)
        } else {
            image.topic(topic_data.name.as_str())
        };
        let Some(topic) = topic else {
            continue;
        };
        for partition_data in &topic_data.partition_data {
            let Some(header) = partition_data
                .records
                .as_ref()
                .and_then(|records| BatchHeader::parse(records).ok())
            else {
                continue;
            };
            if !header.is_transactional() || header.producer_id() < 0 {
                continue;
            }
            if question.producer_id < 0 {
                question.producer_id = header.producer_id();
                question.epoch = header.producer_epoch();
            }
            if (header.producer_id(), header.producer_epoch())
                != (question.producer_id, question.epoch)
            {
                // One producer per request: another one's batch gets no guard, so it cannot
                // open a transaction.
                continue;
            }
            let Ok(partition) = ctx
                .broker
                .replicas
                .leader_partition(&topic.name, partition_data.index)
            else {
                continue;
            };
            let key = (topic.name.to_string(), partition_data.index);
            match partition
                .log()
                .begin_txn_verification(question.producer_id, question.epoch)
            {
                None => {
                    outcome.insert(key, Ok(TxnVerification::Guard(None)));
                }
                Some(guard) => {
                    question.partitions.push(key.clone());
                    guards.push((key, guard));
                }
            }
        }
    }
    if guards.is_empty() {
        return outcome;
    }
    let verifier = Verifier {
        txns: &ctx.broker.txns,
        peers: &ctx.broker.peers,
        image,
        me: ctx.broker.replicas.node_id(),
        timeout: std::time::Duration::from_millis(ctx.broker.config.request_timeout_ms()),
    };
    let codes = verify(&verifier, &question).await;
    for ((key, guard), code) in guards.into_iter().zip(codes) {
        let verdict = if code == 0 {
            Ok(TxnVerification::Guard(Some(guard)))
        } else {
            tracing::debug!(
                transactional_id = question.transactional_id,
                topic = key.0,
                partition = key.1,
                code,
                "transactional write not verified"
            );
            Err(produce_error(code))
        };
        outcome.insert(key, verdict);
    }
    outcome
}

/// Why a client may not write this batch, if it may not: control batches (transaction markers)
/// are written only by the broker, as in Kafka ("Clients are not allowed to write control
/// records"), and transactional batches only come with a transactional id. A batch too short
/// to have a header is left to the log's validation (CORRUPT_MESSAGE).
fn refused_batch_kind(records: &bytes::Bytes, transactional_id: bool) -> Option<String> {
    let header = BatchHeader::parse(records).ok()?;
    if header.is_control() {
        return Some("Clients are not allowed to write control records".to_string());
    }
    if header.is_transactional() && !transactional_id {
        return Some(
            "Produce requests with transactional records must have a transactionalId".to_string(),
        );
    }
    if header.is_transactional() && header.producer_id() < 0 {
        return Some("transactional records must have a producer id".to_string());
    }
    None
}

/// Kafka's per-record errors (v8+): which records of the batch were refused and why.
fn record_errors(e: &ReplicaError) -> Vec<BatchIndexAndErrorMessage> {
    match e {
        ReplicaError::Log(LogError::InvalidRecord {
            message,
            record_indexes,
        }) => record_indexes
            .iter()
            .map(|&index| {
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(i32::try_from(index).unwrap_or(i32::MAX))
                    .with_batch_index_error_message(Some(StrBytes::from_string(message.clone())))
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn build(topics: Vec<(TopicProduceResponse, Vec<Appended>)>) -> ProduceResponse {
    ProduceResponse::default().with_responses(
        topics
            .into_iter()
            .map(|(topic, partitions)| {
                topic.with_partition_responses(partitions.into_iter().map(|a| a.response).collect())
            })
            .collect(),
    )
}

/// KIP-951 (v10+): a partition refused with NOT_LEADER_OR_FOLLOWER names its current leader
/// and epoch, and the response carries those leaders' endpoints, so the producer can move on
/// without a Metadata round trip.
fn add_leader_hints(response: &mut ProduceResponse, image: &MetadataImage, version: i16) {
    if version < 10 {
        return;
    }
    let not_leader = ResponseError::NotLeaderOrFollower.code();
    let mut hints = LeaderHints::default();
    for topic in &mut response.responses {
        let info = if version >= 13 {
            image.topic_by_id(&topic.topic_id)
        } else {
            image.topic(topic.name.as_str())
        };
        let Some(info) = info else {
            continue;
        };
        for p in &mut topic.partition_responses {
            if p.error_code != not_leader {
                continue;
            }
            if let Some((leader, epoch)) = hints.leader_of(info, p.index) {
                p.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
            }
        }
    }
    response.node_endpoints = hints
        .endpoints(image)
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

fn partition_response(
    version: i16,
    index: i32,
    error_code: i16,
    message: Option<String>,
) -> PartitionProduceResponse {
    let mut response = PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(error_code)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1);
    if version >= 5 {
        response.log_start_offset = -1;
    }
    if version >= 8 && error_code != 0 {
        response.error_message = message.map(StrBytes::from_string);
    }
    response
}
