"""Durable background jobs on Huey: one job per analysis.

Which queue: ``PRISM_JOBS_IMMEDIATE`` (tests: the job runs inside the call that queues it), else
``RedisHuey`` when ``PRISM_REDIS_URL`` is set (workers on several hosts), else ``SqliteHuey`` in
``PRISM_JOBS_DB`` (embedded default: durable, no server). The queue is built on first use, not in
``create_app``, so building the app writes no file.

The queue only carries "run analysis N". The analysis row is the source of truth (see
``runner.py``): Huey drops a task from its queue before running it, so each consumer re-enqueues, on
start and every ``PRISM_JOB_SWEEP_SECONDS``, pending rows missing from the queue and running rows whose
lease expired (``requeue_stalled``; ``housekeeping.py`` runs it, and the workers' heartbeats).
Running a job twice is harmless: a claim is one conditional UPDATE, and a prediction kind is unique
per analysis.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from flask import Flask, current_app
from huey import Huey, MemoryHuey, RedisHuey, SqliteHuey
from huey.api import TaskWrapper
from huey.consumer import Consumer, Worker
from huey.storage import SqliteStorage
from sqlalchemy import and_, func, or_, select, update

from ..extensions import db
from ..models import PENDING, RUNNING, Analysis, utcnow

logger = logging.getLogger(__name__)
EXTENSION_KEY = "prism_jobs"
RUN_ANALYSIS = "prism.run_analysis"
# Consumer threads of this process that sleep between polls wait on this; enqueueing wakes one, so a
# consumer in the web process (`manage.py run`) starts a job at once instead of at its next poll.
_WAKE = threading.Condition()


class QueueStorage(SqliteStorage):
    """SqliteHuey's storage with ``synchronous=NORMAL`` (WAL), as Prism's own database uses.

    Huey's default fsyncs every enqueue and dequeue. NORMAL loses no committed write when a process
    dies, only possibly the last ones at power loss, and a lost queue entry is found again by the
    sweep because the analysis row, not the queue, is the source of truth.
    """

    def _create_connection(self):
        connection = super()._create_connection()
        connection.execute("pragma synchronous=1")
        return connection


class JobQueue:
    """The app's Huey instance and its two tasks, created on first use (thread-safe)."""

    def __init__(self, app: Flask):
        self._app = app
        self._lock = threading.Lock()
        self._huey: Huey | None = None
        self.run_analysis: TaskWrapper | None = None
        self._outcomes: Counter[str] = Counter()  # what jobs run here returned ("done", "failed", ...)

    @property
    def huey(self) -> Huey:
        with self._lock:
            if self._huey is None:
                self._huey = self._build()
            return self._huey

    def _build(self) -> Huey:
        config = self._app.config
        common: dict[str, Any] = {"name": "prism", "results": False, "utc": True}
        if config["PRISM_JOBS_IMMEDIATE"]:
            huey: Huey = MemoryHuey(immediate=True, **common)
        elif config["PRISM_REDIS_URL"]:
            huey = RedisHuey(url=config["PRISM_REDIS_URL"], blocking=True, **common)
        else:
            huey = SqliteHuey(filename=config["PRISM_JOBS_DB"], storage_class=QueueStorage, **common)
        app = self._app

        def run_analysis(analysis_id: int) -> str:
            from .runner import run

            with app.app_context():
                outcome = run(analysis_id)
            with self._lock:
                self._outcomes[outcome] += 1
            return outcome

        self.run_analysis = huey.task(name=RUN_ANALYSIS)(run_analysis)
        return huey

    @property
    def backend(self) -> str:
        """Which queue this is, for /healthz: "immediate", "redis" or "sqlite"."""
        config = self._app.config
        if config["PRISM_JOBS_IMMEDIATE"]:
            return "immediate"
        return "redis" if config["PRISM_REDIS_URL"] else "sqlite"

    def outcome_counts(self, *outcomes: str) -> tuple[int, ...]:
        """How many jobs this process ran that ended in each of ``outcomes`` (for the heartbeat)."""
        with self._lock:
            return tuple(self._outcomes[outcome] for outcome in outcomes)

    def queued_ids(self) -> set[int]:
        """Analysis ids with a job waiting in the queue or scheduled for later."""
        huey = self.huey
        ids = set()
        for task in [*huey.pending(), *huey.scheduled()]:
            if task.name == RUN_ANALYSIS and task.args:
                ids.add(int(task.args[0]))
        return ids


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION_KEY] = JobQueue(app)


def get_queue() -> JobQueue:
    return current_app.extensions[EXTENSION_KEY]


def enqueue_analyses(analysis_ids: Iterable[int], *, delay: float | None = None) -> None:
    """Queue one job per analysis. Call after the commit that made them pending: a job must find its row.

    A queue that cannot be reached (Redis down) loses nothing: the rows stay pending and the next
    sweep queues them. In immediate mode the job runs here, in its own session, so the caller's
    session must hold no transaction (with SQLite, that would be the write lock the job needs).
    """
    db.session.rollback()
    queue = get_queue()
    huey = queue.huey
    for analysis_id in analysis_ids:
        try:
            if delay:
                queue.run_analysis.schedule((analysis_id,), delay=delay)
            else:
                queue.run_analysis(analysis_id)
        except Exception:  # the row is the source of truth; the sweep retries the enqueue
            if huey.immediate:
                raise
            logger.exception("could not queue analysis %s; the sweep will", analysis_id)
        else:
            with _WAKE:
                _WAKE.notify()


def job_backlog() -> dict[str, Any]:
    """Pending and running analyses (from the database), and how long the oldest pending one has
    waited: a backlog that only grows means no consumer is running (start `manage.py worker`)."""
    counts = dict(
        db.session.execute(
            select(Analysis.status, func.count())
            .where(Analysis.status.in_((PENDING, RUNNING)))
            .group_by(Analysis.status)
        ).all()
    )
    oldest = db.session.scalar(select(func.min(Analysis.queued_at)).where(Analysis.status == PENDING))
    return {
        "pending": counts.get(PENDING, 0),
        "running": counts.get(RUNNING, 0),
        "oldest_pending_seconds": round((utcnow() - oldest).total_seconds(), 1) if oldest else None,
    }


def requeue_stalled(*, pending_grace_seconds: float = 5.0) -> int:
    """Queue a job for every analysis that should have one and has none; returns how many.

    That is: pending rows that are not in the queue (the web process died between its commit and its
    enqueue, or Redis was down), and running rows whose lease expired (their worker was killed).
    """
    now = utcnow()
    lease_expired = and_(Analysis.status == RUNNING, Analysis.lease_expires_at < now)
    forgotten = and_(Analysis.status == PENDING, Analysis.queued_at < now - timedelta(seconds=pending_grace_seconds))
    candidates = db.session.scalars(select(Analysis.id).where(or_(lease_expired, forgotten))).all()
    db.session.rollback()
    if not candidates:
        return 0
    missing = sorted(set(candidates) - get_queue().queued_ids())
    if missing:
        db.session.execute(update(Analysis).where(Analysis.id.in_(missing)).values(queued_at=now))
        db.session.commit()
        logger.warning("re-queued %d stalled analyses: %s", len(missing), missing[:20])
        enqueue_analyses(missing)
    return len(missing)


class PrismWorker(Worker):
    """Huey's worker, sleeping between polls on a condition that an enqueue in this process signals."""

    def sleep(self) -> None:
        self.delay = min(self.delay, self.max_delay)
        with _WAKE:
            woken = _WAKE.wait(self.delay)
        self.delay = self.default_delay if woken else self.delay * self.backoff


class PrismConsumer(Consumer):
    """Huey's consumer plus this process's ``Housekeeper`` (heartbeat and stalled-job sweep)."""

    worker_class = PrismWorker

    def __init__(self, huey: Huey, *, app: Flask, **options: Any):
        from .housekeeping import Housekeeper

        super().__init__(huey, **options)
        self.housekeeper = Housekeeper(app, threads=options["workers"])

    def start(self) -> None:
        super().start()
        self.housekeeper.start()

    def stop(self, graceful: bool = False) -> None:
        super().stop(graceful=graceful)
        if self.housekeeper.is_alive():
            self.housekeeper.stop()


class InProcessConsumer(PrismConsumer):
    """A consumer inside the web server's process (``manage.py run``): the server keeps its signals."""

    def _set_signal_handlers(self) -> None:
        pass


def create_consumer(app: Flask, *, in_process: bool = False) -> Consumer:
    """A Huey consumer with ``PRISM_WORKER_THREADS`` threads that submit to the model service at once
    (so its micro-batching still batches); stalled work is re-queued before it starts."""
    if app.config["PRISM_ROLE"] == "web":
        raise RuntimeError("PRISM_ROLE=web never runs jobs (they load the models): start `manage.py worker`")
    with app.app_context():
        huey = get_queue().huey
        requeue_stalled(pending_grace_seconds=0)
    consumer_class = InProcessConsumer if in_process else PrismConsumer
    return consumer_class(
        huey,
        app=app,
        workers=app.config["PRISM_WORKER_THREADS"],
        worker_type="thread",
        periodic=False,  # the sweep runs on the housekeeper's clock, not as a Huey periodic task
        # Polling (SQLite has no blocking read): quick after work, backing off to a ceiling when idle.
        initial_delay=0.005,
        backoff=1.2,
        max_delay=app.config["PRISM_WORKER_MAX_POLL_MS"] / 1000.0,
        check_worker_health=not in_process,
    )
