"""The storage interface every backend implements."""

from __future__ import annotations

from typing import Protocol


class ObjectMissing(LookupError):
    """No object under that key."""


class Storage(Protocol):
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically (readers never see part of it); idempotent."""
        ...

    def get(self, key: str) -> bytes:
        """The object's bytes; raises ``ObjectMissing``."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""
        ...
