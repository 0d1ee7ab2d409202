"""`tiphub up`: broker, worker, gateway and simulated agencies on one machine, with a live panel."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from adapters.kafka.probes import CommittedReader, LagProbe
from adapters.sql.tokens import SIGNIN
from domain.scoped import HUB_SCOPE
from producers.simulate import Simulator
from tiphub.runtime import (
    LocalBroker,
    connect_broker,
    find_local_broker,
    init_keys,
    new_producer,
    publishers_for,
    token_authority,
    topics_for,
)
from tiphub.settings import Settings


@dataclass
class HubCounts:
    published: int = 0
    accepted: int = 0
    rejected: int = 0
    lag: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    decisions_shared: int = 0
    decisions_withheld: int = 0
    audit_entries: int = 0
    signals: dict[str, tuple[str, str, int, int]] = field(
        default_factory=dict
    )  # id -> (req, status, reports, agencies)
    started: float = field(default_factory=time.monotonic)

    def open_by_requirement(self) -> dict[str, tuple[int, int]]:
        """requirement -> (open signals, of which seen by 3+ agencies)."""
        out: dict[str, tuple[int, int]] = {}
        for requirement, status, _, agencies in self.signals.values():
            if status == "open":
                total, strong = out.get(requirement, (0, 0))
                out[requirement] = (total + 1, strong + (agencies >= 3))
        return dict(sorted(out.items()))


def spawn_tiphub(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`tiphub ARGS` as a child in its own session (Ctrl-C reaches us first), output to `log`."""
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "tiphub", *args],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM, and SIGKILL if it has not gone after `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# Who the demo's console links sign in as: one person per role, two releasing officers for the two-person rule.
DEMO_PEOPLE = (
    ("analyst", "Ana (analyst)", {"agency": "NZ-NIC"}),
    ("releasing_officer", "Rangi (releasing officer)", {"agency": "NZ-NIC"}),
    ("releasing_officer", "Pita (releasing officer)", {"agency": "NZ-POLICE"}),
    ("liaison", "Somchai (liaison officer)", {"partner": "HSU-TH"}),
    ("auditor", "Aroha (auditor)", {"agency": "NZ-NIC"}),
    ("publisher", "Mere (publisher)", {"agency": "NZ-POLICE"}),
)


def demo_signin_links(settings: Settings, gateway: str) -> list[tuple[str, str]]:
    """A one-time console sign-in link per demo person (valid 8 hours, opens one session): the token rides
    in the URL's fragment, which browsers never send, and the page drops it from the address bar."""
    tokens = token_authority(settings)
    links = []
    for role, subject, acts_for in DEMO_PEOPLE:
        token = tokens.issue(
            role, subject, agency=acts_for.get("agency"), partner=acts_for.get("partner"), ttl_s=8 * 3600, use=SIGNIN
        )
        where = acts_for.get("agency") or acts_for.get("partner")
        links.append((f"{subject.split(' (')[0]}, {role.replace('_', ' ')} of {where}", f"{gateway}/#signin={token}"))
    return links


def run_hub(settings: Settings, *, rate: float, ctdc: Path | None, seed: int, port: int, console: Console) -> int:
    settings.home.mkdir(parents=True, exist_ok=True)
    init_keys(settings)
    owned: LocalBroker | None = None
    children: list[subprocess.Popen[bytes]] = []
    state = settings.home / "hub.json"
    try:
        if not settings.broker and find_local_broker(settings) is None:
            console.print(f"starting the local broker ({settings.broker_kind or 'noida'}) ...")
        connection = connect_broker(settings, progress=console.print)
        bootstrap, owned = connection.bootstrap, connection.started
        env = {
            **os.environ,
            "TIPHUB_HOME": str(settings.home.resolve()),
            "TIPHUB_BROKER": bootstrap,
            "TIPHUB_BROKER_KIND": connection.quirks.kind,
        }
        logs = settings.home / "logs"
        logs.mkdir(exist_ok=True)
        children.append(spawn_tiphub(["worker"], env, logs / "worker.log"))
        children.append(spawn_tiphub(["gateway", "--port", str(port)], env, logs / "gateway.log"))
        state.write_text(
            json.dumps(
                {
                    "pids": [c.pid for c in children] + (owned.pids if owned else []),
                    "broker": bootstrap,
                    "gateway": f"http://127.0.0.1:{port}",
                }
            )
        )
        console.print(f"broker {bootstrap}   gateway http://127.0.0.1:{port}   logs {logs}")
        for role, link in demo_signin_links(settings, f"http://127.0.0.1:{port}"):
            console.print(f"{role:<32} {link}", soft_wrap=True, highlight=False)
        # And a demo API token, as before (CONTRACT section 6): a sign-in link's token opens a console session only.
        demo = token_authority(settings).issue("analyst", "demo analyst", agency="NZ-NIC", ttl_s=8 * 3600)
        console.print(f"{'API token, analyst of NZ-NIC':<32} {demo}", soft_wrap=True, highlight=False)
        console.print("Ctrl-C stops everything")
        asyncio.run(_publish_and_watch(settings, bootstrap, rate, ctdc, seed, children, console))
        return 0
    finally:
        # Whatever failed or was interrupted, nothing this command started is left behind.
        console.print("stopping ...")
        for child in children:
            stop_process(child)
        if owned is not None:
            owned.stop()
        with contextlib.suppress(FileNotFoundError):
            state.unlink()
        console.print("stopped")


async def _publish_and_watch(
    settings: Settings,
    bootstrap: str,
    rate: float,
    ctdc: Path | None,
    seed: int,
    children: list[subprocess.Popen[bytes]],
    console: Console,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    counts = HubCounts()
    tasks = [
        asyncio.create_task(_publish(settings, bootstrap, rate, ctdc, seed, counts, stop)),
        asyncio.create_task(_count(settings, bootstrap, counts, stop)),
    ]
    try:
        if console.is_terminal:
            with Live(_panel(counts, children), console=console, refresh_per_second=4) as live:
                while not stop.is_set():
                    live.update(_panel(counts, children))
                    await _wait(stop, 0.25)
        else:
            while not stop.is_set():
                signals = sum(total for total, _ in counts.open_by_requirement().values())
                console.print(
                    f"published={counts.published} accepted={counts.accepted} "
                    f"rejected={counts.rejected} lag={counts.lag} "
                    f"decisions={counts.decisions_shared + counts.decisions_withheld} "
                    f"open_signals={signals} audit={counts.audit_entries}"
                )
                await _wait(stop, 2.0)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _publish(
    settings: Settings,
    bootstrap: str,
    rate: float,
    ctdc: Path | None,
    seed: int,
    counts: HubCounts,
    stop: asyncio.Event,
) -> None:
    producer = new_producer(bootstrap, settings.kafka_options())
    await producer.start()
    try:
        publishers = publishers_for(
            settings,
            bootstrap,
            producer,
            sorted({"NZ-CUSTOMS", "NZ-IMMIGRATION", "NZ-DIA", "NZ-LABOUR", "NZ-POLICE", "NGO-SHAKTI"}),
        )
        simulator = Simulator(seed, ctdc, keep_truth=False)
        interval = 1.0 / rate
        next_at = time.monotonic()
        for index in itertools.count():
            for report in simulator.case(index).reports:
                if stop.is_set():
                    return
                _, value = publishers[report["source_agency"]].prepare(report)
                await producer.send(
                    publishers[report["source_agency"]].topic,
                    key=report["report_id"].encode(),
                    value=value,
                )
                counts.published += 1
                next_at += interval
                await _wait(stop, max(0.0, next_at - time.monotonic()))
    finally:
        await producer.stop()


async def _count(settings: Settings, bootstrap: str, counts: HubCounts, stop: asyncio.Event) -> None:
    topics = topics_for(settings)
    reader = CommittedReader(
        bootstrap,
        [topics.accepted, topics.rejected, topics.decisions, topics.signals, topics.audit],
        settings.kafka_options(),
    )
    probe = LagProbe(bootstrap, settings.kafka_options())
    verify_group = f"{settings.topic_prefix}tiphub.verify"
    submitted = [(topics.submitted, p) for p in range(settings.partitions)]
    from schemas.codec import WireCodec

    codec = WireCodec()
    async with reader, probe:
        last_lag = 0.0
        while not stop.is_set():
            batch = await reader.batch(timeout_ms=250)
            for topic, records in batch:
                if topic == topics.accepted:
                    counts.accepted += len(records)
                elif topic == topics.audit:
                    counts.audit_entries += len(records)
                elif topic == topics.decisions:
                    for record in records:
                        decision = codec.decode(record.value)[1]
                        if decision["allowed"]:
                            counts.decisions_shared += 1
                        else:
                            counts.decisions_withheld += 1
                elif topic == topics.signals:
                    for record in records:
                        s = codec.decode(record.value)[1]
                        if s["scope"] != HUB_SCOPE:
                            continue
                        counts.signals[s["signal_id"]] = (
                            s["requirement_id"],
                            s["status"],
                            len(s["report_ids"]),
                            len(s["agencies"]),
                        )
                else:
                    counts.rejected += len(records)
                    for record in records:
                        _, rejection = codec.decode(record.value)
                        counts.reasons[rejection["reason"]] = counts.reasons.get(rejection["reason"], 0) + 1
            if time.monotonic() - last_lag > 1.0:
                # records of the submitted topic the verify stage has not committed yet
                counts.lag = await probe.group_lag(verify_group, submitted)
                last_lag = time.monotonic()


def _panel(counts: HubCounts, children: list[subprocess.Popen[bytes]]) -> Table:
    elapsed = max(time.monotonic() - counts.started, 1e-6)
    table = Table(title="tiphub: live (simulated agencies; CTDC-derived cases)", show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_column("", justify="left")
    table.add_row("published by six simulated agencies", str(counts.published), f"{counts.published / elapsed:.1f}/s")
    table.add_row(
        "accepted (signed, sealed, pseudonymised)", str(counts.accepted), f"{counts.accepted / elapsed:.1f}/s"
    )
    table.add_row("rejected", str(counts.rejected), ", ".join(f"{k} {v}" for k, v in sorted(counts.reasons.items())))
    table.add_row(
        "sharing decisions: shared / withheld",
        f"{counts.decisions_shared} / {counts.decisions_withheld}",
        "per recipient, by agreement",
    )
    table.add_row("audit records (hash chain + signed checkpoints)", str(counts.audit_entries), "tiphub audit verify")
    for requirement, (total, strong) in counts.open_by_requirement().items():
        table.add_row(f"open signals {requirement}", str(total), f"{strong} seen by 3+ agencies")
    table.add_row("consumer lag (verify)", str(counts.lag), "")
    table.add_row(
        "worker / gateway", " / ".join("up" if c.poll() is None else f"exited {c.returncode}" for c in children), ""
    )
    return table
