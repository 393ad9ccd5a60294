"""The queue bench end to end on the fake model: both paths answered, the same work on each."""

from __future__ import annotations

from webapp import queue_bench


def test_queue_bench_runs_both_paths_and_reports_its_targets():
    echoed: list[str] = []
    result = queue_bench.run(
        {"PRISM_MODEL_BACKEND": "fake", "PRISM_FAKE_LATENCY_MS": 5.0},
        "prism/fake-caption",
        clients=(1, queue_bench.TARGET_CLIENTS),
        items=4,
        echo=echoed.append,
    )

    levels = {(level["path"], level["clients"]): level for level in result["levels"]}
    assert set(levels) == {(path, count) for path in ("direct", "queue") for count in (1, queue_bench.TARGET_CLIENTS)}
    assert all(level["errors"] == 0 and level["completed"] == level["requests"] for level in levels.values())
    assert result["queued_kinds"] == ["caption"]  # the queue path did the direct path's work, no more
    assert result["p50_overhead_ms"] is not None and result["throughput_ratio"] > 0
    assert [target["name"] for target in result["targets"]] == [
        "queue, 1 client: p50 latency minus direct p50 (ms)",
        f"queue, {queue_bench.TARGET_CLIENTS} clients: captions/s / direct captions/s",
    ]
    assert "queue cost" in queue_bench.format_table(result)
