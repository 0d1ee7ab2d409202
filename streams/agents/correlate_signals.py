"""correlate_signals, the union stage: tip.reports.accepted + tip.decisions + tip.links -> tip.signals,
tip.coverage and tip.entities, per scope.

Exactly once, one instance. The costly comparisons of people happen partitioned by linkage key
in link_people; this stage joins their links into entities (union-find, then contact links
guarded against over-linking) and evaluates the Collection Plan, once per scope: each agency and
partner over the reports it may see (its own, and those the sharing decisions give it), and the
hub over all of them (domain/scoped.py says why filtering one global correlation is not enough).
It emits an EntityMerged fact when a hub entity gains a member or absorbs another.

Entities span every partition, so one instance holds the union: the worker with instance id 0
(docs/correlation.md: the limit). At assignment it rebuilds its state by replaying accepted
reports, decisions and links up to its committed offsets (erasures and retractions first), and
loads the versions already on tip.signals, so a restart emits nothing twice. After that, each
batch emits a new version of every signal whose content changed, in each scope, each with the
next number of its scope's feed (`seq`), and when idle it lets decisions whose retention is over
take their reports out of the recipient's scope.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from domain.correlate import Requirement, Signal
from domain.facts import facts_from_accepted
from domain.linking import ENTITY_MERGED, LINKS, Link
from domain.log import EventLog, FactFeed, LogReader, Output, TopicPartition
from domain.scoped import HUB_SCOPE, Emitted, ScopedCorrelation
from domain.withdrawals import kind_of
from schemas.codec import CodecError, WireCodec
from streams.stage_context import StageContext
from streams.topics import Topics

log = logging.getLogger(__name__)
SIGNAL = "tiphub.Signal"
COVERAGE = "tiphub.Coverage"
DECISION = "tiphub.SharingDecision"
EXPIRY_CHECK_S = 5.0


def signal_record(version: int, signal: Signal, scope: str = HUB_SCOPE, seq: int = 0) -> dict[str, Any]:
    return {
        **signal.__dict__,
        "version": version,
        "report_ids": list(signal.report_ids),
        "agencies": list(signal.agencies),
        "elements": list(signal.elements),
        "act_means_purpose": list(signal.act_means_purpose),
        "scope": scope,
        "seq": seq,
    }


def signal_from_record(record: dict[str, Any]) -> tuple[int, Signal]:
    fields = {k: v for k, v in record.items() if k not in ("version", "scope", "seq")}
    for key in ("report_ids", "agencies", "elements", "act_means_purpose"):
        fields[key] = tuple(fields[key])
    return record["version"], Signal(**fields)


class CorrelateSignals:
    """BatchHandler of the union stage, in consumer group `group_id`: `log` feeds it erasures and retractions,
    and gives back its inputs up to that group's commits and the signal versions already written."""

    def __init__(
        self,
        topics: Topics,
        log: EventLog,
        group_id: str,
        plan: list[Requirement],
        pseudonym_key: bytes,
        partners: frozenset[str] = frozenset(),
    ) -> None:
        self.topics = topics
        self.log = log
        self.group_id = group_id
        self.plan = plan
        self.pseudonym_key = pseudonym_key
        self.partners = partners
        self.codec = WireCodec()
        self.state = ScopedCorrelation(plan, pseudonym_key, partners)
        self._pending_erasures: set[str] = set()
        self._pending_retractions: set[str] = set()
        self._facts = self._new_feed()
        self._ready = False
        self._lock = asyncio.Lock()
        self._pending_coverage: dict[tuple[str, str], dict[str, Any]] = {}
        self._last_expiry = 0.0

    def _new_feed(self) -> FactFeed:
        """Erasures and retractions, each read from its own topic: a fact is taken only from the topic of
        its kind (domain/withdrawals.py)."""
        return self.log.feed({self.topics.erasures: self._erasure, self.topics.retractions: self._retraction})

    def _erasure(self, fact: dict[str, Any]) -> None:
        if kind_of(fact) == "erased" and fact["subject_key_id"] not in self.state.erased:
            self._pending_erasures.add(fact["subject_key_id"])

    def _retraction(self, fact: dict[str, Any]) -> None:
        if kind_of(fact) == "retracted" and fact["report_id"] not in self.state.retracted:
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
            self.state = ScopedCorrelation(self.plan, self.pseudonym_key, self.partners)
            await self._facts.stop()
            self._pending_erasures, self._pending_retractions = set(), set()
            self._facts = self._new_feed()
            await self._facts.start()
            self._apply_facts()
            async with self.log.reading() as reader:
                replayed = await self._replay_inputs(reader)
                versions = await self._load_signals(reader)
            self._ready = True
            log.info(
                "correlator restored: %d records replayed, %d signal versions loaded, %d scopes",
                replayed,
                versions,
                len(self.state.scopes),
            )

    def _apply_facts(self) -> None:
        self.state.forget(self._pending_erasures, self._pending_retractions)
        self._pending_erasures, self._pending_retractions = set(), set()

    async def _replay_inputs(self, reader: LogReader) -> int:
        """Accepted reports, then decisions, then links, up to what this stage committed: the state
        they leave does not depend on the order they are applied in."""
        every = range(self.topics.partitions)
        tps = [TopicPartition(self.topics.accepted, p) for p in every]
        tps += [TopicPartition(self.topics.decisions, p) for p in every]
        tps.append(TopicPartition(self.topics.links, 0))
        stop_at = await self.log.committed(self.group_id, tps)
        records = await reader.read(stop_at)
        order = {self.topics.accepted: 0, self.topics.decisions: 1, self.topics.links: 2}
        now = datetime.now(UTC)
        for record in sorted(records, key=lambda r: order[r.topic]):  # stable: log order within each topic
            self._apply(record, now)
        return len(records)

    def _apply(self, record: Any, now: datetime) -> None:
        """One input record into the state (erasures and retractions come through the feed)."""
        if record.topic == self.topics.links:
            self.state.add_links(self._links(record))
        elif record.topic == self.topics.decisions:
            try:
                decision = self.codec.decode(record.value, expect=DECISION)[1]
            except CodecError:
                return
            if decision["item_kind"] == "report":
                rules = {f["path"]: f["rule"] for f in decision["fields"] or ()}
                self.state.decided(
                    decision["recipient"],
                    decision["item_id"],
                    decision["allowed"],
                    decision["retain_until"],
                    now,
                    rules,
                )
        elif record.topic == self.topics.accepted:
            try:
                accepted = self.codec.decode(record.value, expect="tiphub.AcceptedReport")[1]
            except CodecError:
                return
            self.state.accept(facts_from_accepted(accepted), now)

    def _links(self, record: Any) -> list[Link]:
        try:
            _, batch = self.codec.decode(record.value, expect=LINKS)
        except CodecError:
            return []
        return [Link(**link) for link in batch["links"]]

    async def _load_signals(self, reader: LogReader) -> int:
        tps = [TopicPartition(self.topics.signals, p) for p in range(self.topics.partitions)]
        records = await reader.read(await reader.settled_ends(tps))
        for record in records:
            value = self.codec.decode(record.value)[1]
            version, signal = signal_from_record(value)
            self.state.load_signal(value.get("scope", HUB_SCOPE), value.get("seq", 0), version, signal)
        self.state.settle_loaded()
        return len(records)

    async def handle(self, records: Sequence[Any]) -> list[Output]:
        await self._restore()
        await self._facts.catch_up()
        now = datetime.now(UTC)
        self._apply_facts()
        self.state.expire(now)
        ordered = sorted(records, key=lambda r: r.topic != self.topics.accepted)  # reports before their decisions
        for record in ordered:
            if record.topic in (self.topics.erasures, self.topics.retractions):
                continue  # applied above, through the feed, before any report of this batch
            self._apply(record, now)
        return self._outputs(records)

    async def tick(self) -> list[Output]:
        """When idle: decisions whose retention is over take their reports out of the recipients' scopes."""
        if not self._ready:
            return []
        loop_now = asyncio.get_running_loop().time()
        if loop_now - self._last_expiry < EXPIRY_CHECK_S:
            return []
        self._last_expiry = loop_now
        await self._facts.catch_up()
        self._apply_facts()
        self.state.expire(datetime.now(UTC))
        return self._outputs([])

    def _outputs(self, records: Sequence[Any]) -> list[Output]:
        hub = self.state.hub
        touched, absorbed = set(hub.touched), dict(hub.absorbed)
        emitted = self.state.flush()
        outputs = self._coverage_changes(records)
        if records:
            outputs += self._entities(touched, absorbed, records)
        hub.touched = set()
        return outputs + [self._signal_output(e) for e in emitted]

    def _signal_output(self, emitted: Emitted) -> Output:
        record = signal_record(emitted.version, emitted.signal, emitted.scope, emitted.seq)
        return Output(self.topics.signals, emitted.signal.signal_id.encode(), self.codec.encode(SIGNAL, record))

    def _entities(self, touched: set[str], absorbed: dict[str, str], records: Sequence[Any]) -> list[Output]:
        """EntityMerged facts for the hub's entities of this batch that hold more than one occurrence or took
        another in (a newcomer alone is not news)."""
        at = datetime.fromtimestamp(max((r.timestamp for r in records), default=0) / 1000, UTC)
        took: dict[str, list[str]] = {}
        for old, new in absorbed.items():
            if old != new:
                took.setdefault(new, []).append(old)
        correlator = self.state.hub.correlator
        assert correlator is not None
        outputs = []
        for entity in sorted(touched):
            members = correlator.entity_members.get(entity)
            if members is None or (len(members) < 2 and entity not in took):
                continue
            fact = {"entity_id": entity, "members": sorted(members), "absorbed": sorted(took.get(entity, [])), "at": at}
            outputs.append(Output(self.topics.entities, entity.encode(), self.codec.encode(ENTITY_MERGED, fact)))
        return outputs

    def _coverage_changes(self, records: Sequence[Any]) -> list[Output]:
        """Coverage records for the scopes and requirements whose numbers moved."""
        now = max((r.timestamp for r in records), default=int(datetime.now(UTC).timestamp() * 1000))
        outputs = []
        for name, scope in sorted(self.state.scopes.items()):
            if scope.correlator is None:
                continue  # a partner's: it holds reports for its release scopes, nobody is shown it
            for requirement_id, row in scope.correlator.coverage(scope.book).items():
                if scope.coverage.get(requirement_id) != row:
                    self._pending_coverage[(name, requirement_id)] = row
                    record = {**row, "scope": name, "as_of": datetime.fromtimestamp(now / 1000, UTC)}
                    outputs.append(
                        Output(
                            self.topics.coverage,
                            f"{name}|{requirement_id}".encode(),
                            self.codec.encode(COVERAGE, record),
                        )
                    )
        return outputs

    def committed(self) -> None:
        for (name, requirement_id), row in self._pending_coverage.items():
            self.state.scope(name).coverage[requirement_id] = row
        self._pending_coverage = {}

    def aborted(self) -> None:
        self._pending_coverage = {}
        # The books and correlators already hold this batch: rebuild them from the topics before retrying.
        self._ready = False

    async def close(self) -> None:
        await self._facts.stop()


def build(context: StageContext) -> CorrelateSignals:
    provisions = context.provisions
    return CorrelateSignals(
        context.topics,
        context.log,
        context.group_id,
        provisions.collection_plan(),
        provisions.pseudonym_key(),
        provisions.partners(),
    )
