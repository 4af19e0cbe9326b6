"""SQL helpers shared by the store's tables: a write transaction and a filtered SELECT."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

__all__ = ["Select", "immediate"]


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """Run the block in one IMMEDIATE transaction (the write lock is taken at once).

    Committed when the block ends, rolled back when it raises anything (the error goes on).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class Select:
    """A SELECT statement whose WHERE is the AND of the conditions added (none: no WHERE)."""

    __slots__ = ("_conditions", "_params", "_sql")

    def __init__(self, sql: str) -> None:
        self._sql = sql
        self._conditions: list[str] = []
        self._params: list[object] = []

    def where(self, condition: str, *params: object) -> None:
        """AND ``condition``, with the values of its ``?`` placeholders."""
        self._conditions.append(condition)
        self._params.extend(params)

    def build(self, order_by: str, limit: int | None = None) -> tuple[str, list[object]]:
        """The statement, ordered and (unless ``limit`` is None) limited, and its parameters."""
        sql = self._sql
        params = list(self._params)
        if self._conditions:
            sql += " WHERE " + " AND ".join(self._conditions)
        sql += f" ORDER BY {order_by}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return sql, params
