"""The real backend: caption and sentiment models run with transformers on the CPU.

The only module in Prism that imports torch or transformers; ``service.py`` imports it lazily. Each loader
resolves its source to a local directory first (``hub.resolve_source``), so ``from_pretrained`` is always
called with ``local_files_only=True`` and never touches the network. Models are loaded once, in float32,
in eval mode; inference runs under ``torch.inference_mode()`` and returns plain Python values.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BlipForConditionalGeneration,
    BlipProcessor,
    VisionEncoderDecoderModel,
)

from . import hub, labels
from .service import ProgressCallback
from .settings import InferenceSettings
from .types import ModelState

_MAX_TEXT_TOKENS = 512

# from_pretrained temporarily swaps process-wide functions (PreTrainedModel.tie_weights, torch.nn.init.*)
# for no-ops and sets torch's default dtype. Two loads in parallel restore each other's no-ops, which
# leaves weights untied and uninitialised in every later load, so loading is serialised; downloads,
# which happen before it, still run in parallel. Inference needs no such lock: it touches none of that
# state, and the default dtype during a load is float32 anyway.
_LOAD_LOCK = threading.Lock()
_CAPTION_FAMILIES = "'vision-encoder-decoder' (e.g. nlpconnect/vit-gpt2-image-captioning) or 'blip'"


class TransformersCaptionModel:
    """An image-to-text model, its image processor and tokenizer, with fixed generation settings."""

    def __init__(self, model_id: str, revision: str, model, image_processor, tokenizer, generate_kwargs: dict):
        self.model_id = model_id
        self.revision = revision
        self._model = model
        self._image_processor = image_processor
        self._tokenizer = tokenizer
        self._generate_kwargs = generate_kwargs

    def caption(self, images: list[Image.Image]) -> list[str]:
        pixel_values = self._image_processor(images=[image.convert("RGB") for image in images], return_tensors="pt")[
            "pixel_values"
        ]
        with torch.inference_mode():
            token_ids = self._model.generate(pixel_values=pixel_values, **self._generate_kwargs)
        texts = self._tokenizer.batch_decode(token_ids.cpu(), skip_special_tokens=True)
        return [text.strip() for text in texts]


class TransformersSentimentModel:
    """A sequence classifier returning probabilities per raw label, in the checkpoint's id order."""

    def __init__(self, model_id: str, revision: str, model, tokenizer, label_names: list[str], max_length: int):
        self.model_id = model_id
        self.revision = revision
        self._model = model
        self._tokenizer = tokenizer
        self._label_names = label_names
        self._max_length = max_length

    def classify(self, texts: list[str]) -> list[dict[str, float]]:
        encoded = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            logits = self._model(**encoded).logits
        rows = logits.float().softmax(dim=-1).cpu().tolist()
        return [dict(zip(self._label_names, row, strict=True)) for row in rows]


def load_caption_model(settings: InferenceSettings, progress: ProgressCallback) -> TransformersCaptionModel:
    ref = settings.caption_model
    source = hub.resolve_source(ref, settings.model_dir, settings.offline, progress)
    progress(ModelState.LOADING, None, f"loading {ref}")
    _set_torch_threads(settings.torch_threads)
    with _LOAD_LOCK:
        model, image_processor, tokenizer = _load_captioner(ref, source)
    generate_kwargs = {
        "num_beams": settings.caption_num_beams,
        "max_new_tokens": settings.caption_max_new_tokens,
    }
    return TransformersCaptionModel(
        hub.model_id(ref), hub.revision_of(source), model, image_processor, tokenizer, generate_kwargs
    )


def _load_captioner(ref: str, source: str) -> tuple:
    """Model, image processor and tokenizer of a supported captioning family; call under ``_LOAD_LOCK``."""
    model_type = AutoConfig.from_pretrained(source, local_files_only=True).model_type
    pretrained = {"local_files_only": True}
    if model_type == "vision-encoder-decoder":
        model = VisionEncoderDecoderModel.from_pretrained(source, **_weights_kwargs(source))
        image_processor = AutoImageProcessor.from_pretrained(source, **pretrained)
        tokenizer = AutoTokenizer.from_pretrained(source, **pretrained)
        _fill_decoder_token_ids(model, tokenizer)
        generators = [model]
    elif model_type == "blip":
        model = BlipForConditionalGeneration.from_pretrained(source, **_weights_kwargs(source))
        processor = BlipProcessor.from_pretrained(source, **pretrained)
        image_processor, tokenizer = processor.image_processor, processor.tokenizer
        generators = [model, model.text_decoder]  # BLIP's generate() delegates to its text decoder
    else:
        raise ValueError(f"{ref}: unsupported caption model type {model_type!r}; use {_CAPTION_FAMILIES}")
    for generator in generators:
        # A checkpoint's own max_length (nlpconnect ships 16) would clash with PRISM_CAPTION_MAX_NEW_TOKENS.
        generator.generation_config.max_length = None
    return model.eval(), image_processor, tokenizer


def load_sentiment_model(settings: InferenceSettings, progress: ProgressCallback) -> TransformersSentimentModel:
    ref = settings.sentiment_model
    source = hub.resolve_source(ref, settings.model_dir, settings.offline, progress)
    progress(ModelState.LOADING, None, f"loading {ref}")
    _set_torch_threads(settings.torch_threads)
    with _LOAD_LOCK:
        model = AutoModelForSequenceClassification.from_pretrained(source, **_weights_kwargs(source)).eval()
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    label_names = _checked_label_names(ref, model.config)
    # The tokenizer's limit may be unset (a huge sentinel); the position table is the real one.
    max_length = min(
        tokenizer.model_max_length,
        getattr(model.config, "max_position_embeddings", None) or _MAX_TEXT_TOKENS,
        _MAX_TEXT_TOKENS,
    )
    return TransformersSentimentModel(
        hub.model_id(ref), hub.revision_of(source), model, tokenizer, label_names, max_length
    )


@functools.cache
def _set_torch_threads(threads: int) -> None:
    """Apply PRISM_TORCH_THREADS once per process (0 keeps torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)


def _weights_kwargs(source: str) -> dict:
    """Float32 on the CPU (transformers 5 defaults to the checkpoint's dtype), safetensors when present."""
    kwargs: dict = {"local_files_only": True, "dtype": torch.float32}
    if any(Path(source).glob("*.safetensors")):
        kwargs["use_safetensors"] = True
    return kwargs


def _fill_decoder_token_ids(model, tokenizer) -> None:
    """Make sure generate() knows where to start and how to pad; GPT-2 decoders define no pad token.

    Older checkpoints keep these ids in config.json rather than generation_config.json, or only in the
    tokenizer; the first id found wins, and padding falls back to end-of-sequence.
    """
    generation, config = model.generation_config, model.config
    decoder = getattr(config, "decoder", None)

    def first(*candidates):
        return next((value for value in candidates if value is not None), None)

    eos = first(generation.eos_token_id, getattr(decoder, "eos_token_id", None), tokenizer.eos_token_id)
    start = first(
        generation.decoder_start_token_id,
        getattr(config, "decoder_start_token_id", None),
        generation.bos_token_id,
        getattr(decoder, "bos_token_id", None),
        tokenizer.bos_token_id,
        eos,
    )
    if start is None:
        raise ValueError("the caption model defines no decoder start, bos or eos token id")
    generation.decoder_start_token_id = start
    generation.eos_token_id = eos
    generation.pad_token_id = first(
        generation.pad_token_id, getattr(config, "pad_token_id", None), tokenizer.pad_token_id, eos
    )


def _checked_label_names(ref: str, config) -> list[str]:
    """The checkpoint's labels in id order, refused now if they cannot be mapped to three levels."""
    names = [str(config.id2label[index]) for index in range(config.num_labels)]
    try:
        levels = {labels.level_of(name, index, len(names)) for index, name in enumerate(names)}
    except ValueError as exc:
        raise ValueError(f"{ref}: unusable sentiment labels {names}: {exc}") from exc
    if not {"negative", "positive"} <= levels:
        raise ValueError(f"{ref}: sentiment labels {names} need both a negative and a positive class")
    return names
