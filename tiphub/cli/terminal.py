"""Where the commands write: results to stdout, progress and refusals to stderr, logs as JSON lines."""

from __future__ import annotations

import logging
import sys

from rich.console import Console

console = Console(stderr=True)
out = Console()


def log_to_stderr(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format='{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}',
        stream=sys.stderr,
    )
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
