"""tiphub: the composition root (settings, the container of adapters, the worker, the gateway's state, the CLI)."""

__version__ = "0.1.0"
