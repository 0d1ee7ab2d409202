"""`tiphub up` as a user runs it: the hub starts, simulated agencies publish, Ctrl-C stops it all."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from adapters.kafka.embedded import free_port

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie is dead for our purposes; /proc tells.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" not in status.read_text()


def test_up_runs_the_hub_with_simulated_agencies_and_ctrl_c_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPHUB_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tiphub",
            "up",
            "--home",
            str(home),
            "--rate",
            "40",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        state = home / "hub.json"
        while not state.exists():
            assert process.poll() is None, process.stdout.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "hub did not start"
            time.sleep(0.2)
        pids = json.loads(state.read_text())["pids"]
        assert len(pids) == 3  # worker, gateway, embedded broker

        health = None
        while health is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    health = json.load(response)
            except OSError:
                time.sleep(0.2)
        assert health and health["status"] == "ok"

        time.sleep(8)  # let the simulated agencies publish and the worker accept
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)

    assert process.returncode == 0, output
    counts = [tuple(map(int, m)) for m in re.findall(r"published=(\d+) accepted=(\d+) rejected=(\d+)", output)]
    assert counts, output
    published, accepted, rejected = counts[-1]
    assert published >= 100 and accepted >= 100 and rejected == 0
    assert "stopped" in output
    assert [pid for pid in pids if alive(pid)] == []
    assert not (home / "hub.json").exists()
    assert (home / "keys" / "hub" / "x25519.pem").exists()
