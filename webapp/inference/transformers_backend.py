"""The real backend: caption, sentiment, text-embedding and joint image-text models run with transformers on
the CPU or a GPU.

The only module in Prism that imports torch or transformers; ``service.py`` imports it lazily. Each loader
resolves its source to a local directory first (``hub.resolve_source``), so ``from_pretrained`` is always
called with ``local_files_only=True`` and never touches the network. Models are loaded once, in float32,
in eval mode, then moved and converted per PRISM_DEVICE / PRISM_PRECISION (``resolve_placement``);
inference runs under ``torch.inference_mode()`` and returns plain Python values.
"""

from __future__ import annotations

import functools
import json
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BlipForConditionalGeneration,
    BlipProcessor,
    VisionEncoderDecoderModel,
)
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from . import caption_decoding, explanations, hub, labels, packed_linear, text_classification
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


@dataclass(frozen=True)
class Placement:
    """Where a model runs and in what number format (PRISM_DEVICE / PRISM_PRECISION resolved)."""

    device: torch.device
    dtype: torch.dtype  # of weights and activations; float32 for int8 (weights quantised, activations not)
    precision: str  # "fp32", "bf16", "fp16" or "int8"


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX), where bf16 beats fp32 ~2x."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_placement(settings: InferenceSettings) -> Placement:
    if settings.device not in {"auto", "cpu", "cuda"}:
        raise ValueError(f"PRISM_DEVICE must be auto, cpu or cuda, not {settings.device!r}")
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("PRISM_DEVICE=cuda but torch sees no CUDA device")
    use_cuda = settings.device == "cuda" or (settings.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    precision = settings.precision
    if precision == "auto":
        if use_cuda:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_native_bf16() else "fp32"
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}
    if precision not in dtypes:
        raise ValueError(f"PRISM_PRECISION must be auto, fp32, bf16, fp16 or int8, not {precision!r}")
    if precision == "fp16" and not use_cuda:
        raise ValueError("PRISM_PRECISION=fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    if precision == "int8" and use_cuda:
        raise ValueError("PRISM_PRECISION=int8 is dynamic quantisation for the CPU; use fp16/bf16 on CUDA")
    return Placement(device, dtypes[precision], precision)


def _place(model, placement: Placement):
    """Move and convert a loaded float32 model as ``placement`` says."""
    if placement.precision == "int8":
        # Dynamic int8 quantisation of nn.Linear layers (GPT-2's Conv1D layers stay float32).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model.to(device=placement.device, dtype=placement.dtype)


class _Placed:
    placement: Placement

    @property
    def device(self) -> torch.device:
        return self.placement.device

    @property
    def dtype(self) -> torch.dtype:
        return self.placement.dtype

    @property
    def precision(self) -> str:
        return self.placement.precision


class BeamSharedCrossAttentionCache(EncoderDecoderCache):
    """An encoder-decoder cache whose beam-search reorder leaves the cross-attention part alone.

    Beam search only ever moves a beam to another beam of the same image, and the cross-attention
    keys and values are identical for all beams of an image, so reordering them is a no-op that
    costs a full copy per layer per step (for a bf16 batch of 8 with 4 beams: 384 copies of 9.7 MB).
    Generated captions are unchanged (tested against the default cache).
    """

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)


@dataclass(eq=False)
class TransformersCaptionModel(_Placed):
    """An image-to-text model, its image processor and tokenizer, with fixed generation settings.

    ``prepare`` (image decode/resize/normalise) is thread-safe and runs on request threads;
    ``caption_prepared`` runs one batched ``generate()`` on the model's worker thread. All images of
    a checkpoint are resized to the same shape, so a batch needs no padding and each caption is the
    one the image would get alone (tested in fp32).
    """

    model_id: str
    revision: str
    model: Any
    image_processor: Any
    tokenizer: Any
    generate_kwargs: dict  # mutable on purpose: the benchmark forces a fixed caption length
    placement: Placement
    # Decodes supported checkpoints instead of generate() (PRISM_FAST_PATH=auto); None: generate().
    fast_decoder: caption_decoding.GPT2CaptionDecoder | None = None

    @property
    def decoder_name(self) -> str:
        """Which loop decodes this model's captions now: "prism" (caption_decoding.py) or "generate"."""
        if (
            self.fast_decoder is not None
            and caption_decoding.unsupported_reason(self.model, self.generate_kwargs) is None
        ):
            return "prism"
        return "generate"

    def prepare(self, image: Image.Image) -> np.ndarray:
        # NumPy, not torch: request threads must not run torch ops. Measured here, once a long-lived
        # thread has run a parallel torch op, the model worker's torch work is 20-25% slower.
        return self.image_processor(images=[image.convert("RGB")], return_tensors="np")["pixel_values"][0]

    def caption_prepared(self, batch: Sequence[np.ndarray]) -> list[str]:
        pixel_values = torch.from_numpy(np.stack(batch)).to(device=self.device, dtype=self.dtype)
        if self.decoder_name == "prism":
            rules = caption_decoding.DecodingRules.of(self.model.generation_config, self.generate_kwargs)
            token_ids = self.fast_decoder.generate(pixel_values, rules)
            return [text.strip() for text in self.tokenizer.batch_decode(token_ids.cpu(), skip_special_tokens=True)]
        extra = {}
        if self.generate_kwargs.get("num_beams", 1) > 1 and isinstance(self.model, VisionEncoderDecoderModel):
            extra["cache"] = BeamSharedCrossAttentionCache(DynamicCache(), DynamicCache())
        with torch.inference_mode():
            token_ids = self.model.generate(pixel_values=pixel_values, **self.generate_kwargs, **extra)
        texts = self.tokenizer.batch_decode(token_ids.cpu(), skip_special_tokens=True)
        return [text.strip() for text in texts]

    def caption(self, images: list[Image.Image]) -> list[str]:
        return self.caption_prepared([self.prepare(image) for image in images])

    def explain_caption(self, prepared: np.ndarray, caption: str) -> dict:
        """Cross-attention heatmaps for ``caption`` (the record's) over the prepared image: one
        teacher-forced forward pass over its tokens in this model's precision, never a second
        ``generate()`` (``explanations.py`` documents the aggregation)."""
        return self.explain_tokens(prepared, self.tokenizer(caption, add_special_tokens=False)["input_ids"], caption)

    def explain_tokens(self, prepared: np.ndarray, token_ids: list[int], caption: str | None = None) -> dict:
        """``explain_caption`` for given token ids (the bench passes ids its random-weight tokenizer cannot
        re-encode); ``caption``, when given, supplies the displayed words."""
        pixel_values = torch.from_numpy(prepared[None]).to(device=self.device, dtype=self.dtype)
        if isinstance(self.model, VisionEncoderDecoderModel):
            start = self.model.generation_config.decoder_start_token_id
            grid = explanations.patch_grid(self.model.config.encoder)
        else:  # BLIP: its generate() starts the text decoder from the [DEC] (bos) token
            start = self.model.config.text_config.bos_token_id
            grid = explanations.patch_grid(self.model.config.vision_config)
        if not token_ids:
            return explanations.caption_fields(torch.empty(0), [], self.tokenizer, grid)
        inputs = torch.tensor([[start, *token_ids[:-1]]], device=self.device)  # position i chose token i
        if self.decoder_name == "prism":
            maps = self.fast_decoder.cross_attention_maps(pixel_values, inputs)
        else:
            maps = self._transformers_cross_attentions(pixel_values, inputs)
        return explanations.caption_fields(maps, token_ids, self.tokenizer, grid, caption)

    def _transformers_cross_attentions(self, pixel_values: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """[layers, heads, tokens, positions] from one forward of the transformers model with
        ``output_attentions``; GPT-2 switches to eager attention for that pass only (SDPA returns no weights)."""
        with torch.inference_mode():
            if isinstance(self.model, VisionEncoderDecoderModel):
                decoder = self.model.decoder
                previous = decoder.config._attn_implementation
                decoder.set_attn_implementation("eager")
                try:
                    encoded = self.model.encoder(pixel_values=pixel_values)  # its own attention weights: not needed
                    outputs = self.model(encoder_outputs=encoded, decoder_input_ids=inputs, output_attentions=True)
                finally:
                    decoder.set_attn_implementation(previous)
            else:
                image = self.model.vision_model(pixel_values=pixel_values).last_hidden_state
                outputs = self.model.text_decoder(
                    input_ids=inputs, encoder_hidden_states=image, output_attentions=True, use_cache=False
                )
        return torch.stack([layer[0] for layer in outputs.cross_attentions]).float()


def length_buckets(lengths: Sequence[int], *, max_batch: int, max_padding: float = 0.5) -> list[list[int]]:
    """Group item indices so that padding stays under ``max_padding`` of the real tokens.

    Items are sorted by length and a group closes when adding the next (longer) item would pad the
    group by more than ``max_padding``, or at ``max_batch`` items. A batch of one 5-token and one
    120-token text then runs as two small forwards instead of one 2x120 forward.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    current: list[int] = []
    real = 0
    for index in order:
        length = lengths[index]
        padded = length * (len(current) + 1)  # sorted: this item is the longest so far
        if current and (len(current) >= max_batch or padded > (real + length) * (1 + max_padding)):
            groups.append(current)
            current, real = [], 0
        current.append(index)
        real += length
    if current:
        groups.append(current)
    return groups


@dataclass(eq=False)
class TransformersSentimentModel(_Placed):
    """A sequence classifier returning probabilities per raw label, in the checkpoint's id order."""

    model_id: str
    revision: str
    model: Any
    tokenizer: Any
    label_names: list[str]
    max_length: int
    placement: Placement
    max_batch: int = 32
    # Runs supported checkpoints without padding (PRISM_FAST_PATH=auto); None: transformers' forward.
    fast_classifier: text_classification.UnpaddedDistilBertClassifier | None = None
    source: str | None = None  # the local directory it was loaded from (an int8 model's float32 copy reloads it)
    _float32_copy: Any = None  # see _gradient_model

    def classify(self, texts: Sequence[str]) -> list[dict[str, float]]:
        if self.fast_classifier is not None:
            token_ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
            buckets = length_buckets([len(ids) for ids in token_ids], max_batch=self.max_batch)
            rows = self.fast_classifier.logits(token_ids, buckets).softmax(dim=-1).tolist()
        else:
            rows = _forward_in_length_buckets(
                self, texts, lambda batch, outputs: outputs.logits.float().softmax(dim=-1)
            )
        return [dict(zip(self.label_names, row, strict=True)) for row in rows]

    def explain_sentiment(self, text: str) -> dict:
        """Integrated-gradients attributions of ``text``'s tokens toward the predicted label
        (``explanations.integrated_gradients``), on transformers' forward over the served weights."""
        return explanations.integrated_gradients(
            self._gradient_model(), self.tokenizer, text, self.label_names, max_length=self.max_length
        )

    def _gradient_model(self) -> Any:
        """The model whose gradients explain it: the served one when its weights are float (float32 or
        bf16); for int8, whose quantised weights have no gradients, a float32 copy loaded again from
        ``source`` once, on the first explanation, and held for the process's life (DistilBERT-base
        multilingual: ~540 MB).

        bf16 is explained in bf16: with eager attention (``explanations.integrated_gradients``) its
        completeness gap on the bench's checkpoint equals float32's (0.0001 of a 0.025 logit difference)
        at 0.3x float32's time, and the explanation is of the weights that made the prediction.
        """
        if self.precision != "int8":
            return self.model
        if self._float32_copy is None:
            if self.source is None:
                raise ValueError("attributions need float weights, and this int8 model has no source")
            self._float32_copy, _tokenizer = _load_text_model(self.source, AutoModelForSequenceClassification)
        return self._float32_copy


@dataclass(eq=False)
class TransformersEmbeddingModel(_Placed):
    """A sentence encoder: the mean of the last hidden states over real tokens, scaled to unit length.

    That is what sentence-transformers computes for checkpoints whose pooling is "mean" (checked at
    load), without depending on that library.
    """

    model_id: str
    revision: str
    model: Any
    tokenizer: Any
    max_length: int
    placement: Placement
    max_batch: int = 32

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return _forward_in_length_buckets(self, texts, _mean_pooled_unit_vectors)


def _mean_pooled_unit_vectors(batch, outputs) -> torch.Tensor:
    hidden = outputs.last_hidden_state.float()
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # padding must not pull the mean
    mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=-1)


def _forward_in_length_buckets(
    text_model: TransformersSentimentModel | TransformersEmbeddingModel,
    texts: Sequence[str],
    rows_of: Callable[[Any, Any], torch.Tensor],
) -> list[list[float]]:
    """Tokenise once, then run length-bucketed, right-padded forwards with attention masks.

    ``rows_of(batch, outputs)`` turns one forward's outputs into one row per text; rows come back in
    the order of ``texts``. Runs on the inference thread, the only one that touches the tokenizer.
    """
    encoded = text_model.tokenizer(list(texts), truncation=True, max_length=text_model.max_length)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    results: list[list[float] | None] = [None] * len(texts)
    for group in length_buckets(lengths, max_batch=text_model.max_batch):
        features = [{key: encoded[key][index] for key in encoded} for index in group]
        batch = text_model.tokenizer.pad(features, padding=True, return_tensors="pt").to(text_model.device)
        with torch.inference_mode():
            rows = rows_of(batch, text_model.model(**batch)).cpu().tolist()
        for index, row in zip(group, rows, strict=True):
            results[index] = row
    return results  # type: ignore[return-value]


# Joint image-text families that AutoModel loads with get_image_features / get_text_features returning the
# projected embedding as pooler_output, with a tokenizer the installed packages provide (tested on tiny
# checkpoints). Not SigLIP: its tokenizer needs sentencepiece, which Prism does not install, its texts must be
# padded to 64 tokens, and its sigmoid-trained cosines sit on yet another scale.
_JOINT_FAMILIES = {"clip", "chinese_clip"}


@dataclass(eq=False)
class TransformersImageTextModel(_Placed):
    """A CLIP-style model: an image tower and a text tower projected into one space.

    ``similarity_prepared`` embeds each (image, text) pair with ``get_image_features`` and
    ``get_text_features`` (in transformers 5 both return an output object whose ``pooler_output`` is the
    projected embedding), scales both to unit length and returns their dot product, the cosine. A text
    longer than ``max_length`` tokens (CLIP: 77) is cut to its start by the tokenizer.
    """

    model_id: str
    revision: str
    model: Any
    image_processor: Any
    tokenizer: Any
    max_length: int
    placement: Placement

    def prepare(self, image: Image.Image) -> np.ndarray:
        """Pixel values in NumPy (request threads run no torch op: see TransformersCaptionModel.prepare)."""
        return self.image_processor(images=[image.convert("RGB")], return_tensors="np")["pixel_values"][0]

    def similarity_prepared(self, batch: Sequence[tuple[np.ndarray, str]]) -> list[dict[str, Any]]:
        """``ImageTextSimilarity``'s fields but the stamp, per (prepared image, text) pair; on the worker thread."""
        texts = [text for _pixels, text in batch]
        lengths = [len(ids) for ids in self.tokenizer(texts, verbose=False)["input_ids"]]
        encoded = self.tokenizer(
            texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        ).to(self.device)
        pixel_values = torch.from_numpy(np.stack([pixels for pixels, _text in batch]))
        with torch.inference_mode():
            image_features = _unit_features(
                self.model.get_image_features(pixel_values=pixel_values.to(device=self.device, dtype=self.dtype))
            )
            text_features = _unit_features(self.model.get_text_features(**encoded))
        similarities = (image_features * text_features).sum(dim=-1).cpu().tolist()
        image_rows, text_rows = image_features.cpu().tolist(), text_features.cpu().tolist()
        return [
            {
                "similarity": similarity,
                "image_vector": tuple(image),
                "text_vector": tuple(text),
                "text_tokens": length,
                "max_text_tokens": self.max_length,
            }
            for similarity, image, text, length in zip(similarities, image_rows, text_rows, lengths, strict=True)
        ]


def _unit_features(output: Any) -> torch.Tensor:
    """The projected embeddings of ``get_*_features`` (an output object's ``pooler_output`` in transformers 5,
    a bare tensor before), in float32, at unit length."""
    features = output.pooler_output if hasattr(output, "pooler_output") else output
    return torch.nn.functional.normalize(features.float(), p=2, dim=-1)


def load_agreement_model(settings: InferenceSettings, progress: ProgressCallback) -> TransformersImageTextModel:
    """``PRISM_AGREEMENT_MODEL``: a CLIP or Chinese-CLIP checkpoint (hub id or directory, resolved
    like the others), with its image processor and tokenizer."""
    ref = settings.agreement_model
    source, placement = _locate(ref, settings, progress)
    model_type = AutoConfig.from_pretrained(source, local_files_only=True).model_type
    if model_type not in _JOINT_FAMILIES:
        raise ValueError(
            f"{ref}: model type {model_type!r} is not a supported joint image-text model; "
            f"use one of {', '.join(sorted(_JOINT_FAMILIES))} (e.g. openai/clip-vit-base-patch32)"
        )
    with _LOAD_LOCK:
        model = AutoModel.from_pretrained(source, **_weights_kwargs(source)).eval()
        image_processor = AutoImageProcessor.from_pretrained(source, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    return TransformersImageTextModel(
        hub.model_id(ref),
        hub.revision_of(source),
        _place(model, placement),
        image_processor,
        tokenizer,
        _max_text_length(tokenizer, model.config.text_config),
        placement,
    )


@dataclass(eq=False)
class TransformersReplyModel(_Placed):
    """An instruction-tuned causal LM that answers a chat (its tokenizer's chat template), greedily.

    One conversation per call: replies differ in length, and a draft is written once per message.
    """

    model_id: str
    revision: str
    model: Any
    tokenizer: Any
    placement: Placement
    max_new_tokens: int = 160

    def write(self, conversations: Sequence[list[dict[str, str]]]) -> list[str]:
        replies = []
        for conversation in conversations:
            prompt = self.tokenizer.apply_chat_template(
                conversation, add_generation_prompt=True, return_tensors="pt", return_dict=True
            ).to(self.device)
            with torch.inference_mode():
                output = self.model.generate(
                    **prompt,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                )
            new_tokens = output[0, prompt["input_ids"].shape[1] :]
            replies.append(self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip())
        return replies


def load_reply_model(settings: InferenceSettings, progress: ProgressCallback) -> TransformersReplyModel:
    """``PRISM_REPLY_MODEL`` (hub id or directory, resolved like the others) with its chat template."""
    ref = settings.reply_model
    source, placement = _locate(ref, settings, progress)
    model, tokenizer = _load_text_model(source, AutoModelForCausalLM)
    generation = model.generation_config  # padding falls back to end-of-sequence, as for captions
    generation.pad_token_id = next(
        (
            value
            for value in (generation.pad_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id)
            if value is not None
        ),
        None,
    )
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{ref} has no chat template: PRISM_REPLY_MODEL needs an instruction-tuned checkpoint")
    return TransformersReplyModel(
        hub.model_id(ref),
        hub.revision_of(source),
        _place(model, placement),
        tokenizer,
        placement,
        settings.reply_max_new_tokens,
    )


def _int8_caption_decoder(settings: InferenceSettings, placement: Placement) -> bool:
    """Whether Prism's caption decoder runs with int8 weights: on request (PRISM_PRECISION=int8), and by
    default (auto) on CPUs with native bf16, which have the int8 instructions (AMX / VNNI) it needs.

    Its steps are bound by reading weights, so int8 is where the CPU path gains most (README, Performance).
    """
    if placement.device.type != "cpu" or not packed_linear.int8_supported():
        return False
    return settings.precision == "int8" or (settings.precision == "auto" and cpu_has_native_bf16())


def _fast_path(settings: InferenceSettings) -> bool:
    """PRISM_FAST_PATH: whether Prism's own forward passes may replace transformers' where implemented."""
    if settings.fast_path not in {"auto", "off"}:
        raise ValueError(f"PRISM_FAST_PATH must be auto or off, not {settings.fast_path!r}")
    return settings.fast_path == "auto"


def _locate(ref: str, settings: InferenceSettings, progress: ProgressCallback) -> tuple[str, Placement]:
    """The local directory to load ``ref`` from, and where it will run.

    The placement is resolved first, so an impossible PRISM_DEVICE/PRISM_PRECISION fails before any
    download rather than after it.
    """
    placement = resolve_placement(settings)
    source = hub.resolve_source(
        ref, settings.model_dir, settings.offline, progress, require_pinned=settings.require_pinned
    )
    progress(ModelState.LOADING, None, f"loading {ref}")
    _set_torch_threads(settings.torch_threads)
    return source, placement


def load_caption_model(settings: InferenceSettings, progress: ProgressCallback) -> TransformersCaptionModel:
    ref = settings.caption_model
    source, placement = _locate(ref, settings, progress)
    with _LOAD_LOCK:
        model, image_processor, tokenizer = _load_captioner(ref, source)
    generate_kwargs = {
        "num_beams": settings.caption_num_beams,
        "max_new_tokens": settings.caption_max_new_tokens,
    }
    fast_decoder = None
    if _fast_path(settings) and caption_decoding.unsupported_reason(model, generate_kwargs) is None:
        int8_weights = _int8_caption_decoder(settings, placement)
        if int8_weights:  # the encoder keeps the best float format; only the decoder's weights are int8
            encoder_precision = "bf16" if cpu_has_native_bf16() else "fp32"
            placement = replace(resolve_placement(replace(settings, precision=encoder_precision)), precision="int8")
        model = _place(model, placement) if not int8_weights else model.to(dtype=placement.dtype)
        if placement.device.type == "cpu":  # before the decoder is built: it runs a packed ViT its own way
            packed_linear.pack_linear_layers(model.encoder)  # bf16 only; 12% faster ViT-base encoder here
        fast_decoder = caption_decoding.GPT2CaptionDecoder(model, placement.dtype, int8_weights=int8_weights)
    else:
        model = _place(model, placement)
    return TransformersCaptionModel(
        hub.model_id(ref),
        hub.revision_of(source),
        model,
        image_processor,
        tokenizer,
        generate_kwargs,
        placement,
        fast_decoder,
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
    source, placement = _locate(ref, settings, progress)
    model, tokenizer = _load_text_model(source, AutoModelForSequenceClassification)
    label_names = _checked_label_names(ref, model.config)
    model = _place(model, placement)
    fast_classifier = None
    if _fast_path(settings) and text_classification.unsupported_reason(model) is None:
        fast_classifier = text_classification.UnpaddedDistilBertClassifier(model, placement.dtype)
    return TransformersSentimentModel(
        hub.model_id(ref),
        hub.revision_of(source),
        model,
        tokenizer,
        label_names,
        _max_text_length(tokenizer, model.config),
        placement,
        settings.sentiment_max_batch,
        fast_classifier,
        source,
    )


def load_embedding_model(settings: InferenceSettings, progress: ProgressCallback) -> TransformersEmbeddingModel:
    """Any sentence-embedding checkpoint that ``AutoModel`` loads (hub id or directory, resolved like the others)."""
    ref = settings.embedding_model
    source, placement = _locate(ref, settings, progress)
    trained_length = _sentence_transformers_max_length(ref, Path(source))
    model, tokenizer = _load_text_model(source, AutoModel)
    return TransformersEmbeddingModel(
        hub.model_id(ref),
        hub.revision_of(source),
        _place(model, placement),
        tokenizer,
        _max_text_length(tokenizer, model.config, trained_length),
        placement,
        settings.embedding_max_batch,
    )


def _load_text_model(source: str, auto_class) -> tuple[Any, Any]:
    """A text model (in eval mode) and its tokenizer from the local directory ``source``."""
    with _LOAD_LOCK:
        model = auto_class.from_pretrained(source, **_weights_kwargs(source)).eval()
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    return model, tokenizer


def _max_text_length(tokenizer, config, trained_length: int | None = None) -> int:
    """Tokens kept per text: the tightest of the tokenizer's limit, the position table, the length the
    checkpoint was trained on (when known) and 512. The tokenizer's limit may be unset (a huge
    sentinel); the position table is the real one."""
    limits = [
        tokenizer.model_max_length,
        getattr(config, "max_position_embeddings", None) or _MAX_TEXT_TOKENS,
        _MAX_TEXT_TOKENS,
    ]
    if trained_length:
        limits.append(trained_length)
    return min(limits)


_SENTENCE_MODULES = {"Transformer", "Pooling", "Normalize"}


def _sentence_transformers_max_length(ref: str, source: Path) -> int | None:
    """Refuse a sentence-transformers checkpoint whose vectors are not mean-pooled transformer outputs,
    and return the sequence length it was trained with (None for a plain transformers checkpoint).

    Such checkpoints describe their pipeline in modules.json; one with CLS or max pooling, or a Dense
    projection after pooling, would give other vectors than ``TransformersEmbeddingModel`` computes.
    """
    modules_file = source / "modules.json"
    if not modules_file.is_file():
        return None
    for module in json.loads(modules_file.read_text(encoding="utf-8")):
        name = str(module.get("type", "")).rsplit(".", 1)[-1]
        if name not in _SENTENCE_MODULES:
            raise ValueError(f"{ref}: sentence-transformers module {name!r} is not supported (only mean pooling)")
        pooling_file = source / str(module.get("path", "")) / "config.json"
        if name == "Pooling" and pooling_file.is_file():
            pooling = json.loads(pooling_file.read_text(encoding="utf-8"))
            modes = {key for key, on in pooling.items() if key.startswith("pooling_mode_") and on}
            if modes != {"pooling_mode_mean_tokens"}:
                raise ValueError(f"{ref}: pooling {sorted(modes)} is not supported (only pooling_mode_mean_tokens)")
    settings_file = source / "sentence_bert_config.json"
    if settings_file.is_file():
        return json.loads(settings_file.read_text(encoding="utf-8")).get("max_seq_length")
    return None


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
