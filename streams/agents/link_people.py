"""link_people: tip.sightings -> tip.links, exactly once, partitioned by linkage key.

Every occurrence that carries a linkage key is filed in the partition that key hashes to, so
each partition's instance compares a newcomer only with what is filed under the same key. The
index of a partition is the fold of that partition up to the group's committed offset: the records
after it are the batch about to be processed again, whose links must be made again.

The index lives in the stage's `StageState` (a row per filed sighting, looked up by linkage key), with
the checkpoint of the input it reflects: after the batch's transaction committed, its sightings and the
position after its last record go to the store together. At assignment the store is read on from its
checkpoint to the group's commit (the batches a crash left unrecorded), not from the beginning; a
checkpoint beyond the group's commit (offsets reset, topic recreated) is wiped and the partition rebuilt
(streams/checkpointed.py): an index ahead of the commit would take the batch about to be read again for a
re-delivery and make none of its links. Erased subjects leave the store and are never linked again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Any

from domain.linking import LINKS, SIGHTINGS, KeyIndex, Link, Sighting
from domain.log import EventLog, LogRecord, Output, TopicPartition
from domain.state_store import Checkpoint, Entry, StageState
from domain.withdrawals import Withdrawals
from schemas.codec import CodecError, WireCodec
from streams.checkpointed import Replayed, checkpoint_after, replay_tail
from streams.stage_context import StageContext
from streams.topics import Topics

log = logging.getLogger(__name__)
STATE_VERSION = 1  # entries: key the linkage key, item the occurrence, value Sighting.to_json, tag its subject


def sighting_entry(sighting: Sighting) -> Entry:
    return Entry(sighting.key, sighting.to_json(), item=sighting.occ_id, tag=sighting.subject_key_id)


class UnreadableState(RuntimeError):
    """A partition's stored index could not be read: it was wiped, and is rebuilt before the batch is read again."""


class LinkPeople:
    """BatchHandler for the link stage, in consumer group `group_id`: `log` feeds it erasures and gives back
    the sightings that group has committed; `state` keeps each partition's index and its checkpoint."""

    def __init__(self, topics: Topics, log: EventLog, group_id: str, state: StageState) -> None:
        self.topics = topics
        self.log = log
        self.group_id = group_id
        self.state = state
        self.codec = WireCodec()
        self.ready: dict[int, Checkpoint] = {}  # partitions restored and owned -> their index's checkpoint
        self.restores: list[Replayed] = []
        self.withdrawn = Withdrawals()
        self._erasures = log.feed({topics.erasures: self._erasure})
        self._feed_started = False
        self._forgotten: set[str] = set()  # erased subjects already deleted from the store
        self._lock = asyncio.Lock()
        self._revocations: dict[int, int] = {}
        self._pending: dict[int, list[Entry]] = {}
        self._positions: dict[int, Checkpoint] = {}

    def _erasure(self, fact: dict[str, Any]) -> None:
        self.withdrawn.fold(fact, "erased")

    @property
    def erased(self) -> Collection[str]:
        return self.withdrawn.erased.keys()

    def _forget_erased(self) -> None:
        gone = set(self.erased) - self._forgotten
        if gone:
            deleted = self.state.delete_tagged(gone)
            self._forgotten |= gone
            if deleted:
                log.info("%d filed sighting(s) of %d erased subject(s) deleted from the link index", deleted, len(gone))

    def _sightings_tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topics.sightings, partition)

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        await self._ensure_restored({tp.partition for tp in partitions if tp.topic == self.topics.sightings})

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.ready.pop(tp.partition, None)
            self._revocations[tp.partition] = self._revocations.get(tp.partition, 0) + 1

    async def _ensure_restored(self, partitions: set[int]) -> None:
        """As in accept_reports: the assignment callback and the first batch race; one restores."""
        async with self._lock:
            if not self._feed_started:
                await self._erasures.start()
                self._feed_started = True
            self._forget_erased()
            missing = partitions - self.ready.keys()
            if not missing:
                return
            before = {p: self._revocations.get(p, 0) for p in missing}
            restored = await self._restore(missing)
            for partition, replayed in sorted(restored.items()):
                self.restores.append(replayed)
                log.info(replayed.describe("link index", self._sightings_tp(partition)))
                if self._revocations.get(partition, 0) == before[partition]:
                    self.ready[partition] = replayed.checkpoint
            replayed_records = sum(r.replayed for r in restored.values())
            log.info("link index of partitions %s restored: %d records replayed", sorted(missing), replayed_records)

    async def _restore(self, partitions: set[int]) -> dict[int, Replayed]:
        tps = [self._sightings_tp(p) for p in sorted(partitions)]
        stop_at = await self.log.committed(self.group_id, tps)
        async with self.log.reading() as reader:
            return {tp.partition: await replay_tail(self.state, reader, tp, stop_at[tp], self._entries) for tp in tps}

    def _entries(self, record: LogRecord) -> list[Entry]:
        erased = self.erased
        return [sighting_entry(s) for s in self._sightings(record) if s.subject_key_id not in erased]

    def _sightings(self, record: Any) -> list[Sighting]:
        try:
            _, batch = self.codec.decode(record.value, expect=SIGHTINGS)
        except CodecError as exc:
            log.warning("skipping a record on %s at offset %d: %s", record.topic, record.offset, exc.reason)
            return []
        return [Sighting.from_record(s) for s in batch["sightings"]]

    def _index(self, partition: int, keys: set[str]) -> KeyIndex:
        """What the partition has filed under these keys, as a KeyIndex for one batch."""
        tp = self._sightings_tp(partition)
        try:
            filed = {
                key: {occ: Sighting.from_json(value) for occ, value in items.items()}
                for key, items in self.state.get(tp, keys).items()
            }
        except (ValueError, TypeError) as exc:
            log.error("the stored link index of partition %d is unreadable (%s): rebuilding it", partition, exc)
            self.state.wipe(tp)
            self.ready.pop(partition, None)
            raise UnreadableState(f"link index of partition {partition} rebuilt; reading the batch again") from exc
        return KeyIndex(filed=defaultdict(dict, filed), erased=set(self.erased))

    async def handle(self, records: Sequence[Any]) -> list[Output]:
        await self._ensure_restored({r.partition for r in records})
        if not {r.partition for r in records} <= self.ready.keys():
            raise RuntimeError("partition revoked while its batch was being read; reading it again")
        await self._erasures.catch_up()
        self._forget_erased()
        self._pending, self._positions = {}, {}
        read = [(record, self._sightings(record)) for record in records]
        keys: dict[int, set[str]] = defaultdict(set)
        for record, sightings in read:
            keys[record.partition] |= {s.key for s in sightings}
        indexes = {partition: self._index(partition, wanted) for partition, wanted in keys.items()}
        links: list[Link] = []
        for record, sightings in read:
            for sighting in sightings:
                links += indexes[record.partition].add(sighting)
                if sighting.subject_key_id not in self.erased:
                    self._pending.setdefault(record.partition, []).append(sighting_entry(sighting))
            self._positions[record.partition] = checkpoint_after(record, record.offset + 1)
        if not links:
            return []
        value = self.codec.encode(LINKS, {"links": [link.__dict__ for link in links]})
        return [Output(self.topics.links, None, value, partition=0)]

    def committed(self) -> None:
        """The batch's transaction committed with its input positions: its sightings go to the store with the
        position after its last record (the runtime committed at least that far)."""
        for partition, checkpoint in sorted(self._positions.items()):
            try:
                self.state.commit(self._sightings_tp(partition), self._pending.get(partition, []), checkpoint)
            except Exception:
                log.exception("link index of partition %d not stored; restoring it from the topic", partition)
                self.ready.pop(partition, None)
                continue
            if partition in self.ready:
                self.ready[partition] = checkpoint
        self._pending, self._positions = {}, {}

    def aborted(self) -> None:
        # The store holds nothing of the batch. Restore its partitions all the same: if the transaction had
        # committed after all (a failure after its commit), the group's commit is past what the store holds.
        for partition in self._positions:
            self.ready.pop(partition, None)
        self._pending, self._positions = {}, {}

    async def close(self) -> None:
        await self._erasures.stop()


def build(context: StageContext) -> LinkPeople:
    return LinkPeople(
        context.topics, context.log, context.group_id, context.provisions.stage_state("link", STATE_VERSION)
    )
