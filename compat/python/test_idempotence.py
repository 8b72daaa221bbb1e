"""Idempotent producers, written once and run with every Python client.

Each scenario takes a client adapter (confluent-kafka, kafka-python, aiokafka):

- produce with idempotence on (kafka-python 3.x with its *default* settings, which are
  idempotent; confluent-kafka and aiokafka with it turned on) to three partitions, read back
  with the same library: every record once, in send order per partition, at contiguous
  offsets; the stored batches carry a producer id (read from the partition's segment files),
  so the producer really was idempotent.

Transactional producers are in `test_transactions.py`.
"""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path

import pytest

from conftest import create_topic

PARTITIONS = 3
RECORDS = 600
TIMEOUT_S = 30


def values_for(partition: int) -> list[str]:
    return [f"p{partition}-{i:05d}" for i in range(RECORDS // PARTITIONS)]


def stored_producer_ids(g, topic: str, partition: int) -> set[int]:
    """The producer id of every batch in the partition's segment files (v2 batch header:
    base offset i64, length i32, ..., producer id i64 at byte 43)."""
    ids: set[int] = set()
    dirs = list(Path(g.data_dir).glob(f"**/{topic}-{partition}"))
    assert dirs, f"no directory for {topic}-{partition} under {g.data_dir}"
    for log in sorted(dirs[0].glob("*.log")):
        data = log.read_bytes()
        at = 0
        while at + 61 <= len(data):
            (length,) = struct.unpack_from(">i", data, at + 8)
            if length <= 0:
                break
            (producer_id,) = struct.unpack_from(">q", data, at + 43)
            ids.add(producer_id)
            at += 12 + length
    return ids


# ------------------------------------------------------------------ adapters
# produce(g, topic) -> {partition: [offsets in send order]}; read(g, topic) ->
# {partition: [(offset, value)]}.

class Confluent:
    name = "confluent"

    def produce(self, g, topic):
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": g.bootstrap, "enable.idempotence": True,
                      "linger.ms": 5, "message.timeout.ms": TIMEOUT_S * 1000})
        offsets: dict[int, list] = {q: [None] * (RECORDS // PARTITIONS)
                                    for q in range(PARTITIONS)}
        errors = []

        def report(q, i):
            def on_delivery(err, msg):
                if err is not None:
                    errors.append(err)
                else:
                    offsets[q][i] = msg.offset()
            return on_delivery

        for i in range(RECORDS // PARTITIONS):
            for q in range(PARTITIONS):
                p.produce(topic, value=values_for(q)[i].encode(), partition=q,
                          on_delivery=report(q, i))
            p.poll(0)
        assert p.flush(TIMEOUT_S) == 0, "undelivered records"
        assert not errors, errors
        return offsets

    def read(self, g, topic):
        from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING

        c = Consumer({"bootstrap.servers": g.bootstrap, "group.id": "unused",
                      "enable.auto.commit": False})
        c.assign([TopicPartition(topic, q, OFFSET_BEGINNING) for q in range(PARTITIONS)])
        got: dict[int, list] = {q: [] for q in range(PARTITIONS)}
        end = time.monotonic() + TIMEOUT_S
        while sum(map(len, got.values())) < RECORDS and time.monotonic() < end:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                got[m.partition()].append((m.offset(), m.value().decode()))
        c.close()
        return got



class KafkaPython:
    name = "kafka_python"

    def produce(self, g, topic):
        from kafka import KafkaProducer

        # Default settings: kafka-python 3.x is idempotent by default.
        p = KafkaProducer(bootstrap_servers=g.bootstrap)
        futures = {q: [] for q in range(PARTITIONS)}
        for i in range(RECORDS // PARTITIONS):
            for q in range(PARTITIONS):
                futures[q].append(p.send(topic, value=values_for(q)[i].encode(), partition=q))
        offsets = {q: [f.get(timeout=TIMEOUT_S).offset for f in fs]
                   for q, fs in futures.items()}
        assert p.config["enable_idempotence"], "kafka-python's default is not idempotent?"
        p.close(timeout=10)
        return offsets

    def read(self, g, topic):
        from kafka import KafkaConsumer, TopicPartition

        c = KafkaConsumer(bootstrap_servers=g.bootstrap, group_id=None,
                          enable_auto_commit=False, fetch_max_wait_ms=100)
        tps = [TopicPartition(topic, q) for q in range(PARTITIONS)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        got: dict[int, list] = {q: [] for q in range(PARTITIONS)}
        end = time.monotonic() + TIMEOUT_S
        while sum(map(len, got.values())) < RECORDS and time.monotonic() < end:
            for tp, records in c.poll(timeout_ms=200).items():
                got[tp.partition].extend((r.offset, r.value.decode()) for r in records)
        c.close()
        return got



class AioKafka:
    name = "aiokafka"

    def produce(self, g, topic):
        from aiokafka import AIOKafkaProducer

        async def run():
            p = AIOKafkaProducer(bootstrap_servers=g.bootstrap, enable_idempotence=True,
                                 linger_ms=5)
            await p.start()
            try:
                futures = {q: [] for q in range(PARTITIONS)}
                for i in range(RECORDS // PARTITIONS):
                    for q in range(PARTITIONS):
                        futures[q].append(await p.send(topic, value=values_for(q)[i].encode(),
                                                       partition=q))
                return {q: [(await asyncio.wait_for(f, TIMEOUT_S)).offset for f in fs]
                        for q, fs in futures.items()}
            finally:
                await p.stop()

        return asyncio.run(run())

    def read(self, g, topic):
        from aiokafka import AIOKafkaConsumer, TopicPartition

        async def run():
            c = AIOKafkaConsumer(bootstrap_servers=g.bootstrap, group_id=None,
                                 enable_auto_commit=False, fetch_max_wait_ms=100)
            await c.start()
            try:
                tps = [TopicPartition(topic, q) for q in range(PARTITIONS)]
                c.assign(tps)
                await c.seek_to_beginning(*tps)
                got: dict[int, list] = {q: [] for q in range(PARTITIONS)}
                end = time.monotonic() + TIMEOUT_S
                while sum(map(len, got.values())) < RECORDS and time.monotonic() < end:
                    batches = await c.getmany(timeout_ms=200)
                    for tp, records in batches.items():
                        got[tp.partition].extend((r.offset, r.value.decode()) for r in records)
                return got
            finally:
                await c.stop()

        return asyncio.run(run())


CLIENTS = [Confluent(), KafkaPython(), AioKafka()]


@pytest.fixture(params=CLIENTS, ids=lambda c: c.name)
def client(request):
    return request.param


# ------------------------------------------------------------------ scenarios

def test_idempotent_produce_reads_back_exactly_once_in_order(gregor, topic_name, client):
    create_topic(gregor, topic_name, PARTITIONS)
    offsets = client.produce(gregor, topic_name)
    got = client.read(gregor, topic_name)
    for q in range(PARTITIONS):
        assert [v for _, v in got[q]] == values_for(q), f"partition {q}: not exactly once in order"
        assert [o for o, _ in got[q]] == list(range(len(values_for(q)))), f"partition {q}"
        assert offsets[q] == [o for o, _ in got[q]], f"partition {q}: acknowledged offsets"
        ids = stored_producer_ids(gregor, topic_name, q)
        assert ids and all(i >= 0 for i in ids), f"partition {q}: producer ids {ids}"

