"""In-memory twins of the adapters' ports, for unit tests: each held to its adapter's contract by a shared suite."""
