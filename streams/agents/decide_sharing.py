"""decide_sharing: tip.reports.accepted -> tip.decisions (+ an audit event per decision), exactly once.

For each accepted report and each recipient with an agreement, the pure engine decides what the
recipient may see at the report's event time (accepted_at), under the agreement versions loaded
by then, with the erasures known by then. Decisions hold references to ciphertext, never plaintext.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from domain.log import FactFeeds, Output, TopicPartition
from domain.withdrawals import Withdrawals
from policies.engine import Decision, decide
from schemas.codec import CodecError, WireCodec
from streams.agreements import AgreementHistory
from streams.audit_events import audit_event, audit_output
from streams.stage_context import StageContext
from streams.topics import Topics

DECISION = "tiphub.SharingDecision"


def decision_record(decision: Decision, decided_at: datetime) -> dict[str, Any]:
    return {
        "decision_id": decision.decision_id,
        "item_kind": "report",
        "item_id": decision.item_id,
        "recipient": decision.recipient,
        "allowed": decision.allowed,
        "reason": decision.reason,
        "explanation": decision.explanation,
        "event_time": decision.at,
        "decided_at": decided_at,
        "agreement": decision.agreement,
        "agreement_hash": decision.agreement_hash,
        "originator_agreement": decision.originator_agreement,
        "originator_agreement_hash": decision.originator_agreement_hash,
        "retain_until": decision.retain_until,
        "view_json": None if decision.view is None else json.dumps(decision.view, sort_keys=True),
        "fields": [
            {"path": f.path, "field": f.field, "rule": f.rule, "basis": f.basis, "agreement_hash": f.agreement_hash}
            for f in decision.fields
        ],
    }


class DecideSharing:
    """BatchHandler: stateless but for the agreements, erasures and retractions it folds from their topics
    (`feeds`)."""

    def __init__(self, topics: Topics, feeds: FactFeeds) -> None:
        self.topics = topics
        self.codec = WireCodec()
        self.history = AgreementHistory()
        self.withdrawn = Withdrawals()  # erased subjects and retracted reports
        # agreements, erasures and retractions in one feed: one client, one look at the ends per batch
        self._facts = feeds.feed(
            {
                topics.agreements: self.history.apply,
                topics.erasures: self._erasure,
                topics.retractions: self._retraction,
            }
        )
        self._started = False
        self._lock = asyncio.Lock()

    def _erasure(self, fact: dict[str, Any]) -> None:
        self.withdrawn.fold(fact, "erased")

    def _retraction(self, fact: dict[str, Any]) -> None:
        self.withdrawn.fold(fact, "retracted")

    async def _catch_up(self) -> None:
        """Agreements and erasures first: nothing is judged against facts not yet read."""
        async with self._lock:  # the assignment callback runs concurrently with the first batch
            if not self._started:
                await self._facts.start()
                self._started = True
            await self._facts.catch_up()

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        await self._catch_up()

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        pass

    async def handle(self, records: Sequence[Any]) -> list[Output]:
        await self._catch_up()
        now = datetime.now(UTC)
        recipients = self.history.agreements.recipients()
        if not recipients:
            # The worker publishes the shipped agreements before it starts: none loaded means the feed
            # has not read them yet. Deciding now would commit reports with no decision at all.
            raise RuntimeError("no sharing agreement loaded yet; reading the batch again")
        erased = frozenset(self.withdrawn.erased)
        outputs: list[Output] = []
        for record in records:
            if record.topic == self.topics.retractions:
                try:
                    fact = self.codec.decode(record.value, expect="tiphub.ReportRetracted")[1]
                except CodecError:
                    continue
                outputs += self._retracted(fact, recipients, now)
                continue
            try:
                _, item = self.codec.decode(record.value, expect="tiphub.AcceptedReport")
            except CodecError:
                continue  # only the accept stage writes this topic; nothing else is ours to decide
            if (
                item["report_id"] in self.withdrawn.retracted
            ):  # whichever arrived first, a retracted report is not shared
                outputs += self._retracted(self.withdrawn.retracted[item["report_id"]], recipients, now)
                continue
            subject_refs = [subject["subject_key_id"] for subject in item["subjects"]]
            for recipient in recipients:
                decision = decide(item, recipient, self.history.agreements, item["accepted_at"], erased)
                outputs += self._written(decision, subject_refs, now)
        return outputs

    def _retracted(self, fact: dict[str, Any], recipients: list[str], now: datetime) -> list[Output]:
        """A retracted report: from now on nothing of it is shared with anyone but its agency."""
        outputs = []
        for recipient in recipients:
            decision = Decision(
                recipient,
                fact["report_id"],
                fact["retracted_at"],
                False,
                "retracted",
                f"{fact['source_agency']} retracted the report ({fact['reason']}): nothing of it is shared any more.",
                None,
                None,
                None,
                None,
                None,
                (),
            )
            outputs += self._written(decision, [], now)
        return outputs

    def _written(self, decision: Decision, subject_refs: list[str], now: datetime) -> list[Output]:
        """A decision on tip.decisions and its audit event: always the two together."""
        event = audit_event(
            "decision",
            "decide_sharing",
            decision.reason,
            item_id=decision.item_id,
            recipient=decision.recipient,
            subject_refs=subject_refs,
            at=now,
            detail={
                "decision_id": decision.decision_id,
                "allowed": decision.allowed,
                "agreement_hash": decision.agreement_hash,
            },
        )
        return [
            Output(
                self.topics.decisions,
                decision.recipient.encode(),
                self.codec.encode(DECISION, decision_record(decision, now)),
            ),
            audit_output(self.codec, self.topics.audit_intake, event),
        ]

    def committed(self) -> None:
        pass

    def aborted(self) -> None:
        pass

    async def close(self) -> None:
        await self._facts.stop()


def build(context: StageContext) -> DecideSharing:
    return DecideSharing(context.topics, context.log)
