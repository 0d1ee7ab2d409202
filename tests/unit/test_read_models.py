"""The gateway's read models (adapters/sql/read_models.py) on SQLite and PostgreSQL: what the gateway serves
after a restart is what it served before, a store folded batch by batch (with restarts and records read
twice) equals one rebuilt from scratch, and each fold keeps the hub's promises (only facts of a topic's own
kind count, only the chaining stage's audit entries are shown, expired views go)."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.sql.database import Database
from adapters.sql.read_models import SqlReadModels, tailed_topics
from domain.audit_chain import entry_hash, entry_mac
from domain.log import Record
from domain.read_models import AuditFilter
from domain.scoped import HUB_SCOPE
from gateway.paging import partner_page, signal_page
from gateway.visibility import UNKNOWN, Visibility
from schemas.codec import WireCodec
from streams.audit_events import AUDIT_EVENT, audit_event
from streams.topics import Topics
from tests.factories import make_report
from tests.unit.test_stage_handlers import PERSON, MemoryHub
from tiphub.keys import KeyStore

CODEC = WireCodec()
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MAC = b"m" * 32
HUB_KEY = Ed25519PrivateKey.generate()


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'read-models.sqlite3'}"
    schema: Database = request.getfixturevalue("postgres_schema")
    return schema.url


@pytest.fixture
def views(url: str) -> Iterator[SqlReadModels]:
    store = SqlReadModels(url, Topics(), MAC, HUB_KEY.public_key())
    yield store
    store.close()


class Topic:
    """Records of one topic partition, numbered as Kafka would number them."""

    def __init__(self, name: str, partition: int = 0) -> None:
        self.name, self.partition, self.next = name, partition, 0

    def __call__(self, value: bytes | None) -> Record:
        self.next += 1
        return Record(self.name, self.partition, self.next - 1, None, value, (), 0)


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


def signal(signal_id: str, version: int, seq: int, report_ids: list[str], scope: str = "NZ-NIC") -> bytes:
    return CODEC.encode(
        "tiphub.Signal",
        {
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
        },
    )


def rejection(report_id: str, agency: str) -> bytes:
    value = {"report_id": report_id, "source_agency": agency, "reason": "schema", "field": "report_id"}
    value |= {"detail": "bad", "rejected_at": AT, "source_topic": "s", "source_partition": 0, "source_offset": 0}
    return CODEC.encode("tiphub.RejectedReport", value)


def test_a_record_not_of_its_topics_schema_or_not_the_hubs_is_skipped(views: SqlReadModels) -> None:
    topics = views.topics
    drafted = CODEC.encode("tiphub.SummaryEvent", summary_event("sum-1", "drafted"))
    summaries, triage = Topic(topics.summaries), Topic(topics.triage)
    views.apply([triage(drafted), summaries(b"\x00garbage"), summaries(None), Topic("other")(drafted)])
    assert views.summary("sum-1") is None and views.triage_events("sig-1") == []
    assert views.positions()[(topics.summaries, 0)] == 2  # what was skipped is read past all the same
    views.apply([summaries(drafted)])
    found = views.summary("sum-1")
    assert found is not None and found.status == "pending" and views.pending_summaries() == [found]
    assert views.folded("sum-1-drafted") and not views.folded("sum-1-released")


def test_a_fact_counts_only_on_the_topic_of_its_kind(views: SqlReadModels) -> None:
    """A retraction written to tip.erasures (which an operator may write) retracts nothing, and an erasure
    written to tip.retractions erases nobody."""
    topics = views.topics
    retracted = {"report_id": "r1", "source_agency": "NZ-POL", "reason": "ENTERED_IN_ERROR", "corrected_by": None}
    retracted |= {"signing_key_id": "k", "retracted_at": AT}
    erased = {"subject_key_id": "r2/s0", "report_id": "r2", "erased_at": AT, "reason": "court", "requested_by": "a"}
    erasures, retractions = Topic(topics.erasures), Topic(topics.retractions)
    views.apply([erasures(CODEC.encode("tiphub.ReportRetracted", retracted))])
    views.apply([retractions(CODEC.encode("tiphub.SubjectErased", erased))])
    assert not views.retracted("r1") and not views.erased()
    views.apply([retractions(CODEC.encode("tiphub.ReportRetracted", retracted))])
    views.apply([erasures(CODEC.encode("tiphub.SubjectErased", erased))])
    assert views.retracted("r1") and set(views.erased()) == {"r2/s0"}


def test_a_scope_feed_holds_a_version_back_until_the_versions_before_it_arrive(views: SqlReadModels) -> None:
    signals = Topic(views.topics.signals)
    second = signal("sig-1", 2, 2, ["r1", "r2"])
    views.apply([signals(second)])
    assert views.signal_versions("NZ-NIC", 0, 10) == [] and views.latest_signal("NZ-NIC", "sig-1") is None
    views.apply([signals(signal("sig-1", 1, 1, ["r1"])), signals(second)])  # read again: folded once
    assert [v["seq"] for v in views.signal_versions("NZ-NIC", 0, 10)] == [1, 2]
    assert [v["seq"] for v in views.signal_versions("NZ-NIC", 1, 10)] == [2]
    assert (views.latest_signal("NZ-NIC", "sig-1") or {}).get("version") == 2
    views.apply([signals(signal("sig-9", 1, 1, ["r9"], HUB_SCOPE))])
    assert views.signal_versions(HUB_SCOPE, 0, 10) == []  # the hub's own scope is served to nobody
    assert views.versions_held() == 2


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
def test_a_page_steps_over_what_the_caller_may_no_longer_see_and_ends_at_what_is_still_undecided(
    views: SqlReadModels, tmp_path: Path
) -> None:
    hub = MemoryHub(tmp_path / "hub")

    async def accept() -> list[bytes]:
        hub.start("verify", "accept")
        for _ in range(3):
            hub.submit(make_report(source_agency="NZ-CUSTOMS"))
        await hub.run()
        await hub.close()
        return [r.value for r in hub.log.records(hub.topics.accepted) if r.value]

    accepted = asyncio.run(accept())
    r1, r2, r3 = (CODEC.decode(value)[1]["report_id"] for value in accepted)
    topics = views.topics
    accepted_topic, decisions, signals = Topic(topics.accepted), Topic(topics.decisions), Topic(topics.signals)
    now = datetime.now(UTC)
    views.apply([accepted_topic(value) for value in accepted])
    views.apply([decisions(decision("NZ-NIC", r1)), decisions(decision("NZ-NIC", r2, now - timedelta(days=1)))])
    shown = (([r1], 1), ([r2], 2), ([r3], 3), ([r1], 4))
    views.apply([signals(signal(f"sig-{seq}", 1, seq, ids)) for ids, seq in shown])
    visibility = Visibility(views)

    items, position = signal_page(views, visibility, "NZ-NIC", 0, 10)
    assert [(shown["signal_id"], after) for shown, after in items] == [("sig-1", 1)]
    assert position == 2  # sig-2 stepped over (past retention); sig-3's decision is on its way: the page ends
    assert visibility.visible("NZ-NIC", r3) is UNKNOWN
    views.apply([decisions(decision("NZ-NIC", r3, allowed=False))])
    items, position = signal_page(views, visibility, "NZ-NIC", position, 10)
    assert [shown["signal_id"] for shown, _ in items] == ["sig-4"] and position == 4
    retracted = {"report_id": r1, "source_agency": "NZ-CUSTOMS", "reason": "ENTERED_IN_ERROR", "corrected_by": None}
    retracted |= {"signing_key_id": "k", "retracted_at": now}
    views.apply([Topic(topics.retractions)(CODEC.encode("tiphub.ReportRetracted", retracted))])
    assert signal_page(views, visibility, "NZ-NIC", 0, 10) == ([], 4)  # retracted: shown to nobody
    assert visibility.visible("NZ-CUSTOMS", r2) is not None  # an agency always sees its own reports


def triage_event(signal_id: str, state: str, n: int) -> bytes:
    event = {"event_id": f"t-{signal_id}-{n}", "signal_id": signal_id, "state": state, "actor": "analyst:a"}
    return CODEC.encode("tiphub.TriageEvent", event | {"actor_agency": "NZ-NIC", "at": AT, "note_sealed": None})


def test_a_pages_facts_read_at_once_answer_what_each_lookup_answers(views: SqlReadModels, tmp_path: Path) -> None:
    """Showing a page looks up every report's header, retraction and decision and every signal's triage: read
    for the page in a few queries, whatever its size, and answering exactly what one lookup at a time does."""
    hub = MemoryHub(tmp_path / "hub")

    async def accept() -> list[bytes]:
        hub.start("verify", "accept")
        for agency in ("NZ-CUSTOMS", "NZ-POLICE", "NZ-CUSTOMS", "NZ-DIA"):
            hub.submit(make_report(source_agency=agency))
        await hub.run()
        await hub.close()
        return [r.value for r in hub.log.records(hub.topics.accepted) if r.value]

    accepted = asyncio.run(accept())
    ids = [CODEC.decode(value)[1]["report_id"] for value in accepted]
    topics = views.topics
    now = datetime.now(UTC)
    views.apply([Topic(topics.accepted)(value) for value in accepted])
    decisions, triage = Topic(topics.decisions), Topic(topics.triage)
    views.apply([decisions(decision("NZ-NIC", ids[0])), decisions(decision("NZ-NIC", ids[2], allowed=False))])
    views.apply([decisions(decision("NZ-NIC", ids[3], now - timedelta(days=1))), decisions(decision("HSU-TH", ids[1]))])
    views.expire(now)
    retracted = {"report_id": ids[2], "source_agency": "NZ-CUSTOMS", "reason": "ENTERED_IN_ERROR", "corrected_by": None}
    retracted |= {"signing_key_id": "k", "retracted_at": now}
    views.apply([Topic(topics.retractions)(CODEC.encode("tiphub.ReportRetracted", retracted))])
    views.apply([triage(triage_event("sig-1", "reviewing", 1)), triage(triage_event("sig-1", "actioned", 2))])
    views.apply([triage(triage_event("sig-2", "dismissed", 1))])
    report_ids, signal_ids = [*ids, "r-unknown"], ["sig-1", "sig-2", "sig-3"]

    queries = 0
    counted = views.db.query

    def counting(*args: Any) -> Any:
        nonlocal queries
        queries += 1
        return counted(*args)

    views.db.query = counting  # type: ignore[method-assign]
    facts = views.page_facts("NZ-NIC", report_ids, signal_ids)
    assert queries == 4  # headers, retractions, decisions, triage
    views.db.query = counted  # type: ignore[method-assign]
    for report_id in report_ids:
        assert facts.header(report_id) == views.header(report_id)
        assert facts.retracted(report_id) == views.retracted(report_id)
        assert facts.decision("NZ-NIC", report_id) == views.decision("NZ-NIC", report_id)
    assert [facts.triage_state(s) for s in signal_ids] == [views.triage_state(s) for s in signal_ids]
    assert [facts.triage_state(s) for s in signal_ids] == ["actioned", "dismissed", "new"]
    assert facts.decision("NZ-NIC", ids[1]) is None  # HSU-TH's decision is not NZ-NIC's
    with pytest.raises(ValueError, match="NZ-NIC's, not HSU-TH's"):
        facts.decision("HSU-TH", ids[1])  # the facts are one scope's: never asked for another's


def decision(recipient: str, report_id: str, retain_until: datetime | None = None, allowed: bool = True) -> bytes:
    return CODEC.encode(
        "tiphub.SharingDecision",
        {
            "decision_id": f"{recipient}/{report_id}",
            "item_kind": "report",
            "item_id": report_id,
            "recipient": recipient,
            "allowed": allowed,
            "reason": "agreement" if allowed else "no_agreement",
            "explanation": "",
            "event_time": AT,
            "decided_at": AT,
            "agreement": None,
            "agreement_hash": None,
            "originator_agreement": None,
            "originator_agreement_hash": None,
            "retain_until": retain_until,
            "view_json": json.dumps({"report_id": report_id}) if allowed else None,
            "fields": [],
        },
    )


def test_retention_on_serving_drops_the_expired_view_and_keeps_the_answer_no(views: SqlReadModels) -> None:
    decisions = Topic(views.topics.decisions)
    now = datetime.now(UTC)
    views.apply([decisions(decision("NZ-NIC", "r1", now + timedelta(seconds=1))), decisions(decision("NZ-NIC", "r2"))])
    held = views.decision("NZ-NIC", "r1")
    assert held is not None and held.in_force(now) and held.view_json
    assert views.expire(now) == 0
    assert views.expire(now + timedelta(seconds=2)) == 1
    gone = views.decision("NZ-NIC", "r1")
    assert gone is not None and not gone.in_force(now) and gone.view_json is None  # decided: no, not "unknown"
    assert (views.decision("NZ-NIC", "r2") or gone).view_json  # no retention: kept
    assert views.decision_counts() == {("NZ-NIC", False): 1, ("NZ-NIC", True): 1}


def test_a_partner_is_paged_through_the_releases_and_withdrawals_of_its_own_summaries_only(
    views: SqlReadModels,
) -> None:
    summaries = Topic(views.topics.summaries)
    events = [
        summary_event("sum-1", "drafted"),
        summary_event("sum-2", "drafted", partner="OTHER"),
        summary_event("sum-1", "released"),
        summary_event("sum-2", "released", partner="OTHER"),
        summary_event("sum-1", "withdrawn"),
    ]
    views.apply([summaries(CODEC.encode("tiphub.SummaryEvent", event)) for event in events])
    cursor = [0] * views.topics.partitions
    first, cursor = partner_page(views, "HSU-TH", cursor, 1)
    assert first == [{"event": "released", "summary_id": "sum-1", "status": "withdrawn"}]
    rest, cursor = partner_page(views, "HSU-TH", cursor, 10)
    assert rest == [{"event": "withdrawn", "summary_id": "sum-1", "status": "withdrawn"}]
    assert partner_page(views, "HSU-TH", cursor, 10)[0] == []
    assert [s.summary_id for s in views.pending_summaries()] == []


def test_rejections_page_per_partition_shows_only_the_agencys_own_and_resumes(views: SqlReadModels) -> None:
    rejected = [Topic(views.topics.rejected, p) for p in range(views.topics.partitions)]
    records = [rejected[0](rejection("a1", "A")), rejected[1](rejection("b1", "B")), rejected[0](rejection("a2", "A"))]
    records += [rejected[1](rejection("a3", "A"))]
    views.apply(records)
    first, position = views.rejections("A", [0] * views.topics.partitions, 2)
    rest, position = views.rejections("A", position, 2)
    assert sorted(r["report_id"] for r in first + rest) == ["a1", "a2", "a3"] and len(first) == 2
    assert views.rejections("A", position, 2)[0] == []
    assert views.rejections("B", [0] * views.topics.partitions, 10)[0][0]["report_id"] == "b1"
    assert (views.rejection("A", "a2") or {}).get("report_id") == "a2" and views.rejection("B", "a2") is None


def audit_record(partition: int, seq: int, prev: bytes, event: bytes, mac: bytes | None) -> bytes:
    digest = entry_hash(prev, seq, event)
    value = {"partition": partition, "seq": seq, "prev_hash": prev, "hash": digest, "event": event}
    value |= {"checkpoint_signature": None, "signing_key_id": None, "written_at": AT, "mac": mac}
    return CODEC.encode("tiphub.AuditRecord", value)


def test_only_the_chaining_stages_audit_entries_are_shown_once_each_and_found_by_whom_they_name(
    views: SqlReadModels,
) -> None:
    topic = views.topics.audit
    audit = Topic(topic)
    prev = b"\x00" * 32
    entries = []
    for seq, (item, refs) in enumerate((("r1", ["k1"]), ("r2", []), ("r3", ["k2"]))):
        event = CODEC.encode(
            AUDIT_EVENT, audit_event("disclosure", "analyst:a", "shown", item_id=item, subject_refs=refs)
        )
        digest = entry_hash(prev, seq, event)
        entries.append(audit_record(0, seq, prev, event, entry_mac(MAC, topic, 0, seq, prev, digest)))
        prev = digest
    forged_event = CODEC.encode(AUDIT_EVENT, audit_event("disclosure", "analyst:a", "shown", item_id="r1"))
    forged = audit_record(0, 3, prev, forged_event, None)  # anyone may append; no MAC, no entry
    views.apply([audit(entries[0]), audit(entries[1]), audit(forged), audit(entries[1]), audit(entries[2])])

    page, position = views.audit_events([0] * views.topics.partitions, 2)
    rest, _ = views.audit_events(position, 10)
    assert [e["item_id"] for _, e in page + rest] == ["r1", "r2", "r3"]  # the copy of r2 and the forgery: left out
    assert [e["item_id"] for e in views.audit_mentioning({"k1"})] == ["r1"]
    assert [e["item_id"] for e in views.audit_mentioning({"k2", "r2"})] == ["r2", "r3"]


def test_a_restarted_store_resumes_where_it_stood_and_equals_one_rebuilt_from_scratch(url: str, tmp_path: Path) -> None:
    """The history of a whole hub (every stage run on the in-memory log) folded batch by batch, the store
    closed and opened again half way and some batches read twice, equals the same topics folded at once."""
    history = hub_history(tmp_path / "hub")
    keys = KeyStore(tmp_path / "hub")
    mac, public = keys.audit_mac_key(), keys.hub_signing_key().public_key()
    topics = history["topics"]
    records: list[Record] = history["records"]

    piecewise = SqlReadModels(url, topics, mac, public)
    half = len(records) // 2
    for start in range(0, half, 7):
        piecewise.apply(records[start : start + 7])
    piecewise.close()
    reopened = SqlReadModels(url, topics, mac, public)
    resumed_at = reopened.positions()
    assert resumed_at and sum(resumed_at.values()) >= half  # a restart resumes; it does not read history again
    for start in range(half - 10, len(records), 5):  # the ten before the restart are read again: no change
        reopened.apply(records[start : start + 5])

    scratch_url = f"sqlite:///{tmp_path / 'scratch.sqlite3'}"
    scratch = SqlReadModels(scratch_url, topics, mac, public)
    scratch.apply(records)
    assert dump(reopened) == dump(scratch)
    assert dump(scratch)["rm_signals"] and dump(scratch)["rm_audit"] and dump(scratch)["rm_rejections"]
    reopened.close()
    scratch.close()


def dump(views: SqlReadModels) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for table in SqlReadModels.TABLES:
        rows = views.db.query(f"SELECT * FROM {table}")
        out[table] = sorted(tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows)
    return out


def hub_history(home: Path) -> dict[str, Any]:
    """A small hub history: three agencies report one person (a signal), one id is reused (a rejection),
    a report is retracted and a person erased; every record of the topics the gateway tails."""
    hub = MemoryHub(home)

    async def run() -> None:
        hub.start()
        reports = [
            make_report(
                source_agency=agency, indicator_type=kind, elements=elements, subjects=[PERSON], organisations=[]
            )
            for agency, kind, elements in (
                ("NZ-CUSTOMS", "BORDER_CROSSING", ["ACT_TRANSPORT", "MEANS_DECEPTION"]),
                ("NZ-LABOUR", "LABOUR_INSPECTION", ["PURPOSE_FORCED_LABOUR"]),
                ("NGO-SHAKTI", "NGO_REFERRAL", ["PURPOSE_FORCED_LABOUR"]),
            )
        ]
        for report in reports:
            hub.submit(report)
        hub.submit(make_report(report_id=reports[0]["report_id"], source_agency="NZ-LABOUR"))
        await hub.run()
        hub.retract(reports[1]["report_id"], "NZ-LABOUR")
        accepted = hub.accepted()[reports[2]["report_id"]]
        hub.erase(accepted["subjects"][0]["subject_key_id"], reports[2]["report_id"])
        await hub.run()
        await hub.close()

    asyncio.run(run())
    topics = hub.topics
    tailed = tailed_topics(topics)
    records = sorted(
        (r for topic in tailed for r in hub.log.records(topic)),
        key=lambda r: (r.timestamp, r.topic, r.partition, r.offset),
    )
    return {"topics": topics, "records": records}


def test_a_store_of_another_format_is_rebuilt(url: str) -> None:
    """A store written by a release with another format starts empty (the tail reads every topic again)."""
    first = SqlReadModels(url, Topics("a."), MAC, HUB_KEY.public_key())
    first.apply([Topic(first.topics.rejected)(rejection("a1", "A"))])
    first.db.execute("UPDATE rm_meta SET value = '0' WHERE name = 'format'")
    first.close()
    again = SqlReadModels(url, Topics("a."), MAC, HUB_KEY.public_key())
    assert again.rejection("A", "a1") is None and again.positions() == {}
    again.close()


def test_a_store_of_an_older_layout_is_made_anew_and_folds_the_audit(url: str) -> None:
    """An upgrade whose format adds columns (4: the audit's fields) drops the old tables and makes them anew:
    emptying them would leave the old layout, and every audit record would fail to fold."""
    first = SqlReadModels(url, Topics("a."), MAC, HUB_KEY.public_key())
    first.apply([Topic(first.topics.rejected)(rejection("a1", "A"))])
    first.db.execute("DROP TABLE rm_audit")
    first.db.execute(
        "CREATE TABLE rm_audit (part INTEGER NOT NULL, off BIGINT NOT NULL, at BIGINT NOT NULL, seq BIGINT NOT NULL, "
        f"hash {first.db.blob()} NOT NULL, shown INTEGER NOT NULL, value {first.db.blob()} NOT NULL, "
        "PRIMARY KEY (part, off))"
    )  # the layout of format 3
    first.db.execute("UPDATE rm_meta SET value = '3' WHERE name = 'format'")
    first.close()
    again = SqlReadModels(url, Topics("a."), MAC, HUB_KEY.public_key())
    topic = again.topics.audit
    event = CODEC.encode(AUDIT_EVENT, audit_event("disclosure", "analyst:a", "shown", item_id="r1"))
    digest = entry_hash(b"\x00" * 32, 0, event)
    again.apply(
        [Topic(topic)(audit_record(0, 0, b"\x00" * 32, event, entry_mac(MAC, topic, 0, 0, b"\x00" * 32, digest)))]
    )
    assert [
        e["item_id"]
        for _, e in again.audit_events([0] * again.topics.partitions, 10, AuditFilter(kind="disclosure"))[0]
    ] == ["r1"]
    assert again.rejection("A", "a1") is None  # rebuilt from the topics
    again.close()


def test_a_store_on_postgresql_connects_again_after_its_connection_is_cut(postgres_schema: Database) -> None:
    """PostgreSQL restarted or the network cut: the statement that finds the connection gone fails, and the
    next one (the tail retries its batch) connects again instead of failing for as long as the gateway runs."""
    views = SqlReadModels(postgres_schema.url, Topics(), MAC, HUB_KEY.public_key())
    views.apply([Topic(views.topics.rejected)(rejection("a1", "A"))])
    pid = views.db.query("SELECT pg_backend_pid()")[0][0]
    postgres_schema.execute("SELECT pg_terminate_backend(?)", (pid,))
    with pytest.raises(Exception, match=r"terminat|closed|connection"):
        views.rejection("A", "a1")
    assert views.rejection("A", "a1") is not None
    views.close()


def test_a_page_reads_a_bounded_number_of_versions_however_many_the_caller_may_no_longer_see(
    views: SqlReadModels,
) -> None:
    """Thousands of versions the scope may no longer see (retracted, past retention) cost one page a bounded
    read: it ends early with the position after what it read, and the next page goes on from there."""
    signals = Topic(views.topics.signals)
    views.apply([signals(signal(f"sig-{seq}", 1, seq, [f"r{seq}"])) for seq in range(1, 2601)])

    class HidesAllButTheLast:
        reads = 0

        def page_lookups(self, scope: str, versions: list[dict[str, Any]]) -> None:
            return None

        def render(self, scope: str, version: dict[str, Any], now: datetime, lookups: None) -> dict[str, Any] | None:
            self.reads += 1
            return {"seq": version["seq"]} if version["seq"] == 2600 else None

    hidden = HidesAllButTheLast()
    items, position = signal_page(views, hidden, "NZ-NIC", 0, 10)  # type: ignore[arg-type]
    assert items == [] and position == 2000 and hidden.reads == 2000
    items, position = signal_page(views, hidden, "NZ-NIC", position, 10)  # type: ignore[arg-type]
    assert [item for item, _ in items] == [{"seq": 2600}] and position == 2600


def test_an_auditor_filters_the_trail_by_kind_actor_recipient_outcome_item_and_time(views: SqlReadModels) -> None:
    topic = views.topics.audit
    prev, entries = b"\x00" * 32, []
    written = [
        ("disclosure", "analyst:Ana", "NZ-NIC", "shown", "sig-1"),
        ("denial", "anonymous", None, "denied", None),
        ("disclosure", "liaison:Somchai", "HSU-TH", "shown", "summaries"),
        ("decision", "decide_sharing", "HSU-TH", "shared", "r1"),
        ("disclosure", "analyst:Rangi", "NZ-POLICE", "shown", "sig-2"),
    ]
    for seq, (kind, actor, recipient, outcome, item) in enumerate(written):
        event = CODEC.encode(AUDIT_EVENT, audit_event(kind, actor, outcome, item_id=item, recipient=recipient))
        digest = entry_hash(prev, seq, event)
        entries.append(audit_record(0, seq, prev, event, entry_mac(MAC, topic, 0, seq, prev, digest)))
        prev = digest
    partition = Topic(topic)
    views.apply([partition(e) for e in entries])
    start = [0] * views.topics.partitions

    def items(**where: Any) -> list[str | None]:
        return [e["item_id"] for _, e in views.audit_events(start, 100, AuditFilter(**where))[0]]

    assert items() == ["sig-1", None, "summaries", "r1", "sig-2"]
    assert items(kind="disclosure") == ["sig-1", "summaries", "sig-2"]
    assert items(actor="analyst:") == ["sig-1", "sig-2"]  # by its beginning
    assert items(kind="disclosure", recipient="HSU-TH") == ["summaries"]
    assert items(outcome="shared", item="r1") == ["r1"]
    assert items(since=datetime.now(UTC) + timedelta(hours=1)) == []
    # Paged under a filter, the cursor goes on under it.
    page, position = views.audit_events(start, 1, AuditFilter(actor="analyst:"))
    rest, _ = views.audit_events(position, 10, AuditFilter(actor="analyst:"))
    assert [e["item_id"] for _, e in page + rest] == ["sig-1", "sig-2"]


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
def test_a_filtered_audit_page_costs_its_page_not_the_trail_before_it(views: SqlReadModels) -> None:
    """A recipient's one denial after 3,000 disclosures to others: the page that finds it reads by index, as a
    page of the trail does, instead of every entry before it (measured in SQLite's virtual-machine steps)."""
    topic = views.topics.audit
    prev, entries = b"\x00" * 32, []
    for seq in range(3001):
        kind, recipient = ("denial", "HSU-TH") if seq == 3000 else ("disclosure", "NZ-POLICE")
        event = CODEC.encode(AUDIT_EVENT, audit_event(kind, "analyst:Ana", "shown", item_id="s", recipient=recipient))
        digest = entry_hash(prev, seq, event)
        entries.append(audit_record(0, seq, prev, event, entry_mac(MAC, topic, 0, seq, prev, digest)))
        prev = digest
    partition = Topic(topic)
    views.apply([partition(e) for e in entries])
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    def cost(where: AuditFilter) -> tuple[int, list[str]]:
        nonlocal steps
        steps = 0
        connection = views.db._connect()
        connection.set_progress_handler(count, 100)
        try:
            page = views.audit_events([0] * views.topics.partitions, 1, where)[0]
        finally:
            connection.set_progress_handler(None, 100)
        return steps, [e["kind"] for _, e in page]

    plain, shown = cost(AuditFilter())
    assert shown == ["disclosure"]
    filters = [AuditFilter(kind="denial"), AuditFilter(recipient="HSU-TH"), AuditFilter(outcome="shown", kind="denial")]
    for where in filters:
        filtered, shown = cost(where)
        assert shown == ["denial"] and filtered <= 3 * plain + 10, (where, filtered, plain)


def test_an_agencys_submissions_come_in_an_order_no_other_agencys_report_moves(
    views: SqlReadModels, tmp_path: Path
) -> None:
    """By when observed, then by id: the same list and pages whether another agency's reports sit before them in
    the log or not (the log's order would tell an agency that someone else's report landed in a partition)."""
    hub = MemoryHub(tmp_path / "hub")
    days = [3, 1, 2, 1]

    async def accept() -> list[bytes]:
        hub.start("verify", "accept")
        for day in days:
            hub.submit(make_report(source_agency="NZ-CUSTOMS", observed_at=f"2026-0{day}-01T00:00:00Z"))
            hub.submit(make_report(source_agency="NZ-LABOUR", observed_at="2026-01-01T00:00:00Z"))
        await hub.run()
        await hub.close()
        return [r.value for r in hub.log.records(hub.topics.accepted) if r.value]

    accepted = asyncio.run(accept())
    mine = [v for v in accepted if CODEC.decode(v)[1]["source_agency"] == "NZ-CUSTOMS"]
    listed = []
    for records in (accepted, mine):  # with another agency's reports among them in the log, and without
        topic = Topic(views.topics.accepted)
        views.wipe()
        views.apply([topic(value) for value in records])
        page, last = views.submissions("NZ-CUSTOMS", None, 3)
        rest, end = views.submissions("NZ-CUSTOMS", last, 3)
        assert views.submissions("NZ-CUSTOMS", end, 3)[0] == []
        listed.append([(r["observed_at"].month, r["report_id"]) for r in page + rest])
    assert listed[0] == listed[1] == sorted(listed[0]) and [m for m, _ in listed[0]] == sorted(days)
    assert views.submissions("NZ-LABOUR", None, 10)[0] == []  # the last fold held NZ-CUSTOMS's only


def test_a_nul_in_a_string_a_writer_chose_does_not_stop_the_fold(views: SqlReadModels) -> None:
    """Whoever may write tip.reports.submitted chooses the report id a rejection records (the Kafka key, or the
    envelope's claim) and the agency an unverified one claims. PostgreSQL refuses text with a NUL, and the fold
    took that refusal for the store being away: it read the batch again for ever, and the gateway served
    nothing newer (a denial of service by one write). Now the record is folded (its indexed text with U+FFFD for
    the NUL on PostgreSQL), the agency finds it by the id it sent, and the records behind it are folded too."""
    rejected = Topic(views.topics.rejected)
    views.apply([rejected(rejection("bad\x00id", "A")), rejected(rejection("a2", "A"))])
    page, _ = views.rejections("A", [0] * views.topics.partitions, 10)
    assert [r["report_id"] for r in page] == ["bad\x00id", "a2"]  # as the record holds it
    assert (views.rejection("A", "bad\x00id") or {}).get("report_id") == "bad\x00id"
    assert views.positions()[(views.topics.rejected, 0)] == 2


def test_a_value_too_long_for_an_index_does_not_stop_the_fold(views: SqlReadModels) -> None:
    """PostgreSQL refuses an index entry over 2,704 bytes with an error of the class a lost connection has; the
    fold took it for the store being away and read the batch again for ever. The record is stepped over there
    (SQLite takes it), and what comes behind it is folded."""
    rejected = Topic(views.topics.rejected)
    incompressible = base64.b64encode(random.Random(3).randbytes(4500)).decode()  # PostgreSQL compresses "xxx..."
    views.apply([rejected(rejection(incompressible, "A")), rejected(rejection("a2", "A"))])
    page, _ = views.rejections("A", [0] * views.topics.partitions, 10)
    assert "a2" in [r["report_id"] for r in page]
    assert views.positions()[(views.topics.rejected, 0)] == 2
