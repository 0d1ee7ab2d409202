"""OpenAPI links: which value of one operation's response the next operation takes.

They document the workflows (a signal is listed, opened, triaged, drafted as a summary, consented
to, approved, pulled by the partner, withdrawn) for client generators, and let a stateful
schemathesis run follow them (tests/integration/test_gateway.py).
"""

from __future__ import annotations

from typing import Any

Link = dict[str, Any]

SIGNAL_ID = "$response.body#/signals/0/signal_id"
SUMMARY_ID = "$response.body#/summary_id"


def operation_ref(path: str, method: str) -> str:
    """A JSON pointer to an operation of this document (RFC 6901 escapes `~` and `/`)."""
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


def link(path: str, method: str, description: str, body: dict[str, Any] | None = None, **parameters: str) -> Link:
    found: dict[str, Any] = {"operationRef": operation_ref(path, method), "description": description}
    if parameters:
        found["parameters"] = parameters
    if body is not None:
        found["requestBody"] = body
    return found


def responding(status: int, description: str, links: dict[str, Link]) -> dict[int | str, dict[str, Any]]:
    """FastAPI's `responses=` for one status code, with its links."""
    return {status: {"description": description, "links": links}}


def _next_steps(summary_id: str) -> dict[str, Link]:
    summary = "/v1/summaries/{summary_id}"
    return {
        "consent": link(summary + "/consent", "post", "A contributing agency consents.", summary_id=summary_id),
        "approve": link(summary + "/approve", "post", "A releasing officer approves.", summary_id=summary_id),
        "withdraw": link(summary + "/withdraw", "post", "Withdraw it, released or not.", summary_id=summary_id),
    }


def summary_links() -> dict[str, Link]:
    """From any answer that is a summary: the next steps of its life, and the partner's pull."""
    return {
        **_next_steps(SUMMARY_ID),
        "partner_pull": link(
            "/v1/partners/{partner}/summaries",
            "get",
            "The partner's liaison officers pull what is released.",
            partner="$response.body#/partner",
        ),
    }


def pending_links() -> dict[str, Link]:
    """From the list of drafts awaiting consent or approval: act on the oldest."""
    return _next_steps("$response.body#/summaries/0/summary_id")


def signal_page_links() -> dict[str, Link]:
    """From a page of signals: open, triage or summarise its first signal."""
    return {
        "open": link("/v1/signals/{signal_id}", "get", "The signal's latest version.", signal_id=SIGNAL_ID),
        "triage": link("/v1/signals/{signal_id}/triage", "post", "Set the signal's triage state.", signal_id=SIGNAL_ID),
        "summarise": link(
            "/v1/summaries",
            "post",
            "Draft a summary of the signal for a partner.",
            body={"signal_id": SIGNAL_ID},
        ),
    }


def report_links() -> dict[str, Link]:
    return {
        "status": link(
            "/v1/reports/{report_id}/status",
            "get",
            "Whether the hub accepted the report.",
            report_id="$response.body#/report_id",
        )
    }
