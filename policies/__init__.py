"""Legal-sharing policy: agreements as data and a pure decision engine (no I/O)."""

from policies.engine import Decision, FieldDecision, decide
from policies.model import Agreement, AgreementSet, OriginatorAgreement

__all__ = ["Agreement", "AgreementSet", "Decision", "FieldDecision", "OriginatorAgreement", "decide"]
