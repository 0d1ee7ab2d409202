"""Agreements on tip.agreements: loading one is an event, so what was in force can be replayed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import yaml

from domain.log import TopicIO
from policies.loader import parse_originator, parse_recipient
from policies.model import Agreement, AgreementSet, LoadedAgreement, OriginatorAgreement
from schemas.codec import WireCodec

LOADED = "tiphub.AgreementLoaded"


def loaded_event(agreement: Agreement | OriginatorAgreement, at: datetime) -> dict[str, Any]:
    recipient = isinstance(agreement, Agreement)
    return {
        "kind": "recipient" if recipient else "originator",
        "code": agreement.recipient if isinstance(agreement, Agreement) else agreement.originator,
        "version": agreement.version,
        "hash": agreement.hash,
        "content_json": json.dumps(agreement.content, sort_keys=True, separators=(",", ":")),
        "source": agreement.source,
        "loaded_at": at,
    }


def agreement_from_event(event: dict[str, Any]) -> LoadedAgreement:
    """Re-checks the content exactly as a file would be checked; the hash must match."""
    text = yaml.safe_dump(json.loads(event["content_json"]), sort_keys=True)
    source = f"tip.agreements:{event['code']}@v{event['version']}"
    agreement = parse_recipient(text, source) if event["kind"] == "recipient" else parse_originator(text, source)
    if agreement.hash != event["hash"]:
        raise ValueError(f"{source}: content does not match its hash")
    return LoadedAgreement(agreement, event["loaded_at"])


class AgreementHistory:
    """An AgreementSet fed from the topic."""

    def __init__(self) -> None:
        self.agreements = AgreementSet()
        self.hashes: set[str] = set()

    def apply(self, event: dict[str, Any]) -> None:
        if "content_json" not in event:
            return
        loaded = agreement_from_event(event)
        self.hashes.add(loaded.agreement.hash)
        self.agreements.add(loaded)


async def publish_new_agreements(
    log: TopicIO,
    topic: str,
    agreements: list[Agreement | OriginatorAgreement],
    known_hashes: set[str],
) -> int:
    """Publish the agreements whose exact content is not on the topic yet. Returns how many."""
    fresh = [a for a in agreements if a.hash not in known_hashes]
    if not fresh:
        return 0
    codec = WireCodec()
    async with log.writing() as out:
        now = datetime.now(UTC)
        for agreement in fresh:
            event = loaded_event(agreement, now)
            await out.send(topic, event["code"].encode(), codec.encode(LOADED, event))
    return len(fresh)
