"""What `tiphub publish FILE.jsonl` sends and rejects (producers/publisher.seal_lines): each line sealed by
the publisher of its agency, or rejected with its line number and reason; nothing for a blank line."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from producers.publisher import AgencyPublisher, RejectedLine, SealedLine, agencies_in, seal_lines
from tests.factories import make_report

HUB = X25519PrivateKey.generate().public_key()


def publisher(agency: str) -> AgencyPublisher:
    """Sealing only: no producer, no broker."""
    return AgencyPublisher(
        bootstrap="unused:9092",
        topic="tip.reports.submitted",
        agency=agency,
        agency_key=Ed25519PrivateKey.generate(),
        hub_public=HUB,
        hub_key_id="hub/test",
    )


CUSTOMS, POLICE = make_report(source_agency="NZ-CUSTOMS"), make_report(source_agency="NZ-POLICE")
LINES = [json.dumps(CUSTOMS), "", '{"report_id": ', json.dumps(POLICE), "[1, 2]"]


def outcomes(agency: str | None) -> list[tuple[str, object]]:
    publishers = {"NZ-CUSTOMS": publisher("NZ-CUSTOMS")}
    found: list[tuple[str, object]] = []
    for outcome in seal_lines(LINES, publishers, agency):
        if isinstance(outcome, SealedLine):
            found.append(("sealed", outcome.report_id))
        elif isinstance(outcome, RejectedLine):
            found.append(("rejected", (outcome.number, outcome.reason)))
        else:
            found.append(("blank", None))
    return found


def test_each_report_goes_out_as_the_agency_it_claims_and_one_without_a_key_is_rejected() -> None:
    assert outcomes(None) == [
        ("sealed", CUSTOMS["report_id"]),
        ("blank", None),
        ("rejected", (3, "malformed_json")),
        ("rejected", (4, "unknown_agency")),
        ("rejected", (5, "unknown_agency")),  # not an object: it claims no agency
    ]


def test_with_agency_a_report_of_another_agency_is_rejected_as_a_mismatch() -> None:
    assert outcomes("NZ-CUSTOMS")[3] == ("rejected", (4, "agency_mismatch"))


def test_the_agencies_a_file_claims_are_read_from_its_json_objects_only() -> None:
    assert agencies_in(LINES) == {"NZ-CUSTOMS", "NZ-POLICE"}
