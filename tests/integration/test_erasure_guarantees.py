"""Each sentence docs/policies.md says of an erasure, checked on a live hub (worker and gateway over HTTP):
a person named in reports of three agencies, triaged by an analyst with a note that names them, then
erased by their passport as an erasure request names it."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.sql.database import Database
from adapters.sql.vault import SqlKeyVault
from gateway.triage import note_key_id
from policies.engine import ERASED
from streams.views import rebuild_report_view
from tests.factories import make_report
from tests.harness import Hub, final_signals
from tests.integration.test_erasure import OTHER
from tests.integration.test_gateway import start_gateway
from tiphub.keys import KeyStore
from tiphub.runtime import token_authority
from tiphub.settings import Settings

pytestmark = pytest.mark.integration

PASSPORT = "QX7731904"
PERSON = {
    "role": "SUSPECTED_VICTIM",
    "name": "Zyxqorth Canarybird",
    "date_of_birth": "1999-07-29",
    "nationality": "KH",
    "identifiers": [{"kind": "PASSPORT", "value": PASSPORT, "issuer": "KH"}],
}
THIRD = {
    "role": "WITNESS",
    "name": "Vanna Phum",
    "date_of_birth": "1988-11-11",
    "nationality": "KH",
    "identifiers": [{"kind": "PASSPORT", "value": "K55512345", "issuer": "KH"}],
}
NOTE = f"Spoke to {PERSON['name']}'s cousin; passport {PASSPORT} held by the employer"


@dataclass
class Erased:
    hub: Hub
    url: str
    reports: list[dict[str, Any]]
    before: dict[str, dict[str, Any]]  # accepted records, by report id
    signal_id: str  # NZ-NIC's IR-1 signal of the person, triaged with a note
    by_identifier: subprocess.CompletedProcess[str]
    by_name: subprocess.CompletedProcess[str]
    followed: subprocess.CompletedProcess[str]
    logs: str

    @property
    def vault(self) -> SqlKeyVault:
        return SqlKeyVault(Database(self.hub.settings.vault_database), KeyStore(self.hub.home).vault_keks)

    def subject_keys(self, person: dict[str, Any]) -> list[str]:
        return [
            s["subject_key_id"]
            for r in self.before.values()
            for s, sent in zip(r["subjects"], self.sent(r["report_id"])["subjects"], strict=True)
            if sent["identifiers"] and sent["identifiers"][0]["value"] == person["identifiers"][0]["value"]
        ]

    def sent(self, report_id: str) -> dict[str, Any]:
        return next(r for r in self.reports if r["report_id"] == report_id)


@pytest.fixture(scope="module")
def erased(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Erased]:
    with Hub.create(broker, tmp_path_factory.mktemp("erasure"), "erasure-guarantees") as hub:
        narrative = f"{PERSON['name']} said the recruiter kept passport {PASSPORT}."
        reports = [
            make_report(subjects=[PERSON], narrative=narrative),
            make_report(
                source_agency="NZ-LABOUR",
                indicator_type="LABOUR_INSPECTION",
                elements=["PURPOSE_FORCED_LABOUR"],
                subjects=[PERSON],
                narrative=narrative,
            ),
            make_report(
                source_agency="NZ-IMMIGRATION",
                indicator_type="VISA_APPLICATION_FLAG",
                elements=["ACT_RECRUITMENT"],
                subjects=[OTHER, PERSON],
                narrative="Two applicants, one sponsor.",
            ),
            make_report(source_agency="NGO-SHAKTI", indicator_type="NGO_REFERRAL", subjects=[OTHER]),
            make_report(source_agency="NZ-POLICE", indicator_type="HOTLINE_TIP", subjects=[THIRD]),
            # The person again, spelled otherwise and without the passport: only the hub's correlation
            # knows it is them.
            make_report(
                source_agency="NGO-SHAKTI",
                indicator_type="NGO_REFERRAL",
                subjects=[{**PERSON, "name": "Zyxqorth Canarybyrd", "identifiers": []}],
                narrative=None,
            ),
        ]
        hub.publish(reports)
        hub.start_worker()
        hub.wait_for_outcomes(len(reports))
        hub.wait_for_quiet()
        before = {r["report_id"]: r for r in hub.decoded(hub.topics.accepted)}
        process, url = start_gateway(hub)
        try:
            tokens = token_authority(Settings(home=hub.home))
            analyst = tokens.issue("analyst", "Ana", agency="NZ-NIC")
            headers = {"Authorization": f"Bearer {analyst}"}
            ids = {reports[0]["report_id"], reports[1]["report_id"]}
            signal_id = ""
            deadline = time.monotonic() + 60
            while not signal_id:
                page = httpx.get(url + "/v1/signals", headers=headers, params={"limit": 500}, timeout=30).json()
                signal_id = next(
                    (
                        s["signal_id"]
                        for s in page["signals"]
                        if s["requirement_id"] == "IR-1" and ids <= set(s["report_ids"])
                    ),
                    "",
                )
                assert signal_id or time.monotonic() < deadline, "NZ-NIC never saw the person's IR-1 signal"
                time.sleep(0.3)
            triaged = httpx.post(
                f"{url}/v1/signals/{signal_id}/triage",
                headers=headers,
                json={"state": "triaged", "note": NOTE},
                timeout=30,
            )
            assert triaged.status_code == 200 and triaged.json()["triage"][-1]["note"] == NOTE

            by_identifier = hub.cli("erase", "--identifier", f"PASSPORT:{PASSPORT}:KH", "--reason", "court order")
            # After reviewing the record the hub links to them, the operator erases it too.
            follow = ("--follow-links", "--reason", "court order")
            followed = hub.cli("erase", "--identifier", f"PASSPORT:{PASSPORT}:KH", *follow)
            by_name = hub.cli("erase", "--name", THIRD["name"], "--dob", THIRD["date_of_birth"], "--reason", "request")
            assert by_identifier.returncode == by_name.returncode == followed.returncode == 0, (
                by_identifier.stderr + by_name.stderr + followed.stderr
            )
            hub.wait_for_quiet()
            time.sleep(6)  # the union stage's idle tick applies the erasure facts even when nothing arrives
            hub.wait_for_quiet()
            logs = hub.worker_log() + (hub.home / "gateway.log").read_text(errors="replace")
            yield Erased(hub, url, reports, before, signal_id, by_identifier, by_name, followed, logs)
        finally:
            process.terminate()
            process.wait(20)


def test_1_the_request_is_never_echoed_and_names_the_person(erased: Erased) -> None:
    for done in (erased.by_identifier, erased.by_name, erased.followed):
        printed = done.stdout + done.stderr
        assert PASSPORT not in printed and THIRD["name"] not in printed and THIRD["date_of_birth"] not in printed
    # 3 records, their 3 reports' own keys and the note's key
    assert "erased: 7 key(s) named, 7 destroyed" in erased.by_identifier.stdout
    assert "erased: 2 key(s) named, 2 destroyed" in erased.by_name.stdout
    for secret in (PASSPORT, THIRD["name"], PERSON["name"]):
        assert secret not in erased.logs
        assert all(secret not in json.dumps(e, default=str) for e in erased.hub.decoded(erased.hub.topics.audit_intake))
    nobody = erased.hub.cli("erase", "--identifier", "PASSPORT:ZZ0000000:KH")
    assert nobody.returncode == 1 and "no accepted report names such a person" in nobody.stderr
    malformed = erased.hub.cli("erase", "--identifier", "SHOESIZE:42")
    assert malformed.returncode == 2 and "--identifier: the kind must be one of" in malformed.stderr


def test_2_every_record_of_the_person_is_erased(erased: Erased) -> None:
    keys = erased.subject_keys(PERSON)
    assert len(keys) == 3  # customs, labour and immigration each recorded them by that passport
    assert all(erased.vault.get(k) is None for k in keys)
    assert all(erased.vault.get(k) is not None for k in erased.subject_keys(OTHER))
    # The record the hub's correlation links to them is named, and erased on --follow-links.
    assert "1 more record(s) the hub's correlation links to this person were left" in erased.by_identifier.stdout
    assert "erased: 2 key(s) named, 2 destroyed" in erased.followed.stdout  # the record and its report's key
    variant = erased.before[erased.reports[5]["report_id"]]
    assert erased.vault.get(variant["subjects"][0]["subject_key_id"]) is None


def test_3_narratives_and_registrations_of_their_reports_go_too(erased: Erased) -> None:
    theirs = [erased.before[r["report_id"]] for r in erased.reports[:3]]
    assert all(erased.vault.get(r["report_key_id"]) is None for r in theirs)
    assert erased.vault.get(erased.before[erased.reports[3]["report_id"]]["report_key_id"]) is not None


def test_4_triage_notes_on_their_signals_are_unreadable(erased: Erased) -> None:
    analyst = token_authority(Settings(home=erased.hub.home)).issue("analyst", "Ana", agency="NZ-NIC")
    detail = httpx.get(
        f"{erased.url}/v1/signals/{erased.signal_id}", headers={"Authorization": f"Bearer {analyst}"}, timeout=30
    )
    assert detail.status_code == 200, detail.text
    assert [t["note"] for t in detail.json()["triage"]] == [ERASED]
    [event] = [e for e in erased.hub.decoded(erased.hub.topics.triage) if e["signal_id"] == erased.signal_id]
    assert erased.vault.get(note_key_id(erased.signal_id, event["event_id"])) is None
    raw = b"".join(r.value or b"" for r in erased.hub.read(erased.hub.topics.triage))
    assert PERSON["name"].encode() not in raw and PASSPORT.encode() not in raw


def test_5_views_show_erased_and_others_still_open(erased: Erased) -> None:
    hub = erased.hub
    view = rebuild_report_view(
        "NZ-NIC",
        vault=erased.vault,
        erasures=[r.value for r in hub.read(hub.topics.erasures)],
        decisions=[r.value for r in hub.read(hub.topics.decisions)],
        accepted=[r.value for r in hub.read(hub.topics.accepted)],
    )
    shared = view[erased.reports[2]["report_id"]]  # immigration: the other applicant, then the person
    assert shared["subjects"][1]["name"] == ERASED and shared["subjects"][1]["identifiers"][0]["value"] == ERASED
    assert shared["subjects"][0]["name"] == OTHER["name"]  # the other person in the same report still opens
    assert shared["narrative"] == ERASED
    assert view[erased.reports[3]["report_id"]]["subjects"][0]["name"] == OTHER["name"]
    assert PERSON["name"] not in json.dumps(view)


def test_6_they_leave_every_scopes_signals(erased: Erased) -> None:
    together = {erased.reports[0]["report_id"], erased.reports[1]["report_id"]}  # linked only through them
    deadline = time.monotonic() + 60
    while True:
        signals = final_signals(erased.hub, scope=None)
        joined = [s for s in signals.values() if s["status"] == "open" and together <= set(s["report_ids"])]
        if not joined:
            break
        assert time.monotonic() < deadline, joined
        time.sleep(0.5)
    assert {s["scope"] for s in signals.values()} >= {"hub", "NZ-NIC"}


def test_8_facts_and_one_audit_event_record_it(erased: Erased) -> None:
    facts = erased.hub.decoded(erased.hub.topics.erasures)
    assert len(facts) == 11 and len({f["subject_key_id"] for f in facts}) == 11
    events = [e for e in erased.hub.decoded(erased.hub.topics.audit_intake) if e["kind"] == "erasure"]
    assert sorted(json.loads(e["detail"])["reason"] for e in events) == ["court order", "court order", "request"]
    assert all(e["actor"] and PASSPORT not in json.dumps(e, default=str) for e in events)
    assert Path(erased.hub.home).exists()
