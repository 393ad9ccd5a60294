"""Explanations in the app: the Explain button, the stored ``explanation`` prediction, its panel on the
record, review and grading pages, the heatmap images, and GET /api/v1/analyses/<id>/explanation."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from tests.conftest import client_for, csrf_token, make_token, png_bytes, record_id, submit
from tests.test_education import homework, submissions, teacher  # noqa: F401 (fixtures)
from webapp import explaining
from webapp.extensions import db
from webapp.jobs import JobQueue
from webapp.models import NOT_REVIEWABLE, Analysis, Prediction
from webapp.models.explanation import ExplanationResult
from webapp.reviews import select_queue

TEXT = "Thanks, great service! But the bill was wrong."


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def explanations(app, analysis_id: int) -> list[Prediction]:
    with app.app_context():
        rows = db.session.scalars(
            db.select(Prediction).where(Prediction.analysis_id == analysis_id, Prediction.kind == "explanation")
        ).all()
        db.session.expunge_all()
        return rows


def explain(client, analysis_id: int, page: str | None = None):
    page = page or f"/history/{analysis_id}"
    data = {"csrf_token": csrf_token(client, page), "next": page}
    return client.post(f"/history/{analysis_id}/explain", data=data)


@pytest.fixture
def record(app, alice):
    """Alice's service-desk record with a screenshot and a message, its job done (fake models)."""
    return record_id(submit(alice, text=TEXT, image=png_bytes(size=(64, 48))))


def test_explain_stores_one_explanation_and_the_second_request_is_served_from_it(app, alice, record):
    """The Explain button (POST + CSRF) stores one explanation with both parts; asking again adds nothing."""
    page = alice.get(f"/history/{record}").get_data(as_text=True)
    assert f'action="/history/{record}/explain"' in page
    response = explain(alice, record)
    assert response.status_code == 302 and response.headers["Location"] == f"/history/{record}"
    [stored] = explanations(app, record)
    assert stored.review_state == NOT_REVIEWABLE and stored.model_id.startswith("prism/fake-caption")
    caption, sentiment = stored.output["caption"], stored.output["sentiment"]
    with app.app_context():
        analysis = db.session.get(Analysis, record)
        assert analysis.status == "done" and "explanation" in analysis.tasks
        assert caption["caption"] == analysis.prediction("caption").output["text"]
    assert caption["grid"] == [4, 4] and len(caption["per_word"]) == len(caption["words"])
    assert all(len(grid) == 16 for grid in caption["per_word"]) and abs(sum(caption["overall"]) - 1) < 1e-5
    assert sentiment["text"] == TEXT and len(sentiment["attributions"]) == len(sentiment["spans"])
    assert explain(alice, record).status_code == 302
    assert [p.id for p in explanations(app, record)] == [stored.id]


def test_explanation_panel_shows_words_as_buttons_and_highlighted_text(app, alice, record):
    """The record page shows the overlay, one aria-pressed button per caption word, and the legend."""
    explain(alice, record)
    page = alice.get(f"/history/{record}").get_data(as_text=True)
    [stored] = explanations(app, record)
    words = stored.output["caption"]["words"]
    assert page.count('class="explain-word" aria-pressed="false"') == len(words)
    assert f'src="/history/{record}/explanation/overlay.png"' in page  # the whole caption's map without JS
    assert f"/history/{record}/explanation/overlay.png?word={len(words) - 1}" in page
    assert "pushed toward" in page and "pushed away" in page
    assert re.search(r'<mark class="attr attr-pos-\d"[^>]*>great', page)
    assert 'class="card prediction prediction-explanation' not in page  # not shown as a reviewable result


def test_explanation_is_no_review_work(app, alice, record):
    """An explanation never joins the review queue, the unreviewed filter, or the CSV export."""
    with app.app_context():
        analysis = db.session.get(Analysis, record)
        before = {p.id for p in db.session.scalars(select_queue(analysis.user, "service"))}
    explain(alice, record)
    with app.app_context():
        analysis = db.session.get(Analysis, record)
        after = {p.id for p in db.session.scalars(select_queue(analysis.user, "service"))}
    assert after == before
    assert b"explanation" not in alice.get("/history/export.csv").get_data().split(b"\n", 1)[0]
    listing = alice.get("/history/?review=unreviewed").get_data(as_text=True)
    assert f"/history/{record}" in listing  # its other predictions still wait; nothing broke the filter


def test_explain_needs_csrf(app, alice, record):
    """A POST without the CSRF token is refused and queues nothing."""
    response = alice.post(f"/history/{record}/explain", data={})
    assert response.status_code in (302, 400)
    assert explanations(app, record) == []
    with app.app_context():
        assert "explanation" not in db.session.get(Analysis, record).tasks


def test_other_users_get_404_and_admins_may_explain(app, alice, record, admin_client):
    """Another user's POST, heatmap and API call answer 404; an admin may explain and see it."""
    mallory = client_for(app, "mallory")
    token = csrf_token(mallory, "/service/")
    assert mallory.post(f"/history/{record}/explain", data={"csrf_token": token}).status_code == 404
    assert mallory.get(f"/history/{record}/explanation/overlay.png").status_code == 404
    secret = make_token(app, "mallory")
    assert mallory.get(f"/api/v1/analyses/{record}/explanation", headers=bearer(secret)).status_code == 404
    assert explanations(app, record) == []
    assert explain(admin_client, record).status_code == 302
    assert len(explanations(app, record)) == 1


def test_overlay_png_is_the_image_size_and_cached(app, alice, record):
    """The overlay route renders a PNG at the image's size, per word or overall, with cache headers."""
    explain(alice, record)
    response = alice.get(f"/history/{record}/explanation/overlay.png?word=0")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert Image.open(io.BytesIO(response.data)).size == (64, 48)
    assert "max-age" in response.headers["Cache-Control"] and response.headers["ETag"]
    again = alice.get(
        f"/history/{record}/explanation/overlay.png?word=0", headers={"If-None-Match": response.headers["ETag"]}
    )
    assert again.status_code == 304
    assert alice.get(f"/history/{record}/explanation/overlay.png?word=99").status_code == 404


def test_api_answers_202_then_200_from_the_stored_prediction(app, client, record):
    """With a real queue: 202 computing (queued once), then, after a worker ran it, 200 with the maps."""
    app.config["PRISM_JOBS_IMMEDIATE"] = False
    app.extensions["prism_jobs"] = JobQueue(app)  # the record's job ran on the immediate queue; now a SqliteHuey
    secret = make_token(app, "alice")
    url = f"/api/v1/analyses/{record}/explanation"
    first = client.get(url, headers=bearer(secret))
    assert first.status_code == 202 and first.json["status"] == "computing"
    assert first.headers["Location"].endswith(url)
    assert client.get(url, headers=bearer(secret)).status_code == 202
    queue = app.extensions["prism_jobs"]
    with app.app_context():
        assert queue.queued_ids() == {record}
        huey = queue.huey
        huey.execute(huey.dequeue())  # what `manage.py worker` does
        assert queue.queued_ids() == set()
    done = client.get(url, headers=bearer(secret))
    assert done.status_code == 200, done.json
    body = done.json
    assert body["caption"]["grid"] == [4, 4] and len(body["caption"]["per_word"]) == len(body["caption"]["words"])
    assert len(body["caption"]["overall"]) == 16
    assert body["sentiment"]["tokens"] and len(body["sentiment"]["attributions"]) == len(body["sentiment"]["tokens"])
    assert body["model"].startswith("prism/fake-caption")
    assert client.get(url, headers=bearer(secret)).json == body
    with app.app_context():
        assert queue.queued_ids() == set()
    assert len(explanations(app, record)) == 1


def test_chinese_text_is_highlighted_per_character_span(app, alice):
    """A Chinese message keeps its characters; each token is marked over exactly its span."""
    record = record_id(submit(alice, text="服务很好，谢谢"))
    explain(alice, record)
    [stored] = explanations(app, record)
    sentiment = stored.output["sentiment"]
    assert [sentiment["text"][a:b] for a, b in sentiment["spans"]] == sentiment["tokens"]
    page = alice.get(f"/history/{record}").get_data(as_text=True)
    assert "服" in page and stored.output["caption"] is None


def test_review_page_shows_the_explanation(app, alice, record):
    """The review page (the record page opened from the queue) shows the explanation panel."""
    explain(alice, record, page=f"/history/{record}?queue=service")
    page = alice.get(f"/history/{record}?queue=service").get_data(as_text=True)
    assert 'id="explanation"' in page and "explain-word" in page


def test_grading_page_explains_the_homework_photo(app, teacher, homework):  # noqa: F811
    """The grading page offers Explain and then shows the photo's caption heatmap."""
    submission = homework["submissions"][0]
    url = f"/education/assignments/{homework['assignment']}/submissions/{submission}"
    [row] = [s for s in submissions(app, homework["assignment"]) if s["id"] == submission]
    page = teacher.get(url).get_data(as_text=True)
    assert f'action="/history/{row["analysis_id"]}/explain"' in page
    response = explain(teacher, row["analysis_id"], page=url)
    assert response.status_code == 302 and response.headers["Location"] == url
    page = teacher.get(url).get_data(as_text=True)
    assert "explain-word" in page and f"/history/{row['analysis_id']}/explanation/overlay.png" in page


def test_text_segments_cover_the_text_once_and_grade_strength():
    """Pieces rebuild the text exactly; the strongest token gets the top level, signs follow the values."""
    sentiment = {
        "text": "好 but bad",
        "spans": [[0, 1], [2, 5], [6, 9]],
        "attributions": [0.8, -0.1, -0.4],
    }
    pieces = explaining.text_segments(sentiment)
    assert "".join(piece["text"] for piece in pieces) == sentiment["text"]
    marked = [(piece["text"], piece["sign"], piece["level"]) for piece in pieces if "sign" in piece]
    assert marked == [("好", "pos", 4), ("but", "neg", 1), ("bad", "neg", 2)]
    assert explaining.strongest(sentiment, 1) == ["好"] and explaining.strongest(sentiment, -1) == ["bad", "but"]


def test_provenance_of_two_parts():
    """The row names both models; a revision or precision the parts do not share is not invented."""
    from types import SimpleNamespace

    caption = SimpleNamespace(model_id="cap", revision="r1", precision="bf16", latency_ms=10.0)
    sentiment = SimpleNamespace(model_id="sen", revision="r2", precision="fp32", latency_ms=5.0)
    both = ExplanationResult(caption=caption, sentiment=sentiment)
    assert (both.model_id, both.revision, both.precision, both.latency_ms) == ("cap + sen", None, "mixed", 15.0)
    one = ExplanationResult(sentiment=sentiment)
    assert (one.model_id, one.revision, one.precision) == ("sen", "r2", "fp32")


def test_api_answers_200_at_once_when_jobs_run_in_the_request(app, client, record):
    """With immediate jobs the explanation is made inside the first call, which then answers 200."""
    response = client.get(f"/api/v1/analyses/{record}/explanation", headers=bearer(make_token(app, "alice")))
    assert response.status_code == 200 and response.json["status"] == "ready"
    assert len(explanations(app, record)) == 1


def test_while_computing_the_pages_show_the_job_status(app, alice, record):
    """With a real queue, after Explain the record page polls the job and offers no second button."""
    app.config["PRISM_JOBS_IMMEDIATE"] = False
    app.extensions["prism_jobs"] = JobQueue(app)
    assert explain(alice, record).status_code == 302
    page = alice.get(f"/history/{record}").get_data(as_text=True)
    assert f'data-poll="/history/{record}/status"' in page
    assert "The explanation is being computed" in page
    assert f'action="/history/{record}/explain"' not in page
    # caption, sentiment, category, reply, fusion, agreement and OCR are done; the explanation is the 8th
    assert alice.get(f"/history/{record}/status").json["progress"]["total"] == 8


def test_grading_page_shows_progress_while_computing(app, teacher, homework):  # noqa: F811
    """On the grading page (no status panel of its own) the explanation panel shows the job's progress."""
    app.config["PRISM_JOBS_IMMEDIATE"] = False
    app.extensions["prism_jobs"] = JobQueue(app)
    submission = homework["submissions"][0]
    url = f"/education/assignments/{homework['assignment']}/submissions/{submission}"
    [row] = [s for s in submissions(app, homework["assignment"]) if s["id"] == submission]
    assert explain(teacher, row["analysis_id"], page=url).status_code == 302
    page = teacher.get(url).get_data(as_text=True)
    assert f'data-poll="/history/{row["analysis_id"]}/status"' in page and "<progress" in page
