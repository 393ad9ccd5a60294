"""The model service: the only package in Prism that imports torch or transformers (lazily).

Views call ``get_model_service()`` and receive plain dataclasses; see ``service.py`` for the loading
and thread-safety contract.
"""

from __future__ import annotations

from flask import Flask, current_app

from .service import ModelService
from .settings import InferenceSettings
from .types import (
    MODEL_KINDS,
    CategoryResult,
    EmbeddingResult,
    GeneratedText,
    ImageTextSimilarity,
    ModelState,
    ModelStatus,
    ModelUnavailable,
    OcrLine,
    OcrResult,
    SentimentResult,
)

EXTENSION_KEY = "prism_models"

__all__ = [
    "MODEL_KINDS",
    "GeneratedText",
    "ImageTextSimilarity",
    "CategoryResult",
    "EmbeddingResult",
    "ModelService",
    "ModelState",
    "ModelStatus",
    "ModelUnavailable",
    "OcrLine",
    "OcrResult",
    "SentimentResult",
    "get_model_service",
    "init_app",
]


def init_app(app: Flask) -> None:
    """Attach an (unloaded) model service to the app; nothing is loaded here."""
    app.extensions[EXTENSION_KEY] = ModelService(InferenceSettings.from_config(app.config))


def get_model_service() -> ModelService:
    return current_app.extensions[EXTENSION_KEY]
