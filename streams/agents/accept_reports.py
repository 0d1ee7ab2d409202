"""accept_reports: tip.reports.submitted -> tip.reports.accepted | tip.reports.rejected, exactly once.

Each report_id is accepted once, however often it is submitted. Which ids a partition has
accepted is rebuilt at assignment from the same partition of tip.reports.accepted (the
output is written to the input's partition number, so the two topics are co-partitioned
whatever partitioner the agencies' clients use).

In the same transaction it writes the accepted reports' person occurrences to tip.sightings,
repartitioned by linkage key for the link stage (streams/linking.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.codec import WireCodec
from schemas.envelope import RETRACTION
from streams.accept import ACCEPTED, REJECTED, AcceptStage, Rejection, Submission, rejection_record
from streams.correlate import facts_from_accepted
from streams.feeds import read_until, settled_end_offsets
from streams.linking import SIGHTINGS, Sighting, by_partition, sightings_of
from streams.topics import Topics
from streams.transactional import Output

log = logging.getLogger(__name__)
AGENCY_HEADER = "tiphub-agency"  # who the report was accepted from: not personal data
RETRACTED = "tiphub.ReportRetracted"


def _agency(headers: Any) -> str:
    return next((v.decode() for k, v in headers or () if k == AGENCY_HEADER), "")


class AcceptReports:
    """BatchHandler for the accept stage."""

    def __init__(
        self,
        stage: AcceptStage,
        topics: Topics,
        bootstrap: str,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.stage = stage
        self.topics = topics
        self.bootstrap = bootstrap
        self.client_options = client_options or {}
        self.codec = WireCodec()
        self._accepted_schema = self.codec.registry.latest(ACCEPTED)
        self._rejected_schema = self.codec.registry.latest(REJECTED)
        self.accepted_ids: dict[int, dict[str, str]] = {}  # partition -> report_id -> agency
        self._pending: dict[int, dict[str, str]] = {}
        self._restore_lock = asyncio.Lock()
        self._revocations: dict[int, int] = {}

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        await self._ensure_restored({tp.partition for tp in partitions if tp.topic == self.topics.submitted})

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
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            **self.client_options,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.topics.accepted, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ids: dict[int, dict[str, str]] = {p: {} for p in partitions}
            ends = await settled_end_offsets(self.bootstrap, consumer, tps, self.client_options)
            for record in await read_until(consumer, tps, ends):
                if record.key:
                    ids[record.partition][record.key.decode()] = _agency(record.headers)
            return ids
        finally:
            await consumer.stop()

    async def handle(self, records: Sequence[Any]) -> list[Output]:
        await self._ensure_restored({r.partition for r in records})
        if not {r.partition for r in records} <= self.accepted_ids.keys():
            raise RuntimeError("partition revoked while its batch was being read; reading it again")
        now = datetime.now(UTC)
        self._pending = {}
        submissions = [Submission(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp) for r in records]
        duplicate = Rejection("duplicate_report_id", "a report with this report_id was already accepted", "report_id")
        retraction_id = self.codec.registry.latest(RETRACTION).schema_id
        is_retraction = {id(s) for s in submissions if s.value and s.value[1:5] == retraction_id.to_bytes(4, "big")}
        fresh = [
            s for s in submissions if id(s) not in is_retraction and self._key(s) not in self.accepted_ids[s.partition]
        ]
        verdicts = dict(zip((id(s) for s in fresh), self.stage.process(fresh, now), strict=True))
        outputs: list[Output] = []
        sightings: list[Sighting] = []
        for submission in submissions:  # in input order: the first valid copy of an id wins
            pending = self._pending.setdefault(submission.partition, {})
            if id(submission) in is_retraction:
                key = self._key(submission)
                agency = pending.get(key) or self.accepted_ids[submission.partition].get(key)
                retraction = self.stage.verify_retraction(submission, agency, now)
                if retraction.retracted is not None:
                    outputs.append(
                        Output(
                            self.topics.retractions,
                            key.encode(),
                            self.codec.encode(RETRACTED, retraction.retracted),
                            partition=submission.partition,
                        )
                    )
                else:
                    assert retraction.rejected is not None
                    outputs.append(
                        Output(
                            self.topics.rejected,
                            retraction.report_id.encode(),
                            self.codec.encode_with(self._rejected_schema, retraction.rejected),
                        )
                    )
                continue
            verdict = verdicts.get(id(submission))
            if verdict is None or (verdict.accepted is not None and verdict.report_id in pending):
                key = self._key(submission)
                # The agency the original was accepted from: its own feed of rejects shows the duplicate.
                owner = pending.get(key) or self.accepted_ids[submission.partition].get(key) or None
                outputs.append(self._rejected(submission, key, duplicate, now, owner))
            elif verdict.accepted is not None:
                pending[verdict.report_id] = verdict.accepted["source_agency"]
                sightings += sightings_of(facts_from_accepted(verdict.accepted))
                outputs.append(
                    Output(
                        self.topics.accepted,
                        verdict.report_id.encode(),
                        self.codec.encode_with(self._accepted_schema, verdict.accepted),
                        partition=submission.partition,
                        headers=((AGENCY_HEADER, verdict.accepted["source_agency"].encode()),),
                    )
                )
            else:
                assert verdict.rejected is not None
                outputs.append(
                    Output(
                        self.topics.rejected,
                        verdict.report_id.encode(),
                        self.codec.encode_with(self._rejected_schema, verdict.rejected),
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

    @staticmethod
    def _key(submission: Submission) -> str:
        return (submission.key or b"").decode(errors="replace")

    def _rejected(
        self, submission: Submission, report_id: str, rejection: Rejection, now: datetime, agency: str | None = None
    ) -> Output:
        record = rejection_record(submission, report_id, agency, rejection, now)
        return Output(
            self.topics.rejected,
            report_id.encode(),
            self.codec.encode_with(self._rejected_schema, record),
        )

    def committed(self) -> None:
        for partition, ids in self._pending.items():
            self.accepted_ids.setdefault(partition, {}).update(ids)
        self._pending = {}

    def aborted(self) -> None:
        self._pending = {}

    async def close(self) -> None:
        pass
