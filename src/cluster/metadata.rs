//! The metadata image: brokers, topics (with ids and config overrides) and partitions (leader,
//! leader epoch, replicas, ISR).
//!
//! An image is immutable once published; readers hold an `Arc<MetadataImage>` for as long as a
//! request needs a consistent view. Topic names and ids are both indexed.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One broker of the cluster as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// `node.id`.
    pub node_id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: u16,
    /// Rack, if configured.
    pub rack: Option<String>,
}

/// One partition's placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Partition index.
    pub index: i32,
    /// Leader's node id (-1 when none).
    pub leader: i32,
    /// Incremented on every leader change.
    pub leader_epoch: i32,
    /// Replica node ids, preferred leader first.
    pub replicas: Vec<i32>,
    /// In-sync replica node ids.
    pub isr: Vec<i32>,
    /// Incremented on every change of leader or ISR (KIP-497's partition epoch), so a stale
    /// ISR change can be refused.
    #[serde(default)]
    pub partition_epoch: i32,
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Topic id (KIP-516).
    pub id: Uuid,
    /// Partitions, index i at position i.
    pub partitions: Vec<PartitionInfo>,
    /// Topic-level config overrides (Kafka names).
    pub configs: BTreeMap<String, String>,
    /// Internal topics (`__consumer_offsets`) are flagged in Metadata.
    pub internal: bool,
}

/// A consistent view of the cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Cluster id.
    pub cluster_id: String,
    /// Node id of the active controller.
    pub controller_id: i32,
    /// Brokers by node id.
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicInfo>,
    /// Topic ids to names.
    #[serde(skip)]
    pub topic_ids: HashMap<Uuid, String>,
    /// What the controller knows of each registered broker beyond what clients see.
    #[serde(default)]
    pub registrations: BTreeMap<i32, BrokerRegistration>,
    /// The first producer id not yet handed out (KIP-730 producer-id blocks).
    #[serde(default)]
    pub next_producer_id: i64,
}

/// A broker's registration with the controller quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// A fresh id each time the broker process starts, so a restart is told apart from a
    /// duplicate registration.
    pub incarnation: Uuid,
    /// The internal listener (Raft and replica traffic), `host:port`.
    pub internal_addr: String,
    /// Fenced brokers lead nothing and are left out of Metadata responses.
    pub fenced: bool,
    /// Partition replicas its open-file limit leaves room for (`None`: not said, no limit).
    #[serde(default)]
    pub partitions_max: Option<u64>,
    /// Its replicas whose logs went offline after a storage error (topic id, partition): they
    /// lead nothing and join no ISR until the broker registers again (a restart, which
    /// recovers the logs).
    #[serde(default)]
    pub offline_replicas: std::collections::BTreeSet<(Uuid, i32)>,
    /// In controlled shutdown (Kafka's): fenced at its own request, it leads nothing, joins no
    /// ISR and its heartbeats do not unfence it; registering again (a restart) clears it.
    #[serde(default)]
    pub shutting_down: bool,
}

impl MetadataImage {
    /// Whether `node`'s replica of partition `index` of topic `topic_id` is offline (a storage
    /// error): it may neither lead nor join the ISR.
    pub fn replica_offline(&self, node: i32, topic_id: Uuid, index: i32) -> bool {
        self.registrations
            .get(&node)
            .is_some_and(|r| r.offline_replicas.contains(&(topic_id, index)))
    }
}

impl MetadataImage {
    /// Rebuilds the derived id index (after deserialising or changing topics).
    pub fn reindex(&mut self) {
        self.topic_ids = self
            .topics
            .values()
            .map(|t| (t.id, t.name.clone()))
            .collect();
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.get(name)
    }

    /// A topic by id.
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicInfo> {
        self.topic_ids.get(id).and_then(|n| self.topics.get(n))
    }

    /// One partition.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionInfo> {
        let index = usize::try_from(partition).ok()?;
        self.topics.get(topic)?.partitions.get(index)
    }
}

/// Kafka's KRaft metadata log. gregor keeps its quorum in [`QUORUM_DIR`](super::quorum::QUORUM_DIR),
/// where no partition directory can be, and reserves the name as Kafka does.
pub const CLUSTER_METADATA_TOPIC: &str = "__cluster_metadata";
/// Committed offsets and group metadata, written only by the group coordinator.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Kafka's transaction log; reserved for the transaction coordinator.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";
/// The names only the broker may create, delete, configure or write.
pub const INTERNAL_TOPICS: [&str; 3] = [
    CLUSTER_METADATA_TOPIC,
    OFFSETS_TOPIC,
    TRANSACTION_STATE_TOPIC,
];

/// The internal topic `name` is, or collides with (`.` and `_` are the same in Kafka's
/// metric names, so `__consumer.offsets` would shadow `__consumer_offsets`).
pub fn reserved_topic(name: &str) -> Option<&'static str> {
    let bytes = name.as_bytes();
    if bytes.len() < 2 || !bytes[..2].iter().all(|b| matches!(b, b'_' | b'.')) {
        // Every internal name's collision key starts with "__": no allocation on the produce
        // path for ordinary topics.
        return None;
    }
    let key = collision_key(name);
    INTERNAL_TOPICS
        .into_iter()
        .find(|internal| collision_key(internal) == key)
}

/// Kafka's rules for a topic name: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".to_string());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name '{name}' is not allowed"));
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name is {} characters, more than 249",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name '{name}' has '{c}': only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// Names that would collide in metric names: Kafka treats `.` and `_` as the same.
pub fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        validate_topic_name("orders.v1_eu-west").unwrap();
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name("ü").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
        validate_topic_name(&"x".repeat(249)).unwrap();
        assert_eq!(collision_key("a.b"), collision_key("a_b"));
    }

    #[test]
    fn internal_names_and_their_collisions_are_reserved() {
        assert_eq!(reserved_topic("__consumer_offsets"), Some(OFFSETS_TOPIC));
        assert_eq!(reserved_topic("__consumer.offsets"), Some(OFFSETS_TOPIC));
        assert_eq!(
            reserved_topic("__cluster.metadata"),
            Some(CLUSTER_METADATA_TOPIC)
        );
        assert_eq!(
            reserved_topic("__transaction_state"),
            Some(TRANSACTION_STATE_TOPIC)
        );
        assert_eq!(reserved_topic("consumer_offsets"), None);
        assert_eq!(reserved_topic("__cluster_metadata2"), None);
        assert_eq!(reserved_topic("._consumer.offsets"), Some(OFFSETS_TOPIC));
        assert_eq!(reserved_topic("orders"), None);
    }
}
