"""Python clients against a three-broker gregor cluster, with a broker killed under them.

The module starts three `gregor broker --voters ...` processes on free 127.0.0.1 ports
(fast failure detection: 200 ms heartbeats, 1.5 s session timeout). Each client library
(confluent-kafka, kafka-python, aiokafka) creates a replicated topic (RF=3,
min.insync.replicas=2), produces at acks=all with idempotence on (five requests in flight),
and while it produces the partition's leader is killed with SIGKILL and later restarted.
Every record the client saw acknowledged must then be read back by the same library at its
offset, in order, and no record may be there twice; the cluster must be whole again (all
three brokers in the ISR) before the next test.

Transactions: confluent-kafka runs a consume-transform-produce loop while the transaction
coordinator's broker and then the output partition's leader are killed with SIGKILL;
kafka-python and aiokafka commit and abort transactions on the cluster and read back the
committed records only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import GREGOR_BIN, _free_port

pytestmark = pytest.mark.timeout(180)

NODES = (1, 2, 3)
ENV = {
    "RUST_LOG": "info,openraft=warn",
    "GREGOR_CONTROLLER_QUORUM_ELECTION_TIMEOUT_MS": "300",
    "GREGOR_BROKER_HEARTBEAT_INTERVAL_MS": "200",
    "GREGOR_BROKER_SESSION_TIMEOUT_MS": "1500",
    "GREGOR_REPLICA_LAG_TIME_MAX_MS": "1000",
    "GREGOR_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS": "1",
    # Brokers of a cluster prove this to each other on their internal listeners.
    "GREGOR_CLUSTER_SECRET": "python-cluster-test-secret-0123",
}
RECORDS = 600
KILL_AT = 150


def deadline_loop(what: str, seconds: float = 60, fail: bool = True):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        yield
        time.sleep(0.1)
    if fail:
        pytest.fail(f"timed out waiting for {what}")


class Cluster:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="gregor-pycluster-"))
        self.ports = {n: _free_port() for n in NODES}
        self.voters = ",".join(f"{n}@127.0.0.1:{_free_port()}" for n in NODES)
        self.procs: dict[int, subprocess.Popen] = {}
        self.bootstrap = ",".join(f"127.0.0.1:{self.ports[n]}" for n in NODES)

    def launch(self, node: int) -> None:
        env = dict(os.environ)
        env.update(ENV)
        with open(self.root / f"broker-{node}.log", "ab") as log:
            self.procs[node] = subprocess.Popen(
                [str(GREGOR_BIN), "broker", "--node-id", str(node),
                 "--listen", f"127.0.0.1:{self.ports[node]}",
                 "--data-dir", str(self.root / f"broker-{node}"),
                 "--voters", self.voters],
                stdout=subprocess.DEVNULL, stderr=log, env=env,
            )

    def wait_listening(self, node: int) -> None:
        for _ in deadline_loop(f"broker {node} to listen", 30):
            assert self.procs[node].poll() is None, self.log_tail(node)
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.ports[node])) == 0:
                    return

    def kill9(self, node: int) -> None:
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def restart(self, node: int) -> None:
        self.launch(node)
        self.wait_listening(node)

    def partitions(self, topic: str) -> dict[int, tuple[int, list[int]]]:
        md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(topic, timeout=10)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            return {}
        return {p.id: (p.leader, list(p.isrs)) for p in t.partitions.values()}

    def wait_whole(self, topic: str) -> None:
        """Every partition led and all three brokers in its ISR."""
        for _ in deadline_loop(f"{topic}'s ISR to hold all three brokers"):
            try:
                parts = self.partitions(topic)
            except Exception:  # a broker restarting: ask again
                continue
            if parts and all(l >= 0 and len(isr) == 3 for l, isr in parts.values()):
                return

    def log_tail(self, node: int, n: int = 20) -> str:
        try:
            lines = (self.root / f"broker-{node}.log").read_text(errors="replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return "<no log>"

    def panics(self) -> list[str]:
        out = []
        for n in NODES:
            path = self.root / f"broker-{n}.log"
            if path.exists():
                out += [f"broker {n}: {l}" for l in path.read_text(errors="replace").splitlines()
                        if "panicked" in l]
        return out

    def stop(self) -> dict[int, int | None]:
        codes = {}
        for node, proc in list(self.procs.items()):
            proc.send_signal(signal.SIGTERM)
            try:
                codes[node] = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes[node] = None
        return codes


@pytest.fixture(scope="module")
def cluster():
    if not GREGOR_BIN.is_file():
        pytest.fail(f"gregor binary not found at {GREGOR_BIN} (cargo build --release)")
    c = Cluster()
    for n in NODES:
        c.launch(n)
    for n in NODES:
        c.wait_listening(n)
    for _ in deadline_loop("three registered brokers", 30):
        md = AdminClient({"bootstrap.servers": c.bootstrap}).list_topics(timeout=10)
        if len(md.brokers) == 3:
            break
    yield c
    panics = c.panics()
    codes = c.stop()
    if os.environ.get("KEEP_WORK") != "1":
        shutil.rmtree(c.root, ignore_errors=True)
    assert not panics, panics
    assert all(code == 0 for code in codes.values()), f"unclean stops: {codes}"


def replicated_topic(cluster: Cluster, prefix: str) -> str:
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})  # alive until the result
    # A broker killed by the previous test listens as soon as it restarts, but counts as live
    # (and can take a replica) only once it has registered again.
    for _ in deadline_loop("three live brokers", 30):
        if len(admin.list_topics(timeout=10).brokers) == 3:
            break
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=3,
                  config={"min.insync.replicas": "2"})],
        operation_timeout=10,
    )
    futures[topic].result(timeout=30)
    cluster.wait_whole(topic)
    return topic


def kill_leader(cluster: Cluster, topic: str) -> int:
    leader = cluster.partitions(topic)[0][0]
    cluster.kill9(leader)
    return leader


def read_back(acked: dict[int, str], poll) -> dict[int, str]:
    """Polls (`poll()` returns (offset, value) pairs) until every acknowledged offset is read
    or 30 s pass; check() then says what is missing."""
    read: dict[int, str] = {}
    for _ in deadline_loop("reading back", 30, fail=False):
        read.update(poll())
        if all(o in read for o in acked):
            break
    return read


def check(acked: dict[int, str], read: dict[int, str]) -> None:
    assert len(acked) >= RECORDS, f"only {len(acked)} acknowledged"
    lost = {o: v for o, v in acked.items() if read.get(o) != v}
    assert not lost, f"{len(lost)} acknowledged records lost or changed, e.g. " \
                     f"{list(lost.items())[:5]} (read {len(read)})"
    # Order kept: values were sent in increasing order, so acknowledged offsets carry them so.
    ordered = [acked[o] for o in sorted(acked)]
    assert ordered == sorted(ordered), "acknowledged records out of order"
    # Idempotent producers: a retried batch is never written twice.
    values = list(read.values())
    duplicated = len(values) - len(set(values))
    assert duplicated == 0, f"{duplicated} records read twice"


# ------------------------------------------------------------------ DescribeCluster

def test_describe_cluster_lists_the_three_brokers(cluster):
    """DescribeCluster (key 60) as librdkafka and kafka-python send it."""
    from kafka import KafkaAdminClient

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    desc = admin.describe_cluster(include_authorized_operations=True,
                                  request_timeout=10).result(timeout=30)
    assert sorted(n.id for n in desc.nodes) == list(NODES)
    assert {(n.host, n.port) for n in desc.nodes} == \
        {("127.0.0.1", cluster.ports[n]) for n in NODES}
    assert desc.controller is not None and desc.controller.id in NODES
    assert desc.cluster_id
    assert desc.authorized_operations, "every cluster operation is granted without ACLs"

    k = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=15_000)
    try:
        meta = k.describe_cluster()
    finally:
        k.close()
    # is_fenced exists only in a DescribeCluster v2 answer (the Metadata fallback has none).
    assert sorted((b["broker_id"], b["is_fenced"]) for b in meta["brokers"]) == \
        [(n, False) for n in NODES]
    assert meta["cluster_id"] == desc.cluster_id


# ------------------------------------------------------------------ confluent-kafka

def test_confluent_acks_all_survives_a_leader_kill(cluster):
    topic = replicated_topic(cluster, "cluster-confluent")
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5,
                  "message.timeout.ms": 60000, "retry.backoff.ms": 100,
                  "enable.idempotence": True})
    acked: dict[int, str] = {}
    failed = []

    def on_delivery(err, msg):
        if err is None:
            acked[msg.offset()] = msg.value().decode()
        else:
            failed.append(err)

    victim = None
    i = 0
    for _ in deadline_loop(f"{RECORDS} acknowledged records", 120):
        if len(acked) >= RECORDS:
            break
        p.produce(topic, value=f"c{i:06d}".encode(), partition=0, on_delivery=on_delivery)
        i += 1
        p.poll(0.002)
        if victim is None and len(acked) >= KILL_AT:
            victim = kill_leader(cluster, topic)
    assert p.flush(60) == 0
    cluster.restart(victim)
    cluster.wait_whole(topic)

    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "unused",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, 0, 0)])
    read = read_back(acked, lambda: [(m.offset(), m.value().decode())
                                     for m in c.consume(num_messages=1000, timeout=0.2)
                                     if m.error() is None])
    c.close()
    check(acked, read)


# ------------------------------------------------------------------ kafka-python

def test_kafka_python_acks_all_survives_a_leader_kill(cluster):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.structs import TopicPartition as KTopicPartition

    topic = replicated_topic(cluster, "cluster-kafka-python")
    p = KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all", linger_ms=5,
                      retries=1_000_000, retry_backoff_ms=100, request_timeout_ms=15_000)
    acked: dict[int, str] = {}
    victim = None
    i = 0
    for _ in deadline_loop(f"{RECORDS} acknowledged records", 120):
        if len(acked) >= RECORDS:
            break
        # Small waves of sends, each wave waited for.
        wave = [(f"k{i + j:06d}", p.send(topic, value=f"k{i + j:06d}".encode(), partition=0))
                for j in range(20)]
        i += 20
        for value, future in wave:
            try:
                acked[future.get(timeout=60).offset] = value
            except Exception as e:  # not acknowledged, so not checked
                print(f"send failed: {e!r}")
        if victim is None and len(acked) >= KILL_AT:
            victim = kill_leader(cluster, topic)
    p.close()
    cluster.restart(victim)
    cluster.wait_whole(topic)

    c = KafkaConsumer(bootstrap_servers=cluster.bootstrap, group_id=None,
                      enable_auto_commit=False, fetch_max_wait_ms=100)
    tp = KTopicPartition(topic, 0)
    c.assign([tp])
    c.seek(tp, 0)
    read = read_back(acked, lambda: [(r.offset, r.value.decode())
                                     for records in c.poll(timeout_ms=200).values()
                                     for r in records])
    c.close()
    check(acked, read)


# ------------------------------------------------------------------ aiokafka

def test_aiokafka_acks_all_survives_a_leader_kill(cluster):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka import TopicPartition as ATopicPartition

    topic = replicated_topic(cluster, "cluster-aiokafka")

    async def scenario():
        p = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all", linger_ms=5,
                             enable_idempotence=True, retry_backoff_ms=100,
                             request_timeout_ms=15_000)
        await p.start()
        acked: dict[int, str] = {}
        victim = None
        i = 0
        end = time.monotonic() + 120
        while len(acked) < RECORDS:
            assert time.monotonic() < end, f"only {len(acked)} acknowledged"
            values = [f"a{i + j:06d}" for j in range(20)]
            i += 20
            futures = []
            for v in values:
                try:
                    futures.append((v, await p.send(topic, value=v.encode(), partition=0)))
                except Exception as e:  # not sent, so not checked
                    print(f"send refused: {e!r}")
            for v, f in futures:
                try:
                    acked[(await f).offset] = v
                except Exception as e:  # not acknowledged, so not checked
                    print(f"send failed: {e!r}")
                    await asyncio.sleep(0.1)
            if victim is None and len(acked) >= KILL_AT:
                victim = kill_leader(cluster, topic)
        await p.stop()
        cluster.restart(victim)
        cluster.wait_whole(topic)

        c = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap, enable_auto_commit=False,
                             fetch_max_wait_ms=100)
        await c.start()
        tp = ATopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, 0)
        read: dict[int, str] = {}
        end = time.monotonic() + 60
        while not all(o in read for o in acked):
            assert time.monotonic() < end, f"read {len(read)} of {len(acked)}"
            for records in (await c.getmany(timeout_ms=200)).values():
                for r in records:
                    read[r.offset] = r.value.decode()
        await c.stop()
        return acked, read

    acked, read = asyncio.run(scenario())
    check(acked, read)


# ------------------------------------------------------------------ transactions

def java_hash(s: str) -> int:
    """Java's String.hashCode, as Kafka maps ids to internal topic partitions."""
    h = 0
    for unit in s.encode("utf-16-be").hex(" ", 2).split():
        h = (h * 31 + int(unit, 16)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def internal_partition(key: str, partitions: int = 50) -> int:
    h = java_hash(key)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


def test_confluent_consume_transform_produce_survives_coordinator_and_leader_kills(cluster):
    """A consume-transform-produce loop (read_committed consumer in a group, transactional
    producer committing the group's offsets in each transaction, every other transaction
    aborted and its input read again). The transaction coordinator's broker is killed with
    SIGKILL mid-transaction, restarted, and then the output partition's leader is killed the
    same way. Downstream a read_committed consumer sees each input transformed exactly once,
    in order, and the group's committed offset is the end of the input.

    The transactional id is chosen so that its coordinator is not the output partition's
    leader (killing it then leaves that leadership where it was), and the group so that its
    coordinator is on the third broker, neither killed one: librdkafka waits forever for a
    group coordinator that left the metadata (librdkafka issue #5511, the same with Apache
    Kafka). A run where the output's leadership moved onto the group's broker anyway fails
    with that reason instead of hanging."""
    from confluent_kafka import KafkaException

    run = uuid.uuid4().hex[:8]
    source, sink = f"ctp-in-{run}", f"ctp-out-{run}"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    for _ in deadline_loop("three live brokers", 30):
        if len(admin.list_topics(timeout=10).brokers) == 3:
            break
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=1, replication_factor=3,
                  config={"min.insync.replicas": "2"}) for t in (source, sink)],
        operation_timeout=10)
    for f in futures.values():
        f.result(timeout=30)
    cluster.wait_whole(source)
    cluster.wait_whole(sink)
    inputs = [f"v{i:04d}" for i in range(300)]
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for v in inputs:
        p.produce(source, value=v.encode(), partition=0)
    assert p.flush(30) == 0

    # The internal topics exist once a transactional id and a group were looked up.
    probe = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": f"probe-{run}"})
    probe.init_transactions(30)
    probe_consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": f"p-{run}"})
    probe_consumer.list_topics(timeout=10)
    probe_consumer.subscribe([source])
    probe_consumer.poll(1)
    probe_consumer.close()

    def leader_of(topic: str, partition: int) -> int:
        for _ in deadline_loop(f"a leader for {topic}-{partition}", 30):
            md = admin.list_topics(topic, timeout=10).topics.get(topic)
            if md is not None and md.error is None and partition in md.partitions:
                leader = md.partitions[partition].leader
                if leader >= 0:
                    return leader
        raise AssertionError("unreachable")

    out_leader = leader_of(sink, 0)
    txn_id = next(t for t in (f"ctp-tx-{run}-{i}" for i in range(1000))
                  if leader_of("__transaction_state", internal_partition(t)) != out_leader)
    coordinator = leader_of("__transaction_state", internal_partition(txn_id))
    group = next(g for g in (f"ctp-{run}-{i}" for i in range(1000))
                 if leader_of("__consumer_offsets", internal_partition(g))
                 not in (coordinator, out_leader))
    group_broker = leader_of("__consumer_offsets", internal_partition(group))

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed"})
    consumer.subscribe([source])
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": txn_id,
                         "linger.ms": 5, "transaction.timeout.ms": 60000})
    producer.init_transactions(30)
    position, transactions, errors, killed = 0, 0, [], []
    for _ in deadline_loop("every input processed", 150):
        if position >= len(inputs):
            break
        batch = [m for m in consumer.consume(num_messages=10, timeout=0.5) if m.error() is None]
        if not batch:
            continue
        transactions += 1
        next_offset = batch[-1].offset() + 1
        try:
            producer.begin_transaction()
            for m in batch:
                producer.produce(sink, value=b"T(" + m.value() + b")", partition=0)
            if transactions == 5:
                # Mid-transaction: the coordinator's broker dies.
                cluster.kill9(coordinator)
                killed.append(coordinator)
            producer.send_offsets_to_transaction(
                [TopicPartition(source, 0, next_offset)],
                consumer.consumer_group_metadata(), 30)
            if transactions % 2 == 0:
                producer.flush(30)
                producer.abort_transaction(30)
                committed_now = False
            else:
                producer.commit_transaction(30)
                committed_now = True
        except KafkaException as e:
            err = e.args[0]
            assert not err.fatal(), f"fatal transaction error: {err}"
            errors.append(err.str())
            for _ in deadline_loop("the abort after an error", 60):
                try:
                    producer.abort_transaction(30)
                    break
                except KafkaException as again:
                    assert again.args[0].retriable(), f"abort failed: {again.args[0]}"
            committed_now = False
        if committed_now:
            position = next_offset
        else:
            consumer.seek(TopicPartition(source, 0, position))
        if transactions == 9 and killed == [coordinator]:
            cluster.restart(coordinator)
            cluster.wait_whole(sink)
            victim = leader_of(sink, 0)
            assert victim != group_broker, \
                f"the output's leadership moved to the group coordinator's broker {victim}"
            cluster.kill9(victim)  # the data partition's leader, mid-stream
            killed.append(victim)
    producer.flush(10)
    committed = consumer.committed([TopicPartition(source, 0)], timeout=30)[0].offset
    consumer.close()
    for node in killed:
        if node not in cluster.procs:
            cluster.restart(node)
    cluster.wait_whole(sink)
    print(f"{transactions} transactions; killed {killed}; errors: {errors}")
    assert len(killed) == 2, f"the kills did not both happen: {killed}"
    assert committed == len(inputs), f"group committed {committed}"

    reader = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": f"r-{run}",
                       "enable.auto.commit": False, "isolation.level": "read_committed"})
    reader.assign([TopicPartition(sink, 0, 0)])
    out: list[str] = []
    for _ in deadline_loop("reading the output", 30, fail=False):
        out += [m.value().decode() for m in reader.consume(num_messages=1000, timeout=0.2)
                if m.error() is None]
        if len(out) >= len(inputs):
            break
    extra_end = time.monotonic() + 1
    while time.monotonic() < extra_end:
        out += [m.value().decode() for m in reader.consume(num_messages=1000, timeout=0.2)
                if m.error() is None]
    reader.close()
    assert out == [f"T({v})" for v in inputs], \
        f"{len(out)} read; duplicates or losses, e.g. {[v for v in out if out.count(v) > 1][:5]}"


def transactional_round_trip(cluster: Cluster, client: str) -> None:
    """A kafka-python or aiokafka transactional producer on the three-broker cluster (RF=3,
    min.insync.replicas=2): three transactions committed and two aborted (flushed first), read
    back by the same library at read_committed: the committed records only, in order."""
    topic = replicated_topic(cluster, f"cluster-txn-{client}")
    txn_id = f"cluster-tx-{client}-{uuid.uuid4().hex[:8]}"
    committed: list[str] = []
    batches = [[f"{client}-{t}-{i:02d}" for i in range(20)] for t in range(5)]
    if client == "kafka_python":
        from kafka import KafkaConsumer, KafkaProducer
        from kafka import TopicPartition as KTopicPartition

        p = KafkaProducer(bootstrap_servers=cluster.bootstrap, transactional_id=txn_id,
                          acks="all", max_block_ms=60000)
        p.init_transactions()
        for t, values in enumerate(batches):
            p.begin_transaction()
            for v in values:
                p.send(topic, value=v.encode(), partition=0)
            if t % 2 == 0:
                p.commit_transaction()
                committed += values
            else:
                p.flush(timeout=30)
                p.abort_transaction()
        p.close(timeout=10)
        c = KafkaConsumer(bootstrap_servers=cluster.bootstrap, group_id=None,
                          isolation_level="read_committed", enable_auto_commit=False,
                          fetch_max_wait_ms=100)
        tp = KTopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        got: list[str] = []
        for _ in deadline_loop("reading the committed records", 30, fail=False):
            for records in c.poll(timeout_ms=200).values():
                got += [r.value.decode() for r in records]
            if len(got) >= len(committed):
                break
        c.close()
    else:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        from aiokafka import TopicPartition as ATopicPartition

        async def scenario():
            p = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, transactional_id=txn_id)
            await p.start()
            try:
                for t, values in enumerate(batches):
                    await p.begin_transaction()
                    for v in values:
                        await p.send(topic, value=v.encode(), partition=0)
                    if t % 2 == 0:
                        await p.commit_transaction()
                        committed.extend(values)
                    else:
                        await p.flush()
                        await p.abort_transaction()
            finally:
                await p.stop()
            c = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap, group_id=None,
                                 isolation_level="read_committed", enable_auto_commit=False,
                                 fetch_max_wait_ms=100)
            await c.start()
            try:
                tp = ATopicPartition(topic, 0)
                c.assign([tp])
                await c.seek_to_beginning(tp)
                got: list[str] = []
                end = time.monotonic() + 30
                while len(got) < len(committed) and time.monotonic() < end:
                    for records in (await c.getmany(timeout_ms=200)).values():
                        got += [r.value.decode() for r in records]
                return got
            finally:
                await c.stop()

        got = asyncio.run(scenario())
    assert got == committed, f"{client}: read {len(got)} of {len(committed)} committed"


def test_kafka_python_transactions_on_the_cluster(cluster):
    transactional_round_trip(cluster, "kafka_python")


def test_aiokafka_transactions_on_the_cluster(cluster):
    transactional_round_trip(cluster, "aiokafka")
