//! The metadata state machine: the [`MetadataImage`] every voter builds by applying the
//! committed log, and its snapshots.
//!
//! The image lives in memory and is published through a `watch` channel after every applied
//! batch, so request handlers read an immutable `Arc` and never wait on Raft. Snapshots are
//! the image as JSON; the latest one is kept in `snapshot.json` in the quorum directory (written
//! to a temporary file, fsynced and renamed), and a restarting voter starts from it and
//! re-applies the committed entries after it.
//!
//! [`apply_command`] is a pure function of the image and the command: the same committed log
//! gives the same image on every voter.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::types::{kafka_id, Applied, MetadataCommand, Rejection, TypeConfig};
use crate::cluster::metadata::{collision_key, MetadataImage, PartitionInfo};
use uuid::Uuid;

const SNAPSHOT_FILE: &str = "snapshot.json";

/// The snapshot as stored on disk: its meta and the image.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    image: MetadataImage,
}

#[derive(Debug)]
struct Inner {
    image: MetadataImage,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    /// The latest snapshot: meta and the serialised image.
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    snapshots_built: u64,
}

/// openraft's state machine over the metadata image. Cloning shares it (the snapshot builder
/// is a clone).
#[derive(Debug, Clone)]
pub struct MetadataStateMachine {
    dir: PathBuf,
    inner: Arc<Mutex<Inner>>,
    publish: Arc<watch::Sender<Arc<MetadataImage>>>,
}

fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl MetadataStateMachine {
    /// Opens the state machine in `dir`, starting from the stored snapshot if there is one.
    /// `cluster_id` is stamped on the image.
    pub fn open(dir: &Path, cluster_id: &str) -> std::io::Result<MetadataStateMachine> {
        let mut inner = Inner {
            image: MetadataImage {
                cluster_id: cluster_id.to_string(),
                controller_id: -1,
                ..MetadataImage::default()
            },
            last_applied: None,
            membership: StoredMembership::default(),
            snapshot: None,
            snapshots_built: 0,
        };
        match std::fs::read(dir.join(SNAPSHOT_FILE)) {
            Ok(bytes) => {
                let stored: StoredSnapshot = serde_json::from_slice(&bytes).map_err(io_error)?;
                let data = serde_json::to_vec(&stored.image).map_err(io_error)?;
                inner.image = stored.image;
                inner.image.reindex();
                inner.last_applied = stored.meta.last_log_id;
                inner.membership = stored.meta.last_membership.clone();
                inner.snapshot = Some((stored.meta, data));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (publish, _) = watch::channel(Arc::new(inner.image.clone()));
        Ok(MetadataStateMachine {
            dir: dir.to_path_buf(),
            inner: Arc::new(Mutex::new(inner)),
            publish: Arc::new(publish),
        })
    }

    /// A receiver of every published image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.publish.subscribe()
    }

    // The error type is openraft's, fixed by the traits this serves.
    #[allow(clippy::result_large_err)]
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StorageError<u64>> {
        self.inner.lock().map_err(|_| {
            StorageIOError::read_state_machine(&io_error("state machine lock poisoned")).into()
        })
    }

    fn store_snapshot(
        &self,
        meta: &SnapshotMeta<u64, BasicNode>,
        image: &MetadataImage,
    ) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&StoredSnapshot {
            meta: meta.clone(),
            image: image.clone(),
        })
        .map_err(io_error)?;
        super::write_atomically(&self.dir.join(SNAPSHOT_FILE), &bytes)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MetadataStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let (meta, image) = {
            let mut inner = self.lock()?;
            inner.snapshots_built += 1;
            let snapshot_id = match inner.last_applied {
                Some(id) => format!(
                    "{}-{}-{}",
                    id.leader_id.term, id.index, inner.snapshots_built
                ),
                None => format!("0-0-{}", inner.snapshots_built),
            };
            let meta = SnapshotMeta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
                snapshot_id,
            };
            (meta, inner.image.clone())
        };
        let data = serde_json::to_vec(&image)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &io_error(e)))?;
        self.store_snapshot(&meta, &image)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.lock()?.snapshot = Some((meta.clone(), data.clone()));
        tracing::debug!(snapshot = %meta.snapshot_id, "metadata snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MetadataStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let inner = self.lock()?;
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<u64>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        let image = {
            let mut inner = self.lock()?;
            for entry in entries {
                inner.last_applied = Some(entry.log_id);
                // The newest entry's proposer is the active controller; every new leader
                // commits a blank entry first, so a change of leader shows up here.
                inner.image.controller_id = kafka_id(entry.log_id.leader_id.node_id);
                let outcome = match entry.payload {
                    EntryPayload::Blank => Applied::Done,
                    EntryPayload::Normal(command) => {
                        let outcome = apply_command(&mut inner.image, &command);
                        if let Applied::Rejected(why) = &outcome {
                            tracing::debug!(?command, %why, "metadata command rejected");
                        }
                        outcome
                    }
                    EntryPayload::Membership(membership) => {
                        inner.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Applied::Done
                    }
                };
                results.push(outcome);
            }
            Arc::new(inner.image.clone())
        };
        self.publish.send_replace(image);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let mut image: MetadataImage = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &io_error(e)))?;
        image.reindex();
        self.store_snapshot(meta, &image)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let published = {
            let mut inner = self.lock()?;
            inner.image = image;
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            inner.snapshot = Some((meta.clone(), data));
            Arc::new(inner.image.clone())
        };
        tracing::info!(snapshot = %meta.snapshot_id, "installed metadata snapshot from the leader");
        self.publish.send_replace(published);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let inner = self.lock()?;
        Ok(inner.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}

/// Applies one command to the image, or refuses it and leaves the image as it was.
pub fn apply_command(image: &mut MetadataImage, command: &MetadataCommand) -> Applied {
    match apply_inner(image, command) {
        Ok(applied) => applied,
        Err(why) => Applied::Rejected(why),
    }
}

fn apply_inner(image: &mut MetadataImage, command: &MetadataCommand) -> Result<Applied, Rejection> {
    match command {
        MetadataCommand::RegisterBroker {
            broker,
            registration,
        } => {
            let mut registration = registration.clone();
            registration.fenced = false;
            image.brokers.insert(broker.node_id, broker.clone());
            image.registrations.insert(broker.node_id, registration);
            unfence(image, broker.node_id);
            Ok(Applied::Done)
        }
        MetadataCommand::FenceBroker { node_id } => {
            let registration = image
                .registrations
                .get_mut(node_id)
                .ok_or(Rejection::UnknownBroker(*node_id))?;
            registration.fenced = true;
            fence(image, *node_id);
            Ok(Applied::Done)
        }
        MetadataCommand::ControlledShutdown {
            node_id,
            incarnation,
        } => {
            let registration = image
                .registrations
                .get_mut(node_id)
                .ok_or(Rejection::UnknownBroker(*node_id))?;
            if registration.incarnation != *incarnation {
                return Err(Rejection::StaleChange(format!(
                    "broker {node_id} registered again since it asked to shut down"
                )));
            }
            registration.fenced = true;
            registration.shutting_down = true;
            fence(image, *node_id);
            Ok(Applied::Done)
        }
        MetadataCommand::UnfenceBroker { node_id } => {
            let registration = image
                .registrations
                .get_mut(node_id)
                .ok_or(Rejection::UnknownBroker(*node_id))?;
            registration.fenced = false;
            unfence(image, *node_id);
            Ok(Applied::Done)
        }
        MetadataCommand::CreateTopic { topic } => {
            if image
                .topics
                .get(&topic.name)
                .is_some_and(|t| t.id == topic.id)
            {
                // The same command again (a forwarded proposal retried after its answer was
                // lost): it is already applied.
                return Ok(Applied::Done);
            }
            if image.topics.contains_key(&topic.name) {
                return Err(Rejection::TopicAlreadyExists(topic.name.clone()));
            }
            let key = collision_key(&topic.name);
            if let Some(other) = image.topics.keys().find(|t| collision_key(t) == key) {
                return Err(Rejection::InvalidTopic(format!(
                    "topic '{}' collides with existing topic '{other}' ('.' and '_' are equivalent)",
                    topic.name
                )));
            }
            if image.topic_ids.contains_key(&topic.id) {
                return Err(Rejection::Invalid(format!(
                    "topic id {} is taken",
                    topic.id
                )));
            }
            image.topics.insert(topic.name.clone(), topic.clone());
            image.topic_ids.insert(topic.id, topic.name.clone());
            Ok(Applied::Done)
        }
        MetadataCommand::DeleteTopic { name, id } => {
            match image.topics.get(name) {
                Some(t) if t.id == *id => {}
                _ => return Err(Rejection::UnknownTopic(name.clone())),
            }
            image.topics.remove(name);
            image.topic_ids.remove(id);
            Ok(Applied::Done)
        }
        MetadataCommand::ChangePartition {
            topic_id,
            partition,
            expected_partition_epoch,
            leader,
            isr,
        } => {
            let name = image
                .topic_ids
                .get(topic_id)
                .cloned()
                .ok_or_else(|| Rejection::UnknownTopic(topic_id.to_string()))?;
            let registrations = &image.registrations;
            let p = image
                .topics
                .get_mut(&name)
                .and_then(|t| {
                    usize::try_from(*partition)
                        .ok()
                        .and_then(|i| t.partitions.get_mut(i))
                })
                .ok_or_else(|| Rejection::UnknownTopic(format!("{name}-{partition}")))?;
            if p.partition_epoch != *expected_partition_epoch {
                return Err(Rejection::StaleChange(format!(
                    "{name}-{partition} is at partition epoch {}, the change was based on {}",
                    p.partition_epoch, expected_partition_epoch
                )));
            }
            if let Some(isr) = isr {
                if isr.is_empty() || isr.iter().any(|r| !p.replicas.contains(r)) {
                    return Err(Rejection::Invalid(format!(
                        "ISR {isr:?} is not a non-empty subset of the replicas {:?}",
                        p.replicas
                    )));
                }
            }
            if let Some(leader) = leader {
                let in_isr = isr.as_ref().unwrap_or(&p.isr).contains(leader);
                if *leader != -1 && !in_isr {
                    return Err(Rejection::Invalid(format!(
                        "leader {leader} is not in the ISR of {name}-{partition}"
                    )));
                }
            }
            let offline = |node: &i32| {
                registrations
                    .get(node)
                    .is_some_and(|r| r.offline_replicas.contains(&(*topic_id, *partition)))
            };
            if leader.as_ref().is_some_and(&offline) {
                return Err(Rejection::Invalid(format!(
                    "the replica of {name}-{partition} on broker {leader:?} is offline"
                )));
            }
            if let Some(isr) = isr {
                let joining: Vec<&i32> = isr.iter().filter(|r| !p.isr.contains(r)).collect();
                if let Some(node) = joining.iter().find(|r| offline(r)) {
                    return Err(Rejection::Invalid(format!(
                        "the replica of {name}-{partition} on broker {node} is offline"
                    )));
                }
                // As Kafka's controller (KIP-841): a fenced broker, or one in controlled
                // shutdown (whose follower fetches go on until it stops), may not join an ISR.
                let fenced = |node: &i32| registrations.get(node).is_none_or(|r| r.fenced);
                if let Some(node) = joining.iter().find(|node| fenced(node)) {
                    return Err(Rejection::Invalid(format!(
                        "broker {node} is fenced or shutting down: not eligible for the ISR of \
                         {name}-{partition}"
                    )));
                }
            }
            if let Some(isr) = isr {
                p.isr = isr.clone();
            }
            if let Some(leader) = leader {
                if *leader != p.leader {
                    p.leader = *leader;
                    p.leader_epoch += 1;
                }
            }
            p.partition_epoch += 1;
            Ok(Applied::Done)
        }
        MetadataCommand::ReplicasOffline {
            node_id,
            partitions,
        } => {
            let registration = image
                .registrations
                .get_mut(node_id)
                .ok_or(Rejection::UnknownBroker(*node_id))?;
            registration
                .offline_replicas
                .extend(partitions.iter().copied());
            take_out(image, *node_id, |topic_id, index| {
                partitions.contains(&(topic_id, index))
            });
            Ok(Applied::Done)
        }
        MetadataCommand::AllocateProducerIds { node_id, count } => {
            if !image.registrations.contains_key(node_id) {
                return Err(Rejection::UnknownBroker(*node_id));
            }
            if *count < 1 {
                return Err(Rejection::Invalid(format!("producer id block of {count}")));
            }
            let first = image.next_producer_id;
            image.next_producer_id = first.saturating_add(i64::from(*count));
            Ok(Applied::ProducerIds {
                first,
                count: *count,
            })
        }
    }
}

fn live(image: &MetadataImage, node: i32) -> bool {
    image.registrations.get(&node).is_some_and(|r| !r.fenced)
}

/// A fenced broker leaves every ISR it is not the last member of, and partitions it led move
/// to the first live replica of the remaining ISR (in replica order, so the preferred leader
/// wins when it can), or to no leader at all: never outside the ISR (no unclean election).
fn fence(image: &mut MetadataImage, node: i32) {
    take_out(image, node, |_, _| true);
}

/// Takes `node`'s replicas of the partitions `which` selects out of service: out of every ISR
/// they are not the last member of, and out of leadership (to the first live replica of the
/// remaining ISR whose replica is not offline, in replica order, or to no leader), with new
/// leader and partition epochs.
fn take_out(image: &mut MetadataImage, node: i32, which: impl Fn(Uuid, i32) -> bool) {
    let live_nodes: Vec<i32> = image
        .registrations
        .iter()
        .filter(|(_, r)| !r.fenced)
        .map(|(id, _)| *id)
        .collect();
    let registrations = &image.registrations;
    for topic in image.topics.values_mut() {
        let topic_id = topic.id;
        for p in &mut topic.partitions {
            if !p.replicas.contains(&node) || !which(topic_id, p.index) {
                continue;
            }
            let mut changed = false;
            if p.isr.len() > 1 && p.isr.contains(&node) {
                p.isr.retain(|r| *r != node);
                changed = true;
            }
            if p.leader == node {
                let eligible: Vec<i32> = live_nodes
                    .iter()
                    .copied()
                    .filter(|r| {
                        *r != node
                            && !registrations.get(r).is_some_and(|reg| {
                                reg.offline_replicas.contains(&(topic_id, p.index))
                            })
                    })
                    .collect();
                p.leader = elect(p, &eligible);
                p.leader_epoch += 1;
                changed = true;
            }
            if changed {
                p.partition_epoch += 1;
            }
        }
    }
}

/// A returning broker takes the lead of partitions that have none and whose ISR holds it.
fn unfence(image: &mut MetadataImage, node: i32) {
    if !live(image, node) {
        return;
    }
    let offline = image
        .registrations
        .get(&node)
        .map(|r| r.offline_replicas.clone())
        .unwrap_or_default();
    for topic in image.topics.values_mut() {
        for p in &mut topic.partitions {
            if p.leader == -1 && p.isr.contains(&node) && !offline.contains(&(topic.id, p.index)) {
                p.leader = node;
                p.leader_epoch += 1;
                p.partition_epoch += 1;
            }
        }
    }
}

fn elect(p: &PartitionInfo, live_nodes: &[i32]) -> i32 {
    p.replicas
        .iter()
        .copied()
        .find(|r| p.isr.contains(r) && live_nodes.contains(r))
        .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;
    use crate::cluster::metadata::{BrokerInfo, BrokerRegistration, TopicInfo};

    fn register(image: &mut MetadataImage, node_id: i32) {
        let applied = apply_command(
            image,
            &MetadataCommand::RegisterBroker {
                broker: BrokerInfo {
                    node_id,
                    host: "127.0.0.1".into(),
                    port: 9092 + node_id as u16,
                    rack: None,
                },
                registration: BrokerRegistration {
                    incarnation: Uuid::new_v4(),
                    internal_addr: format!("127.0.0.1:{}", 19092 + node_id),
                    fenced: true,
                    partitions_max: None,
                    offline_replicas: Default::default(),
                    shutting_down: false,
                },
            },
        );
        assert_eq!(applied, Applied::Done);
    }

    fn topic(name: &str, replicas: &[&[i32]]) -> TopicInfo {
        TopicInfo {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions: replicas
                .iter()
                .enumerate()
                .map(|(i, r)| PartitionInfo {
                    index: i as i32,
                    leader: r[0],
                    leader_epoch: 0,
                    replicas: r.to_vec(),
                    isr: r.to_vec(),
                    partition_epoch: 0,
                })
                .collect(),
            configs: BTreeMap::new(),
            internal: false,
        }
    }

    fn three_brokers() -> MetadataImage {
        let mut image = MetadataImage::default();
        for n in 1..=3 {
            register(&mut image, n);
        }
        image
    }

    #[test]
    fn create_and_delete_topics_check_names_and_ids() {
        let mut image = three_brokers();
        let t = topic("orders", &[&[1, 2, 3]]);
        let create = MetadataCommand::CreateTopic { topic: t.clone() };
        assert_eq!(apply_command(&mut image, &create), Applied::Done);
        // The same command again (a retried forward) is already applied; another topic of the
        // same name is refused.
        let before = serde_json::to_string(&image).unwrap();
        assert_eq!(apply_command(&mut image, &create), Applied::Done);
        assert_eq!(serde_json::to_string(&image).unwrap(), before);
        let other = MetadataCommand::CreateTopic {
            topic: topic("orders", &[&[1, 2, 3]]),
        };
        assert!(matches!(
            apply_command(&mut image, &other),
            Applied::Rejected(Rejection::TopicAlreadyExists(_))
        ));
        let colliding = MetadataCommand::CreateTopic {
            topic: topic("orders", &[&[1]]).clone(),
        };
        let mut renamed = colliding.clone();
        if let MetadataCommand::CreateTopic { topic } = &mut renamed {
            topic.name = "ord_ers".into();
        }
        assert_eq!(apply_command(&mut image, &renamed), Applied::Done);
        let mut dotted = colliding;
        if let MetadataCommand::CreateTopic { topic } = &mut dotted {
            topic.name = "ord.ers".into();
        }
        assert!(matches!(
            apply_command(&mut image, &dotted),
            Applied::Rejected(Rejection::InvalidTopic(_))
        ));
        let wrong_id = MetadataCommand::DeleteTopic {
            name: "orders".into(),
            id: Uuid::new_v4(),
        };
        assert!(matches!(
            apply_command(&mut image, &wrong_id),
            Applied::Rejected(Rejection::UnknownTopic(_))
        ));
        let delete = MetadataCommand::DeleteTopic {
            name: "orders".into(),
            id: t.id,
        };
        assert_eq!(apply_command(&mut image, &delete), Applied::Done);
        assert!(image.topic("orders").is_none() && image.topic_by_id(&t.id).is_none());
    }

    /// A storage fault takes a replica out of service, not the broker (issue 11, item 5):
    /// its partition's leadership moves inside the ISR, the replica leaves the ISR where it is
    /// not the last member, and it neither leads (no preferred election, no unfencing, no
    /// leader change) nor rejoins the ISR until the broker registers again.
    #[test]
    fn offline_replicas_lose_leadership_and_isr_until_the_broker_registers_again() {
        let mut image = three_brokers();
        let t = topic("data", &[&[1, 2, 3], &[1]]);
        let id = t.id;
        apply_command(&mut image, &MetadataCommand::CreateTopic { topic: t });
        let offline = MetadataCommand::ReplicasOffline {
            node_id: 1,
            partitions: vec![(id, 0), (id, 1)],
        };
        assert_eq!(apply_command(&mut image, &offline), Applied::Done);
        let p0 = image.partition("data", 0).unwrap().clone();
        assert_eq!(
            (p0.leader, p0.leader_epoch, p0.isr.clone()),
            (2, 1, vec![2, 3])
        );
        // The only copy of partition 1: no leader, still the (last) ISR member.
        let p1 = image.partition("data", 1).unwrap().clone();
        assert_eq!((p1.leader, p1.isr.clone()), (-1, vec![1]));
        assert!(image.replica_offline(1, id, 0));
        // Neither a preferred election nor an explicit move nor an ISR expansion takes it back.
        assert!(crate::cluster::decisions::preferred_leader_changes(&image).is_empty());
        for (leader, isr) in [(Some(1), None), (None, Some(vec![1, 2, 3]))] {
            let change = MetadataCommand::ChangePartition {
                topic_id: id,
                partition: 0,
                expected_partition_epoch: p0.partition_epoch,
                leader,
                isr,
            };
            assert!(matches!(
                apply_command(&mut image, &change),
                Applied::Rejected(Rejection::Invalid(_))
            ));
        }
        // Unfencing does not make it lead its leaderless partition either.
        apply_command(&mut image, &MetadataCommand::FenceBroker { node_id: 1 });
        apply_command(&mut image, &MetadataCommand::UnfenceBroker { node_id: 1 });
        assert_eq!(image.partition("data", 1).unwrap().leader, -1);
        // A new registration (a restart, which recovers the logs) clears it.
        register(&mut image, 1);
        assert!(!image.replica_offline(1, id, 0));
        assert_eq!(image.partition("data", 1).unwrap().leader, 1);
    }

    /// Kafka's controlled shutdown: the stopping broker's leaderships move inside the ISR, it
    /// leaves the ISRs it is not the last member of and may not rejoin one (KIP-841), a request
    /// of an earlier incarnation changes nothing, and registering again clears it.
    #[test]
    fn controlled_shutdown_moves_leadership_and_keeps_the_broker_out_of_the_isr() {
        let mut image = three_brokers();
        let t = topic("t", &[&[1, 2, 3], &[2, 1, 3], &[1]]);
        let id = t.id;
        apply_command(&mut image, &MetadataCommand::CreateTopic { topic: t });
        let incarnation = image.registrations[&1].incarnation;
        let stale = MetadataCommand::ControlledShutdown {
            node_id: 1,
            incarnation: Uuid::new_v4(),
        };
        assert!(matches!(
            apply_command(&mut image, &stale),
            Applied::Rejected(Rejection::StaleChange(_))
        ));
        assert_eq!(image.partition("t", 0).unwrap().leader, 1);
        let stop = MetadataCommand::ControlledShutdown {
            node_id: 1,
            incarnation,
        };
        assert_eq!(apply_command(&mut image, &stop), Applied::Done);
        let r = &image.registrations[&1];
        assert!(r.fenced && r.shutting_down);
        let p0 = image.partition("t", 0).unwrap().clone();
        assert_eq!(
            (p0.leader, p0.leader_epoch, p0.isr.clone()),
            (2, 1, vec![2, 3])
        );
        assert_eq!(image.partition("t", 1).unwrap().isr, vec![2, 3]);
        // The only copy stays with it: nobody else could lead it.
        assert_eq!(image.partition("t", 2).unwrap().isr, vec![1]);
        // The leader of partition 0 sees it caught up and asks to take it back: refused.
        let expand = MetadataCommand::ChangePartition {
            topic_id: id,
            partition: 0,
            expected_partition_epoch: p0.partition_epoch,
            leader: None,
            isr: Some(vec![2, 3, 1]),
        };
        assert!(matches!(
            apply_command(&mut image, &expand),
            Applied::Rejected(Rejection::Invalid(_))
        ));
        // Restarted: a new registration, eligible again.
        register(&mut image, 1);
        assert!(!image.registrations[&1].shutting_down);
        assert_eq!(apply_command(&mut image, &expand), Applied::Done);
        assert_eq!(image.partition("t", 0).unwrap().isr, vec![2, 3, 1]);
    }

    #[test]
    fn fencing_moves_leadership_within_the_isr_and_unfencing_restores_leaderless_partitions() {
        let mut image = three_brokers();
        let t = topic("t", &[&[1, 2, 3], &[2, 3, 1], &[1]]);
        apply_command(&mut image, &MetadataCommand::CreateTopic { topic: t });
        apply_command(&mut image, &MetadataCommand::FenceBroker { node_id: 1 });
        let p0 = image.partition("t", 0).unwrap().clone();
        assert_eq!(
            (p0.leader, p0.leader_epoch, p0.isr.clone()),
            (2, 1, vec![2, 3])
        );
        let p1 = image.partition("t", 1).unwrap().clone();
        assert_eq!(
            (p1.leader, p1.leader_epoch, p1.isr.clone()),
            (2, 0, vec![2, 3])
        );
        assert_eq!(p1.partition_epoch, 1);
        // The last ISR member stays in the ISR and the partition has no leader.
        let p2 = image.partition("t", 2).unwrap().clone();
        assert_eq!((p2.leader, p2.isr.clone()), (-1, vec![1]));
        // Fencing 2 as well: p0 goes to 3, the only live ISR member.
        apply_command(&mut image, &MetadataCommand::FenceBroker { node_id: 2 });
        assert_eq!(image.partition("t", 0).unwrap().leader, 3);
        apply_command(&mut image, &MetadataCommand::UnfenceBroker { node_id: 1 });
        let p2 = image.partition("t", 2).unwrap();
        assert_eq!((p2.leader, p2.leader_epoch), (1, 2));
        // Broker 1 is not back in p0's ISR until the leader adds it.
        assert_eq!(image.partition("t", 0).unwrap().isr, vec![3]);
    }

    #[test]
    fn partition_changes_are_fenced_by_the_partition_epoch() {
        let mut image = three_brokers();
        let t = topic("t", &[&[1, 2, 3]]);
        let id = t.id;
        apply_command(&mut image, &MetadataCommand::CreateTopic { topic: t });
        let shrink = MetadataCommand::ChangePartition {
            topic_id: id,
            partition: 0,
            expected_partition_epoch: 0,
            leader: None,
            isr: Some(vec![1, 2]),
        };
        assert_eq!(apply_command(&mut image, &shrink), Applied::Done);
        assert!(matches!(
            apply_command(&mut image, &shrink),
            Applied::Rejected(Rejection::StaleChange(_))
        ));
        let outside = MetadataCommand::ChangePartition {
            topic_id: id,
            partition: 0,
            expected_partition_epoch: 1,
            leader: Some(3),
            isr: None,
        };
        assert!(matches!(
            apply_command(&mut image, &outside),
            Applied::Rejected(Rejection::Invalid(_))
        ));
        let unknown = MetadataCommand::ChangePartition {
            topic_id: id,
            partition: 7,
            expected_partition_epoch: 1,
            leader: None,
            isr: None,
        };
        assert!(matches!(
            apply_command(&mut image, &unknown),
            Applied::Rejected(Rejection::UnknownTopic(_))
        ));
        let p = image.partition("t", 0).unwrap();
        assert_eq!(
            (p.isr.clone(), p.partition_epoch, p.leader_epoch),
            (vec![1, 2], 1, 0)
        );
    }

    #[test]
    fn producer_id_blocks_do_not_overlap() {
        let mut image = three_brokers();
        let a = apply_command(
            &mut image,
            &MetadataCommand::AllocateProducerIds {
                node_id: 1,
                count: 1000,
            },
        );
        let b = apply_command(
            &mut image,
            &MetadataCommand::AllocateProducerIds {
                node_id: 2,
                count: 1000,
            },
        );
        assert_eq!(
            a,
            Applied::ProducerIds {
                first: 0,
                count: 1000
            }
        );
        assert_eq!(
            b,
            Applied::ProducerIds {
                first: 1000,
                count: 1000
            }
        );
        assert!(matches!(
            apply_command(
                &mut image,
                &MetadataCommand::AllocateProducerIds {
                    node_id: 9,
                    count: 1
                }
            ),
            Applied::Rejected(Rejection::UnknownBroker(9))
        ));
    }
}
