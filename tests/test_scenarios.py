"""The three scenario pages: who may use them, accepted and rejected inputs, batches, and models that
are not ready (the job waits) or cannot load (the record fails with the reason)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from tests.conftest import audit_rows, client_for, csrf_token, png_bytes, submit
from webapp.extensions import db
from webapp.inference import ModelService, ModelState, ModelUnavailable
from webapp.jobs import get_queue
from webapp.models import Analysis, Batch

SCENARIOS = ("service", "medical", "education")
# The role that may submit to each scenario (service: every role; "user" is the plainest).
ROLE = {"service": "user", "medical": "clinician", "education": "teacher"}
# Scenarios that run sentiment on the text (medical keeps its clinical note without analysing it).
TEXT_SCENARIOS = ("service", "education")
# The prediction kinds a text, an image, or both get in each scenario, in the order they run: an image's
# text is read (not in medical) and it is captioned; service then files the message under a category
# and drafts a reply from whatever was given. Education scores the tone of the typed reflection, or
# else of the text read from the photo.
TEXT_TASKS = {"service": ["sentiment", "category", "reply"], "education": ["sentiment"]}
IMAGE_TASKS = {
    "service": ["ocr", "caption", "category", "reply"],
    "medical": ["caption"],
    "education": ["ocr", "caption", "sentiment"],
}
BOTH_TASKS = {
    "service": ["ocr", "caption", "sentiment", "category", "reply", "fusion", "agreement"],
    "education": ["ocr", "caption", "sentiment", "fusion", "agreement"],
}
WAITING = "Waiting for a worker; this page updates by itself."


def analyses(app) -> list[Analysis]:
    """Every analysis, oldest first, with its predictions loaded and detached from the session."""
    with app.app_context():
        rows = db.session.scalars(db.select(Analysis).order_by(Analysis.id)).all()
        for row in rows:
            _ = [(p.output, p.label if p.kind == "sentiment" else None) for p in row.predictions]
        db.session.expunge_all()
        return rows


def batches(app) -> list[Batch]:
    with app.app_context():
        rows = db.session.scalars(db.select(Batch).order_by(Batch.id)).all()
        db.session.expunge_all()
        return rows


def stored_files(app) -> list[Path]:
    root = Path(app.config["UPLOAD_FOLDER"])
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def kinds(row: Analysis) -> list[str]:
    return [p.kind for p in row.predictions]


def submit_many(client, scenario: str, files: list[tuple[bytes, str]], text: str | None = None):
    """Post several files in the one ``image`` field, as a browser's multiple file input does."""
    data = {
        "csrf_token": csrf_token(client, f"/{scenario}/"),
        "image": [(io.BytesIO(payload), name) for payload, name in files],
    }
    if text is not None:
        data["text"] = text
    return client.post(f"/{scenario}/", data=data, content_type="multipart/form-data")


@pytest.fixture
def teacher(app):
    """A signed-in teacher called alice (education is hers)."""
    return client_for(app, "alice", "teacher")


@pytest.fixture
def clinician(app):
    """A signed-in clinician called alice (medical is hers)."""
    return client_for(app, "alice", "clinician")


def signed_in(app, scenario: str):
    """A client called alice whose role may submit to ``scenario``."""
    return client_for(app, "alice", ROLE[scenario])


# --- Access ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_requires_login(client, scenario):
    """Anonymous visitors are redirected to the login page."""
    response = client.get(f"/{scenario}/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_page_renders_form(app, scenario):
    """A user whose role may use the scenario gets the form with a multi-file image input and a text box."""
    body = signed_in(app, scenario).get(f"/{scenario}/").get_data(as_text=True)
    file_input = re.search(r'<input[^>]*type="file"[^>]*>', body)
    assert file_input and "multiple" in file_input.group(0)
    assert "<textarea" in body and 'enctype="multipart/form-data"' in body


@pytest.mark.parametrize("scenario", ["medical", "education"])
@pytest.mark.parametrize("role", ["user", "admin"])
def test_role_without_the_scenario_gets_403(app, scenario, role):
    """A plain user (and an admin) gets 403 on /medical/ and /education/, for GET and POST, and nothing is stored."""
    other = client_for(app, "someone", role)
    assert other.get(f"/{scenario}/").status_code == 403
    token = csrf_token(other, "/service/")
    response = other.post(
        f"/{scenario}/",
        data={"csrf_token": token, "text": "hello", "image": (io.BytesIO(png_bytes()), "a.png")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 403
    assert analyses(app) == [] and stored_files(app) == []
    assert audit_rows(app, "analysis.create") == []


@pytest.mark.parametrize(
    ("role", "shown", "hidden"),
    [
        ("user", {"/service/"}, {"/medical/", "/education/"}),
        ("teacher", {"/service/", "/education/"}, {"/medical/"}),
        ("clinician", {"/service/", "/medical/"}, {"/education/"}),
        ("admin", {"/service/"}, {"/medical/", "/education/"}),
    ],
)
def test_nav_shows_only_permitted_scenarios(app, role, shown, hidden):
    """The navigation (and home page) links only to the scenarios the user's role may use."""
    body = client_for(app, "someone", role).get("/").get_data(as_text=True)
    nav = re.search(r"<nav\b.*?</nav>", body, re.S).group(0)
    nav_links = set(re.findall(r'href="(/[a-z]+/)"', nav))
    assert shown <= nav_links
    assert not hidden & nav_links
    assert not hidden & set(re.findall(r'href="(/[a-z]+/)"', body))


# --- Accepted inputs -------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", TEXT_SCENARIOS)
def test_text_only_submission(app, scenario):
    """Text alone is stored with its scenario, gets one sentiment prediction (in service also a category
    and a reply draft), and redirects to the done record."""
    client = signed_in(app, scenario)
    response = submit(client, scenario, text="Thanks, great service!")
    [row] = analyses(app)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/history/{row.id}"
    assert (row.scenario, row.status, row.tasks, row.error) == (scenario, "done", TEXT_TASKS[scenario], None)
    assert row.text == "Thanks, great service!"
    assert kinds(row) == TEXT_TASKS[scenario]
    sentiment = row.prediction("sentiment")
    assert sentiment.label == "positive" and sentiment.model_id == "prism/fake-sentiment"
    assert sentiment.value == "positive" and sentiment.review_state == "unreviewed"
    assert row.image_sha256 is None
    assert stored_files(app) == []


def test_medical_text_only_is_rejected(app, clinician):
    """Medical needs an image: a clinical note alone answers 400 with a message and stores nothing."""
    response = submit(clinician, "medical", text="Follow-up, less pain.")
    body = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "This scenario needs an image." in body
    assert "Follow-up, less pain." in body  # the note stays in the form
    assert analyses(app) == []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_image_only_submission(app, scenario):
    """An image alone gets one caption prediction (and, but in medical, its text read; in service a category
    and a reply draft), is stored under its SHA-256, and redirects to the record."""
    client = signed_in(app, scenario)
    response = submit(client, scenario, text=None, image=png_bytes(size=(40, 30), color=(10, 200, 10)))
    [row] = analyses(app)
    assert response.headers["Location"] == f"/history/{row.id}"
    assert (row.scenario, row.status, row.tasks) == (scenario, "done", IMAGE_TASKS[scenario])
    assert kinds(row) == IMAGE_TASKS[scenario]
    caption = row.prediction("caption")
    assert caption.kind == "caption" and caption.output == {"text": "a 40x30 picture, mostly green"}
    assert caption.value == "a 40x30 picture, mostly green" and caption.model_id == "prism/fake-caption"
    assert row.text is None
    assert (row.image_format, row.image_width, row.image_height, row.image_filename) == ("PNG", 40, 30, "shot.png")
    assert [p.name for p in stored_files(app)] == [f"{row.image_sha256}.png"]


@pytest.mark.parametrize("scenario", TEXT_SCENARIOS)
def test_image_and_text_submission(app, scenario):
    """Both inputs give a caption and a sentiment prediction (with the image's text, and in service a
    category and a reply draft) on one audited record."""
    client = signed_in(app, scenario)
    response = submit(client, scenario, text="The parcel arrived broken", image=png_bytes())
    [row] = analyses(app)
    assert response.headers["Location"] == f"/history/{row.id}"
    assert row.status == "done" and kinds(row) == BOTH_TASKS[scenario]
    assert row.prediction("caption").value
    assert row.prediction("sentiment").label == "negative"
    assert [r["target_id"] for r in audit_rows(app, "analysis.create")] == [str(row.id)]


def test_medical_note_is_kept_without_sentiment(app, clinician):
    """In medical, the clinical note is stored with the image but gets no sentiment: only a caption runs."""
    response = submit(clinician, "medical", text="The parcel arrived broken", image=png_bytes())
    [row] = analyses(app)
    assert response.headers["Location"] == f"/history/{row.id}"
    assert row.status == "done" and row.tasks == ["caption"] and kinds(row) == ["caption"]
    assert row.text == "The parcel arrived broken"
    assert [r["target_id"] for r in audit_rows(app, "analysis.create")] == [str(row.id)]


def test_submission_flashes_and_record_shows_the_results(app, alice):
    """After submitting, the record page flashes that the models are working and shows both results."""
    response = submit(alice, text="Thanks, great service!", image=png_bytes(size=(40, 30), color=(10, 200, 10)))
    body = alice.get(response.headers["Location"]).get_data(as_text=True)
    assert "Saved to your history; the models are working on it." in body
    assert "a 40x30 picture, mostly green" in body
    assert "Positive" in body and "prism/fake-sentiment" in body
    assert WAITING not in body


def test_empty_file_part_counts_as_no_image(app, alice):
    """A browser's empty file field (no file chosen) with text is a text-only submission."""
    response = alice.post(
        "/service/",
        data={"csrf_token": csrf_token(alice, "/service/"), "text": "ok", "image": (io.BytesIO(b""), "")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    [row] = analyses(app)
    assert row.image_sha256 is None and row.text == "ok" and row.batch_id is None


def test_same_image_twice_is_stored_once(app, alice):
    """Two submissions of the same image make two records but one file."""
    image = png_bytes()
    submit(alice, text=None, image=image)
    submit(alice, text=None, image=image, filename="again.png")
    rows = analyses(app)
    assert len(rows) == 2 and rows[0].image_sha256 == rows[1].image_sha256
    assert len(stored_files(app)) == 1


# --- Rejected inputs -------------------------------------------------------------------------


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
def test_bad_image_is_rejected_and_audited(app, teacher, payload, filename):
    """A fake or corrupt image answers 400 with a message, stores nothing, audits upload.rejected and keeps the text."""
    response = submit(teacher, "education", text="我觉得这次作业很有意思", image=payload, filename=filename)
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


# --- Batches ---------------------------------------------------------------------------------


def test_several_images_make_a_batch(app, teacher):
    """A teacher sending three images gets a batch: 302 to /batches/<id>, one done, captioned record per image."""
    colors = [(200, 10, 10), (10, 200, 10), (10, 10, 200)]
    files = [(png_bytes(color=color), f"homework-{n}.png") for n, color in enumerate(colors, 1)]
    response = submit_many(teacher, "education", files)
    [batch] = batches(app)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/batches/{batch.id}"
    rows = analyses(app)
    assert [r.image_filename for r in rows] == ["homework-1.png", "homework-2.png", "homework-3.png"]
    assert {(r.batch_id, r.scenario, r.status) for r in rows} == {(batch.id, "education", "done")}
    assert [r.prediction("caption").value for r in rows] == [
        "a 64x48 picture, mostly red",
        "a 64x48 picture, mostly green",
        "a 64x48 picture, mostly blue",
    ]
    assert all(kinds(r) == IMAGE_TASKS["education"] and r.text is None for r in rows)
    assert len(stored_files(app)) == 3
    assert len(audit_rows(app, "analysis.create")) == 3
    page = teacher.get(response.headers["Location"])
    body = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "3 files queued; each becomes a record of this batch." in body
    assert "3 done, 0 failed, of 3." in body
    assert all(f'href="/history/{r.id}"' in body for r in rows)


def test_broken_file_in_a_batch_fails_alone(app, teacher):
    """A file in a batch that is not an image becomes one failed item with the reason; the others finish."""
    files = [
        (png_bytes(color=(200, 10, 10)), "good-1.png"),
        (b"this is plain text, not an image", "broken.png"),
        (png_bytes(color=(10, 200, 10)), "good-2.png"),
    ]
    response = submit_many(teacher, "education", files)
    [batch] = batches(app)
    assert response.headers["Location"] == f"/batches/{batch.id}"
    good_1, broken, good_2 = analyses(app)
    assert {r.batch_id for r in (good_1, broken, good_2)} == {batch.id}
    assert good_1.status == good_2.status == "done"
    assert good_1.prediction("caption") and good_2.prediction("caption")
    assert broken.status == "failed" and broken.predictions == []
    assert broken.image_filename == "broken.png" and broken.image_sha256 is None
    assert broken.error.startswith("The file is not a supported image")
    assert len(stored_files(app)) == 2
    [rejected] = audit_rows(app, "upload.rejected")
    assert rejected["details"]["scenario"] == "education"
    body = teacher.get(response.headers["Location"]).get_data(as_text=True)
    assert "2 done, 1 failed, of 3." in body
    assert "The file is not a supported image" in body


def test_text_with_several_images_is_a_form_error(app, teacher):
    """A text sent with several images answers 400 with a message, keeps the text, and stores nothing."""
    files = [(png_bytes(color=(200, 10, 10)), "a.png"), (png_bytes(color=(10, 200, 10)), "b.png")]
    response = submit_many(teacher, "education", files, text="For all of them")
    body = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Several images make a batch of separate records, which take no text." in body
    assert "For all of them" in body
    assert analyses(app) == [] and batches(app) == [] and stored_files(app) == []


def test_batch_over_the_file_limit_is_rejected(app, teacher):
    """More files than PRISM_MAX_BATCH_FILES answers 400 naming the limit, and stores nothing."""
    app.config["PRISM_MAX_BATCH_FILES"] = 2
    files = [(png_bytes(color=(n, 10, 10)), f"{n}.png") for n in (10, 20, 30)]
    response = submit_many(teacher, "education", files)
    assert response.status_code == 400
    assert "At most 2 files at once." in response.get_data(as_text=True)
    assert analyses(app) == [] and batches(app) == [] and stored_files(app) == []


# --- Models that cannot answer ---------------------------------------------------------------


def _unavailable(kind: str):
    def fail(self, *args, **kwargs):
        raise ModelUnavailable(kind, ModelState.LOADING, f"The {kind} model is not ready yet: loading.", retry_after=10)

    return fail


def test_sentiment_model_not_ready_defers_the_job(app, alice, monkeypatch):
    """A sentiment model that is not ready leaves the record pending with its input, the reason and a re-queued job."""
    monkeypatch.setattr(ModelService, "sentiment", _unavailable("sentiment"))
    response = submit(alice, text="Where is my refund?", image=png_bytes())
    [row] = analyses(app)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/history/{row.id}"
    assert row.status == "pending" and row.attempts == 0 and row.finished_at is None
    assert row.text == "Where is my refund?" and row.image_sha256 is not None
    assert [p.name for p in stored_files(app)] == [f"{row.image_sha256}.png"]
    assert kinds(row) == ["ocr", "caption"]  # what could run is kept; sentiment (and category, reply after it) waits
    assert row.error == "The sentiment model is not ready yet: loading."
    assert row.error_info == {
        "kind": "sentiment",
        "state": "loading",
        "reason": "not_ready",
        "message": "The sentiment model is not ready yet: loading.",
    }
    with app.app_context():
        assert row.id in get_queue().queued_ids()
    assert [r["target_id"] for r in audit_rows(app, "analysis.create")] == [str(row.id)]
    body = alice.get(response.headers["Location"]).get_data(as_text=True)
    assert WAITING in body
    assert "The sentiment model is not ready yet" in body
    assert "Where is my refund?" in body


def test_failed_model_load_fails_the_analysis(app, clinician):
    """A caption model whose loader fails makes the record failed, with the reason on the record page."""
    slot = app.extensions["prism_models"].caption_slot

    def broken_loader(progress):
        raise OSError("weights missing")

    slot._loader = broken_loader
    response = submit(clinician, "medical", text=None, image=png_bytes())
    [row] = analyses(app)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/history/{row.id}"
    assert row.status == "failed" and row.predictions == [] and row.finished_at is not None
    assert row.error == "The caption model is not available on this server yet; an administrator has been told."
    assert row.error_info["kind"] == "caption" and row.error_info["reason"] == "failed"
    assert "weights missing" in row.error_info["detail"]  # kept for administrators
    assert [p.name for p in stored_files(app)] == [f"{row.image_sha256}.png"]  # the input is kept
    body = clinician.get(response.headers["Location"]).get_data(as_text=True)
    assert "The models could not finish this record." in body
    assert "The caption model is not available on this server yet" in body
    assert "weights missing" not in body and "OSError" not in body  # the diagnosis is for administrators
    assert f'action="/history/{row.id}/retry"' in body
    assert WAITING not in body
