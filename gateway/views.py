"""What the gateway knows, tailed from the topics: signal versions in log order, sharing decisions,
and the non-sensitive facts of accepted reports. Every view is rebuilt from Kafka at start.

Signals are filtered per caller: a report the caller may not see is neither counted nor named,
and what is derived from reports (agencies, elements, coverage, minor, dates) is recomputed from
the visible ones. The score mixes every report's grading, so it is withheld when any is hidden.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition

from gateway.summaries import SummaryBook
from schemas.codec import CodecError, WireCodec
from schemas.elements import groups_covered
from streams.feeds import committed_offsets
from streams.scoped import HUB_SCOPE
from streams.topics import Topics
from tiphub.tokens import Caller

log = logging.getLogger(__name__)
DECISION_GRACE_S = 30.0  # how long a signal waits for its reports' decisions before unknown counts as "no"


class CursorError(ValueError):
    pass


Cursor = dict[int, int]  # partition -> next offset


def encode_cursor(cursor: Cursor) -> str:
    raw = json.dumps({str(p): o for p, o in sorted(cursor.items())}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(text: str | None) -> Cursor:
    if not text:
        return {}
    try:
        raw = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        cursor = {int(p): int(o) for p, o in raw.items()}
    except (ValueError, binascii.Error, AttributeError, TypeError) as exc:
        raise CursorError("not a cursor this gateway issued") from exc
    if any(p < 0 or o < 0 for p, o in cursor.items()):
        raise CursorError("not a cursor this gateway issued")
    return cursor


@dataclass(frozen=True)
class ReportFacts:
    agency: str
    indicator_type: str
    observed_at: datetime
    elements: tuple[str, ...]
    minor: bool


class PartnerEvent(NamedTuple):
    partition: int
    offset: int
    summary_id: str
    kind: str  # released | withdrawn
    at: datetime


@dataclass(frozen=True)
class SignalVersion:
    partition: int
    offset: int
    received: float
    record: dict[str, Any]


class HubViews:
    """Tails tip.signals, tip.decisions and tip.reports.accepted into memory."""

    def __init__(self, bootstrap: str, topics: Topics, client_options: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.options = client_options or {}
        self.codec = WireCodec()
        self.signals: list[SignalVersion] = []
        self.latest: dict[str, SignalVersion] = {}
        self.decisions: dict[tuple[str, str], bool] = {}  # (recipient, report_id) -> allowed
        self.fields: dict[tuple[str, str], list[str]] = {}
        self.view_json: dict[tuple[str, str], str | None] = {}  # (recipient, report_id) -> the decided view
        self.accepted: dict[str, dict[str, Any]] = {}
        self.erased: set[str] = set()  # subject key ids erased (tip.erasures)
        self.subject_keys_by_token: dict[str, set[str]] = {}  # linkage token -> subject key ids (auditors)
        self.reports_by_subject_key: dict[str, set[str]] = {}
        self.coverage: dict[str, dict[str, Any]] = {}  # requirement id -> latest Coverage
        self.triage: dict[str, list[dict[str, Any]]] = {}  # signal id -> triage events, oldest first
        self.triage_seen: set[str] = set()
        self.rejected: list[tuple[int, int, dict[str, Any]]] = []
        self.rejected_by_id: dict[tuple[str | None, str], dict[str, Any]] = {}  # (agency, report_id) -> latest
        self.decided: set[str] = set()  # reports with decisions (the stage writes all recipients' at once)
        self.reports: dict[str, ReportFacts] = {}
        self.summaries = SummaryBook()
        self.partner_log: list[PartnerEvent] = []  # what partners see: releases and withdrawals, in log order
        self.changed = asyncio.Condition()
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, isolation_level="read_committed", **self.options
        )
        await self._consumer.start()
        tps = []
        topics = self.topics
        tailed = (
            topics.accepted,
            topics.rejected,
            topics.decisions,
            topics.signals,
            topics.summaries,
            topics.coverage,
            topics.triage,
            topics.erasures,
        )
        for topic in tailed:
            partitions = self._consumer.partitions_for_topic(topic) or set(range(self.topics.partitions))
            tps += [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._ends = await self._consumer.end_offsets(tps)
        self._task = asyncio.create_task(self._tail())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    async def _tail(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=2000)
            # Reports and decisions before signals: a signal is judged on what arrived with it.
            topics = self.topics
            order = {topics.accepted: 0, topics.rejected: 0, topics.decisions: 1, topics.signals: 2}
            for tp in sorted(batch, key=lambda tp: (order.get(tp.topic, 3), tp.partition)):  # summaries last
                for record in batch[tp]:
                    self._apply(record)
            if not self.ready.is_set():
                positions = {tp: await self._consumer.position(tp) for tp in self._ends}
                if all(positions[tp] >= end for tp, end in self._ends.items()):
                    self.ready.set()
            if batch:
                async with self.changed:
                    self.changed.notify_all()

    def _apply(self, record: Any) -> None:
        try:
            schema, value = self.codec.decode(record.value)
        except CodecError:
            return
        if record.topic == self.topics.signals:
            if value["scope"] != HUB_SCOPE:
                return  # served per scope in a later step; until then the hub's, filtered per caller
            version = SignalVersion(record.partition, record.offset, time.monotonic(), value)
            self.signals.append(version)
            self.latest[value["signal_id"]] = version
        elif record.topic == self.topics.summaries and schema.name == "tiphub.SummaryEvent":
            self.summaries.apply(value)
            if value["kind"] in ("released", "withdrawn"):
                self.partner_log.append(
                    PartnerEvent(record.partition, record.offset, value["summary_id"], value["kind"], value["at"])
                )
        elif record.topic == self.topics.erasures and schema.name == "tiphub.SubjectErased":
            self.erased.add(value["subject_key_id"])
        elif record.topic == self.topics.triage and schema.name == "tiphub.TriageEvent":
            if value["event_id"] not in self.triage_seen:
                self.triage_seen.add(value["event_id"])
                self.triage.setdefault(value["signal_id"], []).append(value)
        elif record.topic == self.topics.coverage and schema.name == "tiphub.Coverage" and value["scope"] == HUB_SCOPE:
            self.coverage[value["requirement_id"]] = value
        elif record.topic == self.topics.rejected and schema.name == "tiphub.RejectedReport":
            self.rejected.append((record.partition, record.offset, value))
            self.rejected_by_id[(value["source_agency"], value["report_id"])] = value
        elif record.topic == self.topics.decisions and value.get("item_kind") == "report":
            self.decisions[(value["recipient"], value["item_id"])] = bool(value["allowed"])
            self.decided.add(value["item_id"])
            self.fields[(value["recipient"], value["item_id"])] = list(value.get("fields") or [])
            self.view_json[(value["recipient"], value["item_id"])] = value.get("view_json")
        elif record.topic == self.topics.accepted and schema.name == "tiphub.AcceptedReport":
            self.accepted[value["report_id"]] = value  # sealed fields stay sealed until a view opens them
            self.reports[value["report_id"]] = ReportFacts(
                agency=value["source_agency"],
                indicator_type=value["indicator_type"],
                observed_at=value["observed_at"],
                elements=tuple(value["elements"]),
                minor=any(s.get("minor_at_observation") for s in value["subjects"]),
            )
            bridges = value.get("linkage_bridges") or []  # earlier key versions (a rotation's overlap)
            for i, subject in enumerate(value["subjects"]):
                key = subject["subject_key_id"]
                self.reports_by_subject_key.setdefault(key, set()).add(value["report_id"])
                tokens = [identifier["linkage_token"] for identifier in subject["identifiers"]]
                tokens += [t for bridge in bridges for t in bridge["subjects"][i]["identifier_tokens"]]
                for token in tokens:
                    self.subject_keys_by_token.setdefault(token, set()).add(key)

    async def applied(self, event_id: str) -> None:
        """Wait (up to 15 s) until the tail has folded a summary or triage event this gateway wrote."""

        def folded() -> bool:
            return event_id in self.summaries.seen or event_id in self.triage_seen

        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(folded), 15.0)

    # -- per caller ------------------------------------------------------------------------
    def may_see(self, caller: Caller, report_id: str) -> bool | None:
        """True or False; None while the decision is not known yet."""
        facts = self.reports.get(report_id)
        if facts is not None and caller.agency is not None and facts.agency == caller.agency:
            return True  # an agency always sees its own reports
        if report_id not in self.decided:
            return None
        return self.decisions.get((caller.acts_for, report_id), False)  # no agreement: nothing shared

    def view(self, caller: Caller, version: SignalVersion) -> dict[str, Any] | bool | None:
        """The signal as this caller may see it; None if nothing of it is visible; False if not decidable yet."""
        record = version.record
        verdicts = {r: self.may_see(caller, r) for r in record["report_ids"]}
        if None in verdicts.values() and time.monotonic() - version.received < DECISION_GRACE_S:
            return False
        visible = [r for r, ok in verdicts.items() if ok]
        if not visible:
            return None
        facts = [self.reports[r] for r in visible if r in self.reports]
        elements = sorted({e for f in facts for e in f.elements})
        complete = len(visible) == len(record["report_ids"])
        return {
            "signal_id": record["signal_id"],
            "version": record["version"],
            "requirement_id": record["requirement_id"],
            "entity": record["entity"],
            "status": record["status"],
            "merged_into": record["merged_into"],
            "report_ids": visible,
            "report_count": len(visible),
            "agencies": sorted({f.agency for f in facts}),
            "elements": elements,
            "act_means_purpose": sorted(groups_covered(elements)),
            "minor_involved": any(f.minor for f in facts),
            "score": record["score"] if complete else None,
            "first_seen": min((f.observed_at for f in facts), default=None),
            "last_seen": max((f.observed_at for f in facts), default=None),
            "updated_at": record["updated_at"],
            "triage_state": self.triage.get(record["signal_id"], [{"state": "new"}])[-1]["state"],
        }

    def page(self, caller: Caller, cursor: Cursor, limit: int) -> tuple[list[tuple[dict[str, Any], Cursor]], Cursor]:
        """Signal versions after `cursor` that this caller may see, each with the cursor just after it,
        and the cursor after the page. Invisible versions are stepped over; an undecidable one ends the page."""
        position = dict(cursor)
        items: list[tuple[dict[str, Any], Cursor]] = []
        for version in self.signals:
            if version.offset < position.get(version.partition, 0):
                continue
            shown = self.view(caller, version)
            if shown is False:
                break
            position[version.partition] = version.offset + 1
            if shown is not None:
                assert isinstance(shown, dict)
                items.append((shown, dict(position)))
                if len(items) >= limit:
                    break
        return items, position

    def partner_page(self, partner: str, cursor: Cursor, limit: int) -> tuple[list[dict[str, Any]], Cursor]:
        """Release and withdrawal events of this partner's summaries after `cursor`, in log order."""
        position = dict(cursor)
        items: list[dict[str, Any]] = []
        for partition, offset, summary_id, kind, _ in list(self.partner_log):
            if offset < position.get(partition, 0):
                continue
            position[partition] = offset + 1
            summary = self.summaries.summaries.get(summary_id)
            if summary is None or summary.partner != partner:
                continue
            items.append({"event": kind, **summary.for_partner()})
            if len(items) >= limit:
                break
        return items, position

    async def lag(self, group_of: Callable[[str], str]) -> dict[str, int]:
        """Records each stage has not committed yet (the same measure the tests wait on)."""
        assert self._consumer is not None
        out = {}
        for stage, topics in self.topics.stage_inputs().items():
            tps = [TopicPartition(topic, p) for topic, partitions in topics for p in partitions]
            ends = await self._consumer.end_offsets(tps)
            committed = await committed_offsets(self.bootstrap, group_of(stage), tps, self.options)
            out[stage] = sum(max(0, ends[tp] - committed[tp]) for tp in tps)
        return out
