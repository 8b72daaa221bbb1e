//! EndTxn (key 26), v0–v4: a transactional producer commits or aborts its transaction.
//!
//! The coordinator writes PrepareCommit or PrepareAbort and answers; the markers are written
//! afterwards ([`crate::coordinator::markers`]), and the producer's next transaction waits
//! (CONCURRENT_TRANSACTIONS) until they are. Version 5 (KIP-890's epoch bump per transaction)
//! is not advertised. PRODUCER_FENCED is INVALID_PRODUCER_EPOCH before v2 (KIP-588).

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};
use kafka_protocol::protocol::VersionRange;

use super::errors::txn_error_code;
use super::RequestContext;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 4 };

/// EndTxn.
pub async fn handle(ctx: &RequestContext, req: EndTxnRequest) -> EndTxnResponse {
    let id = req.transactional_id.to_string();
    let answer = ctx
        .broker
        .txns
        .call(|c, now, token| {
            c.end_txn(
                now,
                token,
                &id,
                req.producer_id.0,
                req.producer_epoch,
                req.committed,
            )
        })
        .await;
    let code = answer.map_or_else(|error| txn_error_code(&error, ctx.version >= 2), |_| 0);
    EndTxnResponse::default().with_error_code(code)
}
