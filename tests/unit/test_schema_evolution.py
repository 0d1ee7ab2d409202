"""Schema evolution: version 2 of the report adds an optional field. Producers and consumers of both
versions coexist, and the registry refuses a version that would break either of them."""

from __future__ import annotations

import copy
import io
import json
import shutil
import time
from pathlib import Path

import fastavro
import pytest

from adapters.memory.vault import InMemoryKeyVault
from adapters.sql.database import Database
from adapters.sql.registry import KeyRegistry
from domain.linkage import Linker
from schemas.codec import WireCodec
from schemas.compat import full_problems, problems
from schemas.convert import ReportValidationError, report_from_json
from schemas.registry import AVRO_DIR, REGISTRY_FILE, IncompatibleSchema, build_registry, expand, fingerprint
from schemas.registry import _load_named_types as load_types
from streams.accept import AcceptStage, Submission
from tests.envelopes import EnvelopeKit
from tests.factories import make_report
from tiphub.keys import KeyStore
from tiphub.runtime import init_keys
from tiphub.settings import Settings

CODEC = WireCodec()
V1, V2 = (CODEC.registry.versions("tip.reports.submitted-value")[i] for i in (0, 1))
ACCEPTED_V1, ACCEPTED_V2, ACCEPTED_V3 = CODEC.registry.versions("tip.reports.accepted-value")


@pytest.fixture
def kit(tmp_path: Path) -> EnvelopeKit:
    init_keys(Settings(home=tmp_path))
    return EnvelopeKit(tmp_path, epoch=False)


@pytest.fixture
def stage(kit: EnvelopeKit, tmp_path: Path) -> AcceptStage:
    store = KeyStore(tmp_path)
    return AcceptStage(
        registry=KeyRegistry(Database(f"sqlite:///{tmp_path}/registry.sqlite3")),
        vault=InMemoryKeyVault(),
        hub_key=store.hub_encryption_key(),
        hub_key_id=store.hub_key_id(),
        linker=Linker.latest(store.linkage_keys()),
    )


def submission(key_value: tuple[bytes, bytes]) -> Submission:
    return Submission("submitted", 0, 0, *key_value, int(time.time() * 1000))


def test_version_2_adds_one_optional_field_and_is_full_compatible() -> None:
    report_v1, report_v2 = CODEC.registry.versions("tiphub.IndicatorReport")
    added = {f["name"] for f in report_v2.schema["fields"]} - {f["name"] for f in report_v1.schema["fields"]}
    assert added == {"estimated_victims"}
    for old, new in ((report_v1, report_v2), (V1, V2), (ACCEPTED_V1, ACCEPTED_V2), (ACCEPTED_V2, ACCEPTED_V3)):
        assert full_problems(new.schema, old.schema) == []
    assert CODEC.registry.latest("tiphub.IndicatorReport").schema_id == 19


def test_a_v1_producer_and_a_v2_producer_publish_side_by_side_and_both_are_accepted(
    stage: AcceptStage, kit: EnvelopeKit
) -> None:
    old_sdk = make_report()  # an agency system still on release 1 knows nothing of estimated_victims
    new_sdk = make_report(estimated_victims=3)
    v1_value = kit.wire(kit.envelope(old_sdk, envelope_schema=V1), V1)
    v2_value = kit.wire(kit.envelope(new_sdk))
    assert v1_value[1][1:5] == (2).to_bytes(4, "big") and v2_value[1][1:5] == (20).to_bytes(4, "big")

    verdicts = stage.process([submission(v1_value), submission(v2_value)])
    assert [v.rejected for v in verdicts] == [None, None]
    by_id = {v.report_id: v.accepted for v in verdicts}
    assert by_id[old_sdk["report_id"]]["estimated_victims"] is None  # v1 data reads the default
    assert by_id[new_sdk["report_id"]]["estimated_victims"] == 3

    # A consumer still on release 1 reads the accepted records of this release with its v1 schema:
    # the newer fields are skipped.
    for accepted in by_id.values():
        value = CODEC.encode_with(ACCEPTED_V3, accepted)
        old_view = fastavro.schemaless_reader(io.BytesIO(value[5:]), ACCEPTED_V3.parsed, ACCEPTED_V1.parsed)
        assert "estimated_victims" not in old_view
        assert old_view["report_id"] == accepted["report_id"] and old_view["subjects"] == accepted["subjects"]


def test_the_signature_covers_the_version_the_envelope_was_written_with(stage: AcceptStage, kit: EnvelopeKit) -> None:
    signed_as_v1 = kit.envelope(make_report(), envelope_schema=V1)
    relabelled = kit.wire(signed_as_v1, V2)  # re-encoded as v2 by someone without the agency's key
    customs = kit.store.agency_key("NZ-CUSTOMS")
    # Correctly signed as v1, but naming the v2 report: the envelope and its report must be one version.
    claims_v2_report = kit.wire(kit.resign({**signed_as_v1, "report_schema_id": 19}, customs, V1), V1)
    verdicts = stage.process([submission(relabelled), submission(claims_v2_report)])
    assert [v.rejected["reason"] for v in verdicts if v.rejected] == ["bad_signature", "unknown_report_schema"]


def test_the_new_field_is_validated() -> None:
    assert report_from_json(make_report(estimated_victims=0))["estimated_victims"] == 0
    with pytest.raises(ReportValidationError) as refused:
        report_from_json(make_report(estimated_victims=-2))
    assert refused.value.errors[0].path == "estimated_victims" and refused.value.errors[0].code == "invalid_value"


def test_the_compatibility_check_names_what_would_break() -> None:
    base = copy.deepcopy(CODEC.registry.by_id(1).schema)  # type: ignore[union-attr]

    def changed(edit) -> dict:  # type: ignore[no-untyped-def]
        schema = copy.deepcopy(base)
        edit(schema)
        return schema

    def field(schema: dict, name: str) -> dict:
        return next(f for f in schema["fields"] if f["name"] == name)

    required = changed(lambda s: s["fields"].append({"name": "case_number", "type": "string"}))
    assert full_problems(required, base) == [
        "new readers, old data: case_number: missing from the data and has no default"
    ]
    retyped = changed(lambda s: field(s, "narrative").update(type=["null", "int"]))
    assert any("narrative" in p for p in full_problems(retyped, base))
    dropped = changed(lambda s: s["fields"].remove(field(s, "report_id")))
    assert full_problems(dropped, base) == [
        "old readers, new data: report_id: missing from the data and has no default"
    ]
    # Enums grow by a symbol only with an enum default (CONTRACT section 2): an old reader reads a new
    # TLP as its default RED, the most restrictive. Without a default, old readers would fail.
    tlp = copy.deepcopy(CODEC.registry.by_id(1).schema["fields"][4]["type"])  # type: ignore[union-attr]
    assert tlp["name"] == "Tlp" and tlp["default"] == "RED"
    purple = {**tlp, "symbols": [*tlp["symbols"], "PURPLE"]}
    assert full_problems(purple, tlp) == []
    no_default = {k: v for k, v in tlp.items() if k != "default"}
    refused = full_problems({**no_default, "symbols": [*tlp["symbols"], "PURPLE"]}, no_default)
    assert refused == [
        "old readers, new data: (top): symbols ['PURPLE'] unknown to the reader, which has no enum default"
    ]
    widened = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]}
    narrow = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "int"}]}
    assert problems(widened, narrow) == []  # an int is read as a long ...
    assert problems(narrow, widened) == ["n: a long cannot be read as int"]  # ... not the other way


def test_the_registry_refuses_an_incompatible_new_version(tmp_path: Path) -> None:
    avro = tmp_path / "avro"
    shutil.copytree(AVRO_DIR, avro)
    (avro / "candidate").mkdir()
    v3 = json.loads((avro / "v2" / "tiphub.IndicatorReport.avsc").read_text())
    v3["fields"].append({"name": "case_number", "type": "string"})  # required: v1 and v2 data lack it
    (avro / "candidate" / "tiphub.IndicatorReport.avsc").write_text(json.dumps(v3))
    rows = json.loads(REGISTRY_FILE.read_text())
    types = {**load_types(avro), **load_types(avro / "candidate")}
    rows["schemas"].append(
        {
            "id": 99,
            "name": "tiphub.IndicatorReport",
            "subject": "tiphub.IndicatorReport",
            "version": 3,
            "types": "candidate",
            "fingerprint": fingerprint(expand("tiphub.IndicatorReport", types)),
        }
    )
    registry_file = tmp_path / "registry.json"
    registry_file.write_text(json.dumps(rows))
    with pytest.raises(IncompatibleSchema, match=r"v3 \(id 99\) is not FULL compatible with v2.*case_number"):
        build_registry(registry_file, avro)
