"""A gateway restarted on a hub with history reads only what was written while it was down (its read models
resume from the positions they stood at, also after a SIGKILL), serves what it served before and what came
since, and serves exactly what a gateway whose read models are rebuilt from the topics' beginnings serves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from producers.simulate import simulate
from tests.harness import Hub
from tests.integration.test_gateway import Live, all_pages, start_gateway
from tiphub.runtime import token_authority
from tiphub.settings import Settings

pytestmark = pytest.mark.noida


def read_at_start(live: Live, auditor: str) -> int:
    """Records the gateway read from the topics after it started, before it served (auditors' metrics)."""
    response = live.get("/metrics", auditor)
    assert response.status_code == 200, response.text
    found = re.search(r"^tiphub_gateway_records_read_at_start (\S+)$", response.text, re.MULTILINE)
    assert found, response.text
    return int(float(found.group(1)))


def served(hub: Hub, process: subprocess.Popen[bytes], url: str) -> tuple[Live, list[tuple[str, int]], int]:
    """(the gateway, every signal version an analyst of NZ-NIC is served, records it read before serving)."""
    live = Live(hub, url, token_authority(Settings(home=hub.home)), process)
    analyst, auditor = live.token("analyst", agency="NZ-NIC"), live.token("auditor", agency="NZ-NIC")
    signals = [(s["signal_id"], s["version"]) for s in all_pages(live, analyst, 100)]
    return live, signals, read_at_start(live, auditor)


def test_a_gateway_killed_and_restarted_reads_only_what_was_written_while_it_was_down(
    broker: str, tmp_path: Path
) -> None:
    with Hub.create(broker, tmp_path, "gw-restart") as hub:
        hub.publish(simulate(40, seed=31).reports)
        hub.start_worker()
        hub.wait_for_outcomes(40)
        hub.wait_for_quiet()
        first, url = start_gateway(hub)
        try:
            _, before, read_first = served(hub, first, url)
        finally:
            first.kill()  # SIGKILL: no clean shutdown of the store
            first.wait(10)
        assert before and read_first > 0

        more = [r for r in simulate(8, seed=32).reports]
        hub.publish(more)
        hub.wait_for_outcomes(48)
        hub.wait_for_quiet()
        second, url = start_gateway(hub)
        try:
            _, after, read_second = served(hub, second, url)
        finally:
            second.terminate()
            second.wait(20)
        # Only the records of the 8 new reports (and what the stages derived from them) were read again.
        assert 0 < read_second < read_first / 3, (read_first, read_second)
        assert after[: len(before)] == before and len(after) >= len(before)

        rebuilt_store = f"sqlite:///{tmp_path / 'rebuilt-read-models.sqlite3'}"
        scratch, url = start_gateway(hub, TIPHUB_READ_MODEL_URL=rebuilt_store)
        try:
            _, rebuilt, read_scratch = served(hub, scratch, url)
        finally:
            scratch.terminate()
            scratch.wait(20)
        assert rebuilt == after  # the resumed store serves what one rebuilt from the beginnings serves
        assert read_scratch > read_first
