"""The release rules and what a caller is shown, as pure functions: who may act on a summary, how a signal
is rendered under field rules, and the identity rules of the accept stage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from domain.callers import Caller
from domain.facts import ReportHeader
from domain.release import (
    ActionRefused,
    Summary,
    check_approve,
    check_consent,
    check_withdraw,
    concerns,
    same_person,
)
from policies.visibility import Visible, field_rules, partner_content, render_signal
from streams.agents.accept_reports import check_retraction_owner
from streams.topics import report_partition

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


def caller(role: str, subject: str, agency: str | None = None, partner: str | None = None) -> Caller:
    return Caller(subject, role, agency, partner, "jti", EXPIRES)


def draft(**overrides: object) -> Summary:
    fields: dict[str, object] = {
        "summary_id": "sum-1",
        "partner": "HSU-TH",
        "scope": "NZ-NIC>HSU-TH",
        "signal_id": "sig-1",
        "signal_version": 1,
        "drafter": "Ana",
        "drafter_agency": "NZ-NIC",
        "content": {},
        "report_ids": ("r1", "r2"),
        "consents_required": {"NZ-LABOUR"},
    }
    fields.update(overrides)
    return Summary(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("alias", ["Ana", "ana", " Ana ", "\uff21\uff2e\uff21", "A\u006e\u0061"])
def test_the_drafter_cannot_approve_under_any_spelling_of_their_name(alias: str) -> None:
    with pytest.raises(ActionRefused) as refused:
        check_approve(draft(), caller("releasing_officer", alias, "NZ-NIC"))
    assert refused.value.reason == "drafter_cannot_approve"


def test_only_an_officer_of_the_drafting_agency_approves_and_only_consenting_agencies_consent() -> None:
    check_approve(draft(), caller("releasing_officer", "Rita", "NZ-NIC"))
    with pytest.raises(ActionRefused) as refused:
        check_approve(draft(), caller("releasing_officer", "Rita", "NZ-LABOUR"))  # contributes, cannot see all
    assert refused.value.reason == "not_entitled_to_release" and refused.value.kind == "not_entitled"
    check_consent(draft(), caller("releasing_officer", "Lee", "NZ-LABOUR"))
    with pytest.raises(ActionRefused):
        check_consent(draft(), caller("releasing_officer", "Rita", "NZ-NIC"))
    with pytest.raises(ActionRefused) as late:
        check_consent(draft(status="released"), caller("releasing_officer", "Lee", "NZ-LABOUR"))
    assert late.value.kind == "wrong_state"


def test_withdrawal_by_the_drafter_or_an_officer_of_the_drafting_agency_only() -> None:
    check_withdraw(draft(), caller("analyst", "ana", "NZ-NIC"))
    check_withdraw(draft(), caller("releasing_officer", "Rita", "NZ-NIC"))
    for outsider in ("Lee", "Ana ", "ana"):  # another agency's officer, even one named like the drafter
        with pytest.raises(ActionRefused):
            check_withdraw(draft(), caller("releasing_officer", outsider, "NZ-LABOUR"))


def test_a_summary_concerns_its_agency_its_consenting_officers_and_once_released_its_partner() -> None:
    summary = draft()
    assert concerns(summary, caller("analyst", "x", "NZ-NIC"))
    assert concerns(summary, caller("releasing_officer", "x", "NZ-LABOUR"))
    assert not concerns(summary, caller("analyst", "x", "NZ-LABOUR"))  # consent is an officer's business
    assert not concerns(summary, caller("releasing_officer", "x", "NZ-POLICE"))
    assert not concerns(summary, caller("liaison", "x", partner="HSU-TH"))
    assert concerns(draft(released=True), caller("liaison", "x", partner="HSU-TH"))
    assert not concerns(draft(released=True), caller("liaison", "x", partner="HSU-MY"))
    assert same_person("\uff32\uff49\uff54\uff41", "rita") and not same_person("Rita", "Rina")


def facts(report_id: str, agency: str, day: int, elements: tuple[str, ...]) -> ReportHeader:
    return ReportHeader(report_id, agency, "BORDER_CROSSING", datetime(2026, 10, day, 10, tzinfo=UTC), elements)


RECORD = {
    "signal_id": "sig-1",
    "version": 3,
    "requirement_id": "IR-1",
    "entity": "ent-1",
    "status": "open",
    "merged_into": None,
    "report_ids": ["r1", "r2"],
    "minor_involved": True,
    "score": 0.71,
    "updated_at": datetime(2026, 11, 1, tzinfo=UTC),
}
R1 = facts("r1", "NZ-CUSTOMS", 3, ("ACT_TRANSPORT", "MEANS_DECEPTION"))
R2 = facts("r2", "NZ-LABOUR", 9, ("PURPOSE_FORCED_LABOUR",))


def test_a_signal_is_shown_under_the_weakest_rule_of_its_reports_decisions() -> None:
    generalised = field_rules(
        [
            {"field": "observed_at", "rule": "generalise"},
            {"field": "source_agency", "rule": "generalise"},
            {"field": "source_reliability", "rule": "drop"},
        ]
    )
    shown = render_signal(RECORD, {"r1": Visible(R1, own=True), "r2": Visible(R2, generalised)})
    assert shown is not None
    assert shown["first_seen"] == "2026-10" and shown["last_seen"] == "2026-10"  # one generalised date: months
    assert shown["agencies"] == ["NZ", "NZ-CUSTOMS"]  # each source under its own report's rule
    assert shown["score"] is None  # the grading of r2 is not shared with this caller
    assert shown["minor_involved"] is True and shown["report_count"] == 2
    everything = render_signal(RECORD, {"r1": Visible(R1, own=True), "r2": Visible(R2, own=True)})
    assert everything is not None and everything["score"] == 0.71 and everything["first_seen"] == "2026-10-03T10:00:00Z"


def test_a_report_no_longer_visible_leaves_every_derived_field() -> None:
    shown = render_signal(RECORD, {"r1": Visible(R1, own=True), "r2": None})
    assert shown is not None
    assert shown["report_ids"] == ["r1"] and shown["agencies"] == ["NZ-CUSTOMS"]
    assert "PURPOSE_FORCED_LABOUR" not in shown["elements"] and shown["act_means_purpose"] == ["ACT", "MEANS"]
    assert shown["score"] is None and shown["minor_involved"] is None  # both mixed the report that left
    assert render_signal(RECORD, {"r1": None, "r2": None}) is None


def test_a_partner_receives_aggregates_under_its_rules_and_nothing_else() -> None:
    rules = field_rules([{"field": "observed_at", "rule": "generalise"}, {"field": "source_agency", "rule": "drop"}])
    content = partner_content(RECORD, [Visible(R1, rules), Visible(R2, rules)])
    assert content["agencies"] is None and content["first_seen"] == "2026-10"
    assert set(content) == {
        "signal_id",
        "requirement_id",
        "report_count",
        "agencies",
        "elements",
        "act_means_purpose",
        "minor_involved",
        "first_seen",
        "last_seen",
    }


def test_a_partner_summary_never_shows_more_than_its_drafting_agency_may_see() -> None:
    """The partner's agreement shares exact dates and sources; the drafting agency's own decision for r2
    generalises its date and drops its source. The summary it drafts (and reviews whole) gets the weaker
    rule of the two for each field, so the drafter learns nothing through its own draft."""

    def rules(date: str, source: str) -> dict[str, Any]:
        return field_rules([{"field": "observed_at", "rule": date}, {"field": "source_agency", "rule": source}])

    to_partner, to_drafter = rules("share", "share"), rules("generalise", "drop")
    partner_only = partner_content(RECORD, [Visible(R1, to_partner), Visible(R2, to_partner)])
    assert partner_only["first_seen"] == "2026-10-03T10:00:00Z"  # what the partner alone may see: exact
    content = partner_content(
        RECORD,
        [
            Visible(R1, to_partner).within(Visible(R1, own=True)),
            Visible(R2, to_partner).within(Visible(R2, to_drafter)),
        ],
    )
    assert content["first_seen"] == "2026-10" and content["last_seen"] == "2026-10"  # r2's date: the month
    assert content["agencies"] == ["NZ-CUSTOMS"]  # r2's source: withheld from the drafter, so from the summary
    # The partner's own rules still bind where they are the weaker: the drafter's report is not shown whole.
    assert Visible(R1, to_drafter).within(Visible(R1, own=True)).rules == to_drafter


def test_a_report_ids_partition_is_pinned_and_only_its_agency_retracts_it() -> None:
    # Moving an id's partition would let a second submission of it through: the function is pinned.
    assert [report_partition("7d0c5a0e-6f1b-4e7a-9a55-0c1d2e3f4a5b", n) for n in (1, 3, 6, 12)] == [0, 1, 4, 4]
    assert check_retraction_owner({"source_agency": "NZ-LABOUR"}, "NZ-LABOUR") is None
    refused = check_retraction_owner({"source_agency": "NZ-LABOUR"}, "NZ-POLICE")
    assert refused is not None and refused.reason == "retraction_wrong_agency"
    unknown = check_retraction_owner({"source_agency": "NZ-LABOUR"}, None)
    assert unknown is not None and unknown.reason == "retraction_unknown_report"
