//! How voters talk: Raft's RPCs (and forwarded proposals) over a [`Transport`].
//!
//! - [`TcpTransport`] is the real one: each broker's internal listener accepts connections
//!   that open with the 4-byte magic [`MAGIC`], prove they hold `cluster.secret`
//!   ([`peer_auth`](crate::server::peer_auth), both directions), and then carry request/reply
//!   frames `[u32 length][JSON]` of at most `internal.socket.request.max.bytes`, one exchange
//!   at a time per connection ([`serve_connection`] is the server side; it closes a connection
//!   idle for `connections.max.idle.ms`). A broker keeps one connection per peer for Raft
//!   traffic and one for forwarded proposals, so a slow commit never holds up heartbeats.
//! - [`MemoryNetwork`] connects voters in one process for tests and can cut links in either
//!   direction, isolate a node, or take it down.
//!
//! openraft sees both through [`NetworkFactory`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::types::{MetadataCommand, TypeConfig};
use super::Committed;
use crate::server::peer_auth::{self, ClusterSecret};

/// The first bytes of a quorum connection on the internal listener.
pub const MAGIC: &[u8; 4] = b"GRFT";

/// What quorum connections are held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest frame either side reads (`internal.socket.request.max.bytes`).
    pub frame_max_bytes: usize,
    /// A served connection with no request for this long is closed
    /// (`connections.max.idle.ms`).
    pub idle: Duration,
}

/// A request between voters.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpc {
    /// Raft AppendEntries (also the heartbeat).
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft RequestVote.
    Vote(VoteRequest<u64>),
    /// One chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A metadata command for the leader to propose (Kafka forwards to the controller).
    Propose(MetadataCommand),
    /// Asks the leader for a log index that covers every committed command (a read barrier).
    ReadIndex,
    /// A broker's liveness heartbeat to the active controller.
    Heartbeat {
        /// The broker.
        node_id: i32,
    },
    /// A broker that is not a voter asks to receive the metadata log (as a Raft learner).
    AddObserver {
        /// The broker.
        node_id: i32,
        /// Its internal listener.
        addr: String,
    },
}

impl RaftRpc {
    fn is_propose(&self) -> bool {
        matches!(
            self,
            RaftRpc::Propose(_)
                | RaftRpc::ReadIndex
                | RaftRpc::Heartbeat { .. }
                | RaftRpc::AddObserver { .. }
        )
    }
}

/// Why a forwarded proposal was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// The receiver is not the leader; the hint names the leader it knows of.
    #[error("not the controller (leader hint {leader:?})")]
    NotLeader {
        /// Leader's Kafka node id, if known.
        leader: Option<i32>,
    },
    /// The quorum could not commit it (shutting down, storage failure).
    #[error("metadata quorum: {0}")]
    Failed(String),
}

/// The answer to a [`RaftRpc`].
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    /// To AppendEntries.
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    /// To Vote.
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    /// To InstallSnapshot.
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// To Propose.
    Propose(Result<Committed, ProposeError>),
    /// To ReadIndex.
    ReadIndex(Result<u64, ProposeError>),
    /// To Heartbeat.
    Heartbeat(Result<(), ProposeError>),
    /// To AddObserver.
    AddObserver(Result<(), ProposeError>),
}

/// A failure to exchange a message (not an error the remote returned).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The peer could not be reached (connection refused, link cut, node down).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The exchange broke or timed out midway.
    #[error("network: {0}")]
    Network(String),
}

/// Serves one voter's incoming RPCs.
pub type RpcHandler = Arc<dyn Fn(RaftRpc) -> BoxFuture<'static, RaftReply> + Send + Sync>;

/// Carries an RPC from one voter to another and brings back the reply.
pub trait Transport: Send + Sync + 'static {
    /// Sends `rpc` from node `from` to node `to` (at `addr`), giving up after `timeout`.
    fn send(
        &self,
        from: u64,
        to: u64,
        addr: &str,
        rpc: RaftRpc,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RaftReply, TransportError>>;
}

/// openraft's network factory over a [`Transport`].
pub struct NetworkFactory {
    from: u64,
    transport: Arc<dyn Transport>,
}

impl NetworkFactory {
    /// The factory for node `from`.
    pub fn new(from: u64, transport: Arc<dyn Transport>) -> NetworkFactory {
        NetworkFactory { from, transport }
    }
}

/// openraft's connection to one peer.
pub struct Connection {
    from: u64,
    to: u64,
    addr: String,
    transport: Arc<dyn Transport>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Connection {
        Connection {
            from: self.from,
            to: target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl Connection {
    async fn call(&self, rpc: RaftRpc, option: &RPCOption) -> Result<RaftReply, TransportError> {
        self.transport
            .send(self.from, self.to, &self.addr, rpc, option.hard_ttl())
            .await
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
        RPCError::Network(NetworkError::new(&TransportError::Network(
            "reply does not match the request".into(),
        )))
    }

    // The error type is openraft's, fixed by the traits this serves.
    #[allow(clippy::result_large_err)]
    fn remote<T, E: std::error::Error>(
        &self,
        reply: Result<T, RaftError<u64, E>>,
    ) -> RpcResult<T, E> {
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }
}

fn transport_error<E: std::error::Error>(
    e: TransportError,
) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
    match e {
        TransportError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
        TransportError::Network(_) => RPCError::Network(NetworkError::new(&e)),
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, openraft::error::Infallible> {
        match self
            .call(RaftRpc::AppendEntries(rpc), &option)
            .await
            .map_err(transport_error)?
        {
            RaftReply::AppendEntries(reply) => self.remote(reply),
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        match self
            .call(RaftRpc::InstallSnapshot(rpc), &option)
            .await
            .map_err(transport_error)?
        {
            RaftReply::InstallSnapshot(reply) => self.remote(reply),
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, openraft::error::Infallible> {
        match self
            .call(RaftRpc::Vote(rpc), &option)
            .await
            .map_err(transport_error)?
        {
            RaftReply::Vote(reply) => self.remote(reply),
            _ => Err(self.unexpected()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TCP

async fn write_frame(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(bytes).await?;
    stream.flush().await
}

async fn read_frame(stream: &mut TcpStream, frame_max_bytes: usize) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u32().await? as usize;
    if len > frame_max_bytes {
        return Err(std::io::Error::other(format!(
            "quorum frame of {len} bytes is over the {frame_max_bytes}-byte limit \
             (internal.socket.request.max.bytes)"
        )));
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

type Slot = Arc<tokio::sync::Mutex<Option<TcpStream>>>;

/// Raft over TCP to the peers' internal listeners.
pub struct TcpTransport {
    /// (peer, is-proposal) -> connection.
    slots: Mutex<HashMap<(u64, bool), Slot>>,
    secret: ClusterSecret,
    frame_max_bytes: usize,
}

impl TcpTransport {
    /// A transport with no connections yet, proving `secret` to every peer it connects to and
    /// reading replies of at most `frame_max_bytes`.
    pub fn new(secret: ClusterSecret, frame_max_bytes: usize) -> TcpTransport {
        TcpTransport {
            slots: Mutex::new(HashMap::new()),
            secret,
            frame_max_bytes,
        }
    }

    fn slot(&self, to: u64, propose: bool) -> Slot {
        match self.slots.lock() {
            Ok(mut slots) => slots.entry((to, propose)).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }
}

async fn exchange(
    slot: &mut Option<TcpStream>,
    addr: &str,
    request: &[u8],
    secret: &ClusterSecret,
    frame_max_bytes: usize,
) -> Result<Vec<u8>, TransportError> {
    let stream = match slot {
        Some(stream) => stream,
        None => {
            let mut stream = TcpStream::connect(addr)
                .await
                .map_err(|e| TransportError::Unreachable(format!("{addr}: {e}")))?;
            let _ = stream.set_nodelay(true);
            stream
                .write_all(MAGIC)
                .await
                .map_err(|e| TransportError::Unreachable(format!("{addr}: {e}")))?;
            peer_auth::connect(&mut stream, secret, MAGIC)
                .await
                .map_err(|e| TransportError::Unreachable(format!("{addr}: {e}")))?;
            slot.insert(stream)
        }
    };
    write_frame(stream, request)
        .await
        .map_err(|e| TransportError::Network(format!("{addr}: {e}")))?;
    read_frame(stream, frame_max_bytes)
        .await
        .map_err(|e| TransportError::Network(format!("{addr}: {e}")))
}

impl Transport for TcpTransport {
    fn send(
        &self,
        _from: u64,
        to: u64,
        addr: &str,
        rpc: RaftRpc,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RaftReply, TransportError>> {
        let slot = self.slot(to, rpc.is_propose());
        let addr = addr.to_string();
        let secret = self.secret.clone();
        let frame_max_bytes = self.frame_max_bytes;
        Box::pin(async move {
            let request =
                serde_json::to_vec(&rpc).map_err(|e| TransportError::Network(e.to_string()))?;
            let mut guard = slot.lock().await;
            let result = match tokio::time::timeout(
                timeout,
                exchange(&mut guard, &addr, &request, &secret, frame_max_bytes),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(TransportError::Network(format!(
                    "{addr}: timed out after {timeout:?}"
                ))),
            };
            match result {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                    *guard = None;
                    TransportError::Network(format!("{addr}: bad reply: {e}"))
                }),
                Err(e) => {
                    // The stream may hold half an exchange: start over on a new connection.
                    *guard = None;
                    Err(e)
                }
            }
        })
    }
}

/// Serves one incoming quorum connection (after the caller has read [`MAGIC`] and the peer
/// has proven it holds the cluster secret) until the peer closes it, sends something
/// malformed or too large, or sends nothing for `limits.idle`.
pub async fn serve_connection(mut stream: TcpStream, handler: RpcHandler, limits: Limits) {
    let _ = stream.set_nodelay(true);
    loop {
        let read =
            tokio::time::timeout(limits.idle, read_frame(&mut stream, limits.frame_max_bytes))
                .await;
        let bytes = match read {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!(error = %e, "quorum connection closed");
                }
                return;
            }
            Err(_) => {
                tracing::debug!(idle = ?limits.idle, "closing an idle quorum connection");
                return;
            }
        };
        let rpc: RaftRpc = match serde_json::from_slice(&bytes) {
            Ok(rpc) => rpc,
            Err(e) => {
                tracing::warn!(error = %e, "malformed quorum frame; closing the connection");
                return;
            }
        };
        let reply = handler(rpc).await;
        let bytes = match serde_json::to_vec(&reply) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a quorum reply; closing the connection");
                return;
            }
        };
        if write_frame(&mut stream, &bytes).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// In memory

#[derive(Default)]
struct MemoryState {
    handlers: HashMap<u64, RpcHandler>,
    /// Directed links that drop everything.
    cut: HashSet<(u64, u64)>,
    /// Directed links that drop only replication (AppendEntries, snapshots).
    held: HashSet<(u64, u64)>,
}

/// Voters in one process, with links that tests can cut.
#[derive(Default, Clone)]
pub struct MemoryNetwork {
    state: Arc<Mutex<MemoryState>>,
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> MemoryNetwork {
        MemoryNetwork::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut MemoryState) -> T) -> Option<T> {
        self.state.lock().ok().map(|mut s| f(&mut s))
    }

    /// Connects node `id` (replacing an earlier handler of the same id).
    pub fn attach(&self, id: u64, handler: RpcHandler) {
        self.with(|s| s.handlers.insert(id, handler));
    }

    /// Takes node `id` off the network (as if its process died).
    pub fn detach(&self, id: u64) {
        self.with(|s| s.handlers.remove(&id));
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: u64, b: u64) {
        self.with(|s| {
            s.cut.insert((a, b));
            s.cut.insert((b, a));
        });
    }

    /// Cuts only messages from `from` to `to`.
    pub fn cut_one_way(&self, from: u64, to: u64) {
        self.with(|s| s.cut.insert((from, to)));
    }

    /// Cuts `id` off from every node in `others`.
    pub fn isolate(&self, id: u64, others: &[u64]) {
        for other in others {
            self.cut(id, *other);
        }
    }

    /// Drops replication (AppendEntries and snapshot chunks) from `from` to `to`, and nothing
    /// else: `to` falls behind while it can still ask `from` things.
    pub fn hold_appends(&self, from: u64, to: u64) {
        self.with(|s| s.held.insert((from, to)));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.with(|s| {
            s.cut.clear();
            s.held.clear();
        });
    }
}

impl Transport for MemoryNetwork {
    fn send(
        &self,
        from: u64,
        to: u64,
        _addr: &str,
        rpc: RaftRpc,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RaftReply, TransportError>> {
        let replication = matches!(rpc, RaftRpc::AppendEntries(_) | RaftRpc::InstallSnapshot(_));
        let target = self
            .with(|s| {
                if s.cut.contains(&(from, to)) || (replication && s.held.contains(&(from, to))) {
                    None
                } else {
                    s.handlers.get(&to).cloned()
                }
            })
            .flatten();
        let state = self.state.clone();
        Box::pin(async move {
            let Some(handler) = target else {
                return Err(TransportError::Unreachable(format!(
                    "node {to} from {from}"
                )));
            };
            let reply = tokio::time::timeout(timeout, handler(rpc))
                .await
                .map_err(|_| TransportError::Network(format!("node {to}: timed out")))?;
            // A link cut while the request was in flight loses the reply: the caller learns
            // of it as over a real network, by timing out.
            let cut = state
                .lock()
                .map(|s| s.cut.contains(&(to, from)))
                .unwrap_or(true);
            if cut {
                tokio::time::sleep(timeout).await;
                return Err(TransportError::Network(format!(
                    "reply from {to} to {from} lost"
                )));
            }
            Ok(reply)
        })
    }
}
