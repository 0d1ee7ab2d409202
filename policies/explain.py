"""A decision as a legal officer reads it; and the decidable form of a plaintext report."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.accepted import accepted_projection
from policies.engine import Decision
from policies.model import AgreementSet

SEALED = b"<sealed>"


def item_from_report(record: dict[str, Any], accepted_at: datetime) -> dict[str, Any]:
    """An AcceptedReport-shaped item from a validated plaintext report, for explaining and testing.

    Built by the accept stage's own projection (domain/accepted.py): sensitive values become an opaque
    marker (the engine never needs them), derived facts are computed as the stage computes them."""
    report = {**record, "subjects": record.get("subjects") or [], "organisations": record.get("organisations") or []}
    return accepted_projection(
        report,
        key_prefix=report["report_id"],
        seal=lambda _key_id, _path, _value: SEALED,
        tokens=[[(x["kind"], "") for x in s.get("identifiers") or []] for s in report["subjects"]],
        linker=None,
        accepted_at=accepted_at,
    )


RULE_WORDS = {"share": "SHARED", "generalise": "GENERALISED", "drop": "WITHHELD"}


def explain(decision: Decision, agreements: AgreementSet) -> str:
    lines = [
        f"Decision on report {decision.item_id} for {decision.recipient}",
        f"  at (event time)   {decision.at.isoformat()}",
        f"  outcome           {'SHARED' if decision.allowed else 'NOTHING SHARED'} ({decision.reason})",
        f"  why               {decision.explanation}",
    ]
    agreement = agreements.recipient(decision.recipient, decision.at)
    if decision.agreement_hash and agreement is not None:
        lines.append(f"  agreement         {agreement.label}: {agreement.title}")
        lines.append(f"                    sha256 {agreement.hash}")
        lines.append(
            f"                    valid {agreement.valid_from} to {agreement.valid_until}; "
            f"TLP ceiling {agreement.tlp_ceiling}; onward sharing "
            f"{'allowed' if agreement.onward_sharing else 'not allowed'}; retention {agreement.retention_days} days"
        )
        for basis in agreement.legal_basis:
            lines.append(f"  legal basis       {basis.instrument}, {basis.clause}")
    if decision.originator_agreement:
        lines.append(
            f"  originator        {decision.originator_agreement} (sha256 {decision.originator_agreement_hash})"
        )
    if decision.fields:
        lines.append("  fields")
        width = max(len(f.path) for f in decision.fields)
        for field in decision.fields:
            lines.append(f"    {field.path.ljust(width)}  {RULE_WORDS[field.rule]:<11}  {field.basis}")
    return "\n".join(lines)
