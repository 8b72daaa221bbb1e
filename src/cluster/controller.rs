//! The controller: the single writer of the metadata image.
//!
//! Every change (broker registration, topic creation, deletion) is validated here, applied to a
//! copy of the current image, persisted, and only then published, so what a client was told
//! exists survives a restart. Readers subscribe to a `watch` channel of images.
//!
//! Storage today: `<data-dir>/gregor-metadata.json`, written to a temporary file, fsynced and
//! renamed over the old one (atomic on POSIX). The cluster issue moves this behind a Raft log;
//! the operations and their errors stay.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use uuid::Uuid;

use super::metadata::{
    collision_key, validate_topic_name, BrokerInfo, MetadataImage, PartitionInfo, TopicInfo,
};
use crate::config::{self, BrokerConfig};

const METADATA_FILE: &str = "gregor-metadata.json";

/// A refused metadata change. Mapped to Kafka error codes by the API layer.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// TOPIC_ALREADY_EXISTS.
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    /// INVALID_TOPIC_EXCEPTION.
    #[error("{0}")]
    InvalidTopic(String),
    /// INVALID_PARTITIONS.
    #[error("{0}")]
    InvalidPartitions(String),
    /// INVALID_REPLICATION_FACTOR.
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// INVALID_CONFIG.
    #[error("{0}")]
    InvalidConfig(String),
    /// UNKNOWN_TOPIC_OR_PARTITION / UNKNOWN_TOPIC_ID.
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    /// POLICY_VIOLATION: a configured limit.
    #[error("{0}")]
    PolicyViolation(String),
    /// TOPIC_DELETION_DISABLED.
    #[error("topic deletion is disabled (delete.topic.enable=false)")]
    DeletionDisabled,
    /// The metadata could not be persisted (KAFKA_STORAGE_ERROR / UNKNOWN_SERVER_ERROR).
    #[error("metadata storage: {0}")]
    Storage(String),
}

/// What CreateTopics (or auto-creation) asks for.
#[derive(Debug, Clone)]
pub struct CreateTopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count; -1 means `num.partitions`.
    pub partitions: i32,
    /// Replication factor; -1 means `default.replication.factor`.
    pub replication_factor: i16,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
    /// Check everything, change nothing.
    pub validate_only: bool,
    /// Internal topic flag.
    pub internal: bool,
}

/// The metadata controller.
#[derive(Debug)]
pub struct Controller {
    path: PathBuf,
    config: Arc<BrokerConfig>,
    write_lock: Mutex<()>,
    image: watch::Sender<Arc<MetadataImage>>,
}

impl Controller {
    /// Loads the persisted image (or starts an empty one) and registers this broker.
    pub fn open(config: Arc<BrokerConfig>) -> Result<Controller, ControllerError> {
        let path = config.data_dir.join(METADATA_FILE);
        let mut image = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<MetadataImage>(&bytes)
                .map_err(|e| ControllerError::Storage(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MetadataImage::default(),
            Err(e) => return Err(ControllerError::Storage(format!("{}: {e}", path.display()))),
        };
        image.reindex();
        image.cluster_id = config.cluster_id();
        image.controller_id = config.node_id();
        image.brokers.clear();
        image.brokers.insert(
            config.node_id(),
            BrokerInfo {
                node_id: config.node_id(),
                host: config.advertised_host.clone(),
                port: config.advertised_port,
                rack: None,
            },
        );
        let (image_tx, _) = watch::channel(Arc::new(image));
        let controller = Controller {
            path,
            config,
            write_lock: Mutex::new(()),
            image: image_tx,
        };
        controller.persist(&controller.image())?;
        Ok(controller)
    }

    /// The current image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// A receiver of every published image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.subscribe()
    }

    /// Creates a topic (or only validates, with `validate_only`). Returns the topic as created.
    pub fn create_topic(&self, spec: CreateTopicSpec) -> Result<TopicInfo, ControllerError> {
        let _guard = self
            .write_lock
            .lock()
            .map_err(|_| ControllerError::Storage("controller lock poisoned".to_string()))?;
        let current = self.image();
        validate_topic_name(&spec.name).map_err(ControllerError::InvalidTopic)?;
        if current.topics.contains_key(&spec.name) {
            return Err(ControllerError::TopicAlreadyExists(spec.name));
        }
        let key = collision_key(&spec.name);
        if let Some(other) = current.topics.keys().find(|t| collision_key(t) == key) {
            return Err(ControllerError::InvalidTopic(format!(
                "topic '{}' collides with existing topic '{other}' ('.' and '_' are equivalent)",
                spec.name
            )));
        }
        if current.topics.len() >= self.config.topics_max() {
            return Err(ControllerError::PolicyViolation(format!(
                "the broker holds {} topics, the limit (topics.max)",
                current.topics.len()
            )));
        }
        let partitions = if spec.partitions == -1 {
            self.config.num_partitions()
        } else {
            spec.partitions
        };
        if partitions < 1 {
            return Err(ControllerError::InvalidPartitions(format!(
                "number of partitions must be at least 1, got {partitions}"
            )));
        }
        if partitions > self.config.partitions_per_topic_max() {
            return Err(ControllerError::InvalidPartitions(format!(
                "{partitions} partitions is more than partitions.per.topic.max ({})",
                self.config.partitions_per_topic_max()
            )));
        }
        let replication_factor = if spec.replication_factor == -1 {
            self.config.default_replication_factor()
        } else {
            spec.replication_factor
        };
        let live = current.brokers.len();
        if replication_factor < 1 || usize::try_from(replication_factor).unwrap_or(0) > live {
            return Err(ControllerError::InvalidReplicationFactor(format!(
                "replication factor {replication_factor} is not between 1 and the {live} live broker(s)"
            )));
        }
        for (name, value) in &spec.configs {
            if config::TOPIC_CONFIGS.iter().all(|(t, _)| t != name) {
                return Err(ControllerError::InvalidConfig(format!(
                    "unknown topic config '{name}'"
                )));
            }
            config::validate(name, value)
                .map_err(|e| ControllerError::InvalidConfig(e.to_string()))?;
        }
        self.config
            .validate_topic_configs(&spec.configs)
            .map_err(|e| ControllerError::InvalidConfig(e.to_string()))?;
        let brokers: Vec<i32> = current.brokers.keys().copied().collect();
        let rf = usize::try_from(replication_factor).unwrap_or(1);
        let topic = TopicInfo {
            name: spec.name.clone(),
            id: Uuid::new_v4(),
            partitions: (0..partitions)
                .map(|index| {
                    let start = usize::try_from(index).unwrap_or(0);
                    let replicas: Vec<i32> = (0..rf)
                        .map(|r| brokers[(start + r) % brokers.len()])
                        .collect();
                    PartitionInfo {
                        index,
                        leader: replicas[0],
                        leader_epoch: 0,
                        isr: replicas.clone(),
                        replicas,
                        partition_epoch: 0,
                    }
                })
                .collect(),
            configs: spec.configs,
            internal: spec.internal,
        };
        if spec.validate_only {
            return Ok(topic);
        }
        let mut next = (*current).clone();
        next.topics.insert(topic.name.clone(), topic.clone());
        next.reindex();
        self.publish(next)?;
        tracing::info!(topic = %topic.name, id = %topic.id, partitions, "created topic");
        Ok(topic)
    }

    /// Deletes a topic by name.
    pub fn delete_topic(&self, name: &str) -> Result<TopicInfo, ControllerError> {
        if !self.config.delete_topic_enable() {
            return Err(ControllerError::DeletionDisabled);
        }
        let _guard = self
            .write_lock
            .lock()
            .map_err(|_| ControllerError::Storage("controller lock poisoned".to_string()))?;
        let current = self.image();
        let mut next = (*current).clone();
        let topic = next
            .topics
            .remove(name)
            .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
        next.reindex();
        self.publish(next)?;
        tracing::info!(topic = %name, "deleted topic");
        Ok(topic)
    }

    fn publish(&self, image: MetadataImage) -> Result<(), ControllerError> {
        self.persist(&image)?;
        self.image.send_replace(Arc::new(image));
        Ok(())
    }

    fn persist(&self, image: &MetadataImage) -> Result<(), ControllerError> {
        let bytes = serde_json::to_vec_pretty(image)
            .map_err(|e| ControllerError::Storage(e.to_string()))?;
        write_atomically(&self.path, &bytes)
            .map_err(|e| ControllerError::Storage(format!("{}: {e}", self.path.display())))
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(dir: &Path) -> Controller {
        let config = BrokerConfig::new("127.0.0.1:9092".parse().unwrap(), dir.to_path_buf());
        Controller::open(Arc::new(config)).unwrap()
    }

    fn spec(name: &str, partitions: i32) -> CreateTopicSpec {
        CreateTopicSpec {
            name: name.to_string(),
            partitions,
            replication_factor: -1,
            configs: BTreeMap::new(),
            validate_only: false,
            internal: false,
        }
    }

    #[test]
    fn create_persist_delete() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path());
        let t = c.create_topic(spec("orders", 3)).unwrap();
        assert_eq!(t.partitions.len(), 3);
        assert!(matches!(
            c.create_topic(spec("orders", 1)),
            Err(ControllerError::TopicAlreadyExists(_))
        ));
        assert!(matches!(
            c.create_topic(spec("orders_", 1).clone()).map(|_| ()),
            Ok(())
        ));
        assert!(matches!(
            c.create_topic(spec("orders.", 1)),
            Err(ControllerError::InvalidTopic(_))
        ));
        drop(c);
        let c = controller(dir.path());
        let image = c.image();
        assert_eq!(image.topic("orders").unwrap().id, t.id);
        assert_eq!(image.topic_by_id(&t.id).unwrap().name, "orders");
        c.delete_topic("orders").unwrap();
        assert!(c.image().topic("orders").is_none());
        assert!(matches!(
            c.delete_topic("orders"),
            Err(ControllerError::UnknownTopic(_))
        ));
    }

    #[test]
    fn refuses_bad_specs() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path());
        assert!(matches!(
            c.create_topic(spec("a", 0)),
            Err(ControllerError::InvalidPartitions(_))
        ));
        let mut s = spec("a", 1);
        s.replication_factor = 2;
        assert!(matches!(
            c.create_topic(s),
            Err(ControllerError::InvalidReplicationFactor(_))
        ));
        let mut s = spec("a", 1);
        s.configs.insert("retention.ms".into(), "soon".into());
        assert!(matches!(
            c.create_topic(s),
            Err(ControllerError::InvalidConfig(_))
        ));
        let mut s = spec("a", 1);
        s.validate_only = true;
        c.create_topic(s).unwrap();
        assert!(c.image().topic("a").is_none());
    }
}
