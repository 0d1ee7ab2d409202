"""What a recipient would receive of one report under the agreements as they stand, as a legal officer
reads it (`tiphub policy explain`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from policies.engine import decide
from policies.explain import explain, item_from_report
from policies.model import Agreement, AgreementSet, LoadedAgreement, OriginatorAgreement

# Explaining applies the agreements as they stand now, as if loaded before the event time.
LONG_BEFORE = datetime(1970, 1, 1, tzinfo=UTC)


def explain_sharing(
    record: dict[str, Any], recipient: str, at: datetime, agreements: Iterable[Agreement | OriginatorAgreement]
) -> str:
    """The decision on a validated report for `recipient` at event time `at`, field by field, and why. Pure."""
    agreement_set = AgreementSet([LoadedAgreement(a, LONG_BEFORE) for a in agreements])
    return explain(decide(item_from_report(record, at), recipient, agreement_set, at), agreement_set)
