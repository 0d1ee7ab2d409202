"""What the gateway knows, tailed from the topics: each scope's signal feed, the sharing decisions,
the non-sensitive facts of accepted reports, coverage, triage, summaries and rejections. Every view
is rebuilt from Kafka at start.

A caller is served only from their own scope (their agency or partner): its signals were correlated
from the reports the caller may see (streams/scoped.py), in the order of the scope's feed (`seq`,
gapless), and each is shown through the caller's decisions as they stand now
(policies/visibility.py): a report retracted, or past the retention of the caller's agreement, is
left out of every version, and every field follows the caller's field rules.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from domain.release import SummaryBook
from policies.engine import decide
from policies.model import AgreementSet, Rule
from policies.visibility import ReportFacts, Visible, field_rules, render_signal
from schemas.codec import CodecError, WireCodec
from streams.scoped import HUB_SCOPE
from streams.topics import Topics
from tiphub.tokens import Caller

log = logging.getLogger(__name__)
UNKNOWN = object()  # not known yet: its accepted record or the caller's decision is still on its way


class PartnerEvent(NamedTuple):
    partition: int
    offset: int
    summary_id: str
    kind: str  # released | withdrawn
    at: datetime


@dataclass(frozen=True)
class Decided:
    """The latest sharing decision for one (recipient, report)."""

    allowed: bool
    retain_until: datetime | None
    rules: dict[str, Rule]
    view_json: str | None
    fields: tuple[dict[str, Any], ...]  # per concrete path: the rule and the clause that decided it

    def in_force(self, now: datetime) -> bool:
        return self.allowed and (self.retain_until is None or self.retain_until > now)


@dataclass
class ScopeFeed:
    """One scope's signal versions in feed order (by seq), and the latest version of each signal."""

    versions: list[dict[str, Any]] = field(default_factory=list)
    waiting: dict[int, dict[str, Any]] = field(default_factory=dict)  # arrived ahead of a gap
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, record: dict[str, Any]) -> None:
        seq = record["seq"]
        if seq <= len(self.versions) or seq in self.waiting:
            return  # seen (a transaction's records can be read again after a gateway restart)
        self.waiting[seq] = record
        while len(self.versions) + 1 in self.waiting:
            ready = self.waiting.pop(len(self.versions) + 1)
            self.versions.append(ready)
            held = self.latest.get(ready["signal_id"])
            if held is None or ready["version"] > held["version"]:
                self.latest[ready["signal_id"]] = ready


class HubViews:
    """Tails the hub's topics into memory."""

    def __init__(self, bootstrap: str, topics: Topics, client_options: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.options = client_options or {}
        self.codec = WireCodec()
        self.feeds: dict[str, ScopeFeed] = {}
        self.decisions: dict[tuple[str, str], Decided] = {}
        self.accepted: dict[str, dict[str, Any]] = {}
        self.facts: dict[str, ReportFacts] = {}
        self.retracted: set[str] = set()
        self.erased: set[str] = set()  # vault key ids erased (tip.erasures)
        self.subject_keys_by_token: dict[str, set[str]] = {}  # linkage token -> subject key ids (auditors)
        self.reports_by_subject_key: dict[str, set[str]] = {}
        self.coverage: dict[str, dict[str, dict[str, Any]]] = {}  # scope -> requirement id -> latest Coverage
        self.triage: dict[str, list[dict[str, Any]]] = {}  # signal id -> triage events, oldest first
        self.triage_seen: set[str] = set()
        self.rejected: list[tuple[int, int, dict[str, Any]]] = []
        self.rejected_by_id: dict[tuple[str | None, str], dict[str, Any]] = {}  # (agency, report_id) -> latest
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
            topics.retractions,
        )
        for topic in tailed:
            # the contract's count, not a guess: Apache Kafka never answers for a partition that does not
            # exist (tip.coverage has one), and a seek to it waits forever
            tps += [TopicPartition(topic, p) for p in range(topics.partitions_of(topic))]
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
            for tp in sorted(batch, key=lambda tp: (tp.topic, tp.partition)):
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
        topic, name = record.topic, schema.name
        if topic == self.topics.signals:
            if value["scope"] != HUB_SCOPE and value["seq"] > 0:  # the hub's own scope is served to nobody
                self.feeds.setdefault(value["scope"], ScopeFeed()).add(value)
        elif topic == self.topics.summaries and name == "tiphub.SummaryEvent":
            self.summaries.apply(value)
            if value["kind"] in ("released", "withdrawn"):
                self.partner_log.append(
                    PartnerEvent(record.partition, record.offset, value["summary_id"], value["kind"], value["at"])
                )
        elif topic == self.topics.erasures and name == "tiphub.SubjectErased":
            self.erased.add(value["subject_key_id"])
        elif topic == self.topics.retractions and name == "tiphub.ReportRetracted":
            self.retracted.add(value["report_id"])
        elif topic == self.topics.triage and name == "tiphub.TriageEvent":
            if value["event_id"] not in self.triage_seen:
                self.triage_seen.add(value["event_id"])
                self.triage.setdefault(value["signal_id"], []).append(value)
        elif topic == self.topics.coverage and name == "tiphub.Coverage":
            self.coverage.setdefault(value["scope"], {})[value["requirement_id"]] = value
        elif topic == self.topics.rejected and name == "tiphub.RejectedReport":
            self.rejected.append((record.partition, record.offset, value))
            self.rejected_by_id[(value["source_agency"], value["report_id"])] = value
        elif topic == self.topics.decisions and value.get("item_kind") == "report":
            self.decisions[(value["recipient"], value["item_id"])] = Decided(
                allowed=bool(value["allowed"]),
                retain_until=value.get("retain_until"),
                rules=field_rules(value.get("fields") or []),
                view_json=value.get("view_json"),
                fields=tuple(value.get("fields") or ()),
            )
        elif topic == self.topics.accepted and name == "tiphub.AcceptedReport":
            self._accepted(value)

    def _accepted(self, value: dict[str, Any]) -> None:
        report_id = value["report_id"]
        self.accepted[report_id] = value  # sealed fields stay sealed until a view opens them
        self.facts[report_id] = ReportFacts(
            report_id=report_id,
            agency=value["source_agency"],
            indicator_type=value["indicator_type"],
            observed_at=value["observed_at"],
            elements=tuple(value["elements"]),
        )
        bridges = value.get("linkage_bridges") or []  # earlier key versions (a rotation's overlap)
        for i, subject in enumerate(value["subjects"]):
            key = subject["subject_key_id"]
            self.reports_by_subject_key.setdefault(key, set()).add(report_id)
            tokens = [identifier["linkage_token"] for identifier in subject["identifiers"]]
            tokens += [t for bridge in bridges for t in bridge["subjects"][i]["identifier_tokens"]]
            for token in tokens:
                self.subject_keys_by_token.setdefault(token, set()).add(key)

    async def caught_up(self) -> bool:
        """Whether every tailed partition has been read to its end as of now (readiness)."""
        assert self._consumer is not None
        tps = list(self._ends)
        ends = await self._consumer.end_offsets(tps)
        for tp in tps:
            if await self._consumer.position(tp) < ends[tp]:
                return False
        return True

    async def applied(self, event_id: str) -> None:
        """Wait (up to 15 s) until the tail has folded a summary or triage event this gateway wrote."""

        def folded() -> bool:
            return event_id in self.summaries.seen or event_id in self.triage_seen

        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(folded), 15.0)

    # -- per caller ------------------------------------------------------------------------
    def visible(self, acts_for: str, report_id: str, now: datetime | None = None) -> Visible | object | None:
        """The report as `acts_for` may see it now; None if it may not; UNKNOWN if not decidable yet."""
        facts = self.facts.get(report_id)
        if facts is None:
            return UNKNOWN
        if report_id in self.retracted:
            return None
        if facts.agency == acts_for:
            return Visible(facts, own=True)  # an agency always sees its own reports
        decided = self.decisions.get((acts_for, report_id))
        if decided is None:
            return UNKNOWN
        return Visible(facts, decided.rules) if decided.in_force(now or datetime.now(UTC)) else None

    def render(
        self, acts_for: str, record: dict[str, Any], now: datetime | None = None
    ) -> dict[str, Any] | object | None:
        """A signal version as `acts_for` sees it now (None: nothing of it; UNKNOWN: wait for its reports)."""
        now = now or datetime.now(UTC)
        visible: dict[str, Visible | None] = {}
        for report_id in record["report_ids"]:
            found = self.visible(acts_for, report_id, now)
            if found is UNKNOWN:
                return UNKNOWN
            visible[report_id] = found if isinstance(found, Visible) else None
        return render_signal(record, visible, self.triage_state(record["signal_id"]))

    def triage_state(self, signal_id: str) -> str:
        return str(self.triage.get(signal_id, [{"state": "new"}])[-1]["state"])

    def page(self, caller: Caller, position: int, limit: int) -> tuple[list[tuple[dict[str, Any], int]], int]:
        """Signal versions of the caller's scope from `position` in its feed, each with the position just
        after it, and the position after the page. A version none of whose reports the caller may see
        any more is stepped over; one whose reports are still on their way ends the page."""
        feed = self.feeds.get(caller.acts_for or "")
        items: list[tuple[dict[str, Any], int]] = []
        if feed is None:
            return items, position
        now = datetime.now(UTC)
        while position < len(feed.versions) and len(items) < limit:
            shown = self.render(caller.acts_for or "", feed.versions[position], now)
            if shown is UNKNOWN:
                break
            position += 1
            if isinstance(shown, dict):
                items.append((shown, position))
        return items, position

    def latest(self, scope: str, signal_id: str) -> dict[str, Any] | None:
        feed = self.feeds.get(scope)
        return feed.latest.get(signal_id) if feed else None

    def report_view(
        self, acts_for: str, report_id: str, now: datetime | None = None
    ) -> tuple[Any, list[dict[str, Any]]] | None:
        """(view with ciphertext references, its field decisions) of a report the caller may see now, as the
        policy engine decided it for them: an agency's own report in full, others by their decision."""
        found = self.visible(acts_for, report_id, now)
        if not isinstance(found, Visible):
            return None
        accepted = self.accepted[report_id]
        if found.own:
            decision = decide(accepted, acts_for, AgreementSet(), accepted["accepted_at"], frozenset(self.erased))
            fields = [{"path": f.path, "field": f.field, "rule": f.rule, "basis": f.basis} for f in decision.fields]
            return decision.view, fields
        decided = self.decisions[(acts_for, report_id)]
        if not decided.view_json:
            return None
        return json.loads(decided.view_json), [dict(f) for f in decided.fields]

    def partner_page(self, partner: str, cursor: list[int], limit: int) -> tuple[list[dict[str, Any]], list[int]]:
        """Release and withdrawal events of this partner's summaries after `cursor`, in log order."""
        position = list(cursor)
        items: list[dict[str, Any]] = []
        for partition, offset, summary_id, kind, _ in list(self.partner_log):
            if offset < position[partition]:
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
        inputs = {
            stage: [TopicPartition(topic, p) for topic, partitions in topics for p in partitions]
            for stage, topics in self.topics.stage_inputs().items()
        }
        ends = await self._consumer.end_offsets(sorted({tp for tps in inputs.values() for tp in tps}))
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self.options)
        await admin.start()  # one client for every group: on Apache Kafka each start costs a round of metadata
        try:
            out = {}
            for stage, tps in inputs.items():
                committed = await admin.list_consumer_group_offsets(group_of(stage))
                out[stage] = sum(max(0, ends[tp] - (committed[tp].offset if tp in committed else 0)) for tp in tps)
            return out
        finally:
            await admin.close()
