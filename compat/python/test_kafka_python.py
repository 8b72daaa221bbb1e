"""kafka-python (pure-Python protocol implementation) against a fresh gregor.

No `api_version` is configured: kafka-python probes the broker with ApiVersions and uses
the advertised version ranges. Consumers use group_id=None and assign() only.

Producers keep kafka-python 3.x's default, idempotence on (KIP-679: InitProducerId, producer
ids and sequences on every batch); only the tests of acks=0/1 turn it off, as idempotence
needs acks=all.
"""

from __future__ import annotations

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import (
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from records import Rec, describe, sample_records, timestamp_lookup

TIMEOUT_MS = 15_000
TIMEOUT_S = TIMEOUT_MS / 1000


# ------------------------------------------------------------------ helpers

def admin(g) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=g.bootstrap, request_timeout_ms=TIMEOUT_MS)


def producer(g, **extra) -> KafkaProducer:
    conf = dict(bootstrap_servers=g.bootstrap, linger_ms=5,
                request_timeout_ms=TIMEOUT_MS, max_block_ms=TIMEOUT_MS)
    conf.update(extra)
    return KafkaProducer(**conf)


def consumer(g, **extra) -> KafkaConsumer:
    conf = dict(bootstrap_servers=g.bootstrap, group_id=None, enable_auto_commit=False,
                request_timeout_ms=TIMEOUT_MS, fetch_max_wait_ms=100)
    conf.update(extra)
    return KafkaConsumer(**conf)


def kp_records(recs: list[Rec]) -> list[Rec]:
    """kafka-python cannot send a record whose key and value are both None, nor a header
    with a None value (its send() rejects both): drop/adjust those from the shared set."""
    out = []
    for r in recs:
        if r.key is None and r.value is None:
            continue
        out.append(Rec(r.key, r.value, tuple(h for h in r.headers if h[1] is not None),
                       r.timestamp))
    return out


def create_topic(g, name: str, partitions: int = 1, configs: dict | None = None) -> None:
    a = admin(g)
    try:
        a.create_topics({name: {"num_partitions": partitions, "replication_factor": 1,
                                "configs": configs or {}}}, timeout_ms=TIMEOUT_MS)
    finally:
        a.close()


def produce_all(p: KafkaProducer, topic: str, recs: list[Rec], partition: int | None = 0):
    futs = [p.send(topic, value=r.value, key=r.key, headers=list(r.headers),
                   partition=partition, timestamp_ms=r.timestamp) for r in recs]
    p.flush(timeout=TIMEOUT_S)
    return [f.get(timeout=TIMEOUT_S) for f in futs]


def consume_n(c: KafkaConsumer, n: int, timeout: float = TIMEOUT_S) -> list:
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        for _tp, msgs in c.poll(timeout_ms=200).items():
            out.extend(msgs)
    out.sort(key=lambda m: (m.partition, m.offset))
    return out


def as_rec(m) -> Rec:
    assert m.timestamp_type == 0, f"timestamp type {m.timestamp_type} at offset {m.offset}"
    return Rec(m.key, m.value, tuple(m.headers or ()), m.timestamp)


# -------------------------------------------------------------------- tests

def test_api_version_probe(gregor):
    """kafka-python infers a broker version from gregor's ApiVersions response."""
    a = admin(gregor)
    try:
        version = a._manager.broker_version
        api_versions = a._manager.broker_version_data.api_versions
    finally:
        a.close()
    # Record batches v2 and headers need >= 0.11; gregor implements Kafka 4.x schemas.
    assert version >= (0, 11), f"inferred broker version {version}"
    assert {0, 1, 2, 3, 18, 19, 20, 32} <= set(api_versions), sorted(api_versions)
    c = consumer(gregor)
    try:
        assert c.config["api_version"] == version
    finally:
        c.close()


def test_topic_admin_and_metadata(gregor, topic_name):
    create_topic(gregor, topic_name, partitions=3, configs={"retention.ms": "7200000"})
    a = admin(gregor)
    try:
        assert topic_name in a.list_topics()
        (t,) = a.describe_topics([topic_name])
        assert t["name"] == topic_name and t["error_code"] == 0
        parts = sorted(t["partitions"], key=lambda p: p["partition_index"])
        assert [(p["partition_index"], p["leader_id"], list(p["replica_nodes"]),
                 list(p["isr_nodes"]), p["error_code"]) for p in parts] == \
            [(i, 1, [1], [1], 0) for i in range(3)]

        with pytest.raises(TopicAlreadyExistsError):
            a.create_topics({topic_name: {"num_partitions": 1, "replication_factor": 1}},
                            timeout_ms=TIMEOUT_MS)

        res = ConfigResource(ConfigResourceType.TOPIC, topic_name)
        got = a.describe_configs([res], config_filter="all")
        configs = got["topic"][topic_name]
        assert configs["retention.ms"]["value"] == "7200000"
        assert "cleanup.policy" in configs

        a.delete_topics([topic_name], timeout_ms=TIMEOUT_MS)
        deadline = time.monotonic() + TIMEOUT_S
        while topic_name in a.list_topics() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert topic_name not in a.list_topics()
    finally:
        a.close()

    c = consumer(gregor)
    try:
        brokers = c._client.cluster.brokers()
        assert [(b.node_id, b.host, b.port) for b in brokers] == [(1, "127.0.0.1", gregor.port)]
    finally:
        c.close()


def test_produce_consume_exact(gregor, topic_name):
    create_topic(gregor, topic_name)
    recs = kp_records(sample_records())
    mds = produce_all(producer(gregor), topic_name, recs)
    assert [(m.partition, m.offset) for m in mds] == [(0, i) for i in range(len(recs))]

    c = consumer(gregor)
    try:
        tp = TopicPartition(topic_name, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        msgs = consume_n(c, len(recs))
        assert [m.offset for m in msgs] == list(range(len(recs)))
        got = [as_rec(m) for m in msgs]
        for i, (want, have) in enumerate(zip(recs, got)):
            assert have == want, f"offset {i}:\n want {describe(want)}\n have {describe(have)}"
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: len(recs)}
    finally:
        c.close()


def test_consume_from_end(gregor, topic_name):
    create_topic(gregor, topic_name)
    now = int(time.time() * 1000)
    p = producer(gregor)
    produce_all(p, topic_name, [Rec(None, f"old{i}".encode(), (), now) for i in range(3)])
    c = consumer(gregor)
    try:
        tp = TopicPartition(topic_name, 0)
        c.assign([tp])
        c.seek_to_end(tp)
        assert c.position(tp, timeout_ms=TIMEOUT_MS) == 3  # resolves via ListOffsets(latest)
        produce_all(p, topic_name, [Rec(None, f"new{i}".encode(), (), now) for i in range(3)])
        msgs = consume_n(c, 3)
        assert [(m.offset, m.value) for m in msgs] == [(3, b"new0"), (4, b"new1"), (5, b"new2")]
    finally:
        c.close()


@pytest.mark.parametrize("batching", ["one-batch", "batch-per-record"])
def test_offsets_for_times_and_consume_from_timestamp(gregor, topic_name, batching):
    create_topic(gregor, topic_name)
    base = int(time.time() * 1000) - 600_000
    # Out of order on purpose (the answer is the earliest offset with timestamp >= target).
    stamps = [base, base + 3000, base + 2000, base + 7000, base + 4000, base + 4000,
              base + 6000]
    recs = [Rec(f"k{i}".encode(), f"v{i}".encode(), (), ts) for i, ts in enumerate(stamps)]
    p = producer(gregor, linger_ms=0 if batching == "batch-per-record" else 20)
    if batching == "batch-per-record":
        for r in recs:
            produce_all(p, topic_name, [r])
    else:
        produce_all(p, topic_name, recs)

    c = consumer(gregor)
    try:
        tp = TopicPartition(topic_name, 0)
        targets = [0, base, base + 1, base + 2000, base + 2500, base + 3001, base + 4000,
                   base + 5999, base + 6000, base + 6001, base + 7000, base + 7001, base + 10**9]
        got = []
        for t in targets:
            res = c.offsets_for_times({tp: t}, timeout_ms=TIMEOUT_MS)[tp]
            # None when no record has a timestamp >= t.
            got.append(None if res is None else (res.offset, res.timestamp))
        want = []
        for t in targets:
            o = timestamp_lookup(stamps, t)
            want.append(None if o < 0 else (o, stamps[o]))
        assert list(zip(targets, got)) == list(zip(targets, want))

        start = c.offsets_for_times({tp: base + 3001}, timeout_ms=TIMEOUT_MS)[tp].offset
        c.assign([tp])
        c.seek(tp, start)
        msgs = consume_n(c, len(recs) - start)
        assert [as_rec(m) for m in msgs] == recs[start:]
    finally:
        c.close()


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compression_roundtrip(gregor, topic_name, codec):
    create_topic(gregor, topic_name)
    recs = kp_records(sample_records())
    produce_all(producer(gregor, compression_type=codec, linger_ms=50), topic_name, recs)
    c = consumer(gregor)
    try:
        tp = TopicPartition(topic_name, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        msgs = consume_n(c, len(recs))
        assert [m.offset for m in msgs] == list(range(len(recs)))
        assert [as_rec(m) for m in msgs] == recs
    finally:
        c.close()


def test_auto_create_on_produce(gregor, topic_name):
    p = producer(gregor)
    md = p.send(topic_name, value=b"v", key=b"k").get(timeout=TIMEOUT_S)
    assert (md.partition, md.offset) == (0, 0)
    assert p.partitions_for(topic_name) == {0}


def test_default_idempotent_producer(gregor, topic_name):
    """kafka-python 3.x's default producer (enable_idempotence=True) against gregor: the
    README's first send works (it raised IncompatibleBrokerVersion before InitProducerId)."""
    create_topic(gregor, topic_name)
    p = KafkaProducer(bootstrap_servers=gregor.bootstrap, request_timeout_ms=5000,
                      max_block_ms=10_000)
    try:
        assert p.config["enable_idempotence"]
        md = p.send(topic_name, value=b"idem", partition=0).get(timeout=20)
        assert md.offset == 0
    finally:
        p.close(timeout=5)


def test_create_delete_errors(gregor, topic_name):
    a = admin(gregor)
    try:
        for spec, err in [
            ({"num_partitions": 0, "replication_factor": 1}, InvalidPartitionsError),
            ({"num_partitions": 1, "replication_factor": 3}, InvalidReplicationFactorError),
        ]:
            with pytest.raises(err):
                a.create_topics({topic_name: spec}, timeout_ms=TIMEOUT_MS)
        with pytest.raises(InvalidTopicError):
            a.create_topics({"bad name!": {"num_partitions": 1, "replication_factor": 1}},
                            timeout_ms=TIMEOUT_MS)
        a.create_topics({topic_name: {"num_partitions": 2, "replication_factor": 1}},
                        timeout_ms=TIMEOUT_MS, validate_only=True)
        assert topic_name not in a.list_topics()
        with pytest.raises(UnknownTopicOrPartitionError):
            a.delete_topics([topic_name], timeout_ms=TIMEOUT_MS)
        # Defaults: num_partitions / replication_factor -1 (CreateTopics v4+).
        a.create_topics([topic_name], timeout_ms=TIMEOUT_MS)
        (t,) = a.describe_topics([topic_name])
        assert len(t["partitions"]) == 1
    finally:
        a.close()


def test_empty_partition(gregor, topic_name):
    create_topic(gregor, topic_name)
    c = consumer(gregor)
    try:
        tp = TopicPartition(topic_name, 0)
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: 0}
        assert c.offsets_for_times({tp: 0}, timeout_ms=TIMEOUT_MS) == {tp: None}
        c.assign([tp])
        c.seek_to_beginning(tp)
        assert c.poll(timeout_ms=500) == {}
        assert c.position(tp, timeout_ms=TIMEOUT_MS) == 0
    finally:
        c.close()


def test_log_append_time_topic(gregor, topic_name):
    create_topic(gregor, topic_name, configs={"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    mds = produce_all(producer(gregor), topic_name,
                      [Rec(None, f"v{i}".encode(), (), 1_000_000_000_000) for i in range(3)])
    after = int(time.time() * 1000)
    # The produce response carries the broker's LogAppendTime.
    assert all(before - 1000 <= md.timestamp <= after + 1000 for md in mds), \
        [md.timestamp for md in mds]
    c = consumer(gregor)
    try:
        tp = TopicPartition(topic_name, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        msgs = consume_n(c, 3)
        assert [m.timestamp_type for m in msgs] == [1, 1, 1]
        assert [m.timestamp for m in msgs] == [md.timestamp for md in mds]
    finally:
        c.close()


@pytest.mark.parametrize("acks", [0, 1, -1])
def test_acks(gregor, topic_name, acks):
    create_topic(gregor, topic_name)
    now = int(time.time() * 1000)
    recs = [Rec(f"k{i}".encode(), f"v{i}".encode(), (), now) for i in range(20)]
    # Idempotence needs acks=all: the acks=0/1 cases are about the non-idempotent path.
    p = producer(gregor, acks=acks, enable_idempotence=(acks == -1))
    mds = produce_all(p, topic_name, recs[:10]) + produce_all(p, topic_name, recs[10:])
    if acks != 0:
        assert [md.offset for md in mds] == list(range(20))
    c = consumer(gregor)
    try:
        tp = TopicPartition(topic_name, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        msgs = consume_n(c, 20)
        assert [(m.offset, m.value) for m in msgs] == [(i, r.value) for i, r in enumerate(recs)]
    finally:
        c.close()


def test_topic_max_message_bytes(gregor, topic_name):
    create_topic(gregor, topic_name, configs={"max.message.bytes": "2000"})
    p = producer(gregor, retries=0)
    with pytest.raises(MessageSizeTooLargeError):
        p.send(topic_name, value=b"x" * 5000, partition=0).get(timeout=TIMEOUT_S)
    md = p.send(topic_name, value=b"y" * 500, partition=0).get(timeout=TIMEOUT_S)
    assert md.offset == 0


# Kafka without an authorizer reports every operation a topic supports when a Metadata
# request sets include_topic_authorized_operations (v8+): READ, WRITE, CREATE, DELETE, ALTER,
# DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS (bit field 3576).
TOPIC_OPS = sorted(["READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE",
                    "DESCRIBE_CONFIGS", "ALTER_CONFIGS"])


def test_topic_authorized_operations(gregor, topic_name):
    create_topic(gregor, topic_name)
    a = admin(gregor)
    try:
        (t,) = a.describe_topics([topic_name])
    finally:
        a.close()
    assert t["authorized_operations"] is not None
    assert sorted(t["authorized_operations"]) == TOPIC_OPS


def test_fetch_size_limits_raw(gregor, topic_name):
    """Raw Fetch requests (kafka-python's protocol classes, v4 and v12) against 3 partitions of
    ten ~370-byte batches each: partition_max_bytes and max_bytes are honoured batch-wise,
    and the first batch is returned even when larger than the limit (KIP-74)."""
    from kafka.protocol.consumer import FetchRequest

    create_topic(gregor, topic_name, partitions=3)
    p = producer(gregor, linger_ms=0)
    now = int(time.time() * 1000)
    for part in range(3):
        for _ in range(10):  # one batch per send
            p.send(topic_name, value=b"x" * 300, partition=part, timestamp_ms=now).get(TIMEOUT_S)
    a = admin(gregor)
    T = FetchRequest.FetchTopic
    P = T.FetchPartition

    def fetch(max_bytes, partition_max, version):
        req = FetchRequest(
            max_wait_ms=0, min_bytes=1, max_bytes=max_bytes, isolation_level=0, session_id=0,
            session_epoch=-1, forgotten_topics_data=[], rack_id="",
            topics=[T(topic=topic_name, partitions=[
                P(partition=i, fetch_offset=0, partition_max_bytes=partition_max)
                for i in range(3)])],
            min_version=version, max_version=version)

        async def go():
            return await a._manager.send(req)
        r = a._manager.run(go)
        assert r.API_VERSION == version
        return [(pp.partition_index, pp.error_code, pp.high_watermark, len(pp.records or b""))
                for tt in r.responses for pp in tt.partitions]

    try:
        batch = fetch(10**6, 10**6, 4)[0][3] // 10  # bytes per stored batch
        assert 300 < batch < 450, batch
        for version in (4, 12):
            cases = {
                (10**6, 10**6): [10, 10, 10],
                (2 * batch + 10, 10**6): [2, 0, 0],
                (10**6, 2 * batch + 10): [2, 2, 2],
                (100, 100): [1, 0, 0],                # first batch despite the limits
                (5 * batch + 10, 2 * batch + 10): [2, 2, 1],
            }
            for (max_bytes, partition_max), batches in cases.items():
                got = fetch(max_bytes, partition_max, version)
                want = [(i, 0, 10, n * batch) for i, n in enumerate(batches)]
                assert got == want, (version, max_bytes, partition_max)
    finally:
        a.close()
