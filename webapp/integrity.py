"""Database and object-store integrity: ``python manage.py check`` (and ``--reap``), and the reaper
that workers run at start-up.

The write order keeps the two consistent in normal operation. An upload is stored before its row is
committed, and an image is removed only after its row's deletion is committed. So the one thing a
crash can leave is a file no row points to: an upload whose request died before its commit, or a
temp file of a write that never finished. ``reap`` removes such files once they are older than a
grace period, which in-flight uploads (stored, not yet committed) are always younger than. A row
whose file is missing is reported, never "fixed": the file is the evidence.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from flask import Flask
from sqlalchemy import select, text

from .extensions import db
from .models import Analysis, utcnow
from .storage import get_storage
from .uploads import image_key

logger = logging.getLogger(__name__)
REAP_GRACE = timedelta(minutes=15)  # far longer than a request that stores an upload then commits


@dataclass
class IntegrityReport:
    database: list[str] = field(default_factory=list)  # problems PRAGMA quick_check / foreign_key_check found
    orphans: list[str] = field(default_factory=list)  # files no row points to, older than the grace period
    recent_unreferenced: int = 0  # files no row points to yet, younger (uploads in flight)
    missing: list[str] = field(default_factory=list)  # files rows point to that are not stored
    files: int = 0

    @property
    def ok(self) -> bool:
        return not (self.database or self.orphans or self.missing)


def database_problems() -> list[str]:
    """SQLite's own checks (page structure, indexes, foreign keys); PostgreSQL checks itself."""
    if db.engine.dialect.name != "sqlite":
        return []
    quick = [row[0] for row in db.session.execute(text("PRAGMA quick_check"))]
    problems = [] if quick == ["ok"] else [f"quick_check: {line}" for line in quick]
    for table, rowid, parent, _ in db.session.execute(text("PRAGMA foreign_key_check")):
        problems.append(f"foreign key: {table} row {rowid} points to a missing {parent} row")
    db.session.rollback()
    return problems


def check(grace: timedelta = REAP_GRACE, *, database: bool = True) -> IntegrityReport:
    """The files against the records, and (``database``) SQLite's own checks, which read the whole
    file: ``manage.py check`` wants them, the reaper at every worker's start does not."""
    report = IntegrityReport(database=database_problems() if database else [])
    referenced = {
        image_key(sha256, image_format)
        for sha256, image_format in db.session.execute(
            select(Analysis.image_sha256, Analysis.image_format).where(Analysis.image_sha256.is_not(None)).distinct()
        )
    }
    db.session.rollback()
    cutoff, stored = utcnow() - grace, set()
    for key, written in get_storage().keys():
        report.files += 1
        stored.add(key)
        if key not in referenced:
            if written < cutoff:
                report.orphans.append(key)
            else:
                report.recent_unreferenced += 1
    report.missing = sorted(referenced - stored)
    report.orphans.sort()
    return report


def reap(grace: timedelta = REAP_GRACE) -> list[str]:
    """Delete the files no row points to that are older than ``grace``; returns their keys."""
    return remove_orphans(check(grace, database=False).orphans)


def remove_orphans(orphans: list[str]) -> list[str]:
    """Delete ``orphans``, the keys a ``check`` just reported (so ``check --reap`` lists the store and
    queries the records once, not twice); returns them."""
    storage = get_storage()
    for key in orphans:
        storage.delete(key)
    if orphans:
        logger.warning("removed %d stored file(s) no record points to (left by a crash)", len(orphans))
    return orphans


def reap_in_background(app: Flask) -> threading.Thread:
    """``reap`` once, off the starting thread (a large bucket takes a while to list): what workers
    and ``manage.py run`` do at start-up. A failure is logged, never raised."""

    def run() -> None:
        with app.app_context():
            try:
                reap()
            except Exception:
                logger.exception("the start-up check for orphaned files failed")
            finally:
                db.session.remove()

    thread = threading.Thread(target=run, name="prism-reaper", daemon=True)
    thread.start()
    return thread
