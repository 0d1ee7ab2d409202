"""decide() on the shipped agreements, as a legal officer would check them; and agreement loading."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from policies.engine import ERASED, decide
from policies.explain import explain, item_from_report
from policies.loader import AGREEMENTS_DIR, AgreementError, load_directory, parse_originator, parse_recipient
from policies.model import AgreementSet, LoadedAgreement
from schemas.convert import report_from_json
from tests.factories import make_report

AT = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def shipped() -> AgreementSet:
    return AgreementSet([LoadedAgreement(a, datetime(2025, 1, 1, tzinfo=UTC)) for a in load_directory()])


def item(**overrides: object) -> dict:
    return item_from_report(report_from_json(make_report(**overrides)), AT)


TRAFFICKER = {
    "role": "SUSPECTED_TRAFFICKER",
    "name": "Boonmee Srisuk",
    "date_of_birth": "1980-02-02",
    "nationality": "TH",
    "identifiers": [{"kind": "PASSPORT", "value": "AA1234567", "issuer": "TH"}],
}
VICTIM = {
    "role": "SUSPECTED_VICTIM",
    "name": "Sokha Chan",
    "date_of_birth": "1999-04-02",
    "nationality": "KH",
    "identifiers": [{"kind": "PASSPORT", "value": "N01234567", "issuer": "KH"}],
}
CHILD_WITNESS = {
    "role": "WITNESS",
    "name": "Dara Kim",
    "date_of_birth": "2012-01-01",
    "identifiers": [{"kind": "PHONE", "value": "+85512345678"}],
}


def test_the_national_intelligence_centre_sees_every_domestic_report_up_to_amber(shipped: AgreementSet) -> None:
    decision = decide(item(subjects=[VICTIM]), "NZ-NIC", shipped, AT)
    assert decision.allowed
    assert decision.view["subjects"][0]["name"] == {"ref": "subjects[0].name", "key_id": decision.item_id + "/s0"}  # type: ignore[index]
    assert decision.view["narrative"]["ref"] == "narrative"  # type: ignore[index]
    for tlp, allowed in (("CLEAR", True), ("GREEN", True), ("AMBER", True), ("AMBER_STRICT", False), ("RED", False)):
        assert decide(item(tlp=tlp), "NZ-NIC", shipped, AT).allowed is allowed, tlp


def test_a_thai_partner_gets_the_trafficker_but_never_the_victims_identity(shipped: AgreementSet) -> None:
    decision = decide(item(subjects=[VICTIM, TRAFFICKER]), "HSU-TH", shipped, AT)
    assert decision.allowed and decision.reason == "shared"
    victim, trafficker = decision.view["subjects"]  # type: ignore[index]
    assert victim == {"role": "SUSPECTED_VICTIM", "date_of_birth": "27-29", "nationality": "KH", "minor": False}
    assert trafficker["name"]["ref"] == "subjects[1].name"
    assert trafficker["identifiers"][0]["value"]["ref"] == "subjects[1].identifiers[0].value"
    assert "narrative" not in decision.view  # type: ignore[operator]
    assert decision.retain_until == datetime(2028, 10, 31, tzinfo=UTC)  # 730 days under the MoU
    assert decision.view["observed_at"] == "2026-10" and decision.view["source_agency"] == "NZ"  # type: ignore[index]
    assert decision.view["locations"] == [{"country": "NZ", "place": "NZ"}]  # type: ignore[index]
    basis = {f.path: f.basis for f in decision.fields}
    assert basis["subjects[0].name"].startswith("hard rule: victims' identities")
    assert basis["subjects[1].name"] == "HSU-TH agreement v1, MoU 4.5: suspects' names, never victims'"


def test_no_identifier_or_name_of_a_minor_goes_abroad_whatever_the_role(shipped: AgreementSet) -> None:
    decision = decide(item(subjects=[CHILD_WITNESS]), "HSU-TH", shipped, AT)
    child = decision.view["subjects"][0]  # type: ignore[index]
    assert child["minor"] is True and "name" not in child and "identifiers" not in child
    assert {f.basis for f in decision.fields if f.path.startswith("subjects[0].identifiers")} == {
        "hard rule: no identifier or name of a minor leaves the country"
    }


def test_originator_control_keeps_an_ngos_reports_at_home(shipped: AgreementSet) -> None:
    ngo = item(source_agency="NGO-SHAKTI", indicator_type="NGO_REFERRAL", purpose="INVESTIGATION")
    assert decide(ngo, "HSU-PH", shipped, AT).reason == "originator_withholds"
    assert decide(ngo, "NZ-NIC", shipped, AT).allowed  # at home it is shared


def test_an_expired_agreement_shares_nothing(shipped: AgreementSet) -> None:
    later = datetime(2027, 1, 5, tzinfo=UTC)  # HSU-MY's agreement ended on 2026-12-31
    report = item(tlp="GREEN", purpose="PREVENTION")
    assert decide(report, "HSU-MY", shipped, AT).allowed
    expired = decide(report, "HSU-MY", shipped, later)
    assert not expired.allowed and expired.reason == "no_agreement_in_force"
    assert "not in force on 2027-01-05" in expired.explanation


@pytest.mark.parametrize(
    ("overrides", "recipient", "reason"),
    [
        ({"tlp": "RED"}, "HSU-TH", "tlp_red"),
        ({"tlp": "AMBER"}, "HSU-MY", "tlp_above_ceiling"),
        ({"indicator_type": "HOTLINE_TIP"}, "HSU-TH", "indicator_type_not_covered"),
        ({"purpose": "VICTIM_PROTECTION"}, "HSU-TH", "purpose_not_covered"),
        ({}, "HSU-XX", "no_agreement_in_force"),
    ],
)
def test_each_refusal_says_why(shipped: AgreementSet, overrides: dict, recipient: str, reason: str) -> None:
    decision = decide(item(**overrides), recipient, shipped, AT)
    assert (decision.allowed, decision.reason, decision.view) == (False, reason, None)


def test_an_erased_subject_shows_as_erased_where_it_would_have_been_shared(shipped: AgreementSet) -> None:
    report = item(subjects=[VICTIM, TRAFFICKER])
    erased = frozenset({report["subjects"][1]["subject_key_id"]})
    nic = decide(report, "NZ-NIC", shipped, AT, erased)
    assert nic.view["subjects"][1]["name"] == ERASED and nic.view["subjects"][0]["name"]["ref"]  # type: ignore[index]
    partner = decide(report, "HSU-TH", shipped, AT, erased)
    assert partner.view["subjects"][1]["name"] == ERASED  # type: ignore[index]
    assert "name" not in partner.view["subjects"][0]  # the victim's name was never to be shared  # type: ignore[index]


def test_a_newer_version_applies_from_when_it_was_loaded(shipped: AgreementSet) -> None:
    text = (AGREEMENTS_DIR / "recipients" / "HSU-TH.yaml").read_text()
    v2 = parse_recipient(text.replace("version: 1", "version: 2").replace("tlp_ceiling: AMBER", "tlp_ceiling: GREEN"))
    history = AgreementSet([*shipped.all(), LoadedAgreement(v2, datetime(2026, 6, 1, tzinfo=UTC))])
    report = item(tlp="AMBER")
    assert decide(report, "HSU-TH", history, datetime(2026, 5, 1, tzinfo=UTC)).allowed
    assert decide(report, "HSU-TH", history, datetime(2026, 7, 1, tzinfo=UTC)).reason == "tlp_above_ceiling"


def test_explain_reads_like_a_legal_note(shipped: AgreementSet) -> None:
    decision = decide(item(subjects=[VICTIM, TRAFFICKER]), "HSU-TH", shipped, AT)
    text = explain(decision, shipped)
    assert "outcome           SHARED (shared)" in text
    assert "UN Trafficking Protocol (Palermo, 2000), Art. 10(1)" in text
    assert "subjects[0].name" in text and "WITHHELD" in text and "GENERALISED" in text
    assert "Sokha" not in text


@pytest.mark.parametrize(
    ("edit", "line", "message"),
    [
        (
            ("tlp_ceiling: AMBER", "tlp_ceiling: ORANGE"),
            20,
            "tlp_ceiling: 'ORANGE' is not one of CLEAR, GREEN, AMBER, AMBER_STRICT",
        ),
        (
            ("  subjects.name: {rule", "  subjects.nmae: {rule"),
            34,
            "fields.subjects.nmae: is not a field a view can hold",
        ),
        (
            ("  narrative: {rule: drop", "  narrative: {rule: generalise"),
            48,
            "fields.narrative.rule: 'generalise' is not one of share, drop",
        ),
        (("valid_until: 2027-12-31", "valid_until: 2024-12-31"), 16, "valid_until: is before valid_from"),
        (("victim_protection: strict", "victim_protection: domestic"), 21, "must be 'strict' for a foreign recipient"),
        (
            ("onward_sharing: false", "onward_sharing: false\ncolour: blue"),
            23,
            "colour: is not a field of an agreement",
        ),
        (("version: 1", "version: one"), 6, "version: 'one' is not a whole number"),
    ],
)
def test_a_broken_agreement_is_refused_with_file_line_and_field(edit: tuple[str, str], line: int, message: str) -> None:
    text = (AGREEMENTS_DIR / "recipients" / "HSU-TH.yaml").read_text()
    assert edit[0] in text
    with pytest.raises(AgreementError) as caught:
        parse_recipient(text.replace(edit[0], edit[1], 1), "HSU-TH.yaml")
    assert str(caught.value).startswith(f"HSU-TH.yaml:{line}: "), str(caught.value)
    assert message in str(caught.value)


def test_missing_fields_and_bad_yaml_are_named(tmp_path: Path) -> None:
    with pytest.raises(AgreementError, match=r"^x.yaml: tlp_ceiling: is required|x.yaml:\d+: tlp_ceiling: is required"):
        parse_recipient(
            (AGREEMENTS_DIR / "recipients" / "HSU-MY.yaml").read_text().replace("tlp_ceiling: GREEN\n", ""), "x.yaml"
        )
    with pytest.raises(AgreementError, match=r"^y.yaml:2: : not valid YAML"):
        parse_recipient("recipient: HSU-TH\n  kind: [foreign\n", "y.yaml")
    with pytest.raises(AgreementError, match="pre_authorised_release: lists HSU-VN, not in foreign_release"):
        parse_originator(
            (AGREEMENTS_DIR / "originators" / "NZ-CUSTOMS.yaml")
            .read_text()
            .replace("pre_authorised_release: [HSU-TH]", "pre_authorised_release: [HSU-VN]")
        )


def test_every_shipped_agreement_loads_and_hashes_stably() -> None:
    first, second = load_directory(), load_directory()
    assert [a.hash for a in first] == [a.hash for a in second]
    assert {a.recipient for a in first if hasattr(a, "recipient")} == {
        "HSU-TH",
        "HSU-MY",
        "HSU-PH",
        "NZ-NIC",
        "NZ-LABOUR",
    }
