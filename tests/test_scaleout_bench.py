"""The scale-out bench on a small scale: real worker processes on PostgreSQL and Redis, history on both."""

from __future__ import annotations

import shutil

from webapp import scaleout_bench


def test_scaleout_bench_times_one_and_two_workers_and_both_databases(postgres, redis_server_url):
    """(The fixtures only skip this where PostgreSQL or Redis is missing; the bench starts its own.)
    Four rounds (1, 2, 1, 2 workers) each finish every job; history is timed on SQLite and PostgreSQL
    page by page; the targets are computed from those numbers."""
    echoed: list[str] = []
    result = scaleout_bench.run(rows=120, jobs=12, echo=echoed.append)

    rounds = result["workers"]["rounds"]
    assert [entry["workers"] for entry in rounds] == [1, 2, 1, 2]
    assert all(entry["jobs"] == 12 and entry["seconds"] > 0 for entry in rounds)
    one = sum(e["jobs_per_s"] for e in rounds if e["workers"] == 1) / 2
    two = sum(e["jobs_per_s"] for e in rounds if e["workers"] == 2) / 2
    assert result["workers"]["speedup"] == round(two / one, 3)
    assert result["history_sqlite"]["database"] == "sqlite"
    assert result["history_postgresql"]["database"] == "postgresql"
    table = scaleout_bench.format_table(result)
    assert "two workers / one" in table and "PostgreSQL" in table and "requests/s" in table
    speedup, history = scaleout_bench.targets(result)
    assert speedup["passed"] == (result["workers"]["speedup"] >= scaleout_bench.SPEEDUP_GOAL)
    assert history["measured"] == max(case["p95_ms"] for case in result["history_postgresql"]["cases"])


def test_scaleout_bench_says_why_it_is_skipped(monkeypatch):
    """Without PostgreSQL's binaries the bench reports the reason instead of failing."""
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr("glob.glob", lambda pattern: [])
    result = scaleout_bench.run(rows=10, jobs=2, echo=lambda line: None)
    assert "initdb" in result["skipped"]
    assert scaleout_bench.targets(result)[0]["passed"] is None
    assert "skipped" in scaleout_bench.format_table(result)
