//! Cluster metadata: which brokers exist, which topics, and where each partition lives.
//!
//! - [`metadata`]: the immutable metadata image that request handlers read (a snapshot behind
//!   an `Arc`, swapped whole on every change, so a handler never sees half a change).
//! - [`controller`]: the one writer of the image. Today it is local to a single broker and
//!   persists the image as a JSON document in the data dir; the cluster issue replaces its
//!   storage with a Raft-replicated metadata log without changing what handlers call.

pub mod controller;
pub mod metadata;
pub mod quorum;

pub use controller::{Controller, ControllerError, CreateTopicSpec};
pub use metadata::{BrokerInfo, BrokerRegistration, MetadataImage, PartitionInfo, TopicInfo};
