"""The correlator's facts as plain JSON values, and back: the report facts and person occurrences the union's
tables on disk (domain/working_set.py) hold.

Text only, never pickled objects; anything malformed is a `StateError`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from domain.facts import PersonOccurrence, ReportFacts
from domain.working_set import Codec, StateError

T = TypeVar("T")


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def occurrence_row(occ: PersonOccurrence) -> list[Any]:
    return [
        occ.occ_id,
        occ.report_id,
        occ.role,
        occ.minor,
        occ.subject_key_id,
        list(occ.documents),
        list(occ.contacts),
        b64(occ.clk),
        occ.dob_key,
        list(occ.ny_keys),
        [[b64(clk), dob, list(ny)] for clk, dob, ny in occ.bridges],
        [[kind, list(tokens)] for kind, tokens in occ.identifiers],
        occ.named,
        occ.dated,
    ]


def report_row(report: ReportFacts) -> list[Any]:
    return [
        report.report_id,
        report.agency,
        when(report.observed_at),
        when(report.accepted_at),
        report.indicator_type,
        sorted(report.elements),
        report.reliability,
        report.credibility,
        [occurrence_row(o) for o in report.people],
        list(report.organisations),
        [list(g) for g in report.aliases],
        [list(g) for g in report.registrations],
    ]


def checked(value: Any, kind: type[T] | tuple[type, ...]) -> Any:
    if not isinstance(value, kind):
        raise StateError(f"expected {kind}, found {type(value).__name__}")
    return value


def text(value: Any) -> str:
    if type(value) is not str:
        raise StateError(f"expected text, found {type(value).__name__}")
    return value


def maybe(value: Any, read: Callable[[Any], T]) -> T | None:
    return None if value is None else read(value)


def texts(value: Any) -> tuple[str, ...]:
    if type(value) is not list or not all(type(v) is str for v in value):
        raise StateError("expected a list of texts")
    return tuple(value)


def raw_bytes(value: Any) -> bytes:
    return base64.b64decode(text(value), validate=True)


def moment(value: Any) -> datetime:
    return datetime.fromisoformat(text(value))


def flag(value: Any) -> bool:
    return bool(checked(value, bool))


def read_occurrence(row: Any) -> PersonOccurrence:
    occ_id, report_id, role, minor, subject, documents, contacts, clk, dob, ny, bridges, idents, named, dated = checked(
        row, list
    )
    return PersonOccurrence(
        occ_id=text(occ_id),
        report_id=text(report_id),
        role=text(role),
        minor=maybe(minor, flag),
        subject_key_id=text(subject),
        documents=texts(documents),
        contacts=texts(contacts),
        clk=maybe(clk, raw_bytes),
        dob_key=maybe(dob, text),
        ny_keys=texts(ny),
        bridges=tuple(
            (maybe(b_clk, raw_bytes), maybe(b_dob, text), texts(b_ny))
            for b_clk, b_dob, b_ny in (checked(b, list) for b in checked(bridges, list))
        ),
        identifiers=tuple((text(k), texts(tokens)) for k, tokens in (checked(i, list) for i in checked(idents, list))),
        named=flag(named),
        dated=flag(dated),
    )


def read_report(row: Any) -> ReportFacts:
    rid, agency, observed, accepted, indicator, elements, reliability, credibility, people, orgs, aliases, regs = (
        checked(row, list)
    )
    return ReportFacts(
        report_id=text(rid),
        agency=text(agency),
        observed_at=moment(observed),
        accepted_at=moment(accepted),
        indicator_type=text(indicator),
        elements=frozenset(texts(elements)),
        reliability=maybe(reliability, text),
        credibility=maybe(credibility, text),
        people=tuple(read_occurrence(p) for p in checked(people, list)),
        organisations=texts(orgs),
        aliases=tuple(texts(g) for g in checked(aliases, list)),
        registrations=tuple(texts(g) for g in checked(regs, list)),
    )


def decode_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StateError(f"not JSON: {exc}") from exc


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


REPORT: Codec[ReportFacts] = Codec(lambda r: dumps(report_row(r)), lambda raw: read_report(decode_json(raw)))
OCCURRENCE: Codec[PersonOccurrence] = Codec(
    lambda o: dumps(occurrence_row(o)), lambda raw: read_occurrence(decode_json(raw))
)
