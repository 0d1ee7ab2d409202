"""Views rebuilt from the topics alone: replay erasures first, then decisions and reports.

A recipient's report view is what its decisions allow, with each ciphertext reference opened with
the vault key at the moment of reading. An erased subject (fact on tip.erasures, or key gone from
the vault) reads as [erased], never as an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable
from typing import Any

from domain import crypto
from domain.ports import KeyVault
from domain.withdrawals import Withdrawals
from policies.engine import ERASED
from schemas.codec import CodecError, WireCodec

_STEP = re.compile(r"([a-z_]+)(?:\[(\d+)\])?")


def value_at(record: dict[str, Any], path: str) -> Any:
    """The value at a field path such as subjects[0].identifiers[1].value."""
    node: Any = record
    for name, index in _STEP.findall(path):
        node = node[name]
        if index:
            node = node[int(index)]
    return node


def open_view(view: Any, accepted: dict[str, Any], vault: KeyVault, erased: Collection[str]) -> Any:
    """The view with every {ref, key_id} replaced by the plaintext, or [erased]."""
    if isinstance(view, dict):
        if set(view) == {"ref", "key_id"}:
            key_id = view["key_id"]
            key = None if key_id in erased else vault.get(key_id)
            if key is None:
                return ERASED
            try:
                return crypto.unseal_field(key, accepted["report_id"], view["ref"], value_at(accepted, view["ref"]))
            except crypto.DecryptionError:
                return ERASED
        return {k: open_view(v, accepted, vault, erased) for k, v in view.items()}
    if isinstance(view, list):
        return [open_view(v, accepted, vault, erased) for v in view]
    return view


def rebuild_report_view(
    recipient: str,
    *,
    erasures: Iterable[bytes | None],
    decisions: Iterable[bytes | None],
    accepted: Iterable[bytes | None],
    vault: KeyVault,
) -> dict[str, dict[str, Any]]:
    """report_id -> what `recipient` sees, from the raw values of the three topics (in log order)."""
    codec = WireCodec()

    def decoded(values: Iterable[bytes | None], name: str) -> Iterable[dict[str, Any]]:
        for value in values:
            try:
                yield codec.decode(value, expect=name)[1]
            except CodecError:
                continue

    erased = Withdrawals().fold_all(decoded(erasures, "tiphub.SubjectErased"), "erased").erased.keys()
    latest: dict[str, dict[str, Any]] = {}
    for decision in decoded(decisions, "tiphub.SharingDecision"):
        if decision["recipient"] == recipient:
            latest[decision["item_id"]] = decision
    reports = {r["report_id"]: r for r in decoded(accepted, "tiphub.AcceptedReport")}
    view: dict[str, dict[str, Any]] = {}
    for item_id, decision in latest.items():
        if decision["allowed"] and decision["view_json"] and item_id in reports:
            view[item_id] = open_view(json.loads(decision["view_json"]), reports[item_id], vault, erased)
    return view
