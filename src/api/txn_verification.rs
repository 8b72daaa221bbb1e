//! KIP-890 part 1, the partition leader's side (used by `api::produce`): before a transactional producer's first write
//! to a partition in a transaction, the leader asks the transaction's coordinator whether the
//! partition was added to it.
//!
//! Without the check, a produce request delayed past its transaction's end (a retry stuck in
//! the network while the client aborted, at the same epoch) would open a transaction on the
//! partition that no coordinator knows of: no marker would ever close it and the partition's
//! last stable offset would stay there (Kafka's "hanging transaction").
//!
//! [`verify`] asks the coordinator of the transactional id: this broker's own coordinator
//! directly, another broker's with AddPartitionsToTxn v4 (`verify_only`) over the internal
//! listener. The caller holds a verification guard on each partition's producer state from
//! before the question (see [`crate::log::producer_state::TxnVerification`]), so a marker
//! written while the answer travels voids it and the write is refused after all.

use std::collections::HashMap;
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::errors::txn_error_code;
use crate::cluster::MetadataImage;
use crate::coordinator::TxnService;
use crate::server::peer_client::{PeerPool, PeerRequest};
use crate::txn::{TxnError, TRANSACTION_STATE_TOPIC};

/// AddPartitionsToTxn version sent between brokers.
const VERIFY_VERSION: i16 = 4;

/// Who asks and how.
#[derive(Debug, Clone, Copy)]
pub struct Verifier<'a> {
    /// This broker's coordinator.
    pub txns: &'a TxnService,
    /// Connections to the other brokers.
    pub peers: &'a PeerPool,
    /// The metadata the coordinator's broker is looked up in.
    pub image: &'a MetadataImage,
    /// This broker's id.
    pub me: i32,
    /// How long to wait for another broker's answer (`request.timeout.ms`).
    pub timeout: Duration,
}

/// One producer's question: is each of `partitions` in its open transaction?
#[derive(Debug, Clone)]
pub struct Question<'a> {
    /// The transactional id the produce request carries.
    pub transactional_id: &'a str,
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub epoch: i16,
    /// The partitions, as (topic, index).
    pub partitions: Vec<(String, i32)>,
}

/// The coordinator's answer for each partition of `question`, in order, as a Kafka error code:
/// 0 (in the transaction), INVALID_TXN_STATE (not in it), or why the coordinator could not say
/// (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, PRODUCER_FENCED, ...).
pub async fn verify(verifier: &Verifier<'_>, question: &Question<'_>) -> Vec<i16> {
    let unavailable =
        vec![ResponseError::CoordinatorNotAvailable.code(); question.partitions.len()];
    let state_partition = verifier.txns.partition_for(question.transactional_id);
    let leader = verifier
        .image
        .partition(TRANSACTION_STATE_TOPIC, state_partition)
        .map(|info| info.leader);
    let Some(leader) = leader.filter(|leader| *leader >= 0) else {
        return unavailable;
    };
    if leader == verifier.me {
        let verdict = verifier.txns.read(|c| {
            c.verify_partitions(
                question.transactional_id,
                question.producer_id,
                question.epoch,
                &question.partitions,
            )
        });
        return codes(verdict, question.partitions.len());
    }
    let Some(addr) = verifier
        .image
        .registrations
        .get(&leader)
        .map(|r| r.internal_addr.clone())
    else {
        return unavailable;
    };
    let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for (topic, index) in &question.partitions {
        match topics.last_mut() {
            Some(last) if last.name.as_str() == topic => last.partitions.push(*index),
            _ => topics.push(
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![*index]),
            ),
        }
    }
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                question.transactional_id.to_string(),
            )))
            .with_producer_id(ProducerId(question.producer_id))
            .with_producer_epoch(question.epoch)
            .with_verify_only(true)
            .with_topics(topics),
    ]);
    let sent = verifier
        .peers
        .send::<_, AddPartitionsToTxnResponse>(
            leader,
            &addr,
            PeerRequest {
                api_key: ApiKey::AddPartitionsToTxn,
                version: VERIFY_VERSION,
                client_id: "gregor-txn-verification",
            },
            &request,
            verifier.timeout,
        )
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(leader, %error, "transaction verification failed");
            return unavailable;
        }
    };
    if response.error_code != 0 {
        return vec![response.error_code; question.partitions.len()];
    }
    let mut answered: HashMap<(&str, i32), i16> = HashMap::new();
    for result in &response.results_by_transaction {
        for topic in &result.topic_results {
            for partition in &topic.results_by_partition {
                answered.insert(
                    (topic.name.as_str(), partition.partition_index),
                    partition.partition_error_code,
                );
            }
        }
    }
    question
        .partitions
        .iter()
        .map(|(topic, index)| {
            answered
                .get(&(topic.as_str(), *index))
                .copied()
                .unwrap_or(ResponseError::CoordinatorNotAvailable.code())
        })
        .collect()
}

/// A coordinator's verdict on `count` partitions as one error code each (AddPartitionsToTxn
/// v4+ `verify_only` answers the same).
pub(super) fn codes(verdict: Result<Vec<bool>, TxnError>, count: usize) -> Vec<i16> {
    match verdict {
        Ok(in_txn) => (0..count)
            .map(|at| {
                if in_txn.get(at) == Some(&true) {
                    0
                } else {
                    ResponseError::InvalidTxnState.code()
                }
            })
            .collect(),
        Err(error) => vec![txn_error_code(&error, true); count],
    }
}

/// What the produce request gets for a partition whose verification answered `code` (Kafka
/// 3.7's mapping): the coordinator's transient errors become NOT_ENOUGH_REPLICAS, which every
/// producer retries; PRODUCER_FENCED becomes INVALID_PRODUCER_EPOCH, what Produce says of a
/// stale epoch; the rest (INVALID_TXN_STATE, INVALID_PRODUCER_ID_MAPPING) stay.
pub fn produce_error(code: i16) -> i16 {
    let transient = [
        ResponseError::ConcurrentTransactions,
        ResponseError::CoordinatorLoadInProgress,
        ResponseError::CoordinatorNotAvailable,
        ResponseError::NotCoordinator,
    ];
    if transient.iter().any(|e| e.code() == code) {
        ResponseError::NotEnoughReplicas.code()
    } else if code == ResponseError::ProducerFenced.code() {
        ResponseError::InvalidProducerEpoch.code()
    } else {
        code
    }
}
