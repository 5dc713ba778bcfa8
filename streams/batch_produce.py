"""The join's writes (examples, join-state changelog) sent as one record batch per topic-partition.

Why: Faust's per-record send path (``Topic.send``/``send_soon``: a ``FutureMessage``, the
serializer registry, the producer buffer task, a callback chain, then aiokafka's ``send``)
cost the worker more than decoding and joining together once the join went batch-native (a
cProfile of the worker: ~45% of its main thread). The join already knows a whole batch of
writes at once, so :class:`BatchWriter` collects them and hands aiokafka one
``BatchBuilder`` per topic-partition (``AIOKafkaProducer.send_batch``), on the Faust app's
own producer, so Faust's flush before each offset commit still covers them.

Same bytes and places as before: keys are the UTF-8 request ids, partitions follow Kafka's
default partitioner (murmur2 of the key over the topic's partition count from the broker's
metadata), changelog values are the JSON a Faust ``json`` table value decodes, ``None`` is a
delete. Per topic-partition, records leave in the order they were added (flushes are
serialized), so an entry's open version always precedes its tombstone in the changelog.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from streams.records import partition_for_key

#: called with the future of the record batch that carried the write (done or failed)
OnSent = Callable[[asyncio.Future], None]


def _fail(records: list[tuple[bytes, bytes | None, OnSent | None]], exc: BaseException) -> None:
    failed: asyncio.Future = asyncio.get_running_loop().create_future()
    failed.set_exception(exc)
    failed.exception()  # retrieved: no "exception never retrieved" warning
    for _key, _value, on_sent in records:
        if on_sent is not None:
            on_sent(failed)


class BatchWriter:
    """Writes added between two :meth:`flush` calls, grouped per topic (partitioned at flush)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.pending: dict[str, list[tuple[bytes, bytes | None, OnSent | None]]] = {}
        self.partitions: dict[str, int] = {}
        self.lock = asyncio.Lock()

    def _producer(self) -> Any:
        return self.app.producer._ensure_producer()  # noqa: SLF001 - the aiokafka producer Faust flushes

    async def partition_count(self, topic: str) -> int:
        count = self.partitions.get(topic)
        if count is None:
            producer = self._producer()
            await producer.client._wait_on_metadata(topic)  # noqa: SLF001 - what aiokafka's send does first
            count = len(producer.client.cluster.partitions_for_topic(topic))
            self.partitions[topic] = count
        return count

    def add(self, topic: str, key: bytes, value: bytes | None, on_sent: OnSent | None = None) -> None:
        """Queue one record for the key's partition of ``topic``; ``on_sent`` runs when its batch is acked or failed."""
        self.pending.setdefault(topic, []).append((key, value, on_sent))

    def size(self) -> int:
        """Records collected and not yet handed to the producer."""
        return sum(len(records) for records in self.pending.values())

    async def flush(self) -> list[tuple[str, asyncio.Future]]:
        """Send everything added so far; returns ``(topic, batch future)`` per record batch sent."""
        async with self.lock:
            pending, self.pending = self.pending, {}
            sent: list[tuple[str, asyncio.Future]] = []
            for topic, records in pending.items():
                count = await self.partition_count(topic)
                by_partition: dict[int, list[tuple[bytes, bytes | None, OnSent | None]]] = {}
                for record in records:
                    by_partition.setdefault(partition_for_key(record[0].decode("utf-8"), count), []).append(record)
                for partition, part in by_partition.items():
                    sent.extend((topic, future) for future in await self._send(topic, partition, part))
            return sent

    async def _send(self, topic: str, partition: int,
                    records: list[tuple[bytes, bytes | None, OnSent | None]]) -> list[asyncio.Future]:
        """As few record batches as the producer's batch size allows (a record bigger than it goes alone)."""
        producer = self._producer()
        futures = []
        start = 0
        while start < len(records):
            batch = producer.create_batch()
            end = start
            while end < len(records) and batch.append(timestamp=None, key=records[end][0],
                                                      value=records[end][1]) is not None:
                end += 1
            try:
                future = await producer.send_batch(batch, topic, partition=partition)
            except Exception as exc:
                _fail(records[start:], exc)  # their writers hear it (an example's entry stays open)
                raise
            for _key, _value, on_sent in records[start:end]:
                if on_sent is not None:
                    future.add_done_callback(on_sent)
            futures.append(future)
            start = end
        return futures
