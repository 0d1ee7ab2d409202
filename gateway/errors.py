"""The gateway's refusals: raised where a request is refused, each with the reason the audit records;
gateway/handlers.py answers them and audits each before the answer goes out."""

from __future__ import annotations


class Refused(Exception):
    """A security denial. `reason` is the audit's stable code; the message is what the caller is told."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NoToken(Refused):
    """A request without a bearer token."""

    def __init__(self) -> None:
        super().__init__("no_token", "a bearer token is required")


class NotPermitted(Refused):
    """A verified caller asking for what their role, agency or partner does not allow."""


class NotVisible(Refused):
    """Nothing by that id that this caller may see: whether it exists for someone else or not at all, the
    answer is the same."""

    def __init__(self, message: str) -> None:
        super().__init__("not_found", message)
