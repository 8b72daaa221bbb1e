//! The controller: every metadata change goes through here and into the controller quorum.
//!
//! A change (broker registration, topic creation, deletion) is validated against the current
//! image, turned into a [`MetadataCommand`] and proposed to the quorum ([`Quorum`]); it is
//! visible once the quorum has committed it and this broker has applied it, and then on every
//! broker that applies the same log. Readers subscribe to a `watch` channel of images.
//!
//! With `controller.quorum.voters` unset the broker is a one-voter quorum of its own (the
//! single-broker mode); with it set, the voters are the brokers listed there.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use super::metadata::{
    collision_key, reserved_topic, validate_topic_name, BrokerInfo, BrokerRegistration,
    MetadataImage, PartitionInfo, TopicInfo,
};
use super::quorum::network::{TcpTransport, Transport};
use super::quorum::{Applied, MetadataCommand, Quorum, QuorumConfig, QuorumError, Rejection};
use crate::config::{self, BrokerConfig};
use crate::server::peer_auth::ClusterSecret;

/// A refused metadata change. Mapped to Kafka error codes by the API layer.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// TOPIC_ALREADY_EXISTS.
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    /// INVALID_TOPIC_EXCEPTION.
    #[error("{0}")]
    InvalidTopic(String),
    /// INVALID_PARTITIONS.
    #[error("{0}")]
    InvalidPartitions(String),
    /// INVALID_REPLICATION_FACTOR.
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// INVALID_CONFIG.
    #[error("{0}")]
    InvalidConfig(String),
    /// INVALID_REPLICA_ASSIGNMENT.
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// UNKNOWN_TOPIC_OR_PARTITION / UNKNOWN_TOPIC_ID.
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    /// INVALID_REQUEST: an internal topic (`__consumer_offsets`, `__transaction_state`,
    /// `__cluster_metadata`) is the broker's to create and delete, never a client's.
    #[error("{0}")]
    InternalTopic(String),
    /// POLICY_VIOLATION: a configured limit.
    #[error("{0}")]
    PolicyViolation(String),
    /// TOPIC_DELETION_DISABLED.
    #[error("topic deletion is disabled (delete.topic.enable=false)")]
    DeletionDisabled,
    /// No active controller took the change in time (NOT_CONTROLLER: clients retry).
    #[error("no active controller: {0}")]
    NotController(String),
    /// The metadata could not be persisted (KAFKA_STORAGE_ERROR / UNKNOWN_SERVER_ERROR).
    #[error("metadata storage: {0}")]
    Storage(String),
}

impl From<QuorumError> for ControllerError {
    fn from(e: QuorumError) -> Self {
        match e {
            QuorumError::NoLeader(_) => ControllerError::NotController(e.to_string()),
            QuorumError::Config(_) | QuorumError::Storage(_) | QuorumError::Failed(_) => {
                ControllerError::Storage(e.to_string())
            }
        }
    }
}

/// Why an ISR change (the leader's AlterPartition) was not made.
#[derive(Debug, thiserror::Error)]
pub enum IsrChangeError {
    /// Committed and refused: it will never apply.
    #[error("refused: {0}")]
    Refused(Rejection),
    /// Not answered (no quorum in time, a lost reply): it may still commit.
    #[error("not answered: {0}")]
    Unanswered(ControllerError),
}

impl IsrChangeError {
    /// What the leader's partition makes of it.
    pub fn not_made(&self) -> crate::replica::IsrNotMade {
        use crate::replica::IsrNotMade;
        match self {
            IsrChangeError::Refused(Rejection::StaleChange(_)) => IsrNotMade::StaleEpoch,
            IsrChangeError::Refused(_) => IsrNotMade::Refused,
            IsrChangeError::Unanswered(_) => IsrNotMade::Unanswered,
        }
    }
}

impl From<Rejection> for ControllerError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::TopicAlreadyExists(t) => ControllerError::TopicAlreadyExists(t),
            Rejection::InvalidTopic(m) => ControllerError::InvalidTopic(m),
            Rejection::UnknownTopic(t) => ControllerError::UnknownTopic(t),
            Rejection::UnknownBroker(_) | Rejection::StaleChange(_) | Rejection::Invalid(_) => {
                ControllerError::Storage(r.to_string())
            }
        }
    }
}

/// What CreateTopics (or auto-creation) asks for.
#[derive(Debug, Clone)]
pub struct CreateTopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count; -1 means `num.partitions`.
    pub partitions: i32,
    /// Replication factor; -1 means `default.replication.factor`.
    pub replication_factor: i16,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
    /// Check everything, change nothing.
    pub validate_only: bool,
    /// Internal topic flag.
    pub internal: bool,
    /// A manual replica assignment (replicas by partition index, preferred leader first),
    /// instead of the controller's placement; partition count and replication factor follow
    /// from it.
    pub assignment: Option<Vec<Vec<i32>>>,
}

/// The metadata controller of one broker.
#[derive(Debug)]
pub struct Controller {
    config: Arc<BrokerConfig>,
    quorum: Arc<Quorum>,
    /// Validation and proposal of one change at a time from this broker.
    write_lock: tokio::sync::Mutex<()>,
    incarnation: Uuid,
    internal_addr: String,
}

impl Controller {
    /// Starts this broker's voter of the controller quorum (recovering the metadata log).
    /// Incoming quorum connections must be routed to [`Quorum::handler`] of
    /// [`Controller::quorum`].
    pub async fn open(config: Arc<BrokerConfig>) -> Result<Controller, ControllerError> {
        let voters = config
            .quorum_voters()
            .map_err(|e| ControllerError::Storage(e.to_string()))?;
        let node_id = config.node_id();
        let voters = if voters.is_empty() {
            // One broker, its own quorum: nothing is ever sent to this address.
            BTreeMap::from([(node_id, "127.0.0.1:0".to_string())])
        } else {
            voters
        };
        // A voter is reached at its voter entry; an observer (not a voter) at its
        // internal.listener.
        let internal_addr = match voters.get(&node_id) {
            Some(addr) => addr.clone(),
            None => config.internal_listener().ok_or_else(|| {
                ControllerError::Storage(format!(
                    "node.id {node_id} is not in controller.quorum.voters: as an observer it \
                     needs internal.listener"
                ))
            })?,
        };
        super::quorum::migrate_legacy_dir(&config.data_dir)
            .map_err(|e| ControllerError::Storage(format!("moving the metadata log: {e}")))?;
        let election = Duration::from_millis(config.quorum_election_timeout_ms());
        let mut quorum_config = QuorumConfig::new(
            node_id,
            voters,
            config.metadata_quorum_dir(),
            &config.cluster_id(),
        );
        quorum_config.address = internal_addr.clone();
        quorum_config.election_timeout = election;
        quorum_config.heartbeat_interval = (election / 10).max(Duration::from_millis(5));
        let secret = match config.cluster_secret() {
            Some(secret) => secret,
            // One broker, its own quorum: nothing is ever sent.
            None if config.quorum_voters().is_ok_and(|v| v.is_empty()) => ClusterSecret::new(""),
            None => {
                return Err(ControllerError::Storage(
                    "controller.quorum.voters is set but cluster.secret is not".to_string(),
                ))
            }
        };
        let transport: Arc<dyn Transport> =
            Arc::new(TcpTransport::new(secret, config.internal_frame_max_bytes()));
        let quorum = Quorum::start(quorum_config, transport).await?;
        Ok(Controller {
            config,
            quorum,
            write_lock: tokio::sync::Mutex::new(()),
            incarnation: Uuid::new_v4(),
            internal_addr,
        })
    }

    /// This broker's voter.
    pub fn quorum(&self) -> &Arc<Quorum> {
        &self.quorum
    }

    /// Registers this broker (its advertised address and this process's incarnation) and
    /// waits until the registration is applied here. Unless the previous stop was clean
    /// (`previous_stop_clean`), a previous incarnation's registration is fenced first
    /// ([`registration_commands`](super::decisions::registration_commands)): this process may
    /// not hold what that one acknowledged.
    pub async fn register(&self, previous_stop_clean: bool) -> Result<(), ControllerError> {
        let broker = BrokerInfo {
            node_id: self.config.node_id(),
            host: self.config.advertised_host.clone(),
            port: self.config.advertised_port,
            rack: None,
        };
        let partitions_max = crate::server::open_files::current_limit()
            .ok()
            .map(|limit| {
                crate::server::open_files::partition_capacity(
                    limit,
                    u64::try_from(self.config.max_connections()).unwrap_or(u64::MAX),
                    u64::from(self.config.brokers_in_process),
                )
            });
        let registration = BrokerRegistration {
            incarnation: self.incarnation,
            internal_addr: self.internal_addr.clone(),
            fenced: false,
            partitions_max,
            offline_replicas: Default::default(),
            shutting_down: false,
        };
        let _guard = self.write_lock.lock().await;
        // Decide against everything committed, not this broker's possibly stale image.
        self.quorum.barrier().await?;
        let image = self.image();
        let commands = super::decisions::registration_commands(
            &image,
            broker,
            registration,
            previous_stop_clean,
        );
        for command in commands {
            if matches!(command, MetadataCommand::FenceBroker { .. }) {
                tracing::info!(
                    node = self.config.node_id(),
                    "fencing this broker's previous incarnation before it registers again"
                );
            }
            if let Applied::Rejected(why) = self.quorum.propose(command).await?.applied {
                return Err(why.into());
            }
        }
        Ok(())
    }

    /// The current image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.quorum.image()
    }

    /// A receiver of every applied image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.quorum.subscribe()
    }

    /// Creates a topic (or only validates, with `validate_only`). Returns the topic as created.
    /// Replicas are spread round-robin over the live brokers, the first replica of each
    /// partition its preferred leader.
    pub async fn create_topic(&self, spec: CreateTopicSpec) -> Result<TopicInfo, ControllerError> {
        let _guard = self.write_lock.lock().await;
        // Validate against everything committed so far (the live brokers, the topics), not
        // against what this broker happens to have applied.
        self.quorum.barrier().await?;
        let current = self.image();
        validate_topic_name(&spec.name).map_err(ControllerError::InvalidTopic)?;
        check_internal_name(&spec)?;
        if current.topics.contains_key(&spec.name) {
            return Err(ControllerError::TopicAlreadyExists(spec.name));
        }
        let key = collision_key(&spec.name);
        if let Some(other) = current.topics.keys().find(|t| collision_key(t) == key) {
            return Err(ControllerError::InvalidTopic(format!(
                "topic '{}' collides with existing topic '{other}' ('.' and '_' are equivalent)",
                spec.name
            )));
        }
        if current.topics.len() >= self.config.topics_max() {
            return Err(ControllerError::PolicyViolation(format!(
                "the broker holds {} topics, the limit (topics.max)",
                current.topics.len()
            )));
        }
        let partitions = match (&spec.assignment, spec.partitions) {
            (Some(assignment), _) => i32::try_from(assignment.len()).unwrap_or(i32::MAX),
            (None, -1) => self.config.num_partitions(),
            (None, n) => n,
        };
        if partitions < 1 {
            return Err(ControllerError::InvalidPartitions(format!(
                "number of partitions must be at least 1, got {partitions}"
            )));
        }
        if partitions > self.config.partitions_per_topic_max() {
            return Err(ControllerError::InvalidPartitions(format!(
                "{partitions} partitions is more than partitions.per.topic.max ({})",
                self.config.partitions_per_topic_max()
            )));
        }
        let brokers: Vec<i32> = current
            .brokers
            .keys()
            .copied()
            .filter(|id| current.registrations.get(id).is_some_and(|r| !r.fenced))
            .collect();
        let live = brokers.len();
        // The broker default adapts to the cluster (three copies where there are three
        // brokers, one on a single broker); an explicit factor does not.
        let replication_factor =
            if let Some(first) = spec.assignment.as_ref().and_then(|a| a.first()) {
                i16::try_from(first.len()).unwrap_or(i16::MAX)
            } else if spec.replication_factor == -1 {
                self.config
                    .default_replication_factor()
                    .min(i16::try_from(live).unwrap_or(i16::MAX))
                    .max(1)
            } else {
                spec.replication_factor
            };
        if spec.assignment.is_none()
            && (replication_factor < 1 || usize::try_from(replication_factor).unwrap_or(0) > live)
        {
            return Err(ControllerError::InvalidReplicationFactor(format!(
                "replication factor {replication_factor} is not between 1 and the {live} live broker(s)"
            )));
        }
        for (name, value) in &spec.configs {
            if config::TOPIC_CONFIGS.iter().all(|(t, _)| t != name) {
                return Err(ControllerError::InvalidConfig(format!(
                    "unknown topic config '{name}'"
                )));
            }
            config::validate(name, value)
                .map_err(|e| ControllerError::InvalidConfig(e.to_string()))?;
        }
        self.config
            .validate_topic_configs(&spec.configs)
            .map_err(|e| ControllerError::InvalidConfig(e.to_string()))?;
        let rf = usize::try_from(replication_factor).unwrap_or(1);
        // Start each topic on a different broker so that many small topics spread too.
        let first = current.topics.len() % live.max(1);
        let placed: Vec<Vec<i32>> = match &spec.assignment {
            Some(assignment) => assignment.clone(),
            None => (0..partitions)
                .map(|index| {
                    let start = first + usize::try_from(index).unwrap_or(0);
                    (0..rf).map(|r| brokers[(start + r) % live]).collect()
                })
                .collect(),
        };
        check_capacity(&current, &placed)?;
        let mut partition_infos = Vec::with_capacity(placed.len());
        for (index, replicas) in (0..).zip(placed) {
            // Fenced replicas start outside the ISR; the first live one leads (KRaft's rule
            // for a manual assignment).
            let isr: Vec<i32> = replicas
                .iter()
                .copied()
                .filter(|r| brokers.contains(r))
                .collect();
            let Some(&leader) = isr.first() else {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "All brokers specified in the manual partition assignment for partition \
                     {index} are fenced or unknown."
                )));
            };
            partition_infos.push(PartitionInfo {
                index,
                leader,
                leader_epoch: 0,
                isr,
                replicas,
                partition_epoch: 0,
            });
        }
        let topic = TopicInfo {
            name: spec.name.clone(),
            id: Uuid::new_v4(),
            partitions: partition_infos,
            configs: spec.configs,
            internal: spec.internal,
        };
        if spec.validate_only {
            return Ok(topic);
        }
        let committed = self
            .quorum
            .propose(MetadataCommand::CreateTopic {
                topic: topic.clone(),
            })
            .await?;
        if let Applied::Rejected(why) = committed.applied {
            return Err(why.into());
        }
        tracing::info!(topic = %topic.name, id = %topic.id, partitions, "created topic");
        Ok(topic)
    }

    /// Deletes a topic by name.
    pub async fn delete_topic(&self, name: &str) -> Result<TopicInfo, ControllerError> {
        if !self.config.delete_topic_enable() {
            return Err(ControllerError::DeletionDisabled);
        }
        let _guard = self.write_lock.lock().await;
        self.quorum.barrier().await?;
        let topic = self
            .image()
            .topic(name)
            .cloned()
            .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
        if topic.internal || reserved_topic(name).is_some() {
            // Deleting `__consumer_offsets` would drop every group's offsets under live
            // coordinators (and, before the quorum moved out of the partition directories,
            // deleting `__cluster_metadata` wiped the metadata log).
            return Err(ControllerError::InternalTopic(format!(
                "{name} is an internal topic and cannot be deleted"
            )));
        }
        let committed = self
            .quorum
            .propose(MetadataCommand::DeleteTopic {
                name: name.to_string(),
                id: topic.id,
            })
            .await?;
        if let Applied::Rejected(why) = committed.applied {
            return Err(why.into());
        }
        tracing::info!(topic = %name, "deleted topic");
        Ok(topic)
    }

    /// Asks for a partition's ISR to become `isr` (the leader's AlterPartition). Refused as
    /// stale when the partition changed since `partition_epoch`.
    pub async fn change_isr(
        &self,
        topic_id: Uuid,
        partition: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    ) -> Result<(), IsrChangeError> {
        let committed = self
            .quorum
            .propose(MetadataCommand::ChangePartition {
                topic_id,
                partition,
                expected_partition_epoch: partition_epoch,
                leader: None,
                isr: Some(isr),
            })
            .await
            .map_err(|e| IsrChangeError::Unanswered(e.into()))?;
        match committed.applied {
            Applied::Rejected(why) => Err(IsrChangeError::Refused(why)),
            _ => Ok(()),
        }
    }

    /// Tells the controller that this broker's logs of `partitions` (topic id, index) went
    /// offline after storage errors: leadership moves to healthy ISR members and these copies
    /// leave the ISRs.
    pub async fn report_offline(
        &self,
        partitions: Vec<(Uuid, i32)>,
    ) -> Result<(), ControllerError> {
        let command = MetadataCommand::ReplicasOffline {
            node_id: self.config.node_id(),
            partitions,
        };
        match self.quorum.propose(command).await?.applied {
            Applied::Rejected(why) => Err(why.into()),
            _ => Ok(()),
        }
    }

    /// Asks for a block of `count` producer ids for this broker (KIP-730); returns (first id,
    /// count). Every block is committed to the metadata log, so none is granted twice.
    pub async fn allocate_producer_ids(&self, count: i32) -> Result<(i64, i32), ControllerError> {
        let command = MetadataCommand::AllocateProducerIds {
            node_id: self.config.node_id(),
            count,
        };
        match self.quorum.propose(command).await?.applied {
            Applied::ProducerIds { first, count } => Ok((first, count)),
            Applied::Rejected(why) => Err(why.into()),
            Applied::Done => Err(ControllerError::Storage(
                "the controller granted no producer ids".to_string(),
            )),
        }
    }

    /// Fences (`fenced`) or unfences a broker: a fenced broker leads nothing and leaves the
    /// ISRs it is not the last member of; partitions it led move within their ISR.
    pub async fn set_fenced(&self, node_id: i32, fenced: bool) -> Result<(), ControllerError> {
        let command = if fenced {
            MetadataCommand::FenceBroker { node_id }
        } else {
            MetadataCommand::UnfenceBroker { node_id }
        };
        match self.quorum.propose(command).await?.applied {
            Applied::Rejected(why) => Err(why.into()),
            _ => Ok(()),
        }
    }

    /// Kafka's controlled shutdown of this broker: it is fenced at its own request, so the
    /// partitions it leads move to other ISR members and it leaves every ISR it is not the last
    /// member of, and it stays so until it registers again. Returns once committed.
    pub async fn controlled_shutdown(&self) -> Result<(), ControllerError> {
        let command = MetadataCommand::ControlledShutdown {
            node_id: self.config.node_id(),
            incarnation: self.incarnation,
        };
        match self.quorum.propose(command).await?.applied {
            Applied::Rejected(why) => Err(why.into()),
            _ => Ok(()),
        }
    }

    /// Moves leadership of every partition whose preferred leader (first replica) is live,
    /// in the ISR and not leading, back to it (Kafka's preferred replica election). Returns how
    /// many partitions moved.
    pub async fn elect_preferred_leaders(&self) -> Result<usize, ControllerError> {
        let changes = super::decisions::preferred_leader_changes(&self.image());
        self.make_leader_changes(changes, false).await
    }

    /// Proposes leadership moves one by one; returns how many were applied.
    async fn make_leader_changes(
        &self,
        changes: Vec<(String, MetadataCommand)>,
        unclean: bool,
    ) -> Result<usize, ControllerError> {
        let mut made = 0;
        for (topic, command) in changes {
            let what = format!("{command:?}");
            if self.quorum.propose(command).await?.applied != Applied::Done {
                continue;
            }
            made += 1;
            if unclean {
                tracing::warn!(%topic, change = %what, "unclean leader election: a replica outside the ISR leads; records only the ISR had are lost");
            } else {
                tracing::info!(%topic, change = %what, "moved leadership back to the preferred replica");
            }
        }
        Ok(made)
    }

    /// Elects a leader outside the ISR for each leaderless partition whose topic allows it
    /// (`unclean.leader.election.enable`). Returns how many partitions got one.
    pub async fn elect_unclean_leaders(&self) -> Result<usize, ControllerError> {
        let config = self.config.clone();
        let changes = super::decisions::unclean_leader_changes(&self.image(), |overrides| {
            config.unclean_leader_election(overrides)
        });
        self.make_leader_changes(changes, true).await
    }

    /// Stops this broker's voter.
    pub async fn shutdown(&self) {
        self.quorum.shutdown().await;
    }
}

/// Refuses a placement that would give a broker more partition replicas than its open-file
/// limit leaves room for (as it registered it): such a broker could not open them, and would
/// then fail every new connection for want of file descriptors.
fn check_capacity(image: &MetadataImage, placed: &[Vec<i32>]) -> Result<(), ControllerError> {
    let mut adding: BTreeMap<i32, u64> = BTreeMap::new();
    for replica in placed.iter().flatten() {
        *adding.entry(*replica).or_default() += 1;
    }
    for (broker, added) in adding {
        let Some(capacity) = image
            .registrations
            .get(&broker)
            .and_then(|r| r.partitions_max)
        else {
            continue;
        };
        let hosted = image
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.replicas.contains(&broker))
            .count() as u64;
        if hosted + added > capacity {
            return Err(ControllerError::PolicyViolation(format!(
                "broker {broker} would host {} partition replicas ({hosted} now, {added} more); \
                 its open-file limit leaves room for {capacity} (three files per segment, \
                 descriptors kept for max.connections): raise the broker's open-file limit \
                 (ulimit -n) or use fewer partitions",
                hosted + added
            )));
        }
    }
    Ok(())
}

/// Refuses a client's topic whose name is an internal topic's, or collides with one: only the
/// broker creates those, flagged internal (Kafka refuses `__cluster_metadata` with
/// INVALID_REQUEST; a colliding name is INVALID_TOPIC_EXCEPTION, as any collision).
fn check_internal_name(spec: &CreateTopicSpec) -> Result<(), ControllerError> {
    let Some(internal) = reserved_topic(&spec.name) else {
        return Ok(());
    };
    if spec.internal && spec.name == internal {
        return Ok(());
    }
    if spec.name == internal {
        return Err(ControllerError::InternalTopic(format!(
            "Creation of internal topic {internal} is prohibited."
        )));
    }
    Err(ControllerError::InvalidTopic(format!(
        "topic '{}' collides with internal topic '{internal}' ('.' and '_' are equivalent)",
        spec.name
    )))
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn controller(dir: &Path) -> Controller {
        let config = BrokerConfig::new("127.0.0.1:9092".parse().unwrap(), dir.to_path_buf());
        let c = Controller::open(Arc::new(config)).await.unwrap();
        c.register(false).await.unwrap();
        c
    }

    fn spec(name: &str, partitions: i32) -> CreateTopicSpec {
        CreateTopicSpec {
            name: name.to_string(),
            partitions,
            replication_factor: -1,
            configs: BTreeMap::new(),
            validate_only: false,
            internal: false,
            assignment: None,
        }
    }

    #[tokio::test]
    async fn create_persist_delete() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path()).await;
        let t = c.create_topic(spec("orders", 3)).await.unwrap();
        assert_eq!(t.partitions.len(), 3);
        assert!(matches!(
            c.create_topic(spec("orders", 1)).await,
            Err(ControllerError::TopicAlreadyExists(_))
        ));
        assert!(matches!(
            c.create_topic(spec("orders_", 1).clone()).await.map(|_| ()),
            Ok(())
        ));
        assert!(matches!(
            c.create_topic(spec("orders.", 1)).await,
            Err(ControllerError::InvalidTopic(_))
        ));
        c.shutdown().await;
        drop(c);
        let c = controller(dir.path()).await;
        let image = c.image();
        assert_eq!(image.topic("orders").unwrap().id, t.id);
        assert_eq!(image.topic_by_id(&t.id).unwrap().name, "orders");
        c.delete_topic("orders").await.unwrap();
        assert!(c.image().topic("orders").is_none());
        assert!(matches!(
            c.delete_topic("orders").await,
            Err(ControllerError::UnknownTopic(_))
        ));
    }

    #[tokio::test]
    async fn refuses_bad_specs() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path()).await;
        assert!(matches!(
            c.create_topic(spec("a", 0)).await,
            Err(ControllerError::InvalidPartitions(_))
        ));
        let mut s = spec("a", 1);
        s.replication_factor = 2;
        assert!(matches!(
            c.create_topic(s).await,
            Err(ControllerError::InvalidReplicationFactor(_))
        ));
        let mut s = spec("a", 1);
        s.configs.insert("retention.ms".into(), "soon".into());
        assert!(matches!(
            c.create_topic(s).await,
            Err(ControllerError::InvalidConfig(_))
        ));
        let mut s = spec("a", 1);
        s.validate_only = true;
        c.create_topic(s).await.unwrap();
        assert!(c.image().topic("a").is_none());
    }

    /// Internal names belong to the broker: clients cannot create them (or names colliding
    /// with them), nor delete them once the broker has.
    #[tokio::test]
    async fn internal_topics_are_the_brokers() {
        use crate::cluster::metadata::{INTERNAL_TOPICS, OFFSETS_TOPIC};
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path()).await;
        for name in INTERNAL_TOPICS {
            assert!(
                matches!(
                    c.create_topic(spec(name, 1)).await,
                    Err(ControllerError::InternalTopic(_))
                ),
                "{name}"
            );
        }
        for name in [
            "__consumer.offsets",
            "__cluster.metadata",
            "__transaction.state",
        ] {
            assert!(
                matches!(
                    c.create_topic(spec(name, 1)).await,
                    Err(ControllerError::InvalidTopic(_))
                ),
                "{name}"
            );
        }
        let mut internal = spec(OFFSETS_TOPIC, 2);
        internal.internal = true;
        c.create_topic(internal).await.unwrap();
        assert!(matches!(
            c.delete_topic(OFFSETS_TOPIC).await,
            Err(ControllerError::InternalTopic(_))
        ));
        assert!(c.image().topic(OFFSETS_TOPIC).is_some());
    }
}
