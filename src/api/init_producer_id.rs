//! InitProducerId (key 22), v0–v5: a producer id for an idempotent producer.
//!
//! Without a transactional id (the idempotent producer every modern client starts by default),
//! Kafka "blindly accepts" the request: a new producer id from this broker's block
//! ([`crate::cluster::producer_ids`]) at epoch 0, whatever producer id and epoch a v3+ request
//! carries (a client recovering from an error, KIP-360, gets a fresh id; the Java client bumps
//! idempotent epochs itself). While no block can be had from the controller the answer is
//! COORDINATOR_LOAD_IN_PROGRESS, which clients retry (as Kafka answers).
//!
//! An empty transactional id is INVALID_REQUEST (as Kafka). With a transactional id the answer is TRANSACTIONAL_ID_AUTHORIZATION_FAILED until the
//! transaction coordinator exists: the one error that every client (Java, librdkafka,
//! kafka-python, aiokafka) treats as fatal at once, so `init_transactions()` fails fast instead
//! of retrying until its timeout. FindCoordinator answers transactional ids the same way.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::protocol::VersionRange;
use kafka_protocol::ResponseError;

use super::RequestContext;

/// Handled versions (the protocol crate's request range; its response goes to v6).
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

/// InitProducerId.
pub async fn handle(ctx: &RequestContext, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let refused = |error: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if req
        .transactional_id
        .as_ref()
        .is_some_and(|id| id.is_empty())
    {
        // As Kafka's coordinator: an empty transactional id is neither idempotent-only (null)
        // nor a usable transactional id.
        return refused(ResponseError::InvalidRequest);
    }
    if let Some(transactional_id) = &req.transactional_id {
        tracing::debug!(transactional_id = %transactional_id.as_str(), "transactional InitProducerId refused: no transaction coordinator yet");
        return refused(ResponseError::TransactionalIdAuthorizationFailed);
    }
    let broker = ctx.broker.clone();
    let block_size = broker.config.producer_id_block_size();
    let allocate = move || {
        let broker = broker.clone();
        async move { broker.controller.allocate_producer_ids(block_size).await }
    };
    match ctx.broker.producer_ids.next(allocate).await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => {
            tracing::warn!(%error, "no producer id block from the controller");
            refused(ResponseError::CoordinatorLoadInProgress)
        }
    }
}
