"""The joint image-text (CLIP-style) agreement model: a tiny random CLIPModel loaded through the app's
loader, the service slot around it, and the fake backend's stand-in."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from tiny_models import CLIP_MAX_POSITIONS, clip_cosine, tiny_settings
from transformers import BertTokenizer, ChineseCLIPImageProcessorPil, ChineseCLIPModel

from tests.conftest import make_app
from webapp.fusion import cosine
from webapp.inference.fake import FAKE_AGREEMENT_MAX_TOKENS
from webapp.inference.service import ModelService
from webapp.inference.transformers_backend import load_agreement_model
from webapp.inference.types import ImageTextSimilarity, ModelState, ModelUnavailable


def _no_progress(*report) -> None:
    return None


def _norm(vector) -> float:
    return math.sqrt(sum(value * value for value in vector))


@pytest.fixture
def clip_service(tmp_path, tiny_clip_dir):
    service = ModelService(tiny_settings(tmp_path / "models", agreement_model=str(tiny_clip_dir)))
    yield service
    service.close()


def test_tiny_clip_cosine_through_the_service_equals_the_models_own(clip_service, tiny_clip_dir):
    """The service's similarity is the cosine of CLIPModel's own image and text features; both vectors are unit."""
    image = Image.new("RGB", (48, 40), (200, 30, 30))

    result = clip_service.image_text_similarity(image, "a red car parked on the street")

    assert isinstance(result, ImageTextSimilarity)
    assert result.similarity == pytest.approx(clip_cosine(tiny_clip_dir, image, "a red car parked on the street"))
    assert _norm(result.image_vector) == pytest.approx(1.0) and _norm(result.text_vector) == pytest.approx(1.0)
    assert len(result.image_vector) == len(result.text_vector) == 32
    assert result.similarity == pytest.approx(cosine(result.image_vector, result.text_vector))
    assert result.model_id == tiny_clip_dir.name and result.revision.startswith("sha256:")
    assert result.precision == "fp32" and not result.truncated


def test_a_text_longer_than_the_position_table_is_cut_to_its_start(tiny_clip_dir):
    """A long text is truncated to the model's positions (no indexing error), and the result says so."""
    settings = tiny_settings(tiny_clip_dir.parent / "unused", agreement_model=str(tiny_clip_dir))
    model = load_agreement_model(settings, _no_progress)
    image = Image.new("RGB", (32, 32), "blue")
    long_text = "two people walking on a sunny beach " * 10

    [row] = model.similarity_prepared([(model.prepare(image), long_text)])

    assert model.max_length == CLIP_MAX_POSITIONS
    assert row["text_tokens"] > row["max_text_tokens"] == CLIP_MAX_POSITIONS
    assert row["similarity"] == pytest.approx(clip_cosine(tiny_clip_dir, image, long_text), abs=1e-5)


def test_pairs_batched_together_get_the_similarity_they_get_alone(tiny_clip_dir):
    """Texts of different lengths padded into one batch score as they do alone (padding is masked)."""
    settings = tiny_settings(tiny_clip_dir.parent / "unused", agreement_model=str(tiny_clip_dir))
    model = load_agreement_model(settings, _no_progress)
    pairs = [
        (model.prepare(Image.new("RGB", (32, 32), colour)), text)
        for colour, text in (("red", "a cat"), ("green", "a dog running in the park"), ("blue", "thanks"))
    ]

    together = model.similarity_prepared(pairs)

    for pair, row in zip(pairs, together, strict=True):
        assert row["similarity"] == pytest.approx(model.similarity_prepared([pair])[0]["similarity"], abs=1e-5)


def test_the_agreement_slot_exists_only_when_configured_and_loads_once(tmp_path, clip_service):
    """Unset, the service has no agreement model; set, it is listed with the others and loaded once."""
    plain = ModelService(tiny_settings(tmp_path / "plain"))
    assert not plain.compares_images_with_text
    assert "agreement" not in [status.kind for status in plain.statuses()]
    with pytest.raises(RuntimeError, match="PRISM_AGREEMENT_MODEL"):
        plain.image_text_similarity(Image.new("RGB", (8, 8)), "text")
    plain.close()

    assert clip_service.compares_images_with_text
    assert [status.kind for status in clip_service.statuses()][-1] == "agreement"
    for _ in range(2):
        clip_service.image_text_similarity(Image.new("RGB", (8, 8)), "a cat")
    assert clip_service.agreement_slot.load_count == 1
    assert clip_service.agreement_slot.status().state is ModelState.READY


def test_a_chinese_clip_loads_the_same_way_and_gives_its_models_cosine(tiny_chinese_clip_dir):
    """Chinese-CLIP (a BERT text tower with token type ids) loads through the same loader; the cosine is the
    one ChineseCLIPModel's own projected features give."""
    settings = tiny_settings(tiny_chinese_clip_dir.parent / "unused", agreement_model=str(tiny_chinese_clip_dir))
    model = load_agreement_model(settings, _no_progress)
    image, text = Image.new("RGB", (40, 30), (30, 200, 30)), "a dog running in the park"

    [row] = model.similarity_prepared([(model.prepare(image), text)])

    processor = ChineseCLIPImageProcessorPil.from_pretrained(tiny_chinese_clip_dir)
    direct = ChineseCLIPModel.from_pretrained(tiny_chinese_clip_dir, dtype=torch.float32).eval()
    tokens = BertTokenizer.from_pretrained(tiny_chinese_clip_dir)([text], return_tensors="pt")
    with torch.inference_mode():
        image_features = direct.get_image_features(**processor(images=[image], return_tensors="pt")).pooler_output
        text_features = direct.get_text_features(**tokens).pooler_output
    expected = torch.nn.functional.cosine_similarity(image_features, text_features).item()
    assert row["similarity"] == pytest.approx(expected, abs=1e-5)
    assert _norm(row["image_vector"]) == pytest.approx(1.0) and _norm(row["text_vector"]) == pytest.approx(1.0)


def test_a_checkpoint_that_is_not_a_joint_model_is_refused(tmp_path, tiny_embedding_dir):
    """A BERT sentence encoder named as the agreement model fails to load, saying which families work."""
    service = ModelService(tiny_settings(tmp_path / "models", agreement_model=str(tiny_embedding_dir)))

    with pytest.raises(ModelUnavailable) as caught:
        service.image_text_similarity(Image.new("RGB", (8, 8)), "a cat")

    assert caught.value.kind == "agreement" and caught.value.state is ModelState.FAILED
    assert "'bert' is not a supported joint image-text model" in caught.value.detail
    service.close()


def test_the_fake_agreement_model_is_deterministic_and_names_colours(tmp_path):
    """The fake backend matches a text naming the image's colour and not one that does not, every time."""
    service = ModelService(tiny_settings(tmp_path / "models", backend="fake", agreement_model="prism/fake"))
    red = Image.new("RGB", (16, 16), (220, 20, 20))

    matching = service.image_text_similarity(red, "a red screenshot")
    unrelated = service.image_text_similarity(red, "my parcel never arrived")
    long = service.image_text_similarity(red, "word " * (FAKE_AGREEMENT_MAX_TOKENS + 1))

    assert matching.similarity > 0.3 > abs(unrelated.similarity)
    assert service.image_text_similarity(red, "a red screenshot").similarity == matching.similarity
    assert matching.model_id == "prism/fake-agreement" and long.truncated and not matching.truncated
    service.close()


def test_models_check_smoke_tests_the_agreement_model_when_configured(tmp_path):
    """`models check` loads and smoke-tests the joint model with the others; `models pull --only agreement`
    says there is nothing to pull while PRISM_AGREEMENT_MODEL is unset."""
    app = make_app(tmp_path, PRISM_AGREEMENT_MODEL="prism/fake-clip")
    result = app.test_cli_runner().invoke(args=["models", "check", "--timeout", "30"])
    assert result.exit_code == 0, result.output
    assert "agreement: ready" in result.output and "agreement smoke test: 'a red square' 0." in result.output

    (tmp_path / "plain").mkdir()
    plain = make_app(tmp_path / "plain")
    result = plain.test_cli_runner().invoke(args=["models", "pull", "--only", "agreement"])
    assert result.exit_code == 0, result.output
    assert "agreement: PRISM_AGREEMENT_MODEL is not set; nothing to pull" in result.output
