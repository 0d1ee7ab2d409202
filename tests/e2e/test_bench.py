"""`tiphub bench` as an operator runs it: the embedded stack, real workers, one JSON object on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import KAFKA_CACHE, broker_kind

pytestmark = pytest.mark.e2e


def test_bench_measures_the_whole_pipeline_and_both_ceilings(tmp_path: Path) -> None:
    """On a broker of the session's kind that the bench starts and stops itself."""
    burst, rate, seconds = 400, 60, 3
    kind = broker_kind() if broker_kind() in ("kafka", "noida") else "noida"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPHUB_")}
    home = tmp_path / "home"
    home.mkdir()
    for listing in KAFKA_CACHE.glob("kafka-*.classpath"):  # the jars' classpath, resolved once per machine
        (home / listing.name).write_text(listing.read_text())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tiphub",
            "bench",
            "--reports",
            str(burst),
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
            "--warmup",
            "30",
            "--partitions",
            "3",
            "--home",
            str(home),
            "--broker-kind",
            kind,
            "--out",
            str(tmp_path / "bench.json"),
        ],
        env=env,
        capture_output=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    result = json.loads(done.stdout)
    assert json.loads((tmp_path / "bench.json").read_text()) == result
    assert result["machine"]["broker"].startswith("Apache Kafka" if kind == "kafka" else "noida-db")

    # Every report published in the measured phases was accepted once, nothing rejected, nothing left behind.
    steady = rate * seconds
    assert result["published"] == burst + steady
    assert result["accepted"] == burst + steady
    assert result["rejected"] == {}
    assert result["lag_at_end"] == {"verify": 0, "accept": 0, "decide": 0, "audit": 0, "link": 0, "correlate": 0}

    # Each report costs the broker its submission, its accepted record, a decision per recipient (five)
    # and the decision's audit intake and chain entries: at least 17 offsets, markers aside.
    assert result["offsets_per_report"] >= 17

    # Correlation ran: simulated cases span agencies, so reports land in signals.
    assert result["signal_versions"] > 0 and result["reports_in_signals"] > 0

    # The ratios are the pipeline's rate over ceilings measured in the same run.
    assert result["accepted_per_s"] > 0
    assert result["ratio_to_passthrough"] == pytest.approx(
        result["accepted_per_s"] / result["passthrough_per_s"], abs=1e-3
    )
    assert result["ratio_to_inprocess"] == pytest.approx(
        result["accepted_per_s"] / result["inprocess_ceiling_per_s"], abs=1e-3
    )
    # The steady phase kept its rate, and every steady report has a publish -> accepted latency.
    latency = result["latency_ms"]
    assert latency["steady_rate_per_s"] == pytest.approx(rate, rel=0.2)
    accepted = latency["publish_to_accepted"]
    assert accepted["count"] == steady
    assert 0 < accepted["p50"] <= accepted["p95"] <= accepted["p99"] <= accepted["max"]
    assert latency["publish_to_signal"]["count"] > 0

    # CPU and memory per process, the broker's included.
    assert set(result["processes"]) == {"worker-0", "broker", "bench"}
    for name, process in result["processes"].items():
        assert process["cpu_s"] > 0, name
        assert process["peak_rss_mb"] > 10, name
