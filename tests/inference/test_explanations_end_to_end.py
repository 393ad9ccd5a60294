"""Explanations through the whole app on real (tiny) local models: the caption the record shows is the one
explained, and the record page and the API show the heatmaps and attributions."""

from __future__ import annotations

import io

from PIL import Image

from tests.conftest import csrf_token, login, make_app, make_token, make_user, png_bytes, record_id, submit
from webapp.extensions import db
from webapp.models import Analysis


def test_explain_a_real_record_with_tiny_models(tmp_path, vit_gpt2_dir, sentiment3_dir, tiny_embedding_dir):
    """A service-desk record explained by the tiny ViT-GPT2 and DistilBERT: per-word maps of the stored
    caption on the model's patch grid, complete attributions, an overlay at the image's size."""
    app = make_app(
        tmp_path,
        PRISM_MODEL_BACKEND="transformers",
        PRISM_CAPTION_MODEL=str(vit_gpt2_dir),
        PRISM_SENTIMENT_MODEL=str(sentiment3_dir),
        PRISM_EMBEDDING_MODEL=str(tiny_embedding_dir),  # image-text agreement, computed with the record
        PRISM_MODEL_OFFLINE=True,
        PRISM_CAPTION_NUM_BEAMS=2,
        PRISM_CAPTION_MAX_NEW_TOKENS=6,
        PRISM_MODEL_LOAD_WAIT=120,
    )
    make_user(app, "tess", role="teacher")
    client = app.test_client()
    login(client, "tess")
    record = record_id(submit(client, "education", text="I enjoyed this homework", image=png_bytes((80, 60))))
    page = f"/history/{record}"
    response = client.post(f"/history/{record}/explain", data={"csrf_token": csrf_token(client, page)})
    assert response.status_code == 302
    with app.app_context():
        analysis = db.session.get(Analysis, record)
        assert analysis.status == "done", analysis.error
        caption = analysis.prediction("caption").output["text"]
        explanation = analysis.prediction("explanation")
        heatmap, attributions = explanation.output["caption"], explanation.output["sentiment"]
    assert heatmap["caption"] == caption and explanation.model_id.startswith(vit_gpt2_dir.name)
    rows, columns = heatmap["grid"]
    assert len(heatmap["per_word"]) == len(heatmap["words"])
    assert all(len(grid) == rows * columns and abs(sum(grid) - 1) < 1e-4 for grid in heatmap["per_word"])
    assert attributions["tokens"] and len(attributions["attributions"]) == len(attributions["tokens"])
    html = client.get(page).get_data(as_text=True)
    assert html.count('class="explain-word"') == len(heatmap["words"])
    overlay = client.get(f"/history/{record}/explanation/overlay.png?word=0")
    assert overlay.status_code == 200 and Image.open(io.BytesIO(overlay.data)).size == (80, 60)
    api = client.get(
        f"/api/v1/analyses/{record}/explanation", headers={"Authorization": f"Bearer {make_token(app, 'tess')}"}
    )
    assert api.status_code == 200 and api.json["caption"]["grid"] == [rows, columns]
    with app.app_context():
        db.engine.dispose()
