//! DescribeConfigs (key 32), versions 1–4: the effective settings of a topic or of this broker.
//!
//! Everything reported comes from the one settings table in [`crate::config`], so a setting
//! gregor does not honour is never reported, and a requested key gregor does not know is simply
//! absent from the answer, as in Kafka. Resources, each answered on its own:
//! - TOPIC (2): every topic setting with its effective value (the topic's override, else the
//!   broker setting behind it, else the default) and its source. An invalid name is
//!   INVALID_TOPIC_EXCEPTION, an unknown topic UNKNOWN_TOPIC_OR_PARTITION. Not read-only: a
//!   topic's overrides are its own.
//! - BROKER (4) named by this node's id: every broker setting, read-only (gregor has no dynamic
//!   broker configs yet). Another id, or a name that is not a number, is INVALID_REQUEST.
//!   BROKER with the empty name is Kafka's cluster-wide *dynamic default* resource, which
//!   lists only dynamic defaults; gregor has none, so the list is empty (reporting static
//!   settings there would tell `kafka-configs --entity-default` they were cluster defaults).
//! - Anything else (BROKER_LOGGER, GROUP, CLIENT_METRICS, ...): INVALID_REQUEST.
//!
//! `configuration_keys` filters by name; null or empty means every setting (Kafka treats both
//! so). With `include_synonyms` each entry lists where its value could come from, most
//! specific first, as Kafka orders them: the topic override (DYNAMIC_TOPIC_CONFIG, under the
//! topic key), the broker's static setting (STATIC_BROKER_CONFIG, under the broker key, e.g.
//! `log.retention.ms` for `retention.ms`, `log.cleanup.policy` for `cleanup.policy`) and the
//! broker default (DEFAULT_CONFIG); a topic setting with no broker setting behind it
//! (`min.insync.replicas`) has only its override, as Kafka's topic-only settings do. From v3,
//! `config_type` gives Kafka's type for the setting (INT where Kafka uses INT, LIST for
//! `cleanup.policy`, DOUBLE for `min.cleanable.dirty.ratio`, LONG for the `*.ms` ones) and
//! `include_documentation` adds each setting's doc. Sensitive settings have null values.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use kafka_protocol::ResponseError;

use super::errors::Refusal;
use super::RequestContext;
use crate::cluster::metadata::validate_topic_name;
use crate::config::{self, ConfigDef, ConfigKind, ConfigSource};

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 4 };

/// Kafka's `ConfigResource.Type` ids.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_BROKER_LOGGER: i8 = 8;

/// Kafka's `DescribeConfigsResponse.ConfigType` ids (`config_type`, v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_LIST: i8 = 7;

/// Settings whose Kafka type is INT; gregor stores every number as a 64-bit long, but clients
/// see the type Kafka would report.
const KAFKA_INT_SETTINGS: &[&str] = &[
    "node.id",
    "num.partitions",
    "default.replication.factor",
    "log.segment.bytes",
    "log.index.interval.bytes",
    "log.index.size.max.bytes",
    "message.max.bytes",
    "socket.request.max.bytes",
    "max.connections",
    "queued.max.requests",
    "fetch.max.bytes",
    "segment.bytes",
    "index.interval.bytes",
    "segment.index.bytes",
    "max.message.bytes",
    "min.insync.replicas",
];

/// Topic settings with no broker setting behind them: (name, Kafka type, doc). Their values
/// and validation live in `config`; only what DescribeConfigs adds is here.
const TOPIC_ONLY_SETTINGS: &[(&str, i8, &str)] = &[(
    "min.insync.replicas",
    TYPE_INT,
    "Replicas that must acknowledge an acks=all produce.",
)];

/// What the request asks to include, shared by its resources.
#[derive(Debug, Clone, Copy)]
struct Include {
    synonyms: bool,
    documentation: bool,
    /// `config_type` and `documentation` exist from v3.
    v3_fields: bool,
}

/// Answers DescribeConfigs.
pub fn handle(ctx: &RequestContext, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let v3_fields = ctx.version >= 3;
    let include = Include {
        synonyms: req.include_synonyms,
        documentation: v3_fields && req.include_documentation,
        v3_fields,
    };
    let results = req
        .resources
        .iter()
        .map(|resource| describe(ctx, resource, include))
        .collect();
    DescribeConfigsResponse::default()
        .with_throttle_time_ms(0)
        .with_results(results)
}

fn describe(
    ctx: &RequestContext,
    resource: &DescribeConfigsResource,
    include: Include,
) -> DescribeConfigsResult {
    let keys: Option<HashSet<&str>> = resource
        .configuration_keys
        .as_ref()
        .filter(|keys| !keys.is_empty())
        .map(|keys| keys.iter().map(|k| k.as_str()).collect());
    let wanted = |name: &str| keys.as_ref().is_none_or(|keys| keys.contains(name));
    let name = resource.resource_name.as_str();
    let configs = match resource.resource_type {
        RESOURCE_TOPIC => topic_configs(ctx, name, &wanted, include),
        RESOURCE_BROKER => broker_configs(ctx, name, &wanted, include),
        RESOURCE_BROKER_LOGGER => Err(Refusal::new(
            ResponseError::InvalidRequest,
            "gregor does not support BROKER_LOGGER configs",
        )),
        other => Err(Refusal::new(
            ResponseError::InvalidRequest,
            format!("Unsupported resource type: {other}"),
        )),
    };
    let result = DescribeConfigsResult::default()
        .with_resource_type(resource.resource_type)
        .with_resource_name(resource.resource_name.clone());
    match configs {
        Ok(configs) => result
            .with_error_code(0)
            .with_error_message(None)
            .with_configs(configs),
        Err(refusal) => result
            .with_error_code(refusal.code)
            .with_error_message(Some(StrBytes::from_string(refusal.message)))
            .with_configs(Vec::new()),
    }
}

fn topic_configs(
    ctx: &RequestContext,
    name: &str,
    wanted: &dyn Fn(&str) -> bool,
    include: Include,
) -> Result<Vec<DescribeConfigsResourceResult>, Refusal> {
    validate_topic_name(name)
        .map_err(|message| Refusal::new(ResponseError::InvalidTopicException, message))?;
    let image = ctx.broker.controller.image();
    let topic = image.topic(name).ok_or_else(|| {
        Refusal::new(
            ResponseError::UnknownTopicOrPartition,
            format!("unknown topic '{name}'"),
        )
    })?;
    Ok(config::TOPIC_CONFIGS
        .iter()
        .filter(|&&(setting, _)| wanted(setting))
        .filter_map(|&(setting, _)| topic_entry(ctx, &topic.configs, setting, include))
        .collect())
}

/// One topic setting; None only if the tables disagree (a topic setting without a value).
fn topic_entry(
    ctx: &RequestContext,
    overrides: &BTreeMap<String, String>,
    name: &'static str,
    include: Include,
) -> Option<DescribeConfigsResourceResult> {
    let (value, source) = ctx.broker.config.topic_value(overrides, name)?;
    let broker_def = config::topic_default_key(name).and_then(broker_def);
    let sensitive = broker_def.is_some_and(|def| def.sensitive);
    let mut synonyms = Vec::new();
    if include.synonyms {
        if let Some(own) = overrides.get(name) {
            synonyms.push(synonym(
                name,
                own.clone(),
                ConfigSource::TopicOverride,
                sensitive,
            ));
        }
        if let Some(def) = broker_def {
            synonyms.extend(broker_synonyms(ctx, def));
        }
    }
    let (config_type, doc) = match (broker_def, topic_only(name)) {
        (Some(def), _) => (config_type(name, def.kind), def.doc),
        (None, Some((kafka_type, doc))) => (kafka_type, doc),
        (None, None) => (TYPE_STRING, ""),
    };
    Some(entry(
        name,
        value,
        source,
        sensitive,
        false,
        synonyms,
        config_type,
        doc,
        include,
    ))
}

fn broker_configs(
    ctx: &RequestContext,
    name: &str,
    wanted: &dyn Fn(&str) -> bool,
    include: Include,
) -> Result<Vec<DescribeConfigsResourceResult>, Refusal> {
    if name.is_empty() {
        // Kafka's cluster-wide dynamic defaults; gregor has none (see the module doc).
        return Ok(Vec::new());
    }
    let node_id = ctx.broker.config.node_id();
    let asked: i32 = name.parse().map_err(|_| {
        Refusal::new(
            ResponseError::InvalidRequest,
            format!("Broker id must be an integer, but it is: {name}"),
        )
    })?;
    if asked != node_id {
        return Err(Refusal::new(
            ResponseError::InvalidRequest,
            format!(
                "Unexpected broker id, expected {node_id} or empty string, but received {name}"
            ),
        ));
    }
    Ok(config::BROKER_CONFIGS
        .iter()
        .filter(|def| wanted(def.name))
        .filter_map(|def| {
            let (value, source) = ctx.broker.config.value(def.name)?;
            let synonyms = if include.synonyms {
                broker_synonyms(ctx, def)
            } else {
                Vec::new()
            };
            Some(entry(
                def.name,
                value,
                source,
                def.sensitive,
                true,
                synonyms,
                config_type(def.name, def.kind),
                def.doc,
                include,
            ))
        })
        .collect())
}

/// Where a broker setting's value can come from, most specific first: the static setting if
/// one is set, then the default.
fn broker_synonyms(ctx: &RequestContext, def: &'static ConfigDef) -> Vec<DescribeConfigsSynonym> {
    let mut synonyms = Vec::new();
    if let Some((value, ConfigSource::StaticBroker)) = ctx.broker.config.value(def.name) {
        synonyms.push(synonym(
            def.name,
            value,
            ConfigSource::StaticBroker,
            def.sensitive,
        ));
    }
    synonyms.push(synonym(
        def.name,
        def.default.to_string(),
        ConfigSource::Default,
        def.sensitive,
    ));
    synonyms
}

fn synonym(
    name: &'static str,
    value: String,
    source: ConfigSource,
    sensitive: bool,
) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(StrBytes::from_static_str(name))
        .with_value((!sensitive).then(|| StrBytes::from_string(value)))
        .with_source(source.wire_value())
}

#[allow(clippy::too_many_arguments)]
fn entry(
    name: &'static str,
    value: String,
    source: ConfigSource,
    sensitive: bool,
    read_only: bool,
    synonyms: Vec<DescribeConfigsSynonym>,
    config_type: i8,
    doc: &'static str,
    include: Include,
) -> DescribeConfigsResourceResult {
    let mut result = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_static_str(name))
        .with_value((!sensitive).then(|| StrBytes::from_string(value)))
        .with_read_only(read_only)
        .with_config_source(source.wire_value())
        .with_is_sensitive(sensitive)
        .with_synonyms(synonyms)
        .with_documentation(None);
    if include.v3_fields {
        result.config_type = config_type;
        if include.documentation {
            result.documentation = Some(StrBytes::from_static_str(doc));
        }
    }
    result
}

fn broker_def(name: &str) -> Option<&'static ConfigDef> {
    config::BROKER_CONFIGS.iter().find(|def| def.name == name)
}

fn topic_only(name: &str) -> Option<(i8, &'static str)> {
    TOPIC_ONLY_SETTINGS
        .iter()
        .find(|(setting, _, _)| *setting == name)
        .map(|(_, kafka_type, doc)| (*kafka_type, *doc))
}

/// Kafka's type for a setting: INT where Kafka uses INT, else by the kind gregor validates.
fn config_type(name: &str, kind: ConfigKind) -> i8 {
    if KAFKA_INT_SETTINGS.contains(&name) {
        return TYPE_INT;
    }
    match kind {
        ConfigKind::Long { .. } => TYPE_LONG,
        ConfigKind::Double { .. } => TYPE_DOUBLE,
        ConfigKind::Boolean => TYPE_BOOLEAN,
        ConfigKind::List(_) => TYPE_LIST,
        ConfigKind::Choice(_) | ConfigKind::Text => TYPE_STRING,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::broker_with;
    use crate::api::RequestContext;
    use crate::broker::Broker;
    use bytes::BytesMut;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::Encodable;
    use std::sync::Arc;

    fn ctx(broker: &Arc<Broker>, version: i16) -> RequestContext {
        crate::api::test_support::ctx(broker, ApiKey::DescribeConfigs, version)
    }

    async fn create(broker: &Broker, name: &str, overrides: &[(&str, &str)]) {
        crate::api::test_support::create_topic(broker, name, 1, overrides).await;
    }

    fn resource(kind: i8, name: &str, keys: Option<&[&str]>) -> DescribeConfigsResource {
        DescribeConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configuration_keys(keys.map(|keys| {
                keys.iter()
                    .map(|k| StrBytes::from_string(k.to_string()))
                    .collect()
            }))
    }

    fn request(resources: Vec<DescribeConfigsResource>) -> DescribeConfigsRequest {
        DescribeConfigsRequest::default().with_resources(resources)
    }

    fn find<'a>(
        result: &'a DescribeConfigsResult,
        name: &str,
    ) -> &'a DescribeConfigsResourceResult {
        result
            .configs
            .iter()
            .find(|c| c.name.as_str() == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    fn synonyms(entry: &DescribeConfigsResourceResult) -> Vec<(&str, Option<&str>, i8)> {
        entry
            .synonyms
            .iter()
            .map(|s| (s.name.as_str(), s.value.as_deref(), s.source))
            .collect()
    }

    fn encodes(response: &DescribeConfigsResponse, version: i16) {
        let mut buf = BytesMut::new();
        response
            .encode(&mut buf, version)
            .unwrap_or_else(|e| panic!("v{version} does not encode: {e}"));
    }

    #[tokio::test]
    async fn topic_configs_with_sources_and_synonyms() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker_with(dir.path(), &[("log.retention.ms", "5000")]).await;
        create(
            &b,
            "orders",
            &[
                ("retention.ms", "1000"),
                ("cleanup.policy", "compact,delete"),
            ],
        )
        .await;
        let mut req = request(vec![resource(RESOURCE_TOPIC, "orders", None)]);
        req.include_synonyms = true;
        req.include_documentation = true;
        let resp = handle(&ctx(&b, 4), req);
        let r = &resp.results[0];
        assert_eq!(r.error_code, 0);
        assert_eq!(r.error_message, None);
        assert_eq!(r.resource_name.as_str(), "orders");
        assert_eq!(r.configs.len(), config::TOPIC_CONFIGS.len());

        let retention = find(r, "retention.ms");
        assert_eq!(retention.value.as_deref(), Some("1000"));
        assert_eq!(retention.config_source, 1);
        assert!(!retention.read_only);
        assert!(!retention.is_sensitive);
        assert_eq!(retention.config_type, TYPE_LONG);
        assert!(retention
            .documentation
            .as_ref()
            .is_some_and(|d| !d.is_empty()));
        assert_eq!(
            synonyms(retention),
            vec![
                ("retention.ms", Some("1000"), 1),
                ("log.retention.ms", Some("5000"), 4),
                ("log.retention.ms", Some("604800000"), 5),
            ]
        );

        let segment = find(r, "segment.bytes");
        assert_eq!(segment.value.as_deref(), Some("1073741824"));
        assert_eq!(segment.config_source, 5);
        assert_eq!(segment.config_type, TYPE_INT);
        assert_eq!(
            synonyms(segment),
            vec![("log.segment.bytes", Some("1073741824"), 5)]
        );

        let cleanup = find(r, "cleanup.policy");
        assert_eq!(cleanup.value.as_deref(), Some("compact,delete"));
        assert_eq!(cleanup.config_source, 1);
        assert_eq!(cleanup.config_type, TYPE_LIST);
        assert_eq!(
            synonyms(cleanup),
            vec![
                ("cleanup.policy", Some("compact,delete"), 1),
                ("log.cleanup.policy", Some("delete"), 5)
            ]
        );
        // The compaction settings, with Kafka's types and defaults.
        for (name, value, kafka_type, broker_name) in [
            (
                "delete.retention.ms",
                "86400000",
                TYPE_LONG,
                "log.cleaner.delete.retention.ms",
            ),
            (
                "min.compaction.lag.ms",
                "0",
                TYPE_LONG,
                "log.cleaner.min.compaction.lag.ms",
            ),
            (
                "max.compaction.lag.ms",
                "9223372036854775807",
                TYPE_LONG,
                "log.cleaner.max.compaction.lag.ms",
            ),
            (
                "min.cleanable.dirty.ratio",
                "0.5",
                TYPE_DOUBLE,
                "log.cleaner.min.cleanable.ratio",
            ),
        ] {
            let entry = find(r, name);
            assert_eq!(entry.value.as_deref(), Some(value), "{name}");
            assert_eq!(entry.config_source, 5, "{name}");
            assert_eq!(entry.config_type, kafka_type, "{name}");
            assert_eq!(
                synonyms(entry),
                vec![(broker_name, Some(value), 5)],
                "{name}"
            );
        }
        let min_isr = find(r, "min.insync.replicas");
        assert_eq!(min_isr.value.as_deref(), Some("1"));
        assert_eq!(min_isr.config_source, 5);
        assert!(min_isr.synonyms.is_empty());

        let timestamp_type = find(r, "message.timestamp.type");
        assert_eq!(timestamp_type.config_type, TYPE_STRING);
        for v in 1..=4 {
            encodes(&resp, v);
        }
    }

    #[tokio::test]
    async fn keys_filter_and_version_fields() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker_with(dir.path(), &[]).await;
        create(&b, "t", &[]).await;
        for v in 1..=4 {
            let mut req = request(vec![
                resource(RESOURCE_TOPIC, "t", Some(&["retention.ms", "no.such.key"])),
                resource(RESOURCE_TOPIC, "t", Some(&[])),
            ]);
            req.include_documentation = v >= 3;
            let resp = handle(&ctx(&b, v), req);
            let filtered = &resp.results[0];
            assert_eq!(filtered.configs.len(), 1, "unknown keys are not invented");
            let entry = &filtered.configs[0];
            assert_eq!(entry.name.as_str(), "retention.ms");
            assert!(entry.synonyms.is_empty(), "no synonyms unless asked");
            if v >= 3 {
                assert_eq!(entry.config_type, TYPE_LONG);
                assert!(entry.documentation.is_some());
            } else {
                assert_eq!(entry.config_type, 0);
                assert_eq!(entry.documentation, None);
            }
            assert_eq!(
                resp.results[1].configs.len(),
                config::TOPIC_CONFIGS.len(),
                "an empty key list means every key"
            );
            encodes(&resp, v);
        }
    }

    #[tokio::test]
    async fn broker_resource() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker_with(dir.path(), &[("num.partitions", "3")]).await;
        let node = b.config.node_id().to_string();
        let mut req = request(vec![
            resource(RESOURCE_BROKER, &node, None),
            resource(RESOURCE_BROKER, "", None),
            resource(RESOURCE_BROKER, "77", None),
            resource(RESOURCE_BROKER, "one", None),
            resource(RESOURCE_BROKER_LOGGER, &node, None),
            resource(16, "subscription", None),
            resource(
                RESOURCE_BROKER,
                &node,
                Some(&["log.retention.ms", "log.retention.hours"]),
            ),
        ]);
        req.include_synonyms = true;
        let resp = handle(&ctx(&b, 4), req);
        let this = &resp.results[0];
        assert_eq!(this.error_code, 0);
        assert_eq!(this.configs.len(), config::BROKER_CONFIGS.len());
        assert!(this.configs.iter().all(|c| c.read_only));
        let partitions = find(this, "num.partitions");
        assert_eq!(partitions.value.as_deref(), Some("3"));
        assert_eq!(partitions.config_source, 4);
        assert_eq!(partitions.config_type, TYPE_INT);
        assert_eq!(
            synonyms(partitions),
            vec![
                ("num.partitions", Some("3"), 4),
                ("num.partitions", Some("1"), 5)
            ]
        );
        let auto_create = find(this, "auto.create.topics.enable");
        assert_eq!(auto_create.config_source, 5);
        assert_eq!(auto_create.config_type, TYPE_BOOLEAN);
        assert_eq!(find(this, "log.cleanup.policy").config_type, TYPE_LIST);
        assert_eq!(
            find(this, "log.cleaner.min.cleanable.ratio").config_type,
            TYPE_DOUBLE
        );
        assert_eq!(
            find(this, "log.cleaner.dedupe.buffer.size").config_type,
            TYPE_LONG
        );
        assert_eq!(find(this, "log.cleaner.enable").config_type, TYPE_BOOLEAN);

        assert_eq!(resp.results[1].error_code, 0);
        assert!(resp.results[1].configs.is_empty());
        for (i, r) in resp.results.iter().enumerate().skip(2).take(4) {
            assert_eq!(
                r.error_code,
                ResponseError::InvalidRequest.code(),
                "resource {i}"
            );
            assert!(r.error_message.is_some());
            assert!(r.configs.is_empty());
        }
        assert_eq!(resp.results[6].configs.len(), 1);
        for v in 1..=4 {
            encodes(&resp, v);
        }
    }

    #[tokio::test]
    async fn unknown_and_invalid_topics() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker_with(dir.path(), &[]).await;
        let resp = handle(
            &ctx(&b, 2),
            request(vec![
                resource(RESOURCE_TOPIC, "missing", None),
                resource(RESOURCE_TOPIC, "bad name", None),
            ]),
        );
        assert_eq!(
            resp.results[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert_eq!(
            resp.results[1].error_code,
            ResponseError::InvalidTopicException.code()
        );
        for v in 1..=4 {
            encodes(&resp, v);
        }
    }
}
