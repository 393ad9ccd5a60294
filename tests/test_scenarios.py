"""The three scenario pages: login, accepted inputs, rejected inputs, and a model that is not ready."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.conftest import audit_rows, csrf_token, png_bytes, submit
from webapp.extensions import db
from webapp.inference import ModelService, ModelState, ModelUnavailable
from webapp.models import Analysis

SCENARIOS = ("service", "medical", "education")


def analyses(app) -> list[Analysis]:
    with app.app_context():
        rows = db.session.scalars(db.select(Analysis).order_by(Analysis.id)).all()
        db.session.expunge_all()
        return rows


def stored_files(app) -> list[Path]:
    root = Path(app.config["UPLOAD_FOLDER"])
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_requires_login(client, scenario):
    """Anonymous visitors are redirected to the login page."""
    response = client.get(f"/{scenario}/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_page_renders_form(alice, scenario):
    """A signed-in user gets the form with image and text inputs."""
    body = alice.get(f"/{scenario}/").get_data(as_text=True)
    assert 'type="file"' in body and "<textarea" in body and 'enctype="multipart/form-data"' in body


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_text_only_submission(app, alice, scenario):
    """Text alone is analysed for sentiment, stored with its scenario, and redirects to the record."""
    response = submit(alice, scenario, text="Thanks, great service!")
    [row] = analyses(app)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/history/{row.id}"
    assert row.scenario == scenario
    assert row.text == "Thanks, great service!"
    assert row.sentiment_label == "positive" and row.sentiment_model == "prism/fake-sentiment"
    assert row.image_sha256 is None and row.caption is None
    assert stored_files(app) == []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_image_only_submission(app, alice, scenario):
    """An image alone is captioned, stored under its SHA-256, and redirects to the record."""
    response = submit(alice, scenario, text=None, image=png_bytes(size=(40, 30), color=(10, 200, 10)))
    [row] = analyses(app)
    assert response.headers["Location"] == f"/history/{row.id}"
    assert row.scenario == scenario
    assert row.caption == "a 40x30 picture, mostly green"
    assert row.sentiment_label is None and row.text is None
    assert (row.image_format, row.image_width, row.image_height, row.image_filename) == ("PNG", 40, 30, "shot.png")
    assert [p.name for p in stored_files(app)] == [f"{row.image_sha256}.png"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_image_and_text_submission(app, alice, scenario):
    """Both inputs give a caption and a sentiment on one record."""
    response = submit(alice, scenario, text="The parcel arrived broken", image=png_bytes())
    [row] = analyses(app)
    assert response.headers["Location"] == f"/history/{row.id}"
    assert row.caption and row.sentiment_label == "negative"
    assert [r["target_id"] for r in audit_rows(app, "analysis.create")] == [str(row.id)]


def test_empty_file_part_counts_as_no_image(app, alice):
    """A browser's empty file field (no file chosen) with text is a text-only submission."""
    response = alice.post(
        "/service/",
        data={"csrf_token": csrf_token(alice, "/service/"), "text": "ok", "image": (io.BytesIO(b""), "")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    [row] = analyses(app)
    assert row.image_sha256 is None and row.text == "ok"


def test_neither_input_is_rejected(app, alice):
    """With neither image nor text the form answers 400 with a message and stores nothing."""
    response = submit(alice, text="   ")
    assert response.status_code == 400
    assert "Add an image, a text, or both." in response.get_data(as_text=True)
    assert analyses(app) == []


@pytest.mark.parametrize(
    "payload, filename",
    [
        (b"this is plain text, not an image", "notes.png"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "x.svg"),
        (png_bytes()[:60], "cut.png"),
    ],
    ids=["text-as-png", "svg", "truncated-png"],
)
def test_bad_image_is_rejected_and_audited(app, alice, payload, filename):
    """A fake or corrupt image answers 400 with a message, stores nothing, audits upload.rejected and keeps the text."""
    response = submit(alice, "education", text="我觉得这次作业很有意思", image=payload, filename=filename)
    body = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "not a supported image" in body or "could not be read" in body
    assert "我觉得这次作业很有意思" in body  # the text stays in the form
    assert analyses(app) == []
    assert stored_files(app) == []
    rows = audit_rows(app, "upload.rejected")
    assert len(rows) == 1
    assert rows[0]["actor_name"] == "alice" and rows[0]["details"]["scenario"] == "education"


def test_over_long_text_is_rejected(app, alice):
    """Text over the 5000-character form limit answers 400 and stores nothing."""
    response = submit(alice, text="a" * 5001)
    assert response.status_code == 400
    assert "The text is longer than 5000 characters." in response.get_data(as_text=True)
    assert analyses(app) == []


def test_text_limit_follows_config(app, alice):
    """PRISM_MAX_TEXT_CHARS below the form limit is enforced too, with a message naming the limit."""
    app.config["PRISM_MAX_TEXT_CHARS"] = 20
    response = submit(alice, text="x" * 21)
    assert response.status_code == 400
    assert "longer than 20 characters" in response.get_data(as_text=True)
    assert analyses(app) == []


def _unavailable(kind: str):
    def fail(self, *args, **kwargs):
        raise ModelUnavailable(kind, ModelState.LOADING, f"The {kind} model is not ready yet: loading.", retry_after=10)

    return fail


def test_unavailable_sentiment_model_gives_503(app, alice, monkeypatch):
    """A sentiment model that is not ready answers 503 with Retry-After and a clear message; nothing is stored."""
    monkeypatch.setattr(ModelService, "sentiment", _unavailable("sentiment"))
    response = submit(alice, text="Where is my refund?", image=png_bytes())
    body = response.get_data(as_text=True)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "10"
    assert "The sentiment model is not ready yet" in body
    assert "Where is my refund?" in body
    assert analyses(app) == []
    assert stored_files(app) == []
    assert audit_rows(app, "analysis.create") == []


def test_failed_model_load_gives_503(app, alice):
    """A caption model whose loader fails answers 503 naming the failure, with Retry-After; nothing is stored."""
    slot = app.extensions["prism_models"].caption_slot

    def broken_loader(progress):
        raise OSError("weights missing")

    slot._loader = broken_loader
    response = submit(alice, "medical", text=None, image=png_bytes())
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(int(app.config["PRISM_MODEL_RETRY_AFTER"]))
    assert "The caption model could not be loaded" in response.get_data(as_text=True)
    assert analyses(app) == []
    assert stored_files(app) == []


def test_same_image_twice_is_stored_once(app, alice):
    """Two submissions of the same image make two records but one file."""
    image = png_bytes()
    submit(alice, text=None, image=image)
    submit(alice, text=None, image=image, filename="again.png")
    rows = analyses(app)
    assert len(rows) == 2 and rows[0].image_sha256 == rows[1].image_sha256
    assert len(stored_files(app)) == 1
