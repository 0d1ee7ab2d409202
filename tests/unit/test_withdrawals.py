"""Erasures and retractions, folded the one way every stage and view folds them."""

from __future__ import annotations

from datetime import UTC, datetime

from domain.withdrawals import Withdrawals

AT = datetime(2026, 11, 1, tzinfo=UTC)
ERASED = {"subject_key_id": "NZ-POLICE/r1/abc/s0", "report_id": "r1", "tokens": ["t"], "erased_at": AT}
RETRACTED = {"report_id": "r2", "source_agency": "NZ-POLICE", "reason": "duplicate", "retracted_at": AT}


def test_each_fact_withdraws_once_and_a_replay_changes_nothing() -> None:
    seen = Withdrawals()
    assert [seen.fold(ERASED, "erased"), seen.fold(RETRACTED, "retracted")] == ["erased", "retracted"]
    assert [seen.fold(ERASED, "erased"), seen.fold(RETRACTED, "retracted")] == [None, None]
    assert "NZ-POLICE/r1/abc/s0" in seen.erased and "r2" in seen.retracted


def test_the_first_retraction_of_a_report_stands() -> None:
    later = {**RETRACTED, "reason": "again", "retracted_at": datetime(2026, 12, 1, tzinfo=UTC)}
    seen = Withdrawals().fold_all([RETRACTED, later], "retracted")
    assert seen.retracted["r2"]["retracted_at"] == AT


def test_a_record_that_is_neither_withdraws_nothing() -> None:
    seen = Withdrawals()
    assert seen.fold({"report_id": "r3"}, "retracted") is None
    assert not seen.erased and not seen.retracted


def test_a_fact_on_the_topic_of_the_other_kind_counts_for_nothing() -> None:
    seen = Withdrawals()
    assert seen.fold(RETRACTED, "erased") is None and seen.fold(ERASED, "retracted") is None
    assert not seen.erased and not seen.retracted
