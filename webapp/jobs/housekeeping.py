"""What every consumer does besides running jobs: say it is alive, and re-queue stalled work.

Both run on one thread per consumer process (``Housekeeper``), on their own clocks:
- a heartbeat upserts this worker's ``Worker`` row every ``PRISM_WORKER_HEARTBEAT_SECONDS`` (its
  job counts and model states), so ``/healthz`` and the admin overview list live workers on every host;
- a sweep (``requeue_stalled``) every ``PRISM_JOB_SWEEP_SECONDS``, under a cross-host lock when Redis
  is configured, so N workers sweep once per interval rather than N times.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import timedelta

from flask import Flask
from sqlalchemy import delete, update

from ..extensions import db
from ..locks import exclusive
from ..models import Worker, utcnow

logger = logging.getLogger(__name__)
FORGET_WORKERS_AFTER = timedelta(days=7)


def worker_name() -> str:
    """This process as a worker: ``<host>:<pid>`` (called after any fork, so the pid is the live one)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _model_states(app: Flask) -> list[dict]:
    service = app.extensions.get("prism_models")
    return [status.as_dict() for status in service.statuses()] if service is not None else []


class Housekeeper(threading.Thread):
    """Heartbeat and sweep for one consumer process; ``stop()`` marks the worker as stopped."""

    def __init__(self, app: Flask, *, threads: int):
        super().__init__(name="prism-housekeeper", daemon=True)
        self.app = app
        self.threads = threads
        self.name_in_db = worker_name()
        self._stopping = threading.Event()

    def run(self) -> None:
        config = self.app.config
        heartbeat, sweep_every = config["PRISM_WORKER_HEARTBEAT_SECONDS"], config["PRISM_JOB_SWEEP_SECONDS"]
        next_sweep = time.monotonic() + sweep_every  # the consumer swept once as it started
        with self.app.app_context():
            self._beat(first=True)
            while not self._stopping.wait(min(heartbeat, max(0.0, next_sweep - time.monotonic()))):
                try:
                    if time.monotonic() >= next_sweep:
                        next_sweep = time.monotonic() + sweep_every
                        self.sweep(ttl=sweep_every)
                    self._beat()
                except Exception:  # a database blip must not end the heartbeat for good
                    db.session.rollback()
                    logger.exception("housekeeping failed; trying again")
                finally:
                    db.session.remove()

    @staticmethod
    def sweep(ttl: float) -> int:
        from . import requeue_stalled

        with exclusive("requeue-stalled", ttl=ttl) as mine:
            return requeue_stalled() if mine else 0

    def _beat(self, *, first: bool = False) -> None:
        from . import get_queue

        done, failed = get_queue().outcome_counts("done", "failed")
        now = utcnow()
        values = {"last_seen_at": now, "jobs_done": done, "jobs_failed": failed, "models": _model_states(self.app)}
        if first:
            # Each start is a new row (a new pid); rows of workers gone for a week only clutter.
            db.session.execute(delete(Worker).where(Worker.last_seen_at < now - FORGET_WORKERS_AFTER))
            db.session.merge(
                Worker(
                    name=self.name_in_db,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    threads=self.threads,
                    started_at=now,
                    stopped_at=None,
                    **values,
                )
            )
        else:
            db.session.execute(update(Worker).where(Worker.name == self.name_in_db).values(**values))
        db.session.commit()

    def stop(self) -> None:
        """Stop beating and record the stop (a worker that is killed simply stops being seen)."""
        self._stopping.set()
        self.join(10)
        with self.app.app_context():
            db.session.execute(update(Worker).where(Worker.name == self.name_in_db).values(stopped_at=utcnow()))
            db.session.commit()
            db.session.remove()
