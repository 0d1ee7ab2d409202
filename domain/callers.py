"""Who calls the hub: a role and the agency or partner the caller acts for, as a verified token says."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

ROLES = ("publisher", "analyst", "releasing_officer", "liaison", "auditor")
PARTNER_ROLES = ("liaison",)  # act for a foreign partner; every other role acts for a domestic agency


class TokenError(ValueError):
    """A token that must be refused; `reason` is a stable code for the audit."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Caller:
    subject: str
    role: str
    agency: str | None
    partner: str | None
    token_id: str
    expires_at: datetime

    @property
    def acts_for(self) -> str:
        """The agency or partner whose view of the data this caller gets."""
        return self.partner or self.agency or ""
