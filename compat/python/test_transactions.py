"""Transactions, written once and run with every Python client (confluent-kafka,
kafka-python, aiokafka) against one broker:

- committed and aborted transactions: a read_committed consumer of the same library sees the
  committed records only, in order; a read_uncommitted one sees every record (the aborted ones
  were written, then marked);
- zombie fencing: a second producer with the same transactional id fences the first, whose
  commit then fails;
- consume-transform-produce: a read_committed consumer in a group and a transactional producer
  that commits the group's offsets in its transaction (`send_offsets_to_transaction`), every
  other transaction aborted and its input read again: the output holds each input transformed
  exactly once, in order, and the group's committed offset is the end of the input.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from conftest import create_topic

TIMEOUT_S = 30
PER_TXN = 10


def produce_plain(g, topic: str, values: list[str]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": g.bootstrap})
    for v in values:
        p.produce(topic, value=v.encode(), partition=0)
    assert p.flush(TIMEOUT_S) == 0


# ------------------------------------------------------------------ adapters
# A transactional producer: init(), begin(), send(topic, value), flush(), commit(), abort(),
# send_offsets(topic, next_offset, group, consumer), close(). read(topic, isolation, n) reads
# partition 0 from the beginning. group_consumer(topic, group) -> an object with poll(n) ->
# [(offset, value)], seek(offset), close().

class ConfluentProducer:
    def __init__(self, g, txn_id):
        from confluent_kafka import Producer

        self.p = Producer({"bootstrap.servers": g.bootstrap, "transactional.id": txn_id,
                           "linger.ms": 5})

    def init(self):
        self.p.init_transactions(TIMEOUT_S)

    def begin(self):
        self.p.begin_transaction()

    def send(self, topic, value):
        self.p.produce(topic, value=value.encode(), partition=0)

    def flush(self):
        assert self.p.flush(TIMEOUT_S) == 0

    def commit(self):
        self.p.commit_transaction(TIMEOUT_S)

    def abort(self):
        self.p.abort_transaction(TIMEOUT_S)

    def send_offsets(self, topic, next_offset, group, consumer):
        from confluent_kafka import TopicPartition

        self.p.send_offsets_to_transaction([TopicPartition(topic, 0, next_offset)],
                                           consumer.c.consumer_group_metadata(), TIMEOUT_S)

    def close(self):
        self.p.flush(5)


class ConfluentGroupConsumer:
    def __init__(self, g, topic, group):
        from confluent_kafka import Consumer

        self.topic = topic
        self.c = Consumer({"bootstrap.servers": g.bootstrap, "group.id": group,
                           "enable.auto.commit": False, "auto.offset.reset": "earliest",
                           "isolation.level": "read_committed"})
        self.c.subscribe([topic])

    def poll(self, n):
        got = []
        end = time.monotonic() + 1.0
        while len(got) < n and time.monotonic() < end:
            m = self.c.poll(0.1)
            if m is not None and m.error() is None:
                got.append((m.offset(), m.value().decode()))
        return got

    def seek(self, offset):
        from confluent_kafka import TopicPartition

        self.c.seek(TopicPartition(self.topic, 0, offset))

    def committed(self):
        from confluent_kafka import TopicPartition

        return self.c.committed([TopicPartition(self.topic, 0)], timeout=TIMEOUT_S)[0].offset

    def close(self):
        self.c.close()


class Confluent:
    name = "confluent"

    def producer(self, g, txn_id):
        return ConfluentProducer(g, txn_id)

    def group_consumer(self, g, topic, group):
        return ConfluentGroupConsumer(g, topic, group)

    def read(self, g, topic, isolation, n):
        from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING

        c = Consumer({"bootstrap.servers": g.bootstrap, "group.id": f"r-{uuid.uuid4().hex}",
                      "enable.auto.commit": False, "isolation.level": isolation})
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = []
        end = time.monotonic() + 5
        while time.monotonic() < end and len(got) < n:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                got.append(m.value().decode())
        # Nothing more arrives (an extra record would be a visibility bug).
        extra_end = time.monotonic() + 0.5
        while time.monotonic() < extra_end:
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                got.append(m.value().decode())
        c.close()
        return got


class KafkaPythonProducer:
    def __init__(self, g, txn_id):
        from kafka import KafkaProducer

        self.p = KafkaProducer(bootstrap_servers=g.bootstrap, transactional_id=txn_id,
                               linger_ms=5, max_block_ms=TIMEOUT_S * 1000)

    def init(self):
        self.p.init_transactions()

    def begin(self):
        self.p.begin_transaction()

    def send(self, topic, value):
        self.p.send(topic, value=value.encode(), partition=0)

    def flush(self):
        self.p.flush(timeout=TIMEOUT_S)

    def commit(self):
        self.p.commit_transaction()

    def abort(self):
        self.p.abort_transaction()

    def send_offsets(self, topic, next_offset, group, consumer):
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        self.p.send_offsets_to_transaction(
            {TopicPartition(topic, 0): OffsetAndMetadata(next_offset, "", -1)}, group)

    def close(self):
        self.p.close(timeout=5)


class KafkaPythonGroupConsumer:
    def __init__(self, g, topic, group):
        from kafka import KafkaConsumer, TopicPartition

        self.tp = TopicPartition(topic, 0)
        self.c = KafkaConsumer(topic, bootstrap_servers=g.bootstrap, group_id=group,
                               enable_auto_commit=False, auto_offset_reset="earliest",
                               isolation_level="read_committed", fetch_max_wait_ms=100)

    def poll(self, n):
        got = []
        end = time.monotonic() + 1.0
        while len(got) < n and time.monotonic() < end:
            for records in self.c.poll(timeout_ms=100, max_records=n - len(got)).values():
                got.extend((r.offset, r.value.decode()) for r in records)
        return got

    def seek(self, offset):
        self.c.seek(self.tp, offset)

    def committed(self):
        return self.c.committed(self.tp)

    def close(self):
        self.c.close()


class KafkaPython:
    name = "kafka_python"

    def producer(self, g, txn_id):
        return KafkaPythonProducer(g, txn_id)

    def group_consumer(self, g, topic, group):
        return KafkaPythonGroupConsumer(g, topic, group)

    def read(self, g, topic, isolation, n):
        from kafka import KafkaConsumer, TopicPartition

        c = KafkaConsumer(bootstrap_servers=g.bootstrap, group_id=None,
                          enable_auto_commit=False, isolation_level=isolation,
                          fetch_max_wait_ms=100)
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        got = []
        end = time.monotonic() + 5
        while time.monotonic() < end and len(got) < n:
            for records in c.poll(timeout_ms=200).values():
                got.extend(r.value.decode() for r in records)
        extra_end = time.monotonic() + 0.5
        while time.monotonic() < extra_end:
            for records in c.poll(timeout_ms=100).values():
                got.extend(r.value.decode() for r in records)
        c.close()
        return got


class AioProducer:
    """aiokafka's producer driven from synchronous code on a private event loop."""

    def __init__(self, g, txn_id):
        from aiokafka import AIOKafkaProducer

        self.loop = asyncio.new_event_loop()
        self.p = self.loop.run_until_complete(self._make(AIOKafkaProducer, g, txn_id))

    @staticmethod
    async def _make(cls, g, txn_id):
        return cls(bootstrap_servers=g.bootstrap, transactional_id=txn_id, linger_ms=5)

    def run(self, coro):
        return self.loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT_S))

    def init(self):
        self.run(self.p.start())

    def begin(self):
        self.run(self.p.begin_transaction())

    def send(self, topic, value):
        self.run(self.p.send(topic, value=value.encode(), partition=0))

    def flush(self):
        self.run(self.p.flush())

    def commit(self):
        self.run(self.p.commit_transaction())

    def abort(self):
        self.run(self.p.abort_transaction())

    def send_offsets(self, topic, next_offset, group, consumer):
        from aiokafka import TopicPartition

        self.run(self.p.send_offsets_to_transaction({TopicPartition(topic, 0): next_offset},
                                                    group))

    def close(self):
        try:
            self.run(self.p.stop())
        finally:
            self.loop.close()


class AioGroupConsumer:
    def __init__(self, g, topic, group):
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self.loop = asyncio.new_event_loop()
        self.tp = TopicPartition(topic, 0)

        async def make():
            c = AIOKafkaConsumer(topic, bootstrap_servers=g.bootstrap, group_id=group,
                                 enable_auto_commit=False, auto_offset_reset="earliest",
                                 isolation_level="read_committed", fetch_max_wait_ms=100)
            await c.start()
            return c

        self.c = self.loop.run_until_complete(make())

    def poll(self, n):
        async def run():
            got = []
            end = time.monotonic() + 1.0
            while len(got) < n and time.monotonic() < end:
                batches = await self.c.getmany(timeout_ms=100, max_records=n - len(got))
                for records in batches.values():
                    got.extend((r.offset, r.value.decode()) for r in records)
            return got

        return self.loop.run_until_complete(run())

    def seek(self, offset):
        self.c.seek(self.tp, offset)

    def committed(self):
        return self.loop.run_until_complete(self.c.committed(self.tp))

    def close(self):
        try:
            self.loop.run_until_complete(self.c.stop())
        finally:
            self.loop.close()


class AioKafka:
    name = "aiokafka"

    def producer(self, g, txn_id):
        return AioProducer(g, txn_id)

    def group_consumer(self, g, topic, group):
        return AioGroupConsumer(g, topic, group)

    def read(self, g, topic, isolation, n):
        from aiokafka import AIOKafkaConsumer, TopicPartition

        async def run():
            c = AIOKafkaConsumer(bootstrap_servers=g.bootstrap, group_id=None,
                                 enable_auto_commit=False, isolation_level=isolation,
                                 fetch_max_wait_ms=100)
            await c.start()
            try:
                tp = TopicPartition(topic, 0)
                c.assign([tp])
                await c.seek_to_beginning(tp)
                got = []
                end = time.monotonic() + 5
                while time.monotonic() < end and len(got) < n:
                    for records in (await c.getmany(timeout_ms=200)).values():
                        got.extend(r.value.decode() for r in records)
                extra_end = time.monotonic() + 0.5
                while time.monotonic() < extra_end:
                    for records in (await c.getmany(timeout_ms=100)).values():
                        got.extend(r.value.decode() for r in records)
                return got
            finally:
                await c.stop()

        return asyncio.run(run())


CLIENTS = [Confluent(), KafkaPython(), AioKafka()]


@pytest.fixture(params=CLIENTS, ids=lambda c: c.name)
def client(request):
    return request.param


# ------------------------------------------------------------------ scenarios

def test_committed_transactions_are_read_aborted_ones_are_not(gregor, topic_name, client):
    create_topic(gregor, topic_name)
    p = client.producer(gregor, f"tx-{uuid.uuid4().hex[:8]}")
    p.init()
    committed, everything = [], []
    try:
        for txn in range(4):
            p.begin()
            values = [f"t{txn}-{i:02d}" for i in range(PER_TXN)]
            for v in values:
                p.send(topic_name, v)
            everything += values
            if txn % 2 == 0:
                p.commit()
                committed += values
            else:
                # Written first (some clients drop what they have not sent on abort).
                p.flush()
                p.abort()
    finally:
        p.close()
    assert client.read(gregor, topic_name, "read_committed", len(committed)) == committed
    assert client.read(gregor, topic_name, "read_uncommitted", len(everything)) == everything


def test_a_second_producer_fences_the_first(gregor, topic_name, client):
    create_topic(gregor, topic_name)
    txn_id = f"tx-{uuid.uuid4().hex[:8]}"
    zombie = client.producer(gregor, txn_id)
    zombie.init()
    zombie.begin()
    zombie.send(topic_name, "zombie")
    zombie.flush()
    fresh = client.producer(gregor, txn_id)
    try:
        fresh.init()  # aborts the zombie's open transaction and bumps the epoch
        with pytest.raises(Exception) as fenced:
            zombie.send(topic_name, "zombie-2")
            zombie.commit()
        print(f"{client.name}: zombie's commit failed with {fenced.value!r}")
        fresh.begin()
        fresh.send(topic_name, "fresh")
        fresh.commit()
    finally:
        fresh.close()
        try:
            zombie.close()
        except Exception:  # a fenced producer may refuse to close cleanly
            pass
    assert client.read(gregor, topic_name, "read_committed", 1) == ["fresh"]


def test_consume_transform_produce_commits_offsets_in_the_transaction(gregor, client):
    run = uuid.uuid4().hex[:8]
    source, sink, group = f"ctp-in-{run}", f"ctp-out-{run}", f"ctp-{run}"
    create_topic(gregor, source)
    create_topic(gregor, sink)
    inputs = [f"v{i:03d}" for i in range(60)]
    produce_plain(gregor, source, inputs)
    consumer = client.group_consumer(gregor, source, group)
    producer = client.producer(gregor, f"tx-{run}")
    producer.init()
    position = 0  # the committed input position (where an abort rewinds to)
    transactions = 0
    end = time.monotonic() + 45
    try:
        while position < len(inputs):
            assert time.monotonic() < end, f"stuck at {position}"
            batch = consumer.poll(PER_TXN)
            if not batch:
                continue
            transactions += 1
            producer.begin()
            for _, value in batch:
                producer.send(sink, f"T({value})")
            next_offset = batch[-1][0] + 1
            producer.send_offsets(source, next_offset, group, consumer)
            if transactions % 2 == 0:
                producer.flush()
                producer.abort()
                consumer.seek(position)
            else:
                producer.commit()
                position = next_offset
    finally:
        producer.close()
        committed = consumer.committed()
        consumer.close()
    assert committed == len(inputs), f"group committed {committed}"
    out = client.read(gregor, sink, "read_committed", len(inputs))
    assert out == [f"T({v})" for v in inputs], "not exactly once in order"
    print(f"{client.name}: {transactions} transactions")
