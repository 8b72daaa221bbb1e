//! Metadata (key 3): brokers, controller, cluster id, and topics with their partitions.
//!
//! Topics are asked for by name (all versions) or by id (v10+); a null list means every topic
//! (v1+), and so does an empty list at v0. An unknown name is auto-created when the request
//! allows it (always before v4, `allow_auto_topic_creation` from v4) and
//! `auto.create.topics.enable` is on; the topic is hosted before the response goes out, so the
//! client's first produce to it succeeds. `__consumer_offsets` is created as the broker's
//! internal topic (as by FindCoordinator); other internal names (`__cluster_metadata`,
//! `__transaction_state`) and names colliding with one are INVALID_TOPIC_EXCEPTION. Fields are set only at the versions that have them.
//! The controller id is the answering broker's own (see the comment where it is set).

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::errors::controller_error_code;
use super::RequestContext;
use crate::cluster::metadata::{
    reserved_topic, validate_topic_name, CLUSTER_METADATA_TOPIC, TRANSACTION_STATE_TOPIC,
};
use crate::cluster::{ControllerError, CreateTopicSpec, MetadataImage, TopicInfo};
use crate::coordinator::OFFSETS_TOPIC;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 13 };

/// Without an authorizer Kafka grants every operation a resource supports. Bits are Kafka's
/// AclOperation codes: topic READ(3) WRITE(4) CREATE(5) DELETE(6) ALTER(7) DESCRIBE(8)
/// DESCRIBE_CONFIGS(10) ALTER_CONFIGS(11).
const TOPIC_OPERATIONS_ALL: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);

/// Cluster: CREATE(5) ALTER(7) DESCRIBE(8) CLUSTER_ACTION(9) DESCRIBE_CONFIGS(10)
/// ALTER_CONFIGS(11) IDEMPOTENT_WRITE(12).
pub(crate) const CLUSTER_OPERATIONS_ALL: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

/// Answers Metadata.
pub async fn handle(ctx: &RequestContext, req: MetadataRequest) -> MetadataResponse {
    let version = ctx.version;
    let broker = &ctx.broker;
    let allow_auto_create =
        (version < 4 || req.allow_auto_topic_creation) && broker.config.auto_create_topics();

    let mut topics = Vec::new();
    let all_topics = match &req.topics {
        None => true,
        Some(list) => version == 0 && list.is_empty(),
    };
    if all_topics {
        let image = broker.controller.image();
        topics.extend(
            image
                .topics
                .values()
                .map(|t| topic_entry(&image, t, version)),
        );
    } else {
        for wanted in req.topics.iter().flatten() {
            let image = broker.controller.image();
            match &wanted.name {
                Some(name) => {
                    if let Some(topic) = image.topic(name.as_str()) {
                        topics.push(topic_entry(&image, topic, version));
                    } else {
                        topics.push(missing_topic(ctx, name, allow_auto_create).await);
                    }
                }
                None => match image.topic_by_id(&wanted.topic_id) {
                    Some(topic) => topics.push(topic_entry(&image, topic, version)),
                    None => topics.push(error_topic(
                        None,
                        wanted.topic_id,
                        ResponseError::UnknownTopicId.code(),
                    )),
                },
            }
        }
    }

    let image = broker.controller.image();
    // Fenced brokers (missed heartbeats) are left out, as Kafka leaves them out.
    let brokers = image
        .brokers
        .values()
        .filter(|b| {
            !image
                .registrations
                .get(&b.node_id)
                .is_some_and(|r| r.fenced)
        })
        .map(|b| {
            let mut entry = MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(i32::from(b.port));
            if version >= 1 {
                entry.rack = b.rack.clone().map(StrBytes::from_string);
            }
            entry
        })
        .collect();
    if broker.replicas.is_cut_off() {
        // Cut off from the controller quorum, the leaderships its followers left have moved
        // elsewhere (it cannot know where): no client is sent back to it for them.
        let me = BrokerId(broker.config.node_id());
        for topic in &mut topics {
            let name = topic.name.as_ref().map(|n| n.as_str().to_string());
            for partition in topic.partitions.iter_mut().filter(|p| p.leader_id == me) {
                let deposed = name.as_ref().is_some_and(|name| {
                    broker
                        .replicas
                        .leader_partition(name, partition.partition_index)
                        .is_err()
                });
                if deposed {
                    partition.leader_id = BrokerId(-1);
                    partition.error_code = ResponseError::LeaderNotAvailable.code();
                }
            }
        }
    }
    let mut response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    if version >= 1 {
        // As a KRaft broker does (KIP-590), name a live broker rather than the quorum leader:
        // every broker takes admin requests and forwards their changes to the quorum, and the
        // broker answering is certainly up, while a leader that just died may not be.
        response.controller_id = BrokerId(ctx.broker.config.node_id());
    }
    if version >= 2 {
        response.cluster_id = Some(StrBytes::from_string(image.cluster_id.clone()));
    }
    if (8..=10).contains(&version) && req.include_cluster_authorized_operations {
        response.cluster_authorized_operations = CLUSTER_OPERATIONS_ALL;
    }
    if version >= 8 && req.include_topic_authorized_operations {
        for topic in response.topics.iter_mut().filter(|t| t.error_code == 0) {
            topic.topic_authorized_operations = TOPIC_OPERATIONS_ALL;
        }
    }
    response
}

/// A topic that is not in the image: auto-create it or say why not.
async fn missing_topic(
    ctx: &RequestContext,
    name: &TopicName,
    allow_auto_create: bool,
) -> MetadataResponseTopic {
    let version = ctx.version;
    if let Err(reason) = validate_topic_name(name.as_str()) {
        tracing::debug!(topic = %name.as_str(), %reason, "metadata for an invalid topic name");
        return error_topic(
            Some(name.clone()),
            Uuid::nil(),
            ResponseError::InvalidTopicException.code(),
        );
    }
    if !allow_auto_create {
        return error_topic(
            Some(name.clone()),
            Uuid::nil(),
            ResponseError::UnknownTopicOrPartition.code(),
        );
    }
    if reserved_topic(name.as_str()).is_some_and(|internal| internal != name.as_str())
        || [CLUSTER_METADATA_TOPIC, TRANSACTION_STATE_TOPIC].contains(&name.as_str())
    {
        // Internal names are never auto-created as ordinary topics: `__cluster_metadata` is
        // Kafka's metadata log, `__transaction_state` waits for the transaction coordinator,
        // and a name colliding with one would shadow it.
        return error_topic(
            Some(name.clone()),
            Uuid::nil(),
            ResponseError::InvalidTopicException.code(),
        );
    }
    if name.as_str() == OFFSETS_TOPIC {
        // Kafka creates the internal topic with its own settings, whoever asks first.
        let image = match ctx.broker.ensure_offsets_topic().await {
            Ok(()) => ctx.broker.controller.image(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create __consumer_offsets");
                return error_topic(Some(name.clone()), Uuid::nil(), controller_error_code(&e));
            }
        };
        return match image.topic(OFFSETS_TOPIC) {
            Some(topic) => topic_entry(&image, topic, version),
            None => error_topic(
                Some(name.clone()),
                Uuid::nil(),
                ResponseError::LeaderNotAvailable.code(),
            ),
        };
    }
    let spec = CreateTopicSpec {
        name: name.as_str().to_string(),
        partitions: -1,
        replication_factor: -1,
        configs: Default::default(),
        validate_only: false,
        internal: false,
        assignment: None,
    };
    let created = ctx.broker.create_topic(spec).await;
    let image = ctx.broker.controller.image();
    match created {
        Ok(topic) => {
            tracing::info!(topic = %topic.name, "auto-created topic");
            topic_entry(&image, &topic, version)
        }
        // Another request created it first: answer with what exists.
        Err(ControllerError::TopicAlreadyExists(_)) => match image.topic(name.as_str()) {
            Some(topic) => topic_entry(&image, topic, version),
            None => error_topic(
                Some(name.clone()),
                Uuid::nil(),
                ResponseError::LeaderNotAvailable.code(),
            ),
        },
        Err(e) => {
            tracing::warn!(topic = %name.as_str(), error = %e, "auto-creation failed");
            error_topic(Some(name.clone()), Uuid::nil(), controller_error_code(&e))
        }
    }
}

fn error_topic(name: Option<TopicName>, id: Uuid, error_code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(name)
        .with_topic_id(id)
        .with_error_code(error_code)
}

fn topic_entry(image: &MetadataImage, topic: &TopicInfo, version: i16) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let mut entry = MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(BrokerId(p.leader))
                .with_replica_nodes(p.replicas.iter().copied().map(BrokerId).collect())
                .with_isr_nodes(p.isr.iter().copied().map(BrokerId).collect());
            if p.leader < 0 || !image.brokers.contains_key(&p.leader) {
                entry.error_code = ResponseError::LeaderNotAvailable.code();
            }
            if version >= 5 {
                entry.offline_replicas = p
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| !image.brokers.contains_key(r))
                    .map(BrokerId)
                    .collect();
            }
            if version >= 7 {
                entry.leader_epoch = p.leader_epoch;
            }
            entry
        })
        .collect();
    let mut entry = MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_partitions(partitions);
    if version >= 1 {
        entry.is_internal = topic.internal;
    }
    if version >= 10 {
        entry.topic_id = topic.id;
    }
    entry
}
