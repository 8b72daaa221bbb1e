//! DescribeCluster (key 60), versions 0–2: the cluster id, a controller id and the brokers,
//! from this broker's metadata image (what the Java admin client's `describeCluster()` and
//! librdkafka's `rd_kafka_DescribeCluster` ask).
//!
//! As for Metadata, the controller id is the answering broker (a KRaft broker names a live
//! broker, not the quorum leader, and forwards admin changes itself). Fenced brokers are left
//! out unless the request asks for them (v2, KIP-1073), then flagged `is_fenced`. A broker
//! serves the broker endpoints only: asking for the controllers' (v1+, KIP-919
//! `endpoint_type` 2) gets UNSUPPORTED_ENDPOINT_TYPE, as from a Kafka broker. Without an
//! authorizer every cluster operation is granted.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use kafka_protocol::ResponseError;

use super::metadata::CLUSTER_OPERATIONS_ALL;
use super::RequestContext;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

/// KIP-919's endpoint type of brokers (2 is controllers).
const ENDPOINT_TYPE_BROKER: i8 = 1;

/// Answers DescribeCluster.
pub fn handle(ctx: &RequestContext, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let version = ctx.version;
    let mut response = DescribeClusterResponse::default();
    if version >= 1 {
        response.endpoint_type = req.endpoint_type;
        if req.endpoint_type != ENDPOINT_TYPE_BROKER {
            response.error_code = ResponseError::UnsupportedEndpointType.code();
            response.error_message = Some(StrBytes::from_string(format!(
                "endpoint type {} is not served by a broker (only {ENDPOINT_TYPE_BROKER}, \
                 brokers)",
                req.endpoint_type
            )));
            return response;
        }
    }
    let image = ctx.broker.controller.image();
    let include_fenced = version >= 2 && req.include_fenced_brokers;
    response.brokers = image
        .brokers
        .values()
        .filter_map(|b| {
            let fenced = image
                .registrations
                .get(&b.node_id)
                .is_some_and(|r| r.fenced);
            if fenced && !include_fenced {
                return None;
            }
            let mut entry = DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node_id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.clone().map(StrBytes::from_string));
            if version >= 2 {
                entry.is_fenced = fenced;
            }
            Some(entry)
        })
        .collect();
    response.cluster_id = StrBytes::from_string(image.cluster_id.clone());
    response.controller_id = BrokerId(ctx.broker.config.node_id());
    if req.include_cluster_authorized_operations {
        response.cluster_authorized_operations = CLUSTER_OPERATIONS_ALL;
    }
    response
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::ApiKey;

    use super::*;
    use crate::api::test_support::{broker_with, ctx};

    #[tokio::test]
    async fn lists_the_brokers_and_refuses_the_controller_endpoints() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker_with(dir.path(), &[]).await;
        for version in 0..=2 {
            let c = ctx(&b, ApiKey::DescribeCluster, version);
            let resp = handle(
                &c,
                DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
            );
            assert_eq!(resp.error_code, 0);
            assert_eq!(resp.cluster_id.as_str(), b.controller.image().cluster_id);
            assert_eq!(resp.controller_id, BrokerId(b.config.node_id()));
            assert_eq!(
                resp.brokers
                    .iter()
                    .map(|x| (x.broker_id.0, x.is_fenced))
                    .collect::<Vec<_>>(),
                vec![(b.config.node_id(), false)]
            );
            assert_eq!(resp.cluster_authorized_operations, CLUSTER_OPERATIONS_ALL);
            let plain = handle(&c, DescribeClusterRequest::default());
            assert_eq!(plain.cluster_authorized_operations, i32::MIN);
        }
        let c = ctx(&b, ApiKey::DescribeCluster, 1);
        let resp = handle(&c, DescribeClusterRequest::default().with_endpoint_type(2));
        assert_eq!(
            resp.error_code,
            ResponseError::UnsupportedEndpointType.code()
        );
        assert!(resp.brokers.is_empty());
    }
}
