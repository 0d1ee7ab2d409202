"""`tiphub bench history` as an operator runs it, on a small history (make bench; not part of make test):
two sizes of one history on one Apache Kafka node it starts itself, every measurement present and sane.
The numbers of docs/performance.md ("History: restart and queries as history grows") come from the
command itself at 10^4 and more, not from this test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import KAFKA_CACHE

pytestmark = pytest.mark.slow

KINDS = ("signal_page", "signal_detail", "partner_pull", "who_saw")


@pytest.mark.timeout(900)
def test_history_bench_measures_restarts_memory_and_queries_at_each_size(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPHUB_")}
    env["TIPHUB_KAFKA_CACHE"] = str(KAFKA_CACHE)
    out = tmp_path / "history.json"
    command = [sys.executable, "-m", "tiphub", "bench", "history", "--reports", "300", "--reports", "600"]
    command += ["--requests", "10", "--query-budget-s", "20", "--releases", "1", "--partitions", "3"]
    command += ["--home", str(tmp_path / "home"), "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, timeout=850, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    result = json.loads(done.stdout)
    assert json.loads(out.read_text()) == result
    assert result["machine"]["broker"].startswith("Apache Kafka")
    assert "real pipeline" in result["seeded"]
    assert result["rejected"] == {}
    assert set(result["lag_at_end"].values()) == {0}
    assert result["released_summaries"] == 1 and result["who_saw_token"].startswith("lk")

    assert [s["reports"] for s in result["sizes"]] == [300, 600]
    for size in result["sizes"]:
        assert size["history_reports"] >= size["reports"]
        assert size["seeding"]["reports_per_s"] > 0
        workers, gateway = size["restart"]["workers"], size["restart"]["gateway"]
        assert workers["restored"] and 0 < workers["to_probe_accepted_s"] <= workers["to_all_stages_restored_s"]
        assert 0 < gateway["to_first_signals_s"] <= gateway["to_serving_s"]
        assert size["peak_rss_mb"]["worker-0"] > 0 and size["peak_rss_mb"]["gateway"] > 0
        assert workers["peak_rss_mb"]["worker-0"] > 0
        for kind in KINDS:
            query = size["queries"][kind]
            assert query["count"] > 0 and set(query["statuses"]) == {"200"}, (kind, query)
            assert 0 < query["p50"] <= query["p99"]
        assert size["queries"]["partner_pull"]["summaries_returned"] >= 1
        assert size["queries"]["who_saw"]["seen_by_returned"] >= 1

    targets = result["targets"]
    assert targets["peak_rss_under_400mb_at_1e6"]["met"] is None  # not measured at this size
    assert set(targets["latency_at_largest_over_smallest"]["ratios"]) == set(KINDS)
