"""Triage notes: each sealed under a vault key of its own that goes with the people of its signal."""

from __future__ import annotations

from typing import Any

from domain import crypto
from domain.ports import KeyVault
from domain.read_models import ReadModels
from policies.engine import ERASED


def note_key_id(signal_id: str, event_id: str) -> str:
    """Each triage note has its own vault key, which depends on the keys of the people of the signal:
    erasing any of them shreds the note (it may name them)."""
    return f"note/{signal_id}/{event_id}"


def triage_history(views: ReadModels, vault: KeyVault, signal_id: str) -> list[dict[str, Any]]:
    history = []
    for event in views.triage_events(signal_id):
        note = ""
        if event["note_sealed"]:
            key_id = note_key_id(signal_id, event["event_id"])
            key = None if key_id in views.erased() else vault.get(key_id)
            try:
                note = ERASED if key is None else crypto.unseal(key, event["note_sealed"], key_id.encode()).decode()
            except crypto.DecryptionError:
                note = ERASED
        history.append({"state": event["state"], "actor": event["actor"], "at": event["at"], "note": note})
    return history
