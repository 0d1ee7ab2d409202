"""`tiphub rebuild VIEW`: a derived view recomputed from scratch beside the live one, and compared.

VIEW is `decisions` or `signals`. Nothing live is written:
1. The view's source topics are copied under a fresh topic prefix, record for record. Partition,
   key, value and headers are kept, so keyed state lands where it would.
2. The stages that derive the view run there, in this process, under fresh consumer groups. Every
   stage loads `tip.erasures` and `tip.retractions` before it replays, so the rebuilt view honours
   every erasure and retraction made so far.
3. The rebuilt view is compared with the live one:
   - decisions by their deterministic ids, and by outcome per (report, recipient);
   - signals by the open signals, the answer a run gives (which merged entities existed on the
     way depends on arrival order).

The rebuilt topics stay under the printed prefix for inspection; `--drop` deletes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapters.kafka.embedded import ensure_topics
from adapters.kafka.feeds import read_decoded
from adapters.kafka.probes import LagProbe, copy_topic, delete_topics
from adapters.kafka.transactional import TransactionalProcessor
from streams.agents.correlate_signals import signal_from_record
from streams.topics import Topics
from tiphub.runtime import topics_for
from tiphub.settings import Settings
from tiphub.worker import build_correlate_processor, build_decide_processor, build_link_processor


@dataclass(frozen=True)
class View:
    sources: tuple[str, ...]  # topic names without the prefix
    stages: tuple[Callable[[Settings, str], TransactionalProcessor], ...]
    compare: Callable[[Settings, str, Topics, Topics], Any]


def _partitions(topics: Topics, topic: str) -> int:
    return next(spec.partitions for spec in topics.specs() if spec.name == topic)


async def _copy(bootstrap: str, live: Topics, target: Topics, base: str, options: dict[str, Any]) -> int:
    source, sink = live._name(base), target._name(base)
    return await copy_topic(bootstrap, source, sink, _partitions(live, source), options)


async def _run_until_caught_up(
    settings: Settings, bootstrap: str, builders: tuple[Callable[[Settings, str], TransactionalProcessor], ...]
) -> None:
    """Run the stages in order; each until its group has committed all of its input."""
    options = settings.kafka_options()
    for build in builders:
        processor = build(settings, bootstrap)
        stop = asyncio.Event()
        task = asyncio.create_task(processor.run(stop))
        probe = LagProbe(bootstrap, options)
        await probe.start()
        try:
            topics = [processor.input_topic, *processor.also_from]
            tps = [(t, p) for t in topics for p in range(_partitions(topics_for(settings), t))]
            while await probe.group_lag(processor.group_id, tps) > 0:
                if task.done():
                    task.result()  # a stage that stopped says why
                await asyncio.sleep(0.3)
        finally:
            stop.set()
            await probe.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _decoded(settings: Settings, bootstrap: str, topic: str, topics: Topics) -> list[dict[str, Any]]:
    return asyncio.run(read_decoded(bootstrap, topic, _partitions(topics, topic), settings.kafka_options()))


def _compare_decisions(settings: Settings, bootstrap: str, live: Topics, rebuilt: Topics) -> dict[str, Any]:
    def latest(decisions: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(d["item_id"], d["recipient"]): d for d in decisions}

    old = _decoded(settings, bootstrap, live.decisions, live)
    new = _decoded(settings, bootstrap, rebuilt.decisions, rebuilt)
    old_latest, new_latest = latest(old), latest(new)
    changed = sorted(
        f"{item} -> {recipient}"
        for (item, recipient), decision in new_latest.items()
        if (item, recipient) in old_latest and old_latest[(item, recipient)]["decision_id"] != decision["decision_id"]
    )
    return {
        "live_decisions": len(old),
        "rebuilt_decisions": len(new),
        "pairs": len(new_latest),
        "same_outcome": sum(
            1 for k, d in new_latest.items() if k in old_latest and old_latest[k]["allowed"] == d["allowed"]
        ),
        "identical": len(new_latest) - len(changed),
        "changed": changed[:50],
        "missing_in_rebuild": len(set(old_latest) - set(new_latest)),
    }


def _compare_signals(settings: Settings, bootstrap: str, live: Topics, rebuilt: Topics) -> dict[str, Any]:
    def open_signals(topic: str, topics: Topics) -> dict[str, Any]:
        latest: dict[str, tuple[int, Any]] = {}
        for record in _decoded(settings, bootstrap, topic, topics):
            version, signal = signal_from_record(record)
            if version > latest.get(signal.signal_id, (0, None))[0]:
                latest[signal.signal_id] = (version, signal)
        return {k: (s.requirement_id, sorted(s.report_ids)) for k, (_, s) in latest.items() if s.status == "open"}

    old, new = open_signals(live.signals, live), open_signals(rebuilt.signals, rebuilt)
    return {
        "live_open_signals": len(old),
        "rebuilt_open_signals": len(new),
        "identical": sum(1 for k, v in new.items() if old.get(k) == v),
        "only_live": sorted(set(old) - set(new))[:50],
        "only_rebuilt": sorted(set(new) - set(old))[:50],
        "differ": sorted(k for k in set(old) & set(new) if old[k] != new[k])[:50],
    }


VIEWS = {
    "decisions": View(
        ("tip.reports.accepted", "tip.agreements", "tip.erasures", "tip.retractions"),
        (build_decide_processor,),
        _compare_decisions,
    ),
    "signals": View(
        ("tip.reports.accepted", "tip.decisions", "tip.sightings", "tip.erasures", "tip.retractions"),
        (build_link_processor, build_correlate_processor),
        _compare_signals,
    ),
}


def rebuild(view: str, settings: Settings, bootstrap: str, *, drop: bool = False) -> dict[str, Any]:
    spec = VIEWS[view]
    live = topics_for(settings)
    target_settings = settings.model_copy(
        update={"topic_prefix": f"{settings.topic_prefix}rebuild-{uuid.uuid4().hex[:8]}.", "instance_id": "rebuild"}
    )
    target = topics_for(target_settings)
    ensure_topics(bootstrap, target.specs(), settings.replication_factor, **settings.kafka_options())
    copied = {
        base: asyncio.run(_copy(bootstrap, live, target, base, settings.kafka_options())) for base in spec.sources
    }
    asyncio.run(_run_until_caught_up(target_settings, bootstrap, spec.stages))
    result = {
        "view": view,
        "prefix": target.prefix,
        "copied": copied,
        **spec.compare(settings, bootstrap, live, target),
    }
    if drop:
        asyncio.run(delete_topics(bootstrap, [s.name for s in target.specs()], settings.kafka_options()))
        result["dropped"] = True
    return result
