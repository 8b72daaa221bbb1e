//! Fixtures for the handlers' unit tests: a real broker in a temporary dir and a request
//! context for calling a handler directly.

use std::path::Path;
use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestHeader};

use super::RequestContext;
use crate::broker::Broker;
use crate::cluster::CreateTopicSpec;
use crate::config::BrokerConfig;

/// A registered broker on `dir` with `settings` (Kafka names) applied (a one-voter quorum
/// of its own, no listeners).
pub(crate) async fn broker_with(dir: &Path, settings: &[(&str, &str)]) -> Arc<Broker> {
    let mut config = BrokerConfig::new("127.0.0.1:9092".parse().unwrap(), dir.to_path_buf());
    for (k, v) in settings {
        config.set(k, v).unwrap();
    }
    let broker = Broker::open(config).await.unwrap();
    broker.register().await.unwrap();
    broker
}

/// A context for a request of `api_key` at `version`.
pub(crate) fn ctx(broker: &Arc<Broker>, api_key: ApiKey, version: i16) -> RequestContext {
    RequestContext {
        broker: broker.clone(),
        header: RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version),
        version,
        peer: "127.0.0.1:50000".parse().unwrap(),
        principal: crate::server::Principal::Anonymous,
    }
}

/// Creates topic `name` with `partitions` partitions of one replica and the topic `configs`;
/// returns its id.
pub(crate) async fn create_topic(
    broker: &Broker,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> uuid::Uuid {
    broker
        .create_topic(CreateTopicSpec {
            name: name.to_string(),
            partitions,
            replication_factor: 1,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            validate_only: false,
            internal: false,
            assignment: None,
        })
        .await
        .unwrap()
        .id
}
