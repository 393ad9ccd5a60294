"""The real transformers loaders, run on tiny checkpoints built in conftest (no downloads)."""

from __future__ import annotations

import math

import pytest
from PIL import Image
from tiny_models import build_sentiment

from webapp.inference import hub
from webapp.inference.transformers_backend import load_caption_model, load_sentiment_model
from webapp.inference.types import ModelState


def _images() -> list[Image.Image]:
    return [Image.new("RGB", (64, 48), (200, 30, 30)), Image.new("L", (20, 90), 100)]


def _no_progress(state: ModelState, fraction: float | None, detail: str) -> None:
    pass


def test_vit_gpt2_captions_a_batch_of_images_of_different_sizes(make_settings):
    """A ViT+GPT-2 checkpoint captions a two-image batch (RGB and greyscale) with one text per image."""
    model = load_caption_model(make_settings(), _no_progress)

    captions = model.caption(_images())

    assert len(captions) == 2
    assert all(isinstance(text, str) and text and text == text.strip() for text in captions)


def test_greedy_captions_are_deterministic_and_independent_of_batching(make_settings):
    """Greedy decoding gives the same captions on every call, batched or one image at a time."""
    model = load_caption_model(make_settings(), _no_progress)
    images = _images()

    first = model.caption(images)

    assert model.caption(images) == first
    assert [model.caption([image])[0] for image in images] == first


def test_vit_gpt2_without_pad_token_generates_with_beam_search(make_settings):
    """A GPT-2 decoder with no pad token still runs beam search, padding with end-of-sequence."""
    model = load_caption_model(make_settings(caption_num_beams=3), _no_progress)

    captions = model.caption(_images())

    assert len(captions) == 2 and all(isinstance(text, str) for text in captions)
    assert model.model.generation_config.pad_token_id == model.tokenizer.eos_token_id


def test_blip_checkpoint_captions_images(make_settings, blip_dir):
    """A BLIP checkpoint loads through the same loader and captions a batch, without its [DEC] bos token."""
    model = load_caption_model(make_settings(caption_model=str(blip_dir), caption_num_beams=2), _no_progress)

    captions = model.caption(_images())

    assert len(captions) == 2
    assert all(isinstance(text, str) and text and "[DEC]" not in text for text in captions)
    assert model.caption(_images()) == captions


def test_caption_model_is_stamped_with_id_and_revision(make_settings, vit_gpt2_dir):
    """Loaded models carry the configured model id and a revision identifying the weights."""
    reports: list[tuple[ModelState, float | None, str]] = []

    model = load_caption_model(make_settings(), lambda *report: reports.append(report))

    assert model.model_id == vit_gpt2_dir.name
    assert model.revision == hub.revision_of(vit_gpt2_dir)
    assert model.revision.startswith("sha256:")
    assert reports and reports[-1][0] is ModelState.LOADING


def test_unknown_caption_model_type_fails_naming_it(make_settings, sentiment3_dir):
    """A checkpoint that is not an image captioner is refused with its model_type in the message."""
    with pytest.raises(ValueError, match="unsupported caption model type 'distilbert'"):
        load_caption_model(make_settings(caption_model=str(sentiment3_dir)), _no_progress)


def test_missing_hub_id_offline_fails_with_instructions(make_settings):
    """Offline, a hub id that is neither pulled nor cached fails at once and says how to fix it."""
    settings = make_settings(caption_model="prism-tests/no-such-captioner")

    with pytest.raises(hub.ModelSourceError, match="not available offline.*models pull"):
        load_caption_model(settings, _no_progress)


def test_sentiment_probabilities_follow_id_order_and_sum_to_one(make_settings):
    """classify returns one probability per raw label, in id order, summing to 1."""
    model = load_sentiment_model(make_settings(), _no_progress)

    results = model.classify(["the food was great", "terrible, it broke", "fine"])

    assert len(results) == 3
    for scores in results:
        assert list(scores) == ["negative", "neutral", "positive"]
        assert math.isclose(sum(scores.values()), 1.0, rel_tol=1e-5)
        assert all(0.0 <= value <= 1.0 for value in scores.values())


def test_sentiment_truncates_text_longer_than_the_model_accepts(make_settings):
    """A text far longer than the model's position table is truncated instead of failing."""
    model = load_sentiment_model(make_settings(), _no_progress)

    (scores,) = model.classify(["the service was great " * 400])

    assert math.isclose(sum(scores.values()), 1.0, rel_tol=1e-5)


def test_sentiment_model_is_stamped_with_id_and_revision(make_settings, sentiment2_dir):
    """The sentiment model carries its id and a revision that differs between different checkpoints."""
    two = load_sentiment_model(make_settings(sentiment_model=str(sentiment2_dir)), _no_progress)
    three = load_sentiment_model(make_settings(), _no_progress)

    assert two.model_id == sentiment2_dir.name
    assert two.revision and three.revision and two.revision != three.revision


def test_unmappable_sentiment_labels_fail_at_load(make_settings, tmp_path):
    """A checkpoint whose labels cannot map to negative/neutral/positive is refused when it loads."""
    odd = build_sentiment(tmp_path / "emotions", ["joy", "anger", "fear", "surprise"])

    with pytest.raises(ValueError, match=r"unusable sentiment labels \['joy', 'anger', 'fear', 'surprise'\]"):
        load_sentiment_model(make_settings(sentiment_model=str(odd)), _no_progress)


def test_sentiment_labels_without_a_positive_class_fail_at_load(make_settings, tmp_path):
    """Labels that all map to one side (no positive class) are refused when the model loads."""
    lopsided = build_sentiment(tmp_path / "lopsided", ["negative", "neutral", "negative-ish"])

    with pytest.raises(ValueError, match="need both a negative and a positive class"):
        load_sentiment_model(make_settings(sentiment_model=str(lopsided)), _no_progress)
