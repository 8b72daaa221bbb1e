//! Cluster metadata: which brokers exist, which topics, and where each partition lives.
//!
//! - [`metadata`]: the immutable metadata image that request handlers read (a snapshot behind
//!   an `Arc`, swapped whole on every change, so a handler never sees half a change).
//! - [`controller`]: the one writer of the image: validates each change and proposes it to the
//!   controller quorum; every broker applies the same committed log.
//! - [`quorum`]: the Raft-replicated metadata log (openraft) and its state machine.
//! - [`producer_ids`]: the blocks of producer ids this broker hands to idempotent producers.
//! - [`decisions`]: the active controller's periodic rules (fencing silent brokers, preferred
//!   leader election) as pure functions of the image and the clock.

pub mod controller;
pub mod decisions;
pub mod metadata;
pub mod producer_ids;
pub mod quorum;

pub use controller::{Controller, ControllerError, CreateTopicSpec, IsrChangeError};
pub use metadata::{BrokerInfo, BrokerRegistration, MetadataImage, PartitionInfo, TopicInfo};
