"""The accept stage as a function: what it writes, what it derives, and that plaintext never leaves it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.memory.vault import InMemoryKeyVault
from adapters.sql.database import Database
from adapters.sql.registry import KeyRegistry
from domain import crypto
from domain.accepted import PLAIN_FIELDS
from domain.envelope_keys import EnvelopeKeys
from domain.linkage import Linker
from policies.explain import SEALED, item_from_report
from schemas.codec import WireCodec
from schemas.convert import report_from_json
from streams.accept import AcceptStage, Submission
from tests.envelopes import EnvelopeKit, hours_ago
from tests.factories import make_report
from tiphub.keys import KeyStore
from tiphub.runtime import init_keys
from tiphub.settings import Settings


@pytest.fixture
def kit(tmp_path: Path) -> EnvelopeKit:
    init_keys(Settings(home=tmp_path))
    return EnvelopeKit(tmp_path, epoch=False)


@pytest.fixture
def vault() -> InMemoryKeyVault:
    return InMemoryKeyVault()


@pytest.fixture
def stage(kit: EnvelopeKit, vault: InMemoryKeyVault, tmp_path: Path) -> AcceptStage:
    store = KeyStore(tmp_path)
    return AcceptStage(
        registry=KeyRegistry(Database(f"sqlite:///{tmp_path}/registry.sqlite3")),
        vault=vault,
        hub_key=store.hub_encryption_key(),
        hub_key_id=store.hub_key_id(),
        linker=Linker.latest(store.linkage_keys()),
    )


def submit(kit: EnvelopeKit, report: dict, signed_at: datetime | None = None) -> Submission:
    key, value = kit.wire(kit.envelope(report, signed_at=signed_at))
    return Submission("submitted", 0, 0, key, value, int(time.time() * 1000))


def test_an_accepted_report_carries_tokens_and_sealed_fields_that_open_with_vault_keys(
    stage: AcceptStage, kit: EnvelopeKit, vault: InMemoryKeyVault
) -> None:
    report = make_report()
    [verdict] = stage.process([submit(kit, report)])
    accepted = verdict.accepted
    assert accepted is not None and verdict.rejected is None
    WireCodec().encode("tiphub.AcceptedReport", accepted)  # valid against the schema

    subject = accepted["subjects"][0]
    key = vault.get(subject["subject_key_id"])
    assert key is not None
    rid = report["report_id"]
    assert crypto.unseal_field(key, rid, "subjects[0].name", subject["name"]) == "Sokha Chan"
    assert (
        crypto.unseal_field(key, rid, "subjects[0].identifiers[0].value", subject["identifiers"][0]["value"])
        == "N01234567"
    )
    report_key = vault.get(accepted["report_key_id"])
    assert report_key is not None
    assert crypto.unseal_field(report_key, rid, "narrative", accepted["narrative"]).startswith("Travelling")
    assert [i["linkage_token"][:4] for i in subject["identifiers"]] == ["lk1.", "lk1."]
    assert subject["minor_at_observation"] is False and subject["age_band"] == "18-20"
    assert len(subject["name_dob_encoding"]) == 128
    assert accepted["organisations"][0]["registration_token"].startswith("lk1.")


def test_the_same_identifier_written_differently_gets_the_same_token(stage: AcceptStage, kit: EnvelopeKit) -> None:
    def with_ids(passport: str, phone: str) -> dict:
        return make_report(
            subjects=[
                {
                    "role": "SUSPECTED_VICTIM",
                    "nationality": "KH",
                    "identifiers": [
                        {"kind": "PASSPORT", "value": passport, "issuer": "KH"},
                        {"kind": "PHONE", "value": phone},
                    ],
                }
            ]
        )

    verdicts = stage.process(
        [
            submit(kit, with_ids("N01234567", "+855 12 345 678")),
            submit(kit, with_ids("n0123-4567", "012 345 678")),
            submit(kit, with_ids("N01234567", "0085512345678")),
        ]
    )
    tokens = [[i["linkage_token"] for i in v.accepted["subjects"][0]["identifiers"]] for v in verdicts]  # type: ignore[index]
    assert tokens[0] == tokens[1] == tokens[2]


def test_tokens_are_separated_by_identifier_kind(stage: AcceptStage) -> None:
    assert stage.linker.token("PASSPORT", "KH:123456") != stage.linker.token("NATIONAL_ID", "KH:123456")


def test_a_redelivered_report_reuses_its_vault_keys(
    stage: AcceptStage, kit: EnvelopeKit, vault: InMemoryKeyVault
) -> None:
    submission = submit(kit, make_report())
    first = stage.process([submission])[0].accepted
    keys_after_first = dict(vault.keys)
    second = stage.process([submission])[0].accepted
    assert vault.keys == keys_after_first
    assert first["subjects"][0]["subject_key_id"] == second["subjects"][0]["subject_key_id"]  # type: ignore[index]


def test_subject_keys_are_indexed_by_the_subjects_tokens_for_erasure(
    stage: AcceptStage, kit: EnvelopeKit, vault: InMemoryKeyVault
) -> None:
    accepted = stage.process([submit(kit, make_report())])[0].accepted
    subject = accepted["subjects"][0]  # type: ignore[index]
    passport_token = subject["identifiers"][0]["linkage_token"]
    assert vault.key_ids_for_token(passport_token) == [subject["subject_key_id"]]
    assert vault.key_ids_for_token(stage.subject_token("Chan Sokha", "2008-04-02")) == [subject["subject_key_id"]]


def test_a_child_is_flagged_and_a_partial_birth_date_counts_as_a_child_when_it_could_be(
    stage: AcceptStage, kit: EnvelopeKit
) -> None:
    child = make_report(subjects=[{"role": "SUSPECTED_VICTIM", "date_of_birth": "2012-05-01"}])
    borderline = make_report(subjects=[{"role": "SUSPECTED_VICTIM", "date_of_birth": "2008"}])  # 18 or 17 in Oct 2026
    adult = make_report(subjects=[{"role": "SUSPECTED_VICTIM", "date_of_birth": "2001-01"}])
    facts = [
        (v.accepted["subjects"][0]["minor_at_observation"], v.accepted["subjects"][0]["age_band"])  # type: ignore[index]
        for v in stage.process([submit(kit, child), submit(kit, borderline), submit(kit, adult)])
    ]
    assert facts == [(True, "9-17"), (True, "9-17"), (False, "24-26")]


def test_the_envelope_age_is_measured_against_broker_time(stage: AcceptStage, kit: EnvelopeKit) -> None:
    old = submit(kit, make_report(), signed_at=hours_ago(5))
    backlog = Submission(old.topic, 0, 0, old.key, old.value, int(hours_ago(4.5).timestamp() * 1000))
    assert stage.process([backlog])[0].accepted is not None  # sat in the topic: not stale
    assert stage.process([old])[0].rejected["reason"] == "stale_envelope"  # type: ignore[index]


def test_rejections_name_the_field_and_carry_no_value(stage: AcceptStage, kit: EnvelopeKit) -> None:
    from schemas.convert import report_from_json

    record = report_from_json(make_report())
    record["subjects"][0]["identifiers"][0]["kind"] = "PHONE"  # a passport number is no phone number
    key, value = kit.wire(kit.envelope(record))
    [verdict] = stage.process([Submission("submitted", 1, 42, key, value, int(time.time() * 1000))])
    rejected = verdict.rejected
    assert rejected is not None
    assert (rejected["reason"], rejected["field"]) == (
        "invalid_identifier",
        "subjects[0].identifiers[0].value",
    )
    assert (rejected["source_partition"], rejected["source_offset"]) == (1, 42)
    assert "N01234567" not in rejected["detail"]
    assert rejected["rejected_at"].tzinfo == UTC


def test_the_relay_key_is_trusted_only_for_the_agency_of_the_publisher_it_names(
    stage: AcceptStage, kit: EnvelopeKit, tmp_path: Path
) -> None:
    from domain.signing import RELAY_AGENCY, agency_key_id
    from producers.publisher import seal_report
    from schemas.convert import report_from_json

    relay = KeyStore(tmp_path).relay_signing_key()

    def relayed(report: dict, publisher: str | None) -> Submission:
        envelope = seal_report(
            report_from_json(report),
            agency_key=relay,
            signing_key_id=agency_key_id(RELAY_AGENCY, relay.public_key()),
            hub_public=kit.hub_public,
            hub_key_id=kit.hub_key_id,
            publisher=publisher,
        )
        key, value = kit.wire(envelope)
        return Submission("submitted", 0, 0, key, value, int(time.time() * 1000))

    police = make_report(source_agency="NZ-POLICE")
    verdicts = stage.process(
        [
            relayed(police, "Pita@NZ-POLICE"),
            relayed(make_report(source_agency="NZ-CUSTOMS"), "Pita@NZ-POLICE"),  # a police publisher posing
            relayed(make_report(source_agency="NZ-POLICE"), None),  # the relay must say whom it relays for
        ]
    )
    assert verdicts[0].accepted is not None and verdicts[0].accepted["publisher"] == "Pita@NZ-POLICE"
    assert [v.rejected["reason"] for v in verdicts[1:] if v.rejected] == ["relay_agency_mismatch"] * 2


def test_an_envelope_sealed_for_a_destroyed_epoch_key_is_refused_and_one_for_the_current_key_opens(
    kit: EnvelopeKit, vault: InMemoryKeyVault, tmp_path: Path
) -> None:
    store = KeyStore(tmp_path)
    epochs = EnvelopeKeys(vault, epoch_s=60)
    stage = AcceptStage(
        registry=KeyRegistry(Database(f"sqlite:///{tmp_path}/registry.sqlite3")),
        vault=vault,
        hub_key=store.hub_encryption_key(),
        hub_key_id=store.hub_key_id(),
        linker=Linker.latest(store.linkage_keys()),
        envelope_keys=epochs,
    )
    key_id, public = epochs.current()

    def sealed_for_epoch() -> Submission:
        envelope = kit.envelope(make_report(), hub_public=public)
        envelope = kit.resign({**envelope, "hub_key_id": key_id}, kit.store.agency_key("NZ-CUSTOMS"))
        key, value = kit.wire(envelope)
        return Submission("submitted", 0, 0, key, value, int(time.time() * 1000))

    [opened] = stage.process([sealed_for_epoch()])
    assert opened.accepted is not None
    assert epochs.destroy(epochs.epoch(datetime.now(UTC)))
    [refused] = stage.process([sealed_for_epoch()])
    assert refused.rejected is not None and refused.rejected["reason"] == "hub_key_retired"
    assert refused.rejected["field"] == "hub_key_id"


def test_policy_explain_decides_on_the_record_the_accept_stage_keeps(stage: AcceptStage, kit: EnvelopeKit) -> None:
    """`tiphub policy explain` builds its item with the stage's own projection: every field the stage
    keeps is there with the same non-sensitive value (a v2 field such as estimated_victims included),
    so an explained decision is the decision the hub makes."""
    report = make_report(estimated_victims=3)
    [verdict] = stage.process([submit(kit, report)])
    accepted = verdict.accepted
    assert accepted is not None
    explained = item_from_report(report_from_json(report), accepted["accepted_at"])

    assert explained["estimated_victims"] == accepted["estimated_victims"] == 3
    assert set(explained) <= set(accepted)
    for field in PLAIN_FIELDS:
        assert explained[field] == accepted[field], field
    for mine, kept in zip(explained["subjects"], accepted["subjects"], strict=True):
        assert set(mine) == set(kept)
        for field in ("role", "sex", "nationality", "minor_at_observation", "age_band"):
            assert mine[field] == kept[field], field
        assert [x["kind"] for x in mine["identifiers"]] == [x["kind"] for x in kept["identifiers"]]
        assert mine["name"] == SEALED  # sealed, never the plaintext
    assert [set(o) for o in explained["organisations"]] == [set(o) for o in accepted["organisations"]]


def test_a_rejection_names_at_most_64_characters_of_what_an_unsigned_submission_claims(
    stage: AcceptStage, kit: EnvelopeKit
) -> None:
    """A report id and an agency in a submission whose signature fails are whatever its writer chose: a rejection
    (and its audit event) carries the first 64 characters of each, not 5,000."""
    envelope = kit.envelope(make_report())
    forged = {**envelope, "report_id": "r" * 5000, "source_agency": "A" * 5000}
    key, value = kit.wire(forged)
    [verdict] = stage.process([Submission("submitted", 0, 0, key, value, int(time.time() * 1000))])
    assert verdict.rejected is not None and verdict.rejected["reason"] == "key_agency_mismatch"
    assert verdict.report_id == "r" * 64 and verdict.rejected["report_id"] == "r" * 64
    assert verdict.claimed_agency == "A" * 64


def test_every_rejection_names_at_most_64_characters_of_its_report_id() -> None:
    """A signed retraction's report id is not checked as a UUID before the accept stage refuses it for naming no
    report of the agency's: its rejection, too, carries at most 64 characters (review, 2026-12-06)."""
    from streams.accept import Rejection, rejection_record

    where = Submission("tip.retractions", 0, 7, None, b"", 0)
    refused = Rejection("retraction_unknown_report", "no such report of yours")
    record = rejection_record(where, "r" * 5000, "NZ-NIC", refused, datetime.now(UTC))
    assert record["report_id"] == "r" * 64
