"""JSON -> Avro conversion: every error names the field path and the reason, never a sensitive value."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.convert import ReportValidationError, is_sensitive, report_from_json, report_to_json
from tests.factories import make_report


def errors_of(report: object) -> list[tuple[str, str]]:
    with pytest.raises(ReportValidationError) as caught:
        report_from_json(report)
    return [(e.path, e.code) for e in caught.value.errors]


def test_the_contract_example_converts_and_round_trips() -> None:
    report = make_report()
    record = report_from_json(report)
    assert record["observed_at"].isoformat() == "2026-10-30T22:15:00+00:00"
    assert report_to_json(record) == report


def test_a_misspelt_enum_names_its_path_and_the_allowed_symbols() -> None:
    report = make_report()
    report["subjects"][0]["identifiers"][1]["kind"] = "PASPORT"
    with pytest.raises(ReportValidationError) as caught:
        report_from_json(report)
    assert str(caught.value).startswith(
        "subjects[0].identifiers[1].kind: 'PASPORT' is not one of PASSPORT, NATIONAL_ID, VISA"
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"colour": "blue"}, ("colour", "unknown_field")),
        ({"tlp": "PURPLE"}, ("tlp", "invalid_enum")),
        ({"observed_at": "2026-10-30 22:15"}, ("observed_at", "invalid_timestamp")),
        ({"observed_at": "2026-10-30T22:15:00"}, ("observed_at", "invalid_timestamp")),
        ({"report_id": "42"}, ("report_id", "invalid_uuid")),
        ({"source_agency": "customs"}, ("source_agency", "invalid_code")),
        ({"source_reliability": "G"}, ("source_reliability", "invalid_grade")),
        ({"info_credibility": 2}, ("info_credibility", "invalid_type")),
        ({"elements": "ACT_TRANSPORT"}, ("elements", "invalid_type")),
        ({"elements": ["ACT_TRANSPORT", "ACT_TRANSPORT"]}, ("elements", "duplicate_value")),
        ({"locations": [{"country": "New Zealand"}]}, ("locations[0].country", "invalid_country")),
        (
            {"subjects": [{"role": "WITNESS", "sex": "female"}]},
            ("subjects[0].sex", "invalid_value"),
        ),
        (
            {"subjects": [{"role": "WITNESS", "date_of_birth": "1990-13-01"}]},
            ("subjects[0].date_of_birth", "invalid_date"),
        ),
        (
            {"subjects": [{"role": "WITNESS", "date_of_birth": "2030"}]},
            ("subjects[0].date_of_birth", "invalid_date"),
        ),
        (
            {"subjects": [{"role": "WITNESS", "identifiers": [{"kind": "EMAIL", "value": "nobody"}]}]},
            ("subjects[0].identifiers[0].value", "invalid_identifier"),
        ),
        (
            {"subjects": [{"role": "WITNESS", "identifiers": [{"kind": "PHONE"}]}]},
            ("subjects[0].identifiers[0].value", "missing_field"),
        ),
        ({"organisations": [{"role": "EMPLOYER"}]}, ("organisations[0]", "missing_field")),
        ({"narrative": "x" * 20_001}, ("narrative", "too_long")),
        ({"subjects": [{"role": "WITNESS"}] * 201}, ("subjects", "too_many_items")),
    ],
)
def test_each_kind_of_bad_field_has_its_own_reason(change: dict, expected: tuple[str, str]) -> None:
    assert expected in errors_of(make_report(**change))


def test_missing_required_fields_are_all_named() -> None:
    report = make_report()
    del report["indicator_type"], report["tlp"]
    assert errors_of(report) == [("indicator_type", "missing_field"), ("tlp", "missing_field")]


def test_a_report_must_be_an_object() -> None:
    assert errors_of(["not", "a", "report"]) == [("", "invalid_type")]


@pytest.mark.parametrize("dob", ["1990", "1990-07", "1990-07-15"])
def test_partial_dates_of_birth_are_accepted(dob: str) -> None:
    report = make_report()
    report["subjects"][0]["date_of_birth"] = dob
    assert report_from_json(report)["subjects"][0]["date_of_birth"] == dob


SECRET = "Qwertzuiop Secretname"


@pytest.mark.parametrize(
    "subject",
    [
        {"role": "WITNESS", "name": 12345, "date_of_birth": SECRET},
        {"role": "WITNESS", "identifiers": [{"kind": "PHONE", "value": SECRET}]},
        {"role": "WITNESS", "identifiers": [{"kind": "PASSPORT", "value": "!"}], SECRET: 1},
    ],
)
def test_errors_never_repeat_a_sensitive_value(subject: dict) -> None:
    with pytest.raises(ReportValidationError) as caught:
        report_from_json(make_report(subjects=[subject], narrative=SECRET * 1000))
    assert "Qwertzuiop" not in str(caught.value)
    assert "Secretname" not in str(caught.value)


def test_sensitive_paths_are_exactly_the_contract_list() -> None:
    assert is_sensitive("subjects[3].name")
    assert is_sensitive("subjects[0].date_of_birth")
    assert is_sensitive("subjects[0].identifiers[12].value")
    assert is_sensitive("organisations[1].registration")
    assert is_sensitive("narrative")
    assert not is_sensitive("subjects[0].identifiers[0].issuer")
    assert not is_sensitive("organisations[0].name")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(deadline=None)  # the profile decides: 200 in make test, 10,000 in make bench
@given(field=st.sampled_from(sorted(make_report().keys())), value=json_values)
def test_any_json_value_in_any_field_is_converted_or_refused_with_a_path(field: str, value: object) -> None:
    report = make_report()
    report[field] = value
    try:
        report_from_json(report)
    except ReportValidationError as exc:
        assert exc.errors and all(e.code and e.message for e in exc.errors)
