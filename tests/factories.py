"""Test data: valid reports in their JSON form, with overrides."""

from __future__ import annotations

import copy
import uuid
from typing import Any

BASE_REPORT: dict[str, Any] = {
    "source_agency": "NZ-CUSTOMS",
    "observed_at": "2026-10-30T22:15:00Z",
    "indicator_type": "BORDER_CROSSING",
    "tlp": "AMBER",
    "purpose": "PREVENTION",
    "legal_basis": "Customs and Excise Act 2018 s 317",
    "source_reliability": "B",
    "info_credibility": "2",
    "elements": ["ACT_TRANSPORT", "MEANS_DECEPTION"],
    "subjects": [
        {
            "role": "SUSPECTED_VICTIM",
            "name": "Sokha Chan",
            "date_of_birth": "2008-04-02",
            "sex": "F",
            "nationality": "KH",
            "identifiers": [
                {"kind": "PASSPORT", "value": "N01234567", "issuer": "KH"},
                {"kind": "PHONE", "value": "+85512345678"},
            ],
        }
    ],
    "organisations": [
        {
            "role": "RECRUITMENT_AGENCY",
            "name": "Golden Path Ltd",
            "registration": "NZBN-9429041234567",
            "country": "NZ",
        }
    ],
    "locations": [{"country": "NZ", "place": "Auckland International Airport"}],
    "narrative": "Travelling on a job offer that did not match the visa.",
}


def make_report(**overrides: Any) -> dict[str, Any]:
    report = copy.deepcopy(BASE_REPORT)
    report["report_id"] = str(uuid.uuid4())
    report.update(copy.deepcopy(overrides))
    return report


# A few people, each as agencies record them differently (by passport, by name and birth date, both, or
# by name and phone), for correlation and noninterference tests.
PEOPLE = [
    ("Sokha Chan", "2008-04-02", "N01234567", "+85512345678"),
    ("Dara Kim", "1999-01-12", "N07654321", "+85598765432"),
    ("Lan Nguyen", "2001-07-30", "C1234567", "+84901234567"),
    ("Malai Suksawat", "2009-01-17", "AA1234567", "+66812345678"),
]
RECORDED_AS = ("passport", "name", "both", "phone")


def person_as_recorded(person: int, shown: str) -> dict[str, Any]:
    """PEOPLE[person] as one agency happens to record them: `shown` is one of RECORDED_AS."""
    name, dob, passport, phone = PEOPLE[person]
    out: dict[str, Any] = {"role": "SUSPECTED_VICTIM", "nationality": "KH", "identifiers": []}
    if shown in ("name", "both"):
        out.update(name=name, date_of_birth=dob)
    if shown in ("passport", "both"):
        out["identifiers"].append({"kind": "PASSPORT", "value": passport, "issuer": "KH"})
    if shown == "phone":
        out.update(name=name)
        out["identifiers"].append({"kind": "PHONE", "value": phone})
    return out


def bridge_of(*people: int) -> dict[str, Any]:
    """One "person" recorded with the passports of several of PEOPLE: joins them in the hub's correlation
    (a wrong report, or a hostile one)."""
    passports = [{"kind": "PASSPORT", "value": PEOPLE[p][2], "issuer": "KH"} for p in people]
    return {"role": "SUSPECTED_VICTIM", "identifiers": passports}
