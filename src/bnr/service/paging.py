"""Cursor pages in OpenAI's shape: newest first, `after=<id of the last item seen>`, `has_more`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, Select, select

from bnr.service.db import session
from bnr.service.errors import ApiError, not_found

MAX_LIMIT = 100


def page(
    engine: Engine,
    table: Any,
    query: Select[Any],
    after: str | None,
    limit: int,
    render: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:
    """One page of `query` (rows of `table`, which has `seq` and `id`), newest first, after the row `after`."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(
            400, f"limit must be between 1 and {MAX_LIMIT} (got {limit})", param="limit", code="invalid_value"
        )
    with session(engine, readonly=True) as s:
        if after:
            cursor = s.execute(query.with_only_columns(table.seq).where(table.id == after)).scalar_one_or_none()
            if cursor is None:
                raise ApiError(
                    400, f"after={after!r} is not an item of this list", param="after", code="invalid_cursor"
                )
            query = query.where(table.seq < cursor)
        rows = s.execute(query.order_by(table.seq.desc()).limit(limit + 1)).scalars().all()
    return {"object": "list", "data": [render(r) for r in rows[:limit]], "has_more": len(rows) > limit}


def owned(engine: Engine, table: Any, org_id: str, ident: str, what: str) -> Any:
    """The row `ident` of `table` if it belongs to `org_id`; else the 404 an unknown id gets (never a 403)."""
    with session(engine, readonly=True) as s:
        row = s.execute(select(table).where(table.id == ident, table.org_id == org_id)).scalar_one_or_none()
    if row is None:
        raise not_found(what, ident)
    return row
