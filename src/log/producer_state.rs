//! Producer state of one partition (Kafka's `ProducerStateManager`): for each idempotent
//! producer that wrote to the partition, its epoch and the metadata of its last
//! [`BATCHES_KEPT_PER_PRODUCER`] batches, so the leader can acknowledge a retried batch with its
//! original offset instead of writing it twice, and refuse a sequence gap or a fenced epoch.
//!
//! The state is a function of the log: every append (leader or follower) applies the batches it
//! wrote, so a follower that becomes leader deduplicates the old leader's retries; a truncation
//! rebuilds it from the newest snapshot below the new end plus the batches after it; recovery
//! does the same at open. Nothing here does I/O except reading and writing snapshot files
//! (`PartitionLog` owns when).
//!
//! # Rules (Kafka's `ProducerAppendInfo`, checked on leader appends only)
//! - A batch whose epoch is below the producer's is refused (INVALID_PRODUCER_EPOCH).
//! - Same epoch, same first and last sequence as one of the kept batches: a duplicate, answered
//!   with that batch's offsets and timestamp; nothing is written.
//! - Same epoch otherwise: the first sequence must follow the last one kept (sequences wrap from
//!   `i32::MAX` to 0), else OUT_OF_ORDER_SEQUENCE_NUMBER.
//! - A higher epoch must start at sequence 0 (the client bumped its epoch, KIP-360).
//! - A producer the partition does not know (new, expired, or evicted) may start at any
//!   sequence, as in Kafka since KIP-360.
//!
//! # Transactions
//! A transactional batch opens its producer's transaction on the partition (if none is open):
//! the batch's first offset is the transaction's first offset, and the partition's last stable
//! offset cannot pass it. A transaction marker (a control batch the coordinator has the
//! partition's leader write, [`Marker`]) closes it and yields a [`CompletedTxn`]; an aborted
//! one goes to the aborted-transaction index ([`super::txn_index`]). A completed transaction
//! stays unstable until the high watermark passes its marker (Kafka's "unreplicated"
//! transactions), so a read_committed consumer never sees a commit a new leader could lose.
//! Leader checks: a non-transactional batch from a producer with an open transaction is
//! INVALID_TXN_STATE; a marker of an older producer epoch is INVALID_PRODUCER_EPOCH, one from an
//! older coordinator epoch TRANSACTION_COORDINATOR_FENCED. A producer with an open transaction
//! is never evicted or expired (the transaction coordinator aborts it first).
//!
//! # Bounds
//! An entry is a fixed ring of five 32-byte batch records plus its epoch and last timestamp
//! (176 bytes; 184 with its key), allocated nothing else; with the hash map's spare capacity
//! the bench measured 320–420 bytes of resident memory per producer per partition (1,000
//! producers in each of 100 partitions). A partition keeps
//! at most `producers_max` producers; beyond that the one whose last batch is oldest in the log
//! is evicted (its next batch is then accepted as from an unknown producer). Entries expire
//! `producer.id.expiration.ms` after their last batch's timestamp (KIP-854).
//!
//! # Snapshot file format (`<20-digit offset>.snapshot`, gregor's own)
//! The state as of the log up to (not including) the offset in the file name:
//! ```text
//! u16 version (2) | u32 CRC-32C of everything after it | u32 producer count
//! per producer: i64 producer id | i16 epoch | i64 last timestamp
//!               | i64 open transaction's first offset (-1: none) | i32 coordinator epoch
//!               | u8 batch count (<= 5)
//!   per batch, oldest first: i32 first sequence | i32 last sequence | i64 first offset
//!                            | i64 last offset | i64 timestamp
//! ```
//! Version 1 (before transactions) lacks the two transaction fields and is still read.
//! Big-endian. A file that fails its CRC or its lengths is ignored (the state is then rebuilt
//! from an older snapshot or the log), so snapshots need no fsync.

use std::collections::{BTreeMap, HashMap};

use super::batch::BatchHeader;
use super::segment::BatchLocation;

/// Batches remembered per producer (Kafka's `NUM_BATCHES_TO_RETAIN`, the client's
/// `max.in.flight.requests.per.connection` limit for idempotence).
pub const BATCHES_KEPT_PER_PRODUCER: usize = 5;

/// Suffix of producer snapshot files.
pub const SNAPSHOT_FILE_SUFFIX: &str = ".snapshot";

/// Snapshot format version written.
const SNAPSHOT_VERSION: u16 = 2;
/// The snapshot format before transactions (still read).
const SNAPSHOT_VERSION_1: u16 = 1;

/// Bytes of one batch record in a snapshot.
const SNAPSHOT_BATCH_BYTES: usize = 4 + 4 + 8 + 8 + 8;
/// Bytes of one producer's fixed part in a version 1 snapshot (the smallest).
const SNAPSHOT_PRODUCER_BYTES: usize = 8 + 2 + 8 + 1;
/// Bytes a version 2 snapshot adds to each producer's fixed part.
const SNAPSHOT_TXN_BYTES: usize = 8 + 4;

/// Kafka's `DefaultRecordBatch.incrementSequence`: sequences wrap from `i32::MAX` to 0.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// Whether `next` is the sequence right after `last`.
fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

/// What the log remembers of one batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchMetadata {
    /// Sequence of the first record.
    pub first_sequence: i32,
    /// Sequence of the last record.
    pub last_sequence: i32,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// The batch's max timestamp (the append time under LogAppendTime).
    pub timestamp_ms: i64,
}

/// The producer fields of a batch header, once it has offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    /// Producer id (`>= 0`).
    pub producer_id: i64,
    /// Producer epoch.
    pub epoch: i16,
    /// Whether the batch is part of a transaction.
    pub transactional: bool,
    /// The batch's sequences, offsets and timestamp.
    pub batch: BatchMetadata,
}

impl ProducerBatch {
    /// The producer fields of a data batch that has a producer id; `None` for batches without
    /// one and for control batches (transaction markers carry no sequence).
    pub fn from_header(header: &BatchHeader<'_>) -> Option<ProducerBatch> {
        if header.producer_id() < 0 || header.is_control() {
            return None;
        }
        let first_sequence = header.base_sequence();
        Some(ProducerBatch {
            producer_id: header.producer_id(),
            epoch: header.producer_epoch(),
            transactional: header.is_transactional(),
            batch: BatchMetadata {
                first_sequence,
                last_sequence: increment_sequence(
                    first_sequence.max(0),
                    header.last_offset_delta().max(0),
                ),
                first_offset: header.base_offset(),
                last_offset: header.last_offset(),
                timestamp_ms: header.max_timestamp_ms(),
            },
        })
    }

    /// The same from a stored batch's location (replay at open and after a truncation).
    pub fn from_location(location: &BatchLocation) -> Option<ProducerBatch> {
        if location.producer_id < 0 || location.is_control {
            return None;
        }
        let delta = i32::try_from(location.last_offset - location.base_offset).unwrap_or(0);
        Some(ProducerBatch {
            producer_id: location.producer_id,
            epoch: location.producer_epoch,
            transactional: location.is_transactional,
            batch: BatchMetadata {
                first_sequence: location.base_sequence,
                last_sequence: increment_sequence(location.base_sequence.max(0), delta.max(0)),
                first_offset: location.base_offset,
                last_offset: location.last_offset,
                timestamp_ms: location.max_timestamp_ms,
            },
        })
    }

    /// The same batch at other offsets and timestamp (after the leader assigned them).
    pub fn at(mut self, first_offset: i64, last_offset: i64, timestamp_ms: i64) -> ProducerBatch {
        self.batch.first_offset = first_offset;
        self.batch.last_offset = last_offset;
        self.batch.timestamp_ms = timestamp_ms;
        self
    }
}

/// Why the leader refuses a producer's batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// The batch's epoch is older than the producer's (a zombie). INVALID_PRODUCER_EPOCH.
    #[error("producer {producer_id}'s epoch {epoch} is older than the current epoch {current}")]
    StaleEpoch {
        /// Producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The partition's epoch for the producer.
        current: i16,
    },
    /// The batch does not continue the producer's sequence. OUT_OF_ORDER_SEQUENCE_NUMBER.
    #[error(
        "out of order sequence number for producer {producer_id} at epoch {epoch}: \
         {first_sequence} (incoming batch first sequence), {last_sequence} (current end sequence)"
    )]
    OutOfOrder {
        /// Producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The batch's first sequence.
        first_sequence: i32,
        /// The last sequence the partition holds for the producer (-1: none at this epoch).
        last_sequence: i32,
    },
    /// A batch with a producer id and a negative sequence (Kafka's LogValidator:
    /// "Invalid sequence number"). INVALID_RECORD.
    #[error(
        "invalid sequence number {first_sequence} in record batch with producerId {producer_id}"
    )]
    InvalidSequence {
        /// Producer id.
        producer_id: i64,
        /// The batch's first sequence.
        first_sequence: i32,
    },
    /// A non-transactional batch from a producer whose transaction on the partition is open
    /// (Kafka's "Expected transactional write from producer"). INVALID_TXN_STATE.
    #[error("expected transactional write from producer {producer_id} at epoch {epoch}")]
    InvalidTxnState {
        /// Producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
    },
    /// A transactional batch that would open a transaction on the partition without the
    /// coordinator having confirmed, since the last marker, that the partition is in the
    /// producer's transaction (KIP-890 verification). INVALID_TXN_STATE.
    #[error(
        "transactional write from producer {producer_id} at epoch {epoch} was not verified          with its transaction coordinator"
    )]
    NotVerified {
        /// Producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
    },
    /// A transaction marker from a coordinator epoch older than one the partition has seen
    /// for the producer. TRANSACTION_COORDINATOR_FENCED.
    #[error(
        "transaction marker for producer {producer_id} from coordinator epoch \
         {coordinator_epoch}, older than {current}"
    )]
    CoordinatorFenced {
        /// Producer id.
        producer_id: i64,
        /// The marker's coordinator epoch.
        coordinator_epoch: i32,
        /// The newest coordinator epoch seen for the producer.
        current: i32,
    },
}

/// A transaction marker (a control batch's one record) for one producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Producer id.
    pub producer_id: i64,
    /// The producer epoch the coordinator ends the transaction at.
    pub epoch: i16,
    /// The transaction coordinator's epoch (its `__transaction_state` partition's leader
    /// epoch), which fences markers from a deposed coordinator.
    pub coordinator_epoch: i32,
    /// COMMIT (true) or ABORT (false).
    pub commit: bool,
}

/// A transaction a marker closed on this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    /// Producer id.
    pub producer_id: i64,
    /// Offset of the transaction's first batch on the partition.
    pub first_offset: i64,
    /// Offset of the marker.
    pub last_offset: i64,
    /// Whether the marker was ABORT.
    pub aborted: bool,
    /// The partition's first unstable offset once this transaction closed (the marker's next
    /// offset when no other transaction is open): Kafka's `lastStableOffset` of an aborted
    /// transaction, where a search of the index may stop.
    pub last_stable_offset: i64,
}

/// One producer as DescribeProducers shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    /// Producer id.
    pub producer_id: i64,
    /// Its epoch here.
    pub epoch: i16,
    /// The last sequence of its last batch here (-1: none at this epoch).
    pub last_sequence: i32,
    /// Its last batch's timestamp.
    pub last_timestamp_ms: i64,
    /// The newest coordinator epoch of its markers here (-1: none).
    pub coordinator_epoch: i32,
    /// First offset of its open transaction here (-1: none).
    pub txn_start_offset: i64,
}

/// The leader's verdict on a producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it.
    Append,
    /// Already in the log: answer with this batch's offsets, write nothing.
    Duplicate(BatchMetadata),
}

/// One producer's state in one partition.
#[derive(Debug, Clone, Copy)]
pub struct ProducerEntry {
    /// The producer's current epoch here.
    pub epoch: i16,
    /// Timestamp of its last batch (expiry counts from it).
    pub last_timestamp_ms: i64,
    /// First offset of the producer's open transaction on the partition; -1 when none is.
    pub txn_first_offset: i64,
    /// The newest transaction coordinator epoch a marker carried (-1: none yet).
    pub coordinator_epoch: i32,
    /// Ring of the last batches, `start` the oldest.
    batches: [BatchMetadata; BATCHES_KEPT_PER_PRODUCER],
    start: u8,
    len: u8,
}

impl PartialEq for ProducerEntry {
    fn eq(&self, other: &ProducerEntry) -> bool {
        self.epoch == other.epoch
            && self.last_timestamp_ms == other.last_timestamp_ms
            && self.txn_first_offset == other.txn_first_offset
            && self.coordinator_epoch == other.coordinator_epoch
            && self.batches().eq(other.batches())
    }
}

impl Eq for ProducerEntry {}

impl ProducerEntry {
    fn new(epoch: i16) -> ProducerEntry {
        ProducerEntry {
            epoch,
            last_timestamp_ms: -1,
            txn_first_offset: -1,
            coordinator_epoch: -1,
            batches: [BatchMetadata::default(); BATCHES_KEPT_PER_PRODUCER],
            start: 0,
            len: 0,
        }
    }

    /// The kept batches, oldest first.
    pub fn batches(&self) -> impl Iterator<Item = &BatchMetadata> + '_ {
        (0..usize::from(self.len))
            .map(move |i| &self.batches[(usize::from(self.start) + i) % BATCHES_KEPT_PER_PRODUCER])
    }

    fn last(&self) -> Option<&BatchMetadata> {
        self.batches().last()
    }

    fn push(&mut self, batch: BatchMetadata) {
        if usize::from(self.len) == BATCHES_KEPT_PER_PRODUCER {
            self.batches[usize::from(self.start)] = batch;
            self.start = ((usize::from(self.start) + 1) % BATCHES_KEPT_PER_PRODUCER) as u8;
        } else {
            let at = (usize::from(self.start) + usize::from(self.len)) % BATCHES_KEPT_PER_PRODUCER;
            self.batches[at] = batch;
            self.len += 1;
        }
    }

    fn clear_batches(&mut self) {
        self.start = 0;
        self.len = 0;
    }
}

/// The producer state of one partition. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
    producers_max: usize,
    /// Open transactions: first offset -> producer id.
    ongoing: BTreeMap<i64, i64>,
    /// Closed transactions whose marker the high watermark has not passed yet: first offset
    /// -> marker offset.
    unreplicated: BTreeMap<i64, i64>,
    /// Verification guards (KIP-890): producer id -> (guard, epoch), taken before the leader
    /// asks the coordinator whether the partition is in the producer's transaction; a marker
    /// or the transaction's first batch drops it. Not in snapshots: a new leader verifies
    /// again.
    guards: HashMap<i64, (u64, i16)>,
    next_guard: u64,
}

/// How a client's transactional batch was verified with its coordinator (KIP-890).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnVerification {
    /// Not asked for (`transaction.partition.verification.enable=false`; tests).
    Off,
    /// Asked for: the guard the leader took before asking, or `None` when the producer had a
    /// transaction open on the partition then (nothing to verify). A batch that opens a
    /// transaction needs a guard that is still there.
    Guard(Option<u64>),
}

impl ProducerStateManager {
    /// Empty state keeping at most `producers_max` producers (at least one).
    pub fn new(producers_max: usize) -> ProducerStateManager {
        ProducerStateManager {
            producers: HashMap::new(),
            producers_max: producers_max.max(1),
            ongoing: BTreeMap::new(),
            unreplicated: BTreeMap::new(),
            guards: HashMap::new(),
            next_guard: 0,
        }
    }

    /// Takes a verification guard for a transactional write of `producer_id` at `epoch` about to
    /// be checked with the coordinator, or `None` if the producer's transaction is open here
    /// already (its first batch was verified). An existing guard of the same epoch is shared.
    pub fn begin_verification(&mut self, producer_id: i64, epoch: i16) -> Option<u64> {
        if self
            .producers
            .get(&producer_id)
            .is_some_and(|entry| entry.txn_first_offset >= 0 && entry.epoch == epoch)
        {
            return None;
        }
        if let Some((guard, guard_epoch)) = self.guards.get(&producer_id) {
            if *guard_epoch == epoch {
                return Some(*guard);
            }
        }
        if self.guards.len() >= self.producers_max {
            // Bounded like the producers: the oldest guard goes (its write is refused and
            // retried).
            if let Some(oldest) = self
                .guards
                .iter()
                .min_by_key(|(_, (g, _))| *g)
                .map(|(id, _)| *id)
            {
                self.guards.remove(&oldest);
            }
        }
        self.next_guard = self.next_guard.wrapping_add(1);
        let guard = self.next_guard;
        self.guards.insert(producer_id, (guard, epoch));
        Some(guard)
    }

    /// Whether a client's batch may be written as `verification` says (see
    /// [`TxnVerification`]): only a transactional batch that opens a transaction needs a guard.
    pub fn check_verified(
        &self,
        incoming: &ProducerBatch,
        verification: TxnVerification,
    ) -> Result<(), SequenceError> {
        let TxnVerification::Guard(guard) = verification else {
            return Ok(());
        };
        if !incoming.transactional {
            return Ok(());
        }
        let open = self
            .producers
            .get(&incoming.producer_id)
            .is_some_and(|entry| entry.txn_first_offset >= 0 && entry.epoch == incoming.epoch);
        let guarded =
            guard.is_some() && self.guards.get(&incoming.producer_id).map(|(g, _)| *g) == guard;
        if open || guarded {
            Ok(())
        } else {
            Err(SequenceError::NotVerified {
                producer_id: incoming.producer_id,
                epoch: incoming.epoch,
            })
        }
    }

    /// Changes the bound (evicting at the next apply if over it).
    pub fn set_producers_max(&mut self, producers_max: usize) {
        self.producers_max = producers_max.max(1);
    }

    /// Producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// One producer's state.
    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Forgets every producer.
    pub fn clear(&mut self) {
        self.producers.clear();
        self.ongoing.clear();
        self.unreplicated.clear();
    }

    /// Every producer the partition keeps state for, by producer id.
    pub fn active(&self) -> Vec<ActiveProducer> {
        let mut active: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(&producer_id, entry)| ActiveProducer {
                producer_id,
                epoch: entry.epoch,
                last_sequence: entry.last().map_or(-1, |b| b.last_sequence),
                last_timestamp_ms: entry.last_timestamp_ms,
                coordinator_epoch: entry.coordinator_epoch,
                txn_start_offset: entry.txn_first_offset,
            })
            .collect();
        active.sort_unstable_by_key(|p| p.producer_id);
        active
    }

    /// Whether a transaction is open or closed but not yet replicated: only then can the last
    /// stable offset be below the high watermark.
    pub fn has_unstable(&self) -> bool {
        !self.ongoing.is_empty() || !self.unreplicated.is_empty()
    }

    /// How many transactions are open on the partition.
    pub fn ongoing_transactions(&self) -> usize {
        self.ongoing.len()
    }

    /// The last stable offset for `high_watermark`: the first offset of the oldest open
    /// transaction, or of the oldest closed one whose marker the high watermark has not passed,
    /// if below the high watermark. Forgets closed transactions the high watermark passed.
    pub fn last_stable_offset(&mut self, high_watermark: i64) -> i64 {
        if !self.unreplicated.is_empty() {
            self.unreplicated
                .retain(|_, marker| *marker >= high_watermark);
        }
        let ongoing = self.ongoing.keys().next().copied();
        let unreplicated = self.unreplicated.keys().next().copied();
        [ongoing, unreplicated]
            .into_iter()
            .flatten()
            .fold(high_watermark, i64::min)
    }

    /// The leader's check of a client's batch (see the module documentation).
    pub fn check(&self, incoming: &ProducerBatch) -> Result<Verdict, SequenceError> {
        let first_sequence = incoming.batch.first_sequence;
        if first_sequence < 0 {
            return Err(SequenceError::InvalidSequence {
                producer_id: incoming.producer_id,
                first_sequence,
            });
        }
        let Some(entry) = self.producers.get(&incoming.producer_id) else {
            return Ok(Verdict::Append);
        };
        if incoming.epoch < entry.epoch {
            return Err(SequenceError::StaleEpoch {
                producer_id: incoming.producer_id,
                epoch: incoming.epoch,
                current: entry.epoch,
            });
        }
        if !incoming.transactional && entry.txn_first_offset >= 0 && incoming.epoch == entry.epoch {
            return Err(SequenceError::InvalidTxnState {
                producer_id: incoming.producer_id,
                epoch: incoming.epoch,
            });
        }
        if incoming.epoch > entry.epoch {
            if first_sequence != 0 {
                return Err(SequenceError::OutOfOrder {
                    producer_id: incoming.producer_id,
                    epoch: incoming.epoch,
                    first_sequence,
                    last_sequence: -1,
                });
            }
            return Ok(Verdict::Append);
        }
        if let Some(duplicate) = entry.batches().find(|kept| {
            kept.first_sequence == first_sequence
                && kept.last_sequence == incoming.batch.last_sequence
        }) {
            return Ok(Verdict::Duplicate(*duplicate));
        }
        match entry.last() {
            Some(last) if !in_sequence(last.last_sequence, first_sequence) => {
                Err(SequenceError::OutOfOrder {
                    producer_id: incoming.producer_id,
                    epoch: incoming.epoch,
                    first_sequence,
                    last_sequence: last.last_sequence,
                })
            }
            _ => Ok(Verdict::Append),
        }
    }

    /// Records a batch the log now holds (leader after writing it, follower, replay).
    pub fn apply(&mut self, applied: &ProducerBatch) {
        let entry = self
            .producers
            .entry(applied.producer_id)
            .or_insert_with(|| ProducerEntry::new(applied.epoch));
        if applied.epoch != entry.epoch {
            // A new epoch starts a new sequence (Kafka drops the old epoch's batches).
            entry.epoch = applied.epoch;
            entry.clear_batches();
        }
        entry.push(applied.batch);
        entry.last_timestamp_ms = entry.last_timestamp_ms.max(applied.batch.timestamp_ms);
        if applied.transactional && entry.txn_first_offset < 0 {
            self.guards.remove(&applied.producer_id);
            entry.txn_first_offset = applied.batch.first_offset;
            self.ongoing
                .insert(applied.batch.first_offset, applied.producer_id);
        }
        if self.producers.len() > self.producers_max {
            self.evict_oldest(applied.producer_id);
        }
    }

    /// Evicts the producer whose last batch is oldest in the log (never `keep`).
    fn evict_oldest(&mut self, keep: i64) {
        let victim = self
            .producers
            .iter()
            .filter(|(&id, entry)| id != keep && entry.txn_first_offset < 0)
            .min_by_key(|(_, entry)| entry.last().map_or(i64::MIN, |b| b.last_offset))
            .map(|(&id, _)| id);
        if let Some(victim) = victim {
            self.producers.remove(&victim);
            tracing::debug!(
                producer_id = victim,
                "producer state evicted: the partition keeps at most producer.state.max.producers"
            );
        }
    }

    /// Forgets producers whose last batch is `expiration_ms` or more older than `now_ms`
    /// (`producer.id.expiration.ms`); returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, entry| {
            entry.txn_first_offset >= 0
                || now_ms.saturating_sub(entry.last_timestamp_ms) < expiration_ms
        });
        before - self.producers.len()
    }

    /// The check of a transactional batch a coordinator writes for a producer (a
    /// TxnOffsetCommit's offsets): it has no sequence, so only its epoch is checked.
    pub fn check_coordinator_batch(&self, incoming: &ProducerBatch) -> Result<(), SequenceError> {
        match self.producers.get(&incoming.producer_id) {
            Some(entry) if incoming.epoch < entry.epoch => Err(SequenceError::StaleEpoch {
                producer_id: incoming.producer_id,
                epoch: incoming.epoch,
                current: entry.epoch,
            }),
            _ => Ok(()),
        }
    }

    /// The leader's check of a transaction marker before writing it (see the module
    /// documentation). A producer the partition does not know is fine: the transaction may
    /// have written nothing here.
    pub fn check_marker(&self, marker: &Marker) -> Result<(), SequenceError> {
        let Some(entry) = self.producers.get(&marker.producer_id) else {
            return Ok(());
        };
        if marker.epoch < entry.epoch {
            return Err(SequenceError::StaleEpoch {
                producer_id: marker.producer_id,
                epoch: marker.epoch,
                current: entry.epoch,
            });
        }
        if marker.coordinator_epoch < entry.coordinator_epoch {
            return Err(SequenceError::CoordinatorFenced {
                producer_id: marker.producer_id,
                coordinator_epoch: marker.coordinator_epoch,
                current: entry.coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Records a marker the log now holds at `offset` (leader, follower, replay); returns the
    /// transaction it closed, if the producer had one open here. A marker at a newer epoch
    /// (the coordinator fenced the producer) moves the producer to it.
    pub fn apply_marker(
        &mut self,
        marker: &Marker,
        offset: i64,
        timestamp_ms: i64,
    ) -> Option<CompletedTxn> {
        let entry = self
            .producers
            .entry(marker.producer_id)
            .or_insert_with(|| ProducerEntry::new(marker.epoch));
        if marker.epoch > entry.epoch {
            entry.epoch = marker.epoch;
            entry.clear_batches();
        }
        entry.coordinator_epoch = entry.coordinator_epoch.max(marker.coordinator_epoch);
        entry.last_timestamp_ms = entry.last_timestamp_ms.max(timestamp_ms);
        // What a coordinator confirmed before this marker was about the transaction it ended.
        self.guards.remove(&marker.producer_id);
        let first_offset = entry.txn_first_offset;
        if first_offset < 0 {
            return None;
        }
        entry.txn_first_offset = -1;
        self.ongoing.remove(&first_offset);
        self.unreplicated.insert(first_offset, offset);
        let last_stable_offset = self
            .ongoing
            .keys()
            .next()
            .copied()
            .unwrap_or(offset + 1)
            .min(offset + 1);
        Some(CompletedTxn {
            producer_id: marker.producer_id,
            first_offset,
            last_offset: offset,
            aborted: !marker.commit,
            last_stable_offset,
        })
    }

    /// The snapshot file's bytes (see the module documentation).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(
            4 + self.producers.len()
                * (SNAPSHOT_PRODUCER_BYTES
                    + SNAPSHOT_TXN_BYTES
                    + BATCHES_KEPT_PER_PRODUCER * SNAPSHOT_BATCH_BYTES),
        );
        body.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(entry) = self.producers.get(id) else {
                continue;
            };
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&entry.epoch.to_be_bytes());
            body.extend_from_slice(&entry.last_timestamp_ms.to_be_bytes());
            body.extend_from_slice(&entry.txn_first_offset.to_be_bytes());
            body.extend_from_slice(&entry.coordinator_epoch.to_be_bytes());
            body.push(entry.len);
            for batch in entry.batches() {
                body.extend_from_slice(&batch.first_sequence.to_be_bytes());
                body.extend_from_slice(&batch.last_sequence.to_be_bytes());
                body.extend_from_slice(&batch.first_offset.to_be_bytes());
                body.extend_from_slice(&batch.last_offset.to_be_bytes());
                body.extend_from_slice(&batch.timestamp_ms.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(6 + body.len());
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Reads a snapshot file's bytes; `None` when they fail the version, CRC or length checks.
    pub fn decode_snapshot(bytes: &[u8], producers_max: usize) -> Option<ProducerStateManager> {
        let mut reader = Reader { bytes, at: 0 };
        let version = reader.u16()?;
        if version != SNAPSHOT_VERSION && version != SNAPSHOT_VERSION_1 {
            return None;
        }
        let crc = reader.u32()?;
        if crc32c::crc32c(reader.rest()) != crc {
            return None;
        }
        let count = reader.u32()? as usize;
        // Every producer takes at least its fixed part: a count beyond that is corrupt and must
        // not size an allocation.
        if count > reader.rest().len() / SNAPSHOT_PRODUCER_BYTES {
            return None;
        }
        let mut state = ProducerStateManager::new(producers_max);
        state.producers.reserve(count);
        for _ in 0..count {
            let id = reader.i64()?;
            let mut entry = ProducerEntry::new(reader.i16()?);
            entry.last_timestamp_ms = reader.i64()?;
            if version >= SNAPSHOT_VERSION {
                entry.txn_first_offset = reader.i64()?;
                entry.coordinator_epoch = reader.i32()?;
            }
            let batches = reader.u8()?;
            if usize::from(batches) > BATCHES_KEPT_PER_PRODUCER {
                return None;
            }
            for _ in 0..batches {
                entry.push(BatchMetadata {
                    first_sequence: reader.i32()?,
                    last_sequence: reader.i32()?,
                    first_offset: reader.i64()?,
                    last_offset: reader.i64()?,
                    timestamp_ms: reader.i64()?,
                });
            }
            if entry.txn_first_offset >= 0 {
                state.ongoing.insert(entry.txn_first_offset, id);
            }
            state.producers.insert(id, entry);
        }
        if !reader.rest().is_empty() {
            return None;
        }
        Some(state)
    }
}

/// A bounds-checked big-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.at.checked_add(N)?;
        let taken: [u8; N] = self.bytes.get(self.at..end)?.try_into().ok()?;
        self.at = end;
        Some(taken)
    }
    fn rest(&self) -> &[u8] {
        self.bytes.get(self.at..).unwrap_or_default()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer_id: i64, epoch: i16, first: i32, count: i32, offset: i64) -> ProducerBatch {
        ProducerBatch {
            producer_id,
            epoch,
            transactional: false,
            batch: BatchMetadata {
                first_sequence: first,
                last_sequence: increment_sequence(first, count - 1),
                first_offset: offset,
                last_offset: offset + i64::from(count) - 1,
                timestamp_ms: 1000 + offset,
            },
        }
    }

    #[test]
    fn a_transaction_opens_only_with_a_guard_a_marker_has_not_voided() {
        let mut state = ProducerStateManager::new(2);
        let txn = |first: i32, offset: i64| ProducerBatch {
            transactional: true,
            ..batch(7, 0, first, 1, offset)
        };
        let guarded = TxnVerification::Guard;
        // Off: anything goes; no guard: refused.
        assert_eq!(
            state.check_verified(&txn(0, 0), TxnVerification::Off),
            Ok(())
        );
        assert!(matches!(
            state.check_verified(&txn(0, 0), guarded(None)),
            Err(SequenceError::NotVerified { producer_id: 7, .. })
        ));
        let guard = state.begin_verification(7, 0).expect("a guard");
        assert_eq!(state.begin_verification(7, 0), Some(guard), "shared");
        assert!(state
            .check_verified(&txn(0, 0), guarded(Some(guard + 1)))
            .is_err());
        // A marker between the question and the write voids the guard.
        let marker = Marker {
            producer_id: 7,
            epoch: 0,
            coordinator_epoch: 0,
            commit: false,
        };
        state.apply_marker(&marker, 0, 1000);
        assert!(state
            .check_verified(&txn(0, 1), guarded(Some(guard)))
            .is_err());
        let guard = state.begin_verification(7, 0).expect("a new guard");
        assert_eq!(
            state.check_verified(&txn(0, 1), guarded(Some(guard))),
            Ok(())
        );
        state.apply(&txn(0, 1));
        // The transaction is open: its next batches need no guard, nor a new question.
        assert_eq!(state.begin_verification(7, 0), None);
        assert_eq!(state.check_verified(&txn(1, 2), guarded(None)), Ok(()));
        // Guards are bounded like producers: the oldest goes.
        let first = state.begin_verification(8, 0).expect("guard");
        state.begin_verification(9, 0).expect("guard");
        state.begin_verification(10, 0).expect("guard");
        let eight = ProducerBatch {
            transactional: true,
            ..batch(8, 0, 0, 1, 3)
        };
        assert!(state.check_verified(&eight, guarded(Some(first))).is_err());
    }

    #[test]
    fn sequences_wrap_as_kafkas_do() {
        assert_eq!(increment_sequence(5, 3), 8);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert!(in_sequence(i32::MAX, 0));
        assert!(!in_sequence(i32::MAX, 1));
        assert!(in_sequence(-1, 0));
    }

    #[test]
    fn duplicates_gaps_and_epochs() {
        let mut state = ProducerStateManager::new(100);
        // Unknown producer: any sequence (KIP-360).
        assert_eq!(state.check(&batch(7, 0, 42, 2, 0)), Ok(Verdict::Append));
        state.apply(&batch(7, 0, 0, 3, 0));
        state.apply(&batch(7, 0, 3, 2, 10));
        // A retry of either kept batch is a duplicate with its original offsets.
        let first = batch(7, 0, 0, 3, 99);
        assert_eq!(
            state.check(&first),
            Ok(Verdict::Duplicate(batch(7, 0, 0, 3, 0).batch))
        );
        // The next sequence is accepted; a gap and a partial overlap are not.
        assert_eq!(state.check(&batch(7, 0, 5, 1, 99)), Ok(Verdict::Append));
        assert!(matches!(
            state.check(&batch(7, 0, 6, 1, 99)),
            Err(SequenceError::OutOfOrder {
                last_sequence: 4,
                ..
            })
        ));
        assert!(matches!(
            state.check(&batch(7, 0, 1, 2, 99)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        // An older epoch is fenced; a newer one must start at 0.
        state.apply(&batch(7, 2, 0, 1, 20));
        assert!(matches!(
            state.check(&batch(7, 1, 1, 1, 99)),
            Err(SequenceError::StaleEpoch { current: 2, .. })
        ));
        assert!(matches!(
            state.check(&batch(7, 3, 1, 1, 99)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        assert_eq!(state.check(&batch(7, 3, 0, 1, 99)), Ok(Verdict::Append));
        // The new epoch dropped the old epoch's batches.
        assert_eq!(state.entry(7).map(|e| e.batches().count()), Some(1));
        assert!(matches!(
            state.check(&batch(7, 2, -1, 1, 99)),
            Err(SequenceError::InvalidSequence { .. })
        ));
    }

    #[test]
    fn only_the_last_five_batches_are_kept_and_sequences_wrap() {
        let mut state = ProducerStateManager::new(100);
        let mut sequence = i32::MAX - 3;
        for i in 0..7 {
            state.apply(&batch(1, 0, sequence, 2, i * 2));
            sequence = increment_sequence(sequence, 2);
        }
        let kept: Vec<i64> = state
            .entry(1)
            .map(|e| e.batches().map(|b| b.first_offset).collect())
            .unwrap_or_default();
        assert_eq!(kept, vec![4, 6, 8, 10, 12]);
        // Batch 0 (offsets 0-1) is no longer kept: a retry of it is out of order.
        assert!(matches!(
            state.check(&batch(1, 0, i32::MAX - 3, 2, 99)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        // The sequence went through the wrap: the next one continues it.
        assert_eq!(
            state.check(&batch(1, 0, sequence, 1, 99)),
            Ok(Verdict::Append)
        );
    }

    #[test]
    fn bounded_eviction_and_expiry() {
        let mut state = ProducerStateManager::new(3);
        for id in 0..5 {
            state.apply(&batch(id, 0, 0, 1, id * 10));
        }
        assert_eq!(state.len(), 3);
        assert!(state.entry(0).is_none() && state.entry(1).is_none());
        // Timestamps are 1000 + offset: 1020, 1030, 1040.
        assert_eq!(state.expire(1035 + 100, 100), 2);
        assert_eq!(state.len(), 1);
        assert!(state.entry(4).is_some());
    }

    #[test]
    fn snapshots_round_trip_and_reject_damage() {
        let mut state = ProducerStateManager::new(100);
        for id in 0..4 {
            for b in 0..(id + 3) {
                state.apply(&batch(id, id as i16, b as i32, 1, id * 100 + b));
            }
        }
        let bytes = state.encode_snapshot();
        assert_eq!(
            ProducerStateManager::decode_snapshot(&bytes, 100).as_ref(),
            Some(&state)
        );
        for cut in [0, 1, 5, bytes.len() - 1] {
            assert!(ProducerStateManager::decode_snapshot(&bytes[..cut], 100).is_none());
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(ProducerStateManager::decode_snapshot(&flipped, 100).is_none());
    }

    fn txn_batch(
        producer_id: i64,
        epoch: i16,
        first: i32,
        count: i32,
        offset: i64,
    ) -> ProducerBatch {
        ProducerBatch {
            transactional: true,
            ..batch(producer_id, epoch, first, count, offset)
        }
    }

    fn marker(producer_id: i64, epoch: i16, coordinator_epoch: i32, commit: bool) -> Marker {
        Marker {
            producer_id,
            epoch,
            coordinator_epoch,
            commit,
        }
    }

    #[test]
    fn transactions_hold_the_last_stable_offset_until_their_marker_is_replicated() {
        let mut state = ProducerStateManager::new(100);
        assert_eq!(state.last_stable_offset(10), 10);
        // Producer 1 opens at 10, producer 2 at 12; a plain idempotent producer does not count.
        state.apply(&txn_batch(1, 0, 0, 2, 10));
        state.apply(&txn_batch(2, 0, 0, 1, 12));
        state.apply(&batch(3, 0, 0, 1, 13));
        state.apply(&txn_batch(1, 0, 2, 1, 14));
        assert_eq!(state.ongoing_transactions(), 2);
        assert_eq!(state.last_stable_offset(20), 10);
        assert_eq!(
            state.last_stable_offset(5),
            5,
            "never above the high watermark"
        );
        // Producer 1 aborts at 15: 2 is still open, so the LSO recorded for the abort is 12.
        let done = state
            .apply_marker(&marker(1, 0, 0, false), 15, 99)
            .expect("closed");
        assert_eq!(
            done,
            CompletedTxn {
                producer_id: 1,
                first_offset: 10,
                last_offset: 15,
                aborted: true,
                last_stable_offset: 12,
            }
        );
        // Closed, but its marker is not replicated until the high watermark passes 15.
        assert_eq!(state.last_stable_offset(15), 10);
        // Producer 2 commits at 16.
        let done = state
            .apply_marker(&marker(2, 0, 0, true), 16, 99)
            .expect("closed");
        assert!(!done.aborted);
        assert_eq!(done.last_stable_offset, 17);
        assert_eq!(state.last_stable_offset(16), 12);
        assert_eq!(state.last_stable_offset(17), 17);
        // A second marker for a closed transaction closes nothing.
        assert_eq!(state.apply_marker(&marker(2, 0, 0, true), 17, 99), None);
        assert_eq!(state.ongoing_transactions(), 0);
    }

    #[test]
    fn transaction_checks_of_data_batches_and_markers() {
        let mut state = ProducerStateManager::new(100);
        state.apply(&txn_batch(1, 3, 0, 1, 0));
        // A non-transactional batch while the transaction is open.
        assert!(matches!(
            state.check(&batch(1, 3, 1, 1, 1)),
            Err(SequenceError::InvalidTxnState { .. })
        ));
        assert_eq!(state.check(&txn_batch(1, 3, 1, 1, 1)), Ok(Verdict::Append));
        // Markers: an older producer epoch is fenced, an older coordinator epoch too.
        assert!(matches!(
            state.check_marker(&marker(1, 2, 0, true)),
            Err(SequenceError::StaleEpoch { .. })
        ));
        state.apply_marker(&marker(1, 3, 5, false), 1, 10);
        assert!(matches!(
            state.check_marker(&marker(1, 3, 4, true)),
            Err(SequenceError::CoordinatorFenced { .. })
        ));
        assert_eq!(state.check_marker(&marker(1, 3, 5, true)), Ok(()));
        // Unknown producers' markers are fine (the transaction wrote nothing here).
        assert_eq!(state.check_marker(&marker(9, 0, 0, true)), Ok(()));
        // A marker at a newer epoch (the coordinator fenced the producer) moves it there.
        state.apply_marker(&marker(1, 4, 5, false), 2, 10);
        assert_eq!(state.entry(1).map(|e| e.epoch), Some(4));
        assert!(matches!(
            state.check(&txn_batch(1, 3, 2, 1, 3)),
            Err(SequenceError::StaleEpoch { .. })
        ));
    }

    #[test]
    fn open_transactions_are_never_evicted_or_expired_and_survive_snapshots() {
        let mut state = ProducerStateManager::new(2);
        state.apply(&txn_batch(1, 0, 0, 1, 0));
        state.apply(&batch(2, 0, 0, 1, 1));
        state.apply(&batch(3, 0, 0, 1, 2));
        assert!(
            state.entry(1).is_some(),
            "the open transaction's producer stays"
        );
        assert!(state.entry(2).is_none(), "the oldest plain producer goes");
        assert_eq!(state.expire(i64::MAX, 1), 1);
        assert_eq!(state.entry(1).map(|e| e.txn_first_offset), Some(0));
        state.apply_marker(&marker(1, 0, 2, true), 3, 3);
        state.apply(&txn_batch(1, 0, 1, 2, 4));
        let bytes = state.encode_snapshot();
        let decoded = ProducerStateManager::decode_snapshot(&bytes, 2).expect("decodes");
        assert_eq!(decoded.entry(1), state.entry(1));
        let mut decoded = decoded;
        assert_eq!(decoded.ongoing_transactions(), 1);
        assert_eq!(decoded.last_stable_offset(100), 4);
        assert_eq!(decoded.entry(1).map(|e| e.coordinator_epoch), Some(2));
    }

    #[test]
    fn version_1_snapshots_are_still_read() {
        let mut state = ProducerStateManager::new(100);
        state.apply(&batch(5, 1, 0, 3, 0));
        // A version 1 snapshot: no transaction fields.
        let mut body = Vec::new();
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&5i64.to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&1000i64.to_be_bytes());
        body.push(1);
        for field in [0i32, 2] {
            body.extend_from_slice(&field.to_be_bytes());
        }
        for field in [0i64, 2, 1000] {
            body.extend_from_slice(&field.to_be_bytes());
        }
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&1u16.to_be_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        bytes.extend_from_slice(&body);
        let decoded = ProducerStateManager::decode_snapshot(&bytes, 100).expect("decodes");
        assert_eq!(decoded, state);
    }
}
