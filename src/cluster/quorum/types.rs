//! The records of the metadata log and what applying one returns.
//!
//! A [`MetadataCommand`] is what the controller proposes; every voter applies the committed
//! sequence of them, in order, to its [`MetadataImage`](crate::cluster::MetadataImage) with
//! [`apply_command`](super::state_machine::apply_command). Applying is deterministic and checks
//! its own preconditions (a topic that already exists, a stale partition epoch), so two
//! proposals that raced each other resolve the same way on every broker: the first wins, the
//! second comes back [`Applied::Rejected`] and changes nothing.

use std::io::Cursor;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cluster::metadata::{BrokerInfo, BrokerRegistration, TopicInfo};

openraft::declare_raft_types!(
    /// openraft's type bundle for the metadata quorum: node ids are Kafka node ids (>= 0, as
    /// `u64`), a node's address is its internal listener.
    pub TypeConfig:
        D = MetadataCommand,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// One record of the metadata log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// A broker (re)starts: its client-facing address and its registration. Replaces any
    /// earlier registration of the node id and unfences it.
    RegisterBroker {
        /// What clients see.
        broker: BrokerInfo,
        /// Incarnation and internal address.
        registration: BrokerRegistration,
    },
    /// The broker missed its heartbeats: it leads nothing and leaves every ISR it is not the
    /// last member of; partitions it led get a new leader from the rest of their ISR.
    FenceBroker {
        /// Node id.
        node_id: i32,
    },
    /// The broker is back: leaderless partitions whose ISR holds it get it as leader.
    UnfenceBroker {
        /// Node id.
        node_id: i32,
    },
    /// A new topic, placement decided by the proposer.
    CreateTopic {
        /// The topic as it will exist.
        topic: TopicInfo,
    },
    /// Removes a topic (the id guards against deleting a newer topic of the same name).
    DeleteTopic {
        /// Name.
        name: String,
        /// Topic id.
        id: Uuid,
    },
    /// A leader or ISR change of one partition (Kafka's AlterPartition / PartitionChangeRecord).
    ChangePartition {
        /// Topic id.
        topic_id: Uuid,
        /// Partition index.
        partition: i32,
        /// The partition epoch the proposer saw; a change based on an older view is refused.
        expected_partition_epoch: i32,
        /// New leader (-1 for none); a change of leader bumps the leader epoch.
        leader: Option<i32>,
        /// New ISR.
        isr: Option<Vec<i32>>,
    },
    /// A broker's logs of these partitions went offline after a storage error (Kafka's
    /// offline log directories): its replicas leave every ISR they are not the last member of,
    /// partitions it led move to another live ISR member (or to none), and they lead nothing
    /// and join no ISR until the broker registers again.
    ReplicasOffline {
        /// The broker.
        node_id: i32,
        /// (topic id, partition index) of each offline replica.
        partitions: Vec<(Uuid, i32)>,
    },
    /// Hands a block of producer ids to a broker (KIP-730).
    AllocateProducerIds {
        /// The broker asking.
        node_id: i32,
        /// Block size.
        count: i32,
    },
    /// A broker is stopping (Kafka's controlled shutdown): as [`MetadataCommand::FenceBroker`],
    /// and it stays fenced and out of every ISR until it registers again, so clients and
    /// followers move to other leaders before it closes its connections.
    ControlledShutdown {
        /// The broker.
        node_id: i32,
        /// Its registration's incarnation: a late request of an earlier process changes
        /// nothing.
        incarnation: Uuid,
    },
}

/// The outcome of applying one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// Applied as asked.
    Done,
    /// Applied: the producer-id block `[first, first + count)`.
    ProducerIds {
        /// First id of the block.
        first: i64,
        /// Block size.
        count: i32,
    },
    /// Not applied; the image is unchanged.
    Rejected(Rejection),
}

/// Why a committed command was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// TOPIC_ALREADY_EXISTS.
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    /// INVALID_TOPIC_EXCEPTION (a name collision).
    #[error("{0}")]
    InvalidTopic(String),
    /// UNKNOWN_TOPIC_OR_PARTITION / UNKNOWN_TOPIC_ID.
    #[error("unknown topic or partition: {0}")]
    UnknownTopic(String),
    /// The node id is not registered.
    #[error("unknown broker {0}")]
    UnknownBroker(i32),
    /// The change was based on an older partition epoch (INVALID_UPDATE_VERSION).
    #[error("{0}")]
    StaleChange(String),
    /// Anything else malformed (INVALID_REQUEST).
    #[error("{0}")]
    Invalid(String),
}

/// Kafka node ids are non-negative `i32`s; openraft's are `u64`.
pub fn raft_id(node_id: i32) -> Option<u64> {
    u64::try_from(node_id).ok()
}

/// The Kafka node id of an openraft node id.
pub fn kafka_id(raft_id: u64) -> i32 {
    i32::try_from(raft_id).unwrap_or(-1)
}
