"""Multimodal fusion: the late-fused sentiment and the image-text agreement, from the settings to the pages.

The fake backend scores a text with a positive word 0.05/0.15/0.80 (negative/neutral/positive), one
with a negative word the reverse, and anything else 0.2/0.6/0.2; it captions a 64x48 red PNG "a 64x48
picture, mostly red" and reads "TEXT 64x48 red" from it. Its embedding is a hashed bag of word stems:
texts sharing words are close, others near 0.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from tests.conftest import client_for, make_app, make_token, png_bytes, record_id, submit
from tests.test_history import decide
from webapp.extensions import db
from webapp.fusion import CAPTION_AND_OCR, JOINT_EMBEDDING, fuse, parse_threshold, parse_weights
from webapp.models import Analysis, Prediction
from webapp.models.prediction import CorrectionError

WEIGHTS = {"text": 0.6, "caption": 0.2, "ocr": 0.2}
POSITIVE = {"negative": 0.05, "neutral": 0.15, "positive": 0.80}
NEUTRAL = {"negative": 0.2, "neutral": 0.6, "positive": 0.2}
UNRELATED = "Thanks, great service!"  # shares no word with the red picture's caption or text
RELATED = "The picture is mostly red text, thanks"  # picture, mostly, red, text: shared


def test_fusion_is_the_weighted_mean_of_the_parts():
    """fused(level) = sum w_i p_i(level) / sum w_i; the label is the argmax, its score the confidence."""
    fused = fuse({"text": POSITIVE, "caption": NEUTRAL, "ocr": NEUTRAL}, WEIGHTS)
    assert fused["scores"] == pytest.approx({"negative": 0.11, "neutral": 0.33, "positive": 0.56})
    assert (fused["label"], fused["score"]) == ("positive", pytest.approx(0.56))
    assert fused["weights"] == pytest.approx(WEIGHTS)


def test_a_missing_part_drops_out_and_the_weights_are_renormalised():
    """Without OCR text, text and caption weigh 0.75 and 0.25; with a weight of 0 a part is ignored."""
    fused = fuse({"text": POSITIVE, "caption": NEUTRAL, "ocr": None}, WEIGHTS)
    assert fused["weights"] == pytest.approx({"text": 0.75, "caption": 0.25})
    assert fused["scores"]["positive"] == pytest.approx(0.75 * 0.8 + 0.25 * 0.2)
    assert fuse({"text": POSITIVE, "caption": NEUTRAL}, {"text": 0.0, "caption": 1.0})["label"] == "neutral"
    with pytest.raises(ValueError):
        fuse({"text": None, "caption": {}}, WEIGHTS)


def test_a_part_without_a_neutral_score_counts_zero_there():
    """Beside three-level parts, a part with no neutral score adds nothing to neutral."""
    fused = fuse({"text": {"negative": 0.1, "positive": 0.9}, "caption": NEUTRAL}, {"text": 1, "caption": 1})
    assert fused["scores"] == pytest.approx({"negative": 0.15, "neutral": 0.3, "positive": 0.55})


def test_two_class_parts_are_labelled_like_one_text_of_a_two_class_model():
    """With a two-class model the fused P(positive) inside the neutral range is "neutral" (labels.normalise)."""
    parts = {"text": {"negative": 0.2, "positive": 0.8}, "caption": {"negative": 0.8, "positive": 0.2}}
    fused = fuse(parts, {"text": 1, "caption": 1}, neutral_range=(0.35, 0.65))
    assert fused["scores"] == pytest.approx({"negative": 0.5, "positive": 0.5})
    assert (fused["label"], fused["score"]) == ("neutral", pytest.approx(1.0))
    assert fuse(parts, {"text": 4, "caption": 1})["label"] == "positive"  # P(positive) = 0.68, above the range


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("text=0.6,caption=0.2,ocr=0.2", WEIGHTS),
        (" text = 1 , ocr=1 ", {"text": 1.0, "caption": 0.0, "ocr": 1.0}),
        ({"caption": 2}, {"text": 0.0, "caption": 2.0, "ocr": 0.0}),
    ],
)
def test_weights_setting_is_parsed(raw, expected):
    """PRISM_FUSION_WEIGHTS lists part=weight pairs; a part left out weighs 0."""
    assert parse_weights(raw) == expected


@pytest.mark.parametrize(
    "raw", ["text=0.6,image=0.4", "text=-1", "text=abc", "text", "text=0,caption=0,ocr=0", "text=inf", "text=nan"]
)
def test_invalid_weights_are_refused(raw):
    """An unknown part, a negative, non-numeric or infinite weight, or all zero, is an error."""
    with pytest.raises(ValueError, match="PRISM_FUSION_WEIGHTS"):
        parse_weights(raw)


@pytest.mark.parametrize(
    "overrides",
    [
        {"PRISM_FUSION_WEIGHTS": "text=1,photo=1"},
        {"PRISM_AGREEMENT_THRESHOLD": 1.5},
        {"PRISM_AGREEMENT_MODEL_THRESHOLD": 1.5},
        {"PRISM_AGREEMENT_MODEL_THRESHOLD": "high"},
    ],
)
def test_invalid_fusion_settings_stop_the_app_at_startup(tmp_path, overrides):
    """A bad weight list, or either agreement threshold outside -1..1 or not a number, refuses to start."""
    with pytest.raises(RuntimeError, match=next(iter(overrides))):
        make_app(tmp_path, **overrides)


def test_settings_are_parsed_once_at_startup(tmp_path):
    """The app holds the weights as a mapping and the threshold as a float, whatever form they were given in."""
    app = make_app(tmp_path, PRISM_FUSION_WEIGHTS="text=2,caption=1", PRISM_AGREEMENT_THRESHOLD="0.3")
    assert app.config["PRISM_FUSION_WEIGHTS"] == {"text": 2.0, "caption": 1.0, "ocr": 0.0}
    assert app.config["PRISM_AGREEMENT_THRESHOLD"] == parse_threshold("0.3") == 0.3
    assert app.config["PRISM_AGREEMENT_MODEL_THRESHOLD"] == 0.2 and app.config["PRISM_AGREEMENT_MODEL"] is None
    (tmp_path / "joint").mkdir()
    joint = make_app(tmp_path / "joint", PRISM_AGREEMENT_MODEL="prism/clip", PRISM_AGREEMENT_MODEL_THRESHOLD="0.25")
    assert joint.config["PRISM_AGREEMENT_MODEL_THRESHOLD"] == 0.25


def _predictions(app, analysis_id: int) -> dict[str, SimpleNamespace]:
    """Each prediction of the record as a plain snapshot (value that counts, AI value, output ...)."""
    with app.app_context():
        analysis = db.session.get(Analysis, analysis_id)
        return {
            p.kind: SimpleNamespace(
                value=p.value,
                ai_value=p.ai_value,
                output=p.output,
                model_id=p.model_id,
                confidence=p.confidence,
                final_label=p.final_label,
            )
            for p in analysis.predictions
        }


def _count(app, analysis_id: int, kind: str) -> int:
    with app.app_context():
        return db.session.scalar(
            db.select(db.func.count(Prediction.id)).where(
                Prediction.analysis_id == analysis_id, Prediction.kind == kind
            )
        )


def test_service_record_with_text_and_screenshot_gets_one_fusion_and_one_agreement(app):
    """The job fuses the message's sentiment with the caption's and the screenshot text's, and stores both
    kinds once: a second run of the job adds nothing."""
    from webapp.jobs.runner import run

    agent = client_for(app, "agent")
    analysis_id = record_id(submit(agent, text=UNRELATED, image=png_bytes()))
    found = _predictions(app, analysis_id)
    fusion = found["fusion"]
    assert fusion.value == "positive" and fusion.confidence == pytest.approx(0.56)
    assert fusion.output["scores"] == pytest.approx({"negative": 0.11, "neutral": 0.33, "positive": 0.56})
    parts = fusion.output["parts"]
    assert {name: part["weight"] for name, part in parts.items()} == pytest.approx(WEIGHTS)
    assert parts["text"]["text"] == UNRELATED and parts["text"]["scores"] == found["sentiment"].output["scores"]
    assert parts["caption"] == {
        "text": "a 64x48 picture, mostly red",
        "label": "neutral",
        "scores": NEUTRAL,
        "weight": 0.2,
    }
    assert parts["ocr"]["text"] == "TEXT 64x48 red"
    assert fusion.model_id == "prism/fake-sentiment"
    with app.app_context():
        assert run(analysis_id) == "skipped"
    assert _count(app, analysis_id, "fusion") == _count(app, analysis_id, "agreement") == 1


def test_missing_ocr_text_renormalises_the_stored_weights(app, monkeypatch):
    """A screenshot with no text: the fusion uses text and caption only, weighted 0.75 / 0.25."""
    from webapp.inference.fake import FakeOcrModel

    monkeypatch.setattr(FakeOcrModel, "read_prepared", lambda self, images: [() for _ in images])
    agent = client_for(app, "agent")
    analysis_id = record_id(submit(agent, text=UNRELATED, image=png_bytes()))
    parts = _predictions(app, analysis_id)["fusion"].output["parts"]
    assert {name: part["weight"] for name, part in parts.items()} == {"text": 0.75, "caption": 0.25}


def test_text_only_or_image_only_records_get_no_fusion(app):
    """Fusion needs both modalities; agreement needs something to compare the image with."""
    agent = client_for(app, "agent")
    text_only = record_id(submit(agent, text=UNRELATED))
    image_only = record_id(submit(agent, text=None, image=png_bytes()))
    for analysis_id in (text_only, image_only):
        found = _predictions(app, analysis_id)
        assert "fusion" not in found and "agreement" not in found


@pytest.mark.parametrize(
    ("text", "label", "flagged"),
    [(UNRELATED, "mismatch", True), (RELATED, "matches", False)],
    ids=["unrelated", "related"],
)
def test_agreement_is_flagged_below_the_threshold(app, text, label, flagged):
    """The text is compared with the caption and the OCR text; a similarity below the threshold is a mismatch."""
    agent = client_for(app, "agent")
    analysis_id = record_id(submit(agent, text=text, image=png_bytes()))
    agreement = _predictions(app, analysis_id)["agreement"]
    output = agreement.output
    assert (agreement.value, output["flagged"]) == (label, flagged)
    assert (output["similarity"] < output["threshold"]) is flagged
    assert output["threshold"] == app.config["PRISM_AGREEMENT_THRESHOLD"]
    assert output["texts"] == {"text": text, "image": "a 64x48 picture, mostly red\nTEXT 64x48 red"}
    assert output["reference"] == "text" and agreement.model_id == "prism/fake-embedding"
    assert output["method"] == CAPTION_AND_OCR and output["truncated"] is False
    assert agreement.final_label == label


@pytest.mark.parametrize(
    ("text", "label"), [(UNRELATED, "mismatch"), (RELATED, "matches")], ids=["unrelated", "related"]
)
def test_a_joint_image_text_model_compares_the_image_itself(tmp_path, text, label):
    """With PRISM_AGREEMENT_MODEL the image itself is compared with the text by that model, flagged below
    PRISM_AGREEMENT_MODEL_THRESHOLD; the prediction and the record page say which method and model."""
    app = make_app(tmp_path, PRISM_AGREEMENT_MODEL="prism/fake-clip")
    agent = client_for(app, "agent")
    analysis_id = record_id(submit(agent, text=text, image=png_bytes()))
    agreement = _predictions(app, analysis_id)["agreement"]
    output = agreement.output
    assert agreement.value == label and (output["similarity"] < output["threshold"]) is (label == "mismatch")
    assert output["threshold"] == app.config["PRISM_AGREEMENT_MODEL_THRESHOLD"] == 0.2
    assert output["method"] == JOINT_EMBEDDING and output["texts"] == {"text": text}
    assert agreement.model_id == "prism/fake-agreement"
    page = agent.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert "Method: <strong>joint image-text embedding</strong>" in page
    assert "each embedded by a joint image-text (CLIP-style) model" in page and "The image, in words" not in page


def test_the_joint_model_is_listed_with_the_others_only_when_configured(tmp_path, app, client):
    """/healthz lists an "agreement" model only when PRISM_AGREEMENT_MODEL is set."""
    assert "agreement" not in [model["kind"] for model in client.get("/healthz").get_json()["models"]]
    (tmp_path / "joint").mkdir()
    joint = make_app(tmp_path / "joint", PRISM_AGREEMENT_MODEL="prism/fake-clip")
    models = joint.test_client().get("/healthz").get_json()["models"]
    assert [model["kind"] for model in models][-1] == "agreement"
    assert models[-1]["source"] == "prism/fake-clip"


def test_the_record_page_says_the_text_method_by_default(app):
    """Unset, the agreement shows the caption-and-OCR method and the image's words."""
    agent = client_for(app, "agent")
    analysis_id = record_id(submit(agent, text=RELATED, image=png_bytes()))
    page = agent.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert "Method: <strong>caption and OCR text vs text</strong>" in page and "The image, in words" in page


def test_the_threshold_setting_decides_the_flag(tmp_path):
    """The same related pair is flagged once the threshold is above its similarity."""
    strict = make_app(tmp_path, PRISM_AGREEMENT_THRESHOLD=0.99)
    agent = client_for(strict, "agent")
    analysis_id = record_id(submit(agent, text=RELATED, image=png_bytes()))
    agreement = _predictions(strict, analysis_id)["agreement"]
    assert agreement.output["similarity"] < 0.99 and agreement.value == "mismatch"


def test_fusion_and_agreement_are_reviewed_through_the_record_page(app):
    """A reviewer corrects the overall sentiment and clears the mismatch flag with the generic forms."""
    agent = client_for(app, "agent")
    analysis_id = record_id(submit(agent, text=UNRELATED, image=png_bytes()))
    page = agent.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert "Screenshot may be unrelated to the message" in page
    decide(agent, analysis_id, "fusion", "correct", value="neutral")
    decide(agent, analysis_id, "agreement", "correct", value="matches", comment="the screenshot is the bill")
    found = _predictions(app, analysis_id)
    assert (found["fusion"].value, found["fusion"].ai_value, found["fusion"].final_label) == (
        "neutral",
        "positive",
        "neutral",
    )
    assert (found["agreement"].value, found["agreement"].final_label) == ("matches", "matches")
    page = agent.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert "Screenshot may be unrelated to the message" not in page  # the reviewer's decision counts
    assert agent.get("/service-desk/").get_data(as_text=True).count("Screenshot may be unrelated") == 0


def test_corrections_outside_the_labels_are_refused():
    """Fusion takes a sentiment level, agreement "matches" or "mismatch"."""
    kinds = Prediction.KINDS
    assert kinds["fusion"].parse_correction("negative") == "negative"
    assert kinds["agreement"].parse_correction("mismatch") == "mismatch"
    for kind, raw in (("fusion", "ecstatic"), ("agreement", "maybe")):
        with pytest.raises(CorrectionError):
            kinds[kind].parse_correction(raw)


def test_agreement_is_reviewed_through_the_api(app, client):
    """POST /api/v1/analyses/<id>/reviews accepts or rejects the flag like any other kind."""
    agent = client_for(app, "alice")
    analysis_id = record_id(submit(agent, text=UNRELATED, image=png_bytes()))
    token = make_token(app, "alice")
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/api/v1/analyses/{analysis_id}/reviews"
    assert client.post(url, headers=headers, json={"kind": "agreement", "decision": "reject"}).status_code in (200, 201)
    wrong = client.post(url, headers=headers, json={"kind": "agreement", "decision": "correct", "value": "maybe"})
    assert wrong.status_code == 400
    body = client.get(f"/api/v1/analyses/{analysis_id}", headers=headers).json
    agreement = next(p for p in body["predictions"] if p["kind"] == "agreement")
    assert agreement["review"]["state"] == "rejected" and agreement["value"] is None
    assert agreement["output"]["flagged"] is True  # the model's output is kept


def test_record_page_shows_the_parts_the_fused_result_and_the_flag(app):
    """The record page has a column per part, with its weight, and one for the overall result, and the
    agreement's texts."""
    agent = client_for(app, "agent")
    analysis_id = record_id(submit(agent, text=UNRELATED, image=png_bytes()))
    page = agent.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert "Overall sentiment (text and image)" in page and "Image matches the text" in page
    headings = re.findall(r'<th scope="col"[^>]*>([^<]+)</th>', page.split('class="fusion-parts"')[1])[:4]
    assert headings == ["Text", "Image caption", "Text in the image", "Overall"]
    assert '<th scope="row">Weight</th><td>60%</td><td>20%</td><td>20%</td><td class="fusion-overall">100%</td>' in page
    assert "The image may be unrelated to the text" in page and "Does not match" in page
    assert "a 64x48 picture, mostly red\nTEXT 64x48 red" in page


def test_triage_shows_an_unrelated_screenshot(app):
    """The service desk's triage list marks a conversation whose screenshot does not match the message."""
    agent = client_for(app, "agent")
    unrelated = record_id(submit(agent, text=UNRELATED, image=png_bytes()))
    related = record_id(submit(agent, text=RELATED, image=png_bytes()))
    page = agent.get("/service-desk/").get_data(as_text=True)
    rows = {int(m.group(1)): m.group(0) for m in re.finditer(r'<a href="/history/(\d+)">.*?</tr>', page, re.S)}
    assert "Screenshot may be unrelated to the message" in rows[unrelated]
    assert "Screenshot may be unrelated" not in rows[related]


def test_homework_photo_is_compared_with_its_assignment(app):
    """A homework photo's words are compared with its assignment's title and reference text; a photo of
    something else is flagged on the grading page."""
    from tests.test_education import create_assignment, create_rubric, grade_url, rubric_ids, submissions, upload

    teacher = client_for(app, "tina", "teacher")
    assert create_rubric(teacher).status_code == 302
    rubric_id = rubric_ids(app)[0]
    fractions = record_id(create_assignment(teacher, rubric_id))
    colours = record_id(create_assignment(teacher, rubric_id, title="Mostly red picture", reference="red text"))
    upload(teacher, fractions, [(png_bytes(), "Wang.png")])
    upload(teacher, colours, [(png_bytes(), "Li.png")])
    [off_topic], [on_topic] = submissions(app, fractions), submissions(app, colours)
    flagged = _predictions(app, off_topic["analysis_id"])["agreement"]
    assert flagged.output["reference"] == "assignment" and flagged.value == "mismatch"
    assert flagged.output["texts"]["text"] == "Homework 3\n1/2 + 1/4 = 3/4"
    assert _predictions(app, on_topic["analysis_id"])["agreement"].value == "matches"
    page = teacher.get(grade_url(fractions, off_topic["id"])).get_data(as_text=True)
    assert "Photo may not match the assignment" in page and "The photo may not match its assignment" in page
    page = teacher.get(grade_url(colours, on_topic["id"])).get_data(as_text=True)
    assert "Photo may not match the assignment" not in page
