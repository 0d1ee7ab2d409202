"""Hypothesis strategies: accepted reports and agreements of every shape the engine may meet."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from policies.model import FIELDS, TLP_ORDER, Agreement, FieldRule, LegalBasis, OriginatorAgreement
from schemas.registry import AVRO_DIR


def _symbols(name: str) -> list[str]:
    return list(json.loads((AVRO_DIR / f"tiphub.{name}.avsc").read_text())["symbols"])


INDICATOR_TYPES = _symbols("IndicatorType")
PURPOSES = _symbols("Purpose")
ELEMENTS = _symbols("Element")
ROLES = _symbols("SubjectRole")
KINDS = _symbols("IdentifierKind")
AGENCIES = ["NZ-CUSTOMS", "NZ-IMMIGRATION", "NZ-DIA", "NZ-LABOUR", "NZ-POLICE", "NGO-SHAKTI"]
PARTNERS = ["HSU-TH", "HSU-MY", "HSU-PH", "NZ-NIC", "NZ-LABOUR"]
PLACES = ["Auckland", "Pukekohe", "Christchurch", "Port of Tauranga", "Queenstown", None]
AGE_BANDS = ["0-8", "9-17", "18-20", "21-23", "24-26", "27-29", "30-38", "39-47", "48+"]
T0 = datetime(2025, 1, 1, tzinfo=UTC)

sealed = st.binary(min_size=28, max_size=40)
moments = st.integers(0, 3 * 365 * 24).map(lambda h: T0 + timedelta(hours=h))


@st.composite
def accepted_reports(draw: st.DrawFn) -> dict[str, Any]:
    report_id = f"r-{draw(st.integers(0, 10**9))}"
    subjects = []
    for i in range(draw(st.integers(0, 3))):
        band = draw(st.sampled_from([*AGE_BANDS, None]))
        subjects.append(
            {
                "role": draw(st.sampled_from(ROLES)),
                "subject_key_id": f"{report_id}/s{i}",
                "name": draw(st.none() | sealed),
                "date_of_birth": draw(st.none() | sealed),
                "sex": draw(st.sampled_from(["F", "M", "X", None])),
                "nationality": draw(st.sampled_from(["KH", "TH", "PH", None])),
                "minor_at_observation": None if band is None else band in ("0-8", "9-17"),
                "age_band": band,
                "identifiers": [
                    {
                        "kind": draw(st.sampled_from(KINDS)),
                        "issuer": draw(st.sampled_from(["KH", None])),
                        "value": draw(sealed),
                        "linkage_token": "lk1.x",
                    }
                    for _ in range(draw(st.integers(0, 3)))
                ],
            }
        )
    return {
        "report_id": report_id,
        "source_agency": draw(st.sampled_from(AGENCIES)),
        "observed_at": draw(moments),
        "indicator_type": draw(st.sampled_from(INDICATOR_TYPES)),
        "tlp": draw(st.sampled_from(TLP_ORDER)),
        "purpose": draw(st.sampled_from([*PURPOSES, None])),
        "legal_basis": draw(st.none() | st.just("Customs and Excise Act 2018 s 317")),
        "source_reliability": draw(st.sampled_from(["A", "C", None])),
        "info_credibility": draw(st.sampled_from(["1", "4", None])),
        "elements": draw(st.lists(st.sampled_from(ELEMENTS), unique=True, max_size=5)),
        "subjects": subjects,
        "organisations": [
            {
                "role": "EMPLOYER",
                "name": draw(st.sampled_from(["Golden Path Ltd", None])) or "Kiwi Ltd",
                "registration": draw(st.none() | sealed),
                "country": draw(st.sampled_from(["NZ", None])),
            }
            for _ in range(draw(st.integers(0, 2)))
        ],
        "locations": [
            {"country": draw(st.sampled_from(["NZ", "TH", None])), "place": draw(st.sampled_from(PLACES))}
            for _ in range(draw(st.integers(0, 2)))
        ],
        "narrative": draw(st.none() | sealed),
        "report_key_id": f"{report_id}/r",
    }


@st.composite
def agreements(draw: st.DrawFn, recipient: str | None = None) -> Agreement:
    recipient = recipient or draw(st.sampled_from(PARTNERS))
    kind = "domestic" if recipient.startswith("NZ-") else "foreign"
    start = draw(moments).date()
    fields = {}
    for key in draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True, min_size=len(FIELDS) // 2)):
        fields[key] = FieldRule(draw(st.sampled_from(FIELDS[key][0])), f"clause {key}")
    content = {"recipient": recipient, "fields": {k: v.rule for k, v in fields.items()}, "salt": draw(st.integers())}
    return Agreement(
        recipient=recipient,
        kind=kind,
        country="NZ" if kind == "domestic" else recipient[-2:],
        version=draw(st.integers(1, 5)),
        title="generated",
        legal_basis=(LegalBasis("Act", "s 1"),),
        valid_from=start,
        valid_until=start + timedelta(days=draw(st.integers(0, 900))),
        purposes=draw(st.none() | st.none() | st.frozensets(st.sampled_from(PURPOSES), min_size=1)),
        indicator_types=draw(st.none() | st.none() | st.frozensets(st.sampled_from(INDICATOR_TYPES), min_size=6)),
        tlp_ceiling=draw(st.sampled_from(["AMBER", "AMBER_STRICT", "GREEN", "CLEAR"])),
        fields=fields,
        onward_sharing=draw(st.booleans()),
        retention_days=365,
        content=content,
    )


@st.composite
def originators(draw: st.DrawFn, originator: str, likely: str | None = None) -> OriginatorAgreement:
    release = draw(st.frozensets(st.sampled_from(["HSU-TH", "HSU-MY", "HSU-PH"])))
    if likely and likely.startswith("HSU-") and draw(st.integers(0, 9)) < 7:
        release = release | {likely}
    start = date(2025, 1, 1) + timedelta(days=draw(st.integers(0, 60)))
    return OriginatorAgreement(
        originator=originator,
        version=1,
        title="generated",
        legal_basis=(LegalBasis("Act", "s 2"),),
        valid_from=start,
        valid_until=start + timedelta(days=draw(st.integers(200, 1500))),
        foreign_release=release,
        pre_authorised_release=frozenset(),
        content={"originator": originator, "release": sorted(release), "start": str(start)},
    )
