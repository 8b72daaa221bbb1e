//! One client connection: framing, pipelining, in-order responses.
//!
//! The read side checks each frame's 4-byte size against `socket.request.max.bytes` before
//! anything else, then reserves room for the whole frame in one step (an allocation of address
//! space: the pages are touched only as the client's bytes arrive, so resident memory follows
//! what the client actually sent, not what a size field claims; growing in small steps instead
//! would copy the partial frame at every step), and splits each complete frame off the buffer
//! without copying (`Bytes` slices, so a Produce's records stay a view of the frame all the way
//! to the log).
//!
//! Each request runs phase one of its handler at once, in arrival order; a handler that must
//! wait (long-poll fetch, fsync) hands back a future, which runs as its own task. Responses go
//! to the write side through a bounded queue of at most `queued.max.requests` entries, in
//! request order; when the queue is full the read side stops reading, which pushes back on
//! the client through TCP.
//!
//! A request whose lists hold more than `request.entries.max` entries in all closes the
//! connection before any handler runs (see [`api::request_size`]).
//!
//! A connection with nothing in flight on which no byte moved for `connections.max.idle.ms` is
//! closed (a parked long poll counts as in flight), as Kafka closes idle connections.
//!
//! A malformed frame, an unknown API key or an unsupported version (other than ApiVersions,
//! which gets Kafka's v0 downgrade answer) closes this connection after the responses already
//! queued are written, with a log line; it never affects other connections.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseKind};
use std::io::IoSlice;

use std::os::fd::AsRawFd;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::api::{self, api_versions, Reply, RequestContext};
use crate::broker::Broker;
use crate::protocol::codec::{self, Decoded};
use crate::protocol::{Chunk, FileRefs, Frame};
use crate::server::Principal;

/// Read-buffer growth step while no frame size is known yet.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// A response on its way to the socket, in request order.
enum Outgoing {
    /// Encoded and ready.
    Frame(Frame),
    /// Still being computed by its own task.
    Pending(JoinHandle<Option<Frame>>),
}

/// Most iovecs handed to one `writev`.
const IOVECS_MAX: usize = 64;

/// What a connection has been doing, for the idle timeout: requests read but not yet
/// answered, and when bytes last moved either way.
#[derive(Debug)]
struct Activity {
    started: tokio::time::Instant,
    /// Milliseconds after `started` of the last read or write.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::AcqRel);
    }

    fn last(&self) -> tokio::time::Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Acquire))
    }
}

/// Serves one connection until the client closes it, it misbehaves, it stays idle for
/// `connections.max.idle.ms`, or the broker stops. Every request carries `principal`.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
    principal: Principal,
) {
    tracing::debug!(%peer, ?principal, "connection opened");
    let (read_half, write_half) = stream.into_split();
    let (queue, queued) = mpsc::channel(broker.config.queued_max_requests());
    let activity = Arc::new(Activity::new());
    let writer = tokio::spawn(write_responses(write_half, queued, peer, activity.clone()));
    let connection = Connection {
        peer,
        broker: &broker,
        principal,
        activity: &activity,
    };
    let outcome = read_requests(read_half, &connection, &queue, &mut shutdown).await;
    match outcome {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        Err(reason) => tracing::info!(%peer, %reason, "closing connection"),
    }
    drop(queue);
    let _ = writer.await;
}

/// What the read side of one connection knows.
struct Connection<'a> {
    peer: SocketAddr,
    broker: &'a Arc<Broker>,
    principal: Principal,
    activity: &'a Activity,
}

async fn read_requests(
    mut socket: OwnedReadHalf,
    connection: &Connection<'_>,
    queue: &mpsc::Sender<Outgoing>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let broker = connection.broker;
    let activity = connection.activity;
    let max_frame_bytes = match connection.principal {
        Principal::Anonymous => broker.config.socket_request_max_bytes(),
        Principal::Broker => broker.config.internal_frame_max_bytes(),
    };
    let idle = broker.config.connections_max_idle();
    // When the idle timer next looks (never before the connection's last activity + idle).
    let mut idle_check = activity.last() + idle;
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        // Split off every complete frame already buffered.
        while buf.len() >= 4 {
            let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let size =
                usize::try_from(size).map_err(|_| format!("negative request size {size}"))?;
            if size > max_frame_bytes {
                return Err(format!(
                    "request of {size} bytes exceeds socket.request.max.bytes ({max_frame_bytes})"
                ));
            }
            if buf.len() < 4 + size {
                // Room for the rest of the frame at once: growing in steps would copy what
                // has arrived on every step. Only address space until the bytes arrive.
                buf.reserve(4 + size - buf.len());
                break;
            }
            buf.advance(4);
            let frame = buf.split_to(size).freeze();
            let outgoing = handle_frame(frame, connection).await?;
            if let Some(outgoing) = outgoing {
                activity.in_flight.fetch_add(1, Ordering::AcqRel);
                if queue.send(outgoing).await.is_err() {
                    return Err("response writer stopped".to_string());
                }
            }
        }
        if buf.capacity() == buf.len() {
            buf.reserve(READ_CHUNK_BYTES);
        }
        let read = tokio::select! {
            read = socket.read_buf(&mut buf) => read,
            _ = shutdown.changed() => return Ok(()),
            _ = tokio::time::sleep_until(idle_check.max(activity.last() + idle)) => {
                // Idle only with nothing in flight (a long poll is activity) and nothing moved
                // for the whole period; otherwise look again one period from now.
                let now = tokio::time::Instant::now();
                let quiet = activity.last() + idle <= now;
                if quiet && activity.in_flight.load(Ordering::Acquire) == 0 {
                    tracing::debug!(peer = %connection.peer, ?idle, "closing an idle connection (connections.max.idle.ms)");
                    return Ok(());
                }
                idle_check = now + idle;
                continue;
            }
        };
        match read {
            Ok(0) if buf.is_empty() => return Ok(()),
            Ok(0) => {
                return Err(format!(
                    "client closed mid-frame ({} bytes buffered)",
                    buf.len()
                ))
            }
            Ok(_) => activity.touch(),
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}

/// Decodes a frame and runs phase one of its handler.
async fn handle_frame(
    frame: Bytes,
    connection: &Connection<'_>,
) -> Result<Option<Outgoing>, String> {
    let peer = connection.peer;
    let broker = connection.broker;
    let decoded =
        codec::decode_request(frame, api::supported_versions).map_err(|e| e.to_string())?;
    let (header, api_key, version, body) = match decoded {
        Decoded::Request {
            header,
            api_key,
            version,
            body,
        } => (header, api_key, version, body),
        Decoded::ApiVersionsUnsupported {
            correlation_id,
            version,
        } => {
            tracing::debug!(%peer, version, "ApiVersions at an unsupported version: answering v0");
            let body = ResponseKind::ApiVersions(api_versions::unsupported_version_response());
            let frame = codec::encode_response(correlation_id, ApiKey::ApiVersions, 0, &body)
                .map_err(|e| e.to_string())?;
            return Ok(Some(Outgoing::Frame(frame)));
        }
    };
    let correlation_id = header.correlation_id;
    tracing::trace!(%peer, ?api_key, version, correlation_id, "request");
    let entries = api::request_size::entries(&body);
    let entries_max = broker.config.request_entries_max();
    if entries > entries_max {
        return Err(format!(
            "{api_key:?} request with {entries} list entries exceeds request.entries.max \
             ({entries_max})"
        ));
    }
    let ctx = RequestContext {
        broker: broker.clone(),
        header,
        version,
        peer,
        principal: connection.principal,
    };
    let encode = move |body: ResponseKind, files: &FileRefs| -> Option<Frame> {
        match codec::encode_response_with_files(correlation_id, api_key, version, &body, files) {
            Ok(frame) => Some(frame),
            Err(e) => {
                tracing::error!(%peer, error = %e, "response encoding failed");
                None
            }
        }
    };
    let ready = |frame: Option<Frame>| match frame {
        Some(frame) => Ok(Some(Outgoing::Frame(frame))),
        None => Err(format!("could not encode the {api_key:?} response")),
    };
    match api::handle(ctx, body).await {
        Reply::Ready(body) => ready(encode(body, &FileRefs::new())),
        Reply::ReadyFiles(body, files) => ready(encode(body, &files)),
        Reply::NoResponse => Ok(None),
        Reply::Unhandled => Err(format!("no handler for {api_key:?} v{version}")),
        Reply::Deferred(pending) => Ok(Some(Outgoing::Pending(tokio::spawn(async move {
            pending
                .await
                .and_then(|body| encode(body, &FileRefs::new()))
        })))),
        Reply::DeferredFiles(pending) => Ok(Some(Outgoing::Pending(tokio::spawn(async move {
            pending.await.and_then(|(body, files)| encode(body, &files))
        })))),
    }
}

/// Writes responses in request order. Ready frames are gathered (up to [`IOVECS_MAX`] chunks)
/// and written with vectored writes, so pipelined responses and referenced record chunks go
/// out in as few system calls as possible and without copying; file chunks go with `sendfile`.
async fn write_responses(
    mut socket: OwnedWriteHalf,
    mut queued: mpsc::Receiver<Outgoing>,
    peer: SocketAddr,
    activity: Arc<Activity>,
) {
    let mut pending: Vec<Chunk> = Vec::new();
    while let Some(outgoing) = queued.recv().await {
        let frame = resolve(outgoing, peer).await;
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        let Some(frame) = frame else {
            break;
        };
        pending.extend(frame);
        // Gather whatever else is already ready, without waiting.
        let mut stop = false;
        while pending.len() < IOVECS_MAX {
            match queued.try_recv() {
                Ok(Outgoing::Frame(frame)) => {
                    activity.in_flight.fetch_sub(1, Ordering::AcqRel);
                    pending.extend(frame);
                }
                Ok(pending_task) => {
                    // Not ready yet: write what we have, then wait for it in order.
                    if let Err(e) = write_all_vectored(&mut socket, &mut pending).await {
                        tracing::debug!(%peer, error = %e, "write failed");
                        return;
                    }
                    activity.touch();
                    let resolved = resolve(pending_task, peer).await;
                    activity.in_flight.fetch_sub(1, Ordering::AcqRel);
                    match resolved {
                        Some(frame) => pending.extend(frame),
                        None => {
                            stop = true;
                            break;
                        }
                    }
                }
                Err(_) => break,
            }
        }
        if let Err(e) = write_all_vectored(&mut socket, &mut pending).await {
            tracing::debug!(%peer, error = %e, "write failed");
            return;
        }
        activity.touch();
        if stop {
            break;
        }
    }
    let _ = socket.shutdown().await;
}

async fn resolve(outgoing: Outgoing, peer: SocketAddr) -> Option<Frame> {
    match outgoing {
        Outgoing::Frame(frame) => Some(frame),
        Outgoing::Pending(task) => match task.await {
            Ok(Some(frame)) => Some(frame),
            Ok(None) => {
                tracing::warn!(%peer, "a deferred request produced no response; closing");
                None
            }
            Err(e) => {
                tracing::error!(%peer, error = %e, "request task failed; closing");
                None
            }
        },
    }
}

/// Writes every chunk, handling partial writes; empties `chunks`. Runs of memory chunks go
/// with `writev`, file chunks with `sendfile`.
async fn write_all_vectored(
    socket: &mut OwnedWriteHalf,
    chunks: &mut Vec<Chunk>,
) -> std::io::Result<()> {
    let mut start = 0;
    while start < chunks.len() {
        if chunks[start].is_empty() {
            start += 1;
            continue;
        }
        if let Chunk::File(slice) = &mut chunks[start] {
            send_file(socket, slice).await?;
            start += 1;
            continue;
        }
        let run_end = chunks[start..]
            .iter()
            .position(|c| matches!(c, Chunk::File(_)))
            .map_or(chunks.len(), |i| start + i);
        let end = run_end.min(start + IOVECS_MAX);
        let slices: Vec<IoSlice<'_>> = chunks[start..end]
            .iter()
            .filter_map(|c| match c {
                Chunk::Memory(bytes) => Some(IoSlice::new(bytes)),
                Chunk::File(_) => None,
            })
            .collect();
        let mut written = socket.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "socket closed",
            ));
        }
        while written > 0 && start < end {
            let len = chunks[start].len();
            if written >= len {
                written -= len;
                start += 1;
            } else {
                chunks[start].advance(written);
                written = 0;
            }
        }
    }
    chunks.clear();
    Ok(())
}

/// Sends a file chunk with `sendfile`, waiting for the socket to take more as needed.
async fn send_file(
    socket: &mut OwnedWriteHalf,
    slice: &mut crate::log::FileSlice,
) -> std::io::Result<()> {
    let stream: &TcpStream = socket.as_ref();
    let fd = stream.as_raw_fd();
    while !slice.is_empty() {
        stream.writable().await?;
        match stream.try_io(Interest::WRITABLE, || slice.send_to(fd)) {
            Ok(sent) => slice.advance(sent),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
