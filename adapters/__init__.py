"""Adapters by technology: `kafka/` (aiokafka, the broker launchers) and `sql/` (SQLite, PostgreSQL).
The HTTP adapter is `gateway/`. They fill the ports of `domain.ports` and are built once, from
settings, by the composition root (`tiphub/container.py`)."""
