"""The review engine in the browser: accept, correct, reject, reopen; the AI original is kept; the queue."""

from __future__ import annotations

import re

import pytest

from tests.conftest import add_analysis, audit_rows, client_for, csrf_token, png_bytes, record_id, submit, user_id
from webapp.extensions import db
from webapp.models import Analysis, Prediction, Review

# Review state, queues and job claims are SQL that must behave alike on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases


def _prediction_id(app, analysis_id: int, kind: str) -> int:
    with app.app_context():
        return db.session.scalar(
            db.select(Prediction.id).where(Prediction.analysis_id == analysis_id, Prediction.kind == kind)
        )


def _review(client, analysis_id: int, prediction_id: int, decision: str, **fields):
    """Post the record page's review form as a browser would (CSRF token from that page)."""
    token = csrf_token(client, f"/history/{analysis_id}")
    data = {"csrf_token": token, "decision": decision, **fields}
    return client.post(f"/review/predictions/{prediction_id}", data=data)


@pytest.fixture
def record(app, alice):
    """A service record of alice's with a caption and a sentiment."""
    analysis_id = record_id(submit(alice, text="Thanks, great service!", image=png_bytes()))
    return analysis_id


def test_accept_marks_the_result_human_confirmed(app, alice, record):
    """Accepting keeps the AI value as the value that counts and says a human confirmed it."""
    pid = _prediction_id(app, record, "sentiment")
    response = _review(alice, record, pid, "accept")
    assert response.status_code == 303 and response.headers["Location"].endswith(f"#prediction-{pid}")
    with app.app_context():
        prediction = db.session.get(Prediction, pid)
        assert prediction.review_state == "accepted" and prediction.value == "positive" and prediction.human_confirmed
    page = alice.get(f"/history/{record}").get_data(as_text=True)
    assert "Confirmed by alice" in page


def test_correction_keeps_the_ai_original_and_wins_everywhere(app, alice, record):
    """A corrected caption is stored beside the unchanged AI output and shown as the value that counts."""
    pid = _prediction_id(app, record, "caption")
    with app.app_context():
        original = db.session.get(Prediction, pid).output
    _review(alice, record, pid, "correct", value="a red square on white", comment="model missed the border")
    with app.app_context():
        prediction = db.session.get(Prediction, pid)
        assert prediction.output == original  # the model's output is never changed
        assert prediction.value == "a red square on white" and prediction.review_state == "corrected"
        assert prediction.latest_review.comment == "model missed the border"
    page = alice.get(f"/history/{record}").get_data(as_text=True)
    assert "a red square on white" in page and original["text"] in page
    assert "AI original (kept unchanged)" in page and "Corrected by alice" in page
    listing = alice.get("/history/").get_data(as_text=True)
    assert "a red square on white" in listing and "✓ human" in listing


def test_reject_then_reopen_keeps_every_decision(app, alice, record):
    """Rejecting makes the result count for nothing; reopening undoes it; both decisions stay on file."""
    pid = _prediction_id(app, record, "sentiment")
    _review(alice, record, pid, "reject", comment="sarcasm")
    with app.app_context():
        assert db.session.get(Prediction, pid).value is None
    _review(alice, record, pid, "reopen")
    with app.app_context():
        prediction = db.session.get(Prediction, pid)
        assert prediction.review_state == "unreviewed" and prediction.value == "positive"
        assert [r.decision for r in prediction.reviews] == ["reject", "reopen"]
    events = audit_rows(app, "review.record")
    assert [e["details"]["decision"] for e in events] == ["reject", "reopen"]
    assert events[0]["details"]["from"] == "unreviewed" and events[1]["details"]["from"] == "rejected"
    assert events[0]["target_id"] == str(record) and events[0]["actor_name"] == "alice"


def test_invalid_correction_is_refused_and_nothing_changes(app, alice, record):
    """A sentiment correction outside the known labels is refused with a message; no review is stored."""
    pid = _prediction_id(app, record, "sentiment")
    response = _review(alice, record, pid, "correct", value="ecstatic")
    assert response.status_code == 303
    page = alice.get(response.headers["Location"]).get_data(as_text=True)
    assert "A corrected sentiment is one of" in page
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Review.id))) == 0


def test_correcting_to_the_ai_value_counts_as_accepting(app, alice, record):
    """Sending the model's own answer as a correction is recorded as agreement, not a correction."""
    pid = _prediction_id(app, record, "sentiment")
    _review(alice, record, pid, "correct", value="positive")
    with app.app_context():
        assert db.session.get(Prediction, pid).review_state == "accepted"


def test_review_without_csrf_is_refused(app, alice, record):
    """The review POST needs the form's CSRF token."""
    pid = _prediction_id(app, record, "sentiment")
    response = alice.post(f"/review/predictions/{pid}", data={"decision": "accept"})
    assert response.status_code == 400
    with app.app_context():
        assert db.session.get(Prediction, pid).review_state == "unreviewed"


def test_other_users_cannot_review_or_see(app, alice, record):
    """Another user's prediction id is a 404; an admin sees the record but cannot decide for its owner."""
    pid = _prediction_id(app, record, "sentiment")
    bob = client_for(app, "bob")
    token = csrf_token(bob, "/service/")
    assert bob.post(f"/review/predictions/{pid}", data={"csrf_token": token, "decision": "accept"}).status_code == 404
    admin = client_for(app, "root", role="admin")
    page = admin.get(f"/history/{record}").get_data(as_text=True)
    assert 'name="decision"' not in page
    token = csrf_token(admin, "/service/")
    assert admin.post(f"/review/predictions/{pid}", data={"csrf_token": token, "decision": "accept"}).status_code == 403


def test_role_that_lost_the_scenario_cannot_review(app, alice):
    """A plain user owning an education record (from v1) may read it but not review it: 403."""
    analysis_id = add_analysis(app, user_id(app, "alice"), scenario="education", caption="a worksheet")
    page = alice.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert "a worksheet" in page and 'name="decision"' not in page
    pid = _prediction_id(app, analysis_id, "caption")
    token = csrf_token(alice, "/service/")
    response = alice.post(f"/review/predictions/{pid}", data={"csrf_token": token, "decision": "accept"})
    assert response.status_code == 403
    assert alice.get("/review/education/").status_code == 403


def test_uncertain_sentiment_is_not_shown_as_a_confident_label(app, alice):
    """A 33.5% / 33.5% tie is shown as uncertain, never as a bold confident label."""
    analysis_id = add_analysis(
        app, user_id(app, "alice"), text="meh", sentiment={"negative": 0.335, "neutral": 0.33, "positive": 0.335}
    )
    page = alice.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert "sentiment-uncertain" in page and "Uncertain: the model cannot tell these classes apart" in page
    assert not re.search(r'class="sentiment sentiment-negative"', page)


def test_queue_puts_uncertain_first_then_least_confident(app, alice):
    """The service queue lists unreviewed predictions: uncertain, then no confidence, then ascending."""
    uid = user_id(app, "alice")
    confident = add_analysis(app, uid, text="great", sentiment={"negative": 0.05, "neutral": 0.05, "positive": 0.9})
    middling = add_analysis(app, uid, text="ok", sentiment={"negative": 0.1, "neutral": 0.25, "positive": 0.65})
    tie = add_analysis(app, uid, text="hm", sentiment={"negative": 0.4, "neutral": 0.2, "positive": 0.4})
    caption_only = add_analysis(app, uid, caption="a screenshot of an error")
    reviewed = add_analysis(app, uid, text="bad", sentiment="negative")
    _review(alice, reviewed, _prediction_id(app, reviewed, "sentiment"), "accept")
    page = alice.get("/review/service/").get_data(as_text=True)
    order = [int(n) for n in re.findall(r'href="/history/(\d+)\?queue=service', page)]
    assert order == [tie, caption_only, middling, confident]
    assert "4 results waiting" in page


def test_next_in_queue_walks_the_queue_after_each_decision(app, alice):
    """Deciding from the queue goes straight to the next item; an empty queue says so."""
    uid = user_id(app, "alice")
    first = add_analysis(app, uid, text="hm", sentiment={"negative": 0.4, "neutral": 0.2, "positive": 0.4})
    second = add_analysis(app, uid, text="great", sentiment="positive")
    start = alice.get("/review/service/next")
    assert f"/history/{first}?queue=service#prediction-" in start.headers["Location"]
    token = csrf_token(alice, f"/history/{first}?queue=service")
    response = alice.post(
        f"/review/predictions/{_prediction_id(app, first, 'sentiment')}",
        data={"csrf_token": token, "decision": "correct", "value": "neutral", "queue": "service"},
    )
    assert response.headers["Location"].endswith("/review/service/next")
    assert f"/history/{second}?queue=service" in alice.get("/review/service/next").headers["Location"]
    _review(alice, second, _prediction_id(app, second, "sentiment"), "accept")
    done = alice.get("/review/service/next", follow_redirects=True).get_data(as_text=True)
    assert "Nothing left to review here." in done


def test_review_index_counts_waiting_results_per_scenario(app):
    """A teacher sees the education queue with its count; service too (every role may use it)."""
    teacher = client_for(app, "tina", role="teacher")
    response = submit(teacher, "education", text="I liked it", image=png_bytes())
    assert response.status_code == 302
    page = teacher.get("/review/").get_data(as_text=True)
    # the page text, the caption, the sentiment, the overall sentiment and the image-text agreement
    assert "5 results waiting for a decision." in page
    assert "/review/education/" in page and "/review/medical/" not in page


def test_medical_record_says_every_result_needs_a_decision(app):
    """Medical is review-required: a clinician's record says so until each result is decided."""
    clinician = client_for(app, "carl", role="clinician")
    response = submit(clinician, "medical", text="follow-up, less pain", image=png_bytes())
    analysis_id = record_id(response)
    with app.app_context():
        assert db.session.get(Analysis, analysis_id).tasks == ["caption"]  # a clinical note gets no sentiment
    page = clinician.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert "needs a human decision on every AI result" in page
    _review(clinician, analysis_id, _prediction_id(app, analysis_id, "caption"), "accept")
    page = clinician.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert "needs a human decision on every AI result" not in page


def test_review_queue_pages_through_every_waiting_result(app, alice):
    """A queue longer than a page links to the next page, which lists the rest."""
    uid = user_id(app, "alice")
    ids = [add_analysis(app, uid, text=f"t{n}", sentiment="positive") for n in range(app.config["PRISM_PAGE_SIZE"] + 3)]
    first = alice.get("/review/service/").get_data(as_text=True)
    assert f"{len(ids)} results waiting" in first
    assert 'href="/review/service/?page=2"' in first
    second = alice.get("/review/service/?page=2").get_data(as_text=True)
    listed = set(re.findall(r'href="/history/(\d+)\?queue=service', first + second))
    assert listed == {str(i) for i in ids}


def test_queue_and_prediction_filters_count_up_to_the_cap(app, alice, monkeypatch):
    """Past ``pagination.COUNT_CAP`` matches the queue and a prediction filter say "more than N" (an exact
    count would read every match); the pages still list the right records, in order."""
    from webapp import pagination

    monkeypatch.setattr(pagination, "COUNT_CAP", 2)
    uid = user_id(app, "alice")
    ids = [add_analysis(app, uid, text=f"t{n}", sentiment="negative") for n in range(3)]
    queue = alice.get("/review/service/").get_data(as_text=True)
    assert "More than 2 results waiting" in queue
    assert set(re.findall(r'href="/history/(\d+)\?queue=service', queue)) == {str(i) for i in ids}
    history = alice.get("/history/?sentiment=negative").get_data(as_text=True)
    assert "more than 2 matches" in history
    assert "more than 2 matches" in alice.get("/history/?status=done").get_data(as_text=True)
    exact = alice.get("/history/").get_data(as_text=True)  # an index answers this count: it stays exact
    assert "3 records" in exact
