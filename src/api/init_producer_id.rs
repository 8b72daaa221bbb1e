//! InitProducerId (key 22), v0–v5: a producer id for an idempotent producer.
//!
//! Without a transactional id (the idempotent producer every modern client starts by default),
//! Kafka "blindly accepts" the request: a new producer id from this broker's block
//! ([`crate::cluster::producer_ids`]) at epoch 0, whatever producer id and epoch a v3+ request
//! carries (a client recovering from an error, KIP-360, gets a fresh id; the Java client bumps
//! idempotent epochs itself). While no block can be had from the controller the answer is
//! COORDINATOR_LOAD_IN_PROGRESS, which clients retry (as Kafka answers).
//!
//! An empty transactional id is INVALID_REQUEST (as Kafka). A transactional id goes to the
//! transaction coordinator ([`crate::txn`]): a new id gets a producer id at epoch 0, a known one
//! its epoch bumped (fencing the producer before it; an open transaction is aborted first and
//! the answer is CONCURRENT_TRANSACTIONS, which clients retry). From v3 a producer that had an
//! id names it (KIP-360): a stale one is PRODUCER_FENCED (INVALID_PRODUCER_EPOCH before v4).
//! `transaction_timeout_ms` above `transaction.max.timeout.ms` is INVALID_TRANSACTION_TIMEOUT.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::protocol::VersionRange;
use kafka_protocol::ResponseError;

use super::errors::txn_error_code;
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
    let broker = ctx.broker.clone();
    let block_size = broker.config.producer_id_block_size();
    let allocate = move || {
        let broker = broker.clone();
        async move { broker.controller.allocate_producer_ids(block_size).await }
    };
    if let Some(transactional_id) = &req.transactional_id {
        let id = transactional_id.to_string();
        let txns = &ctx.broker.txns;
        let fresh = if txns.read(|c| c.needs_producer_id(&id)) {
            match ctx.broker.producer_ids.next(allocate).await {
                Ok(producer_id) => Some(producer_id),
                Err(error) => {
                    tracing::warn!(%error, "no producer id block from the controller");
                    return refused(ResponseError::CoordinatorLoadInProgress);
                }
            }
        } else {
            None
        };
        let expected = (ctx.version >= 3 && req.producer_id.0 >= 0)
            .then_some((req.producer_id.0, req.producer_epoch));
        let timeout_ms = req.transaction_timeout_ms;
        let answer = txns
            .call(|c, now, token| c.init_producer_id(now, token, &id, timeout_ms, expected, fresh))
            .await;
        return match answer {
            Ok((producer_id, epoch)) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch),
            Err(error) => {
                tracing::debug!(transactional_id = %id, %error, "transactional InitProducerId refused");
                InitProducerIdResponse::default()
                    .with_error_code(txn_error_code(&error, ctx.version >= 4))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
            }
        };
    }
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
