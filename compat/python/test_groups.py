"""Consumer groups with kafka-python, aiokafka and confluent-kafka against a fresh gregor.

Each client: (a) a rebalance — a second member joins and the topic's partitions split
between the two, every record produced afterwards arrives exactly once across them; the
second leaves (close) and the first takes every partition and gets what is produced after;
(b) resume from a commit — offsets committed (with metadata where the client supports it)
are what committed() returns, and a new consumer in the group starts exactly there.
Admin group APIs: list, describe, list offsets, alter offsets (OffsetCommit), delete.

The broker runs with group.initial.rebalance.delay.ms=0 (Kafka's 3 s default only waits for
more members to join) to keep the module fast.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid

import pytest
from conftest import start_gregor, stop_gregor

TIMEOUT_S = 30
PARTITIONS = 4


@pytest.fixture(scope="module")
def g():
    broker = start_gregor({"GREGOR_GROUP_INITIAL_REBALANCE_DELAY_MS": "0"})
    yield broker
    rc = stop_gregor(broker)
    tail = broker.log_tail()
    shutil.rmtree(broker.data_dir, ignore_errors=True)
    assert rc == 0, f"gregor did not stop cleanly (rc={rc}):\n{tail}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(g, name: str, partitions: int = PARTITIONS) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": g.bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=TIMEOUT_S)


def produce(g, topic: str, keys: range, prefix: str = "k") -> list[str]:
    """Keyed records (spread over partitions by key), acks=all; returns the values sent."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": g.bootstrap, "acks": "all", "linger.ms": 5})
    values = []
    for i in keys:
        value = f"{prefix}{i:05d}"
        p.produce(topic, key=value.encode(), value=value.encode())
        values.append(value)
    assert p.flush(TIMEOUT_S) == 0
    return values


def deadline_loop(what: str, timeout: float = TIMEOUT_S):
    end = time.monotonic() + timeout
    while True:
        yield
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")


def split(assignments: list[set[int]]) -> bool:
    """Every member holds something, disjointly, and together all partitions."""
    seen: set[int] = set()
    for a in assignments:
        if not a or seen & a:
            return False
        seen |= a
    return seen == set(range(PARTITIONS))


# ------------------------------------------------------------------ kafka-python

def kp_consumer(g, group: str, topic: str | None = None, **extra):
    from kafka import KafkaConsumer

    config = dict(
        bootstrap_servers=g.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=500,
        fetch_max_wait_ms=100,
    )
    config.update(extra)
    c = KafkaConsumer(**config)
    if topic:
        c.subscribe([topic])
    return c


def kp_poll(consumers, received: list[list[str]]) -> None:
    # A generous poll timeout: kafka-python 3.0.12 loses a rejoin that spans two poll() calls
    # when that rejoin was triggered by a metadata change (see FINDINGS.md), so each poll
    # should give a whole JoinGroup + SyncGroup round trip the time to finish.
    for i, c in enumerate(consumers):
        for records in c.poll(timeout_ms=500).values():
            received[i].extend(r.value.decode() for r in records)


def kp_assigned(c) -> set[int]:
    return {tp.partition for tp in c.assignment()}


def test_kafka_python_rebalance_and_leave(g):
    topic, group = unique("kp-rebalance"), unique("kp-group")
    create_topic(g, topic)
    c1 = kp_consumer(g, group, topic)
    received = [[], []]
    for _ in deadline_loop("the first member's assignment"):
        kp_poll([c1], received)
        if kp_assigned(c1) == set(range(PARTITIONS)):
            break
    c2 = kp_consumer(g, group, topic)
    for _ in deadline_loop("a split between two members"):
        kp_poll([c1, c2], received)
        if split([kp_assigned(c1), kp_assigned(c2)]):
            break
    sent = produce(g, topic, range(200))
    for _ in deadline_loop("200 records"):
        kp_poll([c1, c2], received)
        if sum(map(len, received)) >= 200:
            break
    assert sorted(received[0] + received[1]) == sent, "every record exactly once"
    assert received[0] and received[1], "both members got records"
    c2.close()  # LeaveGroup
    for _ in deadline_loop("the handover"):
        kp_poll([c1], received)
        if kp_assigned(c1) == set(range(PARTITIONS)):
            break
    after = produce(g, topic, range(200, 250))
    for _ in deadline_loop("records after the leave"):
        kp_poll([c1], received)
        if set(after) <= set(received[0]):
            break
    c1.close()


def test_kafka_python_resume_from_commit_and_admin(g):
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.structs import OffsetAndMetadata

    topic, group = unique("kp-resume"), unique("kp-group")
    create_topic(g, topic, 1)
    sent = produce(g, topic, range(20))
    c = kp_consumer(g, group, topic, enable_auto_commit=False)
    got: list[list[str]] = [[]]
    for _ in deadline_loop("20 records"):
        kp_poll([c], got)
        if len(got[0]) >= 20:
            break
    tp = TopicPartition(topic, 0)
    c.commit({tp: OffsetAndMetadata(12, "kp-meta", -1)})
    committed = c.committed(tp, metadata=True)
    assert committed.offset == 12 and committed.metadata == "kp-meta"

    admin = KafkaAdminClient(bootstrap_servers=g.bootstrap)
    listed = {x["group_id"]: x for x in admin.list_groups()}
    assert listed[group]["protocol_type"] == "consumer", listed
    stable = {x["group_id"] for x in admin.list_groups(states_filter=["Stable"])}
    assert group in stable
    described = admin.describe_groups([group])[group]
    assert described["error"] is None, described
    assert described["group_state"] == "Stable" and len(described["members"]) == 1, described
    offsets = admin.list_group_offsets({group: [tp]})[group]
    assert offsets[tp].offset == 12 and offsets[tp].metadata == "kp-meta", offsets
    c.close()

    resumed = kp_consumer(g, group, topic)
    again: list[list[str]] = [[]]
    for _ in deadline_loop("the records after the commit"):
        kp_poll([resumed], again)
        if len(again[0]) >= 8:
            break
    time.sleep(0.3)
    kp_poll([resumed], again)
    assert again[0] == sent[12:], "resumed exactly at the committed offset"
    resumed.close()

    # An empty group can be deleted; its offsets go with it.
    result = dict(admin.delete_groups([group]))
    assert result[group] is None or getattr(result[group], "errno", 0) == 0, result
    assert group not in {x["group_id"] for x in admin.list_groups()}
    gone = admin.list_group_offsets({group: [tp]})[group]
    assert all(o.offset < 0 for o in gone.values()), gone
    admin.close()


# ------------------------------------------------------------------ aiokafka

def test_aiokafka_rebalance_leave_and_resume(g):
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    topic, group = unique("aio-rebalance"), unique("aio-group")
    create_topic(g, topic)

    def consumer(**extra):
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=g.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=500,
            fetch_max_wait_ms=100,
            **extra,
        )

    async def poll(consumers, received):
        for i, c in enumerate(consumers):
            batches = await c.getmany(timeout_ms=50)
            for records in batches.values():
                received[i].extend(r.value.decode() for r in records)

    def assigned(c):
        return {tp.partition for tp in c.assignment()}

    async def scenario():
        c1 = consumer(enable_auto_commit=False)
        await c1.start()
        received = [[], []]
        for _ in deadline_loop("the first member's assignment"):
            await poll([c1], received)
            if assigned(c1) == set(range(PARTITIONS)):
                break
        c2 = consumer(enable_auto_commit=False)
        await c2.start()
        for _ in deadline_loop("a split between two members"):
            await poll([c1, c2], received)
            if split([assigned(c1), assigned(c2)]):
                break
        sent = produce(g, topic, range(200))
        for _ in deadline_loop("200 records"):
            await poll([c1, c2], received)
            if sum(map(len, received)) >= 200:
                break
        assert sorted(received[0] + received[1]) == sent
        assert received[0] and received[1]
        # Commit what each consumed (with metadata), then the second leaves.
        for c in (c1, c2):
            offsets = {
                tp: OffsetAndMetadata(await c.position(tp), "aio-meta")
                for tp in c.assignment()
            }
            await c.commit(offsets)
        await c2.stop()
        for _ in deadline_loop("the handover"):
            await poll([c1], received)
            if assigned(c1) == set(range(PARTITIONS)):
                break
        after = produce(g, topic, range(200, 240))
        for _ in deadline_loop("records after the leave"):
            await poll([c1], received)
            if set(after) <= set(received[0]):
                break
        # Nothing committed before the leave is delivered again to the survivor.
        assert sorted(set(received[0])) == sorted(received[0]), "no duplicates"
        await c1.commit()
        tp0 = TopicPartition(topic, 0)
        committed = await c1.committed(tp0)
        await c1.stop()

        # Resume: a new member starts exactly at the committed offsets.
        produce(g, topic, range(240, 260))
        c3 = consumer()
        await c3.start()
        resumed = [[]]
        for _ in deadline_loop("records after the commit"):
            await poll([c3], resumed)
            if len(resumed[0]) >= 20:
                break
        await asyncio.sleep(0.3)
        await poll([c3], resumed)
        await c3.stop()
        assert sorted(resumed[0]) == [f"k{i:05d}" for i in range(240, 260)]
        return committed

    committed = asyncio.run(scenario())
    assert committed is not None and committed >= 0


# ------------------------------------------------------------------ confluent-kafka

def ck_consumer(g, group: str, **extra):
    from confluent_kafka import Consumer

    config = {
        "bootstrap.servers": g.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 500,
        "fetch.wait.max.ms": 100,
    }
    config.update(extra)
    return Consumer(config)


def ck_poll(consumers, received):
    for i, c in enumerate(consumers):
        m = c.poll(0.05)
        while m is not None:
            assert m.error() is None, m.error()
            received[i].append(m.value().decode())
            m = c.poll(0)


def ck_assigned(c) -> set[int]:
    return {tp.partition for tp in c.assignment()}


def test_confluent_rebalance_and_leave(g):
    topic, group = unique("ck-rebalance"), unique("ck-group")
    create_topic(g, topic)
    c1 = ck_consumer(g, group)
    c1.subscribe([topic])
    received = [[], []]
    for _ in deadline_loop("the first member's assignment"):
        ck_poll([c1], received)
        if ck_assigned(c1) == set(range(PARTITIONS)):
            break
    c2 = ck_consumer(g, group)
    c2.subscribe([topic])
    for _ in deadline_loop("a split between two members"):
        ck_poll([c1, c2], received)
        if split([ck_assigned(c1), ck_assigned(c2)]):
            break
    sent = produce(g, topic, range(300))
    for _ in deadline_loop("300 records"):
        ck_poll([c1, c2], received)
        if sum(map(len, received)) >= 300:
            break
    assert sorted(received[0] + received[1]) == sent
    assert received[0] and received[1]
    c2.close()
    for _ in deadline_loop("the handover"):
        ck_poll([c1], received)
        if ck_assigned(c1) == set(range(PARTITIONS)):
            break
    after = produce(g, topic, range(300, 360))
    for _ in deadline_loop("records after the leave"):
        ck_poll([c1], received)
        if set(after) <= set(received[0]):
            break
    c1.close()


def test_confluent_resume_from_commit_and_admin(g):
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    topic, group = unique("ck-resume"), unique("ck-group")
    create_topic(g, topic, 1)
    sent = produce(g, topic, range(30))
    c = ck_consumer(g, group, **{"enable.auto.commit": False})
    c.subscribe([topic])
    got = [[]]
    for _ in deadline_loop("30 records"):
        ck_poll([c], got)
        if len(got[0]) >= 30:
            break
    tp = TopicPartition(topic, 0, 17, metadata="ck-meta")
    c.commit(offsets=[tp], asynchronous=False)
    [committed] = c.committed([TopicPartition(topic, 0)], timeout=TIMEOUT_S)
    assert committed.offset == 17 and committed.metadata == "ck-meta"

    admin = AdminClient({"bootstrap.servers": g.bootstrap})
    listed = admin.list_consumer_groups().result(timeout=TIMEOUT_S)
    assert group in {x.group_id for x in listed.valid}
    described = admin.describe_consumer_groups([group])[group].result(timeout=TIMEOUT_S)
    assert str(described.state).endswith("STABLE") and len(described.members) == 1
    assert {p.partition for p in described.members[0].assignment.topic_partitions} == {0}
    offsets = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])]
    )[group].result(timeout=TIMEOUT_S)
    assert offsets.topic_partitions[0].offset == 17
    c.close()

    # Alter the group's offset (OffsetCommit from the admin client), then resume from it.
    altered = admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 25)])]
    )[group].result(timeout=TIMEOUT_S)
    assert altered.topic_partitions[0].error is None
    resumed = ck_consumer(g, group)
    resumed.subscribe([topic])
    again = [[]]
    for _ in deadline_loop("the records after the altered offset"):
        ck_poll([resumed], again)
        if len(again[0]) >= 5:
            break
    time.sleep(0.3)
    ck_poll([resumed], again)
    assert again[0] == sent[25:]
    resumed.close()

    # Delete the now-empty group; its offsets are gone.
    admin.delete_consumer_groups([group])[group].result(timeout=TIMEOUT_S)
    listed = admin.list_consumer_groups().result(timeout=TIMEOUT_S)
    assert group not in {x.group_id for x in listed.valid}
    gone = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])]
    )[group].result(timeout=TIMEOUT_S)
    assert gone.topic_partitions[0].offset < 0
