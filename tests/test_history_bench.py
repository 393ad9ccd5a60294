"""The history bench on a small database: every page answered, timed and explained."""

from __future__ import annotations

import json

from webapp import history_bench


def test_history_bench_times_every_page_and_explains_its_queries():
    """A 300-row run times each page, reports p50 <= p95, the COUNT plan, and the target verdict."""
    echoed: list[str] = []
    result = history_bench.run(rows=300, repetitions=3, echo=echoed.append)

    assert result["rows"] == 300 and result["owner_rows"] == 240 and result["repetitions"] == 3
    assert echoed and "seeded 300 analyses" in echoed[0]
    names = [case["name"] for case in result["cases"]]
    assert {"history: page 1", "history: text search", "admin: all analyses", "api: analyses"} <= set(names)
    for case in result["cases"]:
        assert 0 < case["p50_ms"] <= case["p95_ms"] <= case["max_ms"]
        assert case["passed"] == (case["p95_ms"] < history_bench.TARGET_P95_MS)
        assert case["plans"] and all(plan["plan"] for plan in case["plans"])
        assert case["reads"] != "table scan"  # every page is served by an index
    assert result["passed"] == all(case["passed"] for case in result["cases"])
    target = history_bench.target(result)
    assert target["measured"] == max(case["p95_ms"] for case in result["cases"])
    assert target["passed"] == result["passed"]
    table = history_bench.format_table(result)
    assert "history: page 1" in table and ("PASS" in table or "MISS" in table)


def test_bench_command_history_only_writes_json(app, runner, tmp_path):
    """`manage.py bench --only history` prints the table and the target, and writes the JSON."""
    out = tmp_path / "bench.json"

    result = runner.invoke(args=["bench", "--only", "history", "--history-rows", "200", "--out", str(out)])

    assert result.exit_code == 0, result.output
    assert "History pages: 200 analyses" in result.output and "Targets" in result.output
    saved = json.loads(out.read_text())
    assert set(saved) == {"history", "targets"} and saved["history"]["rows"] == 200
