"""link_people: tip.sightings -> tip.links, exactly once, partitioned by linkage key.

Every occurrence that carries a linkage key is filed in the partition that key hashes to, so
each partition's instance compares a newcomer only with what is filed under the same key. The
index of a partition is rebuilt at assignment by replaying that partition up to the group's
committed offset: the records after it are the batch about to be processed again, whose links
must be made again. Erased subjects leave every index and are never linked again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from typing import Any

from domain.linking import LINKS, SIGHTINGS, KeyIndex, Link, Sighting
from domain.log import EventLog, Output, TopicPartition
from domain.withdrawals import Withdrawals
from schemas.codec import CodecError, WireCodec
from streams.stage_context import StageContext
from streams.topics import Topics

log = logging.getLogger(__name__)


class LinkPeople:
    """BatchHandler for the link stage, in consumer group `group_id`: `log` feeds it erasures and gives back
    the sightings that group has committed."""

    def __init__(self, topics: Topics, log: EventLog, group_id: str) -> None:
        self.topics = topics
        self.log = log
        self.group_id = group_id
        self.codec = WireCodec()
        self.indexes: dict[int, KeyIndex] = {}
        self.withdrawn = Withdrawals()
        self._erasures = log.feed({topics.erasures: self._erasure})
        self._feed_started = False
        self._lock = asyncio.Lock()
        self._revocations: dict[int, int] = {}

    def _erasure(self, fact: dict[str, Any]) -> None:
        self.withdrawn.fold(fact, "erased")

    @property
    def erased(self) -> Collection[str]:
        return self.withdrawn.erased.keys()

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        await self._ensure_restored({tp.partition for tp in partitions if tp.topic == self.topics.sightings})

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.indexes.pop(tp.partition, None)
            self._revocations[tp.partition] = self._revocations.get(tp.partition, 0) + 1

    async def _ensure_restored(self, partitions: set[int]) -> None:
        """As in accept_reports: the assignment callback and the first batch race; one restores."""
        async with self._lock:
            if not self._feed_started:
                await self._erasures.start()
                self._feed_started = True
            missing = partitions - self.indexes.keys()
            if not missing:
                return
            before = {p: self._revocations.get(p, 0) for p in missing}
            restored = await self._restore(missing)
            for partition, index in restored.items():
                if self._revocations.get(partition, 0) == before[partition]:
                    self.indexes[partition] = index
            log.info("link index of partitions %s restored", sorted(missing))

    async def _restore(self, partitions: set[int]) -> dict[int, KeyIndex]:
        tps = [TopicPartition(self.topics.sightings, p) for p in partitions]
        stop_at = await self.log.committed(self.group_id, tps)
        indexes = {p: KeyIndex(erased=set(self.erased)) for p in partitions}
        async with self.log.reading() as reader:
            for record in await reader.read(stop_at):
                for sighting in self._sightings(record):
                    indexes[record.partition].add(sighting)
        return indexes

    def _sightings(self, record: Any) -> list[Sighting]:
        try:
            _, batch = self.codec.decode(record.value, expect=SIGHTINGS)
        except CodecError as exc:
            log.warning("skipping a record on %s at offset %d: %s", record.topic, record.offset, exc.reason)
            return []
        return [Sighting.from_record(s) for s in batch["sightings"]]

    async def handle(self, records: Sequence[Any]) -> list[Output]:
        await self._ensure_restored({r.partition for r in records})
        if not {r.partition for r in records} <= self.indexes.keys():
            raise RuntimeError("partition revoked while its batch was being read; reading it again")
        await self._erasures.catch_up()
        for index in self.indexes.values():
            index.erase(self.erased)
        links: list[Link] = []
        for record in records:
            index = self.indexes[record.partition]
            for sighting in self._sightings(record):
                links += index.add(sighting)
        if not links:
            return []
        value = self.codec.encode(LINKS, {"links": [link.__dict__ for link in links]})
        return [Output(self.topics.links, None, value, partition=0)]

    def committed(self) -> None:
        pass

    def aborted(self) -> None:
        # The indexes already hold the aborted batch: rebuild them from the topic before it is read again.
        self.indexes = {}

    async def close(self) -> None:
        await self._erasures.stop()


def build(context: StageContext) -> LinkPeople:
    return LinkPeople(context.topics, context.log, context.group_id)
