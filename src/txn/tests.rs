//! The transaction coordinator's rules, step by step with a manual clock: every append is
//! completed by hand, as the runtime would after the write is committed.

use super::*;

const ID: &str = "tx";

struct Harness {
    c: TxnCoordinator,
    now: i64,
    next_request: RequestToken,
    next_producer_id: i64,
    late: Vec<(RequestToken, Response)>,
}

impl Harness {
    fn new() -> Harness {
        let mut c = TxnCoordinator::new(TxnConfig::default());
        let partition = c.partition_for(ID);
        c.begin_loading(partition, 4);
        c.finish_loading(partition, 0);
        Harness {
            c,
            now: 0,
            next_request: 0,
            next_producer_id: 1000,
            late: Vec::new(),
        }
    }

    /// Completes every append of `output` successfully, and what they release, until nothing is
    /// left; returns all responses and marker jobs.
    fn settle(&mut self, mut output: Output) -> (Vec<(RequestToken, Response)>, Vec<MarkerJob>) {
        let mut responses = Vec::new();
        let mut markers = Vec::new();
        loop {
            responses.append(&mut output.responses);
            markers.append(&mut output.markers);
            let Some(append) = output.appends.pop() else {
                return (responses, markers);
            };
            let more = self.c.complete(self.now, append.token, Ok(()));
            output.appends.extend(more.appends);
            output.responses.extend(more.responses);
            output.markers.extend(more.markers);
        }
    }

    fn request(&mut self) -> RequestToken {
        self.next_request += 1;
        self.next_request
    }

    fn init(&mut self, expected: Option<(i64, i16)>) -> Response {
        let token = self.request();
        let fresh = self.c.needs_producer_id(ID).then(|| {
            self.next_producer_id += 1;
            self.next_producer_id
        });
        let output = self
            .c
            .init_producer_id(self.now, token, ID, 60_000, expected, fresh);
        let (responses, _) = self.settle(output);
        one(responses, token)
    }

    fn add(&mut self, producer: (i64, i16), partitions: &[(&str, i32)]) -> Response {
        let token = self.request();
        let partitions: Vec<(String, i32)> = partitions
            .iter()
            .map(|(t, p)| (t.to_string(), *p))
            .collect();
        let output =
            self.c
                .add_partitions(self.now, token, ID, producer.0, producer.1, &partitions);
        let (responses, _) = self.settle(output);
        one(responses, token)
    }

    /// EndTxn; returns its answer if it came at once (an EndTxn that starts markers is
    /// answered once they are written: [`Harness::late`]), the marker jobs it started (not yet
    /// reported written), and its token.
    fn end(
        &mut self,
        producer: (i64, i16),
        commit: bool,
    ) -> (Option<Response>, Vec<MarkerJob>, RequestToken) {
        let token = self.request();
        let output = self
            .c
            .end_txn(self.now, token, ID, producer.0, producer.1, commit);
        let (responses, markers) = self.settle(output);
        let answer = responses
            .into_iter()
            .find(|(t, _)| *t == token)
            .map(|(_, r)| r);
        (answer, markers, token)
    }

    /// Reports a job's markers written; the answers that released are kept for `late`.
    fn markers_written(&mut self, job: &MarkerJob) {
        let output = self.c.markers_written(
            self.now,
            &job.transactional_id,
            job.producer_id,
            job.producer_epoch,
        );
        let (responses, _) = self.settle(output);
        self.late.extend(responses);
    }

    /// The answer a later step released for `token`.
    fn late(&mut self, token: RequestToken) -> Option<Response> {
        let at = self.late.iter().position(|(t, _)| *t == token)?;
        Some(self.late.remove(at).1)
    }

    fn state(&self) -> TxnState {
        self.c.metadata(ID).map(|m| m.state).expect("known id")
    }
}

fn one(responses: Vec<(RequestToken, Response)>, token: RequestToken) -> Response {
    let mine: Vec<Response> = responses
        .into_iter()
        .filter(|(t, _)| *t == token)
        .map(|(_, r)| r)
        .collect();
    assert_eq!(mine.len(), 1, "answered exactly once");
    mine[0]
}

#[test]
fn a_transaction_commits_through_prepare_markers_and_complete() {
    let mut h = Harness::new();
    let producer = h.init(None).expect("init");
    assert_eq!(producer, (1001, 0));
    assert_eq!(h.state(), TxnState::Empty);
    assert_eq!(h.add(producer, &[("a", 0), ("b", 1)]), Ok(producer));
    assert_eq!(h.state(), TxnState::Ongoing);
    // Adding what is already in needs no write.
    let token = h.request();
    let output =
        h.c.add_partitions(0, token, ID, producer.0, producer.1, &[("a".into(), 0)]);
    assert!(output.appends.is_empty());
    let (answer, jobs, end_token) = h.end(producer, true);
    assert_eq!(answer, None, "answered once the markers are written");
    assert_eq!(h.state(), TxnState::PrepareCommit);
    assert_eq!(
        jobs,
        vec![MarkerJob {
            transactional_id: ID.into(),
            producer_id: 1001,
            producer_epoch: 0,
            commit: true,
            coordinator_epoch: 4,
            partitions: vec![("a".into(), 0), ("b".into(), 1)],
        }]
    );
    // Until the markers are written, the next transaction waits.
    assert_eq!(
        h.add(producer, &[("a", 0)]),
        Err(TxnError::ConcurrentTransactions)
    );
    assert_eq!(
        h.end(producer, true).0,
        Some(Err(TxnError::ConcurrentTransactions))
    );
    h.markers_written(&jobs[0]);
    assert_eq!(h.state(), TxnState::CompleteCommit);
    assert_eq!(h.late(end_token), Some(Ok(producer)));
    assert!(h.c.metadata(ID).expect("id").partitions.is_empty());
    // A retried EndTxn of the same decision succeeds; the opposite one does not.
    assert_eq!(h.end(producer, true).0, Some(Ok(producer)));
    assert_eq!(
        h.end(producer, false).0,
        Some(Err(TxnError::InvalidTxnState))
    );
    // The next transaction starts from CompleteCommit.
    assert_eq!(h.add(producer, &[("c", 0)]), Ok(producer));
    let (answer, jobs, _) = h.end(producer, false);
    assert_eq!(answer, None);
    assert!(!jobs[0].commit);
    assert_eq!(jobs[0].partitions, vec![("c".into(), 0)]);
}

#[test]
fn a_second_producer_fences_the_first_and_aborts_its_open_transaction() {
    let mut h = Harness::new();
    let zombie = h.init(None).expect("init");
    h.add(zombie, &[("a", 0)]).expect("add");
    // The new producer's InitProducerId aborts the open transaction at a bumped epoch.
    let token = h.request();
    let output = h.c.init_producer_id(0, token, ID, 60_000, None, None);
    let (responses, markers) = h.settle(output);
    assert_eq!(one(responses, token), Err(TxnError::ConcurrentTransactions));
    assert_eq!(h.state(), TxnState::PrepareAbort);
    assert_eq!(markers.len(), 1);
    assert!(!markers[0].commit);
    assert_eq!(
        markers[0].producer_epoch, 1,
        "the abort is written at the bumped epoch"
    );
    // The zombie is fenced at once.
    assert_eq!(h.end(zombie, true).0, Some(Err(TxnError::ProducerFenced)));
    assert_eq!(h.add(zombie, &[("b", 0)]), Err(TxnError::ProducerFenced));
    // Retrying before the markers are written: still waiting.
    assert_eq!(h.init(None), Err(TxnError::ConcurrentTransactions));
    h.markers_written(&markers[0]);
    assert_eq!(h.state(), TxnState::CompleteAbort);
    let fresh = h.init(None).expect("init");
    assert_eq!(fresh, (zombie.0, 2));
    assert_eq!(h.end(zombie, false).0, Some(Err(TxnError::ProducerFenced)));
    // KIP-360: a producer naming its old epoch is fenced; naming the current one bumps; a
    // retry of that bump (naming the epoch before it) gets the same answer.
    assert_eq!(h.init(Some(zombie)), Err(TxnError::ProducerFenced));
    let bumped = h.init(Some(fresh)).expect("bump");
    assert_eq!(bumped, (zombie.0, 3));
    assert_eq!(h.init(Some(fresh)), Ok(bumped));
}

#[test]
fn requests_are_checked_against_the_id_producer_and_state() {
    let mut h = Harness::new();
    assert_eq!(
        h.add((5, 0), &[("a", 0)]),
        Err(TxnError::InvalidProducerIdMapping)
    );
    let producer = h.init(None).expect("init");
    assert_eq!(
        h.add((producer.0 + 1, 0), &[("a", 0)]),
        Err(TxnError::InvalidProducerIdMapping)
    );
    assert_eq!(
        h.end(producer, true).0,
        Some(Err(TxnError::InvalidTxnState))
    );
    let token = h.request();
    let output = h.c.init_producer_id(0, token, ID, 900_001, None, None);
    assert_eq!(
        one(output.responses, token),
        Err(TxnError::InvalidTransactionTimeout)
    );
    // Another id on a partition this coordinator does not host.
    let other = (0..)
        .map(|i| format!("other-{i}"))
        .find(|id| h.c.partition_for(id) != h.c.partition_for(ID))
        .expect("an id elsewhere");
    let token = h.request();
    let output = h.c.init_producer_id(0, token, &other, 1000, None, Some(1));
    assert_eq!(one(output.responses, token), Err(TxnError::NotCoordinator));
    // A failed write answers the client and leaves the state as it was.
    let token = h.request();
    let output =
        h.c.add_partitions(0, token, ID, producer.0, producer.1, &[("a".into(), 0)]);
    let append = output.appends[0].token;
    let failed = h.c.complete(0, append, Err(AppendError::NotLeader));
    assert_eq!(one(failed.responses, token), Err(TxnError::NotCoordinator));
    assert_eq!(h.state(), TxnState::Empty);
}

#[test]
fn a_transaction_open_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let mut h = Harness::new();
    let producer = h.init(None).expect("init");
    h.now = 1_000;
    h.add(producer, &[("a", 0)]).expect("add");
    assert_eq!(h.c.next_deadline(), Some(0));
    h.now = 30_000;
    let output = h.c.tick(h.now);
    let (_, markers) = h.settle(output);
    assert!(markers.is_empty(), "not yet: 29 s of a 60 s timeout");
    h.now = 61_000;
    let deadline = h.c.next_deadline().expect("armed");
    assert!(deadline <= h.now);
    let output = h.c.tick(h.now);
    let (_, markers) = h.settle(output);
    assert_eq!(markers.len(), 1);
    assert!(!markers[0].commit);
    assert_eq!(h.state(), TxnState::PrepareAbort);
    h.markers_written(&markers[0]);
    assert_eq!(h.state(), TxnState::CompleteAbort);
    assert_eq!(h.end(producer, true).0, Some(Err(TxnError::ProducerFenced)));
    // An id idle past transactional.id.expiration.ms is removed with a tombstone.
    h.now += 604_800_000 + 3_600_000;
    let output = h.c.tick(h.now);
    assert_eq!(output.appends.len(), 1);
    assert_eq!(output.appends[0].value, None);
    h.settle(output);
    assert!(h.c.metadata(ID).is_none());
}

#[test]
fn a_new_coordinator_replays_the_log_and_finishes_decided_transactions() {
    let mut h = Harness::new();
    let producer = h.init(None).expect("init");
    h.add(producer, &[("a", 0)]).expect("add");
    // Record every append the way the log would hold it.
    let token = h.request();
    let output = h.c.end_txn(0, token, ID, producer.0, producer.1, true);
    let prepare = output.appends[0].clone();
    h.settle(output);
    let partition = h.c.partition_for(ID);
    // The old coordinator loses the partition; a new one (a later leader epoch) replays it.
    // Its EndTxn, waiting for markers, hears NOT_COORDINATOR and asks the new one.
    let lost = h.c.unload(partition);
    assert_eq!(one(lost.responses, token), Err(TxnError::NotCoordinator));
    assert!(h.c.metadata(ID).is_none());
    let mut fresh = TxnCoordinator::new(TxnConfig::default());
    fresh.begin_loading(partition, 5);
    let token = 99;
    let early = fresh.init_producer_id(0, token, ID, 1000, None, None);
    assert_eq!(
        one(early.responses, token),
        Err(TxnError::CoordinatorLoadInProgress)
    );
    fresh
        .replay(partition, &prepare.key, prepare.value.as_deref())
        .expect("replay");
    let output = fresh.finish_loading(partition, 0);
    assert_eq!(output.markers.len(), 1);
    assert_eq!(output.markers[0].coordinator_epoch, 5);
    assert!(output.markers[0].commit);
    assert_eq!(
        fresh.metadata(ID).map(|m| m.state),
        Some(TxnState::PrepareCommit)
    );
    // A tombstone removes the id.
    fresh.replay(partition, &prepare.key, None).expect("replay");
    assert!(fresh.metadata(ID).is_none());
}

#[test]
fn unloading_answers_waiting_requests_not_coordinator() {
    let mut h = Harness::new();
    let token = h.request();
    let output = h.c.init_producer_id(0, token, ID, 1000, None, Some(7));
    assert_eq!(output.appends.len(), 1);
    let partition = h.c.partition_for(ID);
    let unloaded = h.c.unload(partition);
    assert_eq!(
        one(unloaded.responses, token),
        Err(TxnError::NotCoordinator)
    );
    // The append's late report changes nothing.
    let late = h.c.complete(0, output.appends[0].token, Ok(()));
    assert!(late.responses.is_empty());
}

#[test]
fn an_end_txn_whose_markers_lag_is_answered_at_its_deadline_or_on_unload() {
    let mut h = Harness::new();
    let producer = h.init(None).expect("init");
    h.add(producer, &[("a", 0)]).expect("add");
    // The markers are never reported written (a partition without a leader): the decision is
    // durable, so the client hears Kafka's answer after END_TXN_WAIT_MS.
    let (answer, _, token) = h.end(producer, true);
    assert_eq!(answer, None);
    assert!(h.c.next_deadline().is_some_and(|d| d <= END_TXN_WAIT_MS));
    let early = h.c.tick(END_TXN_WAIT_MS - 1);
    assert!(early.responses.iter().all(|(t, _)| *t != token));
    let due = h.c.tick(END_TXN_WAIT_MS);
    assert_eq!(one(due.responses, token), Ok(producer));
    assert_eq!(h.state(), TxnState::PrepareCommit);
    // Losing the partition while an EndTxn waits answers it NOT_COORDINATOR (the client asks
    // the new coordinator, which finishes the transaction from its replay).
    let mut h = Harness::new();
    let producer = h.init(None).expect("init");
    h.add(producer, &[("a", 0)]).expect("add");
    let (_, _, token) = h.end(producer, false);
    let partition = h.c.partition_for(ID);
    let unloaded = h.c.unload(partition);
    assert_eq!(
        one(unloaded.responses, token),
        Err(TxnError::NotCoordinator)
    );
}

#[test]
fn verification_says_which_partitions_are_in_the_open_transaction() {
    let mut h = Harness::new();
    let parts = |list: &[(&str, i32)]| -> Vec<(String, i32)> {
        list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    };
    let asked = parts(&[("a", 0), ("a", 1)]);
    assert_eq!(
        h.c.verify_partitions(ID, 5, 0, &asked),
        Err(TxnError::InvalidProducerIdMapping)
    );
    let producer = h.init(None).expect("init");
    // No transaction open: nothing is in it.
    assert_eq!(
        h.c.verify_partitions(ID, producer.0, producer.1, &asked),
        Ok(vec![false, false])
    );
    h.add(producer, &[("a", 0)]).expect("add");
    assert_eq!(
        h.c.verify_partitions(ID, producer.0, producer.1, &asked),
        Ok(vec![true, false])
    );
    assert_eq!(
        h.c.verify_partitions(ID, producer.0 + 1, producer.1, &asked),
        Err(TxnError::InvalidProducerIdMapping)
    );
    assert_eq!(
        h.c.verify_partitions(ID, producer.0, producer.1 - 1, &asked),
        Err(TxnError::ProducerFenced)
    );
    // While the transaction completes, and after: not in it any more.
    let (_, markers, _) = h.end(producer, true);
    assert_eq!(
        h.c.verify_partitions(ID, producer.0, producer.1, &asked),
        Err(TxnError::ConcurrentTransactions)
    );
    for job in &markers {
        h.markers_written(job);
    }
    assert_eq!(h.state(), TxnState::CompleteCommit);
    assert_eq!(
        h.c.verify_partitions(ID, producer.0, producer.1, &asked),
        Ok(vec![false, false])
    );
}
