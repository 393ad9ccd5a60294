"""The job runner and the sweep, in-process: claims, idempotence, deferral, failure, retry, re-queueing."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from sqlalchemy import update

from tests.conftest import client_for, csrf_token, png_bytes, record_id, submit, user_id
from webapp.extensions import db
from webapp.jobs import get_queue, requeue_stalled
from webapp.jobs.runner import claim, run
from webapp.models import Analysis, Prediction, utcnow

# Review state, queues and job claims are SQL that must behave alike on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases


def _pending(app, alice, **submit_args) -> int:
    """Submit through the form with the queue switched off, so the record stays pending."""
    queue = get_queue_for(app)
    queue.huey.immediate = False  # MemoryHuey: enqueue only stores the task
    try:
        response = submit(alice, **submit_args)
    finally:
        queue.huey.immediate = True
    return record_id(response)


def get_queue_for(app):
    with app.app_context():
        return get_queue()


def _state(app, analysis_id: int) -> tuple[str, list[str], int]:
    with app.app_context():
        analysis = db.session.get(Analysis, analysis_id)
        return analysis.status, sorted(p.kind for p in analysis.predictions), analysis.attempts


def test_submission_is_pending_until_its_job_runs(app, alice):
    """Submitting stores a pending record with its tasks; the job then makes one prediction per task."""
    analysis_id = _pending(app, alice, text="great service", image=png_bytes())
    assert _state(app, analysis_id) == ("pending", [], 0)
    with app.app_context():
        tasks = ["ocr", "caption", "sentiment", "category", "reply", "fusion", "agreement"]
        assert db.session.get(Analysis, analysis_id).tasks == tasks
        assert run(analysis_id) == "done"
    assert _state(app, analysis_id) == ("done", sorted(tasks), 1)


def test_running_a_job_twice_adds_nothing(app, alice):
    """A second run of a finished job is skipped and stores no second prediction."""
    analysis_id = _pending(app, alice, text="great service", image=png_bytes())
    with app.app_context():
        assert run(analysis_id) == "done"
        assert run(analysis_id) == "skipped"
        # ocr, caption, sentiment, category, reply, fusion, agreement: one each
        assert db.session.scalar(db.select(db.func.count(Prediction.id))) == 7


def test_rerun_after_a_crash_only_adds_what_is_missing(app, alice):
    """A job killed after its first predictions, re-run once its lease expired, adds only the others."""
    analysis_id = _pending(app, alice, text="great service", image=png_bytes())
    with app.app_context():
        run(analysis_id)
        analysis = db.session.get(Analysis, analysis_id)
        stored_ids = {kind: analysis.prediction(kind).id for kind in ("ocr", "caption")}
        drafted = {kind: analysis.prediction(kind).value for kind in ("category", "reply")}
        db.session.execute(  # killed after ocr and caption: sentiment, category and reply never stored
            db.delete(Prediction).where(
                Prediction.analysis_id == analysis_id, Prediction.kind.in_(["sentiment", "category", "reply"])
            )
        )
        db.session.execute(  # as a worker killed mid-job leaves it
            update(Analysis)
            .where(Analysis.id == analysis_id)
            .values(status="running", lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
        assert run(analysis_id) == "done"
        analysis = db.session.get(Analysis, analysis_id)
        assert {kind: analysis.prediction(kind).id for kind in ("ocr", "caption")} == stored_ids
        kinds = ["agreement", "caption", "category", "fusion", "ocr", "reply", "sentiment"]
        assert sorted(p.kind for p in analysis.predictions) == kinds
        # the resumed job reads what the first attempt stored (the screenshot's text): the same outcome
        assert {kind: analysis.prediction(kind).value for kind in ("category", "reply")} == drafted


def test_a_live_lease_cannot_be_claimed_twice(app, alice):
    """While one worker holds a live lease, another claim fails; after expiry it succeeds."""
    analysis_id = _pending(app, alice, text="hi")
    with app.app_context():
        assert claim(analysis_id).attempts == 1
        assert claim(analysis_id) is None
        db.session.execute(
            update(Analysis).where(Analysis.id == analysis_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
        assert claim(analysis_id).attempts == 2
        assert db.session.get(Analysis, analysis_id).attempts == 2


def test_loading_model_defers_the_job_and_keeps_the_input(app, alice, monkeypatch):
    """A model still loading puts the record back to pending with the reason, re-scheduled, attempt uncounted."""
    service = app.extensions["prism_models"]
    monkeypatch.setattr(service.caption_slot, "get", _raise_not_ready(service.caption_slot))
    response = submit(alice, text=None, image=png_bytes())
    analysis_id = record_id(response)
    with app.app_context():
        analysis = db.session.get(Analysis, analysis_id)
        assert (analysis.status, analysis.attempts, analysis.image_sha256 is not None) == ("pending", 0, True)
        assert analysis.error_info["reason"] == "not_ready" and "not ready" in analysis.error
        scheduled = [task.args for task in get_queue().huey.scheduled()]
        assert (analysis_id,) in scheduled
    page = alice.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert "is not ready yet" in page and "data-poll=" in page and 'http-equiv="refresh"' in page
    monkeypatch.undo()
    with app.app_context():
        assert run(analysis_id) == "done"


def _raise_not_ready(slot):
    from webapp.inference import ModelState, ModelUnavailable

    def get(wait=None):
        raise ModelUnavailable(slot.kind, ModelState.LOADING, "The caption model is not ready yet: loading.", 10)

    return get


def test_failed_job_shows_why_and_the_owner_can_retry(app, alice):
    """A model that cannot load fails the job with the reason; Retry queues it again and it finishes."""
    slot = app.extensions["prism_models"].caption_slot
    real_loader = slot._loader

    def broken(progress):
        raise OSError("weights missing")

    slot._loader = broken
    response = submit(alice, text=None, image=png_bytes())
    analysis_id = record_id(response)
    page = alice.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert "The caption model is not available on this server yet" in page and ">Retry<" in page
    assert "weights missing" not in page  # the diagnosis is for administrators
    assert _state(app, analysis_id)[0] == "failed"
    slot._loader = real_loader
    slot.unload()
    token = csrf_token(alice, f"/history/{analysis_id}")
    assert alice.post(f"/history/{analysis_id}/retry", data={"csrf_token": token}).status_code == 302
    assert _state(app, analysis_id) == ("done", ["caption", "category", "ocr", "reply"], 1)


def test_retry_needs_csrf_and_ownership(app, alice):
    """Retry is a CSRF-protected POST for the owner only; a finished record cannot be retried."""
    response = submit(alice, text="fine")
    analysis_id = record_id(response)
    assert alice.post(f"/history/{analysis_id}/retry").status_code == 400
    token = csrf_token(alice, f"/history/{analysis_id}")
    page = alice.post(f"/history/{analysis_id}/retry", data={"csrf_token": token}, follow_redirects=True)
    assert "Only a failed analysis can be retried." in page.get_data(as_text=True)
    mallory = client_for(app, "mallory")
    other_token = csrf_token(mallory, "/service/")
    assert mallory.post(f"/history/{analysis_id}/retry", data={"csrf_token": other_token}).status_code == 404


def test_an_unexpected_error_fails_the_job_at_once_with_the_step_named(app, alice, monkeypatch):
    """A step that raises anything else (a corrupt stored file, a storage error, a bug) fails the job
    now, saying which step, instead of leaving it running until three leases have expired."""
    from webapp.jobs import runner

    def broken(service, inputs):
        raise ValueError("corrupt")

    monkeypatch.setitem(runner.RUNNERS, "sentiment", broken)
    response = submit(alice, text="fine")
    analysis_id = record_id(response)
    with app.app_context():
        analysis = db.session.get(Analysis, analysis_id)
        assert (analysis.status, analysis.attempts, analysis.lease_expires_at) == ("failed", 1, None)
        assert analysis.error == "The sentiment step failed (ValueError). Retry it to try again."


def test_a_job_that_keeps_dying_fails_after_max_attempts(app, alice):
    """An item whose worker died PRISM_JOB_MAX_ATTEMPTS times is failed with an explanation, not retried forever."""
    analysis_id = _pending(app, alice, text="hi")
    with app.app_context():
        db.session.execute(
            update(Analysis)
            .where(Analysis.id == analysis_id)
            .values(status="running", attempts=3, lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
        assert run(analysis_id) == "failed"
        assert "started 3 times without finishing" in db.session.get(Analysis, analysis_id).error


def test_sweep_requeues_forgotten_and_expired_items_only(app, alice):
    """The sweep queues pending rows missing from the queue and expired leases, not live or finished ones."""
    forgotten = _pending(app, alice, text="one")
    expired = _pending(app, alice, text="two")
    live = _pending(app, alice, text="three")
    finished = _pending(app, alice, text="four")
    with app.app_context():
        run(finished)
        huey = get_queue().huey
        huey.storage.flush_queue()  # as if the enqueue never happened (web process died after its commit)
        past = utcnow() - timedelta(minutes=5)
        db.session.execute(update(Analysis).where(Analysis.id == forgotten).values(queued_at=past))
        db.session.execute(
            update(Analysis).where(Analysis.id == expired).values(status="running", lease_expires_at=past)
        )
        db.session.execute(
            update(Analysis)
            .where(Analysis.id == live)
            .values(status="running", lease_expires_at=utcnow() + timedelta(minutes=5))
        )
        db.session.commit()
        assert requeue_stalled() == 2  # immediate mode: re-queued jobs run right here
    assert _state(app, forgotten)[0] == "done" and _state(app, expired)[0] == "done"
    assert _state(app, live)[0] == "running" and _state(app, finished)[2] == 1


def test_unreachable_queue_loses_nothing(app, alice, monkeypatch):
    """If the queue cannot take the job, the submission still succeeds and the row waits for the sweep."""
    queue = get_queue_for(app)
    queue.huey.immediate = False

    def down(*args, **kwargs):
        raise ConnectionError("queue down")

    monkeypatch.setattr(queue.huey.storage, "enqueue", down)
    try:
        response = submit(alice, text="hello")
    finally:
        monkeypatch.undo()
        queue.huey.immediate = True
    assert response.status_code == 302
    analysis_id = record_id(response)
    assert _state(app, analysis_id)[0] == "pending"
    with app.app_context():
        db.session.execute(
            update(Analysis).where(Analysis.id == analysis_id).values(queued_at=utcnow() - timedelta(minutes=1))
        )
        db.session.commit()
        assert requeue_stalled() == 1
    assert _state(app, analysis_id)[0] == "done"


@pytest.mark.parametrize("count", [30])
def test_teacher_sized_batch_runs_with_progress(app, count):
    """A batch of 30 photos becomes 30 records; the batch page and status report done / failed / total."""
    from tests.conftest import client_for

    teacher = client_for(app, "tina", role="teacher")
    token = csrf_token(teacher, "/education/")
    import io

    files = [(io.BytesIO(png_bytes(color=(n, 2 * n, 3 * n))), f"page-{n}.png") for n in range(count)]
    response = teacher.post(
        "/education/", data={"csrf_token": token, "image": files}, content_type="multipart/form-data"
    )
    assert response.status_code == 302 and "/batches/" in response.headers["Location"]
    batch_url = response.headers["Location"]
    status = teacher.get(batch_url + "/status").json
    assert (status["total"], status["done"], status["failed"], status["finished"]) == (count, count, 0, True)
    page = teacher.get(batch_url).get_data(as_text=True)
    assert f"{count} done, 0 failed, of {count}." in page and "page-29.png" in page
    with app.app_context():
        assert (
            db.session.scalar(db.select(db.func.count(Analysis.id)).where(Analysis.user_id == user_id(app, "tina")))
            == count
        )


def test_a_prediction_stored_meanwhile_by_another_worker_still_finishes_the_job(app, monkeypatch):
    """If another worker stored the last kind first (unique constraint), this one marks the job done, once."""
    from tests.conftest import client_for, fake_sentiment
    from webapp.jobs import runner as job_runner
    from webapp.models import SentimentPrediction

    # An education text gets sentiment only, so sentiment is the job's last kind.
    teacher = client_for(app, "tina", role="teacher")
    analysis_id = _pending(app, teacher, scenario="education", text="great service")
    real = job_runner.RUNNERS["sentiment"]

    def raced(service, inputs):
        result = real(service, inputs)
        with app.app_context():  # a second session: the other worker, committing first
            row = SentimentPrediction.from_result(fake_sentiment("neutral"))
            row.analysis_id = analysis_id
            db.session.add(row)
            db.session.commit()
        return result

    monkeypatch.setitem(job_runner.RUNNERS, "sentiment", raced)
    with app.app_context():
        assert run(analysis_id) == "done"
        analysis = db.session.get(Analysis, analysis_id)
        assert analysis.status == "done" and analysis.lease_expires_at is None
        assert [(p.kind, p.value) for p in analysis.predictions] == [("sentiment", "neutral")]


def test_batch_page_reads_in_a_fixed_number_of_queries_and_audits_admin_reads(app, alice):
    """A batch page loads its items' predictions with the batch; an admin reading someone's batch is
    audited, as for records."""
    from tests.conftest import audit_rows, queries_during

    def batch_of(count: int) -> int:
        data = {
            "csrf_token": csrf_token(alice, "/service/"),
            "image": [(io.BytesIO(png_bytes(color=(n, 9, 9))), f"{n}.png") for n in range(count)],
        }
        return record_id(alice.post("/service/", data=data, content_type="multipart/form-data"))

    small, large = batch_of(2), batch_of(5)
    two = queries_during(app, lambda: alice.get(f"/batches/{small}"))
    five = queries_during(app, lambda: alice.get(f"/batches/{large}"))
    assert two == five
    admin = client_for(app, "boss", role="admin")
    assert admin.get(f"/batches/{large}").status_code == 200
    assert [row["details"]["part"] for row in audit_rows(app, "analysis.view_other")] == ["batch"]
