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


# --- the real backend, on tiny models ---------------------------------------------------------------

CAPTION = "a cat sitting on a mat"
PROGRESS = lambda *_args: None  # noqa: E731


def _load_captioner(make_settings, **fields):
    from webapp.inference import transformers_backend

    return transformers_backend.load_caption_model(make_settings(**fields), PROGRESS)


def _assert_heatmaps(fields: dict, grid: tuple[int, int], words: list[str]) -> None:
    assert fields["grid"] == grid
    assert list(fields["words"]) == words
    assert len(fields["per_word"]) == len(words)
    for values in (*fields["per_word"], fields["overall"]):
        assert len(values) == grid[0] * grid[1]
        assert abs(sum(values) - 1.0) <= 1e-5 and min(values) >= 0.0


def test_vit_gpt2_heatmaps_on_prisms_decoder_fit_the_patch_grid(make_settings):
    """Prism's decoder: one map per caption word on the encoder's patch grid, each summing to 1."""
    from webapp.inference.explanations import patch_grid

    model = _load_captioner(make_settings)
    assert model.decoder_name == "prism"
    image = Image.new("RGB", (40, 30), (10, 200, 10))

    fields = model.explain_caption(model.prepare(image), CAPTION)

    grid = patch_grid(model.model.config.encoder)
    assert grid == (4, 4)  # tiny ViT: 32 px images, 8 px patches
    _assert_heatmaps(fields, grid, CAPTION.split())


def test_prisms_cross_attention_weights_equal_transformers(make_settings):
    """The teacher-forced pass computes the weights transformers' eager attention returns (fp32)."""
    import torch

    model = _load_captioner(make_settings, precision="fp32")
    pixel_values = torch.from_numpy(model.prepare(Image.new("RGB", (32, 32), (200, 30, 30)))[None])
    ids = model.tokenizer(CAPTION, add_special_tokens=False)["input_ids"]
    inputs = torch.tensor([[model.model.generation_config.decoder_start_token_id, *ids[:-1]]])

    ours = model.fast_decoder.cross_attention_maps(pixel_values, inputs)
    theirs = model._transformers_cross_attentions(pixel_values, inputs)

    assert ours.shape == theirs.shape and ours.shape[-2:] == (len(ids), 17)  # 16 patches + [CLS]
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_heatmaps_without_the_fast_path_and_for_blip(make_settings, blip_dir):
    """PRISM_FAST_PATH=off (transformers' forward, eager for that pass) and BLIP give the same shapes;
    captioning afterwards still works (the attention implementation is restored)."""
    from webapp.inference.explanations import patch_grid

    image = Image.new("RGB", (30, 40), (30, 30, 200))
    for fields in ({"fast_path": "off"}, {"caption_model": str(blip_dir)}):
        model = _load_captioner(make_settings, **fields)
        assert model.decoder_name == "generate"
        caption = model.caption([image])[0] or CAPTION
        vision = getattr(model.model.config, "vision_config", None) or model.model.config.encoder

        result = model.explain_caption(model.prepare(image), caption)

        _assert_heatmaps(result, patch_grid(vision), caption.split())
        assert model.caption([image])[0] == caption


def test_word_groups_follow_the_tokenizers_markers():
    """GPT-2's space marker starts a word, BERT's "##" continues one."""
    from webapp.inference.explanations import word_groups, words_by_offsets

    assert word_groups(["a", "Ġcat", "Ġsit", "ting"]) == [[0], [1], [2, 3]]
    assert word_groups(["a", "cat", "sit", "##ting", "."]) == [[0], [1], [2, 3], [4]]
    assert words_by_offsets("a cat sitting", [(0, 1), (1, 5), (5, 9), (9, 13)]) == (
        ["a", "cat", "sitting"],
        [[0], [1], [2, 3]],
    )
    assert words_by_offsets("55555", [(0, 2), (2, 5)]) == (["55555"], [[0, 1]])


def test_overlay_png_has_the_images_size():
    """The overlay is a PNG of the image's size, and changes the image where the map is hot."""
    import io

    from webapp.inference.explanations import overlay_png

    image = Image.new("RGB", (64, 48), (128, 128, 128))
    values = [0.0] * 15 + [1.0]

    png = overlay_png(image, values, (4, 4))

    overlaid = Image.open(io.BytesIO(png))
    assert overlaid.format == "PNG" and overlaid.size == (64, 48)
    overlaid = overlaid.convert("RGB")
    assert overlaid.getpixel((63, 47)) != overlaid.getpixel((0, 0))


def _sentiment_model(make_settings, **fields):
    from webapp.inference import transformers_backend

    return transformers_backend.load_sentiment_model(make_settings(**fields), PROGRESS)


def test_integrated_gradients_cover_every_token_and_are_complete(make_settings):
    """Every non-special token gets an attribution, and they sum to logit - baseline logit (fp32)."""
    model = _sentiment_model(make_settings, precision="fp32")
    text = "the food was great and the service excellent, thanks for the quick refund"

    fields = model.explain_sentiment(text)

    encoded = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(fields["tokens"]) == len(fields["spans"]) == len(fields["attributions"]) == len(encoded)
    assert fields["label"] in model.label_names and fields["steps"] == 32
    difference = fields["logit"] - fields["baseline_logit"]
    assert abs(fields["completeness_gap"]) <= 1e-2 * max(1.0, abs(difference))
    assert math.isclose(sum(fields["attributions"]), difference + fields["completeness_gap"], abs_tol=1e-6)
    assert [text[start:end] for start, end in fields["spans"][:2]] == ["the", "food"]


def test_other_architectures_are_attributed_through_transformers_forward_with_the_same_result(
    make_settings, monkeypatch
):
    """A classifier without Prism's own forward takes transformers' (eager attention for that pass only,
    restored after it); on the same DistilBERT both forwards give the same attributions."""
    from webapp.inference import text_classification

    model = _sentiment_model(make_settings, precision="fp32")
    text = "the food was great and the service excellent"
    attention = model.model.config._attn_implementation
    own = model.explain_sentiment(text)
    monkeypatch.setattr(text_classification, "unsupported_reason", lambda _model: "not DistilBERT here")

    theirs = model.explain_sentiment(text)

    assert model.model.config._attn_implementation == attention
    assert theirs["label"] == own["label"]
    assert all(
        math.isclose(a, b, abs_tol=1e-4) for a, b in zip(theirs["attributions"], own["attributions"], strict=True)
    )
    assert math.isclose(theirs["logit"], own["logit"], abs_tol=1e-5)


def test_integrated_gradients_are_complete_with_trained_scale_weights(make_settings):
    """Completeness also holds when the logits move: weights scaled up so the logit gap is large."""
    import torch

    model = _sentiment_model(make_settings, precision="fp32")
    with torch.no_grad():
        model.model.classifier.weight.mul_(200.0)

    fields = model.explain_sentiment("terrible experience, the product broke after a day")

    difference = fields["logit"] - fields["baseline_logit"]
    assert abs(fields["completeness_gap"]) <= 1e-2 * max(1.0, abs(difference))


def test_chinese_text_is_attributed_per_character_span(make_settings):
    """Chinese text comes out as the tokenizer splits it, each token mapped to its own characters."""
    model = _sentiment_model(make_settings, precision="fp32")
    text = "服务很好 great"

    fields = model.explain_sentiment(text)

    assert [text[start:end] for start, end in fields["spans"]] == ["服", "务", "很", "好", "great"]


def test_bf16_sentiment_is_explained_on_its_own_weights_with_completeness(make_settings):
    """A bf16 model is explained on the weights that made the prediction (no float32 copy), with eager
    attention for that pass only, and completeness still holds."""
    import torch

    model = _sentiment_model(make_settings, precision="bf16")
    attention = model.model.config._attn_implementation

    fields = model.explain_sentiment("the food was great")

    assert model._float32_copy is None and model.model.dtype == torch.bfloat16
    assert model.model.config._attn_implementation == attention
    assert abs(fields["completeness_gap"]) <= 1e-2 * max(1.0, abs(fields["logit"] - fields["baseline_logit"]))


def test_int8_sentiment_explains_on_reloaded_float32_weights(make_settings):
    """Quantised weights have no gradients: an int8 model is explained on its float32 weights, reloaded once."""
    model = _sentiment_model(make_settings, precision="int8")

    fields = model.explain_sentiment("the food was great")

    assert model._float32_copy is not None and fields["tokens"]
    assert abs(fields["completeness_gap"]) <= 1e-2 * max(1.0, abs(fields["logit"] - fields["baseline_logit"]))


def test_real_service_explains_on_its_inference_thread(make_settings):
    """Through ModelService: stamped plain results with the real tiny models."""
    from webapp.inference.service import ModelService

    service = ModelService(make_settings())
    try:
        caption = service.explain_caption(Image.new("RGB", (40, 30), (10, 200, 10)), CAPTION)
        sentiment = service.explain_sentiment("thanks for the quick refund")
    finally:
        service.close()

    assert caption.words == tuple(CAPTION.split()) and caption.grid == (4, 4)
    assert caption.model_id and caption.revision and caption.precision == "fp32"
    assert sentiment.tokens and sentiment.label in ("negative", "neutral", "positive")


def test_explain_bench_reports_both_ratios_and_targets(make_settings, vit_gpt2_dir, sentiment3_dir):
    """The bench times each explanation against its prediction and turns the ratios into targets."""
    from webapp.inference import explain_bench

    result = explain_bench.run(
        make_settings(), caption_model=str(vit_gpt2_dir), sentiment_model=str(sentiment3_dir), repeats=1, echo=str
    )

    assert result["caption"]["caption_tokens"] >= 1 and result["caption"]["ratio"] > 0
    assert 0 < result["sentiment"]["text_tokens"] <= explain_bench.TEXT_TOKENS and result["sentiment"]["steps"] == 32
    assert [found["goal"] for found in explain_bench.targets(result)] == ["<= 1.5", "<= 30"]
    sentiment = result["sentiment"]
    assert abs(sentiment["completeness_gap"]) <= 1e-2 * max(1.0, abs(sentiment["logit_difference"]))
    table = explain_bench.format_table(result)
    assert "caption heatmap" in table and f"completeness gap {sentiment['completeness_gap']:+.5f}" in table


def test_explanation_failures_become_model_unavailable(fake_service, monkeypatch):
    """A model that fails on an explanation, or an image that cannot be prepared, gives ModelUnavailable
    (reason "error"), as every other call does."""
    import pytest

    from webapp.inference.types import ModelUnavailable

    sentiment_model = fake_service.sentiment_slot.get()
    caption_model = fake_service.caption_slot.get()

    def broken(*_args):
        raise RuntimeError("boom")

    monkeypatch.setattr(sentiment_model, "explain_sentiment", broken)
    monkeypatch.setattr(caption_model, "prepare", broken)

    for call in (lambda: fake_service.explain_sentiment("bad"), lambda: fake_service.explain_caption(None, "a")):
        with pytest.raises(ModelUnavailable) as raised:
            call()
        assert raised.value.reason == "error"


def test_overlay_and_word_grouping_import_without_torch():
    """Views draw overlays: importing the explanations module must not import torch."""
    import subprocess
    import sys

    code = "import sys, webapp.inference.explanations; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0  # noqa: S603 (our own code)
