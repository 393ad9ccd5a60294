"""The state of every part Prism runs on, for ``/healthz`` and the admin overview (one source for both).

Each check answers rather than raises, and names the failing part's error type only (never a URL,
path or credential). The database decides the HTTP status (a web process without its database can
serve nothing); a queue or object store that cannot be reached, or waiting jobs with no live worker,
make the status "degraded": pages still work, new work waits.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import select, text

from .extensions import db
from .inference.types import public_model_name
from .jobs import get_queue, job_backlog
from .models import Worker, utcnow
from .storage import get_storage


def _failure(exc: Exception) -> dict[str, Any]:
    return {"ok": False, "error": type(exc).__name__}


def database_health() -> dict[str, Any]:
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
    except Exception as exc:  # report, don't raise: a health check must answer
        db.session.rollback()
        return _failure(exc)
    return {"ok": True, "dialect": db.engine.dialect.name}


def queue_health(database_ok: bool) -> dict[str, Any]:
    """The queue's own depth (jobs waiting in Huey) and, from the database, the job backlog."""
    queue = get_queue()
    body: dict[str, Any] = {"backend": queue.backend}
    try:
        huey = queue.huey
        body.update(ok=True, waiting=huey.pending_count(), scheduled=huey.scheduled_count())
    except Exception as exc:
        body.update(_failure(exc))
    if database_ok:
        body.update(job_backlog())
        db.session.rollback()
    return body


def storage_health() -> dict[str, Any]:
    scheme = urlsplit(current_app.config["PRISM_STORAGE_URL"] or "").scheme
    body: dict[str, Any] = {"backend": "s3" if scheme == "s3" else "local"}
    try:
        get_storage().check()
    except Exception as exc:
        return {**body, **_failure(exc)}
    return {**body, "ok": True}


def recent_workers() -> list[dict[str, Any]]:
    """Workers that reported within the last three heartbeats (30 s by default) and have not stopped."""
    window = 3 * current_app.config["PRISM_WORKER_HEARTBEAT_SECONDS"]
    now = utcnow()
    rows = db.session.scalars(
        select(Worker)
        .where(Worker.last_seen_at >= now - timedelta(seconds=window), Worker.stopped_at.is_(None))
        .order_by(Worker.hostname, Worker.name)
    ).all()
    workers = [
        {
            "name": row.name,
            "host": row.hostname,
            "threads": row.threads,
            "seen_seconds_ago": round((now - row.last_seen_at).total_seconds(), 1),
            "up_seconds": round((now - row.started_at).total_seconds()),
            "jobs_done": row.jobs_done,
            "jobs_failed": row.jobs_failed,
            "models": [
                {
                    "kind": model.get("kind"),
                    "state": model.get("state"),
                    "model_id": public_model_name(model["model_id"]) if model.get("model_id") else None,
                }
                for model in row.models or ()
            ],
        }
        for row in rows
    ]
    db.session.rollback()
    return workers


def system_health() -> dict[str, Any]:
    """Everything at once; ``status`` is "ok", "degraded" or "error" (database down)."""
    database = database_health()
    queue = queue_health(database["ok"])
    storage = storage_health()
    workers = recent_workers() if database["ok"] else []
    status = "ok"
    if not (queue.get("ok") and storage["ok"]):
        status = "degraded"
    if queue["backend"] != "immediate" and queue.get("pending") and not workers:
        status = "degraded"  # work is waiting and no consumer has said it is alive
    if any(model["state"] == "failed" for worker in workers for model in worker["models"]):
        status = "degraded"  # a worker cannot load a model: the analyses that need it fail
    if not database["ok"]:
        status = "error"
    return {
        "status": status,
        "role": current_app.config["PRISM_ROLE"],
        "database": database,
        "queue": queue,
        "storage": storage,
        "workers": workers,
    }
