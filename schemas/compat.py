"""Avro schema compatibility, as a schema registry checks it before accepting a new version (pure).

`problems(reader, writer)` lists why data written with `writer` cannot be read with `reader`, by
Avro's resolution rules: records match fields by name (a reader field missing from the writer needs
a default); enums need every writer symbol, or a reader default; unions need a matching branch for
every writer branch; numbers may widen (int -> long -> float -> double), string and bytes convert.
A new version of a subject must be FULL compatible with the previous one: new readers read old data
(backward) and old readers read new data (forward), so producers and consumers of both versions
coexist while they are upgraded one by one.
"""

from __future__ import annotations

from typing import Any

_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        kind = schema["type"]
        return kind if isinstance(kind, str) and kind in ("record", "enum", "array", "map", "fixed") else _kind(kind)
    return str(schema)


_COMPLEX = ("record", "enum", "fixed", "array", "map")


def _named(schema: Any, names: dict[str, Any]) -> Any:
    """Unwrap references to named types and `{"type": ...}` wrappers down to a definition or primitive."""
    while True:
        if isinstance(schema, str) and schema in names:
            schema = names[schema]
        elif isinstance(schema, dict) and schema.get("type") not in _COMPLEX:
            inner = schema["type"]
            if isinstance(inner, dict | list) or (isinstance(inner, str) and inner in names):
                schema = inner
            else:
                return schema
        else:
            return schema


def _collect(schema: Any, names: dict[str, Any], namespace: str = "") -> None:
    if isinstance(schema, list):
        for branch in schema:
            _collect(branch, names, namespace)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed"):
            space = schema.get("namespace", namespace)
            full = schema["name"] if "." in schema["name"] else f"{space}.{schema['name']}" if space else schema["name"]
            names[full] = names[schema["name"]] = schema
            for field in schema.get("fields", []):
                _collect(field["type"], names, space)
        elif schema.get("type") == "array":
            _collect(schema["items"], names, namespace)
        elif schema.get("type") == "map":
            _collect(schema["values"], names, namespace)
        elif isinstance(schema.get("type"), dict | list):
            _collect(schema["type"], names, namespace)


def problems(reader: Any, writer: Any) -> list[str]:
    """Why `writer`'s data cannot be read as `reader`; empty when it can."""
    reader_names: dict[str, Any] = {}
    writer_names: dict[str, Any] = {}
    _collect(reader, reader_names)
    _collect(writer, writer_names)
    found: list[str] = []
    _check(reader, writer, "", reader_names, writer_names, found, set())
    return found


def _check(
    reader: Any,
    writer: Any,
    path: str,
    rn: dict[str, Any],
    wn: dict[str, Any],
    found: list[str],
    seen: set[tuple[str, str]],
) -> None:
    reader, writer = _named(reader, rn), _named(writer, wn)
    rk, wk = _kind(reader), _kind(writer)
    where = path or "(top)"
    if wk == "union":
        for branch in writer:
            if rk == "union":
                _union_branch(reader, branch, path, rn, wn, found, seen)
            else:
                _check(reader, branch, path, rn, wn, found, seen)
        return
    if rk == "union":
        _union_branch(reader, writer, path, rn, wn, found, seen)
        return
    if rk != wk:
        if rk not in _PROMOTIONS.get(wk, set()):
            found.append(f"{where}: a {wk} cannot be read as {rk}")
        return
    if rk == "record":
        key = (reader.get("name", ""), writer.get("name", ""))
        if key in seen:  # recursive types: checked once
            return
        seen.add(key)
        if reader["name"].rsplit(".", 1)[-1] != writer["name"].rsplit(".", 1)[-1] and writer["name"] not in reader.get(
            "aliases", []
        ):
            found.append(f"{where}: record {writer['name']} cannot be read as {reader['name']}")
            return
        written = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            source = written.get(field["name"]) or next(
                (written[a] for a in field.get("aliases", []) if a in written), None
            )
            sub = f"{path}.{field['name']}" if path else field["name"]
            if source is None:
                if "default" not in field:
                    found.append(f"{sub}: missing from the data and has no default")
                continue
            _check(field["type"], source["type"], sub, rn, wn, found, seen)
    elif rk == "enum":
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing and "default" not in reader:
            found.append(f"{where}: symbols {missing} unknown to the reader, which has no enum default")
    elif rk == "array":
        _check(reader["items"], writer["items"], f"{path}[]", rn, wn, found, seen)
    elif rk == "map":
        _check(reader["values"], writer["values"], f"{path}{{}}", rn, wn, found, seen)
    elif rk == "fixed" and reader.get("size") != writer.get("size"):
        found.append(f"{where}: fixed of size {writer.get('size')} cannot be read as size {reader.get('size')}")


def _union_branch(
    reader: list[Any],
    writer: Any,
    path: str,
    rn: dict[str, Any],
    wn: dict[str, Any],
    found: list[str],
    seen: set[tuple[str, str]],
) -> None:
    """A writer value must fit some reader branch: the first that reads it without problems."""
    for branch in reader:
        attempt: list[str] = []
        _check(branch, writer, path, rn, wn, attempt, set(seen))
        if not attempt:
            return
    found.append(f"{path or '(top)'}: a {_kind(_named(writer, wn))} fits no branch of the reader's union")


def full_problems(new: Any, old: Any) -> list[str]:
    """FULL compatibility of a new version with the previous one: both directions."""
    return [f"new readers, old data: {p}" for p in problems(new, old)] + [
        f"old readers, new data: {p}" for p in problems(old, new)
    ]
