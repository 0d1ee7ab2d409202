"""Whole-topic feeds: facts every processor must know before it judges a record (agreements, erasures)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters.kafka.kafka_clients import stop_consumer
from adapters.kafka.stable_offsets import stable_group_offsets
from domain.log import RawRecord, UnsettledTopic
from schemas.codec import CodecError, WireCodec

log = logging.getLogger(__name__)


async def read_until(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    stop_at: dict[TopicPartition, int],
    max_records: int = 5000,
) -> list[Any]:
    """Every record from the consumer's current positions up to (not including) `stop_at`.

    Waits on positions, not record offsets: under read_committed, commit markers and aborted
    records occupy offsets that are never returned. A fetch that brings only markers moves the position
    but does not wake `getmany`, so it is asked for a short while at a time (POSITION_CHECK_MS) and the
    positions are looked at in between: every stage's first restore after it wrote anything reads such a
    range (the commit marker after its last checkpoint), and waiting out a long poll there cost 0.3 s a
    partition, one partition after another. A read that gets nothing for STALLED_READ_S says where it
    stands; after GIVE_UP_AFTER such stalls it raises UnsettledTopic (restore later), never hangs its stage.
    """
    out: list[Any] = []
    remaining = {tp for tp in partitions if await consumer.position(tp) < stop_at[tp]}
    loop = asyncio.get_running_loop()
    quiet_since, warned = loop.time(), 0
    while remaining:
        batch = await consumer.getmany(*remaining, timeout_ms=POSITION_CHECK_MS, max_records=max_records)
        for tp, records in batch.items():
            out += [r for r in records if r.offset < stop_at[tp]]
        if batch:
            quiet_since, warned = loop.time(), 0
        elif loop.time() - quiet_since > STALLED_READ_S * (warned + 1):
            warned += 1  # a read that never gets there would hang its stage silently: say where it stands
            at = {f"{tp.topic}[{tp.partition}]": (await consumer.position(tp), stop_at[tp]) for tp in remaining}
            quiet = loop.time() - quiet_since
            if warned >= GIVE_UP_AFTER:  # the caller restores again later, on a new connection
                raise UnsettledTopic(f"no record for {quiet:.0f} s below the end: (position, end) {at}")
            log.warning("no record for %.0f s reading up to the end: (position, end) %s", quiet, at)
        for tp in list(remaining):
            if await consumer.position(tp) >= stop_at[tp]:
                remaining.discard(tp)
    return out


POSITION_CHECK_MS = 10  # how long a bounded read waits for records before it looks at the positions
STALLED_READ_S = 30.0
GIVE_UP_AFTER = 3  # stalls of STALLED_READ_S: a read with nothing for 90 s gives up


SETTLE_TIMEOUT_S = 30.0


async def settled_end_offsets(
    bootstrap: str,
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    client_options: dict[str, Any] | None = None,
    timeout_s: float = SETTLE_TIMEOUT_S,
) -> dict[TopicPartition, int]:
    """Where to read a stage's own output up to when it restores from it: every record written so
    far (the high watermark), once every transaction among them has ended.

    A read-committed consumer's end offsets stop at the first open transaction. Restoring up to
    there misses what a transaction that is still completing will show: after a broker restart,
    noida-db finished the commit of a transaction a few hundred milliseconds late, and the
    correlator, restored without those signal versions, wrote version 1 of them again. Apache Kafka
    can leave a transaction of a previous owner open as long (up to its transaction timeout)."""
    peek = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_uncommitted",
        **(client_options or {}),
    )
    await peek.start()
    try:
        written = await peek.end_offsets(partitions)
    finally:
        await stop_consumer(peek)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        stable: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        if all(stable[tp] >= written[tp] for tp in partitions):
            return stable
        if asyncio.get_running_loop().time() > deadline:
            open_at = {f"{tp.topic}[{tp.partition}]": stable[tp] for tp in partitions if stable[tp] < written[tp]}
            raise UnsettledTopic(f"transactions still open at {open_at} after {timeout_s:.0f}s")
        await asyncio.sleep(0.1)


async def end_offsets(
    bootstrap: str, partitions: list[TopicPartition], client_options: dict[str, Any] | None = None
) -> dict[TopicPartition, int]:
    """The current end of these partitions (the last stable offset, as a read_committed reader sees it)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed", **(client_options or {}))
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        return ends
    finally:
        await stop_consumer(consumer)


async def committed_offsets(
    bootstrap: str, group_id: str, partitions: list[TopicPartition], client_options: dict[str, Any] | None = None
) -> dict[TopicPartition, int]:
    """Where a consumer group has committed on these partitions (0 where it has not): a stage
    restoring its state replays its input up to here, then reprocesses the rest as batches. Asked as the
    stage's processor asks where to resume (adapters/kafka/stable_offsets.py): once pending transactions
    ended, so that the restore stops exactly where the processing resumes, with no record in between."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(client_options or {}))
    await admin.start()
    try:
        committed = await stable_group_offsets(admin, group_id, set(partitions))
    finally:
        await admin.close()
    return {tp: committed.get(tp) or 0 for tp in partitions}


async def group_lag(admin: Any, consumer: AIOKafkaConsumer, group_id: str, partitions: list[TopicPartition]) -> int:
    """Records on `partitions` that `group_id` has not committed yet (an AIOKafkaAdminClient as `admin`)."""
    committed = await admin.list_consumer_group_offsets(group_id)
    ends = await consumer.end_offsets(partitions)
    return sum(max(0, ends[tp] - (committed[tp].offset if tp in committed else 0)) for tp in partitions)


async def stage_lags(
    admin: Any,
    consumer: AIOKafkaConsumer,
    stage_inputs: Mapping[str, list[tuple[str, list[int]]]],
    group_of: Callable[[str], str],
) -> dict[str, int]:
    """Each stream stage's lag on its input partitions (streams.stages.stage_inputs)."""
    return {
        stage: await group_lag(admin, consumer, group_of(stage), [TopicPartition(t, p) for t, ps in inputs for p in ps])
        for stage, inputs in stage_inputs.items()
    }


class TopicFeed:
    """Reads every partition of some topics from the beginning; `catch_up()` reads to the current end.

    No consumer group: every processor instance needs all of it.
    """

    def __init__(
        self,
        bootstrap: str,
        handlers: Mapping[str, Callable[[dict[str, Any]], None]],
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = list(handlers)
        self.handlers = dict(handlers)
        self.options = client_options or {}
        self.codec = WireCodec()
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []

    async def start(self) -> None:
        """Idempotent; a start that fails leaves nothing behind, so it can simply be called again."""
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, isolation_level="read_committed", **self.options
        )
        try:
            await consumer.start()
            partitions = [
                TopicPartition(topic, p) for topic in self.topics for p in sorted(await _partitions_of(consumer, topic))
            ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
        except BaseException:
            await stop_consumer(consumer)
            raise
        self._consumer, self._partitions = consumer, partitions
        await self.catch_up()

    async def catch_up(self) -> int:
        """Apply every record up to the end offsets as they are now. Returns how many were applied."""
        assert self._consumer is not None, "start() first"
        ends = await self._consumer.end_offsets(self._partitions)
        applied = 0
        for record in await read_until(self._consumer, self._partitions, ends):
            try:
                _, value = self.codec.decode(record.value)
            except CodecError:
                continue  # not ours to judge here; the writer's own checks apply
            self.handlers[record.topic](value)
            applied += 1
        return applied

    async def stop(self) -> None:
        if self._consumer is not None:
            await stop_consumer(self._consumer)


async def _partitions_of(consumer: AIOKafkaConsumer, topic: str, limit_s: float = 30.0) -> set[int]:
    """The topic's partitions, once the metadata knows them. Right after a restart the metadata can be
    stale; a feed that took "no partitions" for an answer would read nothing and every judgement made
    on it (no agreement, no erasure) would be wrong, silently. So ask again, and fail if it never comes."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        await consumer._client.force_metadata_update()
        partitions = consumer._client.cluster.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"topic {topic} has no partitions in the broker's metadata after {limit_s:.0f}s")
        log.warning("topic %s has no partitions in the metadata yet; asking again", topic)
        await asyncio.sleep(0.2)


async def read_partitions(
    bootstrap: str, topic: str, partitions: int, client_options: dict[str, Any] | None = None
) -> dict[int, list[RawRecord]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        **(client_options or {}),
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: dict[int, list[RawRecord]] = {p: [] for p in range(partitions)}
        for record in await read_until(consumer, tps, await consumer.end_offsets(tps)):
            out[record.partition].append((record.offset, record.value))
        return out
    finally:
        await stop_consumer(consumer)


async def read_decoded(
    bootstrap: str, topic: str, partitions: int, client_options: dict[str, Any] | None = None, expect: str | None = None
) -> list[dict[str, Any]]:
    """Every committed record of a topic, decoded; values not of `expect` (or not ours) are skipped."""
    codec = WireCodec()
    values = []
    for records in (await read_partitions(bootstrap, topic, partitions, client_options)).values():
        for _, value in records:
            try:
                values.append(codec.decode(value, expect=expect)[1])
            except CodecError:
                continue
    return values
