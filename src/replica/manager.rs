//! The replica manager: every partition this broker hosts.
//!
//! [`ReplicaManager::reconcile`] makes the hosted set match a metadata image: it opens (or
//! creates) the log of each partition placed on this broker, applies topic config changes, and
//! deletes the data of partitions whose topic is gone. It is idempotent; the controller's
//! writers call it right after a change (so a topic is usable as soon as CreateTopics or
//! auto-creation answers) and a watcher calls it for every published image.
//!
//! Each partition dir holds `partition.metadata` (as Kafka does) with the topic id, so a dir left
//! by a deleted topic of the same name is recognised and removed instead of being served.
//!
//! [`ReplicaManager::run_log_cleaner`] is the log cleaner's loop body: the broker calls it every
//! `log.cleaner.backoff.ms` (sooner when a run says more work is waiting). Each run compacts the
//! dirtiest qualifying partitions first, below their high watermarks, one at a time (so one
//! offset map of `log.cleaner.dedupe.buffer.size` at most), within a byte budget.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::partition::{Assignment, Partition};
use super::ReplicaError;
use crate::cluster::{MetadataImage, PartitionInfo};
use crate::config::BrokerConfig;
use crate::log::{CompactionOutcome, CompactionSettings, LogError, LogManager};

const PARTITION_METADATA_FILE: &str = "partition.metadata";

type PartitionKey = (String, i32);

/// Bytes of log one cleaner run may recopy (clean plus cleanable bytes of the partitions it
/// takes on) before it leaves the remaining partitions for the next run; the first partition is
/// always taken.
pub const LOG_CLEANER_RUN_BYTES_MAX: u64 = 1 << 30;

/// What one [`ReplicaManager::run_log_cleaner`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogCleanerRun {
    /// Partitions compacted.
    pub partitions_cleaned: usize,
    /// Partitions dirty enough but left for the next run (the byte budget was spent, or the
    /// offset map filled and only a prefix was cleaned).
    pub partitions_deferred: usize,
    /// Partitions whose compaction failed (logged) or was aborted.
    pub partitions_failed: usize,
    /// Bytes of the segments recopied.
    pub bytes_before: u64,
    /// Bytes they became.
    pub bytes_after: u64,
    /// Records removed.
    pub records_removed: u64,
}

impl LogCleanerRun {
    /// Whether more cleaning is waiting: the caller may run again without the backoff.
    pub fn more_work(&self) -> bool {
        self.partitions_deferred > 0
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Owns the hosted partitions.
#[derive(Debug)]
pub struct ReplicaManager {
    node_id: i32,
    config: Arc<BrokerConfig>,
    logs: LogManager,
    partitions: RwLock<HashMap<PartitionKey, Arc<Partition>>>,
    /// The image last reconciled (tells "another broker's partition" from "no partition").
    image: RwLock<Arc<MetadataImage>>,
    /// Serialises reconciliations (creation and deletion of logs).
    reconcile_lock: std::sync::Mutex<()>,
    /// Set while this broker has lost contact with the controller quorum for longer than
    /// its session: see [`ReplicaManager::set_cut_off`].
    cut_off: std::sync::atomic::AtomicBool,
    /// Counts reconciliations: replica fetchers watch it to pick up partitions that moved to
    /// their leader without waiting out a long poll.
    reconciled: tokio::sync::watch::Sender<u64>,
}

impl ReplicaManager {
    /// Opens the data dir (recovering after an unclean stop).
    pub fn open(config: Arc<BrokerConfig>) -> Result<ReplicaManager, LogError> {
        let logs = LogManager::open(config.data_dir.clone())?;
        Ok(ReplicaManager {
            node_id: config.node_id(),
            config,
            logs,
            partitions: RwLock::new(HashMap::new()),
            image: RwLock::new(Arc::new(MetadataImage::default())),
            reconcile_lock: std::sync::Mutex::new(()),
            cut_off: std::sync::atomic::AtomicBool::new(false),
            reconciled: tokio::sync::watch::Sender::new(0),
        })
    }

    /// A receiver that changes after every reconciliation with the metadata.
    pub fn subscribe_reconciled(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reconciled.subscribe()
    }

    /// A broker that has not been in contact with the controller quorum for its session
    /// timeout has been fenced by the controller, and its partitions may have other leaders
    /// by now, but its own metadata cannot tell it so. While `cut_off`, each partition it
    /// leads whose ISR followers stopped fetching ([`Partition::deposed`]) acts as led by
    /// nobody here: produce and consumer fetches get NOT_LEADER_OR_FOLLOWER (clients refresh
    /// their metadata and find the new leader), acks=all requests waiting on its followers are
    /// answered so at once instead of at their timeout, and Metadata shows it without a
    /// leader. Called again every heartbeat interval while cut off (waking those waits); contact
    /// again clears it (the metadata that arrives then says who leads).
    pub fn set_cut_off(&self, cut_off: bool) {
        self.cut_off
            .store(cut_off, std::sync::atomic::Ordering::Release);
        let lag_max_ms = cut_off.then(|| self.config.replica_lag_time_max_ms());
        let partitions: Vec<Arc<Partition>> = self
            .partitions
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        for partition in partitions {
            partition.set_cut_off(lag_max_ms);
        }
    }

    /// See [`ReplicaManager::set_cut_off`].
    pub fn is_cut_off(&self) -> bool {
        self.cut_off.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The partition `topic`-`partition` if this broker leads it.
    pub fn leader_partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<Partition>, ReplicaError> {
        let partitions =
            self.partitions
                .read()
                .map_err(|_| ReplicaError::UnknownTopicOrPartition {
                    topic: topic.to_string(),
                    partition,
                })?;
        match partitions.get(&(topic.to_string(), partition)) {
            Some(p) if p.leader() == self.node_id && !p.deposed(now_ms()) => Ok(p.clone()),
            Some(_) => Err(ReplicaError::NotLeader {
                topic: topic.to_string(),
                partition,
            }),
            // Not hosted here: another broker's partition, or no partition at all.
            None if self.knows_partition(topic, partition) => Err(ReplicaError::NotLeader {
                topic: topic.to_string(),
                partition,
            }),
            None => Err(ReplicaError::UnknownTopicOrPartition {
                topic: topic.to_string(),
                partition,
            }),
        }
    }

    /// The partition `topic`-`partition` if this broker hosts a copy of it, leader or not.
    pub fn hosted(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .ok()?
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    fn knows_partition(&self, topic: &str, partition: i32) -> bool {
        self.image
            .read()
            .map(|image| image.partition(topic, partition).is_some())
            .unwrap_or(false)
    }

    /// Whether this broker leads `topic`-`partition` as of the last reconciled metadata.
    pub fn is_leader(&self, topic: &str, partition: i32) -> bool {
        self.partitions
            .read()
            .ok()
            .and_then(|p| {
                p.get(&(topic.to_string(), partition))
                    .map(|p| p.leader() == self.node_id)
            })
            .unwrap_or(false)
    }

    /// Whether this broker's previous stop was clean (every log flushed and closed; the
    /// clean-shutdown marker was there at start).
    pub fn previous_stop_clean(&self) -> bool {
        self.logs.had_clean_shutdown()
    }

    /// This broker's node id.
    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// The hosted partitions that `leader` leads and this broker follows (an offline copy
    /// follows nobody).
    pub fn followed_from(&self, leader: i32) -> Vec<Arc<Partition>> {
        self.all_partitions()
            .into_iter()
            .filter(|p| p.leader() == leader && leader != self.node_id && !p.is_offline())
            .collect()
    }

    /// The hosted partitions whose logs went offline after a storage error: (topic id,
    /// partition index).
    pub fn offline_partitions(&self) -> Vec<(Uuid, i32)> {
        self.all_partitions()
            .iter()
            .filter(|p| p.is_offline())
            .map(|p| (p.topic_id(), p.index()))
            .collect()
    }

    /// The brokers that lead a partition this broker follows.
    pub fn leaders_followed(&self) -> std::collections::BTreeSet<i32> {
        self.all_partitions()
            .iter()
            .map(|p| p.leader())
            .filter(|l| *l >= 0 && *l != self.node_id)
            .collect()
    }

    /// Every hosted partition.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Makes the hosted partitions match `image` (see the module doc).
    pub fn reconcile(&self, image: &Arc<MetadataImage>) -> Result<(), LogError> {
        let _guard = self
            .reconcile_lock
            .lock()
            .map_err(|_| LogError::Io(std::io::Error::other("reconcile lock poisoned")))?;
        let mut wanted: BTreeMap<PartitionKey, (Uuid, &PartitionInfo, usize)> = BTreeMap::new();
        for topic in image.topics.values() {
            let min_insync = topic
                .configs
                .get("min.insync.replicas")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(1);
            for p in &topic.partitions {
                if p.replicas.contains(&self.node_id) {
                    wanted.insert((topic.name.clone(), p.index), (topic.id, p, min_insync));
                }
            }
        }
        if let Ok(mut known) = self.image.write() {
            *known = Arc::clone(image);
        }
        // Remove partitions that are no longer wanted, or whose topic was re-created.
        let stale: Vec<PartitionKey> = {
            let partitions = self.lock_read()?;
            partitions
                .iter()
                .filter(|(key, p)| wanted.get(*key).map(|(id, _, _)| *id) != Some(p.topic_id()))
                .map(|(key, _)| key.clone())
                .collect()
        };
        for key in stale {
            self.lock_write()?.remove(&key);
            self.logs.remove(&key.0, key.1)?;
            tracing::info!(topic = %key.0, partition = key.1, "removed partition data");
        }
        // Open or create what is wanted; apply config changes to what is open.
        // One partition that cannot be opened (a disk error, no file descriptors left) does not
        // keep the others from being hosted; the first error is returned after all were tried.
        let mut first_error = None;
        for ((topic, index), (topic_id, info, min_insync)) in wanted {
            if let Err(error) = self.host(image, &topic, index, topic_id, info, min_insync) {
                tracing::error!(%topic, partition = index, %error, "cannot host partition");
                first_error.get_or_insert(error);
            }
        }
        self.reconciled.send_modify(|n| *n = n.wrapping_add(1));
        first_error.map_or(Ok(()), Err)
    }

    /// Applies `info` to a hosted partition, or opens (creating if needed) and hosts it.
    fn host(
        &self,
        image: &MetadataImage,
        topic: &str,
        index: i32,
        topic_id: Uuid,
        info: &PartitionInfo,
        min_insync: usize,
    ) -> Result<(), LogError> {
        let overrides = image
            .topic(topic)
            .map(|t| t.configs.clone())
            .unwrap_or_default();
        let log_config = self.config.log_config(&overrides);
        if let Some(existing) = self.lock_read()?.get(&(topic.to_string(), index)) {
            existing.log().set_config(log_config);
            existing.set_assignment(assignment(info, min_insync), now_ms());
            return Ok(());
        }
        let dir = self.config.data_dir.join(format!("{topic}-{index}"));
        if let Some(on_disk) = read_partition_metadata(&dir) {
            if on_disk != topic_id {
                tracing::warn!(%topic, partition = index, %on_disk, %topic_id,
                    "partition dir belongs to an older topic of the same name; deleting it");
                self.logs.remove(topic, index)?;
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)?;
                }
            }
        }
        let log = self.logs.open_log(topic, index, log_config)?;
        write_partition_metadata(&dir, topic_id)?;
        let partition = Arc::new(Partition::new(
            topic.to_string(),
            topic_id,
            index,
            self.node_id,
            log,
            info.leader,
            info.leader_epoch,
        ));
        if let Some(high_watermark) = self.logs.checkpointed_high_watermark(topic, index) {
            partition.restore_high_watermark(high_watermark);
        }
        partition.set_assignment(assignment(info, min_insync), now_ms());
        if self.is_cut_off() {
            partition.set_cut_off(Some(self.config.replica_lag_time_max_ms()));
        }
        self.lock_write()?
            .insert((topic.to_string(), index), partition);
        Ok(())
    }

    /// Runs the periodic log duties once: time-based rolls, retention, `flush.ms`.
    pub fn run_log_duties(&self, now_ms: i64) {
        for partition in self.all_partitions() {
            let log = partition.log();
            if let Err(e) = log.maybe_roll(now_ms) {
                tracing::warn!(topic = partition.topic(), partition = partition.index(), error = %e, "roll failed");
            }
            match log.enforce_retention(now_ms, partition.high_watermark()) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(
                    topic = partition.topic(),
                    partition = partition.index(),
                    segments = n,
                    "retention deleted segments"
                ),
                Err(e) => {
                    tracing::warn!(topic = partition.topic(), partition = partition.index(), error = %e, "retention failed")
                }
            }
        }
        if let Err(e) = self.logs.checkpoint_recovery_points() {
            tracing::warn!(error = %e, "writing recovery-point checkpoint failed");
        }
    }

    /// Forgets, in every hosted partition, the idempotent producers whose last batch is
    /// `expiration_ms` old (`producer.id.expiration.ms`).
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) {
        let mut expired = 0;
        for partition in self.all_partitions() {
            expired += partition.log().expire_producers(now_ms, expiration_ms);
        }
        if expired > 0 {
            tracing::debug!(expired, "expired idle producers' state");
        }
    }

    /// Runs the log cleaner once (see the module doc): every hosted partition whose
    /// `cleanup.policy` includes `compact` and whose dirty ratio qualifies (or that is past
    /// `max.compaction.lag.ms`) is compacted below its high watermark, dirtiest first, until
    /// [`LOG_CLEANER_RUN_BYTES_MAX`] bytes of log were taken on. Does nothing when
    /// `log.cleaner.enable` is false. Blocking I/O: call it from a blocking task.
    pub fn run_log_cleaner(&self, now_ms: i64) -> LogCleanerRun {
        let mut run = LogCleanerRun::default();
        if !self.config.log_cleaner_enable() {
            return run;
        }
        let mut candidates = Vec::new();
        for partition in self.all_partitions() {
            let log = partition.log();
            match log.cleanable(now_ms, partition.high_watermark()) {
                Ok(Some(cleanable))
                    if cleanable.should_clean(log.config().min_cleanable_dirty_ratio) =>
                {
                    candidates.push((cleanable, partition));
                }
                Ok(_) => {}
                Err(e) => {
                    run.partitions_failed += 1;
                    tracing::warn!(topic = partition.topic(), partition = partition.index(), error = %e, "cannot measure the log for cleaning");
                }
            }
        }
        // The dirtiest first, as Kafka's `grabFilthiestCompactedLog`.
        candidates.sort_by(|(a, _), (b, _)| b.dirty_ratio.total_cmp(&a.dirty_ratio));
        let mut budget_spent = 0u64;
        for (cleanable, partition) in candidates {
            if run.partitions_cleaned > 0 && budget_spent >= LOG_CLEANER_RUN_BYTES_MAX {
                run.partitions_deferred += 1;
                continue;
            }
            budget_spent += cleanable.clean_bytes + cleanable.cleanable_bytes;
            let settings = CompactionSettings {
                // Never past an open transaction (Kafka's first unstable offset).
                upper_bound_offset: partition.last_stable_offset(),
                dedupe_buffer_bytes: self.config.log_cleaner_dedupe_buffer_size(),
            };
            match partition.log().compact(now_ms, &settings) {
                Ok(stats) if stats.outcome == CompactionOutcome::Cleaned => {
                    run.partitions_cleaned += 1;
                    run.bytes_before += stats.bytes_before;
                    run.bytes_after += stats.bytes_after;
                    run.records_removed += stats.records_removed();
                    if stats.map_full {
                        run.partitions_deferred += 1;
                    }
                }
                Ok(stats) if stats.outcome == CompactionOutcome::Aborted => {
                    run.partitions_failed += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    run.partitions_failed += 1;
                    tracing::warn!(topic = partition.topic(), partition = partition.index(), error = %e, "log compaction failed");
                }
            }
        }
        if run.partitions_cleaned > 0 {
            tracing::info!(
                partitions = run.partitions_cleaned,
                deferred = run.partitions_deferred,
                bytes_before = run.bytes_before,
                bytes_after = run.bytes_after,
                records_removed = run.records_removed,
                "log cleaner run"
            );
            if let Err(e) = self.logs.checkpoint_cleaner_offsets() {
                tracing::warn!(error = %e, "writing the cleaner checkpoint failed");
            }
        }
        run
    }

    /// Flushes every partition with unflushed records whose `flush.ms` has passed since its
    /// last time flush.
    pub fn run_time_flushes(&self, now_ms: i64) {
        for partition in self.all_partitions() {
            let log = partition.log();
            let due = partition
                .last_time_flush_ms()
                .saturating_add(log.config().flush_ms)
                <= now_ms;
            if due && log.recovery_point() < log.log_end_offset() {
                if let Err(e) = partition.flush_now() {
                    tracing::warn!(topic = partition.topic(), partition = partition.index(), error = %e, "flush failed");
                }
                partition.set_last_time_flush_ms(now_ms);
            }
        }
    }

    /// The smallest `flush.ms` of any hosted partition (how often to run time flushes).
    pub fn min_flush_ms(&self) -> i64 {
        self.all_partitions()
            .iter()
            .map(|p| p.log().config().flush_ms)
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Writes every hosted partition's high watermark to `replication-offset-checkpoint`
    /// (every `replica.high.watermark.checkpoint.interval.ms`, and at shutdown).
    pub fn checkpoint_high_watermarks(&self) -> Result<(), LogError> {
        let marks: Vec<((String, i32), i64)> = self
            .all_partitions()
            .iter()
            .map(|p| ((p.topic().to_string(), p.index()), p.high_watermark()))
            .collect();
        self.logs.checkpoint_high_watermarks(marks)
    }

    /// Clean shutdown: checkpoint the high watermarks, flush and close every log, write the
    /// checkpoints and the clean marker.
    pub fn shutdown(&self) -> Result<(), LogError> {
        if let Err(e) = self.checkpoint_high_watermarks() {
            tracing::warn!(error = %e, "writing the high-watermark checkpoint failed");
        }
        self.logs.shutdown()
    }

    fn lock_read(
        &self,
    ) -> Result<std::sync::RwLockReadGuard<'_, HashMap<PartitionKey, Arc<Partition>>>, LogError>
    {
        self.partitions
            .read()
            .map_err(|_| LogError::Io(std::io::Error::other("partition map poisoned")))
    }

    fn lock_write(
        &self,
    ) -> Result<std::sync::RwLockWriteGuard<'_, HashMap<PartitionKey, Arc<Partition>>>, LogError>
    {
        self.partitions
            .write()
            .map_err(|_| LogError::Io(std::io::Error::other("partition map poisoned")))
    }
}

fn read_partition_metadata(dir: &std::path::Path) -> Option<Uuid> {
    let text = std::fs::read_to_string(dir.join(PARTITION_METADATA_FILE)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("topic_id: "))
        .and_then(|id| Uuid::parse_str(id.trim()).ok())
}

fn write_partition_metadata(dir: &std::path::Path, topic_id: Uuid) -> std::io::Result<()> {
    let path = dir.join(PARTITION_METADATA_FILE);
    if read_partition_metadata(dir) == Some(topic_id) {
        return Ok(());
    }
    std::fs::write(&path, format!("version: 0\ntopic_id: {topic_id}\n"))
}

/// The metadata's partition as [`Partition::set_assignment`] takes it.
pub(crate) fn assignment(info: &PartitionInfo, min_insync: usize) -> Assignment<'_> {
    Assignment {
        leader: info.leader,
        leader_epoch: info.leader_epoch,
        partition_epoch: info.partition_epoch,
        replicas: &info.replicas,
        isr: &info.isr,
        min_insync,
    }
}
