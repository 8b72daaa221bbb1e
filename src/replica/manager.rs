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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::partition::Partition;
use super::ReplicaError;
use crate::cluster::MetadataImage;
use crate::config::BrokerConfig;
use crate::log::{LogError, LogManager};

const PARTITION_METADATA_FILE: &str = "partition.metadata";

type PartitionKey = (String, i32);

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
    /// Serialises reconciliations (creation and deletion of logs).
    reconcile_lock: std::sync::Mutex<()>,
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
            reconcile_lock: std::sync::Mutex::new(()),
        })
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
        partitions
            .get(&(topic.to_string(), partition))
            .cloned()
            .ok_or_else(|| ReplicaError::UnknownTopicOrPartition {
                topic: topic.to_string(),
                partition,
            })
    }

    /// Every hosted partition.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Makes the hosted partitions match `image` (see the module doc).
    pub fn reconcile(&self, image: &MetadataImage) -> Result<(), LogError> {
        let _guard = self
            .reconcile_lock
            .lock()
            .map_err(|_| LogError::Io(std::io::Error::other("reconcile lock poisoned")))?;
        let mut wanted: BTreeMap<PartitionKey, (Uuid, i32)> = BTreeMap::new();
        for topic in image.topics.values() {
            for p in &topic.partitions {
                if p.replicas.contains(&self.node_id) {
                    wanted.insert((topic.name.clone(), p.index), (topic.id, p.leader_epoch));
                }
            }
        }
        // Remove partitions that are no longer wanted, or whose topic was re-created.
        let stale: Vec<PartitionKey> = {
            let partitions = self.lock_read()?;
            partitions
                .iter()
                .filter(|(key, p)| wanted.get(*key).map(|(id, _)| *id) != Some(p.topic_id()))
                .map(|(key, _)| key.clone())
                .collect()
        };
        for key in stale {
            self.lock_write()?.remove(&key);
            self.logs.remove(&key.0, key.1)?;
            tracing::info!(topic = %key.0, partition = key.1, "removed partition data");
        }
        // Open or create what is wanted; apply config changes to what is open.
        for ((topic, index), (topic_id, leader_epoch)) in wanted {
            let overrides = image
                .topic(&topic)
                .map(|t| t.configs.clone())
                .unwrap_or_default();
            let log_config = self.config.log_config(&overrides);
            if let Some(existing) = self.lock_read()?.get(&(topic.clone(), index)) {
                existing.log().set_config(log_config);
                existing.set_leader_epoch(leader_epoch);
                continue;
            }
            let dir = self.config.data_dir.join(format!("{topic}-{index}"));
            if let Some(on_disk) = read_partition_metadata(&dir) {
                if on_disk != topic_id {
                    tracing::warn!(%topic, partition = index, %on_disk, %topic_id,
                        "partition dir belongs to an older topic of the same name; deleting it");
                    self.logs.remove(&topic, index)?;
                    if dir.exists() {
                        std::fs::remove_dir_all(&dir)?;
                    }
                }
            }
            let log = self.logs.open_log(&topic, index, log_config)?;
            write_partition_metadata(&dir, topic_id)?;
            let partition = Arc::new(Partition::new(
                topic.clone(),
                topic_id,
                index,
                log,
                leader_epoch,
            ));
            self.lock_write()?.insert((topic, index), partition);
        }
        Ok(())
    }

    /// Runs the periodic log duties once: time-based rolls, retention, `flush.ms`.
    pub fn run_log_duties(&self, now_ms: i64) {
        for partition in self.all_partitions() {
            let log = partition.log();
            if let Err(e) = log.maybe_roll(now_ms) {
                tracing::warn!(topic = partition.topic(), partition = partition.index(), error = %e, "roll failed");
            }
            match log.enforce_retention(now_ms) {
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
                if let Err(e) = log.flush() {
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

    /// Clean shutdown: flush and close every log, write the checkpoint and the clean marker.
    pub fn shutdown(&self) -> Result<(), LogError> {
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
