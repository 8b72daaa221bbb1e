//! Every broker setting and limit, under Apache Kafka's names where Kafka has one.
//!
//! Each broker setting is declared once (`broker_settings!`): a typed field of [`Settings`]
//! named after it, and its entry in the table [`BROKER_CONFIGS`] with its default and what it
//! does. The table feeds parsing (TOML file, then `GREGOR_<KEY>` environment variables, then
//! command-line flags, the later overriding the earlier), validation and DescribeConfigs, so a
//! setting that gregor does not honour is never reported; a value is parsed into its field once,
//! when it is set, and the broker reads fields (through [`BrokerConfig`]'s accessors, which
//! convert units), never a setting by its name.
//!
//! Topic-level settings ([`TOPIC_CONFIGS`]) are overrides of a broker default (`segment.bytes`
//! overrides `log.segment.bytes`, and so on); [`BrokerConfig::log_config`] merges them into the
//! [`LogConfig`] the log layer takes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::log::{CleanupPolicy, LogConfig, TimestampType};

/// Where an effective value came from (DescribeConfigs' `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Kafka `DYNAMIC_TOPIC_CONFIG` (1): set on the topic.
    TopicOverride,
    /// Kafka `STATIC_BROKER_CONFIG` (4): set in the config file, environment or flags.
    StaticBroker,
    /// Kafka `DEFAULT_CONFIG` (5).
    Default,
}

impl ConfigSource {
    /// The wire value of DescribeConfigs' `config_source`.
    pub fn wire_value(self) -> i8 {
        match self {
            ConfigSource::TopicOverride => 1,
            ConfigSource::StaticBroker => 4,
            ConfigSource::Default => 5,
        }
    }
}

/// The value kind of a setting, used to validate it when it is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConfigKind {
    /// A signed 64-bit integer with an inclusive lower bound.
    Long { min: i64 },
    /// A finite floating-point number in an inclusive range.
    Double { min: f64, max: f64 },
    /// `true` or `false`.
    Boolean,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// A non-empty comma-separated list of items from a fixed set (Kafka's LIST type).
    List(&'static [&'static str]),
    /// Free text.
    Text,
}

/// The shortest `cluster.secret` accepted.
pub const CLUSTER_SECRET_CHARS_MIN: usize = 16;

/// The policies `cleanup.policy` and `log.cleanup.policy` accept.
const CLEANUP_POLICIES: &[&str] = &["delete", "compact"];

/// One broker setting.
#[derive(Debug)]
pub struct ConfigDef {
    /// Kafka's name for it.
    pub name: &'static str,
    /// Its default, as text.
    pub default: &'static str,
    /// Its kind, for validation.
    pub kind: ConfigKind,
    /// Whether DescribeConfigs should hide its value.
    pub sensitive: bool,
    /// What it does.
    pub doc: &'static str,
}

const fn long(name: &'static str, default: &'static str, min: i64, doc: &'static str) -> ConfigDef {
    ConfigDef {
        name,
        default,
        kind: ConfigKind::Long { min },
        sensitive: false,
        doc,
    }
}

/// A setting's value type: how its (validated) text becomes the typed field of [`Settings`].
trait SettingValue: Sized {
    fn parse_setting(text: &str) -> Option<Self>;
}

impl SettingValue for i64 {
    fn parse_setting(text: &str) -> Option<Self> {
        text.trim().parse().ok()
    }
}

impl SettingValue for f64 {
    fn parse_setting(text: &str) -> Option<Self> {
        text.trim().parse().ok().filter(|v: &f64| v.is_finite())
    }
}

impl SettingValue for bool {
    fn parse_setting(text: &str) -> Option<Self> {
        match text.trim() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }
}

impl SettingValue for String {
    fn parse_setting(text: &str) -> Option<Self> {
        Some(text.trim().to_string())
    }
}

/// Declares every broker setting once: its field of [`Settings`] (named after it, typed by its
/// kind) and its [`ConfigDef`] in [`BROKER_CONFIGS`], in the same order, so the broker reads a
/// setting as a typed field (a misspelt one does not compile) and DescribeConfigs, parsing and
/// validation read the table.
macro_rules! broker_settings {
    ($( $field:ident : $ty:ty = $def:expr ),* $(,)?) => {
        /// Every broker-level setting gregor honours.
        pub const BROKER_CONFIGS: &[ConfigDef] = &[$($def),*];

        /// Every broker setting's effective value, typed: one field each, named after the
        /// setting (`log.segment.bytes` is `log_segment_bytes`). Kept by [`BrokerConfig`],
        /// which parses a value into it once, when the value is set.
        #[derive(Clone, PartialEq)]
        pub struct Settings {
            $(
                #[doc = concat!("`", stringify!($field), "`: the setting of that name with dots for underscores ([`BROKER_CONFIGS`] says what it does).")]
                pub $field: $ty,
            )*
        }

        /// Shows every field but the sensitive ones' values (`cluster.secret`).
        impl std::fmt::Debug for Settings {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut out = f.debug_struct("Settings");
                let mut defs = BROKER_CONFIGS.iter();
                $(
                    if defs.next().is_some_and(|def| def.sensitive) {
                        out.field(stringify!($field), &"[hidden]");
                    } else {
                        out.field(stringify!($field), &self.$field);
                    }
                )*
                out.finish()
            }
        }

        /// The fields of [`Settings`], in [`BROKER_CONFIGS`]' order.
        #[cfg(test)]
        const SETTING_FIELDS: &[&str] = &[$(stringify!($field)),*];

        impl Settings {
            /// Every setting at its default.
            fn defaults() -> Settings {
                let mut settings = Settings {
                    $( $field: <$ty>::default(), )*
                };
                for def in BROKER_CONFIGS {
                    // Every default validates (a unit test says so): never refused.
                    let _ = settings.assign(def.name, def.default);
                }
                settings
            }

            /// Parses `text` (validated by the caller) into the field of setting `name`;
            /// false when the name is not a broker setting or the text does not parse.
            fn assign(&mut self, name: &str, text: &str) -> bool {
                let mut defs = BROKER_CONFIGS.iter();
                $(
                    if defs.next().is_some_and(|def| def.name == name) {
                        return match <$ty as SettingValue>::parse_setting(text) {
                            Some(value) => {
                                self.$field = value;
                                true
                            }
                            None => false,
                        };
                    }
                )*
                false
            }
        }
    };
}

broker_settings! {
    node_id: i64 = long("node.id", "1", 0, "This broker's id."),
    cluster_id: String = ConfigDef {
        name: "cluster.id",
        default: "gregor-cluster-0000000",
        kind: ConfigKind::Text,
        sensitive: false,
        doc: "The cluster id reported in Metadata and DescribeCluster.",
    },
    controller_quorum_voters: String = ConfigDef {
        name: "controller.quorum.voters",
        default: "",
        kind: ConfigKind::Text,
        sensitive: false,
        doc: "The controller quorum as `id@host:port,...` (internal listeners), the same on every broker; empty runs a one-broker cluster that is its own quorum.",
    },
    internal_listener: String = ConfigDef {
        name: "internal.listener",
        default: "",
        kind: ConfigKind::Text,
        sensitive: false,
        doc: "Address the internal listener (Raft and replica traffic) binds, and where a broker that is not a voter (an observer of the quorum) is reached; empty binds this broker's own entry of controller.quorum.voters.",
    },
    metadata_log_dir: String = ConfigDef {
        name: "metadata.log.dir",
        default: "",
        kind: ConfigKind::Text,
        sensitive: false,
        doc: "Directory that holds the metadata quorum's log (`metadata-quorum/` below it), as Kafka's metadata.log.dir; empty keeps it in the data dir. A failed write to the metadata log stops the broker; on a filesystem of its own, a full data disk only takes partition logs offline.",
    },
    cluster_secret: String = ConfigDef {
        name: "cluster.secret",
        default: "",
        kind: ConfigKind::Text,
        sensitive: true,
        doc: "The secret every broker of a cluster shares (at least 16 characters; `gregor secret` makes one). Peers on the internal listener prove they hold it with a challenge-response handshake before any Raft or replication traffic; it never crosses the wire. Required when controller.quorum.voters is set; gregor dev generates one.",
    },
    internal_socket_request_max_bytes: i64 = long(
        "internal.socket.request.max.bytes",
        "104857600",
        1024,
        "Largest frame the internal listener (Raft messages, replica fetches) accepts, and the largest replica fetch response a follower reads; a larger one closes the connection.",
    ),
    connections_max_idle_ms: i64 = long(
        "connections.max.idle.ms",
        "600000",
        1,
        "A connection (client or internal) with nothing in flight and nothing read or written for this long is closed.",
    ),
    controller_quorum_election_timeout_ms: i64 = long(
        "controller.quorum.election.timeout.ms",
        "1000",
        10,
        "A voter that hears no leader for between this and twice this starts an election; the leader heartbeats ten times as often.",
    ),
    auto_leader_rebalance_enable: bool = ConfigDef {
        name: "auto.leader.rebalance.enable",
        default: "true",
        kind: ConfigKind::Boolean,
        sensitive: false,
        doc: "Give each partition back to its preferred leader (first replica) once that broker is in the ISR again.",
    },
    controlled_shutdown_enable: bool = ConfigDef {
        name: "controlled.shutdown.enable",
        default: "true",
        kind: ConfigKind::Boolean,
        sensitive: false,
        doc: "On SIGTERM a broker of a cluster first hands its partitions' leadership to other in-sync replicas and leaves the ISRs (bounded by broker.session.timeout.ms), so producers and consumers move on at once instead of after the session timeout.",
    },
    leader_imbalance_check_interval_seconds: i64 = long("leader.imbalance.check.interval.seconds", "300", 1, "How often the active controller looks for partitions away from their preferred leader."),
    unclean_leader_election_enable: bool = ConfigDef {
        name: "unclean.leader.election.enable",
        default: "false",
        kind: ConfigKind::Boolean,
        sensitive: false,
        doc: "When no in-sync replica of a partition is alive, let a live replica outside the ISR lead it: available again, but what only the ISR had is lost. Off: the partition waits for an ISR member.",
    },
    broker_heartbeat_interval_ms: i64 = long("broker.heartbeat.interval.ms", "2000", 1, "How often a broker tells the active controller it is alive."),
    broker_session_timeout_ms: i64 = long("broker.session.timeout.ms", "9000", 1, "A broker not heard from for this long is fenced: its partitions get new leaders from their ISR."),
    replica_lag_time_max_ms: i64 = long("replica.lag.time.max.ms", "30000", 1, "A follower that has not caught up with the leader for this long leaves the ISR."),
    replica_high_watermark_checkpoint_interval_ms: i64 = long(
        "replica.high.watermark.checkpoint.interval.ms",
        "5000",
        1,
        "How often each partition's high watermark is written to replication-offset-checkpoint (and at shutdown), so a restarted broker shows consumers the committed end at once.",
    ),
    replica_fetch_max_bytes: i64 = long("replica.fetch.max.bytes", "1048576", 1, "Bytes a follower asks for per partition in one fetch (a larger first batch still comes whole)."),
    replica_fetch_response_max_bytes: i64 = long("replica.fetch.response.max.bytes", "10485760", 1, "Bytes a follower asks for per fetch response."),
    replica_fetch_wait_max_ms: i64 = long("replica.fetch.wait.max.ms", "500", 0, "How long a follower's fetch waits at the leader for new records."),
    replica_fetch_backoff_ms: i64 = long("replica.fetch.backoff.ms", "1000", 0, "A follower's pause after a failed fetch."),
    num_partitions: i64 = long("num.partitions", "1", 1, "Partitions of an auto-created topic."),
    default_replication_factor: i64 = long(
        "default.replication.factor",
        "3",
        1,
        "Replication factor of a topic created without one (auto-created, or -1), capped at the live brokers.",
    ),
    auto_create_topics_enable: bool = ConfigDef {
        name: "auto.create.topics.enable",
        default: "true",
        kind: ConfigKind::Boolean,
        sensitive: false,
        doc: "Create a topic on first Metadata request that allows it.",
    },
    delete_topic_enable: bool = ConfigDef {
        name: "delete.topic.enable",
        default: "true",
        kind: ConfigKind::Boolean,
        sensitive: false,
        doc: "Whether DeleteTopics may delete topics.",
    },
    log_segment_bytes: i64 = long("log.segment.bytes", "1073741824", 14, "Segment file size before a roll."),
    log_roll_ms: i64 = long("log.roll.ms", "604800000", 1, "Segment age before a roll."),
    log_retention_ms: i64 = long("log.retention.ms", "604800000", -1, "Age after which a segment is deleted; -1 keeps forever."),
    log_retention_bytes: i64 = long("log.retention.bytes", "-1", -1, "Partition size above which old segments are deleted; -1 unlimited."),
    log_retention_check_interval_ms: i64 = long(
        "log.retention.check.interval.ms",
        "300000",
        1,
        "How often retention and time-based rolls are checked.",
    ),
    log_index_interval_bytes: i64 = long("log.index.interval.bytes", "4096", 0, "Bytes between two offset index entries."),
    log_index_size_max_bytes: i64 = long("log.index.size.max.bytes", "10485760", 4, "Maximum size of an offset or time index."),
    message_max_bytes: i64 = long("message.max.bytes", "1048588", 0, "Largest record batch a topic accepts."),
    log_message_timestamp_type: String = ConfigDef {
        name: "log.message.timestamp.type",
        default: "CreateTime",
        kind: ConfigKind::Choice(&["CreateTime", "LogAppendTime"]),
        sensitive: false,
        doc: "Whether batches keep the producer's timestamp or get the broker's append time.",
    },
    compression_type: String = ConfigDef {
        name: "compression.type",
        default: "producer",
        kind: ConfigKind::Choice(&["producer"]),
        sensitive: false,
        doc: "Batches are stored as the producer compressed them (the only value gregor honours).",
    },
    log_flush_interval_messages: i64 = long(
        "log.flush.interval.messages",
        "9223372036854775807",
        1,
        "Records appended to a partition before an fsync; 1 makes every acknowledged write durable.",
    ),
    log_flush_interval_ms: i64 = long(
        "log.flush.interval.ms",
        "9223372036854775807",
        0,
        "Milliseconds an appended record may wait before an fsync.",
    ),
    log_cleanup_policy: String = ConfigDef {
        name: "log.cleanup.policy",
        default: "delete",
        kind: ConfigKind::List(CLEANUP_POLICIES),
        sensitive: false,
        doc: "Default cleanup.policy of topics: delete (retention), compact (keep the latest record of each key) or both.",
    },
    log_cleaner_enable: bool = ConfigDef {
        name: "log.cleaner.enable",
        default: "true",
        kind: ConfigKind::Boolean,
        sensitive: false,
        doc: "Run the log cleaner, which compacts topics whose cleanup.policy includes compact.",
    },
    log_cleaner_backoff_ms: i64 = long(
        "log.cleaner.backoff.ms",
        "15000",
        0,
        "How long the log cleaner sleeps when there is nothing to clean.",
    ),
    log_cleaner_dedupe_buffer_size: i64 = long(
        "log.cleaner.dedupe.buffer.size",
        "134217728",
        48,
        "Memory for the cleaner's key to offset map, 24 bytes a key; more keys than fit are cleaned over several runs.",
    ),
    log_cleaner_delete_retention_ms: i64 = long(
        "log.cleaner.delete.retention.ms",
        "86400000",
        0,
        "Default delete.retention.ms: how long a tombstone is kept once the cleaner has seen it.",
    ),
    log_cleaner_min_compaction_lag_ms: i64 = long(
        "log.cleaner.min.compaction.lag.ms",
        "0",
        0,
        "Default min.compaction.lag.ms: records newer than this are not compacted.",
    ),
    log_cleaner_max_compaction_lag_ms: i64 = long(
        "log.cleaner.max.compaction.lag.ms",
        "9223372036854775807",
        1,
        "Default max.compaction.lag.ms: a record older than this is compacted whatever the dirty ratio.",
    ),
    log_cleaner_min_cleanable_ratio: f64 = ConfigDef {
        name: "log.cleaner.min.cleanable.ratio",
        default: "0.5",
        kind: ConfigKind::Double { min: 0.0, max: 1.0 },
        sensitive: false,
        doc: "Default min.cleanable.dirty.ratio: compact a log only when its uncompacted share is above this.",
    },
    socket_request_max_bytes: i64 = long(
        "socket.request.max.bytes",
        "104857600",
        1,
        "Largest request frame accepted; a larger frame closes the connection.",
    ),
    max_connections: i64 = long("max.connections", "10000", 1, "Open client connections accepted at once."),
    queued_max_requests: i64 = long(
        "queued.max.requests",
        "5",
        1,
        "Requests of one connection in flight at once (read but not yet answered); further ones wait in the socket. Per connection in gregor (Kafka: per broker, 500, but it handles one request per connection at a time). Few suffice for pipelining; many let acks=all producers park large requests while the ISR catches up.",
    ),
    request_entries_max: i64 = long(
        "request.entries.max",
        "100000",
        1,
        "Entries a request's lists may hold in all (topics, partitions, groups, members, keys; nested lists counted in full); a request with more closes its connection before any handler runs.",
    ),
    fetch_max_bytes: i64 = long(
        "fetch.max.bytes",
        "57671680",
        1024,
        "Upper bound on the bytes of records in one Fetch response.",
    ),
    fetch_max_wait_ms_max: i64 = long(
        "fetch.max.wait.ms.max",
        "60000",
        0,
        "Upper bound on how long a Fetch long-poll may wait, whatever the client asks.",
    ),
    topics_max: i64 = long(
        "topics.max",
        "100000",
        1,
        "Topics the broker will hold; creation beyond it is refused.",
    ),
    partitions_per_topic_max: i64 = long(
        "partitions.per.topic.max",
        "10000",
        1,
        "Partitions one topic may have.",
    ),
    group_min_session_timeout_ms: i64 = long(
        "group.min.session.timeout.ms",
        "6000",
        1,
        "Smallest session timeout a group member may ask for.",
    ),
    group_max_session_timeout_ms: i64 = long(
        "group.max.session.timeout.ms",
        "1800000",
        1,
        "Largest session timeout a group member may ask for.",
    ),
    group_initial_rebalance_delay_ms: i64 = long(
        "group.initial.rebalance.delay.ms",
        "3000",
        0,
        "How long the first rebalance of an empty group waits for more members.",
    ),
    group_max_size: i64 = long("group.max.size", "2147483647", 1, "Members one consumer group may have."),
    offsets_topic_num_partitions: i64 = long(
        "offsets.topic.num.partitions",
        "50",
        1,
        "Partitions of __consumer_offsets (fixed once the topic exists).",
    ),
    offsets_topic_replication_factor: i64 = long(
        "offsets.topic.replication.factor",
        "3",
        1,
        "Replication factor of __consumer_offsets (capped at the brokers registered when it is created).",
    ),
    offsets_topic_segment_bytes: i64 = long(
        "offsets.topic.segment.bytes",
        "104857600",
        14,
        "Segment size of __consumer_offsets.",
    ),
    transaction_state_log_num_partitions: i64 = long(
        "transaction.state.log.num.partitions",
        "50",
        1,
        "Partitions of __transaction_state (fixed once the topic exists).",
    ),
    transaction_state_log_replication_factor: i64 = long(
        "transaction.state.log.replication.factor",
        "3",
        1,
        "Replication factor of __transaction_state (capped at the brokers registered when it is created).",
    ),
    transaction_state_log_min_isr: i64 = long(
        "transaction.state.log.min.isr",
        "2",
        1,
        "min.insync.replicas of __transaction_state (capped at its replication factor).",
    ),
    transaction_state_log_segment_bytes: i64 = long(
        "transaction.state.log.segment.bytes",
        "104857600",
        14,
        "Segment size of __transaction_state.",
    ),
    transaction_max_timeout_ms: i64 = long(
        "transaction.max.timeout.ms",
        "900000",
        1,
        "Longest transaction.timeout.ms a producer may ask for (INVALID_TRANSACTION_TIMEOUT beyond).",
    ),
    transaction_partition_verification_enable: bool = ConfigDef {
        name: "transaction.partition.verification.enable",
        default: "true",
        kind: ConfigKind::Boolean,
        sensitive: false,
        doc: "Before a transactional producer's first write to a partition in a transaction, its leader asks the transaction coordinator whether the partition was added to it (KIP-890); a write that was not is refused with INVALID_TXN_STATE.",
    },
    transactional_id_expiration_ms: i64 = long(
        "transactional.id.expiration.ms",
        "604800000",
        1,
        "How long a transactional id is kept after its last transaction completed.",
    ),
    transaction_abort_timed_out_transaction_cleanup_interval_ms: i64 = long(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "10000",
        1,
        "How often transactions open past their timeout are aborted.",
    ),
    transaction_remove_expired_transaction_cleanup_interval_ms: i64 = long(
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        "3600000",
        1,
        "How often expired transactional ids are removed.",
    ),
    offsets_retention_minutes: i64 = long(
        "offsets.retention.minutes",
        "10080",
        1,
        "How long the committed offsets of an empty group are kept.",
    ),
    producer_id_expiration_ms: i64 = long(
        "producer.id.expiration.ms",
        "86400000",
        1,
        "How long a partition keeps an idempotent producer's state after its last batch's timestamp.",
    ),
    producer_id_expiration_check_interval_ms: i64 = long(
        "producer.id.expiration.check.interval.ms",
        "600000",
        1,
        "How often expired producer state is removed.",
    ),
    producer_state_max_producers: i64 = long(
        "producer.state.max.producers",
        "10000",
        1,
        "Idempotent producers whose state each partition keeps (320–420 bytes each, measured); beyond it the least recently written is forgotten.",
    ),
    producer_id_block_size: i64 = long(
        "producer.id.block.size",
        "1000",
        1,
        "Producer ids a broker takes from the controller at a time.",
    ),
    offsets_retention_check_interval_ms: i64 = long(
        "offsets.retention.check.interval.ms",
        "600000",
        1,
        "How often expired offsets are removed.",
    ),
    offsets_commit_timeout_ms: i64 = long(
        "offsets.commit.timeout.ms",
        "5000",
        1,
        "How long an offset commit or group write may wait to become durable before it fails.",
    ),
    request_timeout_ms: i64 = long(
        "request.timeout.ms",
        "30000",
        1,
        "How long a broker waits for another broker's answer, and for a transaction marker it writes to be replicated.",
    ),
    offset_metadata_max_bytes: i64 = long(
        "offset.metadata.max.bytes",
        "4096",
        0,
        "Longest metadata string an offset commit may carry.",
    ),
}

/// Topic-level settings: (topic name, the broker setting that gives its default).
pub const TOPIC_CONFIGS: &[(&str, &str)] = &[
    ("cleanup.policy", "log.cleanup.policy"),
    ("compression.type", "compression.type"),
    ("segment.bytes", "log.segment.bytes"),
    ("segment.ms", "log.roll.ms"),
    ("retention.ms", "log.retention.ms"),
    ("retention.bytes", "log.retention.bytes"),
    ("index.interval.bytes", "log.index.interval.bytes"),
    ("segment.index.bytes", "log.index.size.max.bytes"),
    ("max.message.bytes", "message.max.bytes"),
    ("message.timestamp.type", "log.message.timestamp.type"),
    ("flush.messages", "log.flush.interval.messages"),
    ("flush.ms", "log.flush.interval.ms"),
    ("delete.retention.ms", "log.cleaner.delete.retention.ms"),
    ("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms"),
    ("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms"),
    (
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
    ),
    ("min.insync.replicas", ""),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
    ),
];

/// A configuration problem, reported before the broker starts or to CreateTopics.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The name is not a setting gregor knows.
    #[error("unknown config '{0}'")]
    Unknown(String),
    /// The value does not parse or is out of range.
    #[error("invalid value '{value}' for config '{name}': {reason}")]
    Invalid {
        /// The setting.
        name: String,
        /// The rejected value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The config file could not be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Parses `controller.quorum.voters`: `id@host:port` entries separated by commas (Kafka's
/// format), each id once, each id a valid node id.
pub fn parse_voters(text: &str) -> Result<BTreeMap<i32, String>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        name: "controller.quorum.voters".to_string(),
        value: text.to_string(),
        reason,
    };
    let mut voters = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('@')
            .ok_or_else(|| invalid(format!("'{entry}' is not id@host:port")))?;
        let id: i32 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| invalid(format!("'{id}' is not a node id")))?;
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(invalid(format!("'{addr}' is not host:port")));
        }
        if voters.insert(id, addr.trim().to_string()).is_some() {
            return Err(invalid(format!("node {id} is listed twice")));
        }
    }
    Ok(voters)
}

/// Validates `value` against the kind of setting `name` (broker or topic level).
pub fn validate(name: &str, value: &str) -> Result<(), ConfigError> {
    let kind = if let Some(def) = broker_def(name) {
        def.kind
    } else {
        match name {
            "min.insync.replicas" => ConfigKind::Long { min: 1 },
            _ => match topic_default_key(name).and_then(broker_def) {
                Some(def) => def.kind,
                None => return Err(ConfigError::Unknown(name.to_string())),
            },
        }
    };
    let invalid = |reason: String| ConfigError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason,
    };
    if name == "controller.quorum.voters" {
        return parse_voters(value).map(|_| ());
    }
    if name == "cluster.secret"
        && !value.is_empty()
        && value.chars().count() < CLUSTER_SECRET_CHARS_MIN
    {
        return Err(invalid(format!(
            "must be empty or at least {CLUSTER_SECRET_CHARS_MIN} characters"
        )));
    }
    match kind {
        ConfigKind::Long { min } => match value.trim().parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            Ok(_) => Err(invalid(format!("must be at least {min}"))),
            Err(e) => Err(invalid(e.to_string())),
        },
        ConfigKind::Double { min, max } => match value.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v >= min && v <= max => Ok(()),
            Ok(_) => Err(invalid(format!("must be between {min} and {max}"))),
            Err(e) => Err(invalid(e.to_string())),
        },
        ConfigKind::Boolean => match value.trim() {
            "true" | "false" => Ok(()),
            _ => Err(invalid("must be true or false".to_string())),
        },
        ConfigKind::List(choices) => {
            if value.split(',').all(|item| choices.contains(&item.trim())) {
                Ok(())
            } else {
                Err(invalid(format!(
                    "must be a comma-separated list of {choices:?}"
                )))
            }
        }
        ConfigKind::Choice(choices) => {
            if choices.contains(&value.trim()) {
                Ok(())
            } else {
                Err(invalid(format!("must be one of {choices:?}")))
            }
        }
        ConfigKind::Text => Ok(()),
    }
}

fn broker_def(name: &str) -> Option<&'static ConfigDef> {
    BROKER_CONFIGS.iter().find(|d| d.name == name)
}

/// The broker setting that supplies a topic setting's default (None for
/// `min.insync.replicas` and unknown names).
pub fn topic_default_key(topic_key: &str) -> Option<&'static str> {
    TOPIC_CONFIGS
        .iter()
        .find(|(t, _)| *t == topic_key)
        .map(|(_, b)| *b)
        .filter(|b| !b.is_empty())
}

/// The effective broker configuration.
#[derive(Clone)]
pub struct BrokerConfig {
    /// Address the client listener binds.
    pub listen: SocketAddr,
    /// host:port given to clients in Metadata.
    pub advertised_host: String,
    /// Port given to clients in Metadata.
    pub advertised_port: u16,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Brokers sharing this process (`gregor dev`): they share its open-file limit.
    pub brokers_in_process: u32,
    /// The settings given (file, environment, flags) as given: what DescribeConfigs reports
    /// as static broker config.
    values: BTreeMap<&'static str, String>,
    /// Every setting's effective value, typed.
    settings: Settings,
}

/// Shows the typed settings, which hide the sensitive ones, not the values as given.
impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("listen", &self.listen)
            .field("advertised_host", &self.advertised_host)
            .field("advertised_port", &self.advertised_port)
            .field("data_dir", &self.data_dir)
            .field("brokers_in_process", &self.brokers_in_process)
            .field("settings", &self.settings)
            .finish()
    }
}

impl BrokerConfig {
    /// A config with every default, listening on `listen`, storing under `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        BrokerConfig {
            listen,
            advertised_host: listen.ip().to_string(),
            advertised_port: listen.port(),
            data_dir,
            brokers_in_process: 1,
            values: BTreeMap::new(),
            settings: Settings::defaults(),
        }
    }

    /// Sets one broker setting (validated).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let def = broker_def(name).ok_or_else(|| ConfigError::Unknown(name.to_string()))?;
        validate(name, value)?;
        if !self.settings.assign(def.name, value) {
            // Validation accepts only what parses; this keeps a bad table entry an error.
            return Err(ConfigError::Invalid {
                name: def.name.to_string(),
                value: value.to_string(),
                reason: "does not parse as its type".to_string(),
            });
        }
        self.values.insert(def.name, value.trim().to_string());
        Ok(())
    }

    /// Builder form of [`BrokerConfig::set`].
    pub fn with(mut self, name: &str, value: &str) -> Result<Self, ConfigError> {
        self.set(name, value)?;
        Ok(self)
    }

    /// Applies a TOML file: keys are Kafka names, dotted (`log.segment.bytes = 1024`, which TOML
    /// reads as nested tables and is flattened back) or quoted.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let file_error = |reason: String| ConfigError::File {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| file_error(e.to_string()))?;
        let mut flat = Vec::new();
        flatten_toml("", &toml::Value::Table(table), &mut flat);
        for (key, value) in flat {
            self.set(&key, &value)?;
        }
        Ok(())
    }

    /// Applies every `GREGOR_<KEY>` environment variable that names a broker setting
    /// (`GREGOR_LOG_SEGMENT_BYTES` sets `log.segment.bytes`).
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        for def in BROKER_CONFIGS {
            let var = format!("GREGOR_{}", def.name.replace('.', "_").to_uppercase());
            if let Ok(value) = std::env::var(&var) {
                self.set(def.name, &value)?;
            }
        }
        Ok(())
    }

    /// The effective value of a broker setting and where it came from.
    pub fn value(&self, name: &str) -> Option<(String, ConfigSource)> {
        let def = broker_def(name)?;
        Some(match self.values.get(def.name) {
            Some(v) => (v.clone(), ConfigSource::StaticBroker),
            None => (def.default.to_string(), ConfigSource::Default),
        })
    }

    /// Every setting's effective value, typed.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// `node.id`.
    pub fn node_id(&self) -> i32 {
        i32::try_from(self.settings.node_id).unwrap_or(i32::MAX)
    }
    /// `cluster.id`.
    pub fn cluster_id(&self) -> String {
        self.settings.cluster_id.clone()
    }
    /// `controller.quorum.voters` parsed: node id -> internal `host:port`. Empty when unset.
    pub fn quorum_voters(&self) -> Result<BTreeMap<i32, String>, ConfigError> {
        parse_voters(&self.settings.controller_quorum_voters)
    }
    /// `cluster.secret`, or `None` when unset.
    pub fn cluster_secret(&self) -> Option<crate::server::peer_auth::ClusterSecret> {
        Some(&self.settings.cluster_secret)
            .filter(|v| !v.is_empty())
            .map(|v| crate::server::peer_auth::ClusterSecret::new(v))
    }
    /// `internal.socket.request.max.bytes`.
    pub fn internal_frame_max_bytes(&self) -> usize {
        clamp_usize(self.settings.internal_socket_request_max_bytes)
    }
    /// `connections.max.idle.ms`.
    pub fn connections_max_idle(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            u64::try_from(self.settings.connections_max_idle_ms).unwrap_or(600_000),
        )
    }
    /// Where the metadata quorum keeps its log: `<metadata.log.dir>/metadata-quorum`, or
    /// `<data dir>/metadata-quorum` when `metadata.log.dir` is unset.
    pub fn metadata_quorum_dir(&self) -> std::path::PathBuf {
        let dir = &self.settings.metadata_log_dir;
        let base = if dir.is_empty() {
            self.data_dir.clone()
        } else {
            std::path::PathBuf::from(dir)
        };
        base.join(crate::cluster::quorum::QUORUM_DIR)
    }
    /// `internal.listener`, or `None` when unset.
    pub fn internal_listener(&self) -> Option<String> {
        Some(self.settings.internal_listener.clone()).filter(|v| !v.is_empty())
    }
    /// `controller.quorum.election.timeout.ms`.
    pub fn quorum_election_timeout_ms(&self) -> u64 {
        u64::try_from(self.settings.controller_quorum_election_timeout_ms).unwrap_or(1000)
    }
    /// `auto.leader.rebalance.enable`.
    pub fn auto_leader_rebalance(&self) -> bool {
        self.settings.auto_leader_rebalance_enable
    }
    /// `controlled.shutdown.enable`.
    pub fn controlled_shutdown(&self) -> bool {
        self.settings.controlled_shutdown_enable
    }
    /// Whether a topic with these overrides allows unclean leader election
    /// (`unclean.leader.election.enable`, the topic's or the broker's).
    pub fn unclean_leader_election(&self, overrides: &BTreeMap<String, String>) -> bool {
        self.topic_value(overrides, "unclean.leader.election.enable")
            .is_some_and(|(v, _)| v == "true")
    }
    /// `leader.imbalance.check.interval.seconds`.
    pub fn leader_imbalance_check_interval_s(&self) -> u64 {
        u64::try_from(self.settings.leader_imbalance_check_interval_seconds).unwrap_or(300)
    }
    /// `broker.heartbeat.interval.ms`.
    pub fn broker_heartbeat_interval_ms(&self) -> u64 {
        u64::try_from(self.settings.broker_heartbeat_interval_ms).unwrap_or(2000)
    }
    /// `broker.session.timeout.ms`.
    pub fn broker_session_timeout_ms(&self) -> u64 {
        u64::try_from(self.settings.broker_session_timeout_ms).unwrap_or(9000)
    }
    /// `replica.lag.time.max.ms`.
    pub fn replica_lag_time_max_ms(&self) -> i64 {
        self.settings.replica_lag_time_max_ms
    }
    /// Checks the settings that only make sense together, before a broker starts: a broker
    /// of several (`controller.quorum.voters` set) needs `cluster.secret`.
    pub fn check(&self) -> Result<(), ConfigError> {
        let voters = self.quorum_voters()?;
        if !voters.is_empty() && self.cluster_secret().is_none() {
            return Err(ConfigError::Invalid {
                name: "cluster.secret".to_string(),
                value: String::new(),
                reason: "controller.quorum.voters is set, so this broker is one of a cluster: \
                         every broker of it needs the same cluster.secret (at least 16 \
                         characters; `gregor secret` prints a fresh one)"
                    .to_string(),
            });
        }
        Ok(())
    }

    /// What a replica fetcher needs: `replica.fetch.*`, the secret it proves to leaders and
    /// the largest response it reads.
    pub fn fetcher_settings(&self) -> crate::replica::fetcher::FetcherSettings {
        crate::replica::fetcher::FetcherSettings {
            secret: self
                .cluster_secret()
                .unwrap_or_else(|| crate::server::peer_auth::ClusterSecret::new("")),
            frame_max_bytes: self.internal_frame_max_bytes(),
            node_id: self.node_id(),
            partition_max_bytes: clamp_i32(self.settings.replica_fetch_max_bytes),
            response_max_bytes: clamp_i32(self.settings.replica_fetch_response_max_bytes),
            max_wait_ms: clamp_i32(self.settings.replica_fetch_wait_max_ms),
            backoff: std::time::Duration::from_millis(
                u64::try_from(self.settings.replica_fetch_backoff_ms).unwrap_or(1000),
            ),
        }
    }
    /// `num.partitions`.
    pub fn num_partitions(&self) -> i32 {
        clamp_i32(self.settings.num_partitions)
    }
    /// `default.replication.factor`.
    pub fn default_replication_factor(&self) -> i16 {
        i16::try_from(self.settings.default_replication_factor).unwrap_or(i16::MAX)
    }
    /// `auto.create.topics.enable`.
    pub fn auto_create_topics(&self) -> bool {
        self.settings.auto_create_topics_enable
    }
    /// `delete.topic.enable`.
    pub fn delete_topic_enable(&self) -> bool {
        self.settings.delete_topic_enable
    }
    /// `socket.request.max.bytes`.
    pub fn socket_request_max_bytes(&self) -> usize {
        clamp_usize(self.settings.socket_request_max_bytes)
    }
    /// `max.connections`.
    pub fn max_connections(&self) -> usize {
        clamp_usize(self.settings.max_connections)
    }
    /// `queued.max.requests` (per connection in gregor).
    pub fn queued_max_requests(&self) -> usize {
        clamp_usize(self.settings.queued_max_requests).max(1)
    }
    /// `request.entries.max`.
    pub fn request_entries_max(&self) -> usize {
        clamp_usize(self.settings.request_entries_max)
    }
    /// `fetch.max.bytes`.
    pub fn fetch_max_bytes(&self) -> usize {
        clamp_usize(self.settings.fetch_max_bytes)
    }
    /// `fetch.max.wait.ms.max`.
    pub fn fetch_max_wait_ms_max(&self) -> u64 {
        u64::try_from(self.settings.fetch_max_wait_ms_max).unwrap_or(0)
    }
    /// `replica.high.watermark.checkpoint.interval.ms`.
    pub fn high_watermark_checkpoint_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            u64::try_from(self.settings.replica_high_watermark_checkpoint_interval_ms)
                .unwrap_or(5000),
        )
    }
    /// `log.retention.check.interval.ms`.
    pub fn retention_check_interval_ms(&self) -> u64 {
        u64::try_from(self.settings.log_retention_check_interval_ms).unwrap_or(300_000)
    }
    /// `log.cleaner.enable`: whether the broker runs the log cleaner at all.
    pub fn log_cleaner_enable(&self) -> bool {
        self.settings.log_cleaner_enable
    }
    /// `log.cleaner.backoff.ms`: how often the broker runs the log cleaner when it is idle.
    pub fn log_cleaner_backoff_ms(&self) -> u64 {
        u64::try_from(self.settings.log_cleaner_backoff_ms).unwrap_or(15_000)
    }
    /// `log.cleaner.dedupe.buffer.size`: the cleaner's offset map budget in bytes.
    pub fn log_cleaner_dedupe_buffer_size(&self) -> u64 {
        u64::try_from(self.settings.log_cleaner_dedupe_buffer_size).unwrap_or(134_217_728)
    }
    /// `topics.max`.
    pub fn topics_max(&self) -> usize {
        clamp_usize(self.settings.topics_max)
    }
    /// `producer.id.expiration.ms`.
    pub fn producer_id_expiration_ms(&self) -> i64 {
        self.settings.producer_id_expiration_ms
    }
    /// `producer.id.expiration.check.interval.ms`.
    pub fn producer_id_expiration_check_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            u64::try_from(self.settings.producer_id_expiration_check_interval_ms)
                .unwrap_or(600_000),
        )
    }
    /// `producer.id.block.size`.
    pub fn producer_id_block_size(&self) -> i32 {
        clamp_i32(self.settings.producer_id_block_size).max(1)
    }
    /// `partitions.per.topic.max`.
    pub fn partitions_per_topic_max(&self) -> i32 {
        clamp_i32(self.settings.partitions_per_topic_max)
    }

    /// The group coordinator's settings.
    pub fn group_config(&self) -> crate::group::GroupConfig {
        crate::group::GroupConfig {
            group_min_session_timeout_ms: clamp_i32(self.settings.group_min_session_timeout_ms),
            group_max_session_timeout_ms: clamp_i32(self.settings.group_max_session_timeout_ms),
            group_initial_rebalance_delay_ms: clamp_i32(
                self.settings.group_initial_rebalance_delay_ms,
            ),
            group_max_size: clamp_usize(self.settings.group_max_size),
            offsets_topic_num_partitions: self.offsets_topic_num_partitions(),
            offsets_retention_minutes: self.settings.offsets_retention_minutes,
            offsets_retention_check_interval_ms: self.settings.offsets_retention_check_interval_ms,
            offset_metadata_max_bytes: clamp_usize(self.settings.offset_metadata_max_bytes),
            ..crate::group::GroupConfig::default()
        }
    }
    /// `offsets.topic.num.partitions`.
    pub fn offsets_topic_num_partitions(&self) -> i32 {
        clamp_i32(self.settings.offsets_topic_num_partitions).max(1)
    }
    /// `offsets.topic.replication.factor`.
    pub fn offsets_topic_replication_factor(&self) -> i16 {
        i16::try_from(self.settings.offsets_topic_replication_factor).unwrap_or(i16::MAX)
    }
    /// `offsets.topic.segment.bytes`.
    pub fn offsets_topic_segment_bytes(&self) -> i64 {
        self.settings.offsets_topic_segment_bytes
    }
    /// `transaction.state.log.num.partitions`.
    pub fn transaction_topic_num_partitions(&self) -> i32 {
        clamp_i32(self.settings.transaction_state_log_num_partitions).max(1)
    }
    /// `transaction.state.log.replication.factor`.
    pub fn transaction_topic_replication_factor(&self) -> i16 {
        i16::try_from(self.settings.transaction_state_log_replication_factor).unwrap_or(i16::MAX)
    }
    /// `transaction.state.log.min.isr`.
    pub fn transaction_topic_min_isr(&self) -> i64 {
        self.settings.transaction_state_log_min_isr
    }
    /// `transaction.state.log.segment.bytes`.
    pub fn transaction_topic_segment_bytes(&self) -> i64 {
        self.settings.transaction_state_log_segment_bytes
    }
    /// The transaction coordinator's settings.
    pub fn txn_config(&self) -> crate::txn::TxnConfig {
        crate::txn::TxnConfig {
            num_partitions: self.transaction_topic_num_partitions(),
            max_timeout_ms: clamp_i32(self.settings.transaction_max_timeout_ms),
            id_expiration_ms: self.settings.transactional_id_expiration_ms,
            abort_check_interval_ms: self
                .settings
                .transaction_abort_timed_out_transaction_cleanup_interval_ms,
            expire_check_interval_ms: self
                .settings
                .transaction_remove_expired_transaction_cleanup_interval_ms,
        }
    }
    /// `transaction.partition.verification.enable`.
    pub fn transaction_partition_verification(&self) -> bool {
        self.settings.transaction_partition_verification_enable
    }
    /// `request.timeout.ms`.
    pub fn request_timeout_ms(&self) -> u64 {
        u64::try_from(self.settings.request_timeout_ms).unwrap_or(30_000)
    }
    /// `offsets.commit.timeout.ms`.
    pub fn offsets_commit_timeout_ms(&self) -> u64 {
        u64::try_from(self.settings.offsets_commit_timeout_ms).unwrap_or(5000)
    }

    /// The effective value of a topic setting given the topic's overrides.
    pub fn topic_value(
        &self,
        overrides: &BTreeMap<String, String>,
        name: &str,
    ) -> Option<(String, ConfigSource)> {
        if let Some(v) = overrides.get(name) {
            return Some((v.clone(), ConfigSource::TopicOverride));
        }
        match name {
            "min.insync.replicas" => Some(("1".to_string(), ConfigSource::Default)),
            _ => self.value(topic_default_key(name)?),
        }
    }

    /// The log settings of a topic: broker defaults overlaid with the topic's overrides.
    pub fn log_config(&self, overrides: &BTreeMap<String, String>) -> LogConfig {
        let long = |name: &str| -> i64 {
            self.topic_value(overrides, name)
                .and_then(|(v, _)| v.parse().ok())
                .unwrap_or(i64::MAX)
        };
        let timestamp_type = match self.topic_value(overrides, "message.timestamp.type") {
            Some((v, _)) if v == "LogAppendTime" => TimestampType::LogAppendTime,
            _ => TimestampType::CreateTime,
        };
        let cleanup_policy = self
            .topic_value(overrides, "cleanup.policy")
            .and_then(|(v, _)| CleanupPolicy::parse(&v))
            .unwrap_or(CleanupPolicy::DELETE);
        let min_cleanable_dirty_ratio = self
            .topic_value(overrides, "min.cleanable.dirty.ratio")
            .and_then(|(v, _)| v.trim().parse::<f64>().ok())
            .unwrap_or(0.5);
        LogConfig {
            segment_bytes: u64::try_from(long("segment.bytes")).unwrap_or(u64::MAX),
            segment_ms: long("segment.ms"),
            retention_bytes: long("retention.bytes"),
            retention_ms: long("retention.ms"),
            index_interval_bytes: u32::try_from(long("index.interval.bytes")).unwrap_or(u32::MAX),
            segment_index_bytes: u32::try_from(long("segment.index.bytes")).unwrap_or(u32::MAX),
            max_message_bytes: u32::try_from(long("max.message.bytes")).unwrap_or(u32::MAX),
            message_timestamp_type: timestamp_type,
            flush_messages: u64::try_from(long("flush.messages")).unwrap_or(u64::MAX),
            flush_ms: long("flush.ms"),
            cleanup_policy,
            delete_retention_ms: long("delete.retention.ms"),
            min_compaction_lag_ms: long("min.compaction.lag.ms"),
            max_compaction_lag_ms: long("max.compaction.lag.ms"),
            min_cleanable_dirty_ratio,
            producer_state_max_producers: clamp_usize(self.settings.producer_state_max_producers),
        }
    }

    /// Checks a topic's settings together, as Kafka's `LogConfig.validateValues` does (each
    /// one was validated alone by [`validate`]): `min.compaction.lag.ms` may not exceed
    /// `max.compaction.lag.ms`, counting broker defaults.
    pub fn validate_topic_configs(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(), ConfigError> {
        let log = self.log_config(overrides);
        if log.min_compaction_lag_ms > log.max_compaction_lag_ms {
            return Err(ConfigError::Invalid {
                name: "min.compaction.lag.ms".to_string(),
                value: log.min_compaction_lag_ms.to_string(),
                reason: format!(
                    "conflicts with max.compaction.lag.ms {}: the minimum compaction lag may not \
                     exceed the maximum",
                    log.max_compaction_lag_ms
                ),
            });
        }
        Ok(())
    }
}

fn clamp_i32(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX })
}

fn clamp_usize(v: i64) -> usize {
    usize::try_from(v).unwrap_or(if v < 0 { 0 } else { usize::MAX })
}

fn flatten_toml(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_toml(&key, v, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_log_lives_in_the_data_dir_unless_metadata_log_dir_is_set() {
        let mut config = BrokerConfig::new("127.0.0.1:9092".parse().unwrap(), "/d".into());
        assert_eq!(
            config.metadata_quorum_dir(),
            std::path::PathBuf::from("/d/metadata-quorum")
        );
        config.set("metadata.log.dir", "/meta").unwrap();
        assert_eq!(
            config.metadata_quorum_dir(),
            std::path::PathBuf::from("/meta/metadata-quorum")
        );
    }

    fn config() -> BrokerConfig {
        BrokerConfig::new("127.0.0.1:9092".parse().unwrap(), PathBuf::from("/tmp/x"))
    }

    #[test]
    fn every_setting_is_a_typed_field_named_after_it_that_follows_set() {
        assert_eq!(SETTING_FIELDS.len(), BROKER_CONFIGS.len());
        for (field, def) in SETTING_FIELDS.iter().zip(BROKER_CONFIGS) {
            assert_eq!(*field, def.name.replace('.', "_"));
            assert!(
                Settings::defaults().assign(def.name, def.default),
                "{}",
                def.name
            );
        }
        let mut config = config();
        assert_eq!(config.settings().fetch_max_bytes, 57_671_680);
        config.set("fetch.max.bytes", " 2048 ").unwrap();
        assert_eq!(config.settings().fetch_max_bytes, 2048);
        assert_eq!(config.fetch_max_bytes(), 2048);
        config.set("auto.create.topics.enable", "false").unwrap();
        assert!(!config.auto_create_topics());
        config
            .set("log.cleaner.min.cleanable.ratio", "0.25")
            .unwrap();
        assert_eq!(config.settings().log_cleaner_min_cleanable_ratio, 0.25);
        config.set("internal.listener", "127.0.0.1:9192").unwrap();
        assert_eq!(
            config.internal_listener().as_deref(),
            Some("127.0.0.1:9192")
        );
        // A refused value leaves the field as it was.
        assert!(config.set("fetch.max.bytes", "lots").is_err());
        assert!(config.set("fetch.max.bytes", "10").is_err());
        assert_eq!(config.settings().fetch_max_bytes, 2048);
        assert!(!Settings::defaults().assign("no.such.setting", "1"));
        // Debug output never shows the cluster secret.
        config
            .set("cluster.secret", "a-secret-of-some-length")
            .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("a-secret-of-some-length"), "{shown}");
        assert!(shown.contains("cluster_secret: \"[hidden]\""), "{shown}");
    }

    #[test]
    fn every_default_is_valid() {
        for def in BROKER_CONFIGS {
            validate(def.name, def.default).unwrap();
        }
    }

    #[test]
    fn toml_dotted_and_quoted_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gregor.toml");
        std::fs::write(
            &path,
            "log.segment.bytes = 2048\n\"num.partitions\" = 3\nauto.create.topics.enable = false\n",
        )
        .unwrap();
        let mut c = config();
        c.apply_file(&path).unwrap();
        assert_eq!(c.num_partitions(), 3);
        assert!(!c.auto_create_topics());
        assert_eq!(
            c.value("log.segment.bytes"),
            Some(("2048".to_string(), ConfigSource::StaticBroker))
        );
        assert_eq!(c.log_config(&BTreeMap::new()).segment_bytes, 2048);
    }

    #[test]
    fn unknown_and_invalid_are_rejected() {
        let mut c = config();
        assert!(matches!(
            c.set("no.such", "1"),
            Err(ConfigError::Unknown(_))
        ));
        assert!(matches!(
            c.set("num.partitions", "0"),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(validate("message.timestamp.type", "Whenever").is_err());
        for policy in ["delete", "compact", "compact,delete", "delete, compact"] {
            validate("cleanup.policy", policy).unwrap();
        }
        for policy in ["", "compact,", "shred", "compact;delete"] {
            assert!(validate("cleanup.policy", policy).is_err(), "{policy:?}");
        }
        validate("min.cleanable.dirty.ratio", "0.01").unwrap();
        for ratio in ["-0.1", "1.5", "NaN", "inf", "half"] {
            assert!(
                validate("min.cleanable.dirty.ratio", ratio).is_err(),
                "{ratio}"
            );
        }
        assert!(validate("max.compaction.lag.ms", "0").is_err());
        assert!(validate("delete.retention.ms", "-1").is_err());
        validate("retention.ms", "-1").unwrap();
    }

    #[test]
    fn compaction_settings_reach_the_log_config() {
        let c = config()
            .with("log.cleaner.delete.retention.ms", "1000")
            .unwrap();
        let defaults = c.log_config(&BTreeMap::new());
        assert_eq!(defaults.cleanup_policy, CleanupPolicy::DELETE);
        assert_eq!(defaults.delete_retention_ms, 1000);
        assert_eq!(defaults.min_compaction_lag_ms, 0);
        assert_eq!(defaults.max_compaction_lag_ms, i64::MAX);
        assert_eq!(defaults.min_cleanable_dirty_ratio, 0.5);
        assert!(c.log_cleaner_enable());
        assert_eq!(c.log_cleaner_backoff_ms(), 15_000);
        assert_eq!(c.log_cleaner_dedupe_buffer_size(), 134_217_728);

        let mut overrides = BTreeMap::new();
        overrides.insert("cleanup.policy".to_string(), "compact, delete".to_string());
        overrides.insert("min.cleanable.dirty.ratio".to_string(), "0.1".to_string());
        overrides.insert("min.compaction.lag.ms".to_string(), "5".to_string());
        overrides.insert("max.compaction.lag.ms".to_string(), "50".to_string());
        let log = c.log_config(&overrides);
        assert_eq!(
            log.cleanup_policy,
            CleanupPolicy {
                delete: true,
                compact: true
            }
        );
        assert_eq!(log.min_cleanable_dirty_ratio, 0.1);
        assert_eq!(
            (log.min_compaction_lag_ms, log.max_compaction_lag_ms),
            (5, 50)
        );
        c.validate_topic_configs(&overrides).unwrap();
        overrides.insert("max.compaction.lag.ms".to_string(), "4".to_string());
        assert!(c.validate_topic_configs(&overrides).is_err());

        let compact = config().with("log.cleanup.policy", "compact").unwrap();
        assert_eq!(
            compact.log_config(&BTreeMap::new()).cleanup_policy,
            CleanupPolicy::COMPACT
        );
        assert_eq!(
            compact.topic_value(&BTreeMap::new(), "cleanup.policy"),
            Some(("compact".to_string(), ConfigSource::StaticBroker))
        );
    }

    #[test]
    fn topic_overrides_win() {
        let c = config();
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.ms".to_string(), "1000".to_string());
        overrides.insert(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        );
        let log = c.log_config(&overrides);
        assert_eq!(log.retention_ms, 1000);
        assert_eq!(log.message_timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(
            c.topic_value(&overrides, "segment.bytes"),
            Some(("1073741824".to_string(), ConfigSource::Default))
        );
    }
}
