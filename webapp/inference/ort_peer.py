"""`manage.py bench --peer onnxruntime`: the bench's checkpoints served with ONNX Runtime int8, as a
performance-minded user would, timed in the same run as Prism.

The issue (#12) asks Prism to be faster than this peer, so the peer must be a strong one, not a straw man:

* Captions (VisionEncoderDecoder: a ViT-like encoder and a GPT-2 decoder with cross-attention). Two graphs
  exported from the Prism-loaded float32 model with ``torch.onnx.export`` (opset 17): the encoder, which
  also computes every decoder layer's cross-attention keys and values once per image, and one decoder step
  (``_CaptionStep``, GPT-2 written with plain matmuls) in which the beams of image i attend to image i's
  keys and values, never to per-beam copies. The step also gathers the self-attention cache for the
  chosen beams, takes log_softmax, adds the beam scores and returns the top candidates, so only a few
  numbers per image cross into Python per token; the caches stay ``OrtValue``s between steps (no copies).
* Sentiment (any sequence classifier): one graph input_ids, attention_mask -> logits, run on
  tokenised, length-bucketed, padded batches as Prism runs them.

Every graph goes through ``onnxruntime.transformers.optimizer.optimize_model`` where a model type applies
("vit", "gpt2", "bert"), then ``quantize_dynamic`` with QInt8 weights; the optimised float32 graphs are
kept to check the decoding against ``generate()`` in float32. Sessions run on the CPU provider with
``intra_op_num_threads`` = torch's thread count and ``ORT_ENABLE_ALL``.

Decoding reproduces ``generate()`` for the bench's fixed length (min_new_tokens = max_new_tokens): the
end-of-sequence token is suppressed at every step, so no beam ever finishes early. Greedy takes the best
token; beam search follows transformers: log_softmax, beam scores start at [0, -1e9, ...] per image, the
top 2 x beams candidates over beams x vocabulary, the best ``beams`` continue, and at the end the best
beam wins (all hypotheses have the same length, so the length penalty changes no order).

This module and the bench are the only places besides the OCR backend that import onnx or onnxruntime;
both are imported lazily, so Prism itself never loads them.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import labels, transformers_backend
from .settings import InferenceSettings

PEERS = ("onnxruntime",)
OPSET = 17
_MAX_BEAMS = 4  # the step graph returns the top 2 x this many candidates per image (greedy uses the first)
_TOP_CANDIDATES = 2 * _MAX_BEAMS
_OPTIMIZER_TYPES = {"vit": "vit", "gpt2": "gpt2", "bert": "bert", "distilbert": "bert", "roberta": "bert"}


class PeerUnsupported(ValueError):
    """The checkpoint is of a family (or has generation settings) the peer does not reproduce."""


def _no_progress(state, fraction, detail) -> None:
    """Loaders report progress; the bench prints its own."""


# --- Graphs -------------------------------------------------------------------------------------


class _CaptionEncoder(torch.nn.Module):
    """pixel_values -> each decoder layer's cross-attention keys (N, heads, head_dim, S) and values
    (N, heads, S, head_dim): computed once per image, shared by all of its beams."""

    def __init__(self, model) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.projection = getattr(model, "enc_to_dec_proj", None)  # only when the hidden sizes differ
        self.cross = torch.nn.ModuleList(block.crossattention for block in model.decoder.transformer.h)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if _is_vit(self.encoder):
            hidden = _vit_forward(self.encoder, pixel_values)
        else:
            hidden = self.encoder(pixel_values=pixel_values).last_hidden_state
        if self.projection is not None:
            hidden = self.projection(hidden)
        images, length, width = hidden.shape
        outputs = []
        for attention in self.cross:
            heads = attention.num_heads
            key, value = attention.c_attn(hidden).split(width, dim=2)
            outputs.append(key.view(images, length, heads, width // heads).permute(0, 2, 3, 1))
            outputs.append(value.view(images, length, heads, width // heads).transpose(1, 2))
        return tuple(outputs)


def _is_vit(encoder) -> bool:
    """A transformers ViTModel (pre-norm layers with q/k/v/o projections), which ``_vit_forward`` mirrors."""
    layers = getattr(encoder, "layers", None)
    return (
        type(encoder).__name__ == "ViTModel"
        and layers is not None
        and all(hasattr(layer, name) for layer in layers for name in ("layernorm_before", "layernorm_after", "mlp"))
        and all(hasattr(layer.attention, name) for layer in layers for name in ("q_proj", "k_proj", "v_proj", "o_proj"))
    )


def _vit_forward(encoder, pixel_values: torch.Tensor) -> torch.Tensor:
    """ViTModel's last hidden state, with self-attention written as BERT exports it (keys transposed by one
    permute, scores divided by sqrt(head size)): the pattern onnxruntime's optimizer fuses into one
    Attention node (QAttention after quantisation). The same arithmetic as the model's eager attention;
    1/sqrt(head size) is a power of two for the usual head sizes, so even the scaling rounds alike."""
    hidden = encoder.embeddings(pixel_values)
    for layer in encoder.layers:
        attention = layer.attention
        normed = layer.layernorm_before(hidden)
        shape = normed.size()[:-1] + (attention.num_attention_heads, attention.head_dim)
        query = attention.q_proj(normed).view(shape).permute(0, 2, 1, 3)
        key = attention.k_proj(normed).view(shape).permute(0, 2, 3, 1)
        value = attention.v_proj(normed).view(shape).permute(0, 2, 1, 3)
        scores = torch.matmul(query, key) / math.sqrt(attention.head_dim)
        mixed = torch.matmul(scores.softmax(dim=-1), value).permute(0, 2, 1, 3).contiguous()
        # Output first: the optimizer looks for the attention behind the residual Add's first Add parent,
        # and in the first layer the residual (the embeddings) comes out of an Add too.
        hidden = attention.o_proj(mixed.view(normed.size()[:-1] + (-1,))) + hidden
        hidden = layer.mlp(layer.layernorm_after(hidden)) + hidden
    return encoder.layernorm(hidden)


class _CaptionStep(torch.nn.Module):
    """One GPT-2 decoder step with cross-attention, from the loaded weights, written with plain matmuls.

    Inputs: the last token of each of R = images x beams rows, its position, the source row of each
    row's cache (the beams kept by the previous step), the running beam scores, an additive mask over the
    vocabulary (-inf on end-of-sequence while it is suppressed), the self-attention caches (R, heads, T,
    head_dim) and the per-image cross-attention keys and values. Outputs: the top ``_TOP_CANDIDATES``
    accumulated scores and their flat (beam x vocabulary) indices per image, and the caches grown by one.
    """

    def __init__(self, lm_model, candidates: int = _TOP_CANDIDATES) -> None:
        super().__init__()
        body = lm_model.transformer
        self.wte, self.wpe, self.blocks, self.ln_f = body.wte, body.wpe, body.h, body.ln_f
        self.lm_head = lm_model.lm_head
        self.candidates = candidates  # tests ask for all of them, to compare every log-probability

    def forward(
        self,
        input_ids: torch.Tensor,
        position: torch.Tensor,
        beam_idx: torch.Tensor,
        beam_scores: torch.Tensor,
        vocab_mask: torch.Tensor,
        *caches: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        layers = len(self.blocks)
        past, cross = caches[: 2 * layers], caches[2 * layers :]
        rows = input_ids.shape[0]
        images = cross[0].shape[0]
        hidden = self.wte(input_ids) + self.wpe(position)  # (R, E)
        width = hidden.shape[-1]
        presents = []
        for index, block in enumerate(self.blocks):
            attention, heads = block.attn, block.attn.num_heads
            head_dim = width // heads
            query, key, value = attention.c_attn(block.ln_1(hidden)).split(width, dim=-1)
            key = torch.cat([past[2 * index].index_select(0, beam_idx), key.view(rows, heads, 1, head_dim)], dim=2)
            value = torch.cat(
                [past[2 * index + 1].index_select(0, beam_idx), value.view(rows, heads, 1, head_dim)], dim=2
            )
            presents += [key, value]
            weights = torch.matmul(query.view(rows, heads, 1, head_dim), key.transpose(-1, -2)) * attention.scaling
            mixed = torch.matmul(weights.softmax(dim=-1), value).view(rows, width)
            hidden = hidden + attention.c_proj(mixed)

            crossing = block.crossattention
            query = crossing.q_attn(block.ln_cross_attn(hidden)).view(images, -1, heads, head_dim).transpose(1, 2)
            weights = torch.matmul(query, cross[2 * index]) * crossing.scaling  # (N, heads, beams, S)
            mixed = torch.matmul(weights.softmax(dim=-1), cross[2 * index + 1])  # (N, heads, beams, head_dim)
            hidden = hidden + crossing.c_proj(mixed.transpose(1, 2).reshape(rows, width))
            hidden = hidden + block.mlp(block.ln_2(hidden))
        logits = self.lm_head(self.ln_f(hidden))
        # As generate(): log_softmax, then the processors (min_new_tokens: -inf on eos), then the beam scores.
        scores = torch.log_softmax(logits, dim=-1) + vocab_mask + beam_scores[:, None]
        top_scores, top_indices = scores.reshape(images, -1).topk(self.candidates, dim=-1)
        return (top_scores, top_indices, *presents)


class _Classifier(torch.nn.Module):
    def __init__(self, model, input_names: Sequence[str]) -> None:
        super().__init__()
        self.model, self.input_names = model, tuple(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, inputs, strict=True))).logits


def _export(module, args, path: Path, inputs: list[str], outputs: list[str], axes: dict) -> None:
    """torch.onnx.export with the TorchScript exporter: the graphs the onnxruntime optimizer's fusions match."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            do_constant_folding=True,
        )


def _optimise_and_quantise(path: Path, model_type: str | None, heads: int, hidden: int) -> tuple[Path, Path]:
    """The float32 graph after the onnxruntime transformers optimizer (where a model type applies), and
    its dynamic int8 quantisation (QInt8 weights, activations quantised per call)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    fp32 = path.with_name(path.stem + "-fp32.onnx")
    int8 = path.with_name(path.stem + "-int8.onnx")
    if model_type:
        fusions = FusionOptions(model_type)
        fusions.enable_skip_layer_norm = False  # see _UNFUSED
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimized = optimize_model(
                str(path), model_type=model_type, num_heads=heads, hidden_size=hidden, optimization_options=fusions
            )
        optimized.save_model_to_file(str(fp32))
    else:
        fp32.write_bytes(path.read_bytes())
    # Shape inference cannot type the optimizer's fused (com.microsoft) nodes' outputs; they are float32.
    # The quantizer warns about that on the root logger, once per such tensor: silenced while it runs.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(
            str(fp32), str(int8), weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": TensorProto.FLOAT}
        )
    finally:
        logging.disable(previous)
    return fp32, int8


# Residual Add + LayerNormalization stay two nodes, in the optimizer and in the session: measured on the
# bench's 2-core Xeon (onnxruntime 1.32, int8), the fused SkipLayerNormalization kernel made the ViT encoder
# ~18% and DistilBERT ~15% slower; the GPT-2 step was the same either way.
_UNFUSED = ["SkipLayerNormFusion"]


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # no warnings about nodes left on the CPU provider: there is only it
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=_UNFUSED)


# --- Captions -----------------------------------------------------------------------------------

# generate() settings that add logits processors or change the search; the peer reproduces none of them.
_UNSUPPORTED_GENERATION = {
    "do_sample": False,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "sequence_bias": None,
    "exponential_decay_length_penalty": None,
}


@dataclass(eq=False)
class CaptionPeer:
    """An exported captioner: encoder and step sessions plus the checkpoint's processor and tokenizer."""

    encoder: Any  # onnxruntime.InferenceSession
    step: Any
    image_processor: Any
    tokenizer: Any
    start_id: int
    eos_id: int
    vocab_size: int
    layers: int
    heads: int
    head_dim: int

    def prepare(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.image_processor(images=[image.convert("RGB") for image in images], return_tensors="np")[
            "pixel_values"
        ].astype(np.float32)

    def caption(self, images: Sequence[Image.Image], num_beams: int, new_tokens: int) -> list[str]:
        """Preprocess, decode and detokenise, as Prism's caption requests do."""
        token_ids = self.generate(self.prepare(images), num_beams, new_tokens)
        return [text.strip() for text in self.tokenizer.batch_decode(token_ids, skip_special_tokens=True)]

    def generate(self, pixel_values: np.ndarray, num_beams: int, new_tokens: int) -> np.ndarray:
        """Exactly ``new_tokens`` new token ids per image (end-of-sequence suppressed throughout)."""
        from onnxruntime import OrtValue

        if not 1 <= num_beams <= _MAX_BEAMS:
            raise ValueError(f"the peer decodes with 1 to {_MAX_BEAMS} beams, not {num_beams}")
        images = len(pixel_values)
        rows = images * num_beams
        cross = self.encoder.run_with_ort_values(None, {"pixel_values": OrtValue.ortvalue_from_numpy(pixel_values)})
        empty = np.zeros((rows, self.heads, 0, self.head_dim), dtype=np.float32)
        past = [OrtValue.ortvalue_from_numpy(empty)] * (2 * self.layers)
        vocab_mask = np.zeros(self.vocab_size, dtype=np.float32)
        vocab_mask[self.eos_id] = -np.inf  # min_new_tokens = new_tokens: end-of-sequence never competes
        scores = np.zeros((images, num_beams), dtype=np.float32)
        scores[:, 1:] = -1e9  # as generate(): the first step expands beam 0 only
        tokens = np.full(rows, self.start_id, dtype=np.int64)
        beam_idx = np.arange(rows, dtype=np.int64)
        sequences = np.zeros((rows, 0), dtype=np.int64)
        first_row = (np.arange(images, dtype=np.int64) * num_beams)[:, None]
        constant = {"vocab_mask": OrtValue.ortvalue_from_numpy(vocab_mask)}
        constant.update({name: value for name, value in zip(self._cross_names, cross, strict=True)})
        for step in range(new_tokens):
            feeds = dict(constant)
            feeds.update(
                input_ids=OrtValue.ortvalue_from_numpy(tokens),
                position=OrtValue.ortvalue_from_numpy(np.array([step], dtype=np.int64)),
                beam_idx=OrtValue.ortvalue_from_numpy(beam_idx),
                beam_scores=OrtValue.ortvalue_from_numpy(scores.reshape(rows)),
            )
            feeds.update(zip(self._past_names, past, strict=True))
            outputs = self.step.run_with_ort_values(None, feeds)
            top_scores, top_indices = outputs[0].numpy()[:, :num_beams], outputs[1].numpy()[:, :num_beams]
            past = outputs[2:]
            # The best `num_beams` of the candidates continue (none is end-of-sequence, see vocab_mask).
            beam_idx = (first_row + top_indices // self.vocab_size).reshape(rows)
            tokens = (top_indices % self.vocab_size).reshape(rows)
            sequences = np.concatenate([sequences[beam_idx], tokens[:, None]], axis=1)
            scores = np.ascontiguousarray(top_scores, dtype=np.float32)
        # Candidates come sorted, so each image's first beam has the best score: it is the caption.
        return sequences[first_row[:, 0]]

    @property
    def _past_names(self) -> list[str]:
        return _cache_names("past", self.layers)

    @property
    def _cross_names(self) -> list[str]:
        return _cache_names("cross", self.layers)


def _checked_captioner(loaded) -> None:
    """Refuse what the peer cannot reproduce exactly, before spending minutes on an export."""
    model = loaded.model
    if type(model).__name__ != "VisionEncoderDecoderModel" or model.decoder.config.model_type != "gpt2":
        raise PeerUnsupported(
            f"the ONNX Runtime peer exports VisionEncoderDecoder captioners with a GPT-2 decoder, "
            f"not {type(model).__name__}"
        )
    generation = model.generation_config
    changed = [
        name
        for name, neutral in _UNSUPPORTED_GENERATION.items()
        if getattr(generation, name, neutral) not in (neutral, None, [])
    ]
    if changed:
        raise PeerUnsupported(f"the checkpoint's generation config sets {', '.join(changed)}, which the peer lacks")


def export_caption(settings: InferenceSettings, directory: Path, threads: int) -> dict[str, CaptionPeer]:
    """Export, optimise and quantise the caption checkpoint; returns {"fp32": peer, "int8": peer}."""
    loaded = transformers_backend.load_caption_model(replace(settings, precision="fp32"), _no_progress)
    _checked_captioner(loaded)
    model = loaded.model
    model.set_attn_implementation("eager")  # plain attention graphs, which the optimizer's fusions match
    size = loaded.image_processor.size
    pixels = torch.zeros(2, model.encoder.config.num_channels, size["height"], size["width"])
    encoder_path = export_caption_encoder(model, pixels, directory / "caption-encoder.onnx")
    with torch.no_grad():
        cross = _CaptionEncoder(model)(pixels)
    step_path = export_caption_step(_CaptionStep(model.decoder), cross, directory / "caption-step.onnx")
    encoder, decoder = model.encoder.config, model.decoder.config
    encoder_graphs = _optimise_and_quantise(
        encoder_path, _OPTIMIZER_TYPES.get(encoder.model_type), encoder.num_attention_heads, encoder.hidden_size
    )
    step_graphs = _optimise_and_quantise(step_path, "gpt2", decoder.n_head, decoder.n_embd)
    generation = model.generation_config
    common = dict(
        image_processor=loaded.image_processor,
        tokenizer=loaded.tokenizer,
        start_id=int(generation.decoder_start_token_id),
        eos_id=int(_first_id(generation.eos_token_id)),
        vocab_size=decoder.vocab_size,
        layers=decoder.n_layer,
        heads=decoder.n_head,
        head_dim=decoder.n_embd // decoder.n_head,
    )
    return {
        precision: CaptionPeer(
            _session(encoder_graphs[index], threads), _session(step_graphs[index], threads), **common
        )
        for index, precision in enumerate(("fp32", "int8"))
    }


def _cache_names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}_{kind}_{index}" for index in range(layers) for kind in ("key", "value")]


def export_caption_encoder(model, pixels: torch.Tensor, path: Path) -> Path:
    """The float32 ``_CaptionEncoder`` graph of a VisionEncoderDecoder model, batch size dynamic."""
    names = _cache_names("cross", model.decoder.config.n_layer)
    axes = {name: {0: "images"} for name in ["pixel_values", *names]}
    _export(_CaptionEncoder(model), (pixels,), path, ["pixel_values"], names, axes)
    return path


def export_caption_step(step: _CaptionStep, cross: Sequence[torch.Tensor], path: Path) -> Path:
    """The float32 ``_CaptionStep`` graph; ``cross`` is an encoder output (two images) to trace with."""
    layers = len(step.blocks)
    heads = step.blocks[0].attn.num_heads
    width = step.wte.embedding_dim
    rows = 2 * len(cross[0])  # two beams per image: images, rows and cache lengths all differ while tracing
    example = (
        torch.zeros(rows, dtype=torch.long),
        torch.tensor([3]),
        torch.arange(rows),
        torch.zeros(rows),
        torch.zeros(step.wte.num_embeddings),
        *[torch.zeros(rows, heads, 3, width // heads)] * (2 * layers),
        *cross,
    )
    past, present, cross_names = (_cache_names(prefix, layers) for prefix in ("past", "present", "cross"))
    inputs = ["input_ids", "position", "beam_idx", "beam_scores", "vocab_mask", *past, *cross_names]
    axes = {"input_ids": {0: "rows"}, "beam_idx": {0: "rows"}, "beam_scores": {0: "rows"}}
    axes.update({name: {0: "rows", 2: "past"} for name in past})
    axes.update({name: {0: "rows", 2: "total"} for name in present})
    axes.update({name: {0: "images"} for name in [*cross_names, "top_scores", "top_indices"]})
    _export(step, example, path, inputs, ["top_scores", "top_indices", *present], axes)
    return path


def _first_id(value) -> int:
    return value[0] if isinstance(value, list | tuple) else value


# --- Sentiment ----------------------------------------------------------------------------------


@dataclass(eq=False)
class SentimentPeer:
    """An exported sequence classifier run on length-bucketed batches, as Prism runs it."""

    session: Any
    tokenizer: Any
    input_names: tuple[str, ...]
    label_names: list[str]
    max_length: int
    max_batch: int

    def classify(self, texts: Sequence[str]) -> list[dict[str, float]]:
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        rows: list[dict[str, float] | None] = [None] * len(texts)
        for group in transformers_backend.length_buckets(lengths, max_batch=self.max_batch):
            features = [{name: encoded[name][index] for name in self.input_names} for index in group]
            batch = self.tokenizer.pad(features, padding=True, return_tensors="np")
            (logits,) = self.session.run(None, {name: batch[name].astype(np.int64) for name in self.input_names})
            probabilities = _softmax(logits.astype(np.float32))
            for index, row in zip(group, probabilities.tolist(), strict=True):
                rows[index] = dict(zip(self.label_names, row, strict=True))
        return rows  # type: ignore[return-value]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def export_sentiment(
    settings: InferenceSettings, directory: Path, threads: int, max_batch: int
) -> dict[str, SentimentPeer]:
    """Export, optimise and quantise the sentiment checkpoint; returns {"fp32": peer, "int8": peer}."""
    loaded = transformers_backend.load_sentiment_model(replace(settings, precision="fp32"), _no_progress)
    model = loaded.model
    model.set_attn_implementation("eager")
    config = model.config
    accepted = ("input_ids", "attention_mask", "token_type_ids")
    input_names = tuple(name for name in loaded.tokenizer.model_input_names if name in accepted)
    example = tuple(torch.ones(2, 7, dtype=torch.long) for _ in input_names)
    path = directory / "sentiment.onnx"
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names} | {"logits": {0: "batch"}}
    _export(_Classifier(model, input_names), example, path, list(input_names), ["logits"], axes)
    graphs = _optimise_and_quantise(
        path, _OPTIMIZER_TYPES.get(config.model_type), config.num_attention_heads, config.hidden_size
    )
    return {
        precision: SentimentPeer(
            _session(graphs[position], threads),
            loaded.tokenizer,
            input_names,
            loaded.label_names,
            loaded.max_length,
            max_batch,
        )
        for position, precision in enumerate(("fp32", "int8"))
    }


# --- The run ------------------------------------------------------------------------------------


def run_peer(
    kind: str,
    settings: InferenceSettings,
    inputs: Sequence[Any],
    *,
    requests: int,
    batch_size: int,
    threads: int,
    new_tokens: int = 16,
    beams: Sequence[int] = (4, 1),
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Export the checkpoint of ``kind`` ("caption" or "sentiment") named in ``settings`` and time the peer.

    Request i uses input i mod len(inputs), as the bench's Prism levels do; ``requests`` requests are
    processed in consecutive batches of ``batch_size`` (what that many clients hand a server at once),
    preprocessing or tokenisation included, after one untimed batch. Returns the export seconds and one
    run per decoding ("int8 beam4", "int8 greedy"; sentiment: "int8") with items/s, ms/item and the
    outputs per input, plus ``fp32_outputs``: the float32 graphs' outputs on every input, untimed, for
    the check against ``generate()`` in float32.
    """
    import onnxruntime

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="prism-ort-peer-") as tmp:
        if kind == "caption":
            echo("captions: exporting, optimising and quantising for the ONNX Runtime peer")
            peers = export_caption(settings, Path(tmp), threads)
        elif kind == "sentiment":
            echo("sentiment: exporting, optimising and quantising for the ONNX Runtime peer")
            peers = export_sentiment(settings, Path(tmp), threads, batch_size)
        else:
            raise ValueError(f"unknown kind {kind!r}")
    export_seconds = time.perf_counter() - started

    if kind == "caption":
        decodings = {
            f"beam{count}" if count > 1 else "greedy": (
                lambda peer, batch, count=count: peer.caption(batch, count, new_tokens)
            )
            for count in beams
        }
    else:

        def classify(peer, batch):
            rows = peer.classify(batch)
            return [(labels.normalise(raw, settings.neutral_range)[0], raw) for raw in rows]

        decodings = {"": classify}
    runs, fp32_outputs = [], {}
    for decoding, process in decodings.items():
        name = f"int8 {decoding}".strip()
        echo(f"{'captions' if kind == 'caption' else 'sentiment'}: ONNX Runtime peer {name}")
        run = _timed(lambda batch, process=process: process(peers["int8"], batch), inputs, requests, batch_size)
        runs.append({"name": name, "num_beams": _beams_of(decoding), **run})
        fp32_outputs[decoding or "text"] = {
            index: output
            for start in range(0, len(inputs), batch_size)
            for index, output in enumerate(process(peers["fp32"], inputs[start : start + batch_size]), start)
        }
    return {
        "peer": "onnxruntime",
        "onnxruntime": onnxruntime.__version__,
        "opset": OPSET,
        "threads": threads,
        "batch_size": batch_size,
        "export_seconds": round(export_seconds, 1),
        "runs": runs,
        "fp32_outputs": fp32_outputs,
    }


def _beams_of(decoding: str) -> int:
    return int(decoding[4:]) if decoding.startswith("beam") else 1


def _timed(process: Callable[[list], list], inputs: Sequence[Any], requests: int, batch_size: int) -> dict[str, Any]:
    """``requests`` requests (request i: input i mod n) through ``process`` in batches, after one untimed batch."""
    count = len(inputs)
    process([inputs[index % count] for index in range(min(batch_size, requests))])  # warm-up, untimed
    outputs: dict[int, Any] = {}
    started = time.perf_counter()
    for start in range(0, requests, batch_size):
        chunk = range(start, min(start + batch_size, requests))
        for index, output in zip(chunk, process([inputs[index % count] for index in chunk]), strict=True):
            outputs.setdefault(index % count, output)
    seconds = time.perf_counter() - started
    return {
        "requests": requests,
        "seconds": round(seconds, 3),
        "items_per_second": requests / seconds,
        "ms_per_item": seconds * 1000.0 / requests,
        "outputs": outputs,
    }


# --- The bench's side ---------------------------------------------------------------------------


def for_bench(
    peer_name: str,
    kind: str,
    settings: InferenceSettings,
    inputs: Sequence[Any],
    runs: Sequence[dict],
    **timing: Any,
) -> dict[str, Any]:
    """``run_peer`` for ``manage.py bench --peer``, with its outputs compared to the bench's float32 baseline.

    ``runs`` are the bench's run entries of ``kind`` with their ``outputs`` still attached; ``timing`` goes
    to ``run_peer``. The int8 runs get ``agreement_with_fp32`` (as Prism's runs do) and ``fp32_check``
    compares the float32 graphs with the baseline: it should match on every input. A checkpoint the
    peer cannot reproduce is reported as skipped (its targets are then not measured), not raised.
    """
    from . import bench  # the agreement measures, shared with Prism's runs (bench imports this module lazily)

    if peer_name not in PEERS:
        raise ValueError(f"unknown peer {peer_name!r}; choose from {', '.join(PEERS)}")
    echo = timing.get("echo", print)
    try:
        peer = run_peer(kind, settings, inputs, **timing)
    except PeerUnsupported as exc:
        echo(f"{'captions' if kind == 'caption' else kind}: ONNX Runtime peer skipped: {exc}")
        return {"peer": peer_name, "skipped": str(exc), "runs": []}
    by_name = {entry["name"]: entry for entry in runs}
    fp32_outputs = peer.pop("fp32_outputs")
    if kind == "caption":
        for entry in peer["runs"]:
            reference = by_name["baseline beam4" if entry["num_beams"] == 4 else "baseline greedy"]
            entry["agreement_with_fp32"] = bench._agreement(
                entry.pop("outputs"), reference["outputs"], reference["name"]
            )
        peer["fp32_check"] = {
            decoding: bench._agreement(outputs, by_name[f"baseline {decoding}"]["outputs"], f"baseline {decoding}")
            for decoding, outputs in fp32_outputs.items()
        }
    else:
        reference = by_name["baseline"]["outputs"]
        for entry in peer["runs"]:
            entry["agreement_with_fp32"] = bench._label_agreement(entry.pop("outputs"), reference)
        peer["fp32_check"] = {"text": bench._label_agreement(fp32_outputs["text"], reference)}
    return peer


def report_lines(peer: dict[str, Any], rate: str, per_item: str) -> list[str]:
    """The peer's section of the bench report for one kind: speed, agreement and the float32 check."""
    from .bench import _rate

    if "skipped" in peer:
        return [f"ONNX Runtime peer: skipped ({peer['skipped']})"]
    lines = [
        f"ONNX Runtime peer: onnxruntime {peer['onnxruntime']}, opset {peer['opset']}, transformers optimizer + "
        f"dynamic int8 (QInt8), CPU provider, {peer['threads']} threads, batches of {peer['batch_size']} "
        f"(preprocessing included) · export + optimise + quantise {peer['export_seconds']:.0f} s",
        f"  {'run':<16} {'requests':>8} {rate:>8} {per_item:>8}  agreement with fp32 batch-1",
    ]
    for entry in peer["runs"]:
        agreement = entry["agreement_with_fp32"]
        lines.append(
            f"  {entry['name']:<16} {entry['requests']:>8} {entry['items_per_second']:>8.2f} "
            f"{entry['ms_per_item']:>8.1f}  {_rate(agreement)}{_largest_difference(agreement)}"
        )
    checks = [f"{name} {_rate(value)}{_largest_difference(value)}" for name, value in peer["fp32_check"].items()]
    lines.append("  Peer fp32 graphs vs fp32 batch-1 (should match every input): " + "; ".join(checks))
    return lines


def _largest_difference(agreement: dict) -> str:
    difference = agreement.get("max_probability_difference")
    return "" if difference is None else f", largest probability difference {difference:.2g}"
