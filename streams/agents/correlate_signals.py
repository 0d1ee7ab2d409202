"""correlate_signals, the union stage: tip.reports.accepted + tip.links -> tip.entities + tip.signals.

Exactly once, one instance. The costly comparisons of people happen partitioned by linkage key
in link_people; this stage joins their links into entities (union-find, then contact links
guarded against over-linking), emits an EntityMerged fact when an entity gains a member or
absorbs another, and evaluates the Collection Plan on the entities a batch touched. Entities
span every partition, so one instance holds the union: the worker with instance id 0
(docs/correlation.md: the limit). At assignment it rebuilds its state by replaying accepted
reports and links up to its committed offsets (erasures first), and loads the versions already
on tip.signals, so a restart emits nothing twice. After that, each batch emits a new version of
every signal whose content changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.codec import CodecError, WireCodec
from streams.correlate import Correlator, Requirement, Signal, SignalBook, facts_from_accepted
from streams.feeds import TopicFeed, committed_offsets, read_until, settled_end_offsets
from streams.linking import ENTITY_MERGED, LINKS, Link
from streams.topics import Topics
from streams.transactional import Output

log = logging.getLogger(__name__)
SIGNAL = "tiphub.Signal"
COVERAGE = "tiphub.Coverage"


def signal_record(version: int, signal: Signal) -> dict[str, Any]:
    return {
        **signal.__dict__,
        "version": version,
        "report_ids": list(signal.report_ids),
        "agencies": list(signal.agencies),
        "elements": list(signal.elements),
        "act_means_purpose": list(signal.act_means_purpose),
    }


def signal_from_record(record: dict[str, Any]) -> tuple[int, Signal]:
    fields = {k: v for k, v in record.items() if k != "version"}
    for key in ("report_ids", "agencies", "elements", "act_means_purpose"):
        fields[key] = tuple(fields[key])
    return record["version"], Signal(**fields)


class CorrelateSignals:
    def __init__(
        self,
        topics: Topics,
        bootstrap: str,
        group_id: str,
        plan: list[Requirement],
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.topics = topics
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.plan = plan
        self.options = client_options or {}
        self.codec = WireCodec()
        self.correlator = Correlator(plan, external_links=True)
        self.book = SignalBook()
        self._pending_erasures: set[str] = set()
        self._pending_retractions: set[str] = set()
        self._erasures = TopicFeed(bootstrap, [topics.erasures, topics.retractions], self._erasure, client_options)
        self._ready = False
        self._lock = asyncio.Lock()
        self._stale: list[Signal] = []
        self._coverage: dict[str, dict[str, Any]] = {}
        self._pending_coverage: dict[str, dict[str, Any]] = {}

    def _erasure(self, fact: dict[str, Any]) -> None:
        if "subject_key_id" in fact and fact["subject_key_id"] not in self.correlator.erased:
            self._pending_erasures.add(fact["subject_key_id"])
        elif "retracted_at" in fact and fact["report_id"] not in self.correlator.retracted:
            self._pending_retractions.add(fact["report_id"])

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        await self._restore()

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        if partitions:
            self._ready = False  # state covers every partition: rebuild it whole on the next assignment

    async def _restore(self) -> None:
        async with self._lock:
            if self._ready:
                return
            self.correlator, self.book = Correlator(self.plan, external_links=True), SignalBook()
            self._pending_erasures = set()
            await self._erasures.stop()
            self._pending_retractions = set()
            self._erasures = TopicFeed(
                self.bootstrap, [self.topics.erasures, self.topics.retractions], self._erasure, self.options
            )
            await self._erasures.start()
            self.correlator.erased |= self._pending_erasures
            self.correlator.retracted |= self._pending_retractions
            self._pending_erasures, self._pending_retractions = set(), set()
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                isolation_level="read_committed",
                **self.options,
            )
            await consumer.start()
            try:
                replayed = await self._replay_accepted(consumer)
                versions = await self._load_signals(consumer)
            finally:
                await consumer.stop()
            self._ready = True
            log.info("correlator restored: %d reports replayed, %d signal versions loaded", replayed, versions)

    async def _read(
        self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], stop_at: dict[TopicPartition, int]
    ) -> list[Any]:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        return await read_until(consumer, tps, stop_at)

    async def _replay_accepted(self, consumer: AIOKafkaConsumer) -> int:
        tps = [TopicPartition(self.topics.accepted, p) for p in range(self.topics.partitions)]
        tps.append(TopicPartition(self.topics.links, 0))
        stop_at = await committed_offsets(self.bootstrap, self.group_id, tps, self.options)
        records = await self._read(consumer, tps, stop_at)
        for record in records:
            if record.topic == self.topics.links:
                self.correlator.add_links(self._links(record))
            else:
                self.correlator.add(facts_from_accepted(self.codec.decode(record.value)[1]))
        return len(records)

    def _links(self, record: Any) -> list[Link]:
        try:
            _, batch = self.codec.decode(record.value, expect=LINKS)
        except CodecError:
            return []
        return [Link(**link) for link in batch["links"]]

    async def _load_signals(self, consumer: AIOKafkaConsumer) -> int:
        tps = [TopicPartition(self.topics.signals, p) for p in range(self.topics.partitions)]
        ends = await settled_end_offsets(self.bootstrap, consumer, tps, self.options)
        records = await self._read(consumer, tps, ends)
        current = self.correlator.evaluate()
        key_of = {s.signal_id: key for key, s in current.items()}
        for record in records:
            version, signal = signal_from_record(self.codec.decode(record.value)[1])
            key = key_of.get(signal.signal_id)
            self.book.load(version, signal, signal.requirement_id, key[1] if key else None)
        # Open on the topic but not produced by the rebuilt state (the plan changed, say): close them.
        self._stale = [s for _, s in self.book.latest() if s.status == "open" and s.signal_id not in key_of]
        return len(records)

    async def handle(self, records: Sequence[Any]) -> list[Output]:
        await self._restore()
        await self._erasures.catch_up()
        results: dict[tuple[str, str], Signal | None] = {}
        absorbed: dict[str, str] = {}
        if self._pending_erasures or self._pending_retractions:
            # Erased people and retracted reports leave every entity and signal: re-evaluate all (rare).
            before = {key for key in self.book.by_entity}
            self.correlator.erased |= self._pending_erasures
            self.correlator.retract(self._pending_retractions)
            self._pending_erasures, self._pending_retractions = set(), set()
            absorbed.update(self.correlator.absorbed)
            results.update({key: None for key in before})
            results.update(self.correlator.evaluate())
        merged: set[str] = set()
        keys: dict[str, set[str]] = {}

        def affected(found: dict[str, set[str]]) -> None:
            for kind, entity_keys in found.items():
                keys.setdefault(kind, set()).update(entity_keys)

        for record in records:
            if record.topic in (self.topics.erasures, self.topics.retractions):
                continue  # applied above, through the feed, before any report of this batch
            if record.topic == self.topics.links:
                touched = self.correlator.add_links(self._links(record))
                absorbed.update(self.correlator.absorbed)
                merged |= touched
                affected(self.correlator.affected(None, touched))
                continue
            try:
                _, accepted = self.codec.decode(record.value, expect="tiphub.AcceptedReport")
            except CodecError:
                continue
            facts = facts_from_accepted(accepted)
            touched = self.correlator.add(facts)
            absorbed.update(self.correlator.absorbed)
            merged |= touched
            if facts.report_id in self.correlator.reports:
                affected(self.correlator.affected(facts.report_id, touched))
        # Evaluated once per batch: an entity touched by several records of the batch is judged on its final state.
        results.update(self.correlator.evaluate_keys(keys))
        # An absorbed entity may itself have been absorbed again later in the batch.
        final_absorbed = {}
        for old, new in absorbed.items():
            while new in absorbed and absorbed[new] != new:
                new = absorbed[new]
            final_absorbed[old] = new
        emitted = self.book.apply(results, final_absorbed)
        for stale in self._stale:
            emitted += self.book.put(Signal(**{**stale.__dict__, "status": "closed"}))
        self._stale = []
        coverage = self._coverage_changes(records)
        return (
            coverage
            + self._entities(merged, final_absorbed, records)
            + [
                Output(
                    self.topics.signals,
                    signal.signal_id.encode(),
                    self.codec.encode(SIGNAL, signal_record(version, signal)),
                )
                for version, signal in emitted
            ]
        )

    def _entities(self, touched: set[str], absorbed: dict[str, str], records: Sequence[Any]) -> list[Output]:
        """EntityMerged facts for the entities of this batch that hold more than one occurrence or took
        another in (a newcomer alone is not news)."""
        at = datetime.fromtimestamp(max((r.timestamp for r in records), default=0) / 1000, UTC)
        took: dict[str, list[str]] = {}
        for old, new in absorbed.items():
            if old != new:
                took.setdefault(new, []).append(old)
        outputs = []
        for entity in sorted(touched):
            members = self.correlator.entity_members.get(entity)
            if members is None or (len(members) < 2 and entity not in took):
                continue
            fact = {"entity_id": entity, "members": sorted(members), "absorbed": sorted(took.get(entity, [])), "at": at}
            outputs.append(Output(self.topics.entities, entity.encode(), self.codec.encode(ENTITY_MERGED, fact)))
        return outputs

    def _coverage_changes(self, records: Sequence[Any]) -> list[Output]:
        """Coverage records for requirements whose numbers moved in this batch."""
        now = max((r.timestamp for r in records), default=0)
        current = self.correlator.coverage(self.book)
        outputs = []
        for requirement_id, row in current.items():
            if self._coverage.get(requirement_id) != row:
                self._pending_coverage[requirement_id] = row
                outputs.append(
                    Output(
                        self.topics.coverage,
                        requirement_id.encode(),
                        self.codec.encode(COVERAGE, {**row, "as_of": datetime.fromtimestamp(now / 1000, UTC)}),
                    )
                )
        return outputs

    def committed(self) -> None:
        self._coverage.update(self._pending_coverage)
        self._pending_coverage = {}

    def aborted(self) -> None:
        self._pending_coverage = {}
        # The book and correlator already hold this batch: rebuild both from the topics before retrying.
        self._ready = False

    async def close(self) -> None:
        await self._erasures.stop()
