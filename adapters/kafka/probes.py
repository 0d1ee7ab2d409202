"""The Kafka clients of the composition root's own commands: what `tiphub up` and `tiphub bench` watch and
measure from outside the hub (committed outputs, consumer-group lag, offsets taken, the bare client's
consume -> produce rate), and what `tiphub rebuild` copies and drops. tiphub/ orchestrates; the clients
live here, the one package that imports aiokafka.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from adapters.kafka.feeds import group_lag, read_until, stage_lags
from adapters.kafka.kafka_clients import stop_consumer
from adapters.kafka.producer import new_producer
from domain.log import Record, TopicSpec


class LagProbe:
    """Records consumer groups have not committed yet, and offsets taken, over one admin client and consumer."""

    def __init__(self, bootstrap: str, client_options: dict[str, Any] | None = None) -> None:
        options = client_options or {}
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **options)

    async def start(self) -> None:
        await self.admin.start()
        await self.consumer.start()

    async def stop(self) -> None:
        await stop_consumer(self.consumer)
        await self.admin.close()

    async def __aenter__(self) -> LagProbe:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def group_lag(self, group_id: str, partitions: Iterable[tuple[str, int]]) -> int:
        """Records on these (topic, partition)s that `group_id` has not committed yet."""
        tps = [TopicPartition(topic, p) for topic, p in partitions]
        return await group_lag(self.admin, self.consumer, group_id, tps)

    async def stage_lags(
        self, inputs: Mapping[str, list[tuple[str, list[int]]]], group_of: Callable[[str], str]
    ) -> dict[str, int]:
        """Each stage's lag on its input partitions (streams.stages.stage_inputs)."""
        return await stage_lags(self.admin, self.consumer, inputs, group_of)

    async def appended(self, specs: Iterable[TopicSpec]) -> int:
        """Offsets taken on these topics so far: records plus transaction markers."""
        tps = [TopicPartition(spec.name, p) for spec in specs for p in range(spec.partitions)]
        return sum((await self.consumer.end_offsets(tps)).values())


class CommittedReader:
    """What the hub commits on `topics`, as it commits it: subscribed from the beginning, read_committed,
    committing nothing itself. `consumer_config` is passed to the consumer (e.g. max_partition_fetch_bytes)."""

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        client_options: dict[str, Any] | None = None,
        **consumer_config: Any,
    ) -> None:
        self.consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **consumer_config,
            **(client_options or {}),
        )

    async def __aenter__(self) -> CommittedReader:
        await self.consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await stop_consumer(self.consumer)

    async def batch(self, timeout_ms: int, max_records: int | None = None) -> list[tuple[str, list[Record]]]:
        """The next batch (empty after `timeout_ms` without records), as (topic, records) per partition."""
        batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [
            (
                tp.topic,
                [
                    Record(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers), r.timestamp)
                    for r in records
                ],
            )
            for tp, records in batch.items()
        ]


async def passthrough(
    bootstrap: str, source: str, sink: str, partitions: int, count: int, client_options: dict[str, Any]
) -> float:
    """Messages per second of a bare aiokafka consume -> produce loop over `source` into `sink` (which
    exists), by the same clients the hub uses: the ceiling the client itself sets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
        **client_options,
    )
    producer = new_producer(bootstrap, client_options)
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(source, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        moved, futures = 0, []
        start = time.monotonic()
        while moved < count:
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    futures.append(
                        await producer.send(sink, key=record.key, value=record.value, partition=tp.partition)
                    )
                moved += sum(1 for _ in records)
        await asyncio.gather(*futures)
        return moved / (time.monotonic() - start)
    finally:
        await producer.stop()
        await stop_consumer(consumer)


async def _records(bootstrap: str, topic: str, partitions: int, options: dict[str, Any]) -> list[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed", **options
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        return await read_until(consumer, tps, await consumer.end_offsets(tps))
    finally:
        await stop_consumer(consumer)


async def copy_topic(bootstrap: str, source: str, sink: str, partitions: int, options: dict[str, Any]) -> int:
    """Every committed record of `source` written to `sink`, record for record: partition, key, value and
    headers kept, so keyed state lands where it would. Returns how many were copied."""
    records = await _records(bootstrap, source, partitions, options)
    producer = new_producer(bootstrap, options)
    await producer.start()
    try:
        sends = [
            await producer.send(sink, key=r.key, value=r.value, partition=r.partition, headers=list(r.headers) or None)
            for r in records
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return len(records)


async def delete_topics(bootstrap: str, names: list[str], options: dict[str, Any]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()
