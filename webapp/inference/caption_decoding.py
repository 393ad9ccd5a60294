"""Captions from a VisionEncoderDecoder with a GPT-2 decoder, decoded without ``generate()``'s overheads.

Why: on the CPU, beam-4 captions spent most of their time in work ``generate()`` repeats or spreads thin
(measured with ``torch.profiler`` on a batch of 8 images, bf16):

* the cross-attention keys and values were computed and read once per *beam*, although the 4 beams of
  an image attend to the same image; here they are computed once per image and each image's beams
  attend to them together as one 4-row query (one attention call per layer for the whole batch);
* the self-attention cache grew by concatenation every step; here it is preallocated;
* GPT-2's ``Conv1D`` layers (``x @ W + b``) become oneDNN-prepacked linear layers (``packed_linear.py``),
  and its tanh-GELU is fused into the first feed-forward layer instead of five element-wise ops.

Decoding follows ``generate()``'s rules exactly (the vectorised beam search of transformers 5, its
greedy search, the min-length and min-new-tokens processors, the EOS and max-length stopping criteria),
so the captions are ``generate()``'s: tested equal in float32 on tiny models whose captions end early,
and with the bench's fixed-length decoding. Checkpoints whose generation config asks for anything else
(repetition penalty, n-gram blocking, forced or suppressed tokens, sampling, several return sequences)
are refused by ``unsupported_reason`` and keep ``generate()``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)

from .packed_linear import DynamicInt8Linear, PackedLinear, PackedLinearModule, is_quantised

# generation_config fields this decoder implements; any other field set away from its default means
# generate() would apply a processor or mode this module does not, so the checkpoint keeps generate().
_IMPLEMENTED_GENERATION_FIELDS = {
    "num_beams",
    "max_length",
    "max_new_tokens",
    "min_length",
    "min_new_tokens",
    "length_penalty",
    "early_stopping",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "use_cache",
    "transformers_version",
    "_from_model_config",
}
# Fields that change nothing at these values, and sampling fields, which change nothing without sampling.
_NEUTRAL_GENERATION_VALUES = {
    "do_sample": False,
    "num_return_sequences": 1,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "renormalize_logits": False,
    "remove_invalid_values": False,
    "output_attentions": False,
    "output_hidden_states": False,
    "output_scores": False,
    "output_logits": False,
    "return_dict_in_generate": False,
}
_SAMPLING_FIELDS = {"temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff"}
_TANH_GELUS = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}


def unsupported_reason(model: Any, generate_kwargs: dict) -> str | None:
    """Why ``model`` must keep ``generate()`` (None: this module decodes it exactly)."""
    if type(model).__name__ != "VisionEncoderDecoderModel":
        return f"{type(model).__name__} is not a VisionEncoderDecoderModel"
    decoder_config = model.config.decoder
    if decoder_config.model_type != "gpt2":
        return f"the decoder is {decoder_config.model_type}, not gpt2"
    if decoder_config.activation_function not in _TANH_GELUS:
        return f"GPT-2 activation {decoder_config.activation_function!r} is not a tanh GELU"
    if decoder_config.scale_attn_by_inverse_layer_idx or not decoder_config.scale_attn_weights:
        return "GPT-2 attention scaling other than 1/sqrt(head size)"
    if any(is_quantised(module) for module in model.decoder.modules()):
        return "the decoder is quantised"
    settings = {**model.generation_config.to_diff_dict(), **generate_kwargs}
    sampling = bool(settings.get("do_sample"))
    extra = sorted(
        key
        for key, value in settings.items()
        if key not in _IMPLEMENTED_GENERATION_FIELDS
        and value is not None
        and not (key in _NEUTRAL_GENERATION_VALUES and value == _NEUTRAL_GENERATION_VALUES[key])
        and not (key in _SAMPLING_FIELDS and not sampling)
    )
    if extra:
        return f"generation settings {extra} need generate()"
    return None


@dataclass(frozen=True)
class DecodingRules:
    """``generate()``'s settings for one call, resolved as ``generate()`` resolves them."""

    start_token_id: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None
    num_beams: int
    max_length: int  # prompt (the start token) included
    min_length: int
    min_new_tokens: int
    length_penalty: float
    early_stopping: bool | str

    @classmethod
    def of(cls, generation_config: Any, generate_kwargs: dict) -> DecodingRules:
        settings = {**generation_config.to_dict(), **generate_kwargs}
        eos = settings.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list | tuple) else (() if eos is None else (int(eos),))
        max_new_tokens = settings.get("max_new_tokens")
        max_length = 1 + int(max_new_tokens) if max_new_tokens is not None else int(settings.get("max_length") or 20)
        return cls(
            start_token_id=int(settings["decoder_start_token_id"]),
            eos_token_ids=eos_ids,
            pad_token_id=settings.get("pad_token_id"),
            num_beams=int(settings.get("num_beams") or 1),
            max_length=max_length,
            min_length=int(settings.get("min_length") or 0),
            min_new_tokens=int(settings.get("min_new_tokens") or 0),
            length_penalty=float(_or(settings.get("length_penalty"), 1.0)),
            early_stopping=_or(settings.get("early_stopping"), False),
        )

    @property
    def fill_token_id(self) -> int:
        """What ``generate()`` pads finished sequences with: ``pad or eos[0]`` (a pad id of 0 counts as unset)."""
        if self.eos_token_ids:
            return self.pad_token_id or self.eos_token_ids[0]
        return -1

    def suppress_eos(self, scores: torch.Tensor, length: int) -> None:
        """The min-length and min-new-tokens processors: no EOS before either minimum (in place)."""
        if self.eos_token_ids and (length < self.min_length or length - 1 < self.min_new_tokens):
            scores[:, list(self.eos_token_ids)] = -float("inf")


def _or(value: Any, default: Any) -> Any:
    """transformers 5 keeps unset generation settings as None and applies its defaults late."""
    return default if value is None else value


Linear = PackedLinear | DynamicInt8Linear


def _linear(weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype | None, activation="none") -> Linear:
    """A linear layer in ``dtype``, or with int8 weights when ``dtype`` is None."""
    if dtype is None:
        return DynamicInt8Linear(weight, bias, activation)
    return PackedLinear(weight.to(dtype), None if bias is None else bias.to(dtype), activation)


def _linear_of(conv1d: Any, dtype: torch.dtype | None, activation: str = "none") -> Linear:
    """A GPT-2 ``Conv1D`` (``x @ W + b``, weight [in, out]) as a linear layer (weight [out, in])."""
    return _linear(conv1d.weight.detach().t().contiguous(), conv1d.bias.detach(), dtype, activation)


def _norm(layer_norm: torch.nn.LayerNorm, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """``layer_norm`` computing in ``dtype`` (the model's own module when it already does)."""
    if layer_norm.weight.dtype == dtype:
        return layer_norm
    weight, bias = layer_norm.weight.detach().to(dtype), layer_norm.bias.detach().to(dtype)
    return functools.partial(
        F.layer_norm, normalized_shape=layer_norm.normalized_shape, weight=weight, bias=bias, eps=layer_norm.eps
    )


_VIT_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def is_packed_vit(encoder: Any) -> bool:
    """A transformers ViT encoder whose linear layers ``pack_linear_layers`` prepacked (bf16, GELU fused
    into ``fc1``), in the block layout ``packed_vit_forward`` mirrors."""

    def packed(module: Any, activation: str = "none") -> bool:
        return (
            isinstance(module, PackedLinearModule)
            and module.linear.packed is not None
            and module.linear.activation == activation
        )

    layers = getattr(encoder, "layers", None)
    return (
        type(encoder).__name__ == "ViTModel"
        and bool(layers)
        and all(
            all(packed(getattr(layer.attention, name, None)) for name in _VIT_PROJECTIONS)
            and packed(getattr(getattr(layer, "mlp", None), "fc1", None), "gelu")
            and packed(getattr(getattr(layer, "mlp", None), "fc2", None))
            for layer in layers
        )
    )


def packed_vit_forward(encoder: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """``encoder(pixel_values).last_hidden_state`` for a packed ViT (``is_packed_vit``), with each
    residual addition fused into the linear layer before it (oneDNN's binary add post-op): two fewer
    passes over the hidden states per block. The same operations otherwise, in the same order."""
    hidden = encoder.embeddings(pixel_values)
    images, patches, width = hidden.shape
    hidden = hidden.reshape(images * patches, width)
    for layer in encoder.layers:
        attention = layer.attention
        heads, size = attention.config.num_attention_heads, attention.head_dim
        normed = layer.layernorm_before(hidden)
        query, key, value = (
            getattr(attention, name).linear(normed).view(images, patches, heads, size).transpose(1, 2)
            for name in _VIT_PROJECTIONS[:3]
        )
        mixed = F.scaled_dot_product_attention(query, key, value).transpose(1, 2).reshape(images * patches, width)
        hidden = attention.o_proj.linear.plus(mixed, hidden)
        hidden = layer.mlp.fc2.linear.plus(layer.mlp.fc1.linear(layer.layernorm_after(hidden)), hidden)
    return encoder.layernorm(hidden).view(images, patches, width)


@dataclass(eq=False)
class _Layer:
    ln_1: Callable[[torch.Tensor], torch.Tensor]
    qkv: Linear
    attn_out: Linear
    ln_cross: Callable[[torch.Tensor], torch.Tensor]
    cross_q: Linear
    cross_kv: Linear
    cross_out: Linear
    ln_2: Callable[[torch.Tensor], torch.Tensor]
    fc: Linear
    fc_out: Linear


class GPT2CaptionDecoder:
    """The decoder half of a loaded ``VisionEncoderDecoderModel`` (GPT-2), with its own decoding loop.

    Shares the model's encoder and embedding modules; copies the decoder's projection weights into
    linear layout in ``dtype``. Not thread-safe: one inference thread calls ``generate``.

    ``int8_weights``: the decoder's linear layers (and output layer) hold int8 weights and compute in
    float32 (``DynamicInt8Linear``); attention keys and values stay in ``dtype``, which halves what every
    step reads against float32. Captions may then differ from ``generate()``'s (the bench measures how often).
    """

    def __init__(self, model: Any, dtype: torch.dtype, *, int8_weights: bool = False) -> None:
        self.model = model
        self.dtype = dtype  # of attention keys and values
        self.compute_dtype = torch.float32 if int8_weights else dtype  # of hidden states
        linear_dtype = None if int8_weights else dtype
        gpt2 = model.decoder.transformer
        config = model.config.decoder
        self.heads = config.n_head
        self.head_size = config.n_embd // config.n_head
        self.embed = config.n_embd
        self.wte, self.wpe = gpt2.wte, gpt2.wpe
        self.ln_f = _norm(gpt2.ln_f, self.compute_dtype)
        self.lm_head = _linear(model.decoder.lm_head.weight.detach(), None, linear_dtype)
        self.layers = [
            _Layer(
                ln_1=_norm(block.ln_1, self.compute_dtype),
                qkv=_linear_of(block.attn.c_attn, linear_dtype),
                attn_out=_linear_of(block.attn.c_proj, linear_dtype),
                ln_cross=_norm(block.ln_cross_attn, self.compute_dtype),
                cross_q=_linear_of(block.crossattention.q_attn, linear_dtype),
                # Once per image, not per step: no weight-reading to save, so it stays in `dtype`.
                cross_kv=_linear_of(block.crossattention.c_attn, dtype),
                cross_out=_linear_of(block.crossattention.c_proj, linear_dtype),
                ln_2=_norm(block.ln_2, self.compute_dtype),
                fc=_linear_of(block.mlp.c_fc, linear_dtype, activation="gelu_tanh"),
                fc_out=_linear_of(block.mlp.c_proj, linear_dtype),
            )
            for block in gpt2.h
        ]
        self.packed_vit = is_packed_vit(model.encoder)
        encoder_size = model.config.encoder.hidden_size
        self.project_encoder = (
            model.enc_to_dec_proj
            if encoder_size != config.hidden_size and getattr(config, "cross_attention_hidden_size", None) is None
            else None
        )

    # --- the model --------------------------------------------------------------------------------

    def encode(self, pixel_values: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's cross-attention keys and values, once per image: [images, heads, patches, head_size]."""
        if self.packed_vit:
            hidden = packed_vit_forward(self.model.encoder, pixel_values)
        else:
            hidden = self.model.encoder(pixel_values=pixel_values).last_hidden_state
        if self.project_encoder is not None:
            hidden = self.project_encoder(hidden)
        images, patches, _ = hidden.shape
        hidden = hidden.to(self.dtype).reshape(images * patches, -1)
        cross = []
        for layer in self.layers:
            keys_values = layer.cross_kv(hidden).view(images, patches, 2, self.heads, self.head_size)
            keys_values = keys_values.permute(2, 0, 3, 1, 4).to(self.dtype).contiguous()
            cross.append((keys_values[0], keys_values[1]))
        return cross

    def step(
        self,
        tokens: torch.Tensor,
        position: int,
        cache: torch.Tensor,
        cross: list[tuple[torch.Tensor, torch.Tensor]],
        beams: int,
    ) -> torch.Tensor:
        """Float32 logits [rows, vocab] for the token at ``position`` of every row (rows = images x beams).

        ``cache`` [max_length, rows, layers, 2, heads, head_size] receives this position's keys and values.
        """
        rows = tokens.shape[0]
        images = rows // beams
        heads, size = self.heads, self.head_size
        positions = torch.full_like(tokens, position)
        compute, stored = self.compute_dtype, self.dtype
        hidden = (self.wte(tokens) + self.wpe(positions)).to(compute)  # [rows, embed]
        for index, layer in enumerate(self.layers):
            projected = layer.qkv(layer.ln_1(hidden))  # [rows, query | key | value]
            cache[position, :, index] = projected[:, self.embed :].view(rows, 2, heads, size)
            attended = F.scaled_dot_product_attention(
                projected[:, : self.embed].reshape(rows, heads, 1, size).to(stored),
                cache[: position + 1, :, index, 0].permute(1, 2, 0, 3),
                cache[: position + 1, :, index, 1].permute(1, 2, 0, 3),
            )
            hidden = hidden + layer.attn_out(attended.view(rows, self.embed).to(compute))

            # The beams of an image as one query of `beams` rows against that image's keys and values.
            cross_query = layer.cross_q(layer.ln_cross(hidden)).view(images, beams, heads, size).transpose(1, 2)
            attended = F.scaled_dot_product_attention(
                cross_query.to(stored), *cross[index]
            )  # [images, heads, beams, size]
            hidden = hidden + layer.cross_out(attended.transpose(1, 2).reshape(rows, self.embed).to(compute))

            hidden = hidden + layer.fc_out(layer.fc(layer.ln_2(hidden)))
        return self.lm_head(self.ln_f(hidden)).float()

    def cross_attention_maps(self, pixel_values: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """Each layer's cross-attention weights while reading ``token_ids`` (one image, teacher-forced):
        float32 [layers, heads, tokens, patches], softmax(q k^T / sqrt(head size)) per head.

        Query position i is the step that chose token i + 1, so pass the start token and the caption's
        tokens but its last. All positions run in one causal forward rather than one step per token:
        the same arithmetic (``step``'s layers, weights and number formats), with the weights computed
        explicitly, which only this pass pays for; ``step`` keeps its fused attention.
        """
        heads, size = self.heads, self.head_size
        compute, stored = self.compute_dtype, self.dtype
        with torch.inference_mode():
            cross = self.encode(pixel_values[:1])
            tokens = token_ids.reshape(-1).to(pixel_values.device)
            length = tokens.shape[0]
            positions = torch.arange(length, device=tokens.device)
            hidden = (self.wte(tokens) + self.wpe(positions)).to(compute)  # [tokens, embed]
            maps = []
            for layer, (keys, values) in zip(self.layers, cross, strict=True):
                projected = layer.qkv(layer.ln_1(hidden)).view(length, 3, heads, size).permute(1, 2, 0, 3)
                query, key, value = projected.to(stored)  # each [heads, tokens, size]
                attended = F.scaled_dot_product_attention(query[None], key[None], value[None], is_causal=True)[0]
                hidden = hidden + layer.attn_out(attended.transpose(0, 1).reshape(length, self.embed).to(compute))

                cross_query = layer.cross_q(layer.ln_cross(hidden)).view(length, heads, size).transpose(0, 1)
                scores = cross_query.float() @ keys[0].float().transpose(-1, -2) / math.sqrt(size)
                weights = scores.softmax(dim=-1)  # [heads, tokens, patches]
                attended = weights.to(stored) @ values[0]
                hidden = hidden + layer.cross_out(attended.transpose(0, 1).reshape(length, self.embed).to(compute))

                hidden = hidden + layer.fc_out(layer.fc(layer.ln_2(hidden)))
                maps.append(weights)
            return torch.stack(maps)

    def _first_step(self, starts: torch.Tensor, cache: torch.Tensor, cross, beams: int) -> torch.Tensor:
        """The first step of beam search, once per image: every beam of an image holds just the start
        token, so its logits and cache entries are the same for all beams (a quarter of the rows at 4)."""
        images = starts.shape[0]
        first = self._new_cache(images, 1, starts.device)
        logits = self.step(starts, 0, first, cross, beams=1)
        cache[0] = first[0].repeat_interleave(beams, dim=0)
        return logits.repeat_interleave(beams, dim=0)

    def _new_cache(self, rows: int, max_length: int, device: torch.device) -> torch.Tensor:
        """Positions first, so that the positions written so far are one contiguous block (see ``_reorder``)."""
        shape = (max_length, rows, len(self.layers), 2, self.heads, self.head_size)
        return torch.empty(shape, dtype=self.dtype, device=device)

    # --- decoding ---------------------------------------------------------------------------------

    def generate(self, pixel_values: torch.Tensor, rules: DecodingRules) -> torch.Tensor:
        """Token ids [images, length] as ``generate()`` returns them (start token first, padded)."""
        with torch.inference_mode():
            cross = self.encode(pixel_values)
            if rules.num_beams > 1:
                return self._beam_search(cross, rules, pixel_values.device)
            return self._greedy(cross, rules, pixel_values.device)

    def _greedy(self, cross, rules: DecodingRules, device: torch.device) -> torch.Tensor:
        """transformers' ``_sample`` without sampling: argmax, then pad once a row has ended."""
        images = cross[0][0].shape[0]
        sequences = torch.full((images, rules.max_length), rules.fill_token_id, dtype=torch.long, device=device)
        sequences[:, 0] = rules.start_token_id
        eos = torch.tensor(rules.eos_token_ids, dtype=torch.long, device=device)
        unfinished = torch.ones(images, dtype=torch.bool, device=device)
        cache = self._new_cache(images, rules.max_length, device)
        length = 1
        while True:
            logits = self.step(sequences[:, length - 1], length - 1, cache, cross, beams=1)
            rules.suppress_eos(logits, length)
            tokens = logits.argmax(dim=-1)
            if len(eos):
                tokens = torch.where(unfinished, tokens, rules.pad_token_id)
            sequences[:, length] = tokens
            length += 1
            ended = torch.isin(tokens, eos) if len(eos) else torch.zeros_like(unfinished)
            unfinished &= ~ended & (length < rules.max_length)
            if not bool(unfinished.any()):
                return sequences[:, :length]

    def _beam_search(self, cross, rules: DecodingRules, device: torch.device) -> torch.Tensor:
        """transformers 5's vectorised ``_beam_search`` (``generation/utils.py``), for one start token.

        Running beams keep the best ``beams`` unfinished continuations out of the top 2 x beams; finished
        hypotheses (EOS or max length, only from the top ``beams`` candidates) compete on their
        length-penalised score; the early-stop heuristic and stopping rule are transformers'.
        """
        images, beams = cross[0][0].shape[0], rules.num_beams
        keep = max(2, 1 + len(rules.eos_token_ids)) * beams
        eos = torch.tensor(rules.eos_token_ids, dtype=torch.long, device=device)
        running = torch.full((images, beams, rules.max_length), rules.fill_token_id, dtype=torch.long, device=device)
        running[:, :, 0] = rules.start_token_id
        finished = running.clone()
        running_scores = torch.zeros((images, beams), device=device)
        running_scores[:, 1:] = -1e9
        finished_scores = torch.full((images, beams), -1e9, device=device)
        finished_lengths = torch.ones((images, beams), dtype=torch.long, device=device)
        is_finished = torch.zeros((images, beams), dtype=torch.bool, device=device)
        can_improve = torch.ones((images, 1), dtype=torch.bool, device=device)
        top_beams = torch.arange(keep, device=device) < beams
        row_offsets = torch.arange(images, device=device)[:, None] * beams
        cache = self._new_cache(images * beams, rules.max_length, device)
        spare = torch.empty_like(cache)  # beam reorders gather from one into the other
        length = 1
        while True:
            if length == 1:
                logits = self._first_step(running[:, 0, 0], cache, cross, beams)
            else:
                logits = self.step(running[:, :, length - 1].reshape(-1), length - 1, cache, cross, beams)
            # Log-probabilities are logits minus each row's log-normaliser; only each row's best `keep` are
            # needed, so they are normalised after the top-k instead of writing the whole log_softmax
            # (rows x vocabulary). EOS is suppressed after the normaliser, as transformers suppresses it
            # after log_softmax.
            normaliser = torch.logsumexp(logits, dim=-1, keepdim=True)
            rules.suppress_eos(logits, length)
            # The best `keep` of all beams x vocabulary are among each beam's best `keep`: pick those per
            # row, then across an image's beams (measured 3x cheaper than one top-k over beams x vocabulary).
            row_scores, row_tokens = torch.topk(logits, k=keep, dim=-1)
            row_scores = row_scores - normaliser
            totals = (row_scores.view(images, beams, keep) + running_scores[:, :, None]).view(images, -1)
            top_scores, top_indices = torch.topk(totals, k=keep)
            source_beams = top_indices // keep
            candidates = torch.take_along_dim(running, source_beams[:, :, None], dim=1)
            candidates[:, :, length] = torch.take_along_dim(row_tokens.view(images, -1), top_indices, dim=1)
            ends = torch.isin(candidates[:, :, length], eos) | (length + 1 >= rules.max_length)

            # The best unfinished candidates run on.
            running_candidates = top_scores + ends.float() * -1e9
            chosen = torch.topk(running_candidates, k=beams).indices
            running = torch.take_along_dim(candidates, chosen[:, :, None], dim=1)
            running_scores = torch.take_along_dim(running_candidates, chosen, dim=1)
            sources = (torch.take_along_dim(source_beams, chosen, dim=1) + row_offsets).view(-1)
            torch.index_select(cache[:length], 1, sources, out=spare[:length])  # only the positions written
            cache, spare = spare, cache

            # Finished candidates among the top `beams` join the finished set if they score well enough.
            just_finished = ends & top_beams[None, :]
            penalised = top_scores / (length**rules.length_penalty)  # generated tokens incl. this one
            full = is_finished.all(dim=-1, keepdim=True) & (rules.early_stopping is True)
            penalised = penalised + full.float() * -1e9 + (~can_improve).float() * -1e9 + (~just_finished) * -1e9
            merged_scores = torch.cat((finished_scores, penalised), dim=1)
            best = torch.topk(merged_scores, k=beams).indices
            finished = torch.take_along_dim(torch.cat((finished, candidates), dim=1), best[:, :, None], dim=1)
            finished_scores = torch.take_along_dim(merged_scores, best, dim=1)
            candidate_lengths = torch.full_like(top_scores, length + 1, dtype=torch.long)
            finished_lengths = torch.take_along_dim(torch.cat((finished_lengths, candidate_lengths), 1), best, 1)
            is_finished = torch.take_along_dim(torch.cat((is_finished, just_finished), dim=1), best, dim=1)

            length += 1
            hypothetical = (
                rules.max_length - 1 if rules.early_stopping == "never" and rules.length_penalty > 0.0 else length - 1
            )
            best_possible = running_scores[:, :1] / (hypothetical**rules.length_penalty)
            worst_finished = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True).values, -1.0e9)
            can_improve = can_improve & (best_possible > worst_finished).any(dim=-1, keepdim=True)
            still_open = not (bool(is_finished.all()) and rules.early_stopping is True)
            if not (bool(can_improve.any()) and still_open and not bool(ends.all())):
                break
        best_rows = finished[:, 0]
        return best_rows[:, : int(finished_lengths[:, 0].max())]
