"""confluent-kafka (librdkafka) against a fresh gregor.

Consumers never join a group: they `assign()` partitions with explicit start offsets and
never commit (enable.auto.commit=False).
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import time

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    ConfigSource,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from conftest import start_gregor, stop_gregor
from records import Rec, describe, librdkafka_partition, sample_records, timestamp_lookup

OP_TIMEOUT = 15  # seconds, for every admin / flush / lookup call

# librdkafka's own log lines go to Python logging (pytest shows them for failing tests)
# instead of stderr, where handles outliving their broker would print after pytest's summary.
RDKAFKA_LOG = logging.getLogger("librdkafka")
RDKAFKA_LOG.addHandler(logging.NullHandler())


# ------------------------------------------------------------------ helpers

def admin(g) -> AdminClient:
    return AdminClient({"bootstrap.servers": g.bootstrap, "logger": RDKAFKA_LOG})


def producer(g, **extra) -> Producer:
    conf = {"bootstrap.servers": g.bootstrap, "linger.ms": 5, "logger": RDKAFKA_LOG,
            "message.timeout.ms": OP_TIMEOUT * 1000}
    conf.update(extra)
    return Producer(conf)


def consumer(g, **extra) -> Consumer:
    conf = {
        "bootstrap.servers": g.bootstrap,
        "logger": RDKAFKA_LOG,
        # A group.id is set but the group is never used: only assign(), no commits.
        "group.id": "gregor-compat-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
    }
    conf.update(extra)
    return Consumer(conf)


def create_topic(g, name: str, partitions: int = 1, config: dict | None = None) -> None:
    a = admin(g)  # keep the handle alive until the future resolves
    futs = a.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=OP_TIMEOUT, request_timeout=OP_TIMEOUT)
    futs[name].result(timeout=OP_TIMEOUT)


def produce_all(p: Producer, topic: str, recs: list[Rec], partition: int | None = 0) -> list:
    """Produce and flush; returns (error, partition, offset) per record, in produce order
    (delivery reports of different partitions arrive in any order)."""
    reports: list = [None] * len(recs)

    def reporter(i):
        def on_delivery(err, msg):
            # (`if msg` would be wrong: a Message's len() is its value's length.)
            reports[i] = (err, msg.partition() if msg is not None else None,
                          msg.offset() if msg is not None else None)
        return on_delivery

    for i, r in enumerate(recs):
        kw = dict(value=r.value, key=r.key, headers=list(r.headers) or None,
                  timestamp=r.timestamp, on_delivery=reporter(i))
        if partition is not None:
            kw["partition"] = partition
        p.produce(topic, **kw)
        p.poll(0)
    remaining = p.flush(OP_TIMEOUT)
    assert remaining == 0, f"{remaining} messages not delivered within {OP_TIMEOUT}s"
    errs = [(i, e) for i, e in enumerate(reports) if e is None or e[0] is not None]
    assert not errs, f"delivery errors: {errs}"
    return reports


def consume_n(c: Consumer, n: int, timeout: float = OP_TIMEOUT, stop_at_eof: bool = False):
    """Poll until n messages arrived (or, with stop_at_eof, every assigned partition hit EOF)."""
    msgs = []
    eof = set()
    assigned = {(tp.topic, tp.partition) for tp in c.assignment()}
    deadline = time.monotonic() + timeout
    while len(msgs) < n and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add((m.topic(), m.partition()))
                if stop_at_eof and eof >= assigned:
                    break
                continue
            raise KafkaException(m.error())
        msgs.append(m)
    return msgs


def as_rec(m) -> Rec:
    ts_type, ts = m.timestamp()
    assert ts_type == TIMESTAMP_CREATE_TIME, f"timestamp type {ts_type} at offset {m.offset()}"
    return Rec(m.key(), m.value(), tuple(m.headers() or ()), ts)


def wait_for_eof(c: Consumer, timeout: float = OP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error() and m.error().code() == KafkaError._PARTITION_EOF:
            return
        if m.error():
            raise KafkaException(m.error())
        pytest.fail(f"unexpected message before EOF: offset {m.offset()} value {m.value()!r}")
    pytest.fail("no partition EOF within timeout")


# -------------------------------------------------------------------- tests

def test_cluster_metadata(gregor):
    md = admin(gregor).list_topics(timeout=OP_TIMEOUT)
    assert set(md.brokers) == {1}
    b = md.brokers[1]
    assert (b.host, b.port) == ("127.0.0.1", gregor.port)
    assert md.controller_id == 1
    assert md.cluster_id, "Metadata carries no cluster id"


def test_topic_metadata_and_create_delete(gregor, topic_name):
    a = admin(gregor)
    create_topic(gregor, topic_name, partitions=3, config={"retention.ms": "7200000"})
    md = a.list_topics(topic_name, timeout=OP_TIMEOUT)
    t = md.topics[topic_name]
    assert t.error is None
    assert sorted(t.partitions) == [0, 1, 2]
    for pid, p in t.partitions.items():
        assert (p.id, p.leader, list(p.replicas), list(p.isrs), p.error) == (pid, 1, [1], [1], None)

    # Creating it again fails with TOPIC_ALREADY_EXISTS.
    futs = a.create_topics([NewTopic(topic_name, 1, 1)], operation_timeout=OP_TIMEOUT,
                           request_timeout=OP_TIMEOUT)
    with pytest.raises(KafkaException) as ei:
        futs[topic_name].result(timeout=OP_TIMEOUT)
    assert ei.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    # DescribeConfigs reports the override.
    res = ConfigResource(ResourceType.TOPIC, topic_name)
    configs = a.describe_configs([res], request_timeout=OP_TIMEOUT)[res].result(timeout=OP_TIMEOUT)
    assert configs["retention.ms"].value == "7200000"
    assert not configs["retention.ms"].is_default
    assert "cleanup.policy" in configs

    # Delete, then it is gone from Metadata.
    a.delete_topics([topic_name], operation_timeout=OP_TIMEOUT,
                    request_timeout=OP_TIMEOUT)[topic_name].result(timeout=OP_TIMEOUT)
    deadline = time.monotonic() + OP_TIMEOUT
    while time.monotonic() < deadline:
        if topic_name not in a.list_topics(timeout=OP_TIMEOUT).topics:
            break
        time.sleep(0.2)
    assert topic_name not in a.list_topics(timeout=OP_TIMEOUT).topics


def test_auto_create_on_produce(gregor, topic_name):
    p = producer(gregor)
    produce_all(p, topic_name, [Rec(b"k", b"v", (), int(time.time() * 1000))], partition=None)
    a = admin(gregor)
    t = a.list_topics(topic_name, timeout=OP_TIMEOUT).topics[topic_name]
    assert t.error is None and len(t.partitions) == 1  # num.partitions default


def test_produce_consume_exact(gregor, topic_name):
    """Keys, null keys/values, empty byte strings, binary, UTF-8, duplicate and null
    headers, a 200 KB value and explicit CreateTime timestamps round-trip byte for byte."""
    create_topic(gregor, topic_name)
    recs = sample_records()
    reports = produce_all(producer(gregor), topic_name, recs)
    assert [(p, o) for _, p, o in reports] == [(0, i) for i in range(len(recs))]

    c = consumer(gregor)
    try:
        c.assign([TopicPartition(topic_name, 0, OFFSET_BEGINNING)])
        msgs = consume_n(c, len(recs))
        assert [m.offset() for m in msgs] == list(range(len(recs)))
        got = [as_rec(m) for m in msgs]
        for i, (want, have) in enumerate(zip(recs, got)):
            assert have == want, f"offset {i}:\n want {describe(want)}\n have {describe(have)}"
        assert len(got) == len(recs)
        assert c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=OP_TIMEOUT) \
            == (0, len(recs))
    finally:
        c.close()


def test_consume_from_end(gregor, topic_name):
    create_topic(gregor, topic_name)
    now = int(time.time() * 1000)
    p = producer(gregor)
    produce_all(p, topic_name, [Rec(None, f"old{i}".encode(), (), now) for i in range(3)])
    c = consumer(gregor)
    try:
        c.assign([TopicPartition(topic_name, 0, OFFSET_END)])
        wait_for_eof(c)  # positioned at the end (offset 3)
        produce_all(p, topic_name, [Rec(None, f"new{i}".encode(), (), now) for i in range(3)])
        msgs = consume_n(c, 3)
        assert [(m.offset(), m.value()) for m in msgs] == \
            [(3, b"new0"), (4, b"new1"), (5, b"new2")]
    finally:
        c.close()


def test_offsets_for_times_and_consume_from_timestamp(gregor, topic_name):
    create_topic(gregor, topic_name)
    base = int(time.time() * 1000) - 600_000
    # Out-of-order timestamps on purpose: Kafka answers with the earliest offset whose
    # timestamp is >= the target, not the first offset after a monotonic cut.
    stamps = [base, base + 3000, base + 2000, base + 4000, base + 4000, base + 6000]
    recs = [Rec(f"k{i}".encode(), f"v{i}".encode(), (), ts) for i, ts in enumerate(stamps)]
    produce_all(producer(gregor), topic_name, recs)

    c = consumer(gregor)
    try:
        targets = [0, base, base + 1, base + 2000, base + 2500, base + 3001, base + 4000,
                   base + 5999, base + 6000, base + 6001, base + 10**9]
        got = []
        for t in targets:
            res = c.offsets_for_times([TopicPartition(topic_name, 0, t)], timeout=OP_TIMEOUT)
            assert res[0].error is None, res[0].error
            got.append(res[0].offset)
        want = [timestamp_lookup(stamps, t) for t in targets]
        # librdkafka reports "no such offset" as OFFSET_END (-1).
        assert list(zip(targets, got)) == list(zip(targets, want))

        # Start consuming at the offset found for base + 3001 (offset 3).
        start = c.offsets_for_times([TopicPartition(topic_name, 0, base + 3001)],
                                    timeout=OP_TIMEOUT)[0].offset
        c.assign([TopicPartition(topic_name, 0, start)])
        msgs = consume_n(c, len(recs) - start)
        assert [as_rec(m) for m in msgs] == recs[start:]
        assert c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=OP_TIMEOUT) \
            == (0, len(recs))
    finally:
        c.close()


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compression_roundtrip(gregor, topic_name, codec):
    create_topic(gregor, topic_name)
    recs = sample_records()
    produce_all(producer(gregor, **{"compression.type": codec, "linger.ms": 50}), topic_name, recs)
    c = consumer(gregor)
    try:
        c.assign([TopicPartition(topic_name, 0, OFFSET_BEGINNING)])
        msgs = consume_n(c, len(recs))
        assert [m.offset() for m in msgs] == list(range(len(recs)))
        assert [as_rec(m) for m in msgs] == recs
    finally:
        c.close()


def test_keyed_partitioning_three_partitions(gregor, topic_name):
    create_topic(gregor, topic_name, partitions=3)
    now = int(time.time() * 1000)
    recs = [Rec(f"key{k}".encode(), f"v{k}-{i}".encode(), (), now) for i in range(3)
            for k in range(10)]
    reports = produce_all(producer(gregor), topic_name, recs, partition=None)
    assert [p for _, p, _ in reports] == [librdkafka_partition(r.key, 3) for r in recs]

    c = consumer(gregor)
    try:
        c.assign([TopicPartition(topic_name, p, OFFSET_BEGINNING) for p in range(3)])
        msgs = consume_n(c, len(recs))
        per_part: dict[int, list] = {0: [], 1: [], 2: []}
        for m in msgs:
            per_part[m.partition()].append((m.offset(), m.key(), m.value()))
        for p in range(3):
            want = [r for r in recs if librdkafka_partition(r.key, 3) == p]
            assert per_part[p] == [(o, r.key, r.value) for o, r in enumerate(want)]
        # Seeking to the middle of a partition returns the rest of it.
        c.assign([TopicPartition(topic_name, 0, 1)])
        rest = consume_n(c, 10, timeout=5, stop_at_eof=True)
        assert [m.offset() for m in rest] == list(range(1, len(per_part[0])))
    finally:
        c.close()


# ------------------------------------------------------------- deeper checks

# Kafka's defaults for the topic configs clients most often read.
KAFKA_TOPIC_DEFAULTS = {
    "cleanup.policy": "delete",
    "max.message.bytes": "1048588",
    "message.timestamp.type": "CreateTime",
    "retention.ms": "604800000",
    "retention.bytes": "-1",
}


def test_describe_configs_defaults_and_sources(gregor, topic_name):
    create_topic(gregor, topic_name, config={"retention.ms": "7200000"})
    a = admin(gregor)
    res = ConfigResource(ResourceType.TOPIC, topic_name)
    configs = a.describe_configs([res], request_timeout=OP_TIMEOUT)[res].result(timeout=OP_TIMEOUT)
    override = configs["retention.ms"]
    assert (override.value, override.source, override.is_default) == \
        ("7200000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value, False)
    want = {k: v for k, v in KAFKA_TOPIC_DEFAULTS.items() if k != "retention.ms"}
    got = {k: configs[k].value for k in want if k in configs}
    assert got == want
    for k in want:
        assert configs[k].is_default, f"{k} reported as not default: {configs[k]}"
        assert configs[k].source == ConfigSource.DEFAULT_CONFIG.value, (k, configs[k].source)

    # The broker resource.
    bres = ConfigResource(ResourceType.BROKER, "1")
    bconf = a.describe_configs([bres], request_timeout=OP_TIMEOUT)[bres].result(timeout=OP_TIMEOUT)
    assert "num.partitions" in bconf and bconf["num.partitions"].value == "1"
    assert "message.max.bytes" in bconf

    # An unknown topic is an error for that resource.
    ures = ConfigResource(ResourceType.TOPIC, topic_name + "-missing")
    with pytest.raises(KafkaException) as ei:
        a.describe_configs([ures], request_timeout=OP_TIMEOUT)[ures].result(timeout=OP_TIMEOUT)
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def _create_error(a, topic: NewTopic, validate_only=False):
    fut = a.create_topics([topic], operation_timeout=OP_TIMEOUT, request_timeout=OP_TIMEOUT,
                          validate_only=validate_only)[topic.topic]
    try:
        fut.result(timeout=OP_TIMEOUT)
    except KafkaException as e:
        return e.args[0].code()
    return None


def test_create_topics_errors_and_validate_only(gregor, topic_name):
    a = admin(gregor)
    assert _create_error(a, NewTopic(topic_name, 0, 1)) == KafkaError.INVALID_PARTITIONS
    assert _create_error(a, NewTopic(topic_name, 1, 3)) == KafkaError.INVALID_REPLICATION_FACTOR
    assert _create_error(a, NewTopic("bad name!", 1, 1)) == KafkaError.TOPIC_EXCEPTION
    assert _create_error(a, NewTopic(topic_name, 1, 1, config={"no.such.config": "1"})) == \
        KafkaError.INVALID_CONFIG
    assert _create_error(a, NewTopic(topic_name, 1, 1, config={"retention.ms": "soon"})) == \
        KafkaError.INVALID_CONFIG
    # validate_only: accepted, not created.
    assert _create_error(a, NewTopic(topic_name, 2, 1), validate_only=True) is None
    md = a.list_topics(timeout=OP_TIMEOUT)
    assert topic_name not in md.topics
    # None of the failed attempts created anything either.
    assert "bad name!" not in md.topics


def test_delete_unknown_topic(gregor, topic_name):
    a = admin(gregor)
    fut = a.delete_topics([topic_name], operation_timeout=OP_TIMEOUT,
                          request_timeout=OP_TIMEOUT)[topic_name]
    with pytest.raises(KafkaException) as ei:
        fut.result(timeout=OP_TIMEOUT)
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_metadata_request_without_auto_create(gregor, topic_name):
    """A consumer's Metadata request (allow_auto_topic_creation=false) for a missing topic
    answers UNKNOWN_TOPIC_OR_PARTITION and does not create it."""
    c = consumer(gregor)
    try:
        t = c.list_topics(topic_name, timeout=OP_TIMEOUT).topics[topic_name]
        assert t.error is not None and t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    finally:
        c.close()
    assert topic_name not in admin(gregor).list_topics(timeout=OP_TIMEOUT).topics


def test_delete_then_recreate_is_empty(gregor, topic_name):
    create_topic(gregor, topic_name)
    now = int(time.time() * 1000)
    produce_all(producer(gregor), topic_name, [Rec(b"k", b"old", (), now)] * 3)
    a = admin(gregor)
    a.delete_topics([topic_name], operation_timeout=OP_TIMEOUT,
                    request_timeout=OP_TIMEOUT)[topic_name].result(timeout=OP_TIMEOUT)
    deadline = time.monotonic() + OP_TIMEOUT
    while topic_name in a.list_topics(timeout=OP_TIMEOUT).topics:
        assert time.monotonic() < deadline, "deleted topic still listed"
        time.sleep(0.2)
    create_topic(gregor, topic_name)
    c = consumer(gregor)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=OP_TIMEOUT) == (0, 0)
        produce_all(producer(gregor), topic_name, [Rec(b"k", b"new", (), now)])
        c.assign([TopicPartition(topic_name, 0, OFFSET_BEGINNING)])
        msgs = consume_n(c, 5, timeout=5, stop_at_eof=True)
        assert [(m.offset(), m.value()) for m in msgs] == [(0, b"new")]
    finally:
        c.close()


def test_topic_max_message_bytes(gregor, topic_name):
    create_topic(gregor, topic_name, config={"max.message.bytes": "2000"})
    now = int(time.time() * 1000)
    p = producer(gregor)
    errors = []
    p.produce(topic_name, value=b"x" * 5000, partition=0, timestamp=now,
              on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(OP_TIMEOUT) == 0
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    produce_all(p, topic_name, [Rec(None, b"y" * 500, (), now)])
    c = consumer(gregor)
    try:
        c.assign([TopicPartition(topic_name, 0, OFFSET_BEGINNING)])
        msgs = consume_n(c, 5, timeout=5, stop_at_eof=True)
        assert [(m.offset(), len(m.value())) for m in msgs] == [(0, 500)]
    finally:
        c.close()


def test_log_append_time_topic(gregor, topic_name):
    """message.timestamp.type=LogAppendTime: the broker stamps records, consumers see
    TIMESTAMP_LOG_APPEND_TIME and ListOffsets by time uses the broker's stamps."""
    create_topic(gregor, topic_name, config={"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    produce_all(producer(gregor), topic_name,
                [Rec(None, f"v{i}".encode(), (), 1_000_000_000_000) for i in range(3)])
    after = int(time.time() * 1000)
    c = consumer(gregor)
    try:
        c.assign([TopicPartition(topic_name, 0, OFFSET_BEGINNING)])
        msgs = consume_n(c, 3)
        stamps = [m.timestamp() for m in msgs]
        from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME
        assert all(t == TIMESTAMP_LOG_APPEND_TIME for t, _ in stamps), stamps
        assert all(before - 1000 <= ts <= after + 1000 for _, ts in stamps), (before, stamps, after)
        # The producer's old CreateTime (2001) is not what the time index holds.
        res = c.offsets_for_times([TopicPartition(topic_name, 0, before - 1000)],
                                  timeout=OP_TIMEOUT)
        assert res[0].offset == 0
    finally:
        c.close()


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_acks(gregor, topic_name, acks):
    """acks=0 must get no Produce response at all (librdkafka would see an unknown
    correlation id); acks=1 / all are acknowledged."""
    create_topic(gregor, topic_name)
    now = int(time.time() * 1000)
    recs = [Rec(f"k{i}".encode(), f"v{i}".encode(), (), now) for i in range(20)]
    p = producer(gregor, acks=acks)
    produce_all(p, topic_name, recs[:10])
    produce_all(p, topic_name, recs[10:])
    c = consumer(gregor)
    try:
        c.assign([TopicPartition(topic_name, 0, OFFSET_BEGINNING)])
        msgs = consume_n(c, 20)
        assert [(m.offset(), m.value()) for m in msgs] == \
            [(i, r.value) for i, r in enumerate(recs)]
    finally:
        c.close()


def test_admin_list_offsets_specs(gregor, topic_name):
    """AdminClient.list_offsets: earliest, latest, by timestamp and max timestamp (KIP-734,
    ListOffsets v7+), answered with the matching record's timestamp."""
    create_topic(gregor, topic_name)
    base = int(time.time() * 1000) - 600_000
    stamps = [base, base + 3000, base + 2000, base + 7000, base + 4000, base + 6000]
    recs = [Rec(None, f"v{i}".encode(), (), ts) for i, ts in enumerate(stamps)]
    # One batch per record, so lookups cross batch boundaries.
    p = producer(gregor, **{"linger.ms": 0})
    for r in recs:
        produce_all(p, topic_name, [r])
    a = admin(gregor)
    tp = TopicPartition(topic_name, 0)
    specs = {
        "earliest": (OffsetSpec.earliest(), 0),
        "latest": (OffsetSpec.latest(), len(recs)),
        "max_timestamp": (OffsetSpec.max_timestamp(), 3),
        "ts=base+2500": (OffsetSpec.for_timestamp(base + 2500), 1),
        "ts=base+6001": (OffsetSpec.for_timestamp(base + 6001), 3),
        "ts=base+4000": (OffsetSpec.for_timestamp(base + 4000), 3),
    }
    got = {}
    for name, (spec, _) in specs.items():
        r = a.list_offsets({tp: spec}, request_timeout=OP_TIMEOUT)[tp].result(timeout=OP_TIMEOUT)
        got[name] = (r.offset, r.timestamp)
    want = {
        "earliest": (0, -1),
        "latest": (len(recs), -1),
        "max_timestamp": (3, base + 7000),
        "ts=base+2500": (1, base + 3000),
        "ts=base+6001": (3, base + 7000),
        "ts=base+4000": (3, base + 7000),
    }
    assert got == want


def test_empty_partition(gregor, topic_name):
    create_topic(gregor, topic_name)
    c = consumer(gregor)
    try:
        tp = TopicPartition(topic_name, 0)
        assert c.get_watermark_offsets(tp, timeout=OP_TIMEOUT) == (0, 0)
        res = c.offsets_for_times([TopicPartition(topic_name, 0, 0)], timeout=OP_TIMEOUT)
        assert res[0].offset == -1
        c.assign([TopicPartition(topic_name, 0, OFFSET_BEGINNING)])
        wait_for_eof(c)
    finally:
        c.close()


def test_topic_config_compression_type(gregor, topic_name):
    a = admin(gregor)
    create_topic(gregor, topic_name, config={"compression.type": "producer"})
    res = ConfigResource(ResourceType.TOPIC, topic_name)
    configs = a.describe_configs([res], request_timeout=OP_TIMEOUT)[res].result(timeout=OP_TIMEOUT)
    assert configs["compression.type"].value == "producer"


def test_topic_config_cleanup_policy_compact(gregor, topic_name):
    """A compacted topic (what Kafka Connect, Schema Registry and Kafka Streams create): the
    compaction settings are accepted and described with Kafka's defaults, keyed records and
    tombstones go in and read back, and a record without a key is refused with INVALID_RECORD
    ("Compacted topic cannot accept message without key"). The cleaning itself runs in the
    broker's background (covered by tests/compaction.rs in-process)."""
    create_topic(gregor, topic_name, config={
        "cleanup.policy": "compact,delete", "min.cleanable.dirty.ratio": "0.1",
        "segment.bytes": "1048576"})
    a = admin(gregor)
    res = ConfigResource(ResourceType.TOPIC, topic_name)
    configs = a.describe_configs([res], request_timeout=OP_TIMEOUT)[res].result(timeout=OP_TIMEOUT)
    assert configs["cleanup.policy"].value == "compact,delete"
    assert configs["cleanup.policy"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["min.cleanable.dirty.ratio"].value == "0.1"
    defaults = {"delete.retention.ms": "86400000", "min.compaction.lag.ms": "0",
                "max.compaction.lag.ms": "9223372036854775807"}
    assert {k: configs[k].value for k in defaults} == defaults
    assert all(configs[k].is_default for k in defaults)

    recs = [Rec(b"k1", b"v1", (), 1_700_000_000_000), Rec(b"k2", b"v1", (), 1_700_000_000_001),
            Rec(b"k1", b"v2", (), 1_700_000_000_002), Rec(b"k2", None, (), 1_700_000_000_003)]
    produce_all(producer(gregor), topic_name, recs)

    errors = []
    p = producer(gregor, **{"message.send.max.retries": 0})
    p.produce(topic_name, value=b"no key", partition=0,
              on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(OP_TIMEOUT) == 0
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == KafkaError.INVALID_RECORD, errors[0]

    c = consumer(gregor)
    try:
        c.assign([TopicPartition(topic_name, 0, OFFSET_BEGINNING)])
        msgs = consume_n(c, len(recs))
        assert [(m.offset(), m.key(), m.value()) for m in msgs] == \
            [(i, r.key, r.value) for i, r in enumerate(recs)]
    finally:
        c.close()


def test_describe_topics_authorized_operations(gregor, topic_name):
    from confluent_kafka import TopicCollection
    create_topic(gregor, topic_name, partitions=2)
    a = admin(gregor)
    d = a.describe_topics(TopicCollection([topic_name]), include_authorized_operations=True,
                          request_timeout=OP_TIMEOUT)[topic_name].result(timeout=OP_TIMEOUT)
    assert d.name == topic_name and len(d.partitions) == 2
    assert d.authorized_operations is not None
    assert sorted(op.name for op in d.authorized_operations) == sorted(
        ["READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE", "DESCRIBE_CONFIGS",
         "ALTER_CONFIGS"])


def test_fetch_long_poll_wakes_on_produce(gregor, topic_name):
    """A consumer parked in a long-poll Fetch (fetch.wait.max.ms=3000) at the end of the log
    gets a new record promptly, not when the wait expires."""
    create_topic(gregor, topic_name)
    c = consumer(gregor, **{"fetch.wait.max.ms": 3000})
    p = producer(gregor, **{"linger.ms": 0})
    try:
        c.assign([TopicPartition(topic_name, 0, OFFSET_END)])
        wait_for_eof(c)
        time.sleep(1.0)  # the consumer is now inside a long-poll fetch
        latencies = []
        for i in range(3):
            t0 = time.monotonic()
            produce_all(p, topic_name, [Rec(None, f"ping{i}".encode(), (),
                                           int(time.time() * 1000))])
            (m,) = consume_n(c, 1, timeout=10)
            latencies.append(time.monotonic() - t0)
            assert m.value() == f"ping{i}".encode()
            time.sleep(0.5)
        assert max(latencies) < 1.0, f"produce-to-consume latencies {latencies}"
    finally:
        c.close()


def test_sigterm_with_parked_long_poll_fetch(topic_name):
    """Own broker: a consumer parked in a 20 s long-poll must not hold up a SIGTERM stop."""
    g = start_gregor()
    try:
        create_topic(g, topic_name)
        c = consumer(g, **{"fetch.wait.max.ms": 20000})
        c.assign([TopicPartition(topic_name, 0, OFFSET_END)])
        # No EOF yet: the first Fetch at the end is parked for up to 20 s (as in Kafka).
        # Poll long enough for ListOffsets + that Fetch to be sent.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            m = c.poll(0.1)
            assert m is None or (m.error() and m.error().code() == KafkaError._PARTITION_EOF)
        c.close()
        t0 = time.monotonic()
        g.proc.send_signal(signal.SIGTERM)
        try:
            rc = g.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.monotonic() - t0
        assert rc == 0, f"gregor still running {took:.1f}s after SIGTERM"
    finally:
        if g.proc.poll() is None:
            g.proc.kill()
        stop_gregor(g)
        shutil.rmtree(g.data_dir, ignore_errors=True)


def test_multi_topic_fetch_with_small_limits(gregor, topic_name):
    """Produce requests spanning several topics/partitions; one consumer fetches 2 topics x
    3 partitions with 1 KB request/partition limits and must still get every record exactly
    once, in order per partition."""
    topics = [f"{topic_name}-a", f"{topic_name}-b"]
    for t in topics:
        create_topic(gregor, t, partitions=3)
    now = int(time.time() * 1000)
    p = producer(gregor, **{"linger.ms": 20})
    want: dict[tuple[str, int], list[bytes]] = {}
    for i in range(40):
        for t in topics:
            part = i % 3
            v = f"{t}|{part}|{i}|".encode() + b"x" * 150
            want.setdefault((t, part), []).append(v)
            p.produce(t, value=v, partition=part, timestamp=now)
    assert p.flush(OP_TIMEOUT) == 0
    total = sum(len(v) for v in want.values())
    # (librdkafka needs fetch.max.bytes >= message.max.bytes; receive.message.max.bytes stays
    # at its default: KIP-74 lets a response exceed fetch.max.bytes by one whole batch.)
    c = consumer(gregor, **{"fetch.max.bytes": 1024, "max.partition.fetch.bytes": 1024,
                            "message.max.bytes": 1024})
    try:
        c.assign([TopicPartition(t, part, OFFSET_BEGINNING) for t in topics for part in range(3)])
        msgs = consume_n(c, total, timeout=30)
        got: dict[tuple[str, int], list] = {}
        for m in msgs:
            got.setdefault((m.topic(), m.partition()), []).append((m.offset(), m.value()))
        assert {k: [o for o, _ in v] for k, v in got.items()} == \
            {k: list(range(len(v))) for k, v in want.items()}
        assert {k: [v for _, v in vs] for k, vs in got.items()} == want
    finally:
        c.close()
