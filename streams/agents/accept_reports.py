"""accept_reports: tip.reports.verified -> tip.reports.accepted | tip.reports.rejected, exactly once.

A report's identity is (source_agency, report_id), and a report_id is accepted once in the whole
hub, however often and by whomever it is submitted and whichever partition the submitter chose.
The verify stage routes every submission of an id to the partition of tip.reports.verified the id
owns (`report_partition`); this stage writes accepted reports to the same partition of
tip.reports.accepted, so the ids a partition has accepted are a fold of that one partition, the topic
this stage writes.

The fold is kept on disk (the stage's `StageState`: report_id -> agency, looked up by key, per partition)
with the checkpoint it reflects: where the last accepted report it holds landed. Ids enter the store only
after the transaction that wrote them committed (`written`, then `committed`), so the store never holds an
id the topic does not; at assignment it reads the topic from its checkpoint to the settled end (the tail a
crash left unrecorded), not from the beginning. A checkpoint the topic does not bear out (beyond its end,
or another record at its offset) is wiped and the partition rebuilt from offset 0 (streams/checkpointed.py).

Of the submissions of one id, the first verified one is accepted. Later ones are rejected and
change nothing: `duplicate_report_id` from the same agency, `report_id_taken` (audited) from
another. A retraction is accepted only from the agency that owns the report it names
(`retraction_wrong_agency`, audited, otherwise).

In the same transaction it writes the accepted reports' person occurrences to tip.sightings,
repartitioned by linkage key for the link stage (domain/linking.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from domain.facts import facts_from_accepted
from domain.linking import SIGHTINGS, Sighting, by_partition, sightings_of
from domain.log import LogRecord, Output, Restore, TopicPartition, Written
from domain.state_store import Checkpoint, Entry, StageState, record_digest
from schemas.codec import CodecError, WireCodec
from streams.accept import ACCEPTED, REJECTED, Rejection, rejection_record
from streams.agents.verify_reports import AGENCY_HEADER, RETRACTED, SOURCE_HEADER
from streams.audit_events import audit_output, ingest_denial
from streams.checkpointed import Replayed, replay_tail
from streams.stage_context import StageContext
from streams.topics import Topics, report_partition

log = logging.getLogger(__name__)
DUPLICATE = ("duplicate_report_id", "a report with this report_id was already accepted from your agency")
TAKEN = ("report_id_taken", "another agency's report has this report_id; choose a new one")
STATE_VERSION = 1  # entries: key report_id, value the agency it was accepted from


def accepted_entries(record: LogRecord) -> list[Entry]:
    """What a record of tip.reports.accepted adds to its partition's state."""
    return [Entry(record.key.decode(), _header(record.headers, AGENCY_HEADER))] if record.key else []


def _header(headers: Any, name: str) -> str:
    return next((v.decode() for k, v in headers or () if k == name), "")


@dataclass(frozen=True)
class Source:
    """Where the verify stage read a submission (for a rejection record)."""

    topic: str
    partition: int
    offset: int

    @staticmethod
    def of(record: Any) -> Source:
        topic, partition, offset = (_header(record.headers, SOURCE_HEADER) or f"{record.topic}:-1:-1").rsplit(":", 2)
        return Source(topic, int(partition), int(offset))


def check_retraction_owner(retraction: dict[str, Any], owner: str | None) -> Rejection | None:
    """Only the agency a report was accepted from may retract or correct it."""
    if owner is None:
        return Rejection("retraction_unknown_report", "no accepted report has this report_id", "report_id")
    if owner != retraction["source_agency"]:
        return Rejection(
            "retraction_wrong_agency", "only the agency that reported it can retract a report", "source_agency"
        )
    return None


class AcceptReports:
    """BatchHandler for the accept stage: one instance owns each report_id's partition. `log`: where the
    partitions of tip.reports.accepted it is assigned are read back from; `state`: where their accepted ids
    are kept, with their checkpoints."""

    def __init__(self, topics: Topics, log: Restore, state: StageState) -> None:
        self.topics = topics
        self.log = log
        self.state = state
        self.codec = WireCodec()
        self._accepted_schema = self.codec.registry.latest(ACCEPTED)
        self._rejected_schema = self.codec.registry.latest(REJECTED)
        self.ready: dict[int, Checkpoint] = {}  # partitions restored and owned -> their state's checkpoint
        self.restores: list[Replayed] = []  # what each restore did (tests, the log)
        self._pending: dict[int, dict[str, str]] = {}
        self._outputs: list[Output] = []
        self._landed: dict[int, Checkpoint] = {}
        self._restore_lock = asyncio.Lock()
        self._revocations: dict[int, int] = {}

    def _accepted(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topics.accepted, partition)

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        await self._ensure_restored({tp.partition for tp in partitions if tp.topic == self.topics.verified})

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.ready.pop(tp.partition, None)  # the stored ids stay: true of the topic, read on if it comes back
            self._revocations[tp.partition] = self._revocations.get(tp.partition, 0) + 1
        if partitions:
            log.info("partitions %s revoked", sorted(tp.partition for tp in partitions))

    async def _ensure_restored(self, partitions: set[int]) -> None:
        """Never judge a record against state that was not loaded.

        aiokafka runs the assignment callback concurrently with fetching, so both the callback
        and every batch come through here; the lock makes one of them restore and the other
        wait, and a restore overtaken by a revocation is not marked ready (what it stored is true of
        the topic all the same).
        """
        async with self._restore_lock:
            missing = partitions - self.ready.keys()
            if not missing:
                return
            before = {p: self._revocations.get(p, 0) for p in missing}
            restored = await self._restore(missing)
            for partition, replayed in sorted(restored.items()):
                self.restores.append(replayed)
                log.info(replayed.describe("accepted ids", self._accepted(partition)))
                if self._revocations.get(partition, 0) == before[partition]:
                    self.ready[partition] = replayed.checkpoint
            replayed_records = sum(r.replayed for r in restored.values())
            log.info("restored accepted ids of partitions %s: %d records replayed", sorted(missing), replayed_records)

    async def _restore(self, partitions: set[int]) -> dict[int, Replayed]:
        tps = [self._accepted(p) for p in sorted(partitions)]
        async with self.log.reading() as reader:
            ends = await reader.settled_ends(tps)
            return {tp.partition: await replay_tail(self.state, reader, tp, ends[tp], accepted_entries) for tp in tps}

    def _known(self, decoded: list[tuple[Any, str, dict[str, Any]]]) -> dict[int, dict[str, str]]:
        """The owners of the batch's ids accepted before it: one lookup per partition."""
        ids: dict[int, set[str]] = {}
        for record, _, value in decoded:
            ids.setdefault(record.partition, set()).add(value["report_id"])
        return {
            partition: {key: items[""] for key, items in self.state.get(self._accepted(partition), wanted).items()}
            for partition, wanted in ids.items()
        }

    async def handle(self, records: Sequence[Any]) -> list[Output]:
        await self._ensure_restored({r.partition for r in records})
        if not {r.partition for r in records} <= self.ready.keys():
            raise RuntimeError("partition revoked while its batch was being read; reading it again")
        now = datetime.now(UTC)
        self._pending, self._landed, self._outputs = {}, {}, []
        decoded = []
        for record in records:
            try:
                schema, value = self.codec.decode(record.value)
            except CodecError:
                continue  # only the verify stage writes this topic
            if report_partition(value["report_id"], self.topics.partitions) != record.partition:
                log.error("skipping %s at %s/%s: not this id's partition", schema.name, record.partition, record.offset)
                continue
            decoded.append((record, schema.name, value))
        known = self._known(decoded)
        outputs: list[Output] = []
        sightings: list[Sighting] = []
        for record, name, value in decoded:  # in input order: the first verified submission of an id wins
            report_id = value["report_id"]
            pending = self._pending.setdefault(record.partition, {})
            owner = pending.get(report_id) or known[record.partition].get(report_id)
            if name == RETRACTED:
                refused = check_retraction_owner(value, owner)
                if refused is None:
                    outputs.append(
                        Output(self.topics.retractions, report_id.encode(), record.value, partition=record.partition)
                    )
                else:
                    outputs += self._rejected(record, report_id, value["source_agency"], refused, now)
                continue
            agency = value["source_agency"]
            if owner is not None:
                reason, detail = DUPLICATE if owner == agency else TAKEN
                outputs += self._rejected(record, report_id, agency, Rejection(reason, detail, "report_id"), now)
                continue
            pending[report_id] = agency
            sightings += sightings_of(facts_from_accepted(value))
            outputs.append(
                Output(
                    self.topics.accepted,
                    report_id.encode(),
                    record.value,
                    partition=record.partition,
                    headers=((AGENCY_HEADER, agency.encode()),),
                )
            )
        self._outputs = outputs + self._sightings(sightings)
        return self._outputs

    def _sightings(self, sightings: list[Sighting]) -> list[Output]:
        """The repartition by linkage key: one record per tip.sightings partition this batch touches."""
        return [
            Output(
                self.topics.sightings,
                None,
                self.codec.encode(SIGHTINGS, {"sightings": [s.record() for s in group]}),
                partition=partition,
            )
            for partition, group in sorted(by_partition(sightings, self.topics.partitions).items())
        ]

    def _rejected(self, record: Any, report_id: str, agency: str, rejection: Rejection, now: datetime) -> list[Output]:
        """The rejection, attributed to the (verified) agency that submitted it; audited if it reached for
        another agency's report."""
        rejected = rejection_record(Source.of(record), report_id, agency, rejection, now)
        out = [
            Output(self.topics.rejected, report_id.encode(), self.codec.encode_with(self._rejected_schema, rejected))
        ]
        if rejection.reason in ("report_id_taken", "retraction_wrong_agency"):
            out.append(audit_output(self.codec, self.topics.audit_intake, ingest_denial(rejected, now)))
        return out

    def written(self, at: Sequence[Written]) -> None:
        """Where the committed batch's accepted reports landed: the checkpoint its ids are stored with."""
        if len(at) != len(self._outputs):  # not this batch's: store its ids at the checkpoint held instead
            log.error("%d outputs written, %d sent: checkpoint not moved", len(at), len(self._outputs))
            return
        for output, (tp, offset) in zip(self._outputs, at, strict=True):
            if output.topic == self.topics.accepted:
                self._landed[tp.partition] = Checkpoint(offset + 1, offset, record_digest(output.key, output.value))

    def committed(self) -> None:
        """The batch's transaction committed: its ids go to the store with the checkpoint where the last of
        them landed. Only now: the store must never hold an id the topic does not."""
        for partition in sorted(self._pending.keys() | self._landed.keys()):
            tp = self._accepted(partition)
            entries = [Entry(report_id, agency) for report_id, agency in self._pending.get(partition, {}).items()]
            held = self.ready.get(partition) or self.state.checkpoint(tp) or Checkpoint(0)
            landed = self._landed.get(partition)
            checkpoint = held if landed is None else held.advanced(landed)
            try:
                self.state.commit(tp, entries, checkpoint)
            except Exception:
                # Kafka holds these ids and the store does not: restore the partition (its tail holds them)
                # before its next batch is judged.
                log.exception("accepted ids of partition %d not stored; restoring it from the topic", partition)
                self.ready.pop(partition, None)
                continue
            if partition in self.ready:
                self.ready[partition] = checkpoint
        self._pending, self._landed, self._outputs = {}, {}, []

    def aborted(self) -> None:
        # Read what the batch's partitions hold back from the topic before judging them again: if the
        # transaction did commit after all (a failure after its commit), its ids are there and not stored.
        for partition, ids in self._pending.items():
            if ids:
                self.ready.pop(partition, None)
        self._pending, self._landed, self._outputs = {}, {}, []

    async def close(self) -> None:
        pass


def build(context: StageContext) -> AcceptReports:
    return AcceptReports(context.topics, context.log, context.provisions.stage_state("accept", STATE_VERSION))
