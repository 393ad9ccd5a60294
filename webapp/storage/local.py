"""Objects as files under one directory, written atomically (temp file, fsync, rename)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from .base import ObjectMissing, StorageUnavailable, as_stream, validate_key


class LocalStorage:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        # A symlink under the root could still point out of it; resolving first catches that too.
        if self.root not in path.parents:
            raise ValueError(f"storage key {key!r} leaves the storage root")
        return path

    def put(self, key: str, data: bytes | BinaryIO) -> None:
        path = self._path(key)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(handle, "wb") as out:
                shutil.copyfileobj(as_stream(data), out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self) -> Iterator[tuple[str, datetime]]:
        """Temp files of writes that never finished (``ab/.upload-*``) are listed too: no row can
        point to them, so the integrity check counts them as orphans."""
        if not self.root.is_dir():
            return
        for path in self.root.rglob("*"):
            if path.is_file() and not path.name.startswith(".check-"):
                written = datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(tzinfo=None)
                yield path.relative_to(self.root).as_posix(), written

    def check(self) -> None:
        """Creates the root if need be, then proves it takes a file (a read-only mount would not)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root, prefix=".check-"):
                pass
        except OSError as exc:
            raise StorageUnavailable(f"{self.root} is not writable: {exc}") from exc
