"""Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary body."""

from __future__ import annotations

import io
import struct
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from schemas.registry import RegisteredSchema, SchemaRegistry, load_registry

MAGIC = 0
_HEADER = struct.Struct(">bI")


class CodecError(ValueError):
    """A value that is not a well-formed record of a known schema."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class WireCodec:
    """Encodes and decodes records of the registered schemas, checking every byte."""

    def __init__(self, registry: SchemaRegistry | None = None, max_bytes: int = 1 << 20) -> None:
        self.registry = registry or load_registry()
        self.max_bytes = max_bytes

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        return self.encode_with(self.registry.latest(name), record)

    @staticmethod
    def encode_with(schema: RegisteredSchema, record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(_HEADER.pack(MAGIC, schema.schema_id))
        schemaless_writer(out, schema.parsed, record)
        return out.getvalue()

    @staticmethod
    def body(schema: RegisteredSchema, record: dict[str, Any]) -> bytes:
        """The Avro binary body alone (deterministic for a given record)."""
        out = io.BytesIO()
        schemaless_writer(out, schema.parsed, record)
        return out.getvalue()

    def decode(self, value: bytes | None, expect: str | None = None) -> tuple[RegisteredSchema, Any]:
        if value is None:
            raise CodecError("empty_value", "the record has no value")
        if len(value) > self.max_bytes:
            raise CodecError("oversized", f"value of {len(value)} bytes exceeds {self.max_bytes}")
        if len(value) < _HEADER.size:
            raise CodecError("not_wire_format", "value shorter than the 5-byte wire header")
        magic, schema_id = _HEADER.unpack_from(value)
        if magic != MAGIC:
            raise CodecError("not_wire_format", f"magic byte {magic} is not 0")
        schema = self.registry.by_id(schema_id)
        if schema is None:
            raise CodecError("unknown_schema_id", f"schema id {schema_id} is not registered")
        if expect is not None and schema.name != expect:
            raise CodecError("wrong_schema", f"schema id {schema_id} is {schema.name}, expected {expect}")
        buffer = io.BytesIO(value)
        buffer.seek(_HEADER.size)
        try:
            record = schemaless_reader(buffer, schema.parsed, None)
        except Exception as exc:  # fastavro raises EOFError, ValueError, StructError, ...
            raise CodecError("undecodable", f"Avro body does not match {schema.name}: {type(exc).__name__}") from None
        if buffer.tell() != len(value):
            raise CodecError(
                "undecodable",
                f"{len(value) - buffer.tell()} trailing bytes after the {schema.name} record",
            )
        return schema, record

    def upgrade(self, value: bytes, writer: RegisteredSchema) -> Any:
        """A value written with an older version, read as its subject's latest: Avro resolution fills
        fields the writer did not have with their defaults (schemas/compat.py keeps that possible)."""
        latest = self.registry.latest(writer.subject)
        if latest.schema_id == writer.schema_id:
            return self.decode(value)[1]
        try:
            return schemaless_reader(io.BytesIO(value[_HEADER.size :]), writer.parsed, latest.parsed)
        except Exception as exc:
            raise CodecError(
                "undecodable", f"cannot read {writer.name} v{writer.version} as v{latest.version}: {exc}"
            ) from None
