"""verify_reports: tip.reports.submitted -> tip.reports.verified | tip.reports.rejected, exactly once.

Every check that needs only the submission itself happens here, on whichever partition the
agency's client chose: the signature and the signer's agency, freshness, opening, validation,
linkage tokens and re-sealing under vault keys. What passes is written to tip.reports.verified at
the partition its report_id owns (`report_partition`), so every submission of one report_id,
from anyone, on any partition, reaches the same accept stage instance, which alone decides
whether the id is new (streams/agents/accept_reports.py). A retraction is checked the same way
and forwarded to the same partition: only there is it known who owns the report it names.

Rejections that say someone tried to act as another (a signature that does not verify, a key of
another agency, a revoked key, a relay speaking for an agency it did not authenticate) are also
written to the audit, in the same transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from domain.log import LOG_APPEND_TIME, Output, TopicConfigs, TopicPartition
from schemas.codec import WireCodec
from schemas.envelope import RETRACTION
from streams.accept import ACCEPTED, REJECTED, UNVERIFIED, AcceptStage, Submission, Verdict
from streams.audit_events import audit_output, ingest_denial
from streams.stage_context import StageContext
from streams.topics import Topics, report_partition

RETRACTED = "tiphub.ReportRetracted"
log = logging.getLogger(__name__)
AGENCY_HEADER = "tiphub-agency"  # who signed it (verified): an agency code, not personal data
SOURCE_HEADER = "tiphub-source"  # topic:partition:offset of the submission, for rejections downstream
# Reasons that mean a submission claimed to be, or to speak for, someone it is not: audited.
IMPERSONATION = UNVERIFIED


def source_header(submission: Submission) -> tuple[str, bytes]:
    return SOURCE_HEADER, f"{submission.topic}:{submission.partition}:{submission.offset}".encode()


class VerifyReports:
    """BatchHandler for the verify stage: stateless but for the vault and the key registry it uses.
    `configs`: where it asks whether the broker stamps tip.reports.submitted (None: it does not)."""

    def __init__(self, stage: AcceptStage, topics: Topics, configs: TopicConfigs | None = None) -> None:
        self.stage = stage
        self.topics = topics
        self.configs = configs
        self.broker_time: bool | None = None  # is tip.reports.submitted LogAppendTime? read at assignment
        self.codec = WireCodec()
        self._accepted_schema = self.codec.registry.latest(ACCEPTED)
        self._rejected_schema = self.codec.registry.latest(REJECTED)
        self._retraction_id = self.codec.registry.latest(RETRACTION).schema_id.to_bytes(4, "big")
        # The checks are CPU work (signatures, decryption, romanisation) and vault round trips: they run on
        # one thread of their own, so a heavy batch never starves the event loop's heartbeats and fetches,
        # and batches still run one at a time (a cancelled batch's work finishes before the next starts).
        self._checks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-checks")

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        await self._read_timestamp_type()

    async def _read_timestamp_type(self) -> None:
        """Record times are trusted only if the topic's config says the broker sets them (a record's own
        timestamp-type bit is the producer's to set): else the hub's clock judges freshness (a backlog may
        then be refused as stale). Revocation is always judged by the hub's clock."""
        if self.configs is None:
            self.broker_time = False
            return
        self.broker_time = await self.configs.broker_stamps(self.topics.submitted)
        if not self.broker_time:
            log.warning("%s is not LogAppendTime: judging submissions by this worker's clock", self.topics.submitted)

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        pass

    async def handle(self, records: Sequence[Any]) -> list[Output]:
        if self.broker_time is None:
            await self._read_timestamp_type()
        now = datetime.now(UTC)
        # Both the topic's config and the record must say the broker stamped it: a record appended while the
        # topic was CreateTime keeps the time its producer chose after the topic is switched.
        submissions = [
            Submission(
                r.topic,
                r.partition,
                r.offset,
                r.key,
                r.value,
                r.timestamp,
                bool(self.broker_time) and r.timestamp_type == LOG_APPEND_TIME,
            )
            for r in records
        ]
        verdicts = await asyncio.get_running_loop().run_in_executor(self._checks, self._verdicts, submissions, now)
        outputs: list[Output] = []
        for submission, verdict in zip(submissions, verdicts, strict=True):  # in input order
            outputs += self._outputs(submission, verdict, now)
        return outputs

    def _verdicts(self, submissions: list[Submission], now: datetime) -> list[Verdict]:
        """On the checks' thread: reports in one batch (one vault round trip), retractions one by one."""
        retractions = {id(s) for s in submissions if s.value and s.value[1:5] == self._retraction_id}
        reports = [s for s in submissions if id(s) not in retractions]
        verdicts = dict(zip((id(s) for s in reports), self.stage.process(reports, now), strict=True))
        return [self.stage.verify_retraction(s, now) if id(s) in retractions else verdicts[id(s)] for s in submissions]

    def _outputs(self, submission: Submission, verdict: Verdict, now: datetime) -> list[Output]:
        if verdict.rejected is not None:
            rejected = verdict.rejected
            out = [
                Output(
                    self.topics.rejected,
                    verdict.report_id.encode(),
                    self.codec.encode_with(self._rejected_schema, rejected),
                )
            ]
            if rejected["reason"] in IMPERSONATION:
                event = ingest_denial(rejected, now, verdict.claimed_agency)
                out.append(audit_output(self.codec, self.topics.audit_intake, event))
            return out
        record = verdict.accepted if verdict.accepted is not None else verdict.retracted
        assert record is not None
        value = (
            self.codec.encode_with(self._accepted_schema, record)
            if verdict.accepted is not None
            else self.codec.encode(RETRACTED, record)
        )
        return [
            Output(
                self.topics.verified,
                verdict.report_id.encode(),
                value,
                partition=report_partition(verdict.report_id, self.topics.partitions),
                headers=((AGENCY_HEADER, record["source_agency"].encode()), source_header(submission)),
            )
        ]

    def committed(self) -> None:
        pass

    def aborted(self) -> None:
        pass

    async def close(self) -> None:
        # A batch already running finishes before the vault and registry it uses are closed (off the loop).
        await asyncio.to_thread(self._checks.shutdown, wait=True, cancel_futures=True)


def build(context: StageContext) -> VerifyReports:
    return VerifyReports(context.provisions.verification(), context.topics, context.log)
