"""How well the hub correlates: its signals on tip.signals scored against a simulation's truth."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from domain.correlate import Signal, evaluate_against_truth
from domain.log import TopicIO
from domain.scoped import HUB_SCOPE
from streams.agents.correlate_signals import signal_from_record
from streams.topics import Topics

SIGNAL = "tiphub.Signal"


def latest_hub_signals(records: Iterable[dict[str, Any]]) -> list[Signal]:
    """The latest version of every signal of the hub's own scope, which sees every report (the partners'
    scopes are subsets of it). Pure."""
    latest: dict[str, tuple[int, Signal]] = {}
    for version, signal in map(signal_from_record, (r for r in records if r.get("scope", HUB_SCOPE) == HUB_SCOPE)):
        if version > latest.get(signal.signal_id, (0, None))[0]:
            latest[signal.signal_id] = (version, signal)
    return [signal for _, signal in latest.values()]


async def evaluate_signals(
    log: TopicIO,
    topics: Topics,
    truth: dict[str, list[dict[str, Any]]],
) -> dict[str, dict[str, float]]:
    """Per requirement of `truth` (the `requirements` of `tiphub simulate --truth`): the signals raised, the
    true sets, how many matched, precision, recall and F1 (domain.correlate.evaluate_against_truth)."""
    records = await log.read_decoded(topics.signals, topics.partitions, expect=SIGNAL)
    return evaluate_against_truth(latest_hub_signals(records), truth)
