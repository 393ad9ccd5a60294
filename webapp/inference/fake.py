"""A deterministic stand-in backend for view tests and demos without weights (PRISM_MODEL_BACKEND=fake).

Its model ids say "fake" so a record made with it can never pass for a real model's output.
"""

from __future__ import annotations

import time

from PIL import Image, ImageStat

from .types import ModelState

_POSITIVE = ("good", "great", "love", "thanks", "thank", "happy", "excellent", "好", "棒", "喜欢", "满意", "谢谢")
_NEGATIVE = ("bad", "broken", "angry", "terrible", "refund", "hate", "worst", "差", "坏", "失望", "生气", "退款")


class FakeCaptionModel:
    model_id = "prism/fake-caption"
    revision = "1"
    precision = "none"

    def __init__(self, delay_seconds: float = 0.0):
        self.delay_seconds = delay_seconds  # simulated inference time per batch

    def prepare(self, image: Image.Image) -> Image.Image:
        return image

    def caption_prepared(self, images: list[Image.Image]) -> list[str]:
        return self.caption(images)

    def caption(self, images: list[Image.Image]) -> list[str]:
        time.sleep(self.delay_seconds)
        captions = []
        for image in images:
            red, green, blue = (round(v) for v in ImageStat.Stat(image.convert("RGB")).mean)
            colour = max((("red", red), ("green", green), ("blue", blue)), key=lambda pair: pair[1])[0]
            captions.append(f"a {image.width}x{image.height} picture, mostly {colour}")
        return captions


class FakeSentimentModel:
    model_id = "prism/fake-sentiment"
    revision = "1"
    precision = "none"

    def __init__(self, delay_seconds: float = 0.0):
        self.delay_seconds = delay_seconds

    def classify(self, texts: list[str]) -> list[dict[str, float]]:
        time.sleep(self.delay_seconds)
        results = []
        for text in texts:
            lowered = text.lower()
            balance = sum(word in lowered for word in _POSITIVE) - sum(word in lowered for word in _NEGATIVE)
            if balance > 0:
                results.append({"negative": 0.05, "neutral": 0.15, "positive": 0.80})
            elif balance < 0:
                results.append({"negative": 0.80, "neutral": 0.15, "positive": 0.05})
            else:
                results.append({"negative": 0.2, "neutral": 0.6, "positive": 0.2})
        return results


def load_caption_model(progress, delay_seconds: float = 0.0) -> FakeCaptionModel:
    progress(ModelState.LOADING, None, "fake backend")
    return FakeCaptionModel(delay_seconds)


def load_sentiment_model(progress, delay_seconds: float = 0.0) -> FakeSentimentModel:
    progress(ModelState.LOADING, None, "fake backend")
    return FakeSentimentModel(delay_seconds)
