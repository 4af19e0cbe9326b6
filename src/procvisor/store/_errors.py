"""The store's one exception."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["StoreError"]


class StoreError(Exception):
    """The store file cannot be used: not a procvisor database, corrupt, too new, unwritable.

    Attributes:
        path: the store file concerned.
        message: what went wrong and what to do about it.
    """

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = os.fspath(path)
        self.message = message
        super().__init__(f"store {self.path}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.message))
