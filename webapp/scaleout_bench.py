"""`manage.py bench --only scaleout`: the scale-out topology measured against the one-machine default.

Two measurements, each against a baseline taken in the same run:

- **Workers**: jobs per second with two `manage.py worker` processes against one, on a throwaway
  PostgreSQL database and Redis queue (``webapp.devservers``), alternating 1, 2, 1, 2 workers.
  Each process has the fake model backend with a fixed time per model batch
  (``PRISM_FAKE_LATENCY_MS``): the model's time is the same on every host, so what the ratio
  measures is whether the queue, the claims and the database let a second worker add its full
  share, or serialise the workers somewhere. (With the real CPU models on this machine both
  workers would share the same cores; on separate hosts they do not.)
- **History on PostgreSQL**: the history bench (``history_bench``) on PostgreSQL with the same
  100,000 rows as on SQLite, side by side, with the request rate of one client.

The servers are started from the binaries on the machine; without them the part that needs them
says so and is skipped. This module must not import torch.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import PROJECT_ROOT

SPEEDUP_GOAL = 1.8  # two workers should add nearly a whole second worker's throughput
JOBS_PER_ROUND = 240
MODEL_BATCH_MS = 200.0
WORKER_THREADS = 4


def run(
    rows: int = 100_000,
    *,
    sqlite_history: dict[str, Any] | None = None,
    jobs: int = JOBS_PER_ROUND,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Both measurements; ``sqlite_history`` reuses a SQLite history result of this run (else one is taken)."""
    from . import history_bench
    from .devservers import ServerUnavailable, postgres_server, redis_server

    result: dict[str, Any] = {}
    try:
        with postgres_server() as postgres, redis_server() as redis_url:
            result["workers"] = _bench_workers(postgres.create_database("scaleout_workers"), redis_url, jobs, echo)
            echo("")
            result["history_postgresql"] = history_bench.run(
                rows, echo=echo, database_url=postgres.create_database("scaleout_history")
            )
    except ServerUnavailable as exc:
        echo(f"scaleout: skipped ({exc})")
        result["skipped"] = str(exc)
        return result
    result["history_sqlite"] = sqlite_history or history_bench.run(rows, echo=echo)
    return result


def _bench_workers(database_url: str, redis_url: str, jobs: int, echo: Callable[[str], None]) -> dict[str, Any]:
    from .extensions import db
    from .history_bench import scratch_app
    from .models import User

    with tempfile.TemporaryDirectory(prefix="prism-scaleout-") as tmp:
        settings = {
            "PRISM_SECRET_KEY": "scaleout-bench",
            "PRISM_DATABASE_URL": database_url,
            "PRISM_REDIS_URL": redis_url,
            "PRISM_MODEL_BACKEND": "fake",
            "PRISM_FAKE_LATENCY_MS": str(MODEL_BATCH_MS),
            "PRISM_WORKER_THREADS": str(WORKER_THREADS),
            "PRISM_WORKER_HEARTBEAT_SECONDS": "1",
            "PRISM_JOBS_IMMEDIATE": "0",
            "PRISM_RATELIMIT_ENABLED": "0",
        }
        (Path(tmp) / "bench").mkdir()
        app = scratch_app(
            Path(tmp) / "bench",
            SQLALCHEMY_DATABASE_URI=database_url,
            PRISM_REDIS_URL=redis_url,
            PRISM_MODEL_BACKEND="fake",
            PRISM_JOBS_IMMEDIATE=False,
            PRISM_WORKER_HEARTBEAT_SECONDS=1.0,
        )
        with app.app_context():
            user = User(username="scaleout-bench", role="user", password_hash="-")  # noqa: S106 (cannot sign in)
            db.session.add(user)
            db.session.commit()
            user_id = user.id
        rounds = []
        for number, workers in enumerate((1, 2, 1, 2)):
            seconds = _one_round(app, user_id, settings, Path(tmp) / f"round{number}", workers, jobs)
            rate = jobs / seconds
            rounds.append({"workers": workers, "jobs": jobs, "seconds": round(seconds, 2), "jobs_per_s": rate})
            echo(f"scaleout: {workers} worker(s): {jobs} jobs in {seconds:.2f} s ({rate:.1f} jobs/s)")
        with app.app_context():
            db.engine.dispose()
    one = statistics.mean(r["jobs_per_s"] for r in rounds if r["workers"] == 1)
    two = statistics.mean(r["jobs_per_s"] for r in rounds if r["workers"] == 2)
    return {
        "model_batch_ms": MODEL_BATCH_MS,
        "worker_threads": WORKER_THREADS,
        "rounds": rounds,
        "one_worker_jobs_per_s": round(one, 2),
        "two_workers_jobs_per_s": round(two, 2),
        "speedup": round(two / one, 3),
    }


def _one_round(app, user_id: int, settings: dict[str, str], directory: Path, workers: int, jobs: int) -> float:
    """Start ``workers`` worker processes (each in its own directory), wait until all report, queue
    ``jobs`` text analyses, and time them until every one is done."""
    from .analyses import submit_analysis
    from .devservers import stop_processes
    from .extensions import db
    from .health import recent_workers
    from .jobs import enqueue_analyses
    from .jobs.housekeeping import worker_name
    from .models import DONE, Analysis, User

    processes = []
    for index in range(workers):
        home = directory / f"worker{index}"
        home.mkdir(parents=True)
        env = {**os.environ, **settings, "PRISM_INSTANCE_PATH": str(home / "instance"), "PRISM_ROLE": "worker"}
        with (home / "output.log").open("wb") as log:  # the child keeps its own copy of the handle
            processes.append(
                subprocess.Popen(  # noqa: S603 (our own CLI)
                    [sys.executable, str(PROJECT_ROOT / "manage.py"), "worker"],
                    cwd=home,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        with app.app_context():
            names = {worker_name(process.pid) for process in processes}
            deadline = time.monotonic() + 60
            while not names <= {worker["name"] for worker in recent_workers()}:
                if time.monotonic() > deadline or any(process.poll() is not None for process in processes):
                    raise RuntimeError(f"scaleout bench: workers did not start; see {directory}")
                time.sleep(0.1)
            user = db.session.get(User, user_id)
            ids = []
            for number in range(jobs):
                ids.append(submit_analysis(user, "service", f"round text {number}: thanks, great service", None).id)
            db.session.commit()
            started = time.perf_counter()
            enqueue_analyses(ids)
            while True:
                done = db.session.scalar(
                    db.select(db.func.count()).where(Analysis.id.in_(ids), Analysis.status == DONE)
                )
                db.session.rollback()
                if done == len(ids):
                    return time.perf_counter() - started
                if time.perf_counter() - started > 300:
                    raise RuntimeError(f"scaleout bench: {len(ids) - done} jobs still waiting after 300 s")
                time.sleep(0.02)
    finally:
        stop_processes(processes, timeout=30)


def _request_rate(history: dict[str, Any]) -> float:
    """Requests per second of one client over every timed page (1000 / the mean of the page p50s)."""
    return 1000.0 / statistics.mean(case["p50_ms"] for case in history["cases"])


def format_table(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"Scale-out: skipped ({result['skipped']})"
    workers = result["workers"]
    lines = [
        f"Scale-out workers: Redis queue, PostgreSQL, fake model at {workers['model_batch_ms']:g} ms per batch, "
        f"{workers['worker_threads']} threads per worker",
        f"  {'workers':>7} {'jobs':>6} {'seconds':>8} {'jobs/s':>8}",
    ]
    for entry in workers["rounds"]:
        lines.append(f"  {entry['workers']:>7} {entry['jobs']:>6} {entry['seconds']:>8.2f} {entry['jobs_per_s']:>8.1f}")
    lines.append(f"  two workers / one: {workers['speedup']:.2f}x (goal >= {SPEEDUP_GOAL:g}x)")
    sqlite, postgresql = result["history_sqlite"], result["history_postgresql"]
    lines += [
        "",
        f"History pages side by side, {postgresql['rows']:,} rows, p95 ms (target < {postgresql['target_p95_ms']:g}):",
        f"  {'page':<30} {'SQLite':>8} {'PostgreSQL':>11}",
    ]
    by_name = {case["name"]: case for case in sqlite["cases"]}
    for case in postgresql["cases"]:
        lines.append(f"  {case['name']:<30} {by_name[case['name']]['p95_ms']:>8.1f} {case['p95_ms']:>11.1f}")
    lines.append(f"  {'one client, requests/s':<30} {_request_rate(sqlite):>8.1f} {_request_rate(postgresql):>11.1f}")
    return "\n".join(lines)


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's two scale-out targets as {name, measured, goal, passed}."""
    from . import history_bench
    from .inference.bench import target

    if "skipped" in result:
        return [{"name": "scale-out", "measured": None, "goal": "PostgreSQL and Redis binaries", "passed": None}]
    speedup = result["workers"]["speedup"]
    history = history_bench.target(result["history_postgresql"])
    history["name"] = "PostgreSQL " + history["name"]
    return [target("two workers / one worker, jobs/s", speedup, ">=", SPEEDUP_GOAL), history]
