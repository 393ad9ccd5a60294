"""The history bench on a small database: every page answered, timed and explained."""

from __future__ import annotations

import json
import random
from collections import Counter

from webapp import history_bench


def test_history_bench_times_every_page_and_explains_its_queries():
    """A 300-row run times each page, reports p50 <= p95, the COUNT plan, and the target verdict."""
    echoed: list[str] = []
    result = history_bench.run(rows=300, repetitions=3, echo=echoed.append)

    assert result["rows"] == 300 and result["owner_rows"] == 240 and result["repetitions"] == 3
    assert echoed and "seeded 300 analyses" in echoed[0]
    names = [case["name"] for case in result["cases"]]
    assert {"history: page 1", "history: text search", "admin: all analyses", "api: analyses"} <= set(names)
    assert {"history: review unreviewed", "history: confidence uncertain", "review queue: service"} <= set(names)
    for case in result["cases"]:
        assert 0 < case["p50_ms"] <= case["p95_ms"] <= case["max_ms"]
        assert case["queries"] >= len(case["plans"]) >= 2  # at least the page and its COUNT(*)
        assert case["passed"] == (case["p95_ms"] < history_bench.TARGET_P95_MS)
        assert case["plans"] and all(plan["plan"] for plan in case["plans"])
        assert "table scan" not in case["reads"]  # every page is served by an index
    assert result["passed"] == all(case["passed"] for case in result["cases"])
    target = history_bench.target(result)
    assert target["measured"] == max(case["p95_ms"] for case in result["cases"])
    assert target["passed"] == result["passed"]
    table = history_bench.format_table(result)
    for case in result["cases"]:
        row = next(line for line in table.splitlines() if line.startswith(case["name"] + " "))
        assert ("PASS" if case["passed"] else "MISS") in row, row
    queue = next(case for case in result["cases"] if case["name"] == "review queue: service")
    # The queue reads predictions alone (they carry their analysis's owner and scenario), by its index.
    assert any("FROM prediction WHERE prediction.user_id" in plan["sql"] for plan in queue["plans"])
    assert "ix_prediction_queue" in queue["reads"]


def test_bench_command_history_only_writes_json(app, runner, tmp_path):
    """`manage.py bench --only history` prints the table and the target, and writes the JSON."""
    out = tmp_path / "bench.json"

    result = runner.invoke(args=["bench", "--only", "history", "--history-rows", "200", "--out", str(out)])

    assert result.exit_code == 0, result.output
    assert "History pages on sqlite: 200 analyses" in result.output and "Targets" in result.output
    saved = json.loads(out.read_text())
    assert set(saved) == {"history", "targets"} and saved["history"]["rows"] == 200


def test_seeded_rows_are_what_the_app_would_have_written(app):
    """The bulk-seeded analyses, predictions and reviews read back through the ORM as the app writes them."""
    from webapp.analyses import confidence_policy
    from webapp.extensions import db
    from webapp.models import DECISIONS, Analysis, Prediction, Review

    with app.test_request_context():
        history_bench._seed(400, random.Random(0))
        analyses = db.session.scalars(db.select(Analysis).order_by(Analysis.id)).all()
        predictions = db.session.scalars(db.select(Prediction)).all()
        policy = confidence_policy()

        assert [analysis.id for analysis in analyses] == list(range(1, 401))
        assert {a.id for a in analyses if a.status == "failed"} == {a.id for a in analyses if a.id % 97 == 0}
        assert {analysis.status for analysis in analyses} == {"done", "failed"}
        assert sum(analysis.user.username == "bench-owner" for analysis in analyses) == 320
        for analysis in analyses:
            assert [p.kind for p in analysis.predictions] == analysis.tasks  # caption first, as the job writes them
            assert ("caption" in analysis.tasks) == (analysis.image_sha256 is not None)
            assert ("sentiment" in analysis.tasks) == (analysis.text is not None)
            assert analysis.finished_at >= analysis.created_at
        for prediction in predictions:
            review = prediction.latest_review
            expected_state = DECISIONS[review.decision] if review else "unreviewed"
            assert prediction.review_state == expected_state
            if review is not None:
                assert review.reviewer_id == prediction.analysis.user_id
                assert review.reviewer_name == prediction.analysis.user.username
                assert (review.value is not None) == (review.decision == "correct")
                assert review.value != prediction.ai_value
            if prediction.kind == "sentiment":
                assert prediction.final_label == prediction.value  # what the history filter matches
                ranked = sorted(prediction.scores.values(), reverse=True)
                assert prediction.confidence == ranked[0] == prediction.scores[prediction.label]
                assert abs(prediction.margin - (ranked[0] - ranked[1])) < 1e-3
                assert abs(sum(ranked) - 1) < 1e-3
            else:
                assert prediction.final_label is None and prediction.confidence is None and prediction.ai_value

        states = Counter(p.review_state for p in predictions)
        assert set(states) == {"unreviewed", "accepted", "corrected", "rejected"}
        assert 0.05 < 1 - states["unreviewed"] / len(predictions) < 0.15  # about one in ten reviewed
        assert db.session.scalar(db.select(db.func.count(Review.id))) == len(predictions) - states["unreviewed"]
        sentiments = [p for p in predictions if p.kind == "sentiment"]
        uncertain = [p for p in sentiments if policy.is_uncertain(p.confidence, p.margin)]
        assert 0 < len(uncertain) < len(sentiments) / 2
        assert {policy.band(p.confidence) for p in sentiments} == {"high", "medium", "low"}


def test_history_bench_runs_on_postgresql(postgres):
    """The same bench on a PostgreSQL database: seeded with explicit ids (sequences moved on), every page
    answered and explained with PostgreSQL's EXPLAIN."""
    result = history_bench.run(
        rows=300, repetitions=2, echo=lambda line: None, database_url=postgres.create_database("history_bench")
    )
    assert result["database"] == "postgresql" and len(result["cases"]) >= 16
    for case in result["cases"]:
        assert 0 < case["p50_ms"] <= case["p95_ms"]
        assert case["plans"] and case["reads"] != "-", case["name"]
    assert "History pages on postgresql" in history_bench.format_table(result)
