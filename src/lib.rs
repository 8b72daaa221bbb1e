//! gregor: a Kafka wire-protocol-compatible message broker.
//!
//! Existing Kafka clients (librdkafka and everything built on it, kafka-python, the Java
//! client, ...) talk to gregor unchanged. The modules, with the arrows running one way
//! (api → replica / cluster → log):
//!
//! - [`config`]: every setting and limit under Kafka's names; one table feeds parsing, the
//!   typed accessors and DescribeConfigs.
//! - [`server`]: the TCP listener (connection cap, accept backoff) and one task per connection
//!   (length framing, pipelining with responses in request order, the in-flight cap).
//! - [`protocol`]: decoding requests and encoding responses with `kafka-protocol`, and the
//!   guard that keeps hostile frames from aborting the process.
//! - [`api`]: one file per Kafka API and the one dispatch `match`; the version table that
//!   feeds both dispatch and ApiVersions; maps layer errors to Kafka error codes; the
//!   produce path's KIP-890 question to a transaction's coordinator (`api::txn_verification`).
//! - [`replica`]: partitions this broker hosts (leader today; followers with the cluster), the
//!   replica manager that owns them, group commit of fsyncs, and long-poll wake-ups.
//! - [`cluster`]: the metadata image (brokers, topics, partitions) and the controller that
//!   changes it through the metadata quorum (openraft).
//! - [`group`]: the consumer group coordinator and committed offsets; I/O-free, time injected.
//! - [`txn`]: the transaction coordinator (transactional ids, their producers' epochs and
//!   transactions' states); I/O-free, time injected, like [`group`].
//! - [`coordinator`]: the coordinators' runtime, one generic [`coordinator::runtime::Runtime`]
//!   for both: the clock, timers, the `__consumer_offsets` and `__transaction_state` appends
//!   and replay, requests waiting for a response; and the transaction marker channel.
//! - [`log`]: Kafka's segment log on local disk; knows nothing of replication or the wire.
//! - [`broker`]: wires the pieces into one running broker with a clean shutdown.
//! - [`probe`]: `gregor health`, the ApiVersions probe a `FROM scratch` image's health check
//!   runs.

#![deny(unsafe_code)]

pub mod api;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod group;
pub mod log;
pub mod probe;
pub mod protocol;
pub mod replica;
pub mod server;
#[cfg(test)]
mod testing;
pub mod txn;
