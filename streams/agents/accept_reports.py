"""accept_reports: tip.reports.verified -> tip.reports.accepted | tip.reports.rejected, exactly once.

A report's identity is (source_agency, report_id), and a report_id is accepted once in the whole
hub, however often and by whomever it is submitted and whichever partition the submitter chose.
The verify stage routes every submission of an id to the partition of tip.reports.verified the id
owns (`report_partition`); this stage writes accepted reports to the same partition of
tip.reports.accepted, so the ids a partition has accepted are rebuilt at assignment from that one
partition, the topic this stage writes. There is no separate store that could disagree with it.

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
from domain.log import Output, Restore, TopicPartition
from schemas.codec import CodecError, WireCodec
from streams.accept import ACCEPTED, REJECTED, Rejection, rejection_record
from streams.agents.verify_reports import AGENCY_HEADER, RETRACTED, SOURCE_HEADER
from streams.audit_events import audit_output, ingest_denial
from streams.stage_context import StageContext
from streams.topics import Topics, report_partition

log = logging.getLogger(__name__)
DUPLICATE = ("duplicate_report_id", "a report with this report_id was already accepted from your agency")
TAKEN = ("report_id_taken", "another agency's report has this report_id; choose a new one")


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
    partitions of tip.reports.accepted it is assigned are read back from."""

    def __init__(self, topics: Topics, log: Restore) -> None:
        self.topics = topics
        self.log = log
        self.codec = WireCodec()
        self._accepted_schema = self.codec.registry.latest(ACCEPTED)
        self._rejected_schema = self.codec.registry.latest(REJECTED)
        self.accepted_ids: dict[int, dict[str, str]] = {}  # partition -> report_id -> agency
        self._pending: dict[int, dict[str, str]] = {}
        self._restore_lock = asyncio.Lock()
        self._revocations: dict[int, int] = {}

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        await self._ensure_restored({tp.partition for tp in partitions if tp.topic == self.topics.verified})

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.accepted_ids.pop(tp.partition, None)
            self._revocations[tp.partition] = self._revocations.get(tp.partition, 0) + 1
        if partitions:
            log.info("partitions %s revoked", sorted(tp.partition for tp in partitions))

    async def _ensure_restored(self, partitions: set[int]) -> None:
        """Never judge a record against state that was not loaded.

        aiokafka runs the assignment callback concurrently with fetching, so both the callback
        and every batch come through here; the lock makes one of them restore and the other
        wait, and a restore overtaken by a revocation is thrown away rather than applied.
        """
        async with self._restore_lock:
            missing = partitions - self.accepted_ids.keys()
            if not missing:
                return
            before = {p: self._revocations.get(p, 0) for p in missing}
            restored = await self._restore(missing)
            for partition, ids in restored.items():
                if self._revocations.get(partition, 0) == before[partition]:
                    self.accepted_ids[partition] = ids
            log.info(
                "restored accepted ids of partitions %s: %d ids",
                sorted(missing),
                sum(map(len, restored.values())),
            )

    async def _restore(self, partitions: set[int]) -> dict[int, dict[str, str]]:
        tps = [TopicPartition(self.topics.accepted, p) for p in partitions]
        ids: dict[int, dict[str, str]] = {p: {} for p in partitions}
        async with self.log.reading() as reader:
            for record in await reader.read(await reader.settled_ends(tps)):
                if record.key:
                    ids[record.partition][record.key.decode()] = _header(record.headers, AGENCY_HEADER)
        return ids

    def _owner(self, partition: int, report_id: str) -> str | None:
        return self._pending.get(partition, {}).get(report_id) or self.accepted_ids[partition].get(report_id)

    async def handle(self, records: Sequence[Any]) -> list[Output]:
        await self._ensure_restored({r.partition for r in records})
        if not {r.partition for r in records} <= self.accepted_ids.keys():
            raise RuntimeError("partition revoked while its batch was being read; reading it again")
        now = datetime.now(UTC)
        self._pending = {}
        outputs: list[Output] = []
        sightings: list[Sighting] = []
        for record in records:  # in input order: the first verified submission of an id wins
            try:
                schema, value = self.codec.decode(record.value)
            except CodecError:
                continue  # only the verify stage writes this topic
            report_id = value["report_id"]
            if report_partition(report_id, self.topics.partitions) != record.partition:
                log.error("skipping %s at %s/%s: not this id's partition", schema.name, record.partition, record.offset)
                continue
            owner = self._owner(record.partition, report_id)
            if schema.name == RETRACTED:
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
            self._pending.setdefault(record.partition, {})[report_id] = agency
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
        return outputs + self._sightings(sightings)

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

    def committed(self) -> None:
        for partition, ids in self._pending.items():
            self.accepted_ids.setdefault(partition, {}).update(ids)
        self._pending = {}

    def aborted(self) -> None:
        self._pending = {}

    async def close(self) -> None:
        pass


def build(context: StageContext) -> AcceptReports:
    return AcceptReports(context.topics, context.log)
