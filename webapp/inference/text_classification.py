"""DistilBERT sequence classification without padding in its linear layers.

Why: a batch of texts of different lengths is padded to its longest, and every padded token goes
through every linear layer, which is most of the work. Length buckets (``length_buckets``) keep the
padding under half the real tokens, and on the bench's mix of Chinese and English texts that is still
30% more tokens than the texts have. Here the tokens of all texts are laid end to end, so the linear
layers see only real tokens; only attention, which must keep texts apart, works per length bucket on
padded blocks with a key mask, as transformers does. The linear layers are oneDNN-prepacked, the
query/key/value projections one matrix, and the GELU fused into the first feed-forward layer. The
token count is padded to a size that repeats (``padded_row_count``) so that oneDNN's kernels for it
are built once, not for nearly every batch.

The arithmetic is DistilBERT's (``modeling_distilbert.py`` in transformers 5): tested equal to
``DistilBertForSequenceClassification`` within float32 rounding. Other architectures keep transformers'
forward (``unsupported_reason``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)

from .packed_linear import PackedLinear, is_quantised, padded_row_count


def unsupported_reason(model: Any) -> str | None:
    """Why ``model`` must keep transformers' forward (None: this module computes it)."""
    if type(model).__name__ != "DistilBertForSequenceClassification":
        return f"{type(model).__name__} is not a DistilBertForSequenceClassification"
    if model.config.activation != "gelu":
        return f"DistilBERT activation {model.config.activation!r} is not gelu"
    if any(is_quantised(module) for module in model.modules()):
        return "the model is quantised"
    return None


class UnpaddedDistilBertClassifier:
    """Logits of a loaded ``DistilBertForSequenceClassification`` for token-id lists of any lengths.

    Shares the model's embedding and LayerNorm modules; copies its linear layers, prepacked, in
    ``dtype``. Not thread-safe: one inference thread calls ``logits``.
    """

    def __init__(self, model: Any, dtype: torch.dtype) -> None:
        self.dtype = dtype
        config = model.config
        self.heads = config.n_heads
        self.head_size = config.dim // config.n_heads
        self.embed = config.dim
        self.embeddings = model.distilbert.embeddings
        self.layers = []
        for block in model.distilbert.transformer.layer:
            attention = block.attention
            qkv_weight = torch.cat([attention.q_lin.weight, attention.k_lin.weight, attention.v_lin.weight])
            qkv_bias = torch.cat([attention.q_lin.bias, attention.k_lin.bias, attention.v_lin.bias])
            self.layers.append(
                (
                    PackedLinear(qkv_weight.detach().to(dtype), qkv_bias.detach().to(dtype)),
                    _packed(attention.out_lin, dtype),
                    block.sa_layer_norm,
                    _packed(block.ffn.lin1, dtype, activation="gelu"),
                    _packed(block.ffn.lin2, dtype),
                    block.output_layer_norm,
                )
            )
        self.pre_classifier = _packed(model.pre_classifier, dtype)
        self.classifier = _packed(model.classifier, dtype)

    def logits(self, token_ids: Sequence[Sequence[int]], buckets: Sequence[Sequence[int]]) -> torch.Tensor:
        """Float32 logits [texts, labels] in the order of ``token_ids``.

        ``buckets`` groups text indices for attention (each group padded to its longest text); every
        text must be in exactly one group.
        """
        lengths = [len(ids) for ids in token_ids]
        starts = [0]
        for length in lengths[:-1]:
            starts.append(starts[-1] + length)
        # Filler rows (token 0 at position 0) up to a size that repeats (padded_row_count): computed, never read.
        tokens = sum(lengths)
        filler = [0] * (padded_row_count(tokens) - tokens)
        flat_ids = torch.tensor([token for ids in token_ids for token in ids] + filler, dtype=torch.long)
        positions = torch.tensor(
            [position for length in lengths for position in range(length)] + filler, dtype=torch.long
        )
        blocks = [_AttentionBlock(group, lengths, starts) for group in buckets]
        with torch.inference_mode():
            hidden = self.embeddings(flat_ids[None], position_ids=positions[None])[0].to(self.dtype)  # [tokens, dim]
            for qkv, attention_out, attention_norm, feed_forward_in, feed_forward_out, output_norm in self.layers:
                attended = self._attention(qkv(hidden), blocks)
                hidden = attention_norm(attention_out(attended) + hidden)
                hidden = output_norm(feed_forward_out(feed_forward_in(hidden)) + hidden)
            pooled = F.relu(self.pre_classifier(hidden[torch.tensor(starts)]))  # each text's first ([CLS]) token
            return self.classifier(pooled).float()

    def _attention(self, qkv: torch.Tensor, blocks: list[_AttentionBlock]) -> torch.Tensor:
        """Multi-head self-attention of every text over its own tokens: [tokens, 3 x dim] -> [tokens, dim]."""
        output = torch.zeros((qkv.shape[0], self.embed), dtype=qkv.dtype)  # filler rows stay zero
        for block in blocks:
            padded = qkv[block.gather].view(block.texts, block.width, 3, self.heads, self.head_size)
            query, key, value = padded.permute(2, 0, 3, 1, 4)  # each [texts, heads, width, head_size]
            attended = F.scaled_dot_product_attention(query, key, value, attn_mask=block.key_mask)
            attended = attended.transpose(1, 2).reshape(block.texts * block.width, self.embed)
            output[block.scatter] = attended[block.real]
        return output


class _AttentionBlock:
    """Where one length bucket's texts sit in the flat token sequence, padded to its longest text."""

    def __init__(self, group: Sequence[int], lengths: Sequence[int], starts: Sequence[int]) -> None:
        self.texts = len(group)
        self.width = max(lengths[index] for index in group)
        gather, real, scatter = [], [], []
        for row, index in enumerate(group):
            for position in range(self.width):
                if position < lengths[index]:
                    gather.append(starts[index] + position)
                    real.append(row * self.width + position)
                    scatter.append(starts[index] + position)
                else:
                    gather.append(starts[index])  # any real token: its result is masked out and dropped
        self.gather = torch.tensor(gather)
        self.real = torch.tensor(real)
        self.scatter = torch.tensor(scatter)
        valid = torch.tensor([[position < lengths[index] for position in range(self.width)] for index in group])
        self.key_mask = valid[:, None, None, :]  # [texts, 1, 1, width]: padded keys get no attention


def _packed(linear: torch.nn.Linear, dtype: torch.dtype, activation: str = "none") -> PackedLinear:
    return PackedLinear(linear.weight.detach().to(dtype), linear.bias.detach().to(dtype), activation)


def logits_from_embeddings(model: Any, inputs_embeds: torch.Tensor) -> torch.Tensor:
    """``model(inputs_embeds=...).logits`` of a ``DistilBertForSequenceClassification`` (``unsupported_reason``
    None) for rows of equal length with no padding, differentiable: it runs the model's own modules, so
    integrated gradients (``explanations.integrated_gradients``) take their gradients through it.

    The arithmetic of transformers' eager forward without an attention mask, except that the last block
    computes only the [CLS] row, the only one the classifier reads: its other rows' query, attention
    output and feed-forward never reach the logits. That is about a seventh of the work, forward and
    backward. Tested equal to transformers' forward within float32 rounding.
    """
    embeddings = model.distilbert.embeddings
    rows, tokens, width = inputs_embeds.shape
    positions = embeddings.position_embeddings(torch.arange(tokens, device=inputs_embeds.device))
    hidden = embeddings.LayerNorm(inputs_embeds + positions[None])
    blocks = model.distilbert.transformer.layer
    for index, block in enumerate(blocks):
        attention = block.attention
        heads, size = attention.n_heads, attention.attention_head_size
        queried = hidden[:, :1] if index == len(blocks) - 1 else hidden  # the last block: [CLS] only
        query, key, value = (
            projection(states).view(rows, -1, heads, size).transpose(1, 2)  # [rows, heads, positions, size]
            for projection, states in ((attention.q_lin, queried), (attention.k_lin, hidden), (attention.v_lin, hidden))
        )
        weights = (torch.matmul(query, key.transpose(2, 3)) * attention.scaling).softmax(dim=-1)
        attended = torch.matmul(weights, value).transpose(1, 2).reshape(rows, -1, width)
        hidden = block.sa_layer_norm(attention.out_lin(attended) + queried)
        feed_forward = block.ffn
        hidden = block.output_layer_norm(feed_forward.lin2(feed_forward.activation(feed_forward.lin1(hidden))) + hidden)
    return model.classifier(F.relu(model.pre_classifier(hidden[:, 0])))
