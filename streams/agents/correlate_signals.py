"""correlate_signals, the union stage: tip.reports.accepted + tip.decisions + tip.links -> tip.signals,
tip.coverage and tip.entities, per scope.

Exactly once, one instance. The costly comparisons of people happen partitioned by linkage key
in link_people; this stage joins their links into entities (union-find, then contact links
guarded against over-linking) and evaluates the Collection Plan, once per scope: each agency and
partner over the reports it may see (its own, and those the sharing decisions give it), and the
hub over all of them (domain/scoped.py says why filtering one global correlation is not enough).
It emits an EntityMerged fact when a hub entity gains a member or absorbs another.

Entities span every partition, so one instance holds the union: the worker with instance id 0
(docs/correlation.md: the limit). Its state is tables in the worker's state file, worked on through a
bounded cache (domain/working_set.py): a batch reads the keys it touches, and its changes are written with
the input positions and the signal positions its outputs reached, in one SQLite transaction, after its Kafka
transaction committed (`committed`): never ahead of Kafka. An aborted batch's changes are dropped and the state
is read from the tables again. At assignment the stage restores: it reads nothing whole, only the stored
positions; it replays the inputs committed after them (erasures and retractions first) and loads the signal
versions written after them on tip.signals, so a restart emits nothing twice. Without usable tables (none,
another format, positions the topics do not bear out) it replays every input from the beginning, writing
the tables as it goes. After that, each batch emits a new version of every signal whose content changed, in
each scope, each with the next number of its scope's feed (`seq`), and when idle it lets decisions whose
retention is over take their reports out of the recipient's scope.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from domain.correlate import Requirement, Signal
from domain.facts import facts_from_accepted
from domain.linking import ENTITY_MERGED, LINKS, Link
from domain.log import EventLog, FactFeed, LogReader, LogRecord, Output, TopicPartition, Written
from domain.scoped import HUB_SCOPE, Emitted, ScopedCorrelation
from domain.state_store import Checkpoint, StageState, record_digest
from domain.withdrawals import kind_of
from domain.working_set import DEFAULT_CACHE_ENTRIES, StateError, TableStore, WorkingSet
from schemas.codec import CodecError, WireCodec
from streams.checkpointed import CHUNK_OFFSETS, checkpoint_after, taken_after
from streams.stage_context import StageContext
from streams.topics import Topics

log = logging.getLogger(__name__)
SIGNAL = "tiphub.Signal"
COVERAGE = "tiphub.Coverage"
DECISION = "tiphub.SharingDecision"
EXPIRY_CHECK_S = 5.0
STATE_VERSION = 2  # 2: the state as tables (domain/working_set.py); 1 held it as one snapshot


@dataclass(frozen=True)
class Restored:
    """What a restore did: from the tables' positions, or from the beginning (None), how many input records it
    replayed, how many signal versions it loaded, and why it did not use the tables ("")."""

    stored: Mapping[TopicPartition, Checkpoint] | None
    replayed: int
    versions: int
    ignored: str = ""


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
        store: StageState | None = None,
        tables: TableStore | None = None,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
    ) -> None:
        self.topics = topics
        self.log = log
        self.group_id = group_id
        self.plan = plan
        self.pseudonym_key = pseudonym_key
        self.partners = partners
        self.store = store  # its format check wipes the tables of another release
        self.tables = tables  # None: the state in memory only (every restore replays history)
        self.cache_entries = cache_entries
        self.restores: list[Restored] = []
        self.saves = 0
        self._forgetting = False  # an erasure or retraction was applied since the last write
        # Where the state stands on each input partition and on tip.signals (valid while _ready), and what the
        # batch in flight adds to it.
        self._positions: dict[TopicPartition, Checkpoint] = {}
        self._pending_positions: dict[TopicPartition, Checkpoint] = {}
        self._in_flight = False  # the state holds a batch whose transaction has not ended: never write it
        self._sent: list[Output] = []
        self._save_task: asyncio.Future[None] | None = None  # the tables being written on their thread
        self._revocations = 0
        self.codec = WireCodec()
        self.state = ScopedCorrelation(plan, pseudonym_key, partners)  # until the first restore opens the tables
        self._pending_erasures: set[str] = set()
        self._pending_retractions: set[str] = set()
        self._facts = self._new_feed()
        self._ready = False
        self._lock = asyncio.Lock()
        self._pending_coverage: dict[tuple[str, str], dict[str, Any]] = {}
        self._last_expiry = 0.0

    def _new_state(self) -> ScopedCorrelation:
        """The state as the tables hold it (reading nothing yet), or empty in memory."""
        tables = None if self.tables is None else WorkingSet(self.tables, self.cache_entries)
        return ScopedCorrelation(self.plan, self.pseudonym_key, self.partners, tables=tables)

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
            self._revocations += 1  # a restore still running (an assignment starts one) is not to be trusted

    def _input_partitions(self) -> list[TopicPartition]:
        every = range(self.topics.partitions)
        tps = [TopicPartition(self.topics.accepted, p) for p in every]
        tps += [TopicPartition(self.topics.decisions, p) for p in every]
        tps.append(TopicPartition(self.topics.links, 0))
        return tps

    def _signal_partitions(self) -> list[TopicPartition]:
        return [TopicPartition(self.topics.signals, p) for p in range(self.topics.partitions)]

    async def _restore(self) -> None:
        await self._saved()
        async with self._lock:
            if self._ready:
                return
            revocations = self._revocations
            await self._facts.stop()
            self._pending_erasures, self._pending_retractions = set(), set()
            self._pending_positions, self._sent, self._in_flight = {}, [], False
            async with self.log.reading() as reader:
                stop_at = await self.log.committed(self.group_id, self._input_partitions())
                signal_ends = await reader.settled_ends(self._signal_partitions())
                held, ignored = await self._stored(reader, {**stop_at, **signal_ends})
                try:
                    self.state = self._new_state()  # reads nothing until a record asks for it
                except StateError as exc:  # another configuration's tables
                    held, ignored = None, self._ignore(str(exc))
                    self.state = self._new_state()
                positions = dict(held or {})
                if not positions:  # from the beginning: the signals' positions too (written with the chunks)
                    positions = {tp: Checkpoint(0) for tp in [*stop_at, *signal_ends]}
                self._facts = self._new_feed()  # after the state: its feed skips the facts the state holds
                await self._facts.start()
                self._apply_facts()
                now = datetime.now(UTC)
                replayed = await self._replay_inputs(reader, positions, stop_at, now)
                if held is not None:
                    await asyncio.to_thread(self.state.resume, now)
                versions = await self._load_signals(reader, positions, signal_ends)
            self._positions = positions
            self._ready = revocations == self._revocations
            restored = Restored(held, replayed, versions, ignored)
            self.restores.append(restored)
            where = "from the beginning" if held is None else f"from its tables at {describe(held)}"
            log.info(
                "correlator restored %s: %d records replayed, %d signal versions loaded, %d scopes",
                where,
                replayed,
                versions,
                len(self.state.scopes),
            )
            if self._ready and (held is None or replayed or versions):
                await asyncio.to_thread(self._save)  # the next restart starts here

    async def _stored(
        self, reader: LogReader, ends: Mapping[TopicPartition, int]
    ) -> tuple[Mapping[TopicPartition, Checkpoint] | None, str]:
        """The tables' positions, if the topics bear them out; else (None, why), with the tables cleared and the
        reason logged."""
        if self.tables is None:
            return None, ""
        try:
            held = self.tables.positions()
        except Exception as exc:  # a file that cannot be read is rebuilt, never trusted
            return None, self._ignore(f"they cannot be read ({type(exc).__name__}: {exc})")
        if not held:
            self._clear()  # rows without positions are no state Kafka committed
            return None, ""
        if held.keys() != ends.keys():
            return None, self._ignore("their partitions are not the stage's (topics or partition count changed)")
        for tp, checkpoint in sorted(held.items()):
            if checkpoint.position > ends[tp]:
                return None, self._ignore(
                    f"their position {checkpoint.position} on {tp.topic}[{tp.partition}] is beyond the end "
                    f"{ends[tp]} (topic recreated or offsets reset)"
                )
            if not await taken_after(reader, tp, checkpoint):
                return None, self._ignore(
                    f"the record at offset {checkpoint.last_offset} of {tp.topic}[{tp.partition}] is not the one "
                    "they were taken after (topic recreated?)"
                )
        return held, ""

    def _ignore(self, why: str) -> str:
        log.warning("correlator tables ignored: %s; replaying the inputs from the beginning", why)
        self._clear()
        return why

    def _clear(self) -> None:
        assert self.tables is not None
        self.tables.clear()

    def _apply_facts(self) -> None:
        erasures, retractions = self._take_facts()
        self._forget(erasures, retractions)

    def _take_facts(self) -> tuple[set[str], set[str]]:
        """The erasures and retractions the feed brought since the last call (on the event loop, where the
        feed adds to them)."""
        taken = self._pending_erasures, self._pending_retractions
        self._pending_erasures, self._pending_retractions = set(), set()
        return taken

    def _forget(self, erasures: set[str], retractions: set[str]) -> None:
        if erasures or retractions:
            self._forgetting = True  # once written, what the rows held is also wiped from the write-ahead log
        self.state.forget(erasures, retractions)

    async def _replay_inputs(
        self,
        reader: LogReader,
        positions: dict[TopicPartition, Checkpoint],
        stop_at: Mapping[TopicPartition, int],
        now: datetime,
    ) -> int:
        """Accepted reports, then decisions, then links, from `positions` up to what this stage committed, a
        chunk of offsets at a time: the state they leave does not depend on the order they are applied in.
        The tables are written after each chunk with the positions it reached, so memory follows the cache,
        not the history, and a restore killed half-way goes on from there (a book with keys still to evaluate is
        written as not mapped: `ScopedCorrelation.stage`). Moves `positions` to `stop_at`."""
        replayed = 0
        order = {self.topics.accepted: 0, self.topics.decisions: 1, self.topics.links: 2}
        while True:
            start_at = {tp: positions[tp].position for tp in stop_at}
            upto = {tp: min(start_at[tp] + CHUNK_OFFSETS, end) for tp, end in stop_at.items()}
            if upto == start_at:
                return replayed
            records = await reader.read(upto, start_at)
            ordered = sorted(records, key=lambda r: order[r.topic])  # stable: log order within each topic
            # Applied on a thread: a long replay must not stop the event loop, where every stage of this worker
            # heartbeats to its group (a 10 s session); nothing else touches the state while the lock is held.
            await asyncio.to_thread(self._apply_all, ordered, now)
            _advance(positions, records, upto)
            replayed += len(records)
            if self.tables is not None:
                await asyncio.to_thread(self._write, positions)

    def _decode(self, record: Any) -> Any:
        """What an input record holds: its links, its decision (None: not about a report) or its report's facts;
        None for what does not decode."""
        if record.topic == self.topics.links:
            return self._links(record)
        try:
            if record.topic == self.topics.decisions:
                decision = self.codec.decode(record.value, expect=DECISION)[1]
                return decision if decision["item_kind"] == "report" else None
            if record.topic == self.topics.accepted:
                return facts_from_accepted(self.codec.decode(record.value, expect="tiphub.AcceptedReport")[1])
        except CodecError:
            return None
        return None

    def _apply_all(self, records: Sequence[Any], now: datetime) -> None:
        """Input records into the state, in this order (erasures and retractions come through the feed), the
        keys they touch read from the tables first, a query per table rather than one per key."""
        facts_topics = (self.topics.erasures, self.topics.retractions)
        decoded = [(r, self._decode(r)) for r in records if r.topic not in facts_topics]
        reports = [value for r, value in decoded if r.topic == self.topics.accepted and value is not None]
        decided = [
            (value["recipient"], value["item_id"])
            for r, value in decoded
            if r.topic == self.topics.decisions and value is not None
        ]
        links = [value for r, value in decoded if r.topic == self.topics.links]
        self.state.prefetch(reports, decided, {o for batch in links for link in batch for o in (link.a, link.b)})
        for record, value in decoded:
            if value is not None:
                self._apply(record, value, now)

    def _apply(self, record: Any, value: Any, now: datetime) -> None:
        if record.topic == self.topics.links:
            self.state.add_links(value)
        elif record.topic == self.topics.decisions:
            rules = {f["path"]: f["rule"] for f in value["fields"] or ()}
            self.state.decided(
                value["recipient"], value["item_id"], value["allowed"], value["retain_until"], now, rules
            )
        elif record.topic == self.topics.accepted:
            self.state.accept(value, now)

    def _links(self, record: Any) -> list[Link]:
        try:
            _, batch = self.codec.decode(record.value, expect=LINKS)
        except CodecError:
            return []
        return [Link(**link) for link in batch["links"]]

    async def _load_signals(
        self,
        reader: LogReader,
        positions: dict[TopicPartition, Checkpoint],
        ends: Mapping[TopicPartition, int],
    ) -> int:
        """The signal versions written after `positions` up to the settled end, a chunk of offsets at a time
        (the tables written after each, as the inputs'); then every open signal is mapped to its
        entity again. Moves `positions` to `ends`."""
        loaded = 0
        while True:
            start_at = {tp: positions[tp].position for tp in ends}
            upto = {tp: min(start_at[tp] + CHUNK_OFFSETS, end) for tp, end in ends.items()}
            if upto == start_at:
                break
            records = await reader.read(upto, start_at)
            await asyncio.to_thread(self._load_all, records)
            _advance(positions, records, upto)
            loaded += len(records)
            if self.tables is not None:
                await asyncio.to_thread(self._write, positions)
        await asyncio.to_thread(self.state.settle_loaded)
        return loaded

    def _load_all(self, records: Sequence[Any]) -> None:
        for record in records:
            value = self.codec.decode(record.value)[1]
            version, signal = signal_from_record(value)
            self.state.load_signal(value.get("scope", HUB_SCOPE), value.get("seq", 0), version, signal)

    def _lost_track(self) -> None:
        """A transaction that neither committed nor aborted (the Kafka runtime logs a KafkaError of an idle
        tick and goes on): the state may hold versions never written. Read it from the tables again before going
        on, as after an abort, rather than carry them on (and into the tables)."""
        if self._in_flight:
            log.warning("the last transaction did not report its end; restoring the correlator")
            self.aborted()

    async def handle(self, records: Sequence[Any]) -> list[Output]:
        await self._saved()  # the tables being written read the state: let them finish
        self._lost_track()
        await self._restore()
        await self._facts.catch_up()
        now = datetime.now(UTC)
        facts = self._take_facts()
        self._pending_positions = {}
        self._in_flight = True
        for record in records:  # in log order: the last of each partition is where the state stands
            if record.topic not in (self.topics.erasures, self.topics.retractions):
                tp = TopicPartition(record.topic, record.partition)
                self._pending_positions[tp] = checkpoint_after(record, record.offset + 1)
        # On a thread: what a batch costs can follow the state's size (the first flush after a restore from the
        # beginning re-evaluates each scope whole), and the event loop must keep every stage of this worker
        # heartbeating to its group (a 10 s session). Nothing else touches the state meanwhile: the processor
        # runs one batch or tick at a time.
        self._sent = await asyncio.to_thread(self._batch, records, facts, now)
        return self._sent

    def _batch(self, records: Sequence[Any], facts: tuple[set[str], set[str]], now: datetime) -> list[Output]:
        self._forget(*facts)
        self.state.expire(now)
        # Reports before decisions; erasures and retractions were applied above, through the feed.
        self._apply_all(sorted(records, key=lambda r: r.topic != self.topics.accepted), now)
        return self._outputs(records)

    def _idle(self, facts: tuple[set[str], set[str]], now: datetime) -> list[Output]:
        self._forget(*facts)
        self.state.expire(now)
        return self._outputs([])

    async def tick(self) -> list[Output]:
        """When idle: decisions whose retention is over take their reports out of the recipients' scopes."""
        await self._saved()
        self._lost_track()
        if not self._ready or self._lock.locked():  # a restore (or its last write) is running: not now
            return []
        loop_now = asyncio.get_running_loop().time()
        if loop_now - self._last_expiry < EXPIRY_CHECK_S:
            return []
        self._last_expiry = loop_now
        await self._facts.catch_up()
        self._pending_positions = {}
        self._sent = await asyncio.to_thread(self._idle, self._take_facts(), datetime.now(UTC))
        self._in_flight = bool(self._sent)
        if not self._sent:  # nothing to write, no transaction: what changed (an erasure) goes to the tables now
            await asyncio.to_thread(self._save)
        return self._sent

    def _outputs(self, records: Sequence[Any]) -> list[Output]:
        hub = self.state.hub
        touched, absorbed = set(hub.touched), dict(hub.absorbed)
        emitted = self.state.flush()
        outputs = self._coverage_changes(records)
        if records:
            outputs += self._entities(touched, absorbed, records)
        for scope in self.state.scopes.values():
            scope.touched = set()
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

    def written(self, at: Sequence[Written]) -> None:
        """Where the committed transaction's outputs landed: the signal versions the state holds end there."""
        if len(at) != len(self._sent):
            log.error("%d outputs written, %d sent: restoring the correlator from its tables", len(at), len(self._sent))
            self._ready = False  # its positions are not known: nothing is written, the next batch restores first
            return
        for output, (tp, offset) in zip(self._sent, at, strict=True):
            if output.topic == self.topics.signals:
                self._pending_positions[tp] = Checkpoint(offset + 1, offset, record_digest(output.key, output.value))

    def committed(self) -> None:
        for (name, requirement_id), row in self._pending_coverage.items():
            self.state.scope(name).coverage[requirement_id] = row
        self._pending_coverage = {}
        if self._positions:
            for tp, checkpoint in self._pending_positions.items():
                self._positions[tp] = self._positions.get(tp, checkpoint).advanced(checkpoint)
        self._pending_positions, self._sent = {}, []
        self._in_flight = False
        # Written on a thread while the event loop runs on (heartbeats); the next batch waits for it, so the
        # state it writes is the one Kafka committed.
        self._save_task = asyncio.ensure_future(asyncio.to_thread(self._save))

    def _save(self) -> None:
        """The changes since the last write, with the positions the state reflects. Only where the state is
        exactly what Kafka committed: after a restore, or after a committed transaction (or an idle tick that
        wrote nothing). A write that fails leaves the tables behind: the stage restores from them (and the tail)."""
        if self.tables is None or not self._positions or not self._ready or self._in_flight:
            return
        try:
            self._write(self._positions)
        except Exception:
            log.exception("correlator tables not written; restoring from what they hold")
            self._ready = False

    def _write(self, positions: Mapping[TopicPartition, Checkpoint]) -> None:
        assert self.tables is not None and self.state.tables is not None
        self.state.stage()
        self.tables.write(self.state.tables.changes(), positions)
        self.state.tables.saved()
        self.saves += 1
        if self._forgetting:
            self.tables.compact_log()
            self._forgetting = False

    def aborted(self) -> None:
        self._pending_coverage = {}
        self._pending_positions, self._sent = {}, []
        self._in_flight = False
        # The state holds this batch: read it from the tables again (they hold what Kafka committed) before
        # retrying; in memory only, rebuild it from the topics.
        self._ready = False

    async def _saved(self) -> None:
        """Wait for the tables being written on their thread: the state must not change under them."""
        task, self._save_task = self._save_task, None
        if task is not None:
            await task

    async def close(self) -> None:
        await self._saved()
        await self._facts.stop()


def _advance(
    positions: dict[TopicPartition, Checkpoint], records: Sequence[LogRecord], ends: Mapping[TopicPartition, int]
) -> None:
    """Move each partition's position to its end, after the last of `records` read there (if any)."""
    last: dict[TopicPartition, LogRecord] = {}
    for record in records:
        last[TopicPartition(record.topic, record.partition)] = record
    for tp, end in ends.items():
        held = positions.get(tp, Checkpoint(0))
        if tp in last:
            positions[tp] = checkpoint_after(last[tp], end)
        elif end > held.position:
            positions[tp] = Checkpoint(end, held.last_offset, held.last_digest)
        else:
            positions[tp] = held


def describe(positions: Mapping[TopicPartition, Checkpoint]) -> str:
    """Positions as a log line shows them: topic[partition]=position, by topic."""
    return " ".join(f"{tp.topic}[{tp.partition}]={held.position}" for tp, held in sorted(positions.items()))


def build(context: StageContext) -> CorrelateSignals:
    provisions = context.provisions
    return CorrelateSignals(
        context.topics,
        context.log,
        context.group_id,
        provisions.collection_plan(),
        provisions.pseudonym_key(),
        provisions.partners(),
        provisions.stage_state("correlate", STATE_VERSION),
        provisions.stage_tables("correlate"),
        provisions.correlator_cache(),
    )
