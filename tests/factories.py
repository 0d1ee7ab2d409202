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
