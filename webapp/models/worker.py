"""The job consumers that are alive, as each one reports itself (``manage.py worker`` and ``manage.py run``).

Workers on several hosts share only the database, the queue and the object store, so the database
is where they say they are alive: each upserts its row every ``PRISM_WORKER_HEARTBEAT_SECONDS``
(``webapp.jobs.housekeeping``). ``/healthz`` and the admin overview list the workers seen recently;
a row whose ``last_seen_at`` stops moving is a worker that died (its leased jobs are re-queued by the
sweep, not by this table).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db


class Worker(db.Model):
    # "<host>:<pid>", the same name the analyses it ran carry in ``Analysis.worker``.
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    threads: Mapped[int]
    started_at: Mapped[datetime]
    last_seen_at: Mapped[datetime] = mapped_column(index=True)
    stopped_at: Mapped[datetime | None]
    jobs_done: Mapped[int] = mapped_column(default=0)
    jobs_failed: Mapped[int] = mapped_column(default=0)
    # The model service's states in that process (kind, state, model id, device ...).
    models: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
