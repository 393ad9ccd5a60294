"""Fixtures for the model-service tests: tiny real checkpoints built once per session, and no hub access.

These fixtures need no Flask app, so the inference tests run on their own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tiny_models import (
    build_blip,
    build_chinese_clip,
    build_clip,
    build_embedding,
    build_sentiment,
    build_vit_gpt2,
    tiny_settings,
)

from webapp.inference.service import ModelService
from webapp.inference.settings import InferenceSettings


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the Hugging Face hub; loaders must fail fast instead of retrying a download."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def vit_gpt2_dir(tiny_models_dir: Path) -> Path:
    return build_vit_gpt2(tiny_models_dir / "vit-gpt2")


@pytest.fixture(scope="session")
def blip_dir(tiny_models_dir: Path) -> Path:
    return build_blip(tiny_models_dir / "blip")


@pytest.fixture(scope="session")
def sentiment3_dir(tiny_models_dir: Path) -> Path:
    return build_sentiment(tiny_models_dir / "sentiment-3", ["negative", "neutral", "positive"])


@pytest.fixture(scope="session")
def sentiment2_dir(tiny_models_dir: Path) -> Path:
    return build_sentiment(tiny_models_dir / "sentiment-2", ["NEGATIVE", "POSITIVE"])


@pytest.fixture(scope="session")
def stars_dir(tiny_models_dir: Path) -> Path:
    names = ["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]
    return build_sentiment(tiny_models_dir / "stars", names)


@pytest.fixture(scope="session")
def tiny_embedding_dir(tiny_models_dir: Path) -> Path:
    return build_embedding(tiny_models_dir / "embedding")


@pytest.fixture(scope="session")
def tiny_clip_dir(tiny_models_dir: Path) -> Path:
    return build_clip(tiny_models_dir / "clip")


@pytest.fixture(scope="session")
def tiny_chinese_clip_dir(tiny_models_dir: Path) -> Path:
    return build_chinese_clip(tiny_models_dir / "chinese-clip")


@pytest.fixture
def make_settings(
    tmp_path: Path, vit_gpt2_dir: Path, sentiment3_dir: Path, tiny_embedding_dir: Path
) -> Callable[..., InferenceSettings]:
    """Build ``InferenceSettings`` for the tiny models (and the real RapidOCR, which ships in its wheel);
    keyword arguments override single fields."""

    def make(**overrides) -> InferenceSettings:
        models = {
            "caption_model": str(vit_gpt2_dir),
            "sentiment_model": str(sentiment3_dir),
            "embedding_model": str(tiny_embedding_dir),
        }
        return tiny_settings(tmp_path / "models", **{**models, **overrides})

    return make


@pytest.fixture
def fake_service(tmp_path: Path):
    """A model service on the fake backend (no weights): for the service's own plumbing."""
    service = ModelService(tiny_settings(tmp_path / "models", backend="fake"))
    yield service
    service.close()
