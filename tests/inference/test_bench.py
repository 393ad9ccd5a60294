"""The model bench end to end on the tiny checkpoints: structure and self-consistency, never a time."""

from __future__ import annotations

import json
import math

import pytest
from tiny_models import tiny_settings

from webapp.inference import bench


@pytest.fixture(scope="module")
def result(tmp_path_factory, vit_gpt2_dir, sentiment3_dir):
    """One small run (2 requests per level, 1 and 2 clients) shared by the tests below: each kind in its
    own spawned process, as ``manage.py bench`` runs them, merged into one result."""
    settings = tiny_settings(tmp_path_factory.mktemp("models"), caption_num_beams=4, torch_threads=0)
    return bench.run_isolated(
        settings,
        caption_model=str(vit_gpt2_dir),
        sentiment_model=str(sentiment3_dir),
        options=bench.BenchOptions(clients=(1, 2), items=2, gemm_size=128),
    )


def _level(kind: dict, run: str, clients: int) -> dict:
    entry = next(entry for entry in kind["runs"] if entry["name"] == run)
    return next(level for level in entry["levels"] if level["clients"] == clients)


def test_caption_runs_cover_baseline_and_every_mode(result):
    """Captions: the beam-4 and greedy baselines and each Prism mode, every request answered."""
    caption = result["caption"]
    names = [entry["name"] for entry in caption["runs"]]
    assert names == ["baseline beam4", "baseline greedy", "fp32 beam4", "bf16 beam4", "int8 beam4", "int8 greedy"]
    for entry in caption["runs"]:
        assert entry["load_seconds"] >= 0 and entry["rss_mb"] > 0
        expected_clients = [1] if entry["baseline"] else [1, 2]
        assert [level["clients"] for level in entry["levels"]] == expected_clients
        for level in entry["levels"]:
            assert level["errors"] == 0 and level["completed"] == level["requests"] >= 3 * level["clients"]
            assert level["items_per_second"] > 0 and level["p95_ms"] >= level["p50_ms"] > 0
            if not entry["baseline"]:
                assert 1 <= level["mean_batch"] <= level["clients"]
    assert caption["new_tokens"] == bench.NEW_TOKENS
    assert 0 < caption["flops_per_item"]["encoder"] < caption["flops_per_item"]["greedy"]
    assert caption["flops_per_item"]["greedy"] < caption["flops_per_item"]["beam4"]


def test_ratios_are_computed_from_the_measured_numbers(result):
    """x baseline and x floor follow from the measured throughput, FLOPs and GEMM peak of the same run."""
    caption = result["caption"]
    baseline = _level(caption, "baseline beam4", 1)
    prism = _level(caption, "int8 greedy", 2)
    assert math.isclose(prism["vs_baseline"], prism["items_per_second"] / baseline["items_per_second"])
    floor_ms = caption["flops_per_item"]["greedy"] / (result["gemm_peak_gflops"]["bf16"] * 1e9) * 1000
    assert math.isclose(prism["vs_bf16_floor"], prism["ms_per_item"] / floor_ms, rel_tol=1e-2)
    assert math.isclose(caption["floor_ms"]["bf16"]["greedy"], floor_ms, rel_tol=1e-2)
    assert result["gemm_peak_gflops"]["fp32"] > 0 and result["gemm_peak_gflops"]["bf16"] > 0


def test_agreement_compares_the_same_inputs(result):
    """Each Prism run is compared with the fp32 baseline of its decoding on every image it captioned."""
    caption = result["caption"]
    images = len(caption["images"])
    for entry in caption["runs"]:
        if entry["baseline"]:
            continue
        agreement = entry["agreement_with_fp32"]
        assert agreement["reference"] == ("baseline beam4" if entry["num_beams"] == 4 else "baseline greedy")
        assert agreement["compared"] == images and 0 <= agreement["matches"] <= images
    # fp32 beam 4 batched through Prism gives the baseline's captions (tested in fp32, see the backend).
    assert next(e for e in caption["runs"] if e["name"] == "fp32 beam4")["agreement_with_fp32"]["rate"] == 1.0
    assert set(caption["greedy_vs_beam4"]) == {"fp32, batch 1", "int8, Prism"}


def test_sentiment_runs_and_label_agreement(result):
    """Sentiment: the baseline, fp32, bf16 and int8, with label agreement on the mixed-length texts."""
    sentiment = result["sentiment"]
    assert [entry["name"] for entry in sentiment["runs"]] == ["baseline", "fp32", "bf16", "int8"]
    tokens = sentiment["tokens_per_text"]
    assert tokens["min"] <= tokens["mean"] <= tokens["max"] and tokens["max"] > 2 * tokens["min"]
    baseline_texts = sentiment["runs"][0]["levels"][0]["completed"]  # one client: texts 0, 1, 2, ...
    for entry in sentiment["runs"][1:]:
        agreement = entry["agreement_with_fp32"]
        assert agreement["compared"] == baseline_texts and 0 <= agreement["max_probability_difference"] < 1
        assert all(level["errors"] == 0 for level in entry["levels"])
    assert sentiment["runs"][1]["agreement_with_fp32"]["rate"] == 1.0  # fp32 vs fp32: same labels


def test_targets_and_report(result, tmp_path):
    """Targets not measured at these client counts are None, not guesses; the report and JSON are complete."""
    by_name = {target["name"]: target for target in bench.targets(result)}
    assert by_name["captions int8 beam4, 8 clients: x baseline captions/s"]["passed"] is None
    latency = by_name["captions fp32 beam4, 1 client: p50 latency / baseline p50"]
    expected = (
        _level(result["caption"], "fp32 beam4", 1)["p50_ms"] / _level(result["caption"], "baseline beam4", 1)["p50_ms"]
    )
    assert math.isclose(latency["measured"], expected) and latency["passed"] == (expected <= 1.05)
    report = bench.format_report(result)
    for text in ("GEMM peak measured in this run", "Captions:", "Sentiment:", "int8 greedy", "int8", "Peak RSS"):
        assert text in report
    path = tmp_path / "out" / "bench.json"
    bench.write_json(result, path)
    saved = json.loads(path.read_text())
    assert {"environment", "gemm_peak_gflops", "caption", "sentiment", "peak_rss_mb", "targets"} <= set(saved)
    assert saved["environment"]["torch_threads"] >= 1 and saved["peak_rss_mb"] > 0


def test_sample_inputs_are_varied():
    """Images come in several sizes; texts mix English and Chinese, short and long."""
    images = bench.sample_images(8)
    assert len({image.size for image in images}) == 8
    texts = bench.sample_texts(64)
    assert any("，" in text for text in texts) and any(text.isascii() for text in texts)
    assert max(map(len, texts)) > 10 * min(map(len, texts))


def test_merged_runs_keep_each_kind_and_recompute_the_targets(result):
    """merge_runs: each kind's section from its own run, the largest RSS, targets over both kinds."""
    caption_only = {key: value for key, value in result.items() if key != "sentiment"}
    sentiment_only = {key: value for key, value in result.items() if key != "caption"}
    sentiment_only = {**sentiment_only, "peak_rss_mb": caption_only["peak_rss_mb"] + 1, "targets": []}
    merged = bench.merge_runs([{**caption_only, "targets": []}, sentiment_only])
    assert merged["caption"] is result["caption"] and merged["sentiment"] is result["sentiment"]
    assert merged["peak_rss_mb"] == caption_only["peak_rss_mb"] + 1
    assert [target["name"] for target in merged["targets"]] == [target["name"] for target in result["targets"]]
    assert any(name.startswith("sentiment") for name in (target["name"] for target in merged["targets"]))
