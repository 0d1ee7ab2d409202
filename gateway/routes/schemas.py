"""The Confluent Schema Registry read API over the hub's schemas, for any authenticated caller."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Response

from gateway.deps import AnyCaller, StateDep

router = APIRouter(tags=["schemas"])


def not_found(error_code: int, message: str) -> Response:
    """The registry's own error shape."""
    return Response(
        json.dumps({"error_code": error_code, "message": message}), status_code=404, media_type="application/json"
    )


@router.get("/schemas/ids/{schema_id}")
async def schema_by_id(schema_id: int, caller: AnyCaller, state: StateDep) -> Any:
    entry = state.registry.by_id(schema_id)
    if entry is None:
        return not_found(40403, "Schema not found")
    return {"schema": json.dumps(entry.schema)}


@router.get("/subjects")
async def subjects(caller: AnyCaller, state: StateDep) -> list[str]:
    return state.registry.subjects()


@router.get("/subjects/{subject}/versions/latest")
async def latest(subject: str, caller: AnyCaller, state: StateDep) -> Any:
    versions = state.registry.versions(subject)
    if not versions:
        return not_found(40401, "Subject not found")
    entry = versions[-1]
    return {"subject": subject, "id": entry.schema_id, "version": entry.version, "schema": json.dumps(entry.schema)}
