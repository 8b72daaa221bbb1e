//! The network layer: accept connections and run one task per connection.
//!
//! - [`listener`]: the accept loop, capped at `max.connections` by a semaphore (a connection
//!   over the cap is closed at once), with backoff on accept errors (out of file descriptors)
//!   instead of a busy loop.
//! - [`connection`]: length-prefixed framing, request pipelining, responses strictly in request
//!   order, the per-connection in-flight cap (`queued.max.requests`), the idle timeout
//!   (`connections.max.idle.ms`); each connection's requests carry its [`Principal`].
//! - [`open_files`]: the open-file limit, raised at start, and the partitions it leaves room
//!   for (registered with the controller, which places no more).
//! - [`peer_auth`]: the challenge-response handshake that proves a peer on the internal
//!   listener holds `cluster.secret`.
//! - [`peer_client`]: the other side: a broker's connection to another broker's internal
//!   listener, and one request/response exchange on it.
//!
//! Shutdown is a `watch` flag: the listener stops accepting and every connection stops reading,
//! finishes what it has in flight, and drops; [`serve`] returns when all have.

pub mod connection;
pub mod listener;
pub mod open_files;
pub mod peer_auth;
pub mod peer_client;

pub use listener::serve;

/// Who is on the other end of a connection, as its listener established it (Kafka's
/// principal). Every request carries it; authorization will key off it, and today it decides
/// who may fetch as a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// A client of the client listener (Kafka's `User:ANONYMOUS` on a PLAINTEXT listener).
    Anonymous,
    /// A broker of this cluster: a connection to the internal listener that proved it holds
    /// `cluster.secret`.
    Broker,
}
