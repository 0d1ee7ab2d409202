"""What the hub no longer shows or links: erased subjects (tip.erasures) and retracted reports
(tip.retractions). Every processor and view folds the same facts the same way, here, before it judges
a record: a fact read twice changes nothing, and the first fact for a key stands."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["erased", "retracted"]


def kind_of(fact: dict[str, Any]) -> Kind | None:
    """A SubjectErased names a subject key; a ReportRetracted carries when it was retracted."""
    if "subject_key_id" in fact:
        return "erased"
    if "retracted_at" in fact:
        return "retracted"
    return None


@dataclass
class Withdrawals:
    erased: dict[str, dict[str, Any]] = field(default_factory=dict)  # subject key id -> its SubjectErased
    retracted: dict[str, dict[str, Any]] = field(default_factory=dict)  # report id -> its ReportRetracted

    def fold(self, fact: dict[str, Any], kind: Kind) -> Kind | None:
        """Take one fact of the topic that holds `kind` (tip.erasures: "erased", tip.retractions: "retracted");
        what it newly withdrew, or None (known already, or not a fact of that kind). A fact of the other kind
        counts for nothing: whoever may write one topic cannot withdraw through it what only the other
        withdraws (an operator who may erase cannot retract an agency's report)."""
        if kind_of(fact) != kind:
            return None
        if kind == "erased" and fact["subject_key_id"] not in self.erased:
            self.erased[fact["subject_key_id"]] = fact
            return kind
        if kind == "retracted" and fact["report_id"] not in self.retracted:
            self.retracted[fact["report_id"]] = fact
            return kind
        return None

    def fold_all(self, facts: Iterable[dict[str, Any]], kind: Kind) -> Withdrawals:
        for fact in facts:
            self.fold(fact, kind)
        return self
