"""Wire format and registry: ids fixed, fingerprints pinned, every malformed value named."""

from __future__ import annotations

import json
import struct

import pytest

from schemas.codec import CodecError, WireCodec
from schemas.convert import report_from_json
from schemas.registry import REGISTRY_FILE, build_registry, load_registry
from tests.factories import make_report


def test_registry_ids_are_fixed() -> None:
    ids = {(entry.name, entry.version): entry.schema_id for entry in load_registry()}
    assert {name: i for (name, version), i in ids.items() if version == 2} == {
        "tiphub.IndicatorReport": 19,
        "tiphub.SubmittedReport": 20,
        "tiphub.AcceptedReport": 21,
        "tiphub.AuditRecord": 23,
        "tiphub.Signal": 24,
        "tiphub.Coverage": 25,
        "tiphub.SummaryEvent": 26,
    }
    assert {name: i for (name, version), i in ids.items() if version == 1} == {
        "tiphub.IndicatorReport": 1,
        "tiphub.SubmittedReport": 2,
        "tiphub.AcceptedReport": 3,
        "tiphub.RejectedReport": 4,
        "tiphub.AgreementLoaded": 5,
        "tiphub.SharingDecision": 6,
        "tiphub.AuditEvent": 7,
        "tiphub.AuditRecord": 8,
        "tiphub.SubjectErased": 9,
        "tiphub.Signal": 10,
        "tiphub.Coverage": 11,
        "tiphub.ReportRetraction": 12,
        "tiphub.ReportRetracted": 13,
        "tiphub.SightingBatch": 14,
        "tiphub.LinkBatch": 15,
        "tiphub.EntityMerged": 16,
        "tiphub.SummaryEvent": 17,
        "tiphub.TriageEvent": 18,
    }


def test_a_changed_schema_file_is_refused_until_it_gets_a_new_version(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = json.loads(REGISTRY_FILE.read_text())
    rows["schemas"][0]["fingerprint"] = "0" * 64
    edited = tmp_path / "registry.json"
    edited.write_text(json.dumps(rows))
    with pytest.raises(ValueError, match="changed on disk"):
        build_registry(edited)


def test_served_schemas_are_self_contained() -> None:
    for entry in load_registry():
        text = json.dumps(entry.schema)
        for enum in ("IndicatorType", "Tlp", "Element"):
            if f'"tiphub.{enum}"' in text:
                assert f'"name": "{enum}"' in text, (entry.name, enum)


def test_round_trip_in_confluent_wire_format() -> None:
    codec = WireCodec()
    record = report_from_json(make_report())
    value = codec.encode("tiphub.IndicatorReport", record)
    assert value[0] == 0 and struct.unpack(">I", value[1:5])[0] == 19  # the latest version's id
    schema, decoded = codec.decode(value)
    assert schema.name == "tiphub.IndicatorReport"
    assert decoded == record


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda v: None, "empty_value"),
        (lambda v: v[:3], "not_wire_format"),
        (lambda v: b"\x01" + v[1:], "not_wire_format"),
        (lambda v: v[:1] + struct.pack(">I", 77) + v[5:], "unknown_schema_id"),
        (lambda v: v[: len(v) - 9], "undecodable"),
        (lambda v: v + b"\x00\x01", "undecodable"),
        (lambda v: v + b"\x00" * 5000, "oversized"),
    ],
)
def test_malformed_values_are_refused_with_a_reason(mangle, reason: str) -> None:  # type: ignore[no-untyped-def]
    codec = WireCodec(max_bytes=4096)
    value = codec.encode("tiphub.IndicatorReport", report_from_json(make_report()))
    with pytest.raises(CodecError) as caught:
        codec.decode(mangle(value))
    assert caught.value.reason == reason


def test_decode_can_insist_on_a_schema() -> None:
    codec = WireCodec()
    value = codec.encode("tiphub.IndicatorReport", report_from_json(make_report()))
    with pytest.raises(CodecError) as caught:
        codec.decode(value, expect="tiphub.SubmittedReport")
    assert caught.value.reason == "wrong_schema"
