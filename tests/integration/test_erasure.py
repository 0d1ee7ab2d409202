"""Erasure by crypto-shredding: after `tiphub erase`, every view rebuilt from the topics shows [erased]
for that person, holds no plaintext of them, and still opens everyone else."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from adapters.kafka.broker_quirks import detect_kind
from adapters.kafka.log import KafkaLog
from adapters.sql.database import Database
from adapters.sql.vault import SqlKeyVault
from policies.engine import ERASED
from streams.agents.decide_sharing import DecideSharing
from streams.topics import Topics
from streams.views import rebuild_report_view
from tests.factories import make_report
from tests.harness import Hub, read_topics
from tests.integration.test_canary import CANARY_NAME, all_topics, leaks
from tiphub.keys import KeyStore

pytestmark = pytest.mark.integration

PERSON = {
    "role": "SUSPECTED_VICTIM",
    "name": CANARY_NAME,
    "date_of_birth": "1903-07-29",
    "nationality": "KH",
    "identifiers": [{"kind": "PASSPORT", "value": "QX7731904", "issuer": "KH"}],
}
OTHER = {
    "role": "SUSPECTED_VICTIM",
    "name": "Dara Meas",
    "date_of_birth": "2001-03-03",
    "nationality": "KH",
    "identifiers": [{"kind": "PASSPORT", "value": "N99887766", "issuer": "KH"}],
}


def rebuild(hub: Hub, vault: SqlKeyVault, recipient: str) -> dict:
    return rebuild_report_view(
        recipient,
        vault=vault,
        erasures=[r.value for r in hub.read(hub.topics.erasures)],
        decisions=[r.value for r in hub.read(hub.topics.decisions)],
        accepted=[r.value for r in hub.read(hub.topics.accepted)],
    )


async def replay_decisions(hub: Hub, accepted: int) -> None:
    """A decisions stage started from scratch under a new group, as a rebuild would run it."""
    topics = Topics(hub.prefix, 3)
    stop = asyncio.Event()
    log = KafkaLog(hub.broker, kind=detect_kind(hub.broker))
    processor = log.processor(
        group_id=f"{hub.prefix}rebuild",
        instance_id="r",
        input_topic=topics.accepted,
        handler=DecideSharing(topics, log),
    )
    task = asyncio.create_task(processor.run(stop))
    while processor.stats.records < accepted:
        assert not task.done(), task.exception()
        await asyncio.sleep(0.2)
    stop.set()
    await task


def test_erase_then_rebuild_every_view_shows_erased_and_no_plaintext(hub: Hub) -> None:
    reports = [
        make_report(subjects=[PERSON]),
        make_report(
            source_agency="NZ-LABOUR",
            indicator_type="LABOUR_INSPECTION",
            subjects=[{**PERSON, "name": "Canarybird Zyxqorth"}],
        ),
        make_report(subjects=[OTHER]),
    ]
    hub.publish(reports)
    hub.start_worker()
    accepted, _ = hub.wait_for_outcomes(3)
    hub.wait_for_quiet()
    vault = SqlKeyVault(Database(hub.settings.vault_database), KeyStore(hub.home).vault_kek())

    before = rebuild(hub, vault, "NZ-NIC")
    assert before[reports[0]["report_id"]]["subjects"][0]["name"] == CANARY_NAME  # the analysts could see it
    token = next(r for r in hub.decoded(hub.topics.accepted) if r["report_id"] == reports[0]["report_id"])["subjects"][
        0
    ]["identifiers"][0]["linkage_token"]

    # The request names the person as an erasure request would: by their passport. The hub derives the
    # tokens itself; nothing of the request is printed back.
    result = subprocess.run(
        [sys.executable, "-m", "tiphub", "erase", "--identifier", "PASSPORT:qx 7731904:KH", "--reason", "court order"],
        env=hub.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "erased: 4 key(s) named, 4 destroyed" in result.stdout  # two people's keys, their reports' own keys
    assert "7731904" not in result.stdout + result.stderr
    assert vault.key_ids_for_token(token) == []

    after = rebuild(hub, vault, "NZ-NIC")
    for report in reports[:2]:
        subject = after[report["report_id"]]["subjects"][0]
        assert subject["name"] == ERASED and subject["date_of_birth"] == ERASED
        assert subject["identifiers"][0]["value"] == ERASED
        # Free text may name the person: the report's own key went with theirs.
        assert after[report["report_id"]]["narrative"] == ERASED
        assert after[report["report_id"]]["organisations"][0]["registration"] == ERASED
    assert after[reports[2]["report_id"]]["subjects"][0]["name"] == "Dara Meas"
    assert after[reports[2]["report_id"]]["narrative"] != ERASED

    asyncio.run(replay_decisions(hub, len(accepted)))  # every processor loads the erasures before replaying
    replayed = [d for d in hub.decoded(hub.topics.decisions) if d["recipient"] == "NZ-NIC"]
    latest = {d["item_id"]: d for d in replayed}
    for report in reports[:2]:
        view = json.loads(latest[report["report_id"]]["view_json"])
        assert view["subjects"][0]["name"] == ERASED
    assert json.loads(latest[reports[2]["report_id"]]["view_json"])["subjects"][0]["name"]["ref"] == "subjects[0].name"

    for recipient in ("NZ-NIC", "NZ-LABOUR", "HSU-TH", "HSU-MY", "HSU-PH"):
        assert "Zyxqorth" not in json.dumps(rebuild(hub, vault, recipient))
    facts = hub.decoded(hub.topics.erasures)
    assert len(facts) == 4
    assert sum(token in f["tokens"] for f in facts) == 2  # the people's keys; the reports' keys depend on them
    audit = [e for e in hub.decoded(hub.topics.audit_intake) if e["kind"] == "erasure"]
    assert len(audit) == 1 and audit[0]["outcome"] == "erased"
    records = asyncio.run(read_topics(hub.broker, all_topics(hub.broker, hub.prefix), isolation="read_uncommitted"))
    assert leaks(records) == []


def test_erasing_an_unknown_token_changes_nothing(hub: Hub) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tiphub", "erase", "--subject-token", "lk1.nobody"],
        env=hub.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "no accepted report names such a person" in result.stderr
    assert hub.read(hub.topics.erasures) == []


def test_the_retention_sweep_shreds_reports_past_their_period_and_only_those(hub: Hub) -> None:
    old_tip = make_report(
        indicator_type="HOTLINE_TIP", source_agency="NZ-POLICE", observed_at="2024-01-10T00:00:00Z", subjects=[OTHER]
    )
    recent = make_report(observed_at="2026-06-01T00:00:00Z", subjects=[OTHER])
    hub.publish([old_tip, recent])
    hub.start_worker()
    hub.wait_for_outcomes(2)
    hub.wait_for_quiet()
    vault = SqlKeyVault(Database(hub.settings.vault_database), KeyStore(hub.home).vault_kek())

    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "tiphub", "retention", "sweep", "--now", "2026-11-23T00:00:00Z"],
        env=hub.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    first = run()
    assert first.returncode == 0, first.stderr
    assert "retention sweep: 2 key(s) past retention, 2 destroyed" in first.stdout  # subject + report key
    assert "0 key(s) past retention" in run().stdout  # nothing twice
    view = rebuild(hub, vault, "NZ-NIC")
    assert view[old_tip["report_id"]]["subjects"][0]["name"] == ERASED
    assert view[old_tip["report_id"]]["narrative"] == ERASED
    assert view[recent["report_id"]]["subjects"][0]["name"] == "Dara Meas"


def test_a_restored_vault_backup_does_not_bring_an_erased_person_back(hub: Hub) -> None:
    import sqlite3
    from pathlib import Path

    hub.publish([make_report(subjects=[PERSON]), make_report(subjects=[OTHER])])
    hub.start_worker()
    hub.wait_for_outcomes(2)
    hub.wait_for_quiet()
    vault_file = Path(hub.settings.vault_database.removeprefix("sqlite:///"))
    backup = vault_file.with_suffix(".backup")

    def copy_database(source: Path, target: Path) -> None:
        """SQLite's online backup: consistent, whatever is still in the write-ahead log."""
        with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
            src.backup(dst)

    copy_database(vault_file, backup)  # last night's backup, taken before the erasure

    tokens = {  # linkage token -> subject key, one person per report
        r["subjects"][0]["identifiers"][0]["linkage_token"]: r["subjects"][0]["subject_key_id"]
        for r in hub.decoded(hub.topics.accepted)
    }
    erased_token = next(iter(tokens))

    def tiphub(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tiphub", *args], env=hub.env(), capture_output=True, text=True, timeout=60
        )

    assert tiphub("erase", "--subject-token", erased_token, "--reason", "court order").returncode == 0
    copy_database(backup, vault_file)  # the vault is restored from the backup
    restored = SqlKeyVault(Database(hub.settings.vault_database), KeyStore(hub.home).vault_kek())
    assert restored.get(tokens[erased_token]) is not None  # the erased person's key is back

    first = tiphub("erase", "--reapply")
    assert first.returncode == 0, first.stderr
    assert "2 key(s) named on tip.erasures, 2 destroyed now" in first.stdout  # the person's and their report's
    assert restored.get(tokens[erased_token]) is None
    others = [key for t, key in tokens.items() if t != erased_token]
    assert others and all(restored.get(key) is not None for key in others)  # nobody else is touched
    assert "2 key(s) named on tip.erasures, 0 destroyed now" in tiphub("erase", "--reapply").stdout
    audit = [e for e in hub.decoded(hub.topics.audit_intake) if e["kind"] == "erasure"]
    assert sorted(e["outcome"] for e in audit) == ["erased", "reapplied"]  # intake events span partitions
    assert tiphub("erase").returncode == 2  # neither a person nor --reapply


def opens_with_any_hub_key(envelope: dict, hub: Hub) -> bool:
    """Whether any key the hub holds now, on disk or in its vault, unwraps this envelope's data key."""
    from domain import crypto
    from domain.envelope_keys import EnvelopeKeys

    keys = list(KeyStore(hub.home).hub_decryption_keys().values())
    vault = SqlKeyVault(Database(hub.settings.vault_database), KeyStore(hub.home).vault_keks)
    epoch_key = EnvelopeKeys(vault, hub.settings.envelope_epoch_s).private(envelope["hub_key_id"])
    for key in [*keys, *([epoch_key] if epoch_key else [])]:
        try:
            crypto.unwrap_data_key(
                key, envelope["report_id"], envelope["ephemeral_public_key"], envelope["wrapped_data_key"]
            )
            return True
        except crypto.DecryptionError:
            continue
    return False


def test_submitted_envelopes_stop_opening_once_their_epoch_key_is_destroyed(hub: Hub) -> None:
    """tip.reports.submitted keeps an agency's envelope for 7 days, where any copy of the topic keeps it
    longer: each is sealed for the hub's envelope key of its epoch, which the workers destroy once nothing
    sealed for it can still be accepted and all of it was read. Here epochs last 2 s."""
    from tests.envelopes import EnvelopeKit, stranger_hub_key

    fast = {"TIPHUB_ENVELOPE_EPOCH_S": "2", "TIPHUB_MAX_ENVELOPE_AGE_S": "3", "TIPHUB_MAX_FUTURE_SKEW_S": "1"}
    hub.settings = hub.settings.model_copy(update={"envelope_epoch_s": 2.0})
    hub.publish([make_report(subjects=[PERSON]), make_report(subjects=[OTHER])])
    submitted = hub.decoded(hub.topics.submitted)
    assert all(e["hub_key_id"].startswith("hub-epoch/") for e in submitted)
    # Before any worker runs (only workers destroy epoch keys; with 2 s epochs, a slow machine could see a
    # worker destroy them before the reports' outcomes are read)
    assert all(opens_with_any_hub_key(e, hub) for e in submitted)
    hub.start_worker(TIPHUB_ENVELOPE_CHECK_S="0.5", **fast)
    hub.wait_for_outcomes(2)

    deadline = time.monotonic() + 60
    while any(opens_with_any_hub_key(e, hub) for e in submitted):
        assert time.monotonic() < deadline, "the epoch keys of the submissions were never destroyed"
        time.sleep(0.5)

    # What the hub keeps is sealed under per-person keys, untouched; new reports are sealed for a new key.
    vault = SqlKeyVault(Database(hub.settings.vault_database), KeyStore(hub.home).vault_keks)
    assert all(vault.get(s["subject_key_id"]) for r in hub.decoded(hub.topics.accepted) for s in r["subjects"])
    hub.publish([make_report(subjects=[OTHER])])
    hub.wait_for_outcomes(3)
    assert len(hub.read(hub.topics.accepted)) == 3

    # An envelope sealed late for a destroyed key (a client that did not fetch the keys again) is refused.
    kit = EnvelopeKit(hub.home)
    old_id = submitted[0]["hub_key_id"]
    late = kit.envelope(make_report(), hub_public=stranger_hub_key())  # refused before any key is tried
    late = kit.resign({**late, "hub_key_id": old_id}, kit.store.agency_key("NZ-CUSTOMS"))
    hub.send_raw([kit.wire(late)])
    _, rejected = hub.wait_for_outcomes(4)
    assert [r["reason"] for r in rejected] == ["hub_key_retired"]
