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

    def fold(self, fact: dict[str, Any], kind: Kind | None = None) -> Kind | None:
        """Take one fact of either topic (`kind`: what its schema says it is, else told by its fields); what
        it newly withdrew, or None (known already, or not one)."""
        kind = kind or kind_of(fact)
        if kind == "erased" and fact["subject_key_id"] not in self.erased:
            self.erased[fact["subject_key_id"]] = fact
            return kind
        if kind == "retracted" and fact["report_id"] not in self.retracted:
            self.retracted[fact["report_id"]] = fact
            return kind
        return None

    def fold_all(self, facts: Iterable[dict[str, Any]], kind: Kind | None = None) -> Withdrawals:
        for fact in facts:
            self.fold(fact, kind)
        return self
