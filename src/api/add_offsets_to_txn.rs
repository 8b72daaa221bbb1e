//! AddOffsetsToTxn (key 25), v0–v4: a transactional producer is about to commit a group's
//! offsets in its transaction (`send_offsets_to_transaction`).
//!
//! The coordinator adds the group's `__consumer_offsets` partition to the transaction, so its
//! marker makes the offsets the producer then sends with TxnOffsetCommit visible (or drops
//! them). PRODUCER_FENCED is INVALID_PRODUCER_EPOCH before v2 (KIP-588).

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};
use kafka_protocol::protocol::VersionRange;

use super::errors::txn_error_code;
use super::RequestContext;
use crate::coordinator::OFFSETS_TOPIC;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 4 };

/// AddOffsetsToTxn.
pub async fn handle(ctx: &RequestContext, req: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    if ctx.broker.controller.image().topic(OFFSETS_TOPIC).is_none() {
        if let Err(error) = ctx.broker.ensure_offsets_topic().await {
            tracing::warn!(%error, "cannot create __consumer_offsets");
            return AddOffsetsToTxnResponse::default()
                .with_error_code(kafka_protocol::ResponseError::CoordinatorNotAvailable.code());
        }
    }
    let partition = ctx.broker.groups.partition_for(req.group_id.as_str());
    let id = req.transactional_id.to_string();
    let added = [(OFFSETS_TOPIC.to_string(), partition)];
    let answer = ctx
        .broker
        .txns
        .call(|c, now, token| {
            c.add_partitions(
                now,
                token,
                &id,
                req.producer_id.0,
                req.producer_epoch,
                &added,
            )
        })
        .await;
    let code = answer.map_or_else(|error| txn_error_code(&error, ctx.version >= 2), |_| 0);
    AddOffsetsToTxnResponse::default().with_error_code(code)
}
