"""A deterministic stand-in backend for view tests and demos without weights (PRISM_MODEL_BACKEND=fake).

Its model ids say "fake" so a record made with it can never pass for a real model's output.
"""

from __future__ import annotations

import hashlib
import math
import re
import time

from PIL import Image, ImageStat

from .types import ModelState, OcrLine

_POSITIVE = ("good", "great", "love", "thanks", "thank", "happy", "excellent", "好", "棒", "喜欢", "满意", "谢谢")
FAKE_GRID = (4, 4)  # patch rows and columns of the fake caption explanations
_FAKE_TOKEN = re.compile(r"[\u3400-\u9fff]|[^\s\u3400-\u9fff]+")  # a Han character, or a run of other non-space
_NEGATIVE = ("bad", "broken", "angry", "terrible", "refund", "hate", "worst", "差", "坏", "失望", "生气", "退款")


class _FakeModel:
    """What every fake model shares: a fixed revision, no numeric precision, and a simulated inference
    time per batch (job tests kill a worker mid-job)."""

    revision = "1"
    precision = "none"

    def __init__(self, delay_seconds: float = 0.0):
        self.delay_seconds = delay_seconds


class FakeCaptionModel(_FakeModel):
    model_id = "prism/fake-caption"

    def prepare(self, image: Image.Image) -> Image.Image:
        return image

    def caption_prepared(self, images: list[Image.Image]) -> list[str]:
        return self.caption(images)

    def caption(self, images: list[Image.Image]) -> list[str]:
        time.sleep(self.delay_seconds)
        return [f"a {image.width}x{image.height} picture, mostly {_dominant_colour(image)}" for image in images]

    def explain_caption(self, image: Image.Image, caption: str) -> dict:
        """A 4x4 grid per word: each word looks mostly at one patch chosen by a hash of the word."""
        time.sleep(self.delay_seconds)
        words = tuple(caption.split())
        rows, columns = FAKE_GRID
        per_word = []
        for word in words:
            focus = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=2).digest(), "big") % (
                rows * columns
            )
            weights = [4.0 if index == focus else 1.0 for index in range(rows * columns)]
            per_word.append(tuple(weight / sum(weights) for weight in weights))
        cells = rows * columns
        overall = (
            tuple(sum(grid[index] for grid in per_word) / len(per_word) for index in range(cells))
            if per_word
            else tuple(1.0 / cells for _ in range(cells))
        )
        return {
            "words": words,
            "grid": FAKE_GRID,
            "per_word": tuple(per_word),
            "overall": overall,
            "method": "fake: one hashed patch per word",
        }


def _dominant_colour(image: Image.Image) -> str:
    """ "red", "green" or "blue": the channel with the highest mean (ties go to the first)."""
    red, green, blue = (round(v) for v in ImageStat.Stat(image.convert("RGB")).mean)
    return max((("red", red), ("green", green), ("blue", blue)), key=lambda pair: pair[1])[0]


class FakeSentimentModel(_FakeModel):
    model_id = "prism/fake-sentiment"

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

    def explain_sentiment(self, text: str) -> dict:
        """Words and Han characters as tokens; +1 for a positive lexicon word, -1 for a negative one,
        signed toward the predicted label, so the attributions sum exactly to logit - baseline."""
        time.sleep(self.delay_seconds)
        (scores,) = self.classify([text])
        label = max(scores, key=scores.__getitem__)
        toward = {"positive": 1.0, "negative": -1.0}.get(label, 0.0)
        tokens, spans, attributions = [], [], []
        for match in _FAKE_TOKEN.finditer(text):
            token = match.group(0)
            lowered = token.lower()
            polarity = any(word in lowered for word in _POSITIVE) - any(word in lowered for word in _NEGATIVE)
            tokens.append(token)
            spans.append(match.span())
            attributions.append(float(polarity) * toward if toward else -abs(float(polarity)) * 0.5)
        baseline_logit = 0.0
        return {
            "tokens": tuple(tokens),
            "spans": tuple(spans),
            "attributions": tuple(attributions),
            "label": label,
            "logit": baseline_logit + sum(attributions),
            "baseline_logit": baseline_logit,
            "completeness_gap": 0.0,
            "steps": 0,
            "method": "fake: lexicon words +-1",
        }


class FakeOcrModel(_FakeModel):
    """Reads one line, ``TEXT <width>x<height> <colour>``, covering the whole image, with confidence 0.9."""

    model_id = "prism/fake-ocr"

    def prepare(self, image: Image.Image) -> Image.Image:
        return image

    def read_prepared(self, images: list[Image.Image]) -> list[tuple[OcrLine, ...]]:
        time.sleep(self.delay_seconds)
        pages = []
        for image in images:
            width, height = image.size
            text = f"TEXT {width}x{height} {_dominant_colour(image)}"
            pages.append((OcrLine(text, 0.9, ((0, 0), (width, 0), (width, height), (0, height))),))
        return pages


# A few Chinese support words and the English word they share a feature with, so that the fake model
# puts "退款" next to "refunds" as a multilingual model would. Demo and test data, not a dictionary.
_GLOSSARY = {
    "退款": "refund",
    "发票": "invoice",
    "付款": "payment",
    "扣款": "charge",
    "收费": "charge",
    "账单": "bill",
    "快递": "delivery",
    "物流": "tracking",
    "包裹": "parcel",
    "发货": "shipping",
    "密码": "password",
    "账号": "account",
    "登录": "login",
    "报错": "error",
    "崩溃": "crash",
}
_LATIN_WORD = re.compile(r"[a-z0-9]+")
_HAN_RUN = re.compile(r"[\u3400-\u9fff]+")
_STEM_LENGTH = 5  # "invoice"/"invoices" and "charged"/"charges" share their first five letters
EMBEDDING_DIMENSIONS = 256


class FakeEmbeddingModel(_FakeModel):
    """A hashed bag of features, scaled to unit length: deterministic in every process, no weights.

    Features are the first five letters of each Latin word (a crude stem), each pair of adjacent Han
    characters, and the stem of the English word a glossary gives for a few Chinese support words.
    Texts sharing words (or glossary words across the two languages) get a high cosine; others ~0.
    """

    model_id = "prism/fake-embedding"

    def embed(self, texts: list[str]) -> list[list[float]]:
        time.sleep(self.delay_seconds)
        return [self._vector(text) for text in texts]

    @staticmethod
    def _features(text: str) -> list[str]:
        lowered = text.lower()
        features = [word[:_STEM_LENGTH] for word in _LATIN_WORD.findall(lowered)]
        for run in _HAN_RUN.findall(lowered):
            features.extend(run[index : index + 2] for index in range(max(1, len(run) - 1)))
        features.extend(english[:_STEM_LENGTH] for chinese, english in _GLOSSARY.items() if chinese in lowered)
        return features

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * EMBEDDING_DIMENSIONS
        for feature in self._features(text):
            digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "big") % EMBEDDING_DIMENSIONS
            vector[index] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(value * value for value in vector))
        return [value / norm for value in vector] if norm else vector


class FakeReplyModel(_FakeModel):
    """Writes a deterministic draft that quotes the start of the prompt's last message."""

    model_id = "prism/fake-reply"

    def write(self, conversations: list[list[dict[str, str]]]) -> list[str]:
        time.sleep(self.delay_seconds)
        return [f"[fake reply] {conversation[-1]['content'][:80]}" for conversation in conversations]


FAKE_AGREEMENT_MAX_TOKENS = 77  # CLIP's text length, in the fake model's words


class FakeAgreementModel(_FakeModel):
    """A joint image-text stand-in: an image's vector is the fake embedding of its dominant colour's name,
    a text's the fake embedding of the text, so a text that names the image's colour ("a red screenshot")
    scores well above 0 and one that does not scores ~0. Words count as tokens; a text is cut to
    ``FAKE_AGREEMENT_MAX_TOKENS`` of them."""

    model_id = "prism/fake-agreement"
    _encoder = FakeEmbeddingModel()  # both towers share the fake text embedding: one space by construction

    def prepare(self, image: Image.Image) -> str:
        return _dominant_colour(image)

    def similarity_prepared(self, batch: list[tuple[str, str]]) -> list[dict]:
        time.sleep(self.delay_seconds)
        results = []
        for colour, text in batch:
            words = text.split()
            image_vector = self._encoder._vector(colour)
            text_vector = self._encoder._vector(" ".join(words[:FAKE_AGREEMENT_MAX_TOKENS]))
            results.append(
                {
                    "similarity": sum(a * b for a, b in zip(image_vector, text_vector, strict=True)),
                    "image_vector": tuple(image_vector),
                    "text_vector": tuple(text_vector),
                    "text_tokens": len(words),
                    "max_text_tokens": FAKE_AGREEMENT_MAX_TOKENS,
                }
            )
        return results


MODELS = {
    "reply": FakeReplyModel,
    "agreement": FakeAgreementModel,
    "caption": FakeCaptionModel,
    "sentiment": FakeSentimentModel,
    "ocr": FakeOcrModel,
    "embedding": FakeEmbeddingModel,
}


def load(kind: str, progress, delay_seconds: float = 0.0):
    """The fake model of ``kind``; ``delay_seconds`` is its simulated inference time per batch."""
    progress(ModelState.LOADING, None, "fake backend")
    return MODELS[kind](delay_seconds)
