"""JSON form of an indicator report (CONTRACT section 2) to its Avro record, and back.

The conversion walks the registered Avro schema, so the .avsc files stay the single
definition of the format. Every error names the field path and the reason. Values of
sensitive fields are never repeated in an error: errors end up in logs and on topics.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from schemas.normalise import ENCODINGS, IdentifierError, normalise_identifier
from schemas.registry import load_registry

AGENCY_CODE = re.compile(r"^[A-Z]{2,4}-[A-Z0-9-]+$")
COUNTRY_CODE = re.compile(r"^[A-Z]{2}$")
PARTIAL_DATE = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?")  # ASCII digits, whole string (fullmatch)
SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
SEXES = ("F", "M", "X")
RELIABILITY = tuple("ABCDEF")
CREDIBILITY = tuple("123456")
MAX_TEXT = {"narrative": 20_000, "legal_basis": 2_000}
DEFAULT_MAX_TEXT = 512
MAX_ITEMS = 200

_SENSITIVE = re.compile(
    r"^(subjects\[\d+\]\.(name|date_of_birth|identifiers\[\d+\]\.value)"
    r"|organisations\[\d+\]\.registration|narrative)$"
)


def is_sensitive(path: str) -> bool:
    """Whether the field at `path` holds personal data that must never be echoed or stored in clear."""
    return bool(_SENSITIVE.match(path))


@dataclass(frozen=True)
class FieldError:
    path: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ReportValidationError(ValueError):
    """The report is not valid; `errors` lists every problem found, first one first."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors[:5]) + ("; ..." if len(errors) > 5 else ""))

    @property
    def reason(self) -> str:
        return self.errors[0].code

    @property
    def field(self) -> str | None:
        return self.errors[0].path or None


def _describe(value: Any) -> str:
    return {
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def parse_timestamp(text: str) -> datetime:
    """RFC 3339 with an explicit offset, e.g. 2026-10-30T22:15:00Z."""
    if not isinstance(text, str) or not re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", text):
        raise ValueError("not an RFC 3339 timestamp")
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("timestamp has no time zone offset (add Z or +HH:MM)")
    return parsed.astimezone(UTC)


def parse_partial_date(text: str) -> tuple[int, int | None, int | None]:
    """YYYY, YYYY-MM or YYYY-MM-DD; raises ValueError (without the value) otherwise."""
    match = PARTIAL_DATE.fullmatch(text)
    if not match:
        raise ValueError("not a date of the form YYYY, YYYY-MM or YYYY-MM-DD")
    year, month, day = (int(g) if g else None for g in match.groups())
    assert year is not None
    try:
        date(year, month or 1, day or 1)
    except ValueError:
        raise ValueError("not a calendar date") from None
    if year < 1900:
        raise ValueError("year before 1900")
    return year, month, day


class _Walker:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, path: str, code: str, message: str) -> None:
        self.errors.append(FieldError(path, code, message))

    def convert(self, schema: Any, value: Any, path: str) -> Any:
        if isinstance(schema, list):  # only ["null", T] unions in our schemas
            if value is None:
                return None
            branch = next(b for b in schema if b != "null")
            return self.convert(branch, value, path)
        if isinstance(schema, str):
            return self.primitive(schema, value, path)
        kind = schema["type"]
        if kind == "record":
            return self.record(schema, value, path)
        if kind == "enum":
            if not isinstance(value, str) or value not in schema["symbols"]:
                shown = repr(value) if isinstance(value, str) and len(value) <= 40 else _describe(value)
                self.fail(path, "invalid_enum", f"{shown} is not one of {', '.join(schema['symbols'])}")
                return schema["symbols"][0]
            return value
        if kind == "array":
            if not isinstance(value, list):
                self.fail(path, "invalid_type", f"expected a list, got {_describe(value)}")
                return []
            if len(value) > MAX_ITEMS:
                self.fail(path, "too_many_items", f"{len(value)} items, at most {MAX_ITEMS}")
                return []
            return [self.convert(schema["items"], item, f"{path}[{i}]") for i, item in enumerate(value)]
        if schema.get("logicalType") == "timestamp-millis":
            try:
                return parse_timestamp(value)
            except ValueError as exc:
                self.fail(path, "invalid_timestamp", str(exc))
                return datetime.fromtimestamp(0, UTC)
        return self.convert(kind, value, path)

    def primitive(self, kind: str, value: Any, path: str) -> Any:
        field = path.rsplit(".", 1)[-1]
        if kind == "string":
            if not isinstance(value, str):
                self.fail(path, "invalid_type", f"expected text, got {_describe(value)}")
                return ""
            limit = MAX_TEXT.get(field, DEFAULT_MAX_TEXT)
            if len(value) > limit:
                self.fail(path, "too_long", f"{len(value)} characters, at most {limit}")
            if not value.strip():
                self.fail(path, "empty_value", "must not be empty")
            return value
        if kind == "boolean" and isinstance(value, bool):
            return value
        if kind in ("int", "long") and isinstance(value, int) and not isinstance(value, bool):
            return value
        self.fail(path, "invalid_type", f"expected {kind}, got {_describe(value)}")
        return None

    def record(self, schema: dict[str, Any], value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, "invalid_type", f"expected an object, got {_describe(value)}")
            return {}
        known = {f["name"] for f in schema["fields"]}
        prefix = f"{path}." if path else ""
        for key in value:
            if key not in known:
                shown = repr(key) if isinstance(key, str) and SAFE_NAME.match(key) else "a field"
                self.fail(
                    f"{prefix}{key}" if shown != "a field" else path,
                    "unknown_field",
                    f"{shown} is not a field of {schema['name']} (known: {', '.join(sorted(known))})",
                )
        out: dict[str, Any] = {}
        for field in schema["fields"]:
            name = field["name"]
            if name in value:
                out[name] = self.convert(field["type"], value[name], f"{prefix}{name}")
            elif "default" in field:
                out[name] = field["default"] if not isinstance(field["default"], list) else []
            else:
                self.fail(f"{prefix}{name}", "missing_field", "is required")
        return out


def _check_semantics(report: dict[str, Any], walker: _Walker) -> None:
    """Rules the Avro types cannot express."""
    fail = walker.fail
    try:
        if str(uuid.UUID(report.get("report_id") or "")) != report.get("report_id"):
            fail("report_id", "invalid_uuid", "not a UUID in canonical lower-case form")
    except ValueError:
        fail("report_id", "invalid_uuid", "not a UUID")
    if not AGENCY_CODE.match(report.get("source_agency") or ""):
        fail("source_agency", "invalid_code", "not an agency code of the form [A-Z]{2,4}-[A-Z0-9-]+")
    if report.get("source_reliability") is not None and report["source_reliability"] not in RELIABILITY:
        fail("source_reliability", "invalid_grade", "must be one of A, B, C, D, E, F")
    if report.get("info_credibility") is not None and report["info_credibility"] not in CREDIBILITY:
        fail("info_credibility", "invalid_grade", "must be one of 1, 2, 3, 4, 5, 6")
    if report.get("estimated_victims") is not None and report["estimated_victims"] < 0:
        fail("estimated_victims", "invalid_value", "must be 0 or more")
    if len(set(report.get("elements") or [])) != len(report.get("elements") or []):
        fail("elements", "duplicate_value", "lists an element twice")

    def country(path: str, code: str | None) -> None:
        if code is not None and not COUNTRY_CODE.match(code):
            fail(path, "invalid_country", "not an ISO 3166-1 alpha-2 code (two capital letters)")

    observed: datetime | None = report.get("observed_at")
    for i, subject in enumerate(report.get("subjects") or []):
        base = f"subjects[{i}]"
        country(f"{base}.nationality", subject.get("nationality"))
        if subject.get("sex") is not None and subject["sex"] not in SEXES:
            fail(f"{base}.sex", "invalid_value", "must be F, M or X")
        dob = subject.get("date_of_birth")
        if dob is not None:
            try:
                year, _, _ = parse_partial_date(dob)
                if observed is not None and year > observed.year:
                    fail(f"{base}.date_of_birth", "invalid_date", "after observed_at")
            except ValueError as exc:
                fail(f"{base}.date_of_birth", "invalid_date", str(exc))
        for j, ident in enumerate(subject.get("identifiers") or []):
            country(f"{base}.identifiers[{j}].issuer", ident.get("issuer"))
            # Valid in every encoding a linkage key may use: a value one encoding keys and another refuses
            # (`AB<3` is three characters as written, one once a check digit is dropped) would be accepted
            # here and fail where the hub derives its token.
            try:
                for encoding in sorted(ENCODINGS):
                    normalise_identifier(
                        ident.get("kind", ""),
                        ident.get("value") or "",
                        ident.get("issuer"),
                        subject.get("nationality"),
                        encoding,
                    )
            except IdentifierError as exc:
                fail(f"{base}.identifiers[{j}].value", "invalid_identifier", str(exc))
    for i, org in enumerate(report.get("organisations") or []):
        country(f"organisations[{i}].country", org.get("country"))
        if not org.get("name") and not org.get("registration"):
            fail(f"organisations[{i}]", "missing_field", "needs a name or a registration")
    for i, loc in enumerate(report.get("locations") or []):
        country(f"locations[{i}].country", loc.get("country"))


def report_from_json(obj: Any) -> dict[str, Any]:
    """Validate the JSON form and return the Avro record of tiphub.IndicatorReport."""
    schema = load_registry().latest("tiphub.IndicatorReport").schema
    walker = _Walker()
    record = walker.record(schema, obj, "")
    if not walker.errors:
        _check_semantics(record, walker)
    if walker.errors:
        raise ReportValidationError(walker.errors)
    return record


def validate_record(record: dict[str, Any]) -> None:
    """Re-check a decoded IndicatorReport record (e.g. after decryption in the accept stage)."""
    walker = _Walker()
    _check_semantics(record, walker)
    for path, value in _sensitive_strings(record):
        limit = MAX_TEXT.get(path.rsplit(".", 1)[-1], DEFAULT_MAX_TEXT)
        if len(value) > limit:
            walker.fail(path, "too_long", f"{len(value)} characters, at most {limit}")
    if walker.errors:
        raise ReportValidationError(walker.errors)


def _sensitive_strings(record: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for i, subject in enumerate(record.get("subjects") or []):
        for field in ("name", "date_of_birth"):
            if subject.get(field) is not None:
                found.append((f"subjects[{i}].{field}", subject[field]))
        for j, ident in enumerate(subject.get("identifiers") or []):
            found.append((f"subjects[{i}].identifiers[{j}].value", ident["value"]))
    for i, org in enumerate(record.get("organisations") or []):
        if org.get("registration") is not None:
            found.append((f"organisations[{i}].registration", org["registration"]))
    if record.get("narrative") is not None:
        found.append(("narrative", record["narrative"]))
    return found


def report_to_json(record: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of an IndicatorReport record, dropping absent optional fields."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None and v != []}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return value

    out: dict[str, Any] = clean(record)
    out["elements"] = list(record.get("elements") or [])
    return out
