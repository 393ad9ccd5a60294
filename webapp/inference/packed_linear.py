"""Linear layers with their weights prepacked for oneDNN, for Prism's own forward passes.

Why: Prism's decoder steps and unpadded text forwards are bound by reading weights or by many
medium-sized matrix products. Measured on this project's CPU (2 cores, AMX/AVX-512 BF16), on 40
GPT-2-sized weights at 32 rows, the prepacked layout streams them in 12.9 ms against 19.9 ms for
``F.linear``; at 720 rows (a sentiment batch) 1.50 ms against 1.67 ms per 768x3072 product. The
arithmetic is the same; a fused GELU is computed before rounding to the output's precision.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)

_ACTIVATIONS = {"none", "gelu", "gelu_tanh"}


def _has_onednn_linear() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def is_quantised(module: torch.nn.Module) -> bool:
    """A module replaced by dynamic quantisation (PRISM_PRECISION=int8), which these paths do not run."""
    return "quantized" in type(module).__module__


def padded_row_count(rows: int) -> int:
    """``rows`` rounded up to one of 16 sizes per power of two (multiples of 8 up to 128, of 16 up to
    256, ...): at most 12.5% more rows, about 3% on average.

    Why: oneDNN builds (JIT-compiles) a kernel for each new row count and caches it; measured here, the
    first product at a new count took 6.7 ms instead of 2.0 (768x2304) and 15.7 instead of 2.8
    (3072x768). Unpadded text batches have a new token count almost every time, so a forward whose rows
    vary pads them to these sizes, which repeat.
    """
    if rows <= 0:
        raise ValueError("rows must be positive")
    granule = max(8, 1 << max(0, (rows - 1).bit_length() - 4))
    return -(-rows // granule) * granule


class PackedLinear:
    """``activation(F.linear(x, weight, bias))``, prepacked where torch can (CPU, float32/bfloat16)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none") -> None:
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, not {activation!r}")
        self.bias = bias
        self.activation = activation
        self.packed = None
        if weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.bfloat16) and _has_onednn_linear():
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight)
        self.weight = None if self.packed is not None else weight

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            if self.activation == "none":
                return torch.ops.mkldnn._linear_pointwise(inputs, self.packed, self.bias, "none", [], "")
            algorithm = "tanh" if self.activation == "gelu_tanh" else "none"
            return torch.ops.mkldnn._linear_pointwise(inputs, self.packed, self.bias, "gelu", [], algorithm)
        outputs = F.linear(inputs, self.weight, self.bias)
        if self.activation == "none":
            return outputs
        return F.gelu(outputs, approximate="tanh" if self.activation == "gelu_tanh" else "none")

    def plus(self, inputs: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``self(inputs) + residual`` (no activation), the addition fused into the product when prepacked."""
        if self.activation != "none":
            raise ValueError("plus() is for a linear layer without activation")
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(inputs, residual, self.packed, self.bias, "add")
        return F.linear(inputs, self.weight, self.bias) + residual


class DynamicInt8Linear:
    """``activation(x @ W^T + b)`` with W in int8 (one scale per tensor) and x quantised per call.

    The weights are prepacked for oneDNN's int8 kernels (AMX / VNNI), which torch's default "x86"
    engine does not pick for dynamic linear layers here: measured on 40 GPT-2-sized weights, at 32 rows
    7.1 ms against 10.7 ms for prepacked bf16 and 11.5 ms for the default engine; at 8 rows 5.2 ms
    against 9.3 and 6.6. Inputs and outputs are float32. Quantisation is what
    ``torch.ao.quantization.quantize_dynamic`` does by default (symmetric, per tensor).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none") -> None:
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, not {activation!r}")
        self.activation = activation
        weight = weight.detach().float()
        scale = max(float(weight.abs().max()) / 127.0, 1e-12)
        with warnings.catch_warnings():  # torch 2.13 marks quantised tensors deprecated, with no replacement yet
            warnings.simplefilter("ignore", UserWarning)
            quantised = torch.quantize_per_tensor(weight, scale, 0, torch.qint8)
        with _quantised_engine(_INT8_ENGINE):
            self.packed = torch.ops.quantized.linear_prepack(quantised, None if bias is None else bias.detach().float())

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        outputs = torch.ops.quantized.linear_dynamic(inputs, self.packed, False)
        if self.activation == "none":
            return outputs
        # In place on the fresh product: no second [rows, out] tensor (for GPT-2's 12 feed-forward layers
        # at 32 rows, 5.4 against 6.5 ms per decoder step; the same values).
        return torch.ops.aten.gelu_(outputs, approximate="tanh" if self.activation == "gelu_tanh" else "none")


_INT8_ENGINE = "onednn"


def int8_supported() -> bool:
    """Whether this torch build has the oneDNN quantised engine (x86 builds do)."""
    return _INT8_ENGINE in torch.backends.quantized.supported_engines


class _quantised_engine:  # noqa: N801 (used as a context manager, like torch's own)
    """Prepack under ``engine``: the packed weights keep their kernels whatever the global engine is later."""

    def __init__(self, engine: str) -> None:
        self.engine = engine

    def __enter__(self) -> None:
        self.previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = self.engine

    def __exit__(self, *exc_info) -> None:
        torch.backends.quantized.engine = self.previous


class PackedLinearModule(torch.nn.Module):
    """An ``nn.Linear`` (optionally followed by GELU) as a module whose weight is prepacked for oneDNN."""

    def __init__(self, linear: torch.nn.Linear, activation: str = "none") -> None:
        super().__init__()
        bias = None if linear.bias is None else linear.bias.detach()
        self.linear = PackedLinear(linear.weight.detach(), bias, activation)
        self.out_features = linear.out_features

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        leading = inputs.shape[:-1]
        return self.linear(inputs.reshape(-1, inputs.shape[-1])).view(*leading, self.out_features)


# (linear, activation) attribute pairs where transformers applies an exact GELU right after a linear
# layer: ViT and BERT before transformers 5.x's refactors ("intermediate"), ViT/CLIP/BLIP "MLP" blocks.
_GELU_AFTER_LINEAR = (("dense", "intermediate_act_fn"), ("fc1", "activation_fn"))


def pack_linear_layers(module: torch.nn.Module) -> int:
    """Replace every bf16 ``nn.Linear`` under ``module`` by a prepacked one, fusing an exact GELU that
    directly follows one (``_GELU_AFTER_LINEAR``); returns how many linear layers were replaced.

    bf16 only: for float32 at the encoder's sizes the prepacked layout was slower (178 against 107 ms
    per image for a ViT-base encoder), in bf16 faster (23.9 against 25.3).
    """
    from transformers.activations import GELUActivation

    replaced = 0
    for parent in list(module.modules()):
        fused_linear = next(
            (
                linear
                for linear, activation in _GELU_AFTER_LINEAR
                if type(getattr(parent, activation, None)) is GELUActivation
                and isinstance(getattr(parent, linear, None), torch.nn.Linear)
                and getattr(parent, linear).weight.dtype == torch.bfloat16
            ),
            None,
        )
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and child.weight.dtype == torch.bfloat16:
                activation = "gelu" if name == fused_linear else "none"
                setattr(parent, name, PackedLinearModule(child, activation))
                replaced += 1
        if fused_linear is not None:
            activation_name = dict(_GELU_AFTER_LINEAR)[fused_linear]
            setattr(parent, activation_name, torch.nn.Identity())
    return replaced
