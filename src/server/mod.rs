//! The network layer: accept connections and run one task per connection.
//!
//! - [`listener`]: the accept loop, capped at `max.connections` by a semaphore (a connection
//!   over the cap is closed at once), with backoff on accept errors (out of file descriptors)
//!   instead of a busy loop.
//! - [`connection`]: length-prefixed framing, request pipelining, responses strictly in request
//!   order, the per-connection in-flight cap (`queued.max.requests`).
//!
//! Shutdown is a `watch` flag: the listener stops accepting and every connection stops reading,
//! finishes what it has in flight, and drops; [`serve`] returns when all have.

pub mod connection;
pub mod listener;

pub use listener::serve;
