"""A hostile agency on the real broker: it holds only its own signing key and write access to
tip.reports.submitted, and chooses the partitions it writes to. Whatever it sends, nothing of
another agency's changes, and every attempt to act for another is rejected and audited."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from adapters.kafka.broker_quirks import detect_kind
from adapters.kafka.embedded import admin_client, broker_stamps
from adapters.kafka.producer import new_producer
from adapters.sql.database import Database
from adapters.sql.registry import KeyRegistry
from adapters.sql.vault import SqlKeyVault
from domain import crypto
from domain.linkage import Linker
from domain.signing import agency_key_id
from producers.publisher import seal_retraction
from schemas.codec import WireCodec
from schemas.convert import report_from_json
from schemas.envelope import RETRACTION
from tests.envelopes import EnvelopeKit
from tests.factories import bridge_of, make_report, person_as_recorded
from tests.harness import PARTITIONS, Hub
from tiphub.keys import KeyStore

pytestmark = pytest.mark.integration

VICTIM = {
    "role": "SUSPECTED_VICTIM",
    "name": "Malai Suksawat",
    "date_of_birth": "2009-01-17",
    "sex": "F",
    "nationality": "TH",
    "identifiers": [{"kind": "PASSPORT", "value": "AA1234567", "issuer": "TH"}],
}
DECOY = {
    "role": "WITNESS",
    "name": "Nobody Inparticular",
    "date_of_birth": "1980-05-05",
    "identifiers": [{"kind": "PASSPORT", "value": "ZZ7654321", "issuer": "NZ"}],
}


def audited_denials(hub: Hub) -> list[dict]:
    codec = WireCodec()
    events = [codec.decode(r["event"])[1] for r in hub.decoded(hub.topics.audit) if r["event"]]
    return [e for e in events if e["kind"] == "denial"]


def revoke_labour_key(hub: Hub) -> float:
    """NZ-LABOUR's signing key revoked now (it leaked): returns the revocation time."""
    revoked_at = time.time()
    labour = KeyStore(hub.home).agency_key("NZ-LABOUR")
    assert KeyRegistry(Database(hub.settings.registry_database)).revoke(
        agency_key_id("NZ-LABOUR", labour.public_key()), at=revoked_at
    )
    return revoked_at


def backdated_after_revocation(
    hub: Hub, backdated: dict[str, Any], old: dict[str, Any]
) -> list[tuple[bytes, bytes, datetime]]:
    """NZ-LABOUR's key is revoked now. `backdated` is signed after that, claiming ten minutes before the
    revocation; `old` claims it was signed three days ago. Each as (key, value, claimed time)."""
    kit = EnvelopeKit(hub.home)
    revoked_at = revoke_labour_key(hub)
    before = datetime.fromtimestamp(revoked_at - 600, UTC)
    days_ago = datetime.fromtimestamp(revoked_at - 3 * 86400, UTC)
    return [
        (*kit.wire(kit.envelope(backdated, signed_at=before)), before),
        (*kit.wire(kit.envelope(old, signed_at=days_ago)), days_ago),
    ]


def test_an_agency_cannot_take_over_another_agencys_report_on_any_partition(hub: Hub) -> None:
    kit = EnvelopeKit(hub.home)
    red = make_report(
        source_agency="NZ-POLICE",
        tlp="RED",
        indicator_type="HOTLINE_TIP",
        elements=["ACT_RECRUITMENT", "MEANS_DEBT_BONDAGE", "PURPOSE_SEXUAL_EXPLOITATION"],
        subjects=[VICTIM],
        narrative="Malai was moved from Bangkok on a debt of 8000 dollars.",
    )
    report_id = red["report_id"]
    original = kit.wire(kit.envelope(red))
    hub.send_raw([(*original, 0)])
    hub.start_worker(TIPHUB_MAX_VALUE_BYTES=str(256 << 10))
    [accepted], _ = hub.wait_for_outcomes(1)

    # NZ-LABOUR, with its own key only: a harmless report under the same id, to every partition;
    # a retraction of NZ-POLICE's report; and NZ-POLICE's own envelope replayed byte for byte.
    labour = kit.store.agency_key("NZ-LABOUR")
    takeovers = [
        (*kit.wire(kit.envelope(make_report(report_id=report_id, source_agency="NZ-LABOUR", subjects=[DECOY]))), p)
        for p in range(PARTITIONS)
    ]
    retraction = seal_retraction(
        report_id, agency="NZ-LABOUR", reason="ENTERED_IN_ERROR", corrected_by=None, agency_key=labour
    )
    huge = report_from_json(make_report(report_id=report_id, source_agency="NZ-LABOUR", subjects=[DECOY]))
    huge["narrative"] = "x" * 300_000  # over the worker's limit for a record, set below
    oversized = (*kit.wire(kit.envelope(huge)), 0)
    malformed = (report_id.encode(), b"\x00\x00\x00\x00\x02" + b"\xff" * 40, 1)  # an envelope id, then garbage
    hub.send_raw(
        [
            *takeovers,
            (report_id.encode(), kit.codec.encode(RETRACTION, retraction), 1),
            (*original, 2),
            oversized,
            malformed,
        ]
    )
    accepted_now, rejected = hub.wait_for_outcomes(1 + len(takeovers) + 4)
    hub.wait_for_quiet()

    assert [(r.key, r.value) for r in accepted_now] == [(accepted.key, accepted.value)]  # unchanged, once
    reasons = Counter((r["reason"], r["source_agency"]) for r in rejected)
    assert reasons == {
        ("report_id_taken", "NZ-LABOUR"): PARTITIONS,
        ("retraction_wrong_agency", "NZ-LABOUR"): 1,
        ("duplicate_report_id", "NZ-POLICE"): 1,  # the replay: NZ-POLICE's own feed shows it
        ("oversized", None): 1,
        ("undecodable", None): 1,
    }
    assert hub.decoded(hub.topics.retractions) == []

    # Every attempt to reach for NZ-POLICE's report is in the audit, as NZ-LABOUR's.
    denials = Counter(
        (json.loads(e["detail"])["reason"], e["actor"]) for e in audited_denials(hub) if e["item_id"] == report_id
    )
    assert denials == {
        ("report_id_taken", "agency:NZ-LABOUR"): PARTITIONS,
        ("retraction_wrong_agency", "agency:NZ-LABOUR"): 1,
    }

    # Decisions stay those of NZ-POLICE's RED report: nobody but NZ-POLICE may see it.
    decisions = [d for d in hub.decoded(hub.topics.decisions) if d["item_id"] == report_id]
    assert decisions and all(not d["allowed"] and d["reason"] == "tlp_red" for d in decisions)

    # The victim's keys are bound to NZ-POLICE's submission: the decoy's keys are others, so erasing
    # the decoy person (by the token of their passport) can never destroy the victim's key.
    record = WireCodec().decode(accepted.value)[1]
    victim_key_id = record["subjects"][0]["subject_key_id"]
    vault = SqlKeyVault(Database(hub.settings.vault_database), KeyStore(hub.home).vault_keks)
    decoy_token = Linker.latest(KeyStore(hub.home).linkage_keys()).identifier_token("PASSPORT", "ZZ7654321", "NZ", None)
    decoy_keys = vault.key_ids_for_token(decoy_token)
    assert len(decoy_keys) == PARTITIONS and victim_key_id not in decoy_keys
    assert all(key.startswith(f"NZ-LABOUR/{report_id}/") for key in decoy_keys)
    erase = hub.cli("erase", "--identifier", "PASSPORT:ZZ7654321:NZ")
    assert erase.returncode == 0, erase.stderr
    key = vault.get(victim_key_id)
    assert key is not None
    assert crypto.unseal_field(key, report_id, "subjects[0].name", record["subjects"][0]["name"]) == VICTIM["name"]


def test_an_agency_probing_with_a_victims_passport_learns_nothing_of_reports_it_may_not_see(hub: Hub) -> None:
    """NZ-LABOUR knows a passport number and submits a report naming it, hoping its own report joins a
    signal of other agencies' reports about that person. Correlation in its scope uses only what it may
    see: nothing forms there, though the hub's own correlation of everything does find the person."""
    kit = EnvelopeKit(hub.home)
    police = make_report(
        source_agency="NZ-POLICE",
        tlp="RED",
        indicator_type="HOTLINE_TIP",
        elements=["ACT_RECRUITMENT", "MEANS_DEBT_BONDAGE"],
        subjects=[VICTIM],
    )
    customs = make_report(  # a border crossing: not a type NZ-LABOUR's agreement receives
        source_agency="NZ-CUSTOMS", elements=["ACT_TRANSPORT", "MEANS_DECEPTION"], subjects=[VICTIM]
    )
    probe = make_report(
        source_agency="NZ-LABOUR",
        indicator_type="LABOUR_INSPECTION",
        elements=["PURPOSE_FORCED_LABOUR"],
        subjects=[{"role": "SUSPECTED_VICTIM", "identifiers": VICTIM["identifiers"]}],
    )
    hub.send_raw([kit.wire(kit.envelope(r)) for r in (police, customs, probe)])
    hub.start_worker()
    hub.wait_for_outcomes(3)
    hub.wait_for_quiet()
    signals = hub.decoded(hub.topics.signals)
    everything = {r["report_id"] for r in (police, customs, probe)}
    assert any(s["scope"] == "hub" and set(s["report_ids"]) == everything for s in signals)
    labour = [s for s in signals if s["scope"] == "NZ-LABOUR"]
    assert labour == [], labour  # nothing it could be shown: no signal, no count, no id


def test_a_revoked_key_cannot_backdate_past_its_revocation_or_the_age_limit(hub: Hub) -> None:
    """Whoever holds a leaked, revoked NZ-LABOUR key signs after the revocation, backdating signed_at and
    the record timestamp a producer may set; or makes an envelope signed days ago look fresh the same way.
    A revoked key is refused by the hub's clock; the age of an envelope is judged by the time the broker
    stamped it as it appended it (LogAppendTime), which the sender cannot choose."""

    backdated = make_report(source_agency="NZ-LABOUR", indicator_type="LABOUR_INSPECTION")
    old = make_report(source_agency="NZ-LABOUR", indicator_type="LABOUR_INSPECTION")
    items = backdated_after_revocation(hub, backdated, old)

    async def send() -> None:
        producer = new_producer(hub.broker)
        await producer.start()
        try:
            for key, value, at in items:
                timestamp_ms = int(at.timestamp() * 1000)
                await producer.send_and_wait(hub.topics.submitted, key=key, value=value, timestamp_ms=timestamp_ms)
        finally:
            await producer.stop()

    asyncio.run(send())
    hub.start_worker()
    accepted, rejected = hub.wait_for_outcomes(2)
    assert accepted == []
    # Both are refused at the key: it is revoked now (the signature and age are never reached); and a
    # refusal before the signer is verified is attributed to nobody.
    assert sorted((r["report_id"], r["reason"], r["source_agency"]) for r in rejected) == sorted(
        [(backdated["report_id"], "revoked_key", None), (old["report_id"], "revoked_key", None)]
    )


@pytest.mark.noida
def test_a_sender_that_claims_the_broker_stamped_its_batch_chooses_no_time(hub: Hub) -> None:
    """The sender's batch claims the broker stamped it (a producer can set that bit; Apache Kafka refuses
    such a batch, noida-db passes it) at a time of its choosing, on a hub whose tip.reports.submitted an
    earlier release created with CreateTime. Starting the hub sets the topic to LogAppendTime; a leaked,
    revoked NZ-LABOUR key still cannot backdate past its revocation, and an NZ-DIA envelope signed days ago
    is stale."""

    admin = admin_client(hub.broker)
    try:
        configs = {"message.timestamp.type": "CreateTime"}
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, hub.topics.submitted, configs=configs)])
    finally:
        admin.close()
    deadline = time.monotonic() + 30
    while broker_stamps(hub.broker, hub.topics.submitted):  # Apache Kafka applies a config change a moment later
        assert time.monotonic() < deadline, "the topic kept LogAppendTime"
        time.sleep(0.2)
    hub.start_worker()
    deadline = time.monotonic() + 60
    while not broker_stamps(hub.broker, hub.topics.submitted):
        assert time.monotonic() < deadline, "the worker left tip.reports.submitted with CreateTime"
        time.sleep(0.5)
    backdated = make_report(source_agency="NZ-LABOUR", indicator_type="LABOUR_INSPECTION")
    old = make_report(source_agency="NZ-DIA", indicator_type="LOST_STOLEN_DOCUMENT")
    items = backdated_after_revocation(hub, backdated, old)
    sent = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("spoofed_time.py")), hub.broker, hub.topics.submitted],
        input=json.dumps([{"key": k.hex(), "value": v.hex(), "ts": int(t.timestamp() * 1000)} for k, v, t in items]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if detect_kind(hub.broker) == "kafka":
        # Apache Kafka refuses a producer's batch that claims the broker's time: nothing reaches the hub.
        assert sent.returncode != 0 and "InvalidTimestampError" in sent.stderr, sent.stderr
        assert hub.read(hub.topics.submitted) == []
        return
    assert sent.returncode == 0, sent.stderr  # noida-db takes it; the hub must not believe its time
    accepted, rejected = hub.wait_for_outcomes(2)
    assert accepted == []
    assert sorted((r["report_id"], r["reason"]) for r in rejected) == sorted(
        [(backdated["report_id"], "revoked_key"), (old["report_id"], "stale_envelope")]
    )


def test_an_agency_learns_no_field_its_decision_drops_by_probing_with_guesses(hub: Hub) -> None:
    """NZ-LABOUR may see an NZ-POLICE hotline tip, but not its victim's passport. It submits reports of its
    own, each naming a guessed passport: in its scope nothing joins, right guess or wrong (the red team's
    probe named the passport through the signal the right guess formed)."""
    from tests.integration.test_gateway import start_gateway
    from tiphub.runtime import token_authority
    from tiphub.settings import Settings

    police = make_report(
        source_agency="NZ-POLICE",
        indicator_type="HOTLINE_TIP",
        purpose="INVESTIGATION",
        elements=["ACT_RECRUITMENT", "MEANS_DEBT_BONDAGE"],
        subjects=[{"role": "SUSPECTED_VICTIM", "nationality": "TH", "identifiers": VICTIM["identifiers"]}],
        organisations=[],
        narrative=None,
    )
    guesses = ["AA1234565", "AA1234566", VICTIM["identifiers"][0]["value"], "AA1234568"]
    probes = [
        make_report(
            source_agency="NZ-LABOUR",
            indicator_type="LABOUR_INSPECTION",
            elements=["PURPOSE_FORCED_LABOUR"],
            subjects=[{"role": "SUSPECTED_VICTIM", "identifiers": [{"kind": "PASSPORT", "value": g, "issuer": "TH"}]}],
            organisations=[],
            narrative=None,
        )
        for g in guesses
    ]
    hub.publish([police, *probes])
    hub.start_worker()
    hub.wait_for_outcomes(1 + len(probes))
    hub.wait_for_quiet()
    signals = hub.decoded(hub.topics.signals)
    everything = {police["report_id"], probes[2]["report_id"]}
    assert any(s["scope"] == "hub" and set(s["report_ids"]) == everything for s in signals)  # the hub links them
    assert [s for s in signals if s["scope"] == "NZ-LABOUR"] == []
    process, url = start_gateway(hub)
    try:
        token = token_authority(Settings(home=hub.home)).issue("analyst", "eve", agency="NZ-LABOUR")
        page = httpx.get(url + "/v1/signals", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
        assert page["signals"] == []
    finally:
        process.terminate()
        process.wait(20)


def test_a_retracted_bridge_leaves_no_link_for_an_erasure_to_follow(hub: Hub) -> None:
    """NZ-LABOUR reports one "person" holding two passports, Sokha's and Dara's, which joins them in the hub's
    correlation; it retracts the report and the hub splits them again. Erasing Sokha with --follow-links
    must not take Dara (whom nothing links to her now) with her."""

    sokha, dara, bridge = person_as_recorded(0, "both"), person_as_recorded(1, "both"), bridge_of(0, 1)
    customs = make_report(source_agency="NZ-CUSTOMS", subjects=[sokha], elements=["ACT_TRANSPORT", "MEANS_DECEPTION"])
    police = make_report(source_agency="NZ-POLICE", subjects=[dara], elements=["ACT_RECRUITMENT"], tlp="AMBER")
    labour = make_report(
        source_agency="NZ-LABOUR",
        indicator_type="LABOUR_INSPECTION",
        subjects=[bridge],
        elements=["PURPOSE_FORCED_LABOUR"],
    )
    hub.publish([customs, police, labour])
    hub.start_worker()
    hub.wait_for_outcomes(3)
    hub.wait_for_quiet()
    joined = [f for f in hub.decoded(hub.topics.entities) if len(f["members"]) >= 3]
    assert joined, "the bridge report joined nobody: the test proves nothing"

    kit = EnvelopeKit(hub.home)
    retraction = seal_retraction(
        labour["report_id"],
        agency="NZ-LABOUR",
        reason="ENTERED_IN_ERROR",
        corrected_by=None,
        agency_key=kit.store.agency_key("NZ-LABOUR"),
    )
    hub.send_raw([(labour["report_id"].encode(), kit.codec.encode(RETRACTION, retraction))])
    deadline = time.monotonic() + 60
    while not hub.decoded(hub.topics.retractions):
        assert time.monotonic() < deadline, "the retraction was not accepted"
        time.sleep(0.5)
    hub.wait_for_quiet()

    erased = hub.cli("erase", "--identifier", "PASSPORT:N01234567:KH", "--follow-links", "--reason", "court order")
    assert erased.returncode == 0, erased.stderr
    records = {r["report_id"]: r for r in hub.decoded(hub.topics.accepted)}
    vault = SqlKeyVault(Database(hub.settings.vault_database), KeyStore(hub.home).vault_keks)
    assert vault.get(records[customs["report_id"]]["subjects"][0]["subject_key_id"]) is None  # Sokha: erased
    assert vault.get(records[police["report_id"]]["subjects"][0]["subject_key_id"]) is not None  # Dara: kept
    assert vault.get(records[police["report_id"]]["report_key_id"]) is not None  # and the police narrative
