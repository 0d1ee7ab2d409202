"""Properties of decide() over generated reports and agreements (fast profile in make test,
10^4 cases each with HYPOTHESIS_PROFILE=bench in make bench)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from policies.engine import ERASED, decide, tlp_rank, view_field_keys
from policies.model import SENSITIVE_FIELDS, Agreement, AgreementSet, LoadedAgreement
from tests.policy_strategies import AGE_BANDS, AGENCIES, T0, accepted_reports, agreements, moments, originators


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, Any], Agreement, AgreementSet, datetime, frozenset[str]]:
    """Mostly inside an agreement's window and with consenting originators, so that views are
    built often; every refusal path stays reachable."""
    item = draw(accepted_reports())
    agreement = draw(agreements())
    # The originating agency always sees its own report; the properties are about everyone else.
    assume(agreement.recipient != item["source_agency"])
    loaded = [LoadedAgreement(agreement, T0)]
    for agency in AGENCIES:
        if draw(st.integers(0, 9)) < 8:
            loaded.append(LoadedAgreement(draw(originators(agency, agreement.recipient)), T0))
    erased = frozenset(s["subject_key_id"] for s in item["subjects"] if draw(st.booleans()))
    if draw(st.integers(0, 9)) < 8:
        window = (agreement.valid_until - agreement.valid_from).days
        at = datetime.combine(agreement.valid_from + timedelta(days=draw(st.integers(0, window))), time(12), UTC)
    else:
        at = draw(moments)
    return item, agreement, AgreementSet(loaded), at, erased


def leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in leaves(v)]
    return [value]


@given(scenarios())
def test_nothing_outside_the_allow_list_ever_appears_in_a_view(scenario) -> None:  # type: ignore[no-untyped-def]
    item, agreement, agreements_set, at, erased = scenario
    decision = decide(item, agreement.recipient, agreements_set, at, erased)
    if not decision.allowed:
        assert decision.view is None and decision.fields == ()
        return
    for field, values in view_field_keys(decision.view).items():  # type: ignore[arg-type]
        rule = agreement.fields.get(field)
        assert rule is not None and rule.rule in ("share", "generalise"), field
        if field in SENSITIVE_FIELDS:
            for value in values:
                assert (
                    value == ERASED
                    or (isinstance(value, dict) and set(value) == {"ref", "key_id"})
                    or (field == "subjects.date_of_birth" and isinstance(value, str))
                ), (field, value)
    assert not any(isinstance(leaf, bytes) for leaf in leaves(decision.view)), "ciphertext in a view"


@given(scenarios())
def test_the_tlp_ceiling_is_never_exceeded_and_red_never_leaves_its_originator(scenario) -> None:  # type: ignore[no-untyped-def]
    item, agreement, agreements_set, at, erased = scenario
    decision = decide(item, agreement.recipient, agreements_set, at, erased)
    if decision.allowed:
        assert item["tlp"] != "RED"
        assert tlp_rank(item["tlp"]) <= tlp_rank(agreement.tlp_ceiling)
        assert agreement.in_force(at)


@given(scenarios())
def test_generalisation_never_returns_the_exact_value(scenario) -> None:  # type: ignore[no-untyped-def]
    item, agreement, agreements_set, at, erased = scenario
    decision = decide(item, agreement.recipient, agreements_set, at, erased)
    if not decision.allowed:
        return
    view = decision.view
    assert view is not None
    if agreement.fields.get("observed_at") and agreement.fields["observed_at"].rule == "generalise":
        assert view["observed_at"] != item["observed_at"].isoformat().replace("+00:00", "Z")
        assert len(view["observed_at"]) == 7
    # Per subject: each generalised date of birth is an age band, never the sealed value or a reference
    # (another subject's may be shared as a reference under the same agreement).
    generalised = [
        f
        for f in decision.fields
        if f.field == "subjects.date_of_birth"
        and f.rule == "generalise"
        and item["subjects"][int(f.path[9 : f.path.index("]")])]["age_band"] is not None
    ]
    bands = [
        s["date_of_birth"]
        for s in view.get("subjects", [])
        if isinstance(s.get("date_of_birth"), str) and s["date_of_birth"] != ERASED
    ]
    assert len(bands) == len(generalised)
    assert all(band in AGE_BANDS for band in bands)
    for i, location in enumerate(view.get("locations", [])):
        if "place" in location:
            original = (
                item["locations"][i]["place"] if agreement.fields["locations.place"].rule == "generalise" else None
            )
            assert original is None or location["place"] != original


@given(scenarios())
def test_decisions_are_deterministic(scenario) -> None:  # type: ignore[no-untyped-def]
    item, agreement, agreements_set, at, erased = scenario
    first = decide(item, agreement.recipient, agreements_set, at, erased)
    second = decide(item, agreement.recipient, agreements_set, at, erased)
    assert first == second and first.decision_id == second.decision_id


@given(scenarios())
def test_abroad_no_victim_identity_or_minor_identifier_and_only_with_originator_consent(scenario) -> None:  # type: ignore[no-untyped-def]
    item, agreement, agreements_set, at, erased = scenario
    decision = decide(item, agreement.recipient, agreements_set, at, erased)
    if not decision.allowed or agreement.kind != "foreign":
        return
    originator = agreements_set.originator(item["source_agency"], at)
    assert originator is not None and agreement.recipient in originator.foreign_release
    protected = {
        i for i, s in enumerate(item["subjects"]) if s["role"] == "SUSPECTED_VICTIM" or s.get("minor_at_observation")
    }
    for field in decision.fields:
        if field.path.startswith("subjects[") and int(field.path[9 : field.path.index("]")]) in protected:
            if field.field in (
                "subjects.name",
                "subjects.identifiers.kind",
                "subjects.identifiers.issuer",
                "subjects.identifiers.value",
            ):
                assert field.rule == "drop", field
            if field.field == "subjects.date_of_birth":
                assert field.rule != "share", field
        if field.field == "narrative" and protected:
            assert field.rule == "drop"


@given(accepted_reports(), st.sampled_from(["HSU-TH", "NZ-NIC"]), moments)
def test_no_agreement_shares_nothing(item, recipient, at) -> None:  # type: ignore[no-untyped-def]
    decision = decide(item, recipient, AgreementSet(), at)
    assert not decision.allowed and decision.view is None and decision.reason == "no_agreement_in_force"


@given(accepted_reports(), moments)
def test_the_originating_agency_sees_its_own_report_whole(item, at) -> None:  # type: ignore[no-untyped-def]
    decision = decide(item, item["source_agency"], AgreementSet(), at)
    assert decision.allowed and decision.reason == "originator"
    assert all(f.rule == "share" for f in decision.fields)
