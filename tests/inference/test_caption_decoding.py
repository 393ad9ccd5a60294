"""Prism's own caption decoding (caption_decoding.py) against generate(), on the tiny ViT-GPT2 checkpoint.

The claim under test is exactness: in float32, every supported combination of generation settings gives
the token ids generate() gives, including captions that end early (EOS), where beam search keeps
finished hypotheses and its early-stop heuristic decides when to stop.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image
from transformers.activations import GELUActivation

from webapp.inference import caption_decoding, transformers_backend
from webapp.inference.caption_decoding import DecodingRules, GPT2CaptionDecoder, packed_vit_forward
from webapp.inference.packed_linear import DynamicInt8Linear, PackedLinear, PackedLinearModule
from webapp.inference.transformers_backend import load_caption_model


def _no_progress(state, fraction, detail) -> None:
    pass


def _noise_images(count: int) -> list[Image.Image]:
    generator = np.random.default_rng(7)
    sizes = [(40 + 9 * index, 30 + 13 * index) for index in range(count)]
    return [Image.fromarray(generator.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


@pytest.fixture
def ending_captioner(make_settings):
    """The tiny checkpoint in float32, changed so that EOS competes with the token it writes most.

    The tiny builder zeroes EOS's output row, so its captions run to full length. Here the output layer
    is untied from the input embeddings and EOS's row becomes that token's row plus a little noise: EOS
    then wins at some steps and loses at others (the tests check that some captions end early).
    """
    model = load_caption_model(make_settings(precision="fp32"), _no_progress)
    pixel_values = torch.from_numpy(np.stack([model.prepare(image) for image in _noise_images(6)]))
    with torch.inference_mode():
        written = model.model.generate(pixel_values=pixel_values, num_beams=1, max_new_tokens=12)[:, 1:]
    tokens, counts = written.unique(return_counts=True)
    favourite = int(tokens[counts.argmax()])
    head = model.model.decoder.get_output_embeddings()
    rows = head.weight.detach().clone()
    eos = model.model.generation_config.eos_token_id
    noise = torch.randn(rows.shape[1], generator=torch.Generator().manual_seed(0))
    rows[eos] = rows[favourite] + noise * rows.std() * 0.05
    head.weight = torch.nn.Parameter(rows)
    return model, pixel_values


def _both(model, pixel_values, **generate_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    kwargs = {"max_new_tokens": 12, **generate_kwargs}
    with torch.inference_mode():
        expected = model.model.generate(pixel_values=pixel_values, **kwargs)
    decoder = GPT2CaptionDecoder(model.model, torch.float32)
    actual = decoder.generate(pixel_values, DecodingRules.of(model.model.generation_config, kwargs))
    return expected, actual


def _ended_by_eos(sequences: torch.Tensor, eos: int) -> int:
    """Rows whose caption ended with EOS (before max_new_tokens)."""
    return sum(bool((row[1:] == eos).any()) for row in sequences)


@pytest.mark.parametrize(
    "generate_kwargs",
    [
        {"num_beams": 1},
        {"num_beams": 4},
        {"num_beams": 3, "length_penalty": 0.5},
        {"num_beams": 3, "length_penalty": -0.5},
        {"num_beams": 4, "early_stopping": True},
        {"num_beams": 2, "early_stopping": "never"},
        {"num_beams": 4, "min_new_tokens": 5},
        {"num_beams": 1, "min_new_tokens": 5},
    ],
    ids=lambda kwargs: ",".join(f"{key}={value}" for key, value in kwargs.items()),
)
def test_captions_that_end_early_match_generate_exactly(ending_captioner, generate_kwargs):
    model, pixel_values = ending_captioner
    expected, actual = _both(model, pixel_values, **generate_kwargs)

    eos = model.model.generation_config.eos_token_id
    assert _ended_by_eos(expected, eos) > 0, "the fixture must end captions with EOS"
    assert actual.shape == expected.shape
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_fixed_length_captions_as_the_bench_decodes_match_generate(make_settings, num_beams):
    """The bench's decoding: exactly 16 new tokens (EOS suppressed until then), greedy and beam 4."""
    model = load_caption_model(make_settings(precision="fp32"), _no_progress)
    pixel_values = torch.from_numpy(np.stack([model.prepare(image) for image in _noise_images(5)]))
    expected, actual = _both(model, pixel_values, num_beams=num_beams, min_new_tokens=16, max_new_tokens=16)
    assert expected.shape == (5, 17)
    assert torch.equal(actual, expected)


def test_the_loader_decodes_supported_checkpoints_itself_and_captions_stay_the_same(make_settings):
    """PRISM_FAST_PATH=auto picks Prism's loop for ViT-GPT2; "off" keeps generate(); the same captions."""
    images = _noise_images(4)
    fast = load_caption_model(make_settings(precision="fp32", caption_num_beams=3), _no_progress)
    plain = load_caption_model(make_settings(precision="fp32", caption_num_beams=3, fast_path="off"), _no_progress)
    assert (fast.decoder_name, plain.decoder_name) == ("prism", "generate")
    assert fast.caption(images) == plain.caption(images)


def test_bf16_captions_come_from_prism_decoding_and_agree_with_generate_in_bf16(make_settings):
    """In bf16 the two loops round differently in places; on the tiny model the captions still agree."""
    images = _noise_images(4)
    fast = load_caption_model(make_settings(precision="bf16", caption_num_beams=4), _no_progress)
    plain = load_caption_model(make_settings(precision="bf16", caption_num_beams=4, fast_path="off"), _no_progress)
    assert fast.decoder_name == "prism"
    assert fast.caption(images) == plain.caption(images)


def test_an_unknown_decoder_setting_is_refused_at_load(make_settings):
    with pytest.raises(ValueError, match="PRISM_FAST_PATH"):
        load_caption_model(make_settings(fast_path="onnx"), _no_progress)


@pytest.mark.parametrize(
    ("generate_kwargs", "reason"),
    [
        ({"repetition_penalty": 1.3}, "repetition_penalty"),
        ({"no_repeat_ngram_size": 3}, "no_repeat_ngram_size"),
        ({"do_sample": True}, "do_sample"),
        ({"num_return_sequences": 2, "num_beams": 2}, "num_return_sequences"),
    ],
)
def test_settings_it_does_not_implement_fall_back_to_generate(make_settings, generate_kwargs, reason):
    model = load_caption_model(make_settings(precision="fp32"), _no_progress)
    assert caption_decoding.unsupported_reason(model.model, {}) is None
    assert reason in caption_decoding.unsupported_reason(model.model, generate_kwargs)

    model.generate_kwargs.update(generate_kwargs)
    assert model.decoder_name == "generate"


def test_sampling_fields_without_sampling_change_nothing(make_settings):
    """A checkpoint may carry temperature/top_k for sampling; without do_sample they are ignored."""
    model = load_caption_model(make_settings(precision="fp32"), _no_progress)
    assert caption_decoding.unsupported_reason(model.model, {"temperature": 0.7, "top_k": 5}) is None


def test_blip_and_quantised_models_keep_generate(make_settings, blip_dir):
    blip = load_caption_model(make_settings(caption_model=str(blip_dir)), _no_progress)
    assert blip.fast_decoder is None and blip.decoder_name == "generate"
    assert "not a VisionEncoderDecoderModel" in caption_decoding.unsupported_reason(blip.model, {})

    quantised = load_caption_model(make_settings(precision="int8", fast_path="off"), _no_progress)
    assert quantised.fast_decoder is None
    assert caption_decoding.unsupported_reason(quantised.model, {}) == "the decoder is quantised"


def test_int8_decodes_with_int8_decoder_weights_and_a_float_encoder(make_settings):
    """PRISM_PRECISION=int8 on the fast path: int8 linear layers in the decoder only, recorded as int8."""
    model = load_caption_model(make_settings(precision="int8", caption_num_beams=4), _no_progress)
    assert model.precision == "int8" and model.decoder_name == "prism"
    assert model.dtype in (torch.bfloat16, torch.float32)  # the encoder's format
    assert model.fast_decoder.compute_dtype == torch.float32
    assert all(isinstance(layer.fc, DynamicInt8Linear) for layer in model.fast_decoder.layers)
    captions = model.caption(_noise_images(3))
    assert len(captions) == 3 and all(isinstance(text, str) and text for text in captions)


def test_int8_decoder_steps_track_float32_logits(make_settings):
    """Int8 weights change the logits a little, not the function: same first-step ranking head, close values."""
    model = load_caption_model(make_settings(precision="fp32"), _no_progress)
    exact = GPT2CaptionDecoder(model.model, torch.float32)
    approximate = GPT2CaptionDecoder(model.model, torch.float32, int8_weights=True)
    pixel_values = torch.from_numpy(np.stack([model.prepare(image) for image in _noise_images(3)]))
    start = torch.full((3,), model.model.generation_config.decoder_start_token_id)
    with torch.inference_mode():
        logits = [
            decoder.step(start, 0, decoder._new_cache(3, 4, start.device), decoder.encode(pixel_values), beams=1)
            for decoder in (exact, approximate)
        ]
    similarity = torch.nn.functional.cosine_similarity(logits[0], logits[1], dim=-1)
    assert bool((similarity > 0.99).all()), similarity
    assert torch.equal(logits[0].argmax(dim=-1), logits[1].argmax(dim=-1))


@pytest.mark.parametrize(("native_bf16", "expected"), [(True, "int8"), (False, "fp32")])
def test_auto_precision_picks_int8_decoder_weights_on_cpus_with_native_bf16(
    make_settings, monkeypatch, native_bf16, expected
):
    monkeypatch.setattr(transformers_backend, "cpu_has_native_bf16", lambda: native_bf16)
    model = load_caption_model(make_settings(precision="auto", device="cpu"), _no_progress)
    assert model.precision == expected
    assert model.dtype == (torch.bfloat16 if native_bf16 else torch.float32)


def test_prepacked_linear_layers_compute_what_f_linear_computes():
    """The oneDNN-prepacked weights give F.linear's results (bf16: identical; fp32: to rounding)."""
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(48, 32, generator=generator), torch.randn(48, generator=generator)
    inputs = torch.randn(5, 32, generator=generator)
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 0.0)):
        layer = PackedLinear(weight.to(dtype), bias.to(dtype))
        expected = torch.nn.functional.linear(inputs.to(dtype), weight.to(dtype), bias.to(dtype))
        torch.testing.assert_close(layer(inputs.to(dtype)), expected, atol=tolerance, rtol=tolerance or 1.6e-2)


def test_int8_linear_applies_its_gelu_like_f_gelu_on_the_int8_product():
    """An int8 layer's fused GELU (computed in place) is F.gelu of the same layer's plain int8 product."""
    weight, bias, inputs = torch.randn(48, 32) * 0.1, torch.randn(48) * 0.1, torch.randn(5, 32)
    plain = DynamicInt8Linear(weight, bias)
    for activation, approximate in (("gelu", "none"), ("gelu_tanh", "tanh")):
        fused = DynamicInt8Linear(weight, bias, activation)
        torch.testing.assert_close(fused(inputs), F.gelu(plain(inputs), approximate=approximate), atol=0, rtol=0)


def test_prepacked_linear_plus_adds_the_residual_inside_the_product():
    """``plus`` is ``layer(x) + residual`` (bf16: to one rounding; fp32 unpacked: exactly that sum)."""
    weight, bias, inputs, residual = torch.randn(48, 32), torch.randn(48), torch.randn(5, 32), torch.randn(5, 48)
    for dtype in (torch.float32, torch.bfloat16):
        layer = PackedLinear(weight.to(dtype), bias.to(dtype))
        expected = (F.linear(inputs, weight, bias) + residual).to(dtype)
        found = layer.plus(inputs.to(dtype), residual.to(dtype))
        torch.testing.assert_close(found.float(), expected.float(), atol=0.1, rtol=2e-2)
    with pytest.raises(ValueError):
        PackedLinear(weight, bias, "gelu").plus(inputs, residual)


def test_a_bf16_encoder_gets_prepacked_layers_with_the_same_outputs(make_settings):
    """bf16 on the fast path: the encoder's linear layers are prepacked (GELU fused); outputs unchanged."""
    packed = load_caption_model(make_settings(precision="bf16"), _no_progress)
    plain = load_caption_model(make_settings(precision="bf16", fast_path="off"), _no_progress)
    assert any(isinstance(module, PackedLinearModule) for module in packed.model.encoder.modules())
    assert not any(isinstance(module, torch.nn.Linear) for module in packed.model.encoder.modules())
    # Every GELU that followed a linear layer is fused into it (transformers' ViT blocks: fc1, then GELU).
    assert not any(isinstance(module, GELUActivation) for module in packed.model.encoder.modules())
    fused = [module for module in packed.model.encoder.modules() if isinstance(module, PackedLinearModule)]
    gelu_layers = [module for module in fused if module.linear.activation == "gelu"]
    assert len(gelu_layers) == packed.model.encoder.config.num_hidden_layers
    pixel_values = torch.from_numpy(np.stack([packed.prepare(image) for image in _noise_images(2)])).bfloat16()
    assert packed.fast_decoder.packed_vit and not plain.fast_decoder
    with torch.inference_mode():
        outputs = [model.model.encoder(pixel_values=pixel_values).last_hidden_state for model in (packed, plain)]
        # The decoder's own forward over the packed blocks (residual additions fused) computes the same.
        outputs.append(packed_vit_forward(packed.model.encoder, pixel_values))
    torch.testing.assert_close(outputs[0], outputs[1], atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(outputs[2], outputs[1], atol=2e-2, rtol=2e-2)
