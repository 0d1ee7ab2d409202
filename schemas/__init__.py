"""The hub's event model: Avro schemas, their fixed registry ids, the wire codec and JSON conversion."""

from schemas.codec import CodecError, WireCodec
from schemas.registry import SchemaRegistry, load_registry

__all__ = ["CodecError", "SchemaRegistry", "WireCodec", "load_registry"]
