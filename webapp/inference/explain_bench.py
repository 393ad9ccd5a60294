"""The explanation bench (``manage.py bench --only explain``): what an explanation costs against the
prediction it explains, on the same input, model and precision.

* caption heatmap time / caption time, for one image (goal <= 1.5): the caption is decoded with the
  configured beams at the model bench's fixed length (``bench.NEW_TOKENS`` new tokens), then explained
  by one teacher-forced forward pass over its tokens;
* integrated-gradients time for a 45-token text / one classification of that text (goal <= 30), at
  ``explanations.IG_STEPS`` steps in one batched forward and backward.

Each time is the median of a few runs after a warm-up, measured on one short-lived thread (as the
model bench does, see ``bench._off_main_thread``), calling the loaded models directly: the service's
queue adds the same small overhead to both sides of each ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .settings import InferenceSettings

CAPTION_GOAL = 1.5  # heatmap time / caption time
ATTRIBUTION_GOAL = 30.0  # integrated-gradients time / one classification
TEXT_TOKENS = 45
_TEXT = (
    "The delivery arrived two days late and the box was damaged, but the support team answered quickly, "
    "apologised and sent a replacement that works perfectly, so overall I am fairly happy with the service."
)


def run(
    settings: InferenceSettings,
    *,
    caption_model: str | None,
    sentiment_model: str | None,
    repeats: int = 3,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time both explanations against their predictions; a kind without a model is left out."""
    from . import bench

    def measure() -> dict[str, Any]:
        result: dict[str, Any] = {}
        with bench._quiet_transformers():
            if caption_model:
                result["caption"] = _caption(replace(settings, caption_model=caption_model), repeats, echo)
            if sentiment_model:
                result["sentiment"] = _sentiment(replace(settings, sentiment_model=sentiment_model), repeats, echo)
        return result

    return bench._off_main_thread(measure)


def _median_ms(call: Callable[[], Any], repeats: int) -> float:
    call()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def _caption(settings: InferenceSettings, repeats: int, echo: Callable[[str], None]) -> dict[str, Any]:
    from PIL import Image

    from . import bench, transformers_backend

    echo(f"explain: loading the caption model {settings.caption_model}")
    model = transformers_backend.load_caption_model(settings, lambda *_args: None)
    model.generate_kwargs.update(min_new_tokens=bench.NEW_TOKENS, max_new_tokens=bench.NEW_TOKENS)
    image = Image.new("RGB", (640, 480), (90, 140, 200))
    prepared = model.prepare(image)
    caption = model.caption_prepared([prepared])[0]
    token_ids = model.tokenizer(caption, add_special_tokens=False)["input_ids"]
    if len(token_ids) < bench.NEW_TOKENS:
        # Random weights (--arch) write ids their built tokenizer cannot encode back from the text; the
        # heatmap pass then reads that many ordinary ids instead: its cost depends on the length only.
        token_ids = list(range(1000, 1000 + bench.NEW_TOKENS))
        caption = None
    caption_ms = _median_ms(lambda: model.caption_prepared([prepared]), repeats)
    heatmap_ms = _median_ms(lambda: model.explain_tokens(prepared, token_ids, caption), repeats)
    tokens = len(token_ids)
    return {
        "model": settings.caption_model,
        "decoder": model.decoder_name,
        "precision": model.precision,
        "beams": model.generate_kwargs.get("num_beams", 1),
        "caption_tokens": tokens,
        "caption_ms": caption_ms,
        "heatmap_ms": heatmap_ms,
        "ratio": heatmap_ms / caption_ms,
    }


def _sentiment(settings: InferenceSettings, repeats: int, echo: Callable[[str], None]) -> dict[str, Any]:
    from . import explanations, transformers_backend

    echo(f"explain: loading the sentiment model {settings.sentiment_model}")
    model = transformers_backend.load_sentiment_model(settings, lambda *_args: None)
    text = text_of_tokens(model.tokenizer, TEXT_TOKENS)
    classify_ms = _median_ms(lambda: model.classify([text]), max(repeats, 10))
    attribution_ms = _median_ms(lambda: model.explain_sentiment(text), repeats)
    explained = model.explain_sentiment(text)
    return {
        "model": settings.sentiment_model,
        "precision": model.precision,
        "text_tokens": len(model.tokenizer(text, add_special_tokens=False)["input_ids"]),
        "steps": explanations.IG_STEPS,
        "classify_ms": classify_ms,
        "attribution_ms": attribution_ms,
        "ratio": attribution_ms / classify_ms,
        # sum of attributions - (F(x) - F(x0)), and that difference: how exact the pass was
        "completeness_gap": explained["completeness_gap"],
        "logit_difference": explained["logit"] - explained["baseline_logit"],
    }


def text_of_tokens(tokenizer: Any, count: int) -> str:
    """The longest run of ``_TEXT``'s words (repeated as needed) that is at most ``count`` tokens."""
    words = (_TEXT.split() * (1 + count // 10))[: count * 2]
    text = ""
    for word in words:
        longer = f"{text} {word}".strip()
        if len(tokenizer(longer, add_special_tokens=False)["input_ids"]) > count:
            break
        text = longer
    return text


def format_table(result: dict[str, Any]) -> str:
    lines = ["Explanations: cost against the prediction explained (same input, model, precision)"]
    if caption := result.get("caption"):
        lines.append(
            f"  caption heatmap ({caption['decoder']}, {caption['precision']}, beams {caption['beams']}, "
            f"{caption['caption_tokens']} tokens): caption {caption['caption_ms']:.1f} ms, heatmap "
            f"{caption['heatmap_ms']:.1f} ms = {caption['ratio']:.2f}x (goal <= {CAPTION_GOAL:g}x)"
        )
    if sentiment := result.get("sentiment"):
        lines.append(
            f"  sentiment attributions ({sentiment['precision']}, {sentiment['text_tokens']} tokens, "
            f"{sentiment['steps']} steps): classify {sentiment['classify_ms']:.1f} ms, integrated gradients "
            f"{sentiment['attribution_ms']:.1f} ms = {sentiment['ratio']:.1f}x (goal <= {ATTRIBUTION_GOAL:g}x); "
            f"completeness gap {sentiment['completeness_gap']:+.5f} of a logit difference "
            f"{sentiment['logit_difference']:+.5f}"
        )
    if len(lines) == 1:
        lines.append("  skipped: this run has no caption or sentiment model")
    return "\n".join(lines)


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    from .bench import target

    found = []
    if caption := result.get("caption"):
        found.append(target("caption heatmap time / caption time", caption["ratio"], "<=", CAPTION_GOAL))
    if sentiment := result.get("sentiment"):
        name = f"attributions for a {TEXT_TOKENS}-token text / one classification"
        found.append(target(name, sentiment["ratio"], "<=", ATTRIBUTION_GOAL))
    return found
