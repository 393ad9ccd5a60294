"""``manage.py backup`` and ``manage.py restore``: the database and every stored upload, with a
manifest of SHA-256 hashes that restore checks before it touches anything.

- SQLite: the online backup API copies a consistent snapshot while the app keeps running (a plain
  file copy of a WAL database can tear). Restore writes it back over the live file through the
  same API; stop the app and workers first.
- PostgreSQL: ``pg_dump --format=custom`` and ``pg_restore --clean`` (the client tools must be on
  PATH, of the server's major version or newer).
- Uploads: read through the storage interface, so a local folder and an S3 bucket back up alike.
  Restore puts back every file the manifest lists whose stored copy is missing or differs.
  Files the manifest does not list are left alone: ``manage.py check --reap`` deals with them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from . import __version__, audit
from .extensions import db
from .storage import ObjectMissing, get_storage

MANIFEST = "manifest.json"
FORMAT = 1


class BackupError(RuntimeError):
    """The backup cannot be made or restored; the message says why."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _libpq_url() -> str:
    return db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _run(command: list[str]) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)  # noqa: S603 (our own argv)
    except FileNotFoundError:
        raise BackupError(f"{command[0]} is not on PATH (install the PostgreSQL client tools)") from None
    except subprocess.CalledProcessError as exc:
        raise BackupError(f"{command[0]} failed: {exc.stderr.strip()[-500:]}") from None


def _sqlite_copy(source: str | Path, target: str | Path) -> None:
    """SQLite's online backup API, from one database file to another; both connections are closed
    (``with sqlite3.connect`` only ends the transaction, it leaves the file open)."""
    with closing(sqlite3.connect(source)) as reader, closing(sqlite3.connect(target)) as writer:
        reader.backup(writer)


def backup(destination: Path) -> Path:
    """Write ``destination/prism-backup-<UTC time>/`` and return it."""
    target = Path(destination) / f"prism-backup-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"
    (target / "uploads").mkdir(parents=True)
    dialect = db.engine.dialect.name
    revision = db.session.scalar(text("SELECT version_num FROM alembic_version"))
    head = audit.verify_chain()
    db.session.rollback()
    if dialect == "sqlite":
        database_file = target / "database.sqlite3"
        _sqlite_copy(db.engine.url.database, database_file)
    else:
        database_file = target / "database.pgdump"
        _run(["pg_dump", "--format=custom", "--no-owner", f"--file={database_file}", f"--dbname={_libpq_url()}"])
    storage, uploads = get_storage(), {}
    for key, _written in sorted(storage.keys()):
        if key.rsplit("/", 1)[-1].startswith(".upload-"):
            continue  # a write that never finished: no record points to it
        path = target / "uploads" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        data = storage.get(key)
        path.write_bytes(data)
        uploads[key] = hashlib.sha256(data).hexdigest()  # the bytes in hand, not the file read back
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "app_version": __version__,
        "schema_revision": revision,
        "database": {"dialect": dialect, "file": database_file.name, "sha256": _sha256(database_file)},
        "uploads": uploads,
        "audit_head": {"id": head.head_id, "hash": head.head_hash, "rows": head.rows},
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return target


@dataclass(frozen=True)
class RestoreReport:
    manifest: dict[str, Any]
    uploads_written: int


def read_manifest(source: Path) -> dict[str, Any]:
    """The backup's manifest, once every file it lists is present with its hash; else BackupError
    naming the first that is not (nothing is restored from a damaged backup)."""
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source} has no readable {MANIFEST} ({type(exc).__name__})") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{source}: backup format {manifest.get('format')!r} is not {FORMAT}")
    expected = {manifest["database"]["file"]: manifest["database"]["sha256"]}
    expected |= {f"uploads/{key}": digest for key, digest in manifest["uploads"].items()}
    for name, digest in expected.items():
        path = source / name
        if not path.is_file():
            raise BackupError(f"{source}: {name} is missing from the backup")
        if _sha256(path) != digest:
            raise BackupError(f"{source}: {name} does not match its hash in the manifest")
    return manifest


def restore(source: Path, manifest: dict[str, Any] | None = None) -> RestoreReport:
    """Put the database and the uploads of the backup at ``source`` back. Stop the app first.
    ``manifest``: what ``read_manifest(source)`` returned, when the caller has already checked it
    (checking hashes every file of the backup, so it is not done twice)."""
    source = Path(source)
    manifest = manifest or read_manifest(source)
    dialect = db.engine.dialect.name
    if manifest["database"]["dialect"] != dialect:
        raise BackupError(f"the backup is of a {manifest['database']['dialect']} database, this app uses {dialect}")
    database_file = source / manifest["database"]["file"]
    db.session.remove()
    db.engine.dispose()  # no pooled connection may keep the old database open
    if dialect == "sqlite":
        _sqlite_copy(database_file, db.engine.url.database)
    else:
        _run(["pg_restore", "--clean", "--if-exists", "--no-owner", f"--dbname={_libpq_url()}", str(database_file)])
    storage, written = get_storage(), 0
    for key, digest in manifest["uploads"].items():
        try:
            current = hashlib.sha256(storage.get(key)).hexdigest()
        except ObjectMissing:
            current = None
        if current != digest:
            storage.delete(key)  # put() keeps an object already there, even a damaged one
            with (source / "uploads" / key).open("rb") as stream:
                storage.put(key, stream)
            written += 1
    return RestoreReport(manifest, written)
