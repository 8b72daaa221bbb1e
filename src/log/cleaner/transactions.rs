//! What the log cleaner knows of transactions while it walks a log in offset order (Kafka's
//! `CleanedTransactionMetadata`).
//!
//! The cleaner only looks below the last stable offset, so every transactional batch it reads
//! belongs to a transaction that has ended: aborted if the aborted-transaction index has an
//! entry for its producer whose range holds it, committed otherwise. The marker that ended it
//! may lie beyond the cleaned range; the index still knows of an abort there.
//!
//! - An aborted transaction's data batches are removed whole (the cleaner may keep one as an
//!   empty header for its producer's sequence numbers), and they never enter the offset map.
//! - A committed transaction's records are cleaned like any others.
//! - A marker stays while any batch of its transaction is still in the log. Once none is, it
//!   gets a delete horizon (`delete.retention.ms`, KIP-534) as tombstones do, and a later
//!   compaction past that horizon removes it, so a consumer that read the transaction's data
//!   has time to read its marker too.
//! - The cleaned segment's aborted-transaction entries are the aborts whose marker stays and
//!   whose data was read in this pass; the others have nothing left to hide.

use std::collections::{HashMap, HashSet};

use super::super::batch::{BatchHeader, MarkerRecord};
use super::super::txn_index::AbortedTxn;

/// An aborted transaction the walk is inside of, and whether a batch of it was read.
#[derive(Debug, Clone, Copy)]
struct OpenAbort {
    txn: AbortedTxn,
    batch_read: bool,
}

/// The transactions around the cleaner's position in one walk over a log.
#[derive(Debug, Default)]
pub(super) struct TxnTracker {
    /// Aborted transactions not reached yet, the latest first offset first (taken from the end).
    ahead: Vec<AbortedTxn>,
    /// Producer id → the aborted transaction it is in at the current position.
    aborted: HashMap<i64, OpenAbort>,
    /// Producers inside a committed transaction of which a batch was read.
    committed: HashSet<i64>,
    /// Aborts whose marker the walk keeps and whose data it read, in marker order.
    indexed: Vec<AbortedTxn>,
}

impl TxnTracker {
    /// A walk over a range whose aborted transactions (from the index) are `aborted`.
    pub(super) fn new(mut aborted: Vec<AbortedTxn>) -> TxnTracker {
        aborted.sort_by_key(|txn| std::cmp::Reverse(txn.first_offset));
        TxnTracker {
            ahead: aborted,
            ..TxnTracker::default()
        }
    }

    /// Enters every aborted transaction that starts at or before `offset`.
    fn reach(&mut self, offset: i64) {
        while let Some(next) = self.ahead.last().copied() {
            if next.first_offset > offset {
                break;
            }
            self.ahead.pop();
            self.aborted.entry(next.producer_id).or_insert(OpenAbort {
                txn: next,
                batch_read: false,
            });
        }
    }

    /// A data batch: `true` if it belongs to an aborted transaction (its records go).
    pub(super) fn on_data_batch(&mut self, header: &BatchHeader) -> bool {
        self.reach(header.last_offset());
        if !header.is_transactional() {
            return false;
        }
        if let Some(open) = self.aborted.get_mut(&header.producer_id()) {
            open.batch_read = true;
            return true;
        }
        self.committed.insert(header.producer_id());
        false
    }

    /// A control batch with its marker (`None`: no record, or a control type that is not a
    /// marker; `empty`: the batch has no record): `true` if nothing of its transaction was
    /// read, so the marker may go once its delete horizon has passed.
    pub(super) fn on_control_batch(
        &mut self,
        header: &BatchHeader,
        marker: Option<MarkerRecord>,
        empty: bool,
    ) -> bool {
        self.reach(header.last_offset());
        let producer_id = header.producer_id();
        match marker {
            Some(marker) if !marker.commit => match self.aborted.remove(&producer_id) {
                Some(open) if open.batch_read => {
                    self.indexed.push(open.txn);
                    false
                }
                _ => true,
            },
            Some(_) => !self.committed.remove(&producer_id),
            // An emptied control batch was cleaned before; an unknown control type stays.
            None => empty,
        }
    }

    /// The aborts indexed since the last call: the entries of the segment just written.
    pub(super) fn take_indexed(&mut self) -> Vec<AbortedTxn> {
        std::mem::take(&mut self.indexed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::testing::producer_batch;
    use crate::log::batch::{encode_marker_batch, set_base_offset};

    fn at(bytes: bytes::Bytes, base_offset: i64) -> Vec<u8> {
        let mut bytes = bytes.to_vec();
        set_base_offset(&mut bytes, base_offset);
        bytes
    }

    fn header(bytes: &[u8]) -> BatchHeader<'_> {
        BatchHeader::parse(bytes).expect("header")
    }

    fn data(producer_id: i64, offset: i64, transactional: bool) -> Vec<u8> {
        at(
            producer_batch(producer_id, 0, 0, 1, 1, transactional),
            offset,
        )
    }

    fn marker(producer_id: i64, offset: i64, commit: bool) -> (Vec<u8>, MarkerRecord) {
        let record = MarkerRecord {
            commit,
            coordinator_epoch: 0,
        };
        let bytes = encode_marker_batch(producer_id, 0, record, 1).expect("marker");
        (at(bytes, offset), record)
    }

    fn abort(producer_id: i64, first_offset: i64, last_offset: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id,
            first_offset,
            last_offset,
            last_stable_offset: last_offset + 1,
        }
    }

    #[test]
    fn aborted_data_goes_and_markers_stay_while_their_data_does() {
        // Producer 1 aborts 0..3, producer 2 commits 1..4, producer 1 aborts again 5..6 whose
        // data an earlier compaction already removed; offset 7 is a plain batch.
        let mut tracker = TxnTracker::new(vec![abort(1, 5, 6), abort(1, 0, 3)]);
        assert!(tracker.on_data_batch(&header(&data(1, 0, true))));
        assert!(!tracker.on_data_batch(&header(&data(2, 1, true))));
        assert!(tracker.on_data_batch(&header(&data(1, 2, true))));
        let (abort_1, record) = marker(1, 3, false);
        assert!(!tracker.on_control_batch(&header(&abort_1), Some(record), false));
        let (commit_2, record) = marker(2, 4, true);
        assert!(!tracker.on_control_batch(&header(&commit_2), Some(record), false));
        assert_eq!(tracker.take_indexed(), vec![abort(1, 0, 3)]);
        let (abort_again, record) = marker(1, 6, false);
        assert!(tracker.on_control_batch(&header(&abort_again), Some(record), false));
        assert!(!tracker.on_data_batch(&header(&data(3, 7, false))));
        // A commit whose data is gone may go; so may an emptied control batch.
        let (commit_2, record) = marker(2, 8, true);
        assert!(tracker.on_control_batch(&header(&commit_2), Some(record), false));
        assert!(tracker.on_control_batch(&header(&commit_2), None, true));
        assert!(!tracker.on_control_batch(&header(&commit_2), None, false));
        assert!(tracker.take_indexed().is_empty());
    }
}
