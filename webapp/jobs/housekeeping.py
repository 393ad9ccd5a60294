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
from ..inference import get_model_service
from ..locks import claim_interval
from ..models import Worker, utcnow

logger = logging.getLogger(__name__)
FORGET_WORKERS_AFTER = timedelta(days=7)


def worker_name(pid: int | None = None) -> str:
    """A worker's name, ``<host>:<pid>``: this process's by default (called after any fork, so the pid
    is the live one), or the process ``pid`` on this host."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


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
        registered = False
        with self.app.app_context():
            while True:
                try:  # a database blip (even at start) must not end the heartbeat for good
                    if registered and time.monotonic() >= next_sweep:
                        next_sweep = time.monotonic() + sweep_every
                        self.sweep(interval=sweep_every)
                    self._beat(first=not registered)
                    registered = True
                except Exception:
                    db.session.rollback()
                    logger.exception("housekeeping failed; trying again")
                finally:
                    db.session.remove()
                if self._stopping.wait(min(heartbeat, max(0.0, next_sweep - time.monotonic()))):
                    return

    @staticmethod
    def sweep(interval: float) -> int:
        """Re-queue stalled work, unless another worker already did in this interval."""
        from . import requeue_stalled

        # Claimed for a little less than the interval, so the next round's claim is free again.
        return requeue_stalled() if claim_interval("requeue-stalled", interval * 0.9) else 0

    def _beat(self, *, first: bool = False) -> None:
        from . import get_queue

        done, failed = get_queue().outcome_counts("done", "failed")
        now = utcnow()
        models = [status.as_dict() for status in get_model_service().statuses()]
        values = {"last_seen_at": now, "jobs_done": done, "jobs_failed": failed, "models": models}
        if first:
            # Each start is a new row (a new pid); rows of workers gone for a week only clutter.
            db.session.execute(delete(Worker).where(Worker.last_seen_at < now - FORGET_WORKERS_AFTER))
            db.session.merge(
                Worker(
                    name=self.name_in_db,
                    hostname=socket.gethostname(),
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
