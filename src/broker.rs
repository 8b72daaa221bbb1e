//! One running broker: the state every handler reads ([`Broker`]) and its lifecycle
//! ([`start`] and [`RunningBroker::shutdown`]).
//!
//! Start order: bind the listener (so an ephemeral port is known before it is advertised), open
//! the controller (metadata) and the replica manager (recovering logs), host the partitions the
//! metadata places here, then accept connections and run the periodic log duties. Shutdown
//! stops accepting, waits for connections to finish their in-flight requests (bounded), then
//! flushes and closes every log and writes the clean-shutdown marker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::decisions::{ContactChange, QuorumContact};
use crate::cluster::producer_ids::ProducerIds;
use crate::cluster::quorum::network::{
    serve_connection, Limits, RpcHandler, MAGIC as QUORUM_MAGIC,
};
use crate::cluster::{Controller, ControllerError, CreateTopicSpec, TopicInfo};
use crate::config::BrokerConfig;
use crate::coordinator::markers::MarkerWriter;
use crate::coordinator::{GroupService, TxnService, OFFSETS_TOPIC};
use crate::log::LogError;
use crate::replica::fetcher::{ReplicaFetchers, REPLICA_MAGIC};
use crate::replica::manager::now_ms;
use crate::replica::ReplicaManager;
use crate::server::peer_client::PeerPool;
use crate::server::{self, peer_auth, Principal};
use crate::txn::TRANSACTION_STATE_TOPIC;

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data dir could not be opened or recovered.
    #[error("data dir: {0}")]
    Log(#[from] LogError),
    /// The metadata could not be loaded.
    #[error("metadata: {0}")]
    Metadata(#[from] ControllerError),
    /// Settings that do not fit together.
    #[error("config: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The internal listener could not bind.
    #[error("cannot listen on {addr} (internal listener): {source}")]
    Internal {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The state shared by every connection and handler of one broker.
#[derive(Debug)]
pub struct Broker {
    /// Effective configuration.
    pub config: Arc<BrokerConfig>,
    /// Metadata controller.
    pub controller: Controller,
    /// Hosted partitions.
    pub replicas: Arc<ReplicaManager>,
    /// The group coordinator.
    pub groups: GroupService,
    /// The transaction coordinator.
    pub txns: TxnService,
    /// Producer ids for idempotent producers (InitProducerId).
    pub producer_ids: Arc<ProducerIds>,
    /// Connections to other brokers' internal listeners (markers, verification).
    pub peers: Arc<PeerPool>,
    /// Follower-side replication tasks.
    fetchers: ReplicaFetchers,
    /// Serialises creating `__consumer_offsets` and `__transaction_state`.
    internal_topic_lock: tokio::sync::Mutex<()>,
    /// Turns true when the broker starts stopping: long polls answer at once, connections stop
    /// reading, the listener stops accepting.
    shutdown: watch::Sender<bool>,
    /// Set when the broker cannot go on (its metadata log failed); see
    /// [`RunningBroker::failed`].
    fatal: watch::Sender<Option<String>>,
}

impl Broker {
    /// Opens the metadata (starting this broker's voter of the controller quorum) and the log
    /// manager under the configured data dir. Nothing is hosted yet: the metadata this broker
    /// recovered may say it leads partitions its previous incarnation led, which this one must
    /// not serve (it may have lost what that one had); [`Broker::register`] hosts them once the
    /// registration has fenced the previous incarnation.
    pub async fn open(config: BrokerConfig) -> Result<Arc<Broker>, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(LogError::from)?;
        let config = Arc::new(config);
        let controller = Controller::open(config.clone()).await?;
        let replicas = Arc::new(ReplicaManager::open(config.clone())?);
        let groups = GroupService::new(config.clone(), replicas.clone());
        let peers = Arc::new(PeerPool::new(
            config.cluster_secret(),
            REPLICA_MAGIC,
            config.internal_frame_max_bytes(),
            config.connections_max_idle(),
        ));
        let markers = MarkerWriter::new(
            replicas.clone(),
            groups.clone(),
            controller.subscribe(),
            peers.clone(),
            Duration::from_millis(config.request_timeout_ms()),
        );
        let txns = TxnService::new(config.clone(), replicas.clone(), markers);
        let (fatal, _) = watch::channel(None);
        let (shutdown, _) = watch::channel(false);
        Ok(Arc::new(Broker {
            config,
            controller,
            replicas,
            groups,
            txns,
            producer_ids: Arc::new(ProducerIds::new()),
            peers,
            fetchers: ReplicaFetchers::default(),
            internal_topic_lock: tokio::sync::Mutex::new(()),
            shutdown,
            fatal,
        }))
    }

    /// Registers this broker with the controller quorum, retrying while the quorum has no
    /// leader (its other voters may not be up yet) until it succeeds or the broker stops; then
    /// hosts the partitions the metadata places here (recovering their logs) and marks the
    /// groups of led `__consumer_offsets` partitions as loading.
    pub async fn register(&self) -> Result<(), ControllerError> {
        let mut attempts = 0u32;
        loop {
            match self
                .controller
                .register(self.replicas.previous_stop_clean())
                .await
            {
                Ok(()) => {
                    // A partition that cannot be opened does not stop the broker: the others
                    // are hosted, and every metadata change tries it again.
                    if let Err(error) = self.reconcile().await {
                        tracing::error!(%error, "some partitions could not be hosted");
                    }
                    // Groups of led partitions answer COORDINATOR_LOAD_IN_PROGRESS until
                    // `start` has replayed them.
                    self.groups.host_led_partitions();
                    self.txns.host_led_partitions();
                    return Ok(());
                }
                Err(ControllerError::NotController(why)) if !self.is_shutting_down() => {
                    attempts += 1;
                    tracing::info!(attempts, %why, "waiting for the controller quorum to register");
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Kafka's controlled shutdown, while the listeners still serve: the controller fences
    /// this broker at its request, so the partitions it leads move to other ISR members and it
    /// leaves the ISRs (acks=all stops waiting for it); then this broker applies that here,
    /// answering its waiting acks=all requests with NOT_LEADER_OR_FOLLOWER and handing its
    /// groups over, so clients move on now rather than after `broker.session.timeout.ms`; then
    /// it serves for three quorum heartbeats more while the other brokers learn of it.
    /// Skipped when no other broker is live (nobody to hand over to, as when a whole cluster
    /// stops); bounded by the session timeout (after which the controller would fence this
    /// broker anyway).
    pub async fn controlled_shutdown(&self) {
        let me = self.config.node_id();
        let image = self.controller.image();
        let others_live = image
            .registrations
            .iter()
            .any(|(node, r)| *node != me && !r.fenced);
        if !others_live {
            return;
        }
        let led = image
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.leader == me)
            .count();
        let started = tokio::time::Instant::now();
        let deadline = started + Duration::from_millis(self.config.broker_session_timeout_ms());
        match tokio::time::timeout_at(deadline, self.controller.controlled_shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "controlled shutdown refused; stopping without it");
                return;
            }
            Err(_) => {
                tracing::warn!(
                    "controlled shutdown not committed within broker.session.timeout.ms; \
                     stopping without it"
                );
                return;
            }
        }
        // The command is committed; this broker's copy of the metadata may lag a moment.
        // (The guard `wait_for` returns is dropped at once: held, it would block the next
        // metadata update.)
        let mut images = self.controller.subscribe();
        let applied = matches!(
            tokio::time::timeout_at(
                deadline,
                images.wait_for(|image| {
                    image
                        .registrations
                        .get(&me)
                        .is_some_and(|r| r.shutting_down)
                }),
            )
            .await,
            Ok(Ok(_))
        );
        if !applied {
            tracing::warn!("controlled shutdown committed but not seen here in time");
        }
        if let Err(error) = self.reconcile().await {
            tracing::warn!(%error, "applying the controlled shutdown here failed");
        }
        self.groups.host_and_load().await;
        self.txns.host_and_load().await;
        // The other brokers learn of the commit with the quorum leader's next append or
        // heartbeat (a tenth of the election timeout). Until they have, their Metadata still
        // names this broker, so it keeps serving a little longer: requests already on their
        // way get NOT_LEADER_OR_FOLLOWER with the new leader (KIP-951) rather than a closed
        // connection and a metadata refresh a second later.
        let linger = Duration::from_millis(self.config.quorum_election_timeout_ms() * 3 / 10);
        tokio::time::sleep(
            linger.min(deadline.saturating_duration_since(tokio::time::Instant::now())),
        )
        .await;
        tracing::info!(
            partitions_led = led,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "controlled shutdown: leadership handed over"
        );
    }

    /// Makes the hosted partitions match the current metadata (on the blocking pool), and
    /// starts a replica fetcher for every new leader followed.
    async fn reconcile(&self) -> Result<(), ControllerError> {
        let replicas = self.replicas.clone();
        let image = self.controller.image();
        let result = match tokio::task::spawn_blocking(move || replicas.reconcile(&image)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ControllerError::Storage(e.to_string())),
            Err(e) => Err(ControllerError::Storage(e.to_string())),
        };
        if !self.is_shutting_down() {
            self.fetchers.ensure(
                &self.replicas,
                &self.controller.subscribe(),
                &self.config.fetcher_settings(),
                &self.shutdown_signal(),
            );
        }
        result
    }

    /// Creates a topic and hosts its partitions before returning, so the topic is usable as
    /// soon as the caller answers.
    pub async fn create_topic(&self, spec: CreateTopicSpec) -> Result<TopicInfo, ControllerError> {
        let validate_only = spec.validate_only;
        let topic = self.controller.create_topic(spec).await?;
        if !validate_only {
            self.reconcile().await?;
        }
        Ok(topic)
    }

    /// Creates `__consumer_offsets` if it does not exist (as Kafka does on the first
    /// FindCoordinator) and makes sure every partition of it this broker leads is being served.
    /// Its replication factor is `offsets.topic.replication.factor`, capped at the brokers
    /// registered now.
    pub async fn ensure_offsets_topic(self: &Arc<Self>) -> Result<(), ControllerError> {
        self.ensure_internal_topic(
            OFFSETS_TOPIC,
            self.config.offsets_topic_num_partitions(),
            self.config.offsets_topic_replication_factor(),
            self.config.offsets_topic_segment_bytes(),
            None,
        )
        .await?;
        self.groups.host_and_load().await;
        Ok(())
    }

    /// Creates `__transaction_state` if it does not exist (on the first FindCoordinator for a
    /// transactional id) and serves the partitions of it this broker leads. Replication factor
    /// `transaction.state.log.replication.factor` capped at the brokers registered now,
    /// `min.insync.replicas` `transaction.state.log.min.isr` capped at that.
    pub async fn ensure_transaction_topic(self: &Arc<Self>) -> Result<(), ControllerError> {
        self.ensure_internal_topic(
            TRANSACTION_STATE_TOPIC,
            self.config.transaction_topic_num_partitions(),
            self.config.transaction_topic_replication_factor(),
            self.config.transaction_topic_segment_bytes(),
            Some(self.config.transaction_topic_min_isr()),
        )
        .await?;
        self.txns.host_and_load().await;
        Ok(())
    }

    /// Creates a compacted internal topic unless it exists.
    async fn ensure_internal_topic(
        self: &Arc<Self>,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        segment_bytes: i64,
        min_isr: Option<i64>,
    ) -> Result<(), ControllerError> {
        let _serial = self.internal_topic_lock.lock().await;
        let image = self.controller.image();
        if image.topic(name).is_some() {
            return Ok(());
        }
        let brokers = i16::try_from(image.brokers.len())
            .unwrap_or(i16::MAX)
            .max(1);
        let replication_factor = replication_factor.min(brokers);
        let mut configs = std::collections::BTreeMap::new();
        configs.insert("segment.bytes".to_string(), segment_bytes.to_string());
        // Kafka's settings for its internal topics: compacted (the latest record per key is
        // all a replay needs), batches kept as written.
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert("compression.type".to_string(), "producer".to_string());
        if let Some(min_isr) = min_isr {
            configs.insert(
                "min.insync.replicas".to_string(),
                min_isr.min(i64::from(replication_factor)).to_string(),
            );
        }
        let spec = CreateTopicSpec {
            name: name.to_string(),
            partitions,
            replication_factor,
            configs,
            validate_only: false,
            internal: true,
            assignment: None,
        };
        let started = std::time::Instant::now();
        match self.create_topic(spec).await {
            Ok(_) => {
                tracing::info!(
                    topic = name,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "created internal topic"
                );
                Ok(())
            }
            Err(ControllerError::TopicAlreadyExists(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// A receiver that turns true when the broker starts stopping.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Whether the broker is stopping.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<TopicInfo, ControllerError> {
        let topic = self.controller.delete_topic(name).await?;
        self.reconcile().await?;
        self.groups
            .run(|coordinator, now| coordinator.on_topic_deleted(now, name));
        Ok(topic)
    }
}

/// A started broker.
#[derive(Debug)]
pub struct RunningBroker {
    /// The shared state (tests inspect it).
    pub broker: Arc<Broker>,
    /// The bound client listener address.
    pub local_addr: SocketAddr,
    server: JoinHandle<()>,
    duties: JoinHandle<()>,
    cleaner: JoinHandle<()>,
    follower: JoinHandle<()>,
    internal_server: Option<JoinHandle<()>>,
}

/// Starts a broker: binds, opens the data dir, serves until [`RunningBroker::shutdown`].
pub async fn start(mut config: BrokerConfig) -> Result<RunningBroker, StartError> {
    config.check()?;
    log_open_files(&config);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    if config.advertised_port == 0 {
        config.advertised_port = local_addr.port();
    }
    let internal = bind_internal(&config).await?;
    let broker = Broker::open(config).await?;
    let internal_server =
        internal.map(|listener| tokio::spawn(serve_internal(listener, broker.clone())));
    broker.register().await?;
    let server = tokio::spawn(server::serve(
        listener,
        broker.clone(),
        broker.shutdown_signal(),
    ));
    let duties = tokio::spawn(run_duties(broker.clone(), broker.shutdown_signal()));
    let cleaner = tokio::spawn(run_log_cleaner(broker.clone(), broker.shutdown_signal()));
    let follower = tokio::spawn(follow_metadata(broker.clone(), broker.shutdown_signal()));
    tokio::spawn(run_isr_manager(broker.clone(), broker.shutdown_signal()));
    tokio::spawn(run_liveness(broker.clone(), broker.shutdown_signal()));
    tokio::spawn(report_offline_logs(
        broker.clone(),
        broker.shutdown_signal(),
    ));
    tokio::spawn(broker.groups.clone().run_timers(broker.shutdown_signal()));
    tokio::spawn(broker.txns.clone().run_timers(broker.shutdown_signal()));
    let groups = broker.groups.clone();
    let txns = broker.txns.clone();
    tokio::spawn(async move {
        groups.host_and_load().await;
        txns.host_and_load().await;
    });
    tracing::info!(%local_addr, node_id = broker.config.node_id(), data_dir = %broker.config.data_dir.display(), "broker started");
    Ok(RunningBroker {
        broker,
        local_addr,
        server,
        duties,
        cleaner,
        follower,
        internal_server,
    })
}

/// Raises the open-file limit to the hard limit and says how many partitions it leaves room
/// for (see [`open_files`](crate::server::open_files)).
fn log_open_files(config: &BrokerConfig) {
    use crate::server::open_files;
    match open_files::raise_limit() {
        Ok(files) => {
            let partitions = open_files::partition_capacity(
                files.limit,
                u64::try_from(config.max_connections()).unwrap_or(u64::MAX),
                u64::from(config.brokers_in_process),
            );
            tracing::info!(
                limit = files.limit,
                raised_from = ?files.raised_from,
                partitions,
                "open-file limit: room for about this many partition replicas on this broker (three files per segment, descriptors kept for max.connections)"
            );
        }
        Err(error) => tracing::warn!(%error, "cannot read the open-file limit"),
    }
}

/// Binds the internal listener when this broker is one of several voters.
async fn bind_internal(config: &BrokerConfig) -> Result<Option<TcpListener>, StartError> {
    let voters = config
        .quorum_voters()
        .map_err(|e| StartError::Metadata(ControllerError::Storage(e.to_string())))?;
    if voters.is_empty() {
        return Ok(None);
    }
    let addr = match config.internal_listener() {
        Some(addr) => addr,
        None => voters.get(&config.node_id()).cloned().ok_or_else(|| {
            StartError::Metadata(ControllerError::Storage(format!(
                "node.id {} is not in controller.quorum.voters: as an observer it needs \
                 internal.listener",
                config.node_id()
            )))
        })?,
    };
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Internal {
            addr: addr.clone(),
            source,
        })?;
    Ok(Some(listener))
}

/// Serves the internal listener: every connection opens with a magic saying what it carries
/// and must then prove it holds `cluster.secret` ([`peer_auth`]); quorum connections (the
/// quorum magic) go to this broker's voter, replica-fetch connections ([`REPLICA_MAGIC`]) are
/// served as Kafka connections of a [`Principal::Broker`] (the only principal that may fetch
/// as a replica); anything else is closed. At most `max.connections` at once; idle ones close
/// after `connections.max.idle.ms`; frames of at most `internal.socket.request.max.bytes`.
async fn serve_internal(listener: TcpListener, broker: Arc<Broker>) {
    let handler: RpcHandler = broker.controller.quorum().handler();
    // `start` checked that a broker with an internal listener has a secret.
    let Some(secret) = broker.config.cluster_secret() else {
        tracing::error!("the internal listener needs cluster.secret; not serving it");
        return;
    };
    let limits = Limits {
        frame_max_bytes: broker.config.internal_frame_max_bytes(),
        idle: broker.config.connections_max_idle(),
    };
    let mut shutdown = broker.shutdown_signal();
    let permits = Arc::new(tokio::sync::Semaphore::new(
        broker.config.max_connections().max(1),
    ));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((mut stream, peer)) = accepted else {
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "internal listener at its connection limit; closing");
            continue;
        };
        let handler = handler.clone();
        let broker = broker.clone();
        let secret = secret.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut magic = [0u8; 4];
            let opened =
                tokio::time::timeout(peer_auth::HANDSHAKE_TIMEOUT, stream.read_exact(&mut magic))
                    .await;
            if !matches!(opened, Ok(Ok(_))) {
                return;
            }
            if &magic != QUORUM_MAGIC && &magic != REPLICA_MAGIC {
                tracing::debug!(%peer, "internal connection without a known magic; closing");
                return;
            }
            if let Err(error) = peer_auth::accept(&mut stream, &secret, &magic).await {
                tracing::warn!(%peer, %error, "internal connection refused: not a broker of this cluster");
                return;
            }
            if &magic == QUORUM_MAGIC {
                tokio::select! {
                    _ = serve_connection(stream, handler, limits) => {}
                    _ = shutdown.changed() => {}
                }
            } else {
                let _ = stream.set_nodelay(true);
                let signal = broker.shutdown_signal();
                server::connection::run(stream, peer, broker, signal, Principal::Broker).await;
            }
        });
    }
}

/// Broker liveness (Kafka's BrokerHeartbeat and session timeout): every
/// `broker.heartbeat.interval.ms` this broker heartbeats the active controller (the active
/// controller confirms its leadership with a quorum instead). A broker out of contact for
/// `broker.session.timeout.ms` has been fenced and replaced as leader on the other side, so
/// it stops acting as leader until contact is back ([`ReplicaManager::set_cut_off`]). On the active
/// controller, a registered broker not heard from for `broker.session.timeout.ms` (counted from
/// when this broker became the controller, at the earliest) is fenced, a fenced broker that
/// heartbeats again is unfenced, and every `leader.imbalance.check.interval.seconds` partitions
/// go back to their preferred leaders (`auto.leader.rebalance.enable`).
async fn run_liveness(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_millis(broker.config.broker_heartbeat_interval_ms().max(1));
    let session = Duration::from_millis(broker.config.broker_session_timeout_ms());
    let quorum = broker.controller.quorum().clone();
    let me = broker.config.node_id();
    let mut leading_since: Option<tokio::time::Instant> = None;
    let rebalance_every = Duration::from_secs(broker.config.leader_imbalance_check_interval_s());
    let mut last_rebalance = tokio::time::Instant::now();
    let mut contact = QuorumContact::new(std::time::Instant::now(), session);
    // A broker that is its own quorum is never cut off from it.
    let clustered = broker
        .config
        .quorum_voters()
        .is_ok_and(|voters| !voters.is_empty());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        // In contact: the active controller took our heartbeat, or, as the active
        // controller, a quorum of voters confirmed we still lead. Bounded, so an unreachable
        // old controller does not hold the loop for the whole propose timeout.
        let round = async {
            if quorum.leader() == Some(me) {
                quorum.confirm_leadership().await
            } else {
                quorum.heartbeat().await
            }
        };
        if let Some(failure) = quorum.failure() {
            // As Kafka when its metadata log directory fails: this broker cannot follow the
            // metadata any more, so it stops rather than serve clients from a frozen view.
            tracing::error!(
                %failure,
                "the metadata quorum stopped on this broker (its metadata log failed): \
                 stopping the broker"
            );
            broker.fatal.send_replace(Some(failure));
            return;
        }
        let delivered = match tokio::time::timeout(session / 2, round).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::debug!(%error, "heartbeat not delivered");
                false
            }
            Err(_) => {
                tracing::debug!("heartbeat not answered in half a session");
                false
            }
        };
        match contact.observe(delivered || !clustered, std::time::Instant::now()) {
            Some(ContactChange::CutOff { silent }) => tracing::warn!(
                silent_ms = silent.as_millis() as u64,
                "no contact with the controller quorum for longer than \
                 broker.session.timeout.ms: partitions whose followers stopped fetching are led \
                 by nobody here until it is back"
            ),
            Some(ContactChange::Restored) => {
                tracing::warn!("in contact with the controller quorum again");
                broker.replicas.set_cut_off(false);
            }
            None => {}
        }
        if contact.is_cut_off() {
            // Every round: followers fall silent after the cut, not with it.
            broker.replicas.set_cut_off(true);
        }
        if quorum.leader() != Some(me) {
            if leading_since.take().is_some() {
                quorum.clear_heartbeats();
            }
            continue;
        }
        let now = tokio::time::Instant::now();
        let since = *leading_since.get_or_insert(now);
        let seen = quorum.heartbeats();
        let changes = crate::cluster::decisions::fencing_changes(
            &broker.controller.image(),
            me,
            |node| seen.get(&node).map(|at| now.duration_since(*at)),
            now.duration_since(since),
            session,
        );
        for (node, fenced) in changes {
            if fenced {
                tracing::warn!(node, "broker missed its session timeout: fencing it");
            } else {
                tracing::info!(node, "fenced broker is heartbeating again: unfencing it");
            }
            if let Err(error) = broker.controller.set_fenced(node, fenced).await {
                tracing::debug!(node, %error, "fencing change not made");
            }
        }
        if let Err(error) = broker.controller.elect_unclean_leaders().await {
            tracing::debug!(%error, "unclean leader election not made");
        }
        if broker.config.auto_leader_rebalance()
            && now.duration_since(last_rebalance) >= rebalance_every
        {
            last_rebalance = now;
            if let Err(error) = broker.controller.elect_preferred_leaders().await {
                tracing::debug!(%error, "preferred leader election not made");
            }
        }
    }
}

/// A storage fault takes a log offline, not the data (as Kafka reports offline log
/// directories): every quarter second the partitions whose logs went offline here and that the
/// metadata does not show offline yet are reported to the controller, which moves their
/// leadership to healthy ISR members and takes these copies out of the ISRs. Retried until the
/// metadata shows them.
async fn report_offline_logs(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let me = broker.config.node_id();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.changed() => return,
        }
        let image = broker.controller.image();
        let unreported: Vec<(uuid::Uuid, i32)> = broker
            .replicas
            .offline_partitions()
            .into_iter()
            .filter(|(topic_id, index)| {
                image.topic_by_id(topic_id).is_some()
                    && !image.replica_offline(me, *topic_id, *index)
            })
            .collect();
        if unreported.is_empty() {
            continue;
        }
        tracing::error!(partitions = ?unreported, "logs offline after storage errors: asking the controller to move their leadership");
        if let Err(error) = broker.controller.report_offline(unreported).await {
            tracing::warn!(%error, "offline logs not reported yet");
        }
    }
}

/// The leader side of the ISR: every quarter of `replica.lag.time.max.ms` (100 ms to 5 s),
/// each led partition whose followers fell behind or caught up asks the controller to change
/// its ISR; a fenced broker or one in controlled shutdown is not asked back in (KIP-841). A
/// refused change is recomputed next round; a refusal on its own epoch also ends its pending
/// state ([`Partition::isr_change_not_made`](crate::replica::Partition::isr_change_not_made)).
async fn run_isr_manager(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let lag_max_ms = broker.config.replica_lag_time_max_ms();
    let every = Duration::from_millis(
        u64::try_from(lag_max_ms / 4)
            .unwrap_or(1000)
            .clamp(100, 5000),
    );
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let now = now_ms();
        let image = broker.controller.image();
        let eligible = |node: i32| image.registrations.get(&node).is_some_and(|r| !r.fenced);
        for partition in broker.replicas.all_partitions() {
            let Some(change) = partition.isr_change(now, lag_max_ms, eligible) else {
                continue;
            };
            let based_on = change.partition_epoch;
            tracing::info!(topic = partition.topic(), partition = partition.index(), isr = ?change.isr, "asking for an ISR change");
            if let Err(error) = broker
                .controller
                .change_isr(
                    partition.topic_id(),
                    partition.index(),
                    change.partition_epoch,
                    change.isr,
                )
                .await
            {
                tracing::debug!(topic = partition.topic(), partition = partition.index(), %error, "ISR change not made");
                partition.isr_change_not_made(based_on, error.not_made());
            }
        }
    }
}

/// Applies every new metadata image: hosts and drops partitions, moves leadership, and hosts
/// the groups of the `__consumer_offsets` partitions and the transactional ids of the
/// `__transaction_state` partitions this broker now leads.
async fn follow_metadata(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut images = broker.controller.subscribe();
    loop {
        tokio::select! {
            changed = images.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
        images.borrow_and_update();
        if let Err(error) = broker.reconcile().await {
            tracing::warn!(%error, "applying metadata to the hosted partitions failed");
        }
        broker.groups.host_and_load().await;
        broker.txns.host_and_load().await;
    }
}

impl RunningBroker {
    /// Resolves when the broker cannot go on (its metadata log failed): the caller should
    /// shut it down and exit with an error. Pending forever otherwise.
    pub async fn failed(&self) -> String {
        let mut fatal = self.broker.fatal.subscribe();
        loop {
            if let Some(failure) = fatal.borrow_and_update().clone() {
                return failure;
            }
            if fatal.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// `host:port` for a client's `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!(
            "{}:{}",
            self.broker.config.advertised_host, self.broker.config.advertised_port
        )
    }

    /// Hands leadership over (`controlled.shutdown.enable`, see
    /// [`Broker::controlled_shutdown`]), stops accepting, drains connections, flushes and
    /// closes the logs.
    pub async fn shutdown(self) -> Result<(), LogError> {
        // Not when the metadata log failed: nothing could be proposed.
        if self.broker.config.controlled_shutdown()
            && self.broker.controller.quorum().failure().is_none()
        {
            self.broker.controlled_shutdown().await;
        }
        self.broker.shutdown.send_replace(true);
        self.broker.groups.shutdown();
        self.broker.txns.shutdown();
        let _ = self.server.await;
        let _ = self.duties.await;
        // A cleaning in progress finishes (or aborts) before the logs close.
        let _ = self.cleaner.await;
        let _ = self.follower.await;
        self.broker.fetchers.join().await;
        let broker = self.broker;
        let replicas = broker.replicas.clone();
        tokio::task::spawn_blocking(move || replicas.shutdown())
            .await
            .map_err(|e| LogError::Io(std::io::Error::other(e.to_string())))??;
        broker.controller.shutdown().await;
        if let Some(internal) = self.internal_server {
            let _ = internal.await;
        }
        tracing::info!("broker stopped cleanly");
        Ok(())
    }
}

/// Periodic log duties: time-based rolls, retention and checkpoints every
/// `log.retention.check.interval.ms`; idle producers' state expires every
/// `producer.id.expiration.check.interval.ms`; the high-watermark checkpoint every
/// `replica.high.watermark.checkpoint.interval.ms`; `flush.ms` flushes as often as the smallest `flush.ms`
/// asks (at most every 10 ms, at least every second).
async fn run_duties(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let check_every = Duration::from_millis(broker.config.retention_check_interval_ms().max(1));
    let mut next_check = tokio::time::Instant::now() + check_every;
    let checkpoint_every = broker.config.high_watermark_checkpoint_interval();
    let mut next_checkpoint = tokio::time::Instant::now() + checkpoint_every;
    let expire_every = broker.config.producer_id_expiration_check_interval();
    let mut next_expiry = tokio::time::Instant::now() + expire_every;
    loop {
        let flush_ms = broker.replicas.min_flush_ms().clamp(10, 1000);
        let tick = Duration::from_millis(u64::try_from(flush_ms).unwrap_or(1000));
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.replicas.run_time_flushes(now_ms())).await;
        if tokio::time::Instant::now() >= next_check {
            let b = broker.clone();
            let _ = tokio::task::spawn_blocking(move || b.replicas.run_log_duties(now_ms())).await;
            next_check = tokio::time::Instant::now() + check_every;
        }
        if tokio::time::Instant::now() >= next_checkpoint {
            let b = broker.clone();
            let written =
                tokio::task::spawn_blocking(move || b.replicas.checkpoint_high_watermarks()).await;
            if let Ok(Err(e)) = written {
                tracing::warn!(error = %e, "writing the high-watermark checkpoint failed");
            }
            next_checkpoint = tokio::time::Instant::now() + checkpoint_every;
        }
        if tokio::time::Instant::now() >= next_expiry {
            let expiration_ms = broker.config.producer_id_expiration_ms();
            broker.replicas.expire_producers(now_ms(), expiration_ms);
            next_expiry = tokio::time::Instant::now() + expire_every;
        }
    }
}

/// The log cleaner: compacts partitions whose `cleanup.policy` includes `compact` every
/// `log.cleaner.backoff.ms`, at once again while a run leaves work behind.
async fn run_log_cleaner(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    if !broker.config.log_cleaner_enable() {
        return;
    }
    let backoff = Duration::from_millis(broker.config.log_cleaner_backoff_ms().max(1));
    let mut wait = backoff;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        let b = broker.clone();
        let run = tokio::task::spawn_blocking(move || b.replicas.run_log_cleaner(now_ms())).await;
        wait = match run {
            Ok(run) if run.more_work() => Duration::ZERO,
            Ok(_) => backoff,
            Err(error) => {
                tracing::error!(%error, "log cleaner task failed");
                backoff
            }
        };
    }
}
