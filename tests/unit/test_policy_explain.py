"""`tiphub policy explain` (streams/policy_explain.explain_sharing): the agreements as they stand apply to
any event time within their validity, as if loaded before it; what is sealed is never shown."""

from __future__ import annotations

from datetime import UTC, datetime

from policies.loader import load_directory
from schemas.convert import report_from_json
from streams.policy_explain import explain_sharing
from tests.factories import make_report


def test_an_amber_report_is_shared_with_hsu_th_and_a_red_one_is_not() -> None:
    agreements = load_directory()
    at = datetime(2025, 6, 1, tzinfo=UTC)  # long before the hub loaded these files: they apply all the same
    shared = explain_sharing(report_from_json(make_report(tlp="AMBER")), "HSU-TH", at, agreements)
    assert "outcome           SHARED (shared)" in shared
    assert "HSU-TH agreement v1" in shared
    withheld = explain_sharing(report_from_json(make_report(tlp="RED")), "HSU-TH", at, agreements)
    assert "outcome           NOTHING SHARED (tlp_red)" in withheld
    assert not any(secret in shared + withheld for secret in ("Sokha", "N01234567", "NZBN-9429041234567"))
