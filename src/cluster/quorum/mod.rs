//! The controller quorum: the brokers themselves replicate the cluster metadata log with Raft
//! (openraft 0.9, `storage-v2`), as KRaft's combined mode does.
//!
//! - [`types`]: the log's records ([`MetadataCommand`]) and what applying one returns.
//! - [`state_machine`]: applies committed records to the [`MetadataImage`] and snapshots it.
//! - [`log_store`]: the Raft log, vote and commit point in `<data-dir>/metadata-quorum/`.
//! - [`network`]: Raft RPCs and forwarded proposals over TCP or an in-memory test network.
//!
//! [`Quorum`] ties them together: every voter starts from the same static voter set (Kafka's
//! `controller.quorum.voters`) and initializes the Raft group with it; openraft makes that safe
//! to do on every node at once, and a voter restarting with its data simply rejoins. Brokers
//! beyond the voters are observers (KRaft's broker-only nodes): each asks the leader to add it
//! as a Raft learner, receives and applies the log, proposes through the leader like a voter,
//! and never votes. Any
//! broker can [`propose`](Quorum::propose): a follower forwards the command to the leader (the
//! active controller) and then waits until its own image has applied it, so the proposer reads
//! its own writes.

pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub(crate) use crate::cluster::controller::write_atomically;
use crate::cluster::metadata::MetadataImage;
use log_store::FileLogStore;
use network::{NetworkFactory, ProposeError, RaftReply, RaftRpc, RpcHandler, Transport};
use state_machine::MetadataStateMachine;
pub use types::{kafka_id, raft_id, Applied, MetadataCommand, Rejection};

/// The directory of the metadata log inside the data dir. Partition directories are always
/// `<topic>-<number>`, so no topic (whatever a client names it) can ever map onto this one.
pub const QUORUM_DIR: &str = "metadata-quorum";
/// Where brokers before 2026-12 kept it: Kafka's name, which is also the directory of a
/// topic `__cluster_metadata` partition 0. Moved to [`QUORUM_DIR`] at start.
pub const LEGACY_QUORUM_DIR: &str = "__cluster_metadata-0";

/// Moves a metadata log left in [`LEGACY_QUORUM_DIR`] by an older broker to [`QUORUM_DIR`]
/// (one rename, then an fsync of the data dir), unless the new place already holds one.
pub fn migrate_legacy_dir(data_dir: &std::path::Path) -> std::io::Result<()> {
    let legacy = data_dir.join(LEGACY_QUORUM_DIR);
    let current = data_dir.join(QUORUM_DIR);
    let holds_quorum = ["raft.log", "vote.json", "snapshot.json"]
        .iter()
        .any(|file| legacy.join(file).exists());
    if !holds_quorum || current.exists() {
        return Ok(());
    }
    std::fs::rename(&legacy, &current)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    tracing::info!(from = %legacy.display(), to = %current.display(), "moved the metadata log out of the partition directories");
    Ok(())
}

/// How a voter is set up.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    /// This broker's node id. A node that is not one of the voters is an observer: it asks
    /// the voters to replicate the log to it (a Raft learner) and never votes.
    pub node_id: i32,
    /// Every voter: node id -> internal listener address (`host:port`).
    pub voters: BTreeMap<i32, String>,
    /// This node's internal address (its voter entry, or where an observer is reached).
    pub address: String,
    /// Where the log, vote and snapshot live.
    pub dir: PathBuf,
    /// Stamped on the image; names the Raft cluster.
    pub cluster_id: String,
    /// The leader's heartbeat period.
    pub heartbeat_interval: Duration,
    /// A follower that hears nothing for a random time in `[election_timeout,
    /// 2 * election_timeout)` starts an election.
    pub election_timeout: Duration,
    /// Build a snapshot every this many log entries (and purge the log behind it).
    pub snapshot_every: u64,
    /// How long [`Quorum::propose`] waits for a leader to take a command.
    pub propose_timeout: Duration,
}

impl QuorumConfig {
    /// Defaults for `node_id` among `voters` with data in `dir`.
    pub fn new(
        node_id: i32,
        voters: BTreeMap<i32, String>,
        dir: PathBuf,
        cluster_id: &str,
    ) -> QuorumConfig {
        QuorumConfig {
            node_id,
            address: voters.get(&node_id).cloned().unwrap_or_default(),
            voters,
            dir,
            cluster_id: cluster_id.to_string(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_every: 5000,
            propose_timeout: Duration::from_secs(10),
        }
    }
}

/// A quorum failure, mapped by callers to a Kafka error (NOT_CONTROLLER, REQUEST_TIMED_OUT,
/// KAFKA_STORAGE_ERROR).
#[derive(Debug, Clone, thiserror::Error)]
pub enum QuorumError {
    /// Bad voter set or node id.
    #[error("controller quorum config: {0}")]
    Config(String),
    /// The log or snapshot could not be read or written.
    #[error("metadata storage: {0}")]
    Storage(String),
    /// No leader took the command within the propose timeout.
    #[error("no active controller within {0:?}")]
    NoLeader(Duration),
    /// The quorum could not commit the command.
    #[error("metadata quorum: {0}")]
    Failed(String),
}

/// A command as committed: its outcome and its log index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// What applying it did.
    pub applied: Applied,
    /// Its index in the metadata log.
    pub index: u64,
}

/// One member of the controller quorum: a voter, or an observer (a broker that is not a
/// voter, receiving the log as a Raft learner).
pub struct Quorum {
    node_id: i32,
    raft: Raft<types::TypeConfig>,
    voters: BTreeMap<i32, String>,
    transport: Arc<dyn Transport>,
    images: watch::Receiver<Arc<MetadataImage>>,
    propose_timeout: Duration,
    retry_backoff: Duration,
    heartbeats: std::sync::Mutex<HashMap<i32, tokio::time::Instant>>,
}

impl std::fmt::Debug for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quorum")
            .field("node_id", &self.node_id)
            .field("voters", &self.voters)
            .finish_non_exhaustive()
    }
}

fn storage(e: impl std::fmt::Display) -> QuorumError {
    QuorumError::Storage(e.to_string())
}

impl Quorum {
    /// Opens this voter's log and state machine and starts Raft. Returns once Raft runs (not
    /// once a leader is elected: see [`wait_for_leader`](Quorum::wait_for_leader)). Incoming
    /// RPCs must be routed to [`handler`](Quorum::handler).
    pub async fn start(
        config: QuorumConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<Arc<Quorum>, QuorumError> {
        let id = raft_id(config.node_id).ok_or_else(|| {
            QuorumError::Config(format!("node id {} is negative", config.node_id))
        })?;
        let observer = !config.voters.contains_key(&config.node_id);
        if observer && config.address.is_empty() {
            return Err(QuorumError::Config(format!(
                "node {} is not one of the voters {:?} and has no internal address to receive \
                 the metadata log at",
                config.node_id,
                config.voters.keys().collect::<Vec<_>>()
            )));
        }
        let mut members = BTreeMap::new();
        for (voter, addr) in &config.voters {
            let voter_id = raft_id(*voter)
                .ok_or_else(|| QuorumError::Config(format!("voter id {voter} is negative")))?;
            members.insert(voter_id, BasicNode { addr: addr.clone() });
        }
        let log = FileLogStore::open(&config.dir).map_err(storage)?;
        let state_machine =
            MetadataStateMachine::open(&config.dir, &config.cluster_id).map_err(storage)?;
        let images = state_machine.subscribe();
        let timeout_ms = u64::try_from(config.election_timeout.as_millis()).unwrap_or(u64::MAX / 4);
        let raft_config = openraft::Config {
            cluster_name: config.cluster_id.clone(),
            heartbeat_interval: u64::try_from(config.heartbeat_interval.as_millis()).unwrap_or(100),
            election_timeout_min: timeout_ms,
            election_timeout_max: timeout_ms.saturating_mul(2),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.snapshot_every / 2,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| QuorumError::Config(e.to_string()))?;
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            NetworkFactory::new(id, transport.clone()),
            log,
            state_machine,
        )
        .await
        .map_err(|e| QuorumError::Failed(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| QuorumError::Failed(e.to_string()))?;
        if !initialized && !observer {
            // Every voter does this with the same voter set; Raft's vote makes it safe.
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!(error = %e, "metadata quorum already initialized");
            }
        }
        if initialized && !observer && config.voters.len() == 1 {
            // A lone voter needs nobody's vote: elect at once instead of after a timeout.
            if let Err(e) = raft.trigger().elect().await {
                tracing::debug!(error = %e, "triggering the election of a lone voter");
            }
        }
        tracing::info!(node = config.node_id, voters = ?config.voters, observer, "metadata quorum started");
        spawn_leadership_log(&raft, config.node_id);
        let quorum = Arc::new(Quorum {
            node_id: config.node_id,
            raft,
            voters: config.voters,
            transport,
            images,
            propose_timeout: config.propose_timeout,
            retry_backoff: config.heartbeat_interval.min(Duration::from_millis(50)),
            heartbeats: std::sync::Mutex::new(HashMap::new()),
        });
        if observer {
            tokio::spawn(Arc::clone(&quorum).join_as_observer(config.address.clone()));
        }
        Ok(quorum)
    }

    /// The function that serves this voter's incoming RPCs (holds only a weak reference).
    pub fn handler(self: &Arc<Self>) -> RpcHandler {
        let weak: Weak<Quorum> = Arc::downgrade(self);
        Arc::new(move |rpc| {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(quorum) => quorum.handle(rpc).await,
                    None => stopped_reply(rpc),
                }
            })
        })
    }

    /// Serves one incoming RPC.
    pub async fn handle(&self, rpc: RaftRpc) -> RaftReply {
        match rpc {
            RaftRpc::AppendEntries(r) => {
                RaftReply::AppendEntries(self.raft.append_entries(r).await)
            }
            RaftRpc::Vote(r) => RaftReply::Vote(self.raft.vote(r).await),
            RaftRpc::InstallSnapshot(r) => {
                RaftReply::InstallSnapshot(self.raft.install_snapshot(r).await)
            }
            RaftRpc::Propose(command) => RaftReply::Propose(self.propose_here(command).await),
            RaftRpc::ReadIndex => RaftReply::ReadIndex(self.read_index_here().await),
            RaftRpc::Heartbeat { node_id } => RaftReply::Heartbeat(self.heartbeat_here(node_id)),
            RaftRpc::AddObserver { node_id, addr } => {
                RaftReply::AddObserver(self.add_observer_here(node_id, addr).await)
            }
        }
    }

    /// On the leader: adds a broker that is not a voter as a Raft learner, so the metadata
    /// log is replicated to it (it never votes). Returns once the membership change is
    /// committed; the learner then catches up on its own.
    async fn add_observer_here(&self, node_id: i32, addr: String) -> Result<(), ProposeError> {
        let id =
            raft_id(node_id).ok_or_else(|| ProposeError::Failed(format!("node id {node_id}")))?;
        if self.voters.contains_key(&node_id) {
            return Err(ProposeError::Failed(format!("node {node_id} is a voter")));
        }
        match self.raft.add_learner(id, BasicNode { addr }, false).await {
            Ok(_) => {
                tracing::info!(
                    node = node_id,
                    "added an observer broker to the metadata quorum"
                );
                Ok(())
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id.map(kafka_id),
                })
            }
            Err(e) => Err(ProposeError::Failed(e.to_string())),
        }
    }

    /// Whether this node is in the quorum's membership (as voter or observer).
    fn is_member(&self) -> bool {
        let Some(id) = raft_id(self.node_id) else {
            return false;
        };
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some()
    }

    /// An observer asks the voters, until one that leads adds it, to replicate the metadata
    /// log to it. Runs until this node is a member (at once after a restart: its own log says
    /// so) or the quorum stops.
    async fn join_as_observer(self: Arc<Self>, addr: String) {
        let from = raft_id(self.node_id).unwrap_or_default();
        let voters: Vec<(i32, String)> = self.voters.clone().into_iter().collect();
        let mut attempt = 0usize;
        while !self.is_member() {
            let (voter, voter_addr) = match self
                .leader()
                .and_then(|l| self.voters.get(&l).map(|a| (l, a.clone())))
            {
                Some(known) => known,
                None => voters[attempt % voters.len()].clone(),
            };
            attempt += 1;
            let rpc = RaftRpc::AddObserver {
                node_id: self.node_id,
                addr: addr.clone(),
            };
            let to = raft_id(voter).unwrap_or_default();
            match self
                .transport
                .send(from, to, &voter_addr, rpc, self.propose_timeout)
                .await
            {
                Ok(RaftReply::AddObserver(Ok(()))) => {}
                Ok(RaftReply::AddObserver(Err(e))) => {
                    tracing::debug!(voter, error = %e, "joining the metadata quorum as an observer")
                }
                Ok(_) => tracing::debug!(voter, "unexpected reply to AddObserver"),
                Err(e) => {
                    tracing::debug!(voter, error = %e, "joining the metadata quorum as an observer")
                }
            }
            if self.raft.is_initialized().await.is_err() {
                return; // stopped
            }
            tokio::time::sleep(self.retry_backoff.max(Duration::from_millis(100))).await;
        }
        tracing::info!(
            node = self.node_id,
            "receiving the metadata log as an observer"
        );
    }

    fn heartbeat_here(&self, node_id: i32) -> Result<(), ProposeError> {
        if self.leader() != Some(self.node_id) {
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        }
        if let Ok(mut seen) = self.heartbeats.lock() {
            seen.insert(node_id, tokio::time::Instant::now());
        }
        Ok(())
    }

    /// Why this voter's Raft stopped on its own, if it did: a failed write to the metadata
    /// log (a full or failing disk) or a panic. `None` while it runs, and after a shutdown
    /// this broker asked for.
    pub fn failure(&self) -> Option<String> {
        match &self.raft.metrics().borrow().running_state {
            Ok(()) | Err(openraft::error::Fatal::Stopped) => None,
            Err(fatal) => Some(fatal.to_string()),
        }
    }

    /// On the leader: confirms with a quorum of voters that this voter still leads (a
    /// leader cut from the others keeps believing it leads until it hears of a newer term).
    pub async fn confirm_leadership(&self) -> Result<(), QuorumError> {
        self.read_index_here()
            .await
            .map(|_| ())
            .map_err(|e| QuorumError::Failed(e.to_string()))
    }

    /// Tells the active controller this broker is alive (Kafka's BrokerHeartbeat). Best
    /// effort: an error means no leader is reachable right now.
    pub async fn heartbeat(&self) -> Result<(), QuorumError> {
        let Some(leader) = self.leader() else {
            return Err(QuorumError::NoLeader(Duration::ZERO));
        };
        if leader == self.node_id {
            return self
                .heartbeat_here(self.node_id)
                .map_err(|e| QuorumError::Failed(e.to_string()));
        }
        let (Some(to), Some(addr)) = (raft_id(leader), self.voters.get(&leader)) else {
            return Err(QuorumError::NoLeader(Duration::ZERO));
        };
        let from = raft_id(self.node_id).unwrap_or_default();
        match self
            .transport
            .send(
                from,
                to,
                addr,
                RaftRpc::Heartbeat {
                    node_id: self.node_id,
                },
                self.propose_timeout,
            )
            .await
        {
            Ok(RaftReply::Heartbeat(Ok(()))) => Ok(()),
            Ok(RaftReply::Heartbeat(Err(e))) => Err(QuorumError::Failed(e.to_string())),
            Ok(_) => Err(QuorumError::Failed(
                "reply does not match the request".into(),
            )),
            Err(e) => Err(QuorumError::Failed(e.to_string())),
        }
    }

    /// On the active controller: when each broker's last heartbeat arrived (since this voter
    /// last became leader; earlier ones are forgotten).
    pub fn heartbeats(&self) -> HashMap<i32, tokio::time::Instant> {
        self.heartbeats
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default()
    }

    /// Forgets every heartbeat (a new term as leader starts from scratch).
    pub fn clear_heartbeats(&self) {
        if let Ok(mut h) = self.heartbeats.lock() {
            h.clear();
        }
    }

    /// On the leader: confirms leadership with a quorum and returns an index that covers every
    /// committed command (openraft's linearizable read).
    async fn read_index_here(&self) -> Result<u64, ProposeError> {
        match self.raft.ensure_linearizable().await {
            Ok(read) => Ok(read.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id.map(kafka_id),
                })
            }
            Err(RaftError::APIError(e)) => {
                tracing::debug!(error = %e, "read barrier: no quorum");
                Err(ProposeError::NotLeader { leader: None })
            }
            Err(e) => Err(ProposeError::Failed(e.to_string())),
        }
    }

    async fn read_index_at(&self, leader: i32) -> Result<u64, ProposeError> {
        if leader == self.node_id {
            return self.read_index_here().await;
        }
        let (Some(to), Some(addr)) = (raft_id(leader), self.voters.get(&leader)) else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        let from = raft_id(self.node_id).unwrap_or_default();
        match self
            .transport
            .send(from, to, addr, RaftRpc::ReadIndex, self.propose_timeout)
            .await
        {
            Ok(RaftReply::ReadIndex(result)) => result,
            Ok(_) => Err(ProposeError::Failed(
                "reply does not match the request".into(),
            )),
            Err(_) => Err(ProposeError::NotLeader { leader: None }),
        }
    }

    /// A read barrier: waits until this voter has applied every command committed before the
    /// call, so a check against [`image`](Quorum::image) sees what any broker had been told.
    pub async fn barrier(&self) -> Result<(), QuorumError> {
        let deadline = tokio::time::Instant::now() + self.propose_timeout;
        loop {
            let attempt = match self.leader() {
                Some(leader) => self.read_index_at(leader).await,
                None => Err(ProposeError::NotLeader { leader: None }),
            };
            match attempt {
                Ok(index) => return self.wait_applied(index, deadline).await,
                Err(ProposeError::NotLeader { .. }) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(QuorumError::NoLeader(self.propose_timeout));
                    }
                    tokio::time::sleep(self.retry_backoff).await;
                }
                Err(ProposeError::Failed(why)) => return Err(QuorumError::Failed(why)),
            }
        }
    }

    async fn propose_here(&self, command: MetadataCommand) -> Result<Committed, ProposeError> {
        match self.raft.client_write(command).await {
            Ok(response) => Ok(Committed {
                applied: response.data,
                index: response.log_id.index,
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id.map(kafka_id),
                })
            }
            Err(e) => Err(ProposeError::Failed(e.to_string())),
        }
    }

    async fn propose_at(
        &self,
        leader: i32,
        command: MetadataCommand,
    ) -> Result<Committed, ProposeError> {
        if leader == self.node_id {
            return self.propose_here(command).await;
        }
        let (Some(to), Some(addr)) = (raft_id(leader), self.voters.get(&leader)) else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        let from = raft_id(self.node_id).unwrap_or_default();
        match self
            .transport
            .send(
                from,
                to,
                addr,
                RaftRpc::Propose(command),
                self.propose_timeout,
            )
            .await
        {
            Ok(RaftReply::Propose(result)) => result,
            Ok(_) => Err(ProposeError::Failed(
                "reply does not match the request".into(),
            )),
            Err(e) => {
                tracing::debug!(leader, error = %e, "forwarding a metadata command failed");
                Err(ProposeError::NotLeader { leader: None })
            }
        }
    }

    /// Has the active controller commit `command`, then waits until this voter has applied it.
    ///
    /// Retries while there is no leader or leadership moves, up to the propose timeout. A
    /// command forwarded to a leader that dies before answering may have been committed all
    /// the same: a retried CreateTopic is recognised by its topic id and answers
    /// [`Applied::Done`]; a retried DeleteTopic comes back UnknownTopic and a retried
    /// partition change comes back StaleChange (its partition epoch moved), so callers of
    /// those treat a rejection after a retry with care.
    pub async fn propose(&self, command: MetadataCommand) -> Result<Committed, QuorumError> {
        let deadline = tokio::time::Instant::now() + self.propose_timeout;
        loop {
            let attempt = match self.leader() {
                Some(leader) => self.propose_at(leader, command.clone()).await,
                None => Err(ProposeError::NotLeader { leader: None }),
            };
            match attempt {
                Ok(committed) => {
                    self.wait_applied(committed.index, deadline).await?;
                    return Ok(committed);
                }
                Err(ProposeError::NotLeader { .. }) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(QuorumError::NoLeader(self.propose_timeout));
                    }
                    tokio::time::sleep(self.retry_backoff).await;
                }
                Err(ProposeError::Failed(why)) => return Err(QuorumError::Failed(why)),
            }
        }
    }

    async fn wait_applied(
        &self,
        index: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), QuorumError> {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.raft
            .wait(Some(left.max(Duration::from_millis(1))))
            .applied_index_at_least(Some(index), "proposal applied locally")
            .await
            .map(|_| ())
            .map_err(|e| QuorumError::Failed(format!("applying index {index} locally: {e}")))
    }

    /// The latest applied image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.images.borrow().clone()
    }

    /// A receiver of every applied image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.images.clone()
    }

    /// This voter's node id.
    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// The active controller as this voter knows it.
    pub fn leader(&self) -> Option<i32> {
        self.raft.metrics().borrow().current_leader.map(kafka_id)
    }

    /// Waits until some leader is known to this voter.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<i32, QuorumError> {
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .ok()
            .and_then(|m| m.current_leader)
            .map(kafka_id)
            .ok_or(QuorumError::NoLeader(timeout))
    }

    /// The index of the last entry this voter applied.
    pub fn applied_index(&self) -> Option<u64> {
        self.raft.metrics().borrow().last_applied.map(|l| l.index)
    }

    /// Stops Raft.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata quorum did not stop cleanly");
        }
    }
}

/// What a stopped voter answers.
fn stopped_reply(rpc: RaftRpc) -> RaftReply {
    let fatal = || openraft::error::Fatal::Stopped;
    match rpc {
        RaftRpc::AppendEntries(_) => RaftReply::AppendEntries(Err(RaftError::Fatal(fatal()))),
        RaftRpc::Vote(_) => RaftReply::Vote(Err(RaftError::Fatal(fatal()))),
        RaftRpc::InstallSnapshot(_) => RaftReply::InstallSnapshot(Err(RaftError::Fatal(fatal()))),
        RaftRpc::Propose(_) => RaftReply::Propose(Err(ProposeError::NotLeader { leader: None })),
        RaftRpc::ReadIndex => RaftReply::ReadIndex(Err(ProposeError::NotLeader { leader: None })),
        RaftRpc::Heartbeat { .. } => {
            RaftReply::Heartbeat(Err(ProposeError::NotLeader { leader: None }))
        }
        RaftRpc::AddObserver { .. } => {
            RaftReply::AddObserver(Err(ProposeError::NotLeader { leader: None }))
        }
    }
}

/// Logs (at info) each time this voter becomes the quorum's leader, with the term: operators
/// and the fault tests read from it which broker is the active controller.
fn spawn_leadership_log(raft: &Raft<types::TypeConfig>, node_id: i32) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut metrics = raft.metrics();
    let me = raft_id(node_id);
    runtime.spawn(async move {
        let mut leading_term = None;
        loop {
            let (leader, term) = {
                let m = metrics.borrow_and_update();
                (m.current_leader, m.current_term)
            };
            let leading = me.is_some() && leader == me;
            if leading && leading_term != Some(term) {
                tracing::info!(
                    node = node_id,
                    term,
                    "this broker now leads the metadata quorum (active controller)"
                );
                leading_term = Some(term);
            } else if !leading {
                leading_term = None;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
}
