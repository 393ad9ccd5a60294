"""The whole app on real (tiny) transformers models from local directories, with the hub switched off."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image
from tiny_models import clip_cosine

from tests.conftest import login, make_app, make_token, make_user, png_bytes, submit
from webapp.extensions import db
from webapp.fusion import JOINT_EMBEDDING
from webapp.models import Analysis


@pytest.fixture(params=["vit_gpt2_dir", "blip_dir"])
def real_app(request, tmp_path, sentiment3_dir, tiny_embedding_dir):
    """An app whose PRISM_*_MODEL settings point at tiny local checkpoints (VisionEncoderDecoder or BLIP)."""
    caption_dir = request.getfixturevalue(request.param)
    app = make_app(
        tmp_path,
        PRISM_MODEL_BACKEND="transformers",
        PRISM_CAPTION_MODEL=str(caption_dir),
        PRISM_SENTIMENT_MODEL=str(sentiment3_dir),
        PRISM_EMBEDDING_MODEL=str(tiny_embedding_dir),
        PRISM_MODEL_OFFLINE=True,
        PRISM_CAPTION_NUM_BEAMS=2,
        PRISM_CAPTION_MAX_NEW_TOKENS=6,
        PRISM_MODEL_LOAD_WAIT=120,
    )
    app.caption_dir = caption_dir
    yield app
    with app.app_context():
        db.engine.dispose()


def test_form_submission_captions_and_classifies_with_local_models(real_app, sentiment3_dir):
    """A browser submission runs the local models (and the packaged OCR) and stores their output with
    ids and revisions."""
    client = real_app.test_client()
    make_user(real_app, "tess", role="teacher")
    login(client, "tess")
    response = submit(client, "education", text="I enjoyed this homework", image=png_bytes((80, 60)))
    assert response.status_code == 302, response.get_data(as_text=True)
    with real_app.app_context():
        record = db.session.scalar(db.select(Analysis))
        assert record.status == "done", record.error
        caption, sentiment = record.prediction("caption"), record.prediction("sentiment")
        assert caption.model_id == real_app.caption_dir.name
        assert sentiment.model_id == sentiment3_dir.name
        assert caption.revision and sentiment.revision
        assert (caption.precision, sentiment.precision) == _expected_precisions(real_app)
        assert isinstance(caption.ai_value, str)
        assert sentiment.label in {"negative", "neutral", "positive"}
        assert abs(sum(sentiment.scores.values()) - 1.0) < 1e-3
        assert record.prediction("ocr").model_id.startswith("rapidocr")
    page = client.get(response.location).get_data(as_text=True)
    assert real_app.caption_dir.name in page and sentiment3_dir.name in page
    assert all(f"<code>{precision}</code>" in page for precision in _expected_precisions(real_app))
    health = client.get("/healthz").get_json()
    states = {model["kind"]: model["state"] for model in health["models"]}
    # A homework photo is read by OCR; the embedding model compares the reflection with the photo.
    assert states == {"caption": "ready", "sentiment": "ready", "ocr": "ready", "embedding": "ready"}


def test_api_predict_with_local_models(real_app, sentiment3_dir):
    """The JSON API answers 201 with every prediction of a service-desk record made by local models:
    the screenshot's text and caption, the message's sentiment, the category and the reply draft."""
    make_user(real_app, "bob")
    token = make_token(real_app, "bob")
    client = real_app.test_client()
    response = client.post(
        "/api/v1/predict",
        json={"scenario": "service", "text": "terrible, broken", "image": base64.b64encode(png_bytes()).decode()},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["status"] == "done"
    by_kind = {prediction["kind"]: prediction for prediction in body["predictions"]}
    assert list(by_kind) == ["ocr", "caption", "sentiment", "category", "reply", "fusion", "agreement"]
    fusion, agreement = by_kind["fusion"], by_kind["agreement"]
    assert fusion["model"] == sentiment3_dir.name and set(fusion["output"]["parts"]) >= {"text", "caption"}
    assert abs(sum(fusion["output"]["scores"].values()) - 1.0) < 1e-3
    assert -1.0 <= agreement["output"]["similarity"] <= 1.0 and agreement["value"] in {"matches", "mismatch"}
    caption, sentiment, category = by_kind["caption"], by_kind["sentiment"], by_kind["category"]
    assert category["model"] == real_app.config["PRISM_EMBEDDING_MODEL"].rsplit("/", 1)[-1]
    assert body["values"]["category"] in category["output"]["scores"] and by_kind["reply"]["output"]["text"]
    assert caption["model"] == real_app.caption_dir.name and sentiment["model"] == sentiment3_dir.name
    assert isinstance(caption["output"]["text"], str) and body["values"]["caption"] == caption["output"]["text"]
    assert (caption["precision"], sentiment["precision"]) == _expected_precisions(real_app)
    assert set(sentiment["output"]["scores"]) == {"negative", "neutral", "positive"}
    assert body["values"]["sentiment"] == sentiment["output"]["label"]


def _expected_precisions(real_app) -> tuple[str, str]:
    """What PRISM_PRECISION=auto resolves to on this machine's CPU, for captions and for sentiment:
    with native bf16, ViT-GPT2 captions decode with int8 decoder weights (BLIP stays bf16) and
    sentiment runs in bf16."""
    from webapp.inference.transformers_backend import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        return ("fp32", "fp32")
    return ("int8" if real_app.caption_dir.name == "vit-gpt2" else "bf16", "bf16")


def test_a_joint_image_text_model_makes_the_agreement(
    tmp_path, vit_gpt2_dir, sentiment3_dir, tiny_embedding_dir, tiny_clip_dir
):
    """With PRISM_AGREEMENT_MODEL a tiny CLIP compares the uploaded image itself with the message: the stored
    similarity is CLIP's own cosine, and the prediction records the method, model, revision and precision."""
    app = make_app(
        tmp_path,
        PRISM_MODEL_BACKEND="transformers",
        PRISM_CAPTION_MODEL=str(vit_gpt2_dir),
        PRISM_SENTIMENT_MODEL=str(sentiment3_dir),
        PRISM_EMBEDDING_MODEL=str(tiny_embedding_dir),
        PRISM_AGREEMENT_MODEL=str(tiny_clip_dir),
        PRISM_PRECISION="fp32",
        PRISM_MODEL_OFFLINE=True,
        PRISM_CAPTION_NUM_BEAMS=1,
        PRISM_CAPTION_MAX_NEW_TOKENS=4,
        PRISM_MODEL_LOAD_WAIT=120,
    )
    client = app.test_client()
    make_user(app, "ann")
    login(client, "ann")
    text, image = "a red car parked on the street", png_bytes()
    response = submit(client, "service", text=text, image=image)
    assert response.status_code == 302, response.get_data(as_text=True)
    with app.app_context():
        record = db.session.scalar(db.select(Analysis))
        assert record.status == "done", record.error
        agreement = record.prediction("agreement")
        assert agreement.model_id == tiny_clip_dir.name and agreement.revision.startswith("sha256:")
        assert agreement.precision == "fp32" and agreement.output["method"] == JOINT_EMBEDDING
        assert agreement.output["threshold"] == app.config["PRISM_AGREEMENT_MODEL_THRESHOLD"]
        expected = clip_cosine(tiny_clip_dir, Image.open(io.BytesIO(image)), text)
        assert agreement.output["similarity"] == pytest.approx(expected, abs=1e-4)
    page = client.get(response.location).get_data(as_text=True)
    assert "joint image-text embedding" in page and tiny_clip_dir.name in page
    states = {model["kind"]: model["state"] for model in client.get("/healthz").get_json()["models"]}
    assert states["agreement"] == "ready"
    with app.app_context():
        db.engine.dispose()
