"""Which keys the retention sweep shreds (streams/retention.py): by indicator type, from observed_at,
each subject's key and the report's, never one erased before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from streams.retention import RetentionPolicy, expired_key_ids

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def accepted(report_id: str, indicator_type: str, observed_days_ago: int, subjects: int = 1) -> dict[str, Any]:
    """The fields of an accepted report the sweep reads."""
    return {
        "report_id": report_id,
        "indicator_type": indicator_type,
        "observed_at": NOW - timedelta(days=observed_days_ago),
        "subjects": [{"subject_key_id": f"{report_id}/s{i}"} for i in range(subjects)],
        "report_key_id": f"{report_id}/r",
    }


def test_the_shipped_policy_keeps_hotline_tips_two_years_and_unlisted_types_five() -> None:
    policy = RetentionPolicy.load()
    assert policy.days("HOTLINE_TIP") == 730
    assert policy.days("BORDER_CROSSING") == policy.default_days == 1825


def test_a_report_past_its_period_loses_every_key_and_one_within_it_none() -> None:
    policy = RetentionPolicy.from_yaml("default_days: 1825\nindicator_types:\n  HOTLINE_TIP: 730\n")
    reports = [accepted("tip", "HOTLINE_TIP", 731, subjects=2), accepted("border", "BORDER_CROSSING", 731)]
    assert expired_key_ids(reports, policy, NOW, set()) == ["tip/s0", "tip/s1", "tip/r"]
    assert expired_key_ids([accepted("tip", "HOTLINE_TIP", 730)], policy, NOW, set()) == []  # on the day: kept


def test_keys_erased_before_are_not_named_again() -> None:
    policy = RetentionPolicy.from_yaml("default_days: 30\n")
    assert expired_key_ids([accepted("old", "OTHER", 31)], policy, NOW, {"old/s0"}) == ["old/r"]
