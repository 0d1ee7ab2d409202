"""Each stream stage as a worker runs it, on the in-memory event log: built from its entry in
streams/stages.py, driven by the in-memory transactional runner, restarted and made to abort as a worker
is. Every test states what a user of the hub would notice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.memory.log import MemoryLog, MemoryProcessor
from adapters.sql.anchors import AnchorStore
from adapters.sql.database import Database
from domain.audit_chain import entry_hash
from domain.log import BatchHandler, Output
from domain.signing import agency_key_id
from policies.engine import ERASED
from policies.loader import AGREEMENTS_DIR, load_directory
from producers.publisher import seal_retraction
from schemas.codec import WireCodec
from schemas.envelope import RETRACTION
from streams.agreements import LOADED, loaded_event
from streams.audit_events import AUDIT_EVENT, audit_event
from streams.audit_verify import verify_records
from streams.erasure import ERASED_FACT
from streams.stage_context import StageContext, build_handler
from streams.stages import STAGES, group_id
from streams.topics import report_partition
from tests.envelopes import EnvelopeKit, hours_ago
from tests.factories import make_report
from tiphub.keys import KeyStore
from tiphub.runtime import init_keys, topics_for
from tiphub.settings import Settings
from tiphub.worker import SettingsProvisions

PARTITIONS = 3
CODEC = WireCodec()
PERSON = {
    "role": "SUSPECTED_VICTIM",
    "name": "Dara Meas",
    "date_of_birth": "2001-03-03",
    "nationality": "KH",
    "identifiers": [{"kind": "PASSPORT", "value": "N99887766", "issuer": "KH"}],
}


class Declared:
    """A stage's handler that may write only the topics its entry in streams/stages.py names."""

    def __init__(self, handler: BatchHandler, allowed: set[str]) -> None:
        self.handler = handler
        self.allowed = allowed

    async def handle(self, records: Sequence[Any]) -> list[Output]:
        outputs = await self.handler.handle(records)
        assert {o.topic for o in outputs} <= self.allowed, {o.topic for o in outputs} - self.allowed
        return outputs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handler, name)


class MemoryHub:
    """A hub's keys, topics and stages, on the in-memory log."""

    def __init__(self, home: Path) -> None:
        self.settings = Settings(home=home, topic_prefix="u.", partitions=PARTITIONS)
        init_keys(self.settings)
        self.topics = topics_for(self.settings)
        self.received_ms: int | None = None  # when the broker appends (None: now)
        self.log = MemoryLog(self.topics.specs(), clock_ms=self._clock)
        self.kit = EnvelopeKit(home)
        self.runners: dict[str, MemoryProcessor] = {}
        now = datetime.now(UTC)
        for agreement in load_directory(AGREEMENTS_DIR):  # what a worker publishes before its stages start
            event = loaded_event(agreement, now)
            self.log.append(Output(self.topics.agreements, event["code"].encode(), CODEC.encode(LOADED, event)))

    def _clock(self) -> int:
        return self.received_ms if self.received_ms is not None else int(datetime.now(UTC).timestamp() * 1000)

    def start(self, *names: str) -> None:
        """Start these stages (all of them by default), each as a worker's processor."""
        for stage in STAGES:
            if stage.name in (names or [s.name for s in STAGES]):
                group = group_id(self.settings, stage.name)
                context = StageContext(self.topics, self.log, group, SettingsProvisions(self.settings))
                handler = build_handler(stage, context)
                self.runners[stage.name] = self.log.processor(
                    group_id=group,
                    instance_id="0",
                    input_topic=stage.input_topic(self.topics),
                    also_from=stage.also_from(self.topics),
                    handler=Declared(handler, set(stage.outputs(self.topics))),
                )

    async def restart(self, name: str) -> None:
        """The stage's worker stops and a new one starts: its state is rebuilt from the topics."""
        await self.runners.pop(name).close()
        self.start(name)

    async def run(self) -> None:
        """Run the started stages until none has anything left to process."""
        while True:
            processed = 0
            for stage in STAGES:
                if stage.name in self.runners:
                    processed += await self.runners[stage.name].drain()
            if not processed:
                return

    async def close(self) -> None:
        for runner in self.runners.values():
            await runner.close()

    def submit(self, report: dict[str, Any], **envelope: Any) -> str:
        key, value = self.kit.wire(self.kit.envelope(report, **envelope))
        self.log.append(Output(self.topics.submitted, key, value, partition=0))
        return str(report["report_id"])

    def retract(self, report_id: str, agency: str) -> None:
        retraction = seal_retraction(
            report_id,
            agency=agency,
            reason="ENTERED_IN_ERROR",
            corrected_by=None,
            agency_key=self.kit.store.agency_key(agency),
        )
        self.log.append(Output(self.topics.submitted, report_id.encode(), CODEC.encode(RETRACTION, retraction)))

    def erase(self, subject_key_id: str, report_id: str) -> None:
        """The fact `tiphub erase` writes (the vault's keys aside)."""
        fact = {
            "subject_key_id": subject_key_id,
            "report_id": report_id,
            "tokens": [],
            "erased_at": datetime.now(UTC),
            "reason": "court order",
            "requested_by": "operator",
        }
        self.log.append(Output(self.topics.erasures, subject_key_id.encode(), CODEC.encode(ERASED_FACT, fact)))

    def values(self, topic: str) -> list[dict[str, Any]]:
        return self.log.values(topic)

    def accepted(self) -> dict[str, dict[str, Any]]:
        return {r["report_id"]: r for r in self.values(self.topics.accepted)}

    def rejections(self) -> list[tuple[str, str | None, str]]:
        return [(r["reason"], r["source_agency"], r["report_id"]) for r in self.values(self.topics.rejected)]

    def audit_events(self) -> list[dict[str, Any]]:
        """The audit events the stages wrote, before the chaining stage links them."""
        return self.values(self.topics.audit_intake)


def on_memory_hub(scenario: Callable[[MemoryHub], Awaitable[None]]) -> Callable[[Path], None]:
    """A test on a fresh MemoryHub, in an event loop of its own."""

    def test(tmp_path: Path) -> None:
        hub = MemoryHub(tmp_path)

        async def main() -> None:
            try:
                await scenario(hub)
            finally:
                await hub.close()

        asyncio.run(main())

    test.__name__, test.__doc__ = scenario.__name__, scenario.__doc__
    return test


# -- verify ----------------------------------------------------------------------------------------------
@on_memory_hub
async def test_verify_routes_a_signed_report_to_its_ids_partition_and_refuses_and_audits_an_impersonation(
    hub: MemoryHub,
) -> None:
    hub.start("verify")
    genuine = hub.submit(make_report(source_agency="NZ-CUSTOMS"))
    police = hub.kit.store.agency_key("NZ-POLICE")
    claims_customs = hub.kit.envelope(make_report(source_agency="NZ-CUSTOMS"))
    claims_customs["signing_key_id"] = agency_key_id("NZ-POLICE", police.public_key())
    impostor = claims_customs["report_id"]
    hub.log.append(Output(hub.topics.submitted, *hub.kit.wire(hub.kit.resign(claims_customs, police)), partition=1))

    await hub.run()

    [verified] = hub.log.records(hub.topics.verified)
    assert verified.key == genuine.encode()
    assert verified.partition == report_partition(genuine, PARTITIONS)  # where its accept instance reads it
    assert hub.rejections() == [("key_agency_mismatch", None, impostor)]  # attributed to nobody: unverified
    [denial] = hub.audit_events()
    assert (denial["kind"], denial["actor"], denial["item_id"]) == ("denial", "agency:unverified", impostor)
    assert json.loads(denial["detail"])["claimed_agency"] == "NZ-CUSTOMS"


@on_memory_hub
async def test_verify_judges_a_backlog_by_when_the_broker_received_it(hub: MemoryHub) -> None:
    """tip.reports.submitted is stamped by the broker: a report that waited there for hours is not stale."""
    hub.start("verify")
    hub.received_ms = int(hours_ago(3).timestamp() * 1000)
    waited = hub.submit(make_report(), signed_at=hours_ago(3))
    hub.received_ms = None
    late = hub.submit(make_report(), signed_at=hours_ago(3))  # signed 3 h ago, received now

    await hub.run()

    assert [r.key for r in hub.log.records(hub.topics.verified)] == [waited.encode()]
    assert [(reason, report_id) for reason, _, report_id in hub.rejections()] == [("stale_envelope", late)]


# -- accept ---------------------------------------------------------------------------------------------
@on_memory_hub
async def test_a_second_report_with_a_taken_id_is_refused_and_stays_refused_after_a_restart(hub: MemoryHub) -> None:
    hub.start("verify", "accept")
    first = make_report(source_agency="NZ-CUSTOMS")
    hub.submit(first)
    hub.submit(make_report(report_id=first["report_id"], source_agency="NZ-LABOUR", subjects=[PERSON]))
    await hub.run()

    await hub.restart("accept")  # the ids already accepted are read back from tip.reports.accepted
    hub.submit(make_report(report_id=first["report_id"], source_agency="NZ-CUSTOMS"))
    await hub.run()

    accepted = hub.accepted()
    assert list(accepted) == [first["report_id"]] and accepted[first["report_id"]]["source_agency"] == "NZ-CUSTOMS"
    assert hub.rejections() == [
        ("report_id_taken", "NZ-LABOUR", first["report_id"]),
        ("duplicate_report_id", "NZ-CUSTOMS", first["report_id"]),
    ]
    # Reaching for another agency's report is audited; re-sending one's own is not.
    assert [(e["kind"], e["actor"]) for e in hub.audit_events()] == [("denial", "agency:NZ-LABOUR")]


@on_memory_hub
async def test_only_the_agency_that_reported_it_can_retract_a_report(hub: MemoryHub) -> None:
    hub.start("verify", "accept")
    report_id = hub.submit(make_report(source_agency="NZ-CUSTOMS"))
    await hub.run()
    hub.retract(report_id, "NZ-LABOUR")
    await hub.run()
    assert hub.values(hub.topics.retractions) == []
    assert hub.rejections() == [("retraction_wrong_agency", "NZ-LABOUR", report_id)]

    hub.retract(report_id, "NZ-CUSTOMS")
    await hub.run()
    [retraction] = hub.values(hub.topics.retractions)
    assert (retraction["report_id"], retraction["source_agency"]) == (report_id, "NZ-CUSTOMS")


@on_memory_hub
async def test_an_aborted_accept_batch_accepts_each_report_once(hub: MemoryHub) -> None:
    """A batch whose transaction fails after its outputs were sent is read again: nothing twice."""
    hub.start("verify", "accept")
    ids = [hub.submit(make_report()) for _ in range(4)]
    hub.runners["accept"].fail_next_batches(2)
    await hub.run()
    assert sorted(hub.accepted()) == sorted(ids)
    assert len(hub.log.records(hub.topics.accepted)) == 4 and hub.rejections() == []
    assert hub.runners["accept"].aborts == 2


# -- decide ---------------------------------------------------------------------------------------------
@on_memory_hub
async def test_an_erased_person_is_shown_as_erased_in_every_later_decision(hub: MemoryHub) -> None:
    hub.start("verify", "accept")
    erased_id = hub.submit(make_report(subjects=[PERSON]))
    kept_id = hub.submit(make_report(subjects=[{**PERSON, "name": "Sokha Chan"}]))
    await hub.run()
    subject_key = hub.accepted()[erased_id]["subjects"][0]["subject_key_id"]
    hub.erase(subject_key, erased_id)

    hub.start("decide")
    await hub.run()

    views = {
        d["item_id"]: json.loads(d["view_json"])
        for d in hub.values(hub.topics.decisions)
        if d["recipient"] == "NZ-NIC" and d["allowed"]
    }
    assert views[erased_id]["subjects"][0]["name"] == ERASED
    assert views[kept_id]["subjects"][0]["name"]["ref"] == "subjects[0].name"  # sealed, for NZ-NIC to open
    # Each decision is audited, exactly once.
    decisions = hub.values(hub.topics.decisions)
    audited = [e for e in hub.audit_events() if e["kind"] == "decision"]
    assert sorted(e["item_id"] for e in audited) == sorted(d["item_id"] for d in decisions)


@on_memory_hub
async def test_a_retracted_report_is_shared_with_nobody_any_more(hub: MemoryHub) -> None:
    hub.start("verify", "accept", "decide")
    report_id = hub.submit(make_report(source_agency="NZ-CUSTOMS"))
    await hub.run()
    assert any(d["allowed"] for d in hub.values(hub.topics.decisions) if d["item_id"] == report_id)

    hub.retract(report_id, "NZ-CUSTOMS")
    await hub.run()

    latest = {d["recipient"]: d for d in hub.values(hub.topics.decisions) if d["item_id"] == report_id}
    assert latest and all(d["reason"] == "retracted" and not d["allowed"] for d in latest.values())


@on_memory_hub
async def test_a_retraction_written_to_the_erasures_topic_withdraws_nothing(hub: MemoryHub) -> None:
    """Whoever may write tip.erasures (an operator's credential) cannot retract an agency's report there:
    a fact counts only on the topic of its kind, so the report, arriving after it, is shared as agreed."""
    hub.start("verify", "accept", "decide")
    report = make_report(source_agency="NZ-CUSTOMS")
    forged = {"report_id": report["report_id"], "source_agency": "NZ-CUSTOMS", "reason": "ENTERED_IN_ERROR"}
    forged |= {"corrected_by": None, "signing_key_id": "x", "retracted_at": datetime.now(UTC)}
    hub.log.append(Output(hub.topics.erasures, b"x", CODEC.encode("tiphub.ReportRetracted", forged)))
    hub.submit(report)
    await hub.run()

    decisions = [d for d in hub.values(hub.topics.decisions) if d["item_id"] == report["report_id"]]
    assert decisions and not any(d["reason"] == "retracted" for d in decisions)
    assert any(d["allowed"] for d in decisions)


# -- link -----------------------------------------------------------------------------------------------
@on_memory_hub
async def test_two_reports_of_one_passport_are_linked_but_an_erased_person_never_is(hub: MemoryHub) -> None:
    hub.start("verify", "accept", "link")
    hub.submit(make_report(source_agency="NZ-CUSTOMS", subjects=[PERSON]))
    hub.submit(make_report(source_agency="NZ-LABOUR", indicator_type="LABOUR_INSPECTION", subjects=[PERSON]))
    await hub.run()
    assert sum(len(batch["links"]) for batch in hub.values(hub.topics.links)) >= 1

    later = hub.submit(make_report(source_agency="NZ-POLICE", subjects=[PERSON]))
    await hub.run()
    linked_later = {link["b"] for batch in hub.values(hub.topics.links) for link in batch["links"]}
    erased = hub.accepted()[later]["subjects"][0]["subject_key_id"]
    hub.erase(erased, later)
    await hub.restart("link")  # its index is rebuilt from tip.sightings, without the erased person
    links_before = hub.values(hub.topics.links)
    hub.submit(make_report(source_agency="NZ-IMMIGRATION", indicator_type="VISA_APPLICATION_FLAG", subjects=[PERSON]))
    await hub.run()

    new_links = [link for batch in hub.values(hub.topics.links)[len(links_before) :] for link in batch["links"]]
    assert new_links, "the newcomer was linked to the people not erased"
    people = {occ for link in new_links for occ in (link["a"], link["b"])}
    assert not any(occ.startswith(later) for occ in people), "an erased person was linked again"
    assert linked_later  # the erased person had been linked before the erasure


# -- correlate ------------------------------------------------------------------------------------------
def hub_signals(hub: MemoryHub) -> dict[str, dict[str, Any]]:
    """The latest version of each of the hub's own signals."""
    latest: dict[str, dict[str, Any]] = {}
    for signal in hub.values(hub.topics.signals):
        if signal["scope"] == "hub" and signal["version"] > latest.get(signal["signal_id"], {"version": 0})["version"]:
            latest[signal["signal_id"]] = signal
    return latest


def current(signals: dict[str, dict[str, Any]], signal_id: str) -> dict[str, Any]:
    while signals[signal_id]["status"] == "merged":
        signal_id = signals[signal_id]["merged_into"]
    return signals[signal_id]


@on_memory_hub
async def test_a_retraction_takes_the_report_out_of_its_signal(hub: MemoryHub) -> None:
    hub.start()
    reports = [
        make_report(source_agency=agency, indicator_type=kind, elements=elements, subjects=[PERSON], organisations=[])
        for agency, kind, elements in (
            ("NZ-CUSTOMS", "BORDER_CROSSING", ["ACT_TRANSPORT", "MEANS_DECEPTION"]),
            ("NZ-LABOUR", "LABOUR_INSPECTION", ["PURPOSE_FORCED_LABOUR"]),
            ("NGO-SHAKTI", "NGO_REFERRAL", ["PURPOSE_FORCED_LABOUR"]),
        )
    ]
    for report in reports:
        hub.submit(report)
    await hub.run()
    [signal] = [s for s in hub_signals(hub).values() if s["requirement_id"] == "IR-1"]
    assert sorted(signal["report_ids"]) == sorted(r["report_id"] for r in reports)

    labour = reports[1]["report_id"]
    hub.retract(labour, "NZ-LABOUR")
    await hub.run()

    after = current(hub_signals(hub), signal["signal_id"])
    assert labour not in after["report_ids"] and len(after["report_ids"]) == 2
    assert after["status"] == "open"  # still two agencies, act + means + purpose


@on_memory_hub
async def test_the_union_restarted_emits_no_signal_version_twice(hub: MemoryHub) -> None:
    hub.start()
    for agency in ("NZ-CUSTOMS", "NGO-SHAKTI"):
        hub.submit(make_report(source_agency=agency, elements=["ACT_TRANSPORT", "MEANS_DECEPTION"], subjects=[PERSON]))
    await hub.run()
    await hub.restart("correlate")
    hub.runners["correlate"].fail_next_batches(1)  # and its first batch after the restart aborts
    hub.submit(make_report(source_agency="NZ-LABOUR", elements=["PURPOSE_FORCED_LABOUR"], subjects=[PERSON]))
    await hub.run()

    versions: dict[tuple[str, str], list[int]] = {}
    for signal in hub.values(hub.topics.signals):
        versions.setdefault((signal["scope"], signal["signal_id"]), []).append(signal["version"])
    assert versions and all(v == list(range(1, len(v) + 1)) for v in versions.values()), versions
    assert any(s["requirement_id"] == "IR-1" and s["status"] == "open" for s in hub_signals(hub).values())


# -- chain_audit ----------------------------------------------------------------------------------------
def forge_audit_entry(hub: MemoryHub, partition: int) -> int:
    """What anyone with write access to tip.audit can append: an entry linking to the last one, without a MAC."""
    records = [r for r in hub.log.records(hub.topics.audit) if r.partition == partition]
    last = [CODEC.decode(r.value)[1] for r in records if CODEC.decode(r.value)[1]["event"] is not None][-1]
    event = CODEC.encode(AUDIT_EVENT, audit_event("decision", "decide_sharing", "shared", item_id="forged"))
    seq = last["seq"] + 1
    forged = {**last, "seq": seq, "prev_hash": last["hash"], "hash": entry_hash(last["hash"], seq, event)}
    value = CODEC.encode("tiphub.AuditRecord", {**forged, "event": event, "mac": None, "written_at": datetime.now(UTC)})
    [record] = hub.log.append(Output(hub.topics.audit, None, value, partition=partition))
    return record.offset


@on_memory_hub
async def test_a_forged_audit_entry_is_reported_in_the_chain_and_never_chained_onto(hub: MemoryHub) -> None:
    hub.start("audit")
    for n in range(3):
        event = audit_event("decision", "decide_sharing", "shared", item_id=f"report-{n}", recipient="NZ-NIC")
        hub.log.append(Output(hub.topics.audit_intake, None, CODEC.encode(AUDIT_EVENT, event), partition=0))
    await hub.run()
    forged = forge_audit_entry(hub, 0)

    await hub.restart("audit")  # the chain's head is rebuilt from the partition's tail: the forgery is there
    event = audit_event("decision", "decide_sharing", "shared", item_id="report-3", recipient="NZ-NIC")
    hub.log.append(Output(hub.topics.audit_intake, None, CODEC.encode(AUDIT_EVENT, event), partition=0))
    await hub.run()

    entries = [(r.offset, CODEC.decode(r.value)[1]) for r in hub.log.records(hub.topics.audit)]
    chained = [CODEC.decode(e["event"])[1] for offset, e in entries if e["event"] is not None and offset != forged]
    assert [e["item_id"] for e in chained if e["kind"] == "decision"] == [f"report-{n}" for n in range(4)]
    [integrity] = [e for e in chained if e["kind"] == "integrity"]
    assert integrity["outcome"] == "foreign_records"
    assert json.loads(integrity["detail"])["records"] == [{"offset": forged, "reason": "an entry without a MAC"}]

    keys = KeyStore(hub.settings.home)
    raw = {0: [(r.offset, r.value) for r in hub.log.records(hub.topics.audit) if r.partition == 0]}
    anchors = AnchorStore(Database(hub.settings.audit_anchor_database)).all(hub.topics.audit)
    report = verify_records(hub.topics.audit, raw, anchors, keys.hub_signing_key().public_key(), keys.audit_mac_key())
    [partition] = report.partitions
    assert partition.foreign_offsets == [forged] and partition.broken is None  # the chain itself is whole
    assert partition.entries == 5 and partition.anchor_seq == partition.last_seq  # 4 decisions, 1 integrity report
