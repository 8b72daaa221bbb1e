//! FindCoordinator (key 10), v0–v6: which broker coordinates a group or a transactional id.
//!
//! The coordinator of group `g` is the leader of `__consumer_offsets` partition
//! `abs(java_string_hash(g)) % offsets.topic.num.partitions` (Kafka's mapping); that of
//! transactional id `t` the leader of `__transaction_state` partition
//! `abs(java_string_hash(t)) % transaction.state.log.num.partitions`. The first request of a
//! kind creates its topic if it does not exist, as Kafka does. v4+ batches keys
//! (`coordinator_keys`, one answer each); earlier versions ask for one key. Key type 0 is a
//! group, 1 a transactional id; any other type is `INVALID_REQUEST`.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use kafka_protocol::ResponseError;

use super::RequestContext;
use crate::coordinator::OFFSETS_TOPIC;
use crate::txn::TRANSACTION_STATE_TOPIC;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 6 };

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// FindCoordinator.
pub async fn handle(ctx: &RequestContext, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let keys = if ctx.version >= 4 {
        req.coordinator_keys
    } else {
        vec![req.key]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        coordinators.push(find(ctx, req.key_type, key).await);
    }
    let mut response = FindCoordinatorResponse::default();
    if ctx.version >= 4 {
        response.coordinators = coordinators;
    } else if let Some(c) = coordinators.pop() {
        response.error_code = c.error_code;
        if ctx.version >= 1 {
            response.error_message = c.error_message;
        }
        response.node_id = c.node_id;
        response.host = c.host;
        response.port = c.port;
    }
    response
}

async fn find(ctx: &RequestContext, key_type: i8, key: StrBytes) -> Coordinator {
    let fail = |error: ResponseError, message: String| {
        Coordinator::default()
            .with_key(key.clone())
            .with_node_id(BrokerId(-1))
            .with_host(StrBytes::default())
            .with_port(-1)
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    let broker = &ctx.broker;
    let topic = match key_type {
        KEY_TYPE_GROUP => OFFSETS_TOPIC,
        KEY_TYPE_TRANSACTION => TRANSACTION_STATE_TOPIC,
        other => {
            return fail(
                ResponseError::InvalidRequest,
                format!("unknown coordinator key type {other}"),
            )
        }
    };
    if key_type == KEY_TYPE_TRANSACTION && key.is_empty() {
        return fail(
            ResponseError::InvalidRequest,
            "an empty transactional id has no coordinator".to_string(),
        );
    }
    if broker.controller.image().topic(topic).is_none() {
        let created = if key_type == KEY_TYPE_GROUP {
            broker.ensure_offsets_topic().await
        } else {
            broker.ensure_transaction_topic().await
        };
        if let Err(error) = created {
            tracing::warn!(%error, topic, "cannot create an internal topic");
            return fail(
                ResponseError::CoordinatorNotAvailable,
                format!("cannot create {topic}: {error}"),
            );
        }
    }
    let image = broker.controller.image();
    let partition = if key_type == KEY_TYPE_GROUP {
        broker.groups.partition_for(key.as_str())
    } else {
        broker.txns.partition_for(key.as_str())
    };
    let leader = image
        .partition(topic, partition)
        .map(|p| p.leader)
        .and_then(|leader| image.brokers.get(&leader));
    match leader {
        Some(node) => Coordinator::default()
            .with_key(key.clone())
            .with_node_id(BrokerId(node.node_id))
            .with_host(StrBytes::from_string(node.host.clone()))
            .with_port(i32::from(node.port))
            .with_error_code(0)
            .with_error_message(None),
        None => fail(
            ResponseError::CoordinatorNotAvailable,
            format!("{topic} partition {partition} has no leader"),
        ),
    }
}
