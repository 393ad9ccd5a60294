"""History: own records only, ordering, pagination, filters, detail, image serving, deletion and exports."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import (
    add_analysis,
    audit_rows,
    client_for,
    csrf_token,
    make_user,
    png_bytes,
    record_id,
    reply_draft,
    submit,
    user_id,
)
from webapp import exports
from webapp.extensions import db
from webapp.models import Analysis, User
from webapp.storage import get_storage
from webapp.uploads import image_key

# History queries, filters, search and exports behave the same on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases

UNCERTAIN = {"negative": 0.335, "neutral": 0.33, "positive": 0.335}


def row(app, analysis_id: int) -> Analysis | None:
    with app.app_context():
        found = db.session.get(Analysis, analysis_id)
        if found is not None:
            db.session.expunge(found)
        return found


def image_path(app, analysis: Analysis) -> Path:
    return Path(app.config["UPLOAD_FOLDER"]) / analysis.image_sha256[:2] / f"{analysis.image_sha256}.png"


def detail_links(body: str) -> list[int]:
    """Record ids linked from a history table, in page order (row links carry the list's query)."""
    return [int(found) for found in re.findall(r'class="row-link" href="/history/(\d+)[?"]', body)]


def cells(body: str, analysis_id: int) -> list[str]:
    """The cells of the history-table row of record ``analysis_id`` (caption and sentiment are the last two)."""
    found = re.search(rf'<tr[^>]*>\s*<td[^>]*><a class="row-link" href="/history/{analysis_id}[?"].*?</tr>', body, re.S)
    assert found, f"no row for record {analysis_id}"
    return re.findall(r"<td[^>]*>(.*?)</td>", found.group(0), re.S)


def set_role(app, username: str, role: str) -> None:
    """Change a role in the database, as an admin would; the next request sees it."""
    with app.app_context():
        db.session.scalar(db.select(User).where(User.username == username)).role = role
        db.session.commit()


def decide(client, analysis_id: int, kind: str, decision: str, value: str | None = None, comment: str = ""):
    """Review the record's ``kind`` prediction as a browser would: read the form on the record page, post it."""
    page = client.get(f"/history/{analysis_id}").get_data(as_text=True)
    found = re.search(rf'class="card prediction prediction-{kind} [^"]*" id="prediction-(\d+)"', page)
    assert found, f"no {kind} prediction on record {analysis_id}"
    prediction_id = int(found.group(1))
    assert f'action="/review/predictions/{prediction_id}"' in page
    data = {"csrf_token": csrf_token(client, f"/history/{analysis_id}"), "decision": decision, "comment": comment}
    if value is not None:
        data["value"] = value
    response = client.post(f"/review/predictions/{prediction_id}", data=data)
    assert response.status_code == 303, response.status_code
    assert response.headers["Location"] == f"/history/{analysis_id}#prediction-{prediction_id}"
    return response


@pytest.fixture
def bob(app):
    return client_for(app, "bob")


def test_history_requires_login(client):
    """Anonymous visitors to every history route are redirected to login."""
    for path in ("/history/", "/history/1", "/history/1/image", "/history/export.csv", "/history/export.json"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login")


def test_history_lists_only_own_records_newest_first(app, alice):
    """The list shows the user's own records, newest first, and none of another user's."""
    alice_id = user_id(app, "alice")
    bob_id = make_user(app, "bob")
    old = add_analysis(app, alice_id, text="alice old", created_at=datetime(2024, 1, 1, 9))
    new = add_analysis(app, alice_id, text="alice new", created_at=datetime(2024, 6, 1, 9))
    add_analysis(app, bob_id, text="bob secret", created_at=datetime(2024, 7, 1, 9))
    body = alice.get("/history/").get_data(as_text=True)
    assert detail_links(body) == [new, old]
    assert "bob secret" not in body


def test_history_empty_state(alice):
    """A user without records sees the empty-state links to the scenarios."""
    body = alice.get("/history/").get_data(as_text=True)
    assert "Nothing here yet." in body


def test_history_pagination(app, alice):
    """PRISM_PAGE_SIZE splits the list into pages with prev/next links, newest first."""
    app.config["PRISM_PAGE_SIZE"] = 2
    alice_id = user_id(app, "alice")
    ids = [add_analysis(app, alice_id, text=f"entry {n}", created_at=datetime(2024, 1, n + 1)) for n in range(5)]
    newest_first = ids[::-1]
    pages = [alice.get(f"/history/?page={n}").get_data(as_text=True) for n in (1, 2, 3)]
    assert [detail_links(body) for body in pages] == [newest_first[:2], newest_first[2:4], newest_first[4:]]
    assert "Page 1 of 3 · 5 records" in pages[0]
    assert 'rel="next"' in pages[0] and 'rel="prev"' not in pages[0]
    assert 'rel="prev"' in pages[2] and 'rel="next"' not in pages[2]
    assert detail_links(alice.get("/history/?page=9").get_data(as_text=True)) == []


def test_pagination_links_keep_filters(app, alice):
    """Next-page links carry the active filters."""
    app.config["PRISM_PAGE_SIZE"] = 1
    alice_id = user_id(app, "alice")
    for _ in range(2):
        add_analysis(app, alice_id, scenario="medical", text="x")
    body = alice.get("/history/?scenario=medical").get_data(as_text=True)
    assert re.search(r'href="/history/\?page=2&amp;scenario=medical"', body)


@pytest.fixture
def mixed_history(app, alice):
    """Records across scenarios and sentiments, made through the real form (alice's role switched to be allowed)."""
    ids = {
        "happy": record_id(submit(alice, "service", text="Thanks, great service!")),
        "angry": record_id(submit(alice, "service", text="The parcel arrived broken")),
    }
    set_role(app, "alice", "teacher")
    ids["neutral"] = record_id(submit(alice, "education", text="The lesson covered fractions"))
    set_role(app, "alice", "clinician")
    ids["picture"] = record_id(submit(alice, "medical", text=None, image=png_bytes()))
    set_role(app, "alice", "user")
    return ids


def test_filter_by_scenario(alice, mixed_history):
    """?scenario= keeps only that scenario."""
    body = alice.get("/history/?scenario=service").get_data(as_text=True)
    assert sorted(detail_links(body)) == sorted([mixed_history["happy"], mixed_history["angry"]])


def test_filter_by_sentiment(alice, mixed_history):
    """?sentiment= keeps only records with that label."""
    for label, key in (("positive", "happy"), ("negative", "angry"), ("neutral", "neutral")):
        body = alice.get(f"/history/?sentiment={label}").get_data(as_text=True)
        assert detail_links(body) == [mixed_history[key]], label


def test_unknown_filter_values_are_ignored(alice, mixed_history):
    """Unknown scenario, sentiment, review, confidence or status values are ignored, not matched or errors."""
    response = alice.get("/history/?scenario=<script>&sentiment=ecstatic&review=maybe&confidence=total&status=lost")
    assert response.status_code == 200
    assert len(detail_links(response.get_data(as_text=True))) == 4


def test_text_search_matches_text_and_caption(alice, mixed_history):
    """?q= searches the text and the caption, case-insensitively for ASCII."""
    assert detail_links(alice.get("/history/?q=PARCEL").get_data(as_text=True)) == [mixed_history["angry"]]
    assert detail_links(alice.get("/history/?q=mostly red").get_data(as_text=True)) == [mixed_history["picture"]]


def test_chinese_text_search(app, alice):
    """Chinese text is found by a Chinese substring."""
    wanted = record_id(submit(alice, "service", text="我觉得这次作业很有意思。"))
    submit(alice, "service", text="订单到了但是坏了")
    body = alice.get("/history/", query_string={"q": "作业"}).get_data(as_text=True)
    assert detail_links(body) == [wanted]


@pytest.mark.parametrize(
    "query, expected",
    [("100%", "literal percent"), ("a_b", "literal underscore"), ("\\", "backslash")],
)
def test_search_treats_like_wildcards_literally(app, alice, query, expected):
    """'%', '_' and '\\' in a search match only themselves, not any character."""
    alice_id = user_id(app, "alice")
    records = {
        "literal percent": add_analysis(app, alice_id, text="we are 100% sure"),
        "percent decoy": add_analysis(app, alice_id, text="we are 1000 sure"),
        "literal underscore": add_analysis(app, alice_id, text="file a_b.txt"),
        "underscore decoy": add_analysis(app, alice_id, text="file axb.txt"),
        "backslash": add_analysis(app, alice_id, text="C:\\temp"),
    }
    body = alice.get("/history/", query_string={"q": query}).get_data(as_text=True)
    assert detail_links(body) == [records[expected]]


def test_filter_by_date_range(app, alice):
    """?from= and ?to= are inclusive whole days."""
    alice_id = user_id(app, "alice")
    january = add_analysis(app, alice_id, text="a", created_at=datetime(2024, 1, 10, 12))
    february = add_analysis(app, alice_id, text="b", created_at=datetime(2024, 2, 15, 23, 59))
    march = add_analysis(app, alice_id, text="c", created_at=datetime(2024, 3, 20, 0, 0))
    assert detail_links(alice.get("/history/?from=2024-02-15").get_data(as_text=True)) == [march, february]
    assert detail_links(alice.get("/history/?to=2024-02-15").get_data(as_text=True)) == [february, january]
    both = alice.get("/history/?from=2024-02-01&to=2024-02-28").get_data(as_text=True)
    assert detail_links(both) == [february]
    assert len(detail_links(alice.get("/history/?from=not-a-date").get_data(as_text=True))) == 3


def test_filter_by_status(app, alice):
    """?status= keeps only records whose job is in that state."""
    alice_id = user_id(app, "alice")
    records = {
        "done": add_analysis(app, alice_id, text="finished", sentiment="positive"),
        "failed": add_analysis(app, alice_id, text="broke", status="failed", error="The model raised."),
        "pending": add_analysis(app, alice_id, text="waiting", status="pending", tasks=["sentiment"]),
    }
    for status, analysis_id in records.items():
        assert detail_links(alice.get(f"/history/?status={status}").get_data(as_text=True)) == [analysis_id], status
    assert detail_links(alice.get("/history/?status=running").get_data(as_text=True)) == []


def test_filter_by_review_state(app, alice):
    """?review= keeps records with a prediction in that state, after decisions posted through the review form."""
    alice_id = user_id(app, "alice")
    records = {
        state: add_analysis(app, alice_id, text=state, sentiment="positive", created_at=datetime(2024, 1, day))
        for day, state in enumerate(("accepted", "corrected", "rejected", "unreviewed"), start=1)
    }
    add_analysis(app, alice_id, text="no predictions", status="failed")
    decide(alice, records["accepted"], "sentiment", "accept")
    decide(alice, records["corrected"], "sentiment", "correct", value="neutral")
    decide(alice, records["rejected"], "sentiment", "reject")
    for state, analysis_id in records.items():
        assert detail_links(alice.get(f"/history/?review={state}").get_data(as_text=True)) == [analysis_id], state
    # A record matches every state one of its predictions is in.
    both = add_analysis(app, alice_id, text="two", caption="a cat", sentiment="negative")
    decide(alice, both, "caption", "accept")
    assert detail_links(alice.get("/history/?review=accepted").get_data(as_text=True)) == [both, records["accepted"]]
    assert detail_links(alice.get("/history/?review=unreviewed").get_data(as_text=True)) == [
        both,
        records["unreviewed"],
    ]


def test_filter_by_confidence(app, alice):
    """?confidence= keeps records with a prediction in that band; "uncertain" is a near tie or a weak top class."""
    alice_id = user_id(app, "alice")
    records = {
        name: add_analysis(app, alice_id, text=name, sentiment=scores, created_at=datetime(2024, 1, day))
        for day, (name, scores) in enumerate(
            (
                ("high", {"negative": 0.05, "neutral": 0.05, "positive": 0.9}),
                ("medium", {"negative": 0.7, "neutral": 0.2, "positive": 0.1}),
                ("low", {"negative": 0.05, "neutral": 0.55, "positive": 0.4}),
                ("uncertain", UNCERTAIN),  # a near tie: margin 0
                ("weak", {"negative": 0.25, "neutral": 0.3, "positive": 0.45}),  # clear margin, weak top class
            ),
            start=1,
        )
    }
    add_analysis(app, alice_id, caption="a caption has no confidence")

    def listed(confidence: str) -> list[int]:
        return detail_links(alice.get(f"/history/?confidence={confidence}").get_data(as_text=True))

    assert listed("high") == [records["high"]]
    assert listed("medium") == [records["medium"]]
    assert listed("low") == [records["weak"], records["uncertain"], records["low"]]  # uncertain ones are low too
    assert listed("uncertain") == [records["weak"], records["uncertain"]]


def test_sentiment_filter_matches_the_human_correction(app, alice):
    """Once a review corrects a sentiment, ?sentiment= matches the human value, not the AI's; rejected matches none."""
    happy = record_id(submit(alice, text="Thanks, great service!"))
    angry = record_id(submit(alice, text="The parcel arrived broken"))
    assert detail_links(alice.get("/history/?sentiment=positive").get_data(as_text=True)) == [happy]

    decide(alice, happy, "sentiment", "correct", value="negative", comment="sarcasm")

    assert detail_links(alice.get("/history/?sentiment=positive").get_data(as_text=True)) == []
    assert detail_links(alice.get("/history/?sentiment=negative").get_data(as_text=True)) == [angry, happy]
    decide(alice, angry, "sentiment", "reject")
    assert detail_links(alice.get("/history/?sentiment=negative").get_data(as_text=True)) == [happy]
    assert detail_links(alice.get("/history/?review=corrected").get_data(as_text=True)) == [happy]


def test_history_table_shows_the_value_that_counts(app, alice):
    """The list shows a corrected sentiment as the human value marked human, and a rejected one as no value."""
    corrected = record_id(submit(alice, text="Thanks, great service!"))
    rejected = record_id(submit(alice, text="The parcel arrived broken"))
    untouched = record_id(submit(alice, text="Thanks a lot, great"))
    decide(alice, corrected, "sentiment", "correct", value="negative")
    decide(alice, rejected, "sentiment", "reject")
    body = alice.get("/history/").get_data(as_text=True)

    cell = cells(body, corrected)[-1]
    assert 'class="sentiment sentiment-negative"' in cell and "Negative" in cell
    assert "Positive" not in cell and "✓ human" in cell
    cell = cells(body, rejected)[-1]
    assert "sentiment-negative" not in cell and "—" in cell and "rejected" in cell
    cell = cells(body, untouched)[-1]
    assert 'class="sentiment sentiment-positive"' in cell and "80% · high" in cell and "human" not in cell


def test_history_never_shows_an_uncertain_sentiment_as_a_confident_label(app, alice):
    """An uncertain sentiment's cell is marked sentiment-uncertain and says "uncertain"; a confident one is not."""
    alice_id = user_id(app, "alice")
    uncertain = add_analysis(app, alice_id, text="hmm", sentiment=UNCERTAIN)
    sure = add_analysis(app, alice_id, text="yes", sentiment={"negative": 0.05, "neutral": 0.05, "positive": 0.9})
    body = alice.get("/history/").get_data(as_text=True)

    cell = cells(body, uncertain)[-1]
    assert re.search(r'class="sentiment sentiment-\w+ sentiment-uncertain"', cell)
    assert "uncertain" in re.sub(r"<[^>]+>", " ", cell)  # said in words, not only by a class
    assert "· high" not in cell and "· low" not in cell
    cell = cells(body, sure)[-1]
    assert 'class="sentiment sentiment-positive"' in cell and "uncertain" not in cell and "90% · high" in cell


def test_exports_show_the_human_value_reviewer_and_keep_the_ai_original(app, alice):
    """After a correction, CSV and JSON give the human value, human_confirmed, the reviewer, and the AI original."""
    reviewed = record_id(submit(alice, text="Thanks, great service!", image=png_bytes()))
    untouched = record_id(submit(alice, text="The parcel arrived broken"))
    decide(alice, reviewed, "sentiment", "correct", value="neutral", comment="polite, not happy")
    decide(alice, reviewed, "caption", "accept")

    rows = {int(r["id"]): r for r in _csv_rows(alice.get("/history/export.csv"))}
    exported = rows[reviewed]
    assert (exported["sentiment"], exported["sentiment_ai"], exported["sentiment_review"]) == (
        "neutral",
        "positive",
        "corrected",
    )
    assert exported["sentiment_human_confirmed"] == "True" and exported["sentiment_reviewer"] == "alice"
    assert exported["score_positive"] == "0.8"  # the model's scores are kept as they were
    assert exported["caption"] == exported["caption_ai"] == "a 64x48 picture, mostly red"
    assert (exported["caption_review"], exported["caption_human_confirmed"]) == ("accepted", "True")
    other = rows[untouched]
    assert (other["sentiment"], other["sentiment_human_confirmed"], other["sentiment_reviewer"]) == (
        "negative",
        "False",
        "",
    )

    items = {item["id"]: item for item in alice.get("/history/export.json").json}
    item = items[reviewed]
    assert item["values"] == {
        "ocr": "TEXT 64x48 red",
        "caption": "a 64x48 picture, mostly red",
        "sentiment": "neutral",
        "category": "billing",
        "reply": reply_draft(app, "billing", "positive"),  # drafted from the AI's sentiment, before the review
        "fusion": "positive",  # fused from the AI's sentiment, before the review
        "agreement": "mismatch",
    }
    sentiment = next(p for p in item["predictions"] if p["kind"] == "sentiment")
    assert sentiment["value"] == "neutral" and sentiment["human_confirmed"] is True
    assert sentiment["output"]["label"] == "positive"
    review = sentiment["review"]
    assert (review["state"], review["value"], review["reviewer"], review["comment"]) == (
        "corrected",
        "neutral",
        "alice",
        "polite, not happy",
    )
    assert items[untouched]["values"] == {
        "sentiment": "negative",
        "category": "shipping",
        "reply": reply_draft(app, "shipping", "negative"),
    }
    assert items[untouched]["predictions"][0]["human_confirmed"] is False


def test_detail_shows_results_and_provenance(app, alice):
    """The record page shows caption, sentiment label, confidence, every class score, model ids and latency."""
    analysis_id = record_id(submit(alice, "service", text="Thanks, great service!", image=png_bytes(size=(20, 10))))
    response = alice.get(f"/history/{analysis_id}")
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "a 20x10 picture, mostly red" in body
    assert "Positive" in body
    assert "80% · high" in body
    for label, percent in (("Negative", "5.0%"), ("Neutral", "15.0%"), ("Positive", "80.0%")):
        assert re.search(rf"<th scope=\"row\">{label}</th><td>{re.escape(percent)}</td>", body), label
    assert "prism/fake-caption" in body and "prism/fake-sentiment" in body
    assert "prism/fake-ocr" in body and "prism/fake-embedding" in body and "prism/reply-templates" in body
    with app.app_context():
        analysis = db.session.get(Analysis, analysis_id)
        assert analysis.status == "done"
        assert [(p.kind, p.latency_ms is not None) for p in analysis.predictions] == [
            ("ocr", True),
            ("caption", True),
            ("sentiment", True),
            ("category", True),
            ("reply", True),
            ("fusion", True),
            ("agreement", True),
        ]
    assert body.count(" ms</dd>") == 7
    assert f'src="/history/{analysis_id}/image"' in body


def test_detail_escapes_user_text(app, alice):
    """User text is HTML-escaped on the record page."""
    analysis_id = record_id(submit(alice, text="<script>alert('x')</script>"))
    body = alice.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert "<script>alert" not in body
    assert "&lt;script&gt;alert" in body


def test_image_served_with_type_and_private_cache(app, alice):
    """The image (the stored re-encoding of the upload) is served with its own MIME type, private
    no-store caching and nosniff."""
    jpeg = png_bytes(fmt="JPEG")
    analysis_id = record_id(submit(alice, text=None, image=jpeg, filename="photo.jpg"))
    response = alice.get(f"/history/{analysis_id}/image")
    assert response.status_code == 200
    assert response.mimetype == "image/jpeg"
    with app.app_context():
        stored = db.session.get(Analysis, analysis_id)
        assert response.data == get_storage().get(image_key(stored.image_sha256, stored.image_format))
    assert Image.open(io.BytesIO(response.data)).size == Image.open(io.BytesIO(jpeg)).size
    assert response.headers["Cache-Control"] == "private, no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_image_of_text_only_record_is_404(app, alice):
    """A record without an image has no image URL."""
    analysis_id = record_id(submit(alice, text="just words"))
    assert alice.get(f"/history/{analysis_id}/image").status_code == 404


def test_other_users_record_is_404_everywhere(app, alice, bob):
    """Another user's id is 404 for detail, image and delete, and their row and file are untouched."""
    bobs = record_id(submit(bob, text="bob's private note", image=png_bytes(color=(1, 2, 3))))
    analysis = row(app, bobs)
    assert alice.get(f"/history/{bobs}").status_code == 404
    assert alice.get(f"/history/{bobs}/image").status_code == 404
    token = csrf_token(alice, "/service/")
    assert alice.post(f"/history/{bobs}/delete", data={"csrf_token": token}).status_code == 404
    assert row(app, bobs) is not None
    assert image_path(app, analysis).is_file()
    # Indistinguishable from a record that does not exist.
    assert alice.get("/history/999999").status_code == 404
    assert audit_rows(app, "analysis.view_other") == []


def test_delete_removes_row_and_file(app, alice):
    """Deleting (POST with CSRF) removes the row and its image file, and audits it."""
    analysis_id = record_id(submit(alice, text=None, image=png_bytes()))
    path = image_path(app, row(app, analysis_id))
    assert path.is_file()
    response = alice.post(f"/history/{analysis_id}/delete", data={"csrf_token": csrf_token(alice, "/service/")})
    assert response.status_code == 302
    assert response.headers["Location"] == "/history/"
    assert row(app, analysis_id) is None
    assert not path.exists()
    assert [r["target_id"] for r in audit_rows(app, "analysis.delete")] == [str(analysis_id)]


def test_delete_needs_post_and_csrf(app, alice):
    """GET on the delete URL is 405 and a POST without CSRF is 400; the record stays."""
    analysis_id = record_id(submit(alice, text="keep me"))
    assert alice.get(f"/history/{analysis_id}/delete").status_code == 405
    assert alice.post(f"/history/{analysis_id}/delete").status_code == 400
    assert row(app, analysis_id) is not None


def test_delete_keeps_file_shared_with_another_record(app, alice, bob):
    """A file still used by another record (same content, any user) survives the deletion."""
    image = png_bytes(color=(9, 9, 9))
    first = record_id(submit(alice, text=None, image=image))
    second = record_id(submit(alice, text=None, image=image))
    bobs = record_id(submit(bob, text=None, image=image))
    path = image_path(app, row(app, first))
    alice.post(f"/history/{first}/delete", data={"csrf_token": csrf_token(alice, "/service/")})
    assert row(app, first) is None and path.is_file()
    alice.post(f"/history/{second}/delete", data={"csrf_token": csrf_token(alice, "/service/")})
    assert row(app, second) is None and path.is_file()  # bob still uses it
    assert bob.get(f"/history/{bobs}/image").status_code == 200
    bob.post(f"/history/{bobs}/delete", data={"csrf_token": csrf_token(bob, "/service/")})
    assert not path.exists()


def _csv_rows(response) -> list[dict]:
    text = response.get_data(as_text=True)
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:])))


def test_csv_export_own_rows_with_header_and_bom(app, alice, bob):
    """The CSV export starts with a BOM and the documented header, and holds only the user's rows."""
    mine = record_id(submit(alice, text="订单到了但是坏了"))
    submit(bob, text="bob only")
    response = alice.get("/history/export.csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="prism-history-')
    assert response.headers["Cache-Control"] == "private, no-store"
    rows = _csv_rows(response)
    assert [(r["id"], r["owner"], r["status"], r["text"], r["sentiment"], r["sentiment_ai"]) for r in rows] == [
        (str(mine), "alice", "done", "订单到了但是坏了", "negative", "negative")
    ]
    assert rows[0]["sentiment_review"] == "unreviewed" and rows[0]["sentiment_human_confirmed"] == "False"
    assert rows[0]["sentiment_reviewer"] == "" and rows[0]["caption"] == "" and rows[0]["caption_model"] == ""
    assert (rows[0]["score_negative"], rows[0]["score_neutral"], rows[0]["score_positive"]) == ("0.8", "0.15", "0.05")


def test_csv_header_is_the_documented_column_list(alice):
    """The header names the base columns, then per kind value/review/AI/model columns and the kind's own
    (sentiment scores, grade total), then app_version."""
    per_kind = ["", "_human_confirmed", "_review", "_reviewer", "_ai", "_confidence", "_uncertain"]
    per_kind += ["_model", "_revision", "_precision"]
    expected = ["id", "created_at", "owner", "scenario", "status", "text", "image_filename", "image_sha256"]
    expected += ["caption" + suffix for suffix in per_kind] + ["sentiment" + suffix for suffix in per_kind]
    expected += ["score_negative", "score_neutral", "score_positive"]
    expected += ["ocr" + suffix for suffix in per_kind]
    expected += ["grade" + suffix for suffix in per_kind] + ["grade_total"]
    expected += ["fusion" + suffix for suffix in per_kind] + ["fused_negative", "fused_neutral", "fused_positive"]
    expected += ["agreement" + suffix for suffix in per_kind] + ["agreement_similarity"]
    expected += ["category" + suffix for suffix in per_kind] + ["reply" + suffix for suffix in per_kind]
    expected += ["app_version"]
    text = alice.get("/history/export.csv").get_data(as_text=True)
    assert next(csv.reader(io.StringIO(text[1:]))) == expected


def test_csv_export_of_empty_history_has_header(alice):
    """With no records the CSV is just the BOM and the header."""
    text = alice.get("/history/export.csv").get_data(as_text=True)
    assert text.startswith("\ufeffid,created_at,owner,scenario,status,text")
    assert text.count("\n") == 1


def test_csv_export_honours_filters(app, alice, mixed_history):
    """Filters in the query string apply to the export."""
    rows = _csv_rows(alice.get("/history/export.csv?sentiment=negative"))
    assert [int(r["id"]) for r in rows] == [mixed_history["angry"]]


@pytest.mark.parametrize("text", ['=HYPERLINK("http://evil.example","x")', "+1+2", "-2+3", "@SUM(A1)"])
def test_csv_export_neutralises_formulas(app, alice, text):
    """Cells that a spreadsheet would run as a formula are prefixed with a quote."""
    record_id(submit(alice, text=text))
    [exported] = _csv_rows(alice.get("/history/export.csv"))
    assert exported["text"] == "'" + text


def test_json_export(app, alice, bob):
    """The JSON export parses, holds only the user's records, their predictions and the values that count."""
    mine = record_id(submit(alice, text="Thanks, great service!", image=png_bytes()))
    submit(bob, text="bob only")
    response = alice.get("/history/export.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    data = json.loads(response.get_data(as_text=True))
    assert [item["id"] for item in data] == [mine]
    item = data[0]
    assert item["owner"] == "alice" and item["scenario"] == "service" and item["status"] == "done"
    assert item["progress"] == {"done": 7, "total": 7}
    ocr, caption, sentiment, category, reply, _fusion, _agreement = item["predictions"]
    assert (ocr["kind"], ocr["model"]) == ("ocr", "prism/fake-ocr")
    assert (caption["kind"], caption["model"]) == ("caption", "prism/fake-caption")
    assert (sentiment["kind"], sentiment["model"]) == ("sentiment", "prism/fake-sentiment")
    assert (category["kind"], category["model"]) == ("category", "prism/fake-embedding")
    assert (reply["kind"], reply["model"]) == ("reply", "prism/reply-templates")
    assert sentiment["output"]["label"] == "positive" and sentiment["band"] == "high"
    assert set(sentiment["output"]["scores"]) == {"negative", "neutral", "positive"}
    assert sentiment["human_confirmed"] is False and sentiment["review"]["state"] == "unreviewed"
    assert item["values"] == {
        "ocr": "TEXT 64x48 red",
        "caption": "a 64x48 picture, mostly red",
        "sentiment": "positive",
        "category": "billing",
        "reply": reply_draft(app, "billing", "positive"),
        "fusion": "positive",
        "agreement": "mismatch",
    }
    assert item["image"]["sha256"] == row(app, mine).image_sha256


def test_export_streams_in_order_across_batches(app, alice, monkeypatch):
    """Exports larger than one batch keep the newest-first order and include every row once."""
    monkeypatch.setattr(exports, "_BATCH_SIZE", 2)
    alice_id = user_id(app, "alice")
    ids = [add_analysis(app, alice_id, text=f"n{n}", created_at=datetime(2024, 1, n + 1)) for n in range(5)]
    assert [int(r["id"]) for r in _csv_rows(alice.get("/history/export.csv"))] == ids[::-1]
    assert [item["id"] for item in alice.get("/history/export.json").json] == ids[::-1]


def test_export_download_does_not_hold_the_database_write_lock(app, alice, tmp_path):
    """While a client is still reading an export, other connections can write (no transaction is left open)."""
    alice_id = user_id(app, "alice")
    for n in range(3):
        add_analysis(app, alice_id, text=f"row {n}")
    response = alice.get("/history/export.csv", buffered=False)
    chunks = iter(response.response)
    first = next(chunks)
    assert b"row 2" in first
    other = sqlite3.connect(tmp_path / "test.sqlite", timeout=0.5, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # raises "database is locked" if the export holds the lock
        other.execute("ROLLBACK")
    finally:
        other.close()
    rest = b"".join(chunks)
    response.close()
    assert b"row 1" in rest and b"row 0" in rest


def test_export_is_audited(app, alice):
    """Each export writes a history.export row with its format and filters."""
    alice.get("/history/export.csv?scenario=medical")
    alice.get("/history/export.json")
    rows = audit_rows(app, "history.export")
    assert [(r["actor_name"], r["details"]["format"], r["details"]["filters"]) for r in rows] == [
        ("alice", "csv", {"scenario": "medical"}),
        ("alice", "json", {}),
    ]


def test_unknown_export_format_is_404(alice):
    """Only csv and json exports exist."""
    assert alice.get("/history/export.xml").status_code == 404
