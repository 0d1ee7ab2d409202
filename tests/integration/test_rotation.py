"""Key rotation without downtime, on the real broker with a running worker that is never restarted:
the hub's encryption key (envelopes sealed before and after both open), an agency's signing key
(both keys verify until the old one is revoked) and the linkage key (reports from before, during
and after the rotation are one person)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.signing import agency_key_id
from tests.envelopes import EnvelopeKit
from tests.factories import BASE_REPORT, make_report
from tests.harness import Hub
from tests.integration.test_gateway import start_gateway
from tiphub.runtime import token_authority
from tiphub.settings import Settings

pytestmark = pytest.mark.integration


def tiphub(hub: Hub, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tiphub", *args], env=hub.env(), capture_output=True, text=True, timeout=60
    )


def test_the_static_hub_key_rotates_while_the_worker_runs_and_envelopes_sealed_for_either_key_open(hub: Hub) -> None:
    """For agencies that cannot fetch epoch keys, a hub may also open the long-lived key on disk
    (TIPHUB_STATIC_HUB_KEY): rotating it needs no restart, and envelopes sealed for either key open."""
    worker = hub.start_worker(TIPHUB_STATIC_HUB_KEY="true")
    in_flight = EnvelopeKit(hub.home, epoch=False)  # an agency system that sealed before it heard of the new key
    sealed_before = [in_flight.wire(in_flight.envelope(make_report())) for _ in range(2)]
    hub.send_raw(sealed_before[:1])
    hub.wait_for_outcomes(1)

    rotated = hub.cli("keys", "rotate-hub")
    assert rotated.returncode == 0, rotated.stderr
    assert "is current" in rotated.stdout

    current = EnvelopeKit(hub.home, epoch=False)
    hub.send_raw([current.wire(current.envelope(make_report())) for _ in range(2)])  # sealed for the new key
    hub.send_raw(sealed_before[1:])  # arriving late, sealed for the old one
    hub.publish([make_report()])  # and an agency sealing for the epoch key, as ever
    accepted, rejected = hub.wait_for_outcomes(5)
    assert rejected == [] and len(accepted) == 5
    hub_keys = {e["hub_key_id"] for e in hub.decoded(hub.topics.submitted)}
    assert len({k for k in hub_keys if k.startswith("hub/")}) == 2  # both static keys really were in use
    assert worker.poll() is None  # no restart was needed


def test_the_linkage_key_rotates_while_the_worker_runs_and_old_and_new_reports_are_one_person(hub: Hub) -> None:
    worker = hub.start_worker(TIPHUB_KEY_RELOAD_S="0.5")

    def about_her(agency: str, name: str) -> dict[str, Any]:
        subject = {**BASE_REPORT["subjects"][0], "name": name}
        subject["identifiers"] = [{"kind": "PASSPORT", "value": "N01234567", "issuer": "KH"}]
        return make_report(source_agency=agency, subjects=[subject], organisations=[])

    before = about_her("NZ-CUSTOMS", "Sokha Chan")
    hub.publish([before])
    hub.wait_for_outcomes(1)

    rotated = tiphub(hub, "keys", "rotate-linkage")
    assert rotated.returncode == 0, rotated.stderr
    assert "v2 (encoding 2) is current" in " ".join(rotated.stdout.split())
    time.sleep(1.5)  # the worker reads the key directory again
    during = about_her("NZ-LABOUR", "Chan Sokha")
    hub.publish([during])
    hub.wait_for_outcomes(2)

    refused = tiphub(hub, "keys", "retire-linkage", "1")
    assert refused.returncode == 1, refused
    assert "1 readable report(s) carry linkage key v1 only" in " ".join(refused.stderr.split())
    retired = tiphub(hub, "keys", "retire-linkage", "1", "--force")
    assert retired.returncode == 0, retired.stderr
    time.sleep(1.5)
    after = about_her("NZ-POLICE", "Sokha Chan")
    hub.publish([after])
    _, rejected = hub.wait_for_outcomes(3)
    assert rejected == []
    hub.wait_for_quiet()

    by_id = {r["report_id"]: r for r in hub.decoded(hub.topics.accepted)}
    carried = [
        (by_id[r["report_id"]]["linkage_key_version"], [b["version"] for b in by_id[r["report_id"]]["linkage_bridges"]])
        for r in (before, during, after)
    ]
    assert carried == [(1, []), (2, [1]), (2, [])]
    # What an analyst sees: one person entity holding all three sightings.
    entities: dict[str, list[str]] = {}
    for fact in hub.decoded(hub.topics.entities):
        entities[fact["entity_id"]] = fact["members"]
    occurrences = {f"{r['report_id']}#0" for r in (before, during, after)}
    assert any(occurrences <= set(members) for members in entities.values()), entities
    assert worker.poll() is None

    # An auditor's "who saw this person" answers for either token: the bridged report is under both.
    tokens = {
        v: by_id[r["report_id"]]["subjects"][0]["identifiers"][0]["linkage_token"] for v, r in ((1, before), (2, after))
    }
    process, url = start_gateway(hub)
    try:
        auditor = token_authority(Settings(home=hub.home)).issue("auditor", "rotation auditor", agency="NZ-NIC")
        reports = {}
        for version, token in tokens.items():
            deadline = time.monotonic() + 20
            while version not in reports:
                answer = httpx.get(
                    f"{url}/v1/audit/subjects/{token}", headers={"Authorization": f"Bearer {auditor}"}, timeout=30
                )
                if answer.status_code == 200:
                    reports[version] = set(answer.json()["reports"])
                assert time.monotonic() < deadline, answer.text
                time.sleep(0.3)
    finally:
        process.terminate()
        process.wait(20)
    assert reports == {
        1: {before["report_id"], during["report_id"]},
        2: {during["report_id"], after["report_id"]},
    }


def test_an_agency_rotates_its_signing_key_without_a_gap(hub: Hub, tmp_path: Path) -> None:
    kit = EnvelopeKit(hub.home)
    old_key = kit.store.agency_key("NZ-CUSTOMS")
    new_key = Ed25519PrivateKey.generate()
    public_pem = tmp_path / "nz-customs-2.pem"
    public_pem.write_bytes(
        new_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    registered = tiphub(hub, "keys", "register", "--agency", "NZ-CUSTOMS", str(public_pem))
    assert registered.returncode == 0, registered.stderr
    hub.start_worker()

    # Overlap: both keys verify.
    hub.send_raw([kit.wire(kit.envelope(make_report(), key=k)) for k in (old_key, new_key)])
    accepted, rejected = hub.wait_for_outcomes(2)
    assert len(accepted) == 2 and rejected == []

    revoked = tiphub(hub, "keys", "revoke", agency_key_id("NZ-CUSTOMS", old_key.public_key()))
    assert revoked.returncode == 0, revoked.stderr
    time.sleep(2.5)  # registry readers cache for 2 s
    hub.send_raw([kit.wire(kit.envelope(make_report(), key=k)) for k in (old_key, new_key)])
    accepted, rejected = hub.wait_for_outcomes(4)
    assert len(accepted) == 3 and [r["reason"] for r in rejected] == ["revoked_key"]
