//! CreateTopics (key 19), versions 2–7: create topics, or with `validate_only` check that they
//! could be created.
//!
//! Each topic is answered on its own, in request order, and a topic that is created is hosted
//! before the response goes out (`Broker::create_topic`), so the client can produce to it at
//! once. What is checked here, before the controller sees the topic, mirrors Kafka's KRaft
//! controller:
//! - a name given more than once in one request: INVALID_REQUEST once for that name, and none
//!   of its entries is created;
//! - an internal topic (`__cluster_metadata`, as Kafka reserves it, and `__consumer_offsets` and
//!   `__transaction_state`, which only the broker creates): INVALID_REQUEST; a name colliding
//!   with one (`__consumer.offsets`): INVALID_TOPIC_EXCEPTION, from the controller;
//! - a config with a null value: INVALID_CONFIG;
//! - manual `assignments`: both counts must be -1 (INVALID_REQUEST) and the assignment must be
//!   well formed (INVALID_REPLICA_ASSIGNMENT: partitions 0..n once each, one replica count,
//!   registered brokers, no broker twice). The controller then takes the assignment as given:
//!   the first live replica of each partition leads, fenced ones start outside the ISR
//!   (INVALID_REPLICA_ASSIGNMENT when none is live).
//!
//! The name, count and config checks are the controller's; the error of a probe with harmless
//! counts is reported first where a handler-level refusal would otherwise hide it, so an
//! existing topic is TOPIC_ALREADY_EXISTS whatever else is wrong with the request, as in Kafka.
//!
//! From v5 a created (or validated) topic reports its partition count, replication factor and
//! every effective topic config (sorted by name, as Kafka sorts them, with its source); v7 adds
//! the topic id. Failed topics keep the defaults (-1, -1, no configs). `timeout_ms` is not
//! needed: creation finishes before the response is built.

use std::collections::{BTreeMap, HashMap, HashSet};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use kafka_protocol::ResponseError;

use super::errors::Refusal;
use super::RequestContext;
use crate::cluster::metadata::INTERNAL_TOPICS;
use crate::cluster::{CreateTopicSpec, TopicInfo};
use crate::config;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 2, max: 7 };

/// Answers CreateTopics.
pub async fn handle(ctx: &RequestContext, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let version = ctx.version;
    let mut occurrences: HashMap<&str, usize> = HashMap::new();
    for topic in &req.topics {
        *occurrences.entry(topic.name.as_str()).or_insert(0) += 1;
    }
    let mut answered_duplicates: HashSet<&str> = HashSet::new();
    let mut results = Vec::with_capacity(req.topics.len());
    for topic in &req.topics {
        let name = topic.name.as_str();
        if occurrences.get(name).copied().unwrap_or(0) > 1 {
            // One answer per duplicated name, as Kafka gives; none of its entries is created.
            if answered_duplicates.insert(name) {
                let refusal = Refusal::new(ResponseError::InvalidRequest, "Duplicate topic name.");
                results.push(refused(&topic.name, refusal));
            }
            continue;
        }
        let result = match create_one(ctx, topic, req.validate_only).await {
            Ok(info) => created(ctx, &topic.name, &info, version),
            Err(refusal) => refused(&topic.name, refusal),
        };
        results.push(result);
    }
    CreateTopicsResponse::default()
        .with_throttle_time_ms(0)
        .with_topics(results)
}

/// Creates (or validates) one topic that appears once in the request.
async fn create_one(
    ctx: &RequestContext,
    topic: &CreatableTopic,
    validate_only: bool,
) -> Result<TopicInfo, Refusal> {
    let name = topic.name.as_str();
    if INTERNAL_TOPICS.contains(&name) {
        return Err(Refusal::new(
            ResponseError::InvalidRequest,
            format!("Creation of internal topic {name} is prohibited."),
        ));
    }
    let null_configs: Vec<&str> = topic
        .configs
        .iter()
        .filter(|c| c.value.is_none())
        .map(|c| c.name.as_str())
        .collect();
    if !null_configs.is_empty() {
        probe(ctx, name).await?;
        return Err(Refusal::new(
            ResponseError::InvalidConfig,
            format!(
                "Null value not supported for topic configs: {}",
                null_configs.join(",")
            ),
        ));
    }
    // A config named twice: the later value wins, as in Kafka.
    let configs: BTreeMap<String, String> = topic
        .configs
        .iter()
        .filter_map(|c| {
            c.value
                .as_ref()
                .map(|v| (c.name.as_str().to_string(), v.as_str().to_string()))
        })
        .collect();
    let spec = CreateTopicSpec {
        name: name.to_string(),
        partitions: topic.num_partitions,
        replication_factor: topic.replication_factor,
        configs,
        validate_only,
        internal: false,
        assignment: None,
    };
    if topic.assignments.is_empty() {
        return ctx.broker.create_topic(spec).await.map_err(Refusal::from);
    }
    create_with_assignment(ctx, topic, spec).await
}

/// Surfaces the controller's name checks (invalid, existing, colliding, over `topics.max`)
/// before a refusal of the handler's own, so errors come in Kafka's order.
async fn probe(ctx: &RequestContext, name: &str) -> Result<(), Refusal> {
    let spec = CreateTopicSpec {
        name: name.to_string(),
        partitions: 1,
        replication_factor: 1,
        configs: BTreeMap::new(),
        validate_only: true,
        internal: false,
        assignment: None,
    };
    ctx.broker
        .create_topic(spec)
        .await
        .map(|_| ())
        .map_err(Refusal::from)
}

/// A topic with a manual replica assignment (see the module doc).
async fn create_with_assignment(
    ctx: &RequestContext,
    topic: &CreatableTopic,
    mut spec: CreateTopicSpec,
) -> Result<TopicInfo, Refusal> {
    probe(ctx, &spec.name).await?;
    if topic.replication_factor != -1 {
        return Err(Refusal::new(
            ResponseError::InvalidRequest,
            "A manual partition assignment was specified, but replication factor was not set to -1.",
        ));
    }
    if topic.num_partitions != -1 {
        return Err(Refusal::new(
            ResponseError::InvalidRequest,
            "A manual partition assignment was specified, but numPartitions was not set to -1.",
        ));
    }
    let wanted = validated_assignment(ctx, topic)?;
    let partitions = i32::try_from(wanted.len()).map_err(|_| {
        Refusal::new(
            ResponseError::InvalidReplicaAssignment,
            "too many partitions in the manual assignment",
        )
    })?;
    // `validated_assignment` returns at least one partition with at least one replica.
    let replicas = wanted.first().map(Vec::len).unwrap_or(0);
    spec.partitions = partitions;
    spec.replication_factor = i16::try_from(replicas).map_err(|_| {
        Refusal::new(
            ResponseError::InvalidReplicaAssignment,
            format!("{replicas} replicas per partition is more than a replication factor can be"),
        )
    })?;
    spec.assignment = Some(wanted);
    Ok(ctx.broker.create_topic(spec).await?)
}

/// Checks a manual assignment as Kafka's controller does; returns the replica lists by
/// partition index (0..n, each present once, all of one length).
fn validated_assignment(
    ctx: &RequestContext,
    topic: &CreatableTopic,
) -> Result<Vec<Vec<i32>>, Refusal> {
    let image = ctx.broker.controller.image();
    let invalid = |message: String| Refusal::new(ResponseError::InvalidReplicaAssignment, message);
    let mut by_partition: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    let mut replication_factor: Option<usize> = None;
    for assignment in &topic.assignments {
        let index = assignment.partition_index;
        if by_partition.contains_key(&index) {
            return Err(invalid(format!(
                "Found multiple manual partition assignments for partition {index}"
            )));
        }
        let replicas: Vec<i32> = assignment.broker_ids.iter().map(|b| b.0).collect();
        if replicas.is_empty() {
            return Err(invalid(
                "The manual partition assignment includes an empty replica list.".to_string(),
            ));
        }
        let mut sorted = replicas.clone();
        sorted.sort_unstable();
        for pair in sorted.windows(2) {
            if pair[0] == pair[1] {
                return Err(invalid(format!(
                    "The manual partition assignment includes the broker {} more than once.",
                    pair[0]
                )));
            }
        }
        if let Some(unknown) = sorted.iter().find(|b| !image.brokers.contains_key(*b)) {
            return Err(invalid(format!(
                "The manual partition assignment includes broker {unknown}, but no such broker is registered."
            )));
        }
        match replication_factor {
            Some(rf) if rf != replicas.len() => {
                return Err(invalid(format!(
                    "The manual partition assignment includes a partition with {} replica(s), but \
                     this is not consistent with previous partitions, which have {rf} replica(s).",
                    replicas.len()
                )));
            }
            _ => replication_factor = Some(replicas.len()),
        }
        by_partition.insert(index, replicas);
    }
    let consecutive = by_partition
        .keys()
        .enumerate()
        .all(|(position, index)| usize::try_from(*index).ok() == Some(position));
    if !consecutive {
        return Err(invalid(
            "partitions should be a consecutive 0-based integer sequence".to_string(),
        ));
    }
    Ok(by_partition.into_values().collect())
}

/// The result of a refused topic: only the fields every version has, so the v5+ fields keep
/// their defaults (-1, -1, no configs), as in Kafka.
fn refused(name: &TopicName, refusal: Refusal) -> CreatableTopicResult {
    CreatableTopicResult::default()
        .with_name(name.clone())
        .with_error_code(refusal.code)
        .with_error_message(Some(StrBytes::from_string(refusal.message)))
}

/// The result of a created (or validated) topic.
fn created(
    ctx: &RequestContext,
    name: &TopicName,
    info: &TopicInfo,
    version: i16,
) -> CreatableTopicResult {
    let mut result = CreatableTopicResult::default()
        .with_name(name.clone())
        .with_error_code(0)
        .with_error_message(None);
    if version >= 5 {
        result.num_partitions = i32::try_from(info.partitions.len()).unwrap_or(i32::MAX);
        result.replication_factor = info
            .partitions
            .first()
            .and_then(|p| i16::try_from(p.replicas.len()).ok())
            .unwrap_or(-1);
        result.configs = Some(effective_configs(ctx, info));
    }
    if version >= 7 {
        result.topic_id = info.id;
    }
    result
}

/// Every topic config with its effective value and source, sorted by name.
fn effective_configs(ctx: &RequestContext, info: &TopicInfo) -> Vec<CreatableTopicConfigs> {
    let mut names: Vec<&str> = config::TOPIC_CONFIGS.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names
        .into_iter()
        .filter_map(|name| {
            let (value, source) = ctx.broker.config.topic_value(&info.configs, name)?;
            Some(
                CreatableTopicConfigs::default()
                    .with_name(StrBytes::from_static_str(name))
                    .with_value(Some(StrBytes::from_string(value)))
                    .with_read_only(false)
                    .with_config_source(source.wire_value())
                    .with_is_sensitive(false),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::broker_with;
    use crate::api::RequestContext;
    use crate::broker::Broker;
    use bytes::BytesMut;
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopicConfig,
    };
    use kafka_protocol::messages::{ApiKey, BrokerId};
    use kafka_protocol::protocol::Encodable;
    use std::sync::Arc;

    async fn broker(dir: &std::path::Path) -> Arc<Broker> {
        broker_with(dir, &[]).await
    }

    fn ctx(broker: &Arc<Broker>, version: i16) -> RequestContext {
        crate::api::test_support::ctx(broker, ApiKey::CreateTopics, version)
    }

    fn topic(name: &str, partitions: i32, replication_factor: i16) -> CreatableTopic {
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
    }

    fn config(name: &str, value: Option<&str>) -> CreatableTopicConfig {
        CreatableTopicConfig::default()
            .with_name(StrBytes::from_string(name.to_string()))
            .with_value(value.map(|v| StrBytes::from_string(v.to_string())))
    }

    fn request(topics: Vec<CreatableTopic>) -> CreateTopicsRequest {
        CreateTopicsRequest::default().with_topics(topics)
    }

    fn encodes(response: &CreateTopicsResponse, version: i16) {
        let mut buf = BytesMut::new();
        response
            .encode(&mut buf, version)
            .unwrap_or_else(|e| panic!("v{version} does not encode: {e}"));
    }

    #[tokio::test]
    async fn creates_with_defaults_and_reports_configs() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        let mut t = topic("orders", -1, -1);
        t.configs.push(config("retention.ms", Some("1000")));
        let resp = handle(&ctx(&b, 7), request(vec![t, topic("events", 3, 1)])).await;
        assert_eq!(resp.topics.len(), 2);
        let orders = &resp.topics[0];
        assert_eq!(orders.error_code, 0, "{:?}", orders.error_message);
        assert_eq!(orders.error_message, None);
        assert_eq!(orders.num_partitions, 1);
        assert_eq!(orders.replication_factor, 1);
        let image = b.controller.image();
        assert_eq!(orders.topic_id, image.topic("orders").unwrap().id);
        let configs = orders.configs.as_ref().unwrap();
        assert_eq!(configs.len(), config::TOPIC_CONFIGS.len());
        let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "configs are sorted by name");
        let retention = configs
            .iter()
            .find(|c| c.name.as_str() == "retention.ms")
            .unwrap();
        assert_eq!(retention.value.as_deref(), Some("1000"));
        assert_eq!(retention.config_source, 1);
        let segment = configs
            .iter()
            .find(|c| c.name.as_str() == "segment.bytes")
            .unwrap();
        assert_eq!(segment.value.as_deref(), Some("1073741824"));
        assert_eq!(segment.config_source, 5);
        assert_eq!(resp.topics[1].num_partitions, 3);
        // Hosted before the response: the partitions are there to produce to.
        b.replicas.leader_partition("events", 2).unwrap();
        b.replicas.leader_partition("orders", 0).unwrap();
        for v in 2..=7 {
            encodes(&resp, v);
        }
    }

    #[tokio::test]
    async fn version_specific_fields_only_where_they_exist() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        for v in 2..=7 {
            let name = format!("t{v}");
            let resp = handle(&ctx(&b, v), request(vec![topic(&name, 2, 1)])).await;
            let r = &resp.topics[0];
            assert_eq!(r.error_code, 0);
            if v >= 5 {
                assert_eq!(r.num_partitions, 2);
                assert!(!r.configs.as_ref().unwrap().is_empty());
            } else {
                assert_eq!(r.num_partitions, -1);
                assert!(r.configs.as_ref().unwrap().is_empty());
            }
            assert_eq!(r.topic_id.is_nil(), v < 7);
            encodes(&resp, v);
        }
    }

    #[tokio::test]
    async fn validate_only_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        let mut req = request(vec![topic("dry", 4, 1)]);
        req.validate_only = true;
        let resp = handle(&ctx(&b, 7), req).await;
        assert_eq!(resp.topics[0].error_code, 0);
        assert_eq!(resp.topics[0].num_partitions, 4);
        assert!(b.controller.image().topic("dry").is_none());
        assert!(b.replicas.leader_partition("dry", 0).is_err());
    }

    #[tokio::test]
    async fn refusals() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        handle(&ctx(&b, 7), request(vec![topic("taken", 1, 1)])).await;
        let mut null_config = topic("nulls", 1, 1);
        null_config.configs.push(config("retention.ms", None));
        null_config.configs.push(config("segment.ms", None));
        let mut bad_config = topic("badconfig", 1, 1);
        bad_config
            .configs
            .push(config("retention.ms", Some("soon")));
        let mut unknown_config = topic("unknownconfig", 1, 1);
        unknown_config
            .configs
            .push(config("no.such.config", Some("1")));
        let mut existing_with_null = topic("taken", 1, 1);
        existing_with_null
            .configs
            .push(config("retention.ms", None));
        let resp = handle(
            &ctx(&b, 7),
            request(vec![
                topic("dup", 1, 1),
                topic("taken", 1, 1),
                topic("dup", 2, 1),
                topic("bad name", 1, 1),
                topic("zero", 0, 1),
                topic("toomany", 1, 2),
                null_config,
                bad_config,
                unknown_config,
                topic("__cluster_metadata", 1, 1),
            ]),
        )
        .await;
        let codes: Vec<(&str, i16)> = resp
            .topics
            .iter()
            .map(|t| (t.name.as_str(), t.error_code))
            .collect();
        assert_eq!(
            codes,
            vec![
                ("dup", ResponseError::InvalidRequest.code()),
                ("taken", ResponseError::TopicAlreadyExists.code()),
                ("bad name", ResponseError::InvalidTopicException.code()),
                ("zero", ResponseError::InvalidPartitions.code()),
                ("toomany", ResponseError::InvalidReplicationFactor.code()),
                ("nulls", ResponseError::InvalidConfig.code()),
                ("badconfig", ResponseError::InvalidConfig.code()),
                ("unknownconfig", ResponseError::InvalidConfig.code()),
                ("__cluster_metadata", ResponseError::InvalidRequest.code()),
            ]
        );
        for t in &resp.topics {
            assert!(t.error_message.as_ref().is_some_and(|m| !m.is_empty()));
            assert_eq!(t.num_partitions, -1);
            assert_eq!(t.replication_factor, -1);
            assert!(t.topic_id.is_nil());
        }
        assert!(resp.topics[5]
            .error_message
            .as_deref()
            .unwrap()
            .contains("retention.ms,segment.ms"));
        assert!(b.controller.image().topic("dup").is_none());
        // The name check comes before the null-config refusal, as in Kafka.
        let resp = handle(&ctx(&b, 7), request(vec![existing_with_null])).await;
        assert_eq!(
            resp.topics[0].error_code,
            ResponseError::TopicAlreadyExists.code()
        );
        for v in 2..=7 {
            encodes(&resp, v);
        }
    }

    fn assignment(partition: i32, brokers: &[i32]) -> CreatableReplicaAssignment {
        CreatableReplicaAssignment::default()
            .with_partition_index(partition)
            .with_broker_ids(brokers.iter().map(|b| BrokerId(*b)).collect())
    }

    #[tokio::test]
    async fn manual_assignments() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        let node = b.config.node_id();
        let with = |name: &str, partitions: i32, rf: i16, a: Vec<CreatableReplicaAssignment>| {
            let mut t = topic(name, partitions, rf);
            t.assignments = a;
            t
        };
        let resp = handle(
            &ctx(&b, 7),
            request(vec![
                with(
                    "placed",
                    -1,
                    -1,
                    vec![assignment(1, &[node]), assignment(0, &[node])],
                ),
                with("counts", 2, -1, vec![assignment(0, &[node])]),
                with("rf", -1, 1, vec![assignment(0, &[node])]),
                with(
                    "gap",
                    -1,
                    -1,
                    vec![assignment(0, &[node]), assignment(2, &[node])],
                ),
                with(
                    "twice",
                    -1,
                    -1,
                    vec![assignment(0, &[node]), assignment(0, &[node])],
                ),
                with("empty", -1, -1, vec![assignment(0, &[])]),
                with("stranger", -1, -1, vec![assignment(0, &[node + 1])]),
                with("repeat", -1, -1, vec![assignment(0, &[node, node])]),
            ]),
        )
        .await;
        let codes: Vec<(&str, i16)> = resp
            .topics
            .iter()
            .map(|t| (t.name.as_str(), t.error_code))
            .collect();
        let invalid_request = ResponseError::InvalidRequest.code();
        let invalid_assignment = ResponseError::InvalidReplicaAssignment.code();
        assert_eq!(
            codes,
            vec![
                ("placed", 0),
                ("counts", invalid_request),
                ("rf", invalid_request),
                ("gap", invalid_assignment),
                ("twice", invalid_assignment),
                ("empty", invalid_assignment),
                ("stranger", invalid_assignment),
                ("repeat", invalid_assignment),
            ]
        );
        assert_eq!(resp.topics[0].num_partitions, 2);
        assert_eq!(resp.topics[0].replication_factor, 1);
        b.replicas.leader_partition("placed", 1).unwrap();
        for v in 2..=7 {
            encodes(&resp, v);
        }
    }
}
