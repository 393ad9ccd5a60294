"""Prism's unpadded DistilBERT forward (text_classification.py) against transformers', on tiny checkpoints."""

from __future__ import annotations

import pytest
import torch

from webapp.inference import text_classification
from webapp.inference.packed_linear import padded_row_count
from webapp.inference.transformers_backend import length_buckets, load_embedding_model, load_sentiment_model

TEXTS = [
    "fine",
    "the food was great and the staff were friendly",
    "terrible, it broke after one day and nobody answered my emails for a week",
    "快递很快，包装完好",
    "ok",
    "the service was great " * 400,  # truncated to the model's length
    "物流太慢了，客服也不回复，非常失望",
]


def _no_progress(state, fraction, detail) -> None:
    pass


def _logits_by_transformers(model, texts) -> torch.Tensor:
    """One padded forward per text: transformers' own arithmetic, with no padding to get wrong."""
    rows = []
    for text in texts:
        encoded = model.tokenizer(text, truncation=True, max_length=model.max_length, return_tensors="pt")
        with torch.inference_mode():
            rows.append(model.model(**encoded).logits.float()[0])
    return torch.stack(rows)


@pytest.mark.parametrize("max_batch", [1, 3, 32])
def test_unpadded_logits_equal_transformers_in_float32(make_settings, max_batch):
    """Every text's logits, whatever the length buckets, equal a lone transformers forward to rounding."""
    model = load_sentiment_model(make_settings(precision="fp32"), _no_progress)
    assert model.fast_classifier is not None
    token_ids = model.tokenizer(TEXTS, truncation=True, max_length=model.max_length)["input_ids"]
    lengths = [len(ids) for ids in token_ids]
    assert max(lengths) == model.max_length and min(lengths) < 5  # truncation and very short texts included
    assert padded_row_count(sum(lengths)) > sum(lengths)  # filler rows are computed alongside
    buckets = length_buckets(lengths, max_batch=max_batch)

    actual = model.fast_classifier.logits(token_ids, buckets)

    torch.testing.assert_close(actual, _logits_by_transformers(model, TEXTS), atol=2e-5, rtol=1e-5)


def test_classify_gives_the_same_probabilities_with_and_without_the_fast_path(make_settings):
    fast = load_sentiment_model(make_settings(precision="fp32"), _no_progress)
    plain = load_sentiment_model(make_settings(precision="fp32", fast_path="off"), _no_progress)
    assert fast.fast_classifier is not None and plain.fast_classifier is None

    for mine, theirs in zip(fast.classify(TEXTS), plain.classify(TEXTS), strict=True):
        assert list(mine) == list(theirs) == ["negative", "neutral", "positive"]
        assert all(abs(mine[label] - theirs[label]) < 1e-5 for label in mine)


def test_bf16_probabilities_stay_close_to_transformers_bf16(make_settings):
    fast = load_sentiment_model(make_settings(precision="bf16"), _no_progress)
    plain = load_sentiment_model(make_settings(precision="bf16", fast_path="off"), _no_progress)
    for mine, theirs in zip(fast.classify(TEXTS), plain.classify(TEXTS), strict=True):
        assert all(abs(mine[label] - theirs[label]) < 0.02 for label in mine)


def test_other_architectures_and_int8_keep_the_transformers_forward(make_settings):
    quantised = load_sentiment_model(make_settings(precision="int8"), _no_progress)
    assert quantised.fast_classifier is None
    assert text_classification.unsupported_reason(quantised.model) == "the model is quantised"

    encoder = load_embedding_model(make_settings(), _no_progress)
    assert "not a DistilBertForSequenceClassification" in text_classification.unsupported_reason(encoder.model)


def test_a_distilbert_with_another_activation_is_refused(make_settings):
    model = load_sentiment_model(make_settings(precision="fp32"), _no_progress)
    model.model.config.activation = "relu"
    assert "relu" in text_classification.unsupported_reason(model.model)


def test_logits_from_embeddings_equal_transformers_and_carry_gradients(make_settings):
    """The integrated-gradients forward ([CLS]-only last block) gives transformers' logits for equal-length
    rows of word embeddings, in float32, and its gradients reach the embeddings."""
    model = load_sentiment_model(make_settings(precision="fp32"), _no_progress)
    ids = model.tokenizer(["the food was great and the staff were friendly"] * 3, return_tensors="pt")["input_ids"]
    embeds = model.model.get_input_embeddings()(ids).detach() * torch.tensor([1.0, 0.5, 0.0])[:, None, None]

    with torch.inference_mode():
        expected = model.model(inputs_embeds=embeds).logits
    with torch.enable_grad():
        inputs = embeds.clone().requires_grad_(True)
        actual = text_classification.logits_from_embeddings(model.model, inputs)
        actual[:, 0].sum().backward()

    torch.testing.assert_close(actual.detach(), expected, atol=2e-5, rtol=1e-5)
    assert inputs.grad is not None and inputs.grad.abs().sum(dim=-1).gt(0).all()


def test_padded_row_counts_repeat_and_waste_little():
    """Token counts map to few sizes (so oneDNN's kernels are built once per size), never fewer rows,
    and at most 12.5% more from 129 rows up."""
    sizes = {count: padded_row_count(count) for count in range(1, 16385)}
    assert all(size >= count for count, size in sizes.items())
    assert len(set(sizes.values())) <= 80
    assert max((size - count) / count for count, size in sizes.items() if count > 128) <= 0.125
    assert padded_row_count(720) == 768 and padded_row_count(768) == 768 and padded_row_count(5) == 8
    with pytest.raises(ValueError):
        padded_row_count(0)
