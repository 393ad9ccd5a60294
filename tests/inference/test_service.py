"""The model service with the real transformers backend: lazy single loads, failures, thread safety."""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from flask import Flask
from PIL import Image
from transformers import PreTrainedModel

from webapp.inference import EXTENSION_KEY
from webapp.inference.cli import models_cli
from webapp.inference.service import ModelService, ModelSlot
from webapp.inference.types import MODEL_KINDS, GeneratedText, ModelState, ModelUnavailable, SentimentResult


def test_nothing_loads_until_the_first_call(make_settings):
    """Building the service loads no model; all four start NOT_LOADED."""
    service = ModelService(make_settings())

    assert [status.state for status in service.statuses()] == [ModelState.NOT_LOADED] * 4
    assert [slot.load_count for slot in service.slots] == [0, 0, 0, 0]


def test_caption_through_the_service_returns_a_stamped_result(make_settings, vit_gpt2_dir):
    """A caption call loads the model and returns plain values with model id and revision."""
    service = ModelService(make_settings())

    result = service.caption(Image.new("RGB", (40, 30), (10, 200, 10)))

    assert isinstance(result, GeneratedText)
    assert isinstance(result.text, str) and result.text
    assert result.model_id == vit_gpt2_dir.name and result.revision.startswith("sha256:")
    assert service.caption_slot.status().state is ModelState.READY


def test_sentiment_through_the_service_is_normalised(make_settings):
    """A sentiment call returns a three-level label, its scores and the raw checkpoint scores."""
    service = ModelService(make_settings())

    result = service.sentiment("The service was great, thanks!")

    assert isinstance(result, SentimentResult)
    assert result.label in ("negative", "neutral", "positive")
    assert result.score == result.scores[result.label]
    assert math.isclose(sum(result.scores.values()), 1.0, rel_tol=1e-5)
    assert list(result.raw_scores) == ["negative", "neutral", "positive"]


def test_two_class_checkpoint_uses_the_neutral_band(make_settings, sentiment2_dir):
    """With a two-class model and a band covering everything, every text is neutral."""
    service = ModelService(make_settings(sentiment_model=str(sentiment2_dir), neutral_range=(0.0, 1.0)))

    result = service.sentiment("it was fine")

    assert result.label == "neutral"
    assert set(result.scores) == {"negative", "positive"}
    assert list(result.raw_scores) == ["NEGATIVE", "POSITIVE"]


def test_warm_loads_every_model(make_settings):
    """warm() loads all four models and reports them ready with ids and revisions."""
    statuses = ModelService(make_settings()).warm(wait=60)

    assert [status.state for status in statuses] == [ModelState.READY] * 4
    assert all(status.model_id and status.revision for status in statuses)


def test_missing_hub_model_offline_is_failed_with_the_reason(make_settings):
    """Offline, an unavailable hub id leaves the slot FAILED and the caller gets ModelUnavailable."""
    service = ModelService(make_settings(caption_model="prism-tests/no-such-captioner"))

    with pytest.raises(ModelUnavailable) as caught:
        service.caption(Image.new("RGB", (8, 8)))

    assert caught.value.kind == "caption" and caught.value.state is ModelState.FAILED
    assert "not available offline" in caught.value.detail  # the diagnosis, for administrators
    assert "not available on this server" in caught.value.message and caught.value.retry_after is None
    status = service.caption_slot.status()
    assert status.state is ModelState.FAILED and "not available offline" in status.detail


def test_a_failing_loader_is_not_retried_before_the_retry_delay(make_settings):
    """A loader error becomes ModelUnavailable(FAILED) with its message, and is not re-run at once."""

    def broken_loader(progress):
        raise RuntimeError("weights are corrupt")

    slot = ModelSlot(
        "caption",
        "broken",
        broken_loader,
        make_settings(retry_failed_after_seconds=3600),
        prepare=lambda model, item: item,
        run_batch=lambda model, batch: list(batch),
        max_batch=1,
    )

    for _ in range(2):
        with pytest.raises(ModelUnavailable) as caught:
            slot.get()
        assert caught.value.state is ModelState.FAILED
        assert "RuntimeError: weights are corrupt" in caught.value.detail
    assert slot.load_count == 1


def test_concurrent_first_calls_load_the_model_once(make_settings):
    """Sixteen simultaneous first caption calls share one load and get the same caption."""
    service = ModelService(make_settings())
    image = Image.new("RGB", (48, 48), (90, 90, 200))
    start = threading.Barrier(16)

    def call(_):
        start.wait()
        return service.caption(image).text

    with ThreadPoolExecutor(max_workers=16) as pool:
        texts = list(pool.map(call, range(16)))

    assert service.caption_slot.load_count == 1
    assert len(texts) == 16 and len(set(texts)) == 1


def test_parallel_sentiment_calls_match_sequential_results(make_settings):
    """Eight threads making 25 sentiment calls each raise nothing and match the sequential outputs.

    Concurrent calls are batched with padding, so scores may differ from the one-at-a-time run in the
    last float bits (not more than 1e-5); labels must be identical.
    """
    service = ModelService(make_settings())
    texts = ["great food", "terrible service, it broke", "it was fine", "thanks for the refund", "meh"]
    baseline = {text: service.sentiment(text) for text in texts}
    errors: list[BaseException] = []

    def worker(offset: int) -> list[tuple[str, SentimentResult]]:
        results = []
        for index in range(25):
            text = texts[(offset + index) % len(texts)]
            try:
                results.append((text, service.sentiment(text)))
            except Exception as exc:  # collected so the assertion shows every failure
                errors.append(exc)
        return results

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = [pair for batch in pool.map(worker, range(8)) for pair in batch]

    assert errors == []
    assert len(outcomes) == 200
    for text, result in outcomes:
        expected = baseline[text]
        assert result.label == expected.label
        assert result.raw_scores == pytest.approx(expected.raw_scores, abs=1e-5)
        assert result.scores == pytest.approx(expected.scores, abs=1e-5)


def _cli_app(service: ModelService) -> Flask:
    """A bare Flask app carrying ``service``, so the `models` commands run without Prism's app factory."""
    app = Flask(__name__)
    app.extensions[EXTENSION_KEY] = service
    app.cli.add_command(models_cli)
    return app


def test_models_check_reports_every_model_and_smoke_tests_it(make_settings, vit_gpt2_dir):
    """`models check` loads all four models (real OCR, tiny others), prints their ids and runs one
    inference on each, and exits 0."""
    service = ModelService(make_settings())
    app = _cli_app(service)

    result = app.test_cli_runner().invoke(args=["models", "check", "--timeout", "120"])

    service.close()
    assert result.exit_code == 0, result.output
    for kind in MODEL_KINDS:
        assert f"{kind}: ready" in result.output and f"{kind} smoke test: " in result.output
    assert f"model_id: {vit_gpt2_dir.name}" in result.output
    assert "caption smoke test: '" in result.output
    assert "embedding smoke test: 32 dimensions" in result.output
    assert "model_id: rapidocr-onnxruntime/PP-OCRv4" in result.output


def test_models_warm_exits_1_when_a_model_cannot_load(make_settings):
    """`models warm` exits 1 and prints the reason when a model is unavailable."""
    app = _cli_app(ModelService(make_settings(caption_model="prism-tests/no-such-captioner")))

    result = app.test_cli_runner().invoke(args=["models", "warm", "--timeout", "60"])

    assert result.exit_code == 1
    assert "caption: failed" in result.output and "not available offline" in result.output
    assert "sentiment: ready" in result.output


def test_concurrent_loads_leave_transformers_loading_intact(make_settings):
    """Loading both models at once does not leave transformers' load-time patches in place.

    from_pretrained swaps PreTrainedModel.tie_weights and torch.nn.init functions for no-ops while it
    runs; two unserialised loads restore each other's no-ops and break every later load in the process.
    """
    originals = (PreTrainedModel.tie_weights, PreTrainedModel.init_weights, torch.nn.init.normal_)

    for _ in range(3):
        statuses = ModelService(make_settings()).warm(wait=60)
        assert [status.state for status in statuses] == [ModelState.READY] * 4

    assert (PreTrainedModel.tie_weights, PreTrainedModel.init_weights, torch.nn.init.normal_) == originals
