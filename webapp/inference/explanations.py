"""Why a model said what it said: caption heatmaps from cross-attention, sentiment attributions by
integrated gradients, and the heat overlay drawn on an image.

**Caption heatmaps.** The record's caption is re-read in one teacher-forced forward pass (the start
token and the caption's tokens, one image, the caption's own precision; never a second ``generate()``).
At the query position that chose token t, layer l and head h give cross-attention weights
``A[l, h, t, :] = softmax(q k^T / sqrt(d))`` over the image encoder's positions. The token's map is

    m_t = normalise( (1 / (L H)) * sum_l sum_h A[l, h, t, 1:] )

the mean over all heads and layers with the encoder's [CLS] position (index 0) dropped, reshaped
row-major to the patch grid (patch rows x patch columns) and divided by its sum so it sums to 1.
Sub-word tokens are grouped into the words the caption displays (a GPT-2 byte-level token that starts
with a space marker begins a word, a BERT "##" piece continues one) and a word's map is the normalised
mean of its tokens' maps; the whole caption's map is the normalised mean of all its tokens' maps. Plain
head/layer averaging is the common baseline; rollout does not apply directly to cross-attention (the
image positions never mix with the text), and no gradient variant was measured better here.

**Sentiment attributions.** Integrated gradients (Sundararajan et al., 2017) on the input word
embeddings x toward the predicted label's logit F, against a baseline x0: the same sequence with every
non-special token's embedding replaced by the [PAD] token's ([CLS], [SEP] and positions stay). With
the midpoint rule over ``steps`` points a_k = (k + 1/2) / steps,

    attr_i = sum_d (x_i,d - x0_i,d) * (1 / steps) * sum_k dF(x0 + a_k (x - x0)) / dx_i,d

all steps in one batched forward and backward (together with x and x0 themselves). Completeness says
sum_i attr_i = F(x) - F(x0); ``completeness_gap`` reports the difference, which shrinks with more steps.
The pass runs on the served weights (float32 or bf16) with eager attention: torch's CPU
flash-attention backward took 40% of a bf16 pass and widened the completeness gap 16-fold on the
bench's checkpoint (``webapp/inference/explain_bench.py`` reports both). DistilBERT runs through
``text_classification.logits_from_embeddings``, whose last block computes the [CLS] row only.

Only this module, the ``*_backend`` modules and the decoders import torch; it is imported here inside
the functions that need it, so ``overlay_png`` and ``word_groups`` stay importable from views.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from PIL import Image

if TYPE_CHECKING:
    import torch

CAPTION_METHOD = "decoder cross-attention over image patches, mean of heads and layers, [CLS] dropped"
IG_STEPS = 32
IG_METHOD = (
    "integrated gradients on the word embeddings toward the predicted label's logit, "
    "{steps} midpoint steps, baseline: every non-special token's embedding replaced by [PAD]'s"
)
OVERLAY_ALPHA = 0.45
# A perceptually ordered dark-blue -> teal -> yellow -> red ramp (anchors of a viridis/inferno-like map).
_RAMP = ((0.0, (30, 20, 90)), (0.35, (30, 140, 160)), (0.65, (240, 220, 60)), (1.0, (220, 40, 30)))


# --- captions -------------------------------------------------------------------------------------


def word_groups(pieces: Sequence[str]) -> list[list[int]]:
    """Token indices grouped into displayed words.

    A piece starting with "##" (BERT WordPiece) continues the previous word; one starting with GPT-2's
    byte-level space marker "Ġ" or SentencePiece's "▁" begins a word; for byte-level vocabularies (any
    piece carries "Ġ") every other piece continues, and for WordPiece every other piece begins a word.
    """
    byte_level = any(piece.startswith(("Ġ", "▁")) for piece in pieces)
    groups: list[list[int]] = []
    for index, piece in enumerate(pieces):
        if groups and (piece.startswith("##") or (byte_level and not piece.startswith(("Ġ", "▁")))):
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def words_by_offsets(caption: str, offsets: Sequence[tuple[int, int]]) -> tuple[list[str], list[list[int]]]:
    """The caption's whitespace-separated words and, for each, the indices of its tokens.

    A token belongs to the word holding its last character (a fast tokenizer's ``offset_mapping``;
    GPT-2's offsets may include the leading space); one without characters joins the previous word.
    This is the same grouping as ``word_groups`` whenever the pieces carry their markers, and it also
    holds for captions without spaces and for pieces that are fragments of one UTF-8 character.
    """
    word_of_char = [-1] * len(caption)
    spans: list[tuple[int, int]] = []
    start = None
    for index, char in enumerate([*caption, " "]):
        if char.isspace():
            if start is not None:
                spans.append((start, index))
                start = None
        elif start is None:
            start = index
    for number, (begin, end) in enumerate(spans):
        word_of_char[begin:end] = [number] * (end - begin)
    groups: list[list[int]] = [[] for _ in spans]
    current = 0
    for token, (begin, end) in enumerate(offsets):
        if end > begin and 0 < end <= len(caption) and word_of_char[end - 1] >= 0:
            current = word_of_char[end - 1]
        if groups:
            groups[current].append(token)
    kept = [(caption[begin:end], group) for (begin, end), group in zip(spans, groups, strict=True) if group]
    return [word for word, _group in kept], [group for _word, group in kept]


def caption_fields(
    maps: torch.Tensor, token_ids: Sequence[int], tokenizer: Any, grid: tuple[int, int], caption: str | None = None
) -> dict:
    """``CaptionExplanation``'s words, grid, per_word, overall and method from the cross-attention
    weights ``maps`` [layers, heads, tokens, positions] of one teacher-forced pass (see the docstring).

    With ``caption`` and a fast tokenizer, words are the caption's own (``words_by_offsets``);
    otherwise they are rebuilt from the pieces (``word_groups``)."""
    rows, columns = grid
    cells = rows * columns
    if not token_ids:
        uniform = tuple([1.0 / cells] * cells)
        return {"words": (), "grid": grid, "per_word": (), "overall": uniform, "method": CAPTION_METHOD}
    per_token = maps.float().mean(dim=(0, 1))  # [tokens, positions]
    if per_token.shape[-1] == cells + 1:
        per_token = per_token[:, 1:]  # the encoder's [CLS] position
    if per_token.shape[-1] != cells:
        raise ValueError(f"{per_token.shape[-1]} image positions do not fit a {rows}x{columns} patch grid")
    per_token = _normalised(per_token)
    words, groups = _caption_words(caption, list(token_ids), tokenizer)
    per_word = tuple(_as_tuple(_normalised(per_token[group].mean(dim=0))) for group in groups)
    words = tuple(words)
    overall = _as_tuple(_normalised(per_token.mean(dim=0)))
    return {"words": words, "grid": grid, "per_word": per_word, "overall": overall, "method": CAPTION_METHOD}


def _caption_words(caption: str | None, token_ids: list[int], tokenizer: Any) -> tuple[list[str], list[list[int]]]:
    if caption is not None and getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(caption, add_special_tokens=False, return_offsets_mapping=True)
        if encoded["input_ids"] == token_ids:
            return words_by_offsets(caption, encoded["offset_mapping"])
    pieces = tokenizer.convert_ids_to_tokens(token_ids)
    groups = word_groups(pieces)
    return [tokenizer.convert_tokens_to_string([pieces[index] for index in group]).strip() for group in groups], groups


def _normalised(values: torch.Tensor) -> torch.Tensor:
    """Each map (last dimension) divided by its sum, in float64 so the sums are 1 within 1e-12."""
    values = values.double().clamp(min=0)
    return values / values.sum(dim=-1, keepdim=True).clamp(min=1e-300)


def _as_tuple(values: torch.Tensor) -> tuple[float, ...]:
    return tuple(float(value) for value in values.tolist())


def patch_grid(vision_config: Any) -> tuple[int, int]:
    """(patch rows, patch columns) of a ViT-style encoder's config."""

    def pair(value: Any) -> tuple[int, int]:
        return (int(value[0]), int(value[1])) if isinstance(value, list | tuple) else (int(value), int(value))

    (height, width), (patch_height, patch_width) = pair(vision_config.image_size), pair(vision_config.patch_size)
    return height // patch_height, width // patch_width


# --- sentiment ------------------------------------------------------------------------------------


def integrated_gradients(
    model: Any,
    tokenizer: Any,
    text: str,
    label_names: Sequence[str],
    *,
    max_length: int,
    steps: int = IG_STEPS,
) -> dict:
    """``SentimentExplanation``'s fields but ``text`` and the stamp, for a float32 or bf16 sequence
    classifier that takes ``inputs_embeds`` (see the module docstring). Runs on the inference thread."""
    import torch

    from . import text_classification

    encoded = tokenizer(
        text,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    device = next(model.parameters()).device
    ids = torch.tensor([encoded["input_ids"]], device=device)
    special = torch.tensor(encoded["special_tokens_mask"], dtype=torch.bool, device=device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    embeddings = model.get_input_embeddings()
    if text_classification.unsupported_reason(model) is None:
        forward = functools.partial(text_classification.logits_from_embeddings, model)
    else:
        forward = functools.partial(_eager_logits, model)
    with torch.inference_mode(False), torch.enable_grad():
        x = embeddings(ids).detach()[0]  # [tokens, dim]
        x0 = torch.where(special[:, None], x, embeddings.weight[pad_id].detach()[None, :])
        alphas = (torch.arange(steps, device=device, dtype=torch.float32) + 0.5) / steps
        path = x0.float()[None] + alphas[:, None, None] * (x - x0).float()[None]  # [steps, tokens, dim]
        batch = torch.cat([x[None], x0[None], path.to(x.dtype)]).requires_grad_(True)
        logits = forward(batch).float()
        label = int(logits[0].argmax())
        (gradients,) = torch.autograd.grad(logits[2:, label].sum(), batch)
    attributions = ((x - x0).float() * gradients[2:].float().mean(dim=0)).sum(dim=-1).detach()
    logit, baseline_logit = float(logits[0, label].detach()), float(logits[1, label].detach())
    keep = [index for index, is_special in enumerate(encoded["special_tokens_mask"]) if not is_special]
    kept = [float(attributions[index]) for index in keep]
    tokens = tokenizer.convert_ids_to_tokens([encoded["input_ids"][index] for index in keep])
    return {
        "tokens": tuple(tokens),
        "spans": tuple(
            (int(encoded["offset_mapping"][index][0]), int(encoded["offset_mapping"][index][1])) for index in keep
        ),
        "attributions": tuple(kept),
        "label": str(label_names[label]),
        "logit": logit,
        "baseline_logit": baseline_logit,
        # Special tokens keep their embedding (x = x0), so their attribution is exactly 0.
        "completeness_gap": float(attributions.sum()) - (logit - baseline_logit),
        "steps": steps,
        "method": IG_METHOD.format(steps=steps),
    }


def _eager_logits(model: Any, batch: torch.Tensor) -> torch.Tensor:
    """transformers' forward from ``inputs_embeds`` (every row unpadded), with eager attention for this
    call only; on the inference thread, the only one that touches the model."""
    import torch

    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        return model(inputs_embeds=batch, attention_mask=torch.ones(batch.shape[:2], device=batch.device)).logits
    finally:
        model.set_attn_implementation(previous)


# --- drawing --------------------------------------------------------------------------------------


def overlay_png(image: Image.Image, values: Sequence[float], grid: tuple[int, int]) -> bytes:
    """``image`` with the row-major heatmap ``values`` of ``grid`` laid over it: scaled to its maximum,
    upscaled bilinearly to the image's size, coloured dark blue (none) to red (most), alpha 0.45. PNG."""
    rows, columns = grid
    if len(values) != rows * columns:
        raise ValueError(f"{len(values)} values for a {rows}x{columns} grid")
    top = max(values) if values and max(values) > 0 else 1.0
    heat = Image.new("F", (columns, rows))
    heat.putdata([float(value) / top * 255.0 for value in values])
    base = image.convert("RGB")
    heat = heat.resize(base.size, Image.Resampling.BILINEAR).convert("L")
    colours = [_ramp(level / 255.0) for level in range(256)]
    coloured = Image.merge("RGB", [heat.point([colour[channel] for colour in colours]) for channel in range(3)])
    blended = Image.blend(base, coloured, OVERLAY_ALPHA)
    buffer = io.BytesIO()
    blended.save(buffer, format="PNG")
    return buffer.getvalue()


def _ramp(position: float) -> tuple[int, int, int]:
    for (start, low), (end, high) in zip(_RAMP, _RAMP[1:], strict=False):
        if position <= end:
            share = (position - start) / (end - start)
            return tuple(round(a + (b - a) * share) for a, b in zip(low, high, strict=True))  # type: ignore[return-value]
    return _RAMP[-1][1]
