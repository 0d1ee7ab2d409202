"""The accepted projection: what the hub keeps of a validated plaintext report, and the only place it
is built. The accept stage builds it with real vault keys and linkage tokens; `policy explain` builds
it with opaque markers, so a decision explained is a decision on the same shape the stages decide on.

Sensitive values (names, dates of birth, identifier values, registrations, the narrative) are passed
through `seal`; every other field is copied as it is. A new field of the report reaches recipients
only once it is named here and an agreement allows it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from domain.linkage import Linker, age_facts

# The report's facts kept as they are (no personal data: checked by the schema and the agreements).
PLAIN_FIELDS = (
    "report_id",
    "source_agency",
    "observed_at",
    "indicator_type",
    "tlp",
    "purpose",
    "legal_basis",
    "source_reliability",
    "info_credibility",
    "elements",
    "locations",
    "estimated_victims",
)

# seal(key_id, path, plaintext) -> what the accepted record holds in place of the plaintext
Seal = Callable[[str, str, str], bytes]
# per subject, per identifier: (kind, linkage token)
SubjectTokens = Sequence[Sequence[tuple[str, str]]]


def subject_key_id(key_prefix: str, index: int) -> str:
    return f"{key_prefix}/s{index}"


def report_key_id(key_prefix: str) -> str:
    return f"{key_prefix}/r"


def registration_token(linker: Linker, org: dict[str, Any]) -> str | None:
    """An organisation's registration as a keyed token: country and the registration's letters and digits."""
    registration = org.get("registration")
    if registration is None:
        return None
    return linker.token(
        "ORG_REGISTRATION",
        f"{org.get('country') or '??'}:{''.join(c for c in registration.upper() if c.isalnum())}",
    )


def accepted_projection(
    report: dict[str, Any],
    *,
    key_prefix: str,
    seal: Seal,
    tokens: SubjectTokens,
    linker: Linker | None,
    accepted_at: datetime,
) -> dict[str, Any]:
    """The AcceptedReport fields derived from a plaintext report (the stage adds where it came from).

    `tokens`: each subject's identifier tokens under the current linkage key. `linker`: derives the
    fuzzy name and birth-date material and registration tokens; None leaves them out (explaining)."""

    def sealed(key_id: str, path: str, value: str | None) -> bytes | None:
        return None if value is None else seal(key_id, path, value)

    report_key = report_key_id(key_prefix)
    subjects = []
    for i, (subject, subject_tokens) in enumerate(zip(report["subjects"], tokens, strict=True)):
        key_id = subject_key_id(key_prefix, i)
        name, dob = subject.get("name"), subject.get("date_of_birth")
        minor, band = age_facts(dob, report["observed_at"])
        base = f"subjects[{i}]"
        subjects.append(
            {
                "role": subject["role"],
                "subject_key_id": key_id,
                "name": sealed(key_id, f"{base}.name", name),
                "date_of_birth": sealed(key_id, f"{base}.date_of_birth", dob),
                "sex": subject.get("sex"),
                "nationality": subject.get("nationality"),
                "minor_at_observation": minor,
                "age_band": band,
                "name_dob_encoding": linker.name_dob_encoding(name, dob) if linker else None,
                "blocking_keys": linker.blocking_keys(name, dob) if linker else [],
                "identifiers": [
                    {
                        "kind": ident["kind"],
                        "linkage_token": token,
                        "value": sealed(key_id, f"{base}.identifiers[{j}].value", ident["value"]),
                        "issuer": ident.get("issuer"),
                    }
                    for j, (ident, (_, token)) in enumerate(zip(subject["identifiers"], subject_tokens, strict=True))
                ],
            }
        )
    organisations = [
        {
            "role": org["role"],
            "name": org.get("name"),
            "registration": sealed(report_key, f"organisations[{i}].registration", org.get("registration")),
            "registration_token": registration_token(linker, org) if linker else None,
            "country": org.get("country"),
        }
        for i, org in enumerate(report["organisations"])
    ]
    return {
        **{k: report.get(k) for k in PLAIN_FIELDS},
        "subjects": subjects,
        "organisations": organisations,
        "narrative": sealed(report_key, "narrative", report.get("narrative")),
        "report_key_id": report_key,
        "accepted_at": accepted_at,
    }
