//! One transactional id's state: Kafka's `TransactionState` and `TransactionMetadata`.

use std::collections::BTreeSet;

use super::records::TxnValue;

/// Where a transactional id's transaction is (Kafka's ids, which the log stores).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    /// No transaction (after InitProducerId, before the first AddPartitionsToTxn).
    Empty,
    /// Partitions were added: records may be written.
    Ongoing,
    /// EndTxn(commit) was accepted; markers are being written.
    PrepareCommit,
    /// EndTxn(abort), a timeout or a fence; markers are being written.
    PrepareAbort,
    /// Every COMMIT marker is written.
    CompleteCommit,
    /// Every ABORT marker is written.
    CompleteAbort,
    /// Expired; the id is being removed.
    Dead,
    /// The producer is being fenced (a new InitProducerId or a timeout) before its open
    /// transaction is aborted. Never written (Kafka writes it as the abort that follows).
    PrepareEpochFence,
}

impl TxnState {
    /// Kafka's id of the state.
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    /// The state of a Kafka id.
    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's name (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Whether a transaction may move from `self` to `next` (Kafka's `validPreviousStates`).
    pub fn may_become(self, next: TxnState) -> bool {
        use TxnState::*;
        match next {
            Empty => matches!(self, Empty | CompleteCommit | CompleteAbort),
            Ongoing => matches!(self, Ongoing | Empty | CompleteCommit | CompleteAbort),
            PrepareCommit => self == Ongoing,
            PrepareAbort => matches!(self, Ongoing | PrepareEpochFence),
            CompleteCommit => self == PrepareCommit,
            CompleteAbort => self == PrepareAbort,
            Dead => matches!(self, Empty | CompleteCommit | CompleteAbort),
            PrepareEpochFence => self == Ongoing,
        }
    }

    /// Whether markers are being written (the transaction is decided but not complete).
    pub fn is_preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// What the coordinator keeps about one transactional id (its last written state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    /// The transactional id.
    pub transactional_id: String,
    /// The `__transaction_state` partition holding it.
    pub partition: i32,
    /// Producer id.
    pub producer_id: i64,
    /// Current producer epoch.
    pub producer_epoch: i16,
    /// The epoch before the last bump (a retried InitProducerId is recognised by it); -1.
    pub last_producer_epoch: i16,
    /// The transaction timeout the producer asked for.
    pub timeout_ms: i32,
    /// The state.
    pub state: TxnState,
    /// Partitions in the ongoing (or deciding) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// When the ongoing transaction began (-1: none).
    pub start_ms: i64,
    /// When the state last changed.
    pub last_update_ms: i64,
}

impl TxnMetadata {
    /// The metadata a value describes.
    pub fn from_value(transactional_id: &str, partition: i32, value: TxnValue) -> TxnMetadata {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            partition,
            producer_id: value.producer_id,
            producer_epoch: value.producer_epoch,
            last_producer_epoch: -1,
            timeout_ms: value.timeout_ms,
            state: value.state,
            partitions: value.partitions,
            start_ms: value.start_ms,
            last_update_ms: value.last_update_ms,
        }
    }

    /// The value to write for this metadata.
    pub fn to_value(&self) -> TxnValue {
        TxnValue {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            timeout_ms: self.timeout_ms,
            state: self.state,
            partitions: self.partitions.clone(),
            last_update_ms: self.last_update_ms,
            start_ms: self.start_ms,
        }
    }
}
