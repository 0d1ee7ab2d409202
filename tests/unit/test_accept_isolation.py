"""One report cannot stop the verify stage: what one linkage encoding cannot key is that report's rejection,
and a fault of the hub on one report refuses that report only, while the rest of its batch goes on."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from adapters.memory.vault import InMemoryKeyVault
from adapters.sql.database import Database
from adapters.sql.registry import KeyRegistry
from domain.linkage import Linker
from schemas.convert import ReportValidationError, report_from_json
from streams.accept import AcceptStage, Submission
from tests.envelopes import EnvelopeKit
from tests.factories import make_report
from tiphub.keys import KeyStore
from tiphub.runtime import init_keys
from tiphub.settings import Settings


class FailingOn(AcceptStage):
    """The stage with a fault of the hub on one report id (what a bug in accepting would be)."""

    failing: str = ""

    def _accept(self, opened, keys, now):  # type: ignore[no-untyped-def]
        if opened.report["report_id"] == self.failing:
            raise RuntimeError("Sokha Chan N01234567")  # a message that could hold a report's values
        return super()._accept(opened, keys, now)


@pytest.fixture
def kit(tmp_path: Path) -> EnvelopeKit:
    init_keys(Settings(home=tmp_path))
    return EnvelopeKit(tmp_path, epoch=False)


def stage_for(tmp_path: Path, cls: type[AcceptStage] = AcceptStage) -> AcceptStage:
    store = KeyStore(tmp_path)
    return cls(
        registry=KeyRegistry(Database(f"sqlite:///{tmp_path}/registry.sqlite3")),
        vault=InMemoryKeyVault(),
        hub_key=store.hub_encryption_key(),
        hub_key_id=store.hub_key_id(),
        linker=Linker.latest(store.linkage_keys()),
    )


def submit(kit: EnvelopeKit, record: dict) -> Submission:
    key, value = kit.wire(kit.envelope(record))
    return Submission("submitted", 0, 0, key, value, int(time.time() * 1000))


def test_a_document_number_only_one_encoding_can_key_is_rejected_and_the_batch_goes_on(
    kit: EnvelopeKit, tmp_path: Path
) -> None:
    stage = stage_for(tmp_path)
    assert stage.linker.encoding == 2
    poison = report_from_json(make_report())
    poison["subjects"][0]["identifiers"][0]["value"] = "AB<3"  # signed by its agency, past the SDK's checks
    before, after = make_report(), make_report()
    verdicts = stage.process([submit(kit, report_from_json(before)), submit(kit, poison), submit(kit, after)])
    assert [v.accepted is not None for v in verdicts] == [True, False, True]
    rejected = verdicts[1].rejected
    assert rejected is not None
    assert (rejected["reason"], rejected["field"]) == ("invalid_identifier", "subjects[0].identifiers[0].value")
    assert "AB" not in rejected["detail"]


def test_the_sdk_refuses_what_any_encoding_cannot_key_naming_the_field() -> None:
    report = make_report()
    report["subjects"][0]["identifiers"][0]["value"] = "AB<3"
    with pytest.raises(ReportValidationError) as refused:
        report_from_json(report)
    assert refused.value.field == "subjects[0].identifiers[0].value"
    assert refused.value.reason == "invalid_identifier"


def test_a_fault_of_the_hub_on_one_report_refuses_that_report_only(
    kit: EnvelopeKit, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stage = stage_for(tmp_path, FailingOn)
    reports = [make_report() for _ in range(3)]
    stage.failing = reports[1]["report_id"]  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR):
        verdicts = stage.process([submit(kit, report_from_json(r)) for r in reports])
    assert [v.accepted is not None for v in verdicts] == [True, False, True]
    rejected = verdicts[1].rejected
    assert rejected is not None and rejected["reason"] == "unprocessable"
    assert rejected["source_agency"] == reports[1]["source_agency"]
    # Neither the rejection nor the log repeats the exception's message, which may hold a report's values.
    assert "Sokha" not in rejected["detail"] and "Sokha" not in caplog.text and "RuntimeError" in caplog.text


@pytest.mark.parametrize("written", ["1999-04-02\n", "١٩٩٩-04-02", "1999-04-02 ", "19990402"])
def test_a_date_of_birth_that_would_key_apart_from_its_date_is_refused(
    kit: EnvelopeKit, tmp_path: Path, written: str
) -> None:
    """A trailing newline or another script's digits parse as the date but key as another value: the person
    would never link to their other reports. Only YYYY[-MM[-DD]] in ASCII digits is a date of birth."""
    record = report_from_json(make_report())
    record["subjects"][0]["date_of_birth"] = written
    [verdict] = stage_for(tmp_path).process([submit(kit, record)])
    assert verdict.rejected is not None
    assert (verdict.rejected["reason"], verdict.rejected["field"]) == ("invalid_date", "subjects[0].date_of_birth")


class FailingInDerive(AcceptStage):
    """A fault of the hub while deriving tokens, after the signer was verified."""

    def _derive_all(self, opened):  # type: ignore[no-untyped-def]
        raise RuntimeError("Sokha Chan")


def test_a_fault_after_the_signer_is_verified_is_the_agencys_refusal_and_before_it_nobodys(
    kit: EnvelopeKit, tmp_path: Path
) -> None:
    report = make_report()
    [verdict] = stage_for(tmp_path, FailingInDerive).process([submit(kit, report_from_json(report))])
    assert verdict.rejected is not None and verdict.rejected["reason"] == "unprocessable"
    assert verdict.rejected["source_agency"] == report["source_agency"]  # its agency finds it in its rejections
