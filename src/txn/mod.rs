//! Transactions: Apache Kafka's transaction coordinator as a state machine that does no I/O.
//!
//! What it owns: the transactional ids whose `__transaction_state` partition this broker
//! leads — each id's producer id and epoch, its transaction's state and partitions — and the
//! rules of InitProducerId (with a transactional id), AddPartitionsToTxn, AddOffsetsToTxn and
//! EndTxn, transaction timeouts and id expiration. What it does not own: sockets, the clock,
//! the log, producer id allocation, other brokers. Its runtime appends the records it returns
//! and reports back ([`TxnCoordinator::complete`]), has partition leaders write the markers it
//! asks for ([`MarkerJob`], then [`TxnCoordinator::markers_written`]), ticks it at
//! [`TxnCoordinator::next_deadline`], and replays a partition when it becomes its leader.
//!
//! The data side of transactions (open transactions and the last stable offset per partition,
//! markers, the aborted-transaction index, read_committed reads) is in [`crate::log`]
//! (`producer_state`, `txn_index`) and the WriteTxnMarkers API.
//!
//! - [`coordinator`]: the state machine, [`TxnCoordinator`], its requests' outcomes and the
//!   [`Output`] of a step.
//! - [`state`]: one id's [`TxnMetadata`] and Kafka's [`TxnState`]s.
//! - [`records`]: the `__transaction_state` key and value formats (Kafka's own).
//!
//! Invariant: nothing in this module blocks, sleeps, reads a clock or does I/O, so every
//! behaviour is reproducible in a unit test with a manual clock.

pub mod coordinator;
pub mod records;
pub mod state;

#[cfg(test)]
mod tests;

pub use coordinator::{
    Append, AppendError, AppendToken, MarkerJob, Output, RequestToken, Response, TxnConfig,
    TxnCoordinator, TxnError, END_TXN_WAIT_MS,
};
pub use state::{TxnMetadata, TxnState};

/// Name of the internal topic holding transaction state.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";
