"""The storage interface every backend implements, and the key rules they share."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime
from typing import BinaryIO, Protocol


class ObjectMissing(LookupError):
    """No object under that key."""


class StorageUnavailable(RuntimeError):
    """The backend cannot be reached or written to; the message says why (for health checks)."""


def validate_key(key: str) -> str:
    """``key`` unchanged if it is a relative, slash-separated name; ValueError otherwise.

    Keys are made by the app (``uploads.image_key``), but refusing ``..``, ``.``, empty segments
    (hence a leading ``/``), backslashes and control characters keeps any future caller from
    reaching outside a backend's root or prefix, whatever the backend does with the name.
    """
    if "\\" in key or not key.isprintable() or any(part in {"", ".", ".."} for part in key.split("/")):
        raise ValueError(f"storage key {key!r} is not a relative slash-separated name")
    return key


def as_stream(data: bytes | BinaryIO) -> BinaryIO:
    """``put``'s argument as something to read from: bytes are wrapped, file objects pass through."""
    return io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data


class Storage(Protocol):
    def put(self, key: str, data: bytes | BinaryIO) -> None:
        """Store ``data`` (bytes, or a binary file object read to its end) under ``key``.

        Atomic: readers see the whole object or none of it. Idempotent: keys name content, so an
        object already stored under ``key`` is kept and ``data`` is not read.
        """
        ...

    def get(self, key: str) -> bytes:
        """The object's bytes, whole; raises ``ObjectMissing``. For serving, prefer ``open``."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A readable binary stream of the object, read as it goes rather than held whole.

        Raises ``ObjectMissing``. The caller closes it (``werkzeug.wsgi.wrap_file`` does, once the
        response is done).
        """
        ...

    def exists(self, key: str) -> bool: ...

    def keys(self) -> Iterator[tuple[str, datetime]]:
        """Every stored object's key and when it was last written (UTC, naive), in no set order;
        for the integrity check, which looks for files no row points to."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""
        ...

    def check(self) -> None:
        """Raise ``StorageUnavailable`` when the backend cannot be used now; cheap (one round trip at most)."""
        ...
