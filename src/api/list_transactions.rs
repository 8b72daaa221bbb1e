//! ListTransactions (key 66), v0–v1: the transactional ids this broker coordinates
//! (`kafka-transactions.sh list`, the admin client's `listTransactions`).
//!
//! Filters as Kafka's: by state name (unknown names are echoed in `unknown_state_filters` and
//! match nothing), by producer id, and from v1 by duration (transactions open for at least
//! `duration_filter` ms; -1 for no filter). Version 2's transactional id pattern (a regular
//! expression, KIP-1152) is not advertised.

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::RequestContext;
use crate::replica::manager::now_ms;
use crate::txn::TxnState;

/// Handled versions.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 1 };

/// Every state a filter may name.
const STATES: [TxnState; 8] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
    TxnState::Dead,
    TxnState::PrepareEpochFence,
];

/// ListTransactions.
pub fn handle(ctx: &RequestContext, req: ListTransactionsRequest) -> ListTransactionsResponse {
    let unknown: Vec<StrBytes> = req
        .state_filters
        .iter()
        .filter(|f| !STATES.iter().any(|s| s.name() == f.as_str()))
        .cloned()
        .collect();
    let duration = (ctx.version >= 1 && req.duration_filter >= 0).then_some(req.duration_filter);
    let now = now_ms();
    let states = ctx.broker.txns.read(|coordinator| {
        coordinator
            .all_metadata()
            .filter(|m| {
                req.state_filters.is_empty()
                    || req
                        .state_filters
                        .iter()
                        .any(|f| f.as_str() == m.state.name())
            })
            .filter(|m| {
                req.producer_id_filters.is_empty()
                    || req.producer_id_filters.iter().any(|p| p.0 == m.producer_id)
            })
            .filter(|m| duration.is_none_or(|d| m.start_ms >= 0 && now - m.start_ms >= d))
            .map(|m| {
                TransactionState::default()
                    .with_transactional_id(TransactionalId(StrBytes::from_string(
                        m.transactional_id.clone(),
                    )))
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_transaction_state(StrBytes::from_static_str(m.state.name()))
            })
            .collect()
    });
    ListTransactionsResponse::default()
        .with_error_code(0)
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}
