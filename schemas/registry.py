"""Schemas under schemas/avro, with the ids and fingerprints pinned in schemas/registry.json."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

from schemas.compat import full_problems

AVRO_DIR = Path(__file__).with_name("avro")
REGISTRY_FILE = Path(__file__).with_name("registry.json")

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


@dataclass(frozen=True)
class RegisteredSchema:
    """One schema version with the id it has on the wire."""

    schema_id: int
    name: str
    subject: str
    version: int
    schema: dict[str, Any]
    fingerprint: str
    parsed: Any


def _load_named_types(avro_dir: Path) -> dict[str, dict[str, Any]]:
    types: dict[str, dict[str, Any]] = {}
    for path in sorted(avro_dir.glob("*.avsc")):
        definition = json.loads(path.read_text())
        full_name = f"{definition.get('namespace', 'tiphub')}.{definition['name']}"
        if path.stem != full_name:
            raise ValueError(f"{path.name}: defines {full_name}; the file must be named for it")
        types[full_name] = definition
    return types


def expand(name: str, types: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Return the schema of `name` with every named type it references inlined once.

    The result is self-contained, as a Confluent registry serves it.
    """
    defined: set[str] = set()

    def walk(node: Any, namespace: str) -> Any:
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return node
            full = node if "." in node else f"{namespace}.{node}"
            if full in defined:
                return full
            if full not in types:
                raise ValueError(f"unknown Avro type {node!r}")
            defined.add(full)
            return walk(copy.deepcopy(types[full]), namespace)
        if isinstance(node, list):
            return [walk(branch, namespace) for branch in node]
        if isinstance(node, dict):
            kind = node.get("type")
            if kind in ("record", "enum", "fixed"):
                ns = node.get("namespace", namespace)
                defined.add(f"{ns}.{node['name']}")
                if kind == "record":
                    node["fields"] = [{**field, "type": walk(field["type"], ns)} for field in node["fields"]]
                return node
            if kind == "array":
                return {**node, "items": walk(node["items"], namespace)}
            if kind == "map":
                return {**node, "values": walk(node["values"], namespace)}
            if isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind not in _PRIMITIVES):
                return {**node, "type": walk(kind, namespace)}
            return node
        raise ValueError(f"not an Avro schema node: {node!r}")

    return walk(name, "tiphub")  # type: ignore[no-any-return]


def fingerprint(schema: dict[str, Any]) -> str:
    """SHA-256 of the Avro parsing canonical form: changes exactly when the wire meaning does."""
    return hashlib.sha256(to_parsing_canonical_form(schema).encode()).hexdigest()


class SchemaRegistry:
    """The fixed schema ids of the hub. Read-only at run time: ids never move."""

    def __init__(self, entries: list[RegisteredSchema]) -> None:
        self._by_id = {entry.schema_id: entry for entry in entries}
        self._latest: dict[str, RegisteredSchema] = {}
        for entry in sorted(entries, key=lambda e: e.version):
            self._latest[entry.name] = entry
            self._latest[entry.subject] = entry

    def by_id(self, schema_id: int) -> RegisteredSchema | None:
        return self._by_id.get(schema_id)

    def latest(self, name_or_subject: str) -> RegisteredSchema:
        try:
            return self._latest[name_or_subject]
        except KeyError:
            raise KeyError(f"no schema registered as {name_or_subject!r}") from None

    def subjects(self) -> list[str]:
        return sorted({entry.subject for entry in self._by_id.values()})

    def versions(self, subject: str) -> list[RegisteredSchema]:
        return sorted((e for e in self._by_id.values() if e.subject == subject), key=lambda e: e.version)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self._by_id.values(), key=lambda e: e.schema_id))


class IncompatibleSchema(ValueError):
    """A new version that producers and consumers of the previous one could not share a topic with."""


def build_registry(
    registry_file: Path = REGISTRY_FILE, avro_dir: Path = AVRO_DIR, *, check: bool = True
) -> SchemaRegistry:
    """Every registered version, its fingerprint checked against the pin and its compatibility against
    the subject's previous version. A row's `types` names a subdirectory whose type files replace
    those of the same name for that version (schemas/avro/v2/ for version 2)."""
    base = _load_named_types(avro_dir)
    entries = []
    for row in json.loads(registry_file.read_text())["schemas"]:
        types = {**base, **_load_named_types(avro_dir / row["types"])} if row.get("types") else base
        schema = expand(row["name"], types)
        actual = fingerprint(schema)
        if check and actual != row["fingerprint"]:
            raise ValueError(
                f"schema {row['name']} v{row['version']} (id {row['id']}) changed on disk: "
                f"fingerprint {actual} != pinned {row['fingerprint']}. "
                "Published schemas are immutable: add a new version with a new id instead."
            )
        entries.append(
            RegisteredSchema(
                schema_id=row["id"],
                name=row["name"],
                subject=row["subject"],
                version=row["version"],
                schema=schema,
                fingerprint=actual,
                # Keep fastavro's parsed-schema hint: without it every encode and decode parses the
                # schema again, which measured 4-7x slower per record (docs/performance.md).
                parsed=fastavro.parse_schema(copy.deepcopy(schema)),
            )
        )
    registry = SchemaRegistry(entries)
    for subject in registry.subjects():
        versions = registry.versions(subject)
        for old, new in itertools.pairwise(versions):
            found = full_problems(new.schema, old.schema)
            if found:
                raise IncompatibleSchema(
                    f"{subject} v{new.version} (id {new.schema_id}) is not FULL compatible with v{old.version}: "
                    + "; ".join(found)
                )
    return registry


@cache
def load_registry() -> SchemaRegistry:
    """The registry shipped with this release (cached: schemas are parsed once per process)."""
    return build_registry()
