//! The wire: Kafka request framing, decoding and response encoding around `kafka-protocol`.
//!
//! - [`codec`]: turns one request frame (the bytes after the 4-byte length) into a typed
//!   request, and a typed response into a length-prefixed frame. Knows header versions and
//!   Kafka's ApiVersions downgrade rule; knows nothing of what a request means.
//! - [`frame`]: encoded responses as chunk lists, so fetched record batches are written to
//!   the socket by reference or straight from their segment file (`sendfile`), never copied.
//! - [`guard`]: keeps a hostile frame from aborting the process while `kafka-protocol` decodes
//!   it (the crate sizes vectors from element counts read off the wire).
//!
//! Which API versions are handled is not decided here: the API layer's version table
//! (`crate::api::SUPPORTED`) is passed in, so dispatch and ApiVersions read one list.

pub mod codec;
pub mod frame;
pub mod guard;

pub use codec::{
    decode_request, encode_response, encode_response_with_files, DecodeError, Decoded,
};
pub use frame::{Chunk, FileRefs, Frame};
