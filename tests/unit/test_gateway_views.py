"""The gateway's views: each topic's records go to that topic's fold, and what a caller is paged through
is what the folds hold as that caller may see it now."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.log import Record
from domain.scoped import HUB_SCOPE
from gateway.folds import Event
from gateway.paging import log_page, partner_page, signal_page
from gateway.views import HubViews
from gateway.visibility import UNKNOWN, Visibility
from schemas.codec import WireCodec
from streams.topics import Topics

CODEC = WireCodec()
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
offsets: dict[str, int] = {}


def record(topic: str, value: bytes | None, partition: int = 0) -> Record:
    offset = offsets[topic] = offsets.get(topic, -1) + 1
    return Record(topic, partition, offset, None, value)


def summary_event(summary_id: str, kind: str, partner: str = "HSU-TH", **more: Any) -> dict[str, Any]:
    return {
        "event_id": f"{summary_id}-{kind}",
        "summary_id": summary_id,
        "kind": kind,
        "partner": partner,
        "signal_id": "sig-1",
        "signal_version": 1,
        "actor": "analyst:ana",
        "actor_agency": "NZ-NIC",
        "at": AT,
        "content_json": json.dumps({"report_count": 1}) if kind in ("drafted", "released") else None,
        "consents_required": [],
        "scope": f"NZ-NIC>{partner}",
        "report_ids": ["r1"] if kind == "drafted" else [],
        **more,
    }


def signal(signal_id: str, version: int, seq: int, report_ids: list[str], scope: str = "NZ-NIC") -> dict[str, Any]:
    return {
        "signal_id": signal_id,
        "version": version,
        "status": "open",
        "merged_into": None,
        "requirement_id": "CP-1",
        "entity": "e1",
        "report_ids": report_ids,
        "agencies": ["NZ-POL"],
        "elements": [],
        "act_means_purpose": [],
        "minor_involved": False,
        "score": 0.5,
        "first_seen": AT,
        "last_seen": AT,
        "updated_at": AT,
        "scope": scope,
        "seq": seq,
    }


def accepted(report_id: str, agency: str) -> Event:
    value = {
        "report_id": report_id,
        "source_agency": agency,
        "indicator_type": "recruitment",
        "observed_at": AT,
        "elements": ["act.recruitment"],
        "subjects": [{"subject_key_id": f"{report_id}/s0", "identifiers": [{"linkage_token": f"lk-{report_id}"}]}],
        "accepted_at": AT,
    }
    return Event(0, 0, "tiphub.AcceptedReport", value)


def decision(recipient: str, report_id: str, allowed: bool = True, retain_until: datetime | None = None) -> Event:
    value = {
        "item_kind": "report",
        "item_id": report_id,
        "recipient": recipient,
        "allowed": allowed,
        "retain_until": retain_until,
        "fields": [],
        "view_json": None,
    }
    return Event(0, 0, "tiphub.SharingDecision", value)


def test_each_topic_is_folded_by_its_own_fold_and_a_record_that_does_not_decode_is_skipped() -> None:
    topics = Topics()
    views = HubViews(topics)
    drafted = CODEC.encode("tiphub.SummaryEvent", summary_event("sum-1", "drafted"))
    views.apply(record(topics.triage, drafted))  # a summary event on another topic is not a summary
    views.apply(record(topics.summaries, b"\x00garbage"))
    views.apply(record(topics.summaries, None))
    views.apply(record("some.other.topic", drafted))
    assert views.summaries.book.summaries == {} and views.triage.by_signal == {}
    views.apply(record(topics.summaries, drafted))
    assert views.summaries.book.summaries["sum-1"].status == "pending"
    assert views.folded("sum-1-drafted") and not views.folded("sum-1-released")
    erased = {"subject_key_id": "r1/s0", "report_id": "r1", "erased_at": AT, "reason": "court", "requested_by": "a"}
    views.apply(record(topics.erasures, CODEC.encode("tiphub.SubjectErased", erased)))
    assert set(views.withdrawn.erased) == {"r1/s0"}


def test_every_tailed_topic_has_one_fold() -> None:
    topics = Topics()
    views = HubViews(topics)
    tailed = (topics.accepted, topics.rejected, topics.decisions, topics.signals, topics.summaries)
    tailed += (topics.coverage, topics.triage, topics.erasures, topics.retractions)
    assert views.tailed() == list(tailed)
    assert len({id(fold) for fold in views.folds.values()}) == len(tailed)


def test_a_fact_counts_only_on_the_topic_of_its_kind() -> None:
    """A retraction written to tip.erasures (which an operator may write) retracts nothing, and an erasure
    written to tip.retractions erases nobody."""
    topics = Topics()
    views = HubViews(topics)
    retracted = {"report_id": "r1", "source_agency": "NZ-POL", "reason": "ENTERED_IN_ERROR", "corrected_by": None}
    retracted |= {"signing_key_id": "k", "retracted_at": AT}
    erased = {"subject_key_id": "r2/s0", "report_id": "r2", "erased_at": AT, "reason": "court", "requested_by": "a"}
    views.apply(record(topics.erasures, CODEC.encode("tiphub.ReportRetracted", retracted)))
    views.apply(record(topics.retractions, CODEC.encode("tiphub.SubjectErased", erased)))
    assert not views.withdrawn.retracted and not views.withdrawn.erased
    views.apply(record(topics.retractions, CODEC.encode("tiphub.ReportRetracted", retracted)))
    assert list(views.withdrawn.retracted) == ["r1"]


def test_a_scope_feed_holds_a_version_back_until_the_versions_before_it_arrive() -> None:
    topics = Topics()
    views = HubViews(topics)
    second = CODEC.encode("tiphub.Signal", signal("sig-1", 2, 2, ["r1", "r2"]))
    views.apply(record(topics.signals, second))
    feed = views.signals.feed("NZ-NIC")
    assert feed is not None and feed.versions == []
    views.apply(record(topics.signals, CODEC.encode("tiphub.Signal", signal("sig-1", 1, 1, ["r1"]))))
    views.apply(record(topics.signals, second))  # read again after a restart: folded once
    assert [v["seq"] for v in feed.versions] == [1, 2]
    assert (views.signals.latest("NZ-NIC", "sig-1") or {}).get("version") == 2
    views.apply(record(topics.signals, CODEC.encode("tiphub.Signal", signal("sig-9", 1, 1, ["r9"], HUB_SCOPE))))
    assert views.signals.feed(HUB_SCOPE) is None  # the hub's own scope is served to nobody
    assert views.signals.versions_held() == 2


def test_a_page_steps_over_what_the_caller_may_no_longer_see_and_ends_at_what_is_still_undecided() -> None:
    views = HubViews(Topics())
    visibility = Visibility(views)
    now = datetime.now(UTC)
    for report_id in ("r1", "r2", "r3"):
        views.accepted.apply(accepted(report_id, "NZ-POL"))
    views.decisions.apply(decision("NZ-NIC", "r1"))
    views.decisions.apply(decision("NZ-NIC", "r2", retain_until=now - timedelta(days=1)))  # past retention
    for seq, report_ids in enumerate((["r1"], ["r2"], ["r3"], ["r1"]), start=1):
        views.signals.apply(Event(0, seq, "tiphub.Signal", signal(f"sig-{seq}", 1, seq, report_ids)))

    items, position = signal_page(views.signals, visibility, "NZ-NIC", 0, 10)
    assert [(shown["signal_id"], after) for shown, after in items] == [("sig-1", 1)]
    assert position == 2  # sig-2 stepped over; sig-3's decision is on its way: the page ends before it
    assert visibility.visible("NZ-NIC", "r3") is UNKNOWN
    views.decisions.apply(decision("NZ-NIC", "r3", allowed=False))
    items, position = signal_page(views.signals, visibility, "NZ-NIC", position, 10)
    assert [shown["signal_id"] for shown, _ in items] == ["sig-4"] and position == 4
    views.folds[views.topics.retractions].apply(
        Event(0, 0, "tiphub.ReportRetracted", {"report_id": "r1", "retracted_at": now})
    )
    assert signal_page(views.signals, visibility, "NZ-NIC", 0, 10) == ([], 4)  # retracted: shown to nobody
    assert visibility.visible("NZ-POL", "r2") is not None  # an agency always sees its own reports


def test_a_partner_is_paged_through_the_releases_and_withdrawals_of_its_own_summaries_only() -> None:
    topics = Topics()
    views = HubViews(topics)
    events = [
        summary_event("sum-1", "drafted"),
        summary_event("sum-2", "drafted", partner="OTHER"),
        summary_event("sum-1", "released"),
        summary_event("sum-2", "released", partner="OTHER"),
        summary_event("sum-1", "withdrawn"),
    ]
    for event in events:
        views.apply(record(topics.summaries, CODEC.encode("tiphub.SummaryEvent", event)))
    cursor = [0] * topics.partitions
    first, cursor = partner_page(views.summaries, "HSU-TH", cursor, 1)
    assert first == [{"event": "released", "summary_id": "sum-1", "status": "withdrawn"}]
    rest, cursor = partner_page(views.summaries, "HSU-TH", cursor, 10)
    assert rest == [{"event": "withdrawn", "summary_id": "sum-1", "status": "withdrawn"}]
    assert partner_page(views.summaries, "HSU-TH", cursor, 10)[0] == []


def test_a_log_page_moves_past_what_it_leaves_out_and_resumes_per_partition() -> None:
    rows = [(0, 0, {"agency": "A", "n": 1}), (1, 0, {"agency": "B", "n": 2}), (0, 1, {"agency": "A", "n": 3})]
    rows += [(1, 1, {"agency": "A", "n": 4})]

    def own(_: int, record: dict[str, Any]) -> dict[str, Any] | None:
        return {"n": record["n"]} if record["agency"] == "A" else None

    first, position = log_page(rows, [0, 0], 2, own)
    assert first == [{"n": 1}, {"n": 3}] and position == [2, 1]  # B's record is stepped over, never shown
    rest, position = log_page(rows, position, 2, own)
    assert rest == [{"n": 4}] and position == [2, 2]
    assert log_page(rows, position, 2, own) == ([], [2, 2])
