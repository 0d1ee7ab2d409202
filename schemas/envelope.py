"""The signed envelope: which bytes are signed, and which report fields are sealed.

Shared by the agency side (producers/) and the hub's accept stage, so both sign and check
exactly the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from schemas.codec import WireCodec
from schemas.registry import RegisteredSchema, load_registry

SIGNING_DOMAIN = b"tiphub/envelope/v1\x00"
SUBMITTED = "tiphub.SubmittedReport"
RETRACTION = "tiphub.ReportRetraction"


def signing_bytes(envelope: dict[str, Any], schema: str | RegisteredSchema = SUBMITTED) -> bytes:
    """domain || schema id (4 bytes) || Avro body of the envelope with an empty signature.

    Avro binary encoding is deterministic for a record and schema, so the verifier rebuilds
    these bytes from the decoded record, with the schema version the envelope was written with
    (a name means its latest version). Everything in the envelope is signed, ciphertexts included
    (encrypt-then-sign).
    """
    if isinstance(schema, str):
        schema = load_registry().latest(schema)
    unsigned = {**envelope, "signature": b""}
    return SIGNING_DOMAIN + struct.pack(">I", schema.schema_id) + WireCodec.body(schema, unsigned)


def sensitive_slots(report: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    """Every sensitive value as (field path, the dict holding it, key in that dict).

    The path is the associated data of its ciphertext, so a sealed value opens only at the
    place it was sealed for.
    """
    for i, subject in enumerate(report.get("subjects") or []):
        for field in ("name", "date_of_birth"):
            if subject.get(field) is not None:
                yield f"subjects[{i}].{field}", subject, field
        for j, ident in enumerate(subject.get("identifiers") or []):
            yield f"subjects[{i}].identifiers[{j}].value", ident, "value"
    for i, org in enumerate(report.get("organisations") or []):
        if org.get("registration") is not None:
            yield f"organisations[{i}].registration", org, "registration"
    if report.get("narrative") is not None:
        yield "narrative", report, "narrative"


def transform_sensitive(report: dict[str, Any], transform: Any) -> dict[str, Any]:
    """A deep copy of `report` with every sensitive value v at path p replaced by transform(p, v)."""
    out = _copy_holders(report)
    for path, holder, key in sensitive_slots(out):
        holder[key] = transform(path, holder[key])
    return out


def _copy_holders(report: dict[str, Any]) -> dict[str, Any]:
    """A copy of the report in which every dict that `sensitive_slots` can yield is new; the rest is shared.

    Decoded records hold immutable leaves, so only the holders written to need copying.
    """
    out = dict(report)
    if report.get("subjects") is not None:
        out["subjects"] = [dict(subject) for subject in report["subjects"]]
        for subject in out["subjects"]:
            if subject.get("identifiers") is not None:
                subject["identifiers"] = [dict(ident) for ident in subject["identifiers"]]
    if report.get("organisations") is not None:
        out["organisations"] = [dict(org) for org in report["organisations"]]
    return out
