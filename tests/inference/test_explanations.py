"""Explanations: caption cross-attention heatmaps and integrated-gradients sentiment attributions."""

from __future__ import annotations

import math
import threading
from dataclasses import replace

from PIL import Image

from webapp.inference.types import CaptionExplanation, SentimentExplanation


def test_fake_caption_explanation_has_one_normalised_map_per_word(fake_service):
    """The fake backend gives the real shapes without weights: a 4x4 grid per word and overall."""
    image = Image.new("RGB", (40, 30), (200, 10, 10))

    result = fake_service.explain_caption(image, "a red picture")

    assert isinstance(result, CaptionExplanation)
    assert result.caption == "a red picture" and result.words == ("a", "red", "picture")
    assert result.grid == (4, 4)
    assert len(result.per_word) == 3
    for grid in (*result.per_word, result.overall):
        assert len(grid) == 16 and math.isclose(sum(grid), 1.0, abs_tol=1e-9)
    assert result.model_id == "prism/fake-caption" and result.revision == "1"
    again = fake_service.explain_caption(image, "a red picture")
    assert replace(again, latency_ms=result.latency_ms) == result  # deterministic


def test_fake_sentiment_explanation_spans_and_completeness(fake_service):
    """Fake tokens are words and Han characters with their spans; attributions sum to the logit gap."""
    text = "great service 很好"

    result = fake_service.explain_sentiment(text)

    assert isinstance(result, SentimentExplanation)
    assert [text[start:end] for start, end in result.spans] == list(result.tokens) == ["great", "service", "很", "好"]
    assert result.label == "positive"
    assert math.isclose(sum(result.attributions), result.logit - result.baseline_logit + result.completeness_gap)
    assert result.attributions[0] > 0


def test_explanations_run_on_the_inference_thread(fake_service, monkeypatch):
    """Like every other call, explanations touch models only on the service's one inference thread."""
    seen = []
    caption_model = fake_service.caption_slot.get()
    sentiment_model = fake_service.sentiment_slot.get()
    explain_caption, explain_sentiment = caption_model.explain_caption, sentiment_model.explain_sentiment

    def record(function):
        def wrapper(*args):
            seen.append(threading.current_thread().name)
            return function(*args)

        return wrapper

    monkeypatch.setattr(caption_model, "explain_caption", record(explain_caption))
    monkeypatch.setattr(sentiment_model, "explain_sentiment", record(explain_sentiment))

    fake_service.explain_caption(Image.new("RGB", (8, 8)), "a picture")
    fake_service.explain_sentiment("bad")

    assert seen == [fake_service.worker.name] * 2
