"""Teaching: rubrics, assignments, homework uploaded into an assignment, grading through the review
engine, the summary, the grades CSV, and who may see what."""

from __future__ import annotations

import csv
import io
import re

import pytest

from tests.conftest import (
    audit_rows,
    client_for,
    csrf_token,
    make_token,
    png_bytes,
    queries_during,
    record_id,
    submit,
)
from webapp.extensions import db
from webapp.inference.fake import FakeOcrModel, _dominant_colour
from webapp.inference.types import OcrLine
from webapp.models import Analysis, AuditEvent, Prediction, Review
from webapp.models.education import (
    Assignment,
    GradePrediction,
    Rubric,
    Submission,
)
from webapp.models.prediction import CorrectionError

# Grades are reviews, and ownership filters are SQL: both must behave alike on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases

CRITERIA = [("Method", "Shows the working", 4), ("Answer", "", 6)]


@pytest.fixture
def teacher(app):
    return client_for(app, "tina", "teacher")


def create_rubric(client, title="Fractions", criteria=CRITERIA, **extra):
    """Post the new-rubric form as a browser would; returns the response (not followed)."""
    data = {"csrf_token": csrf_token(client, "/education/rubrics/new"), "title": title, "submit": "Save rubric"}
    for index, (name, description, points) in enumerate(criteria):
        data |= {
            f"criteria-{index}-title": name,
            f"criteria-{index}-description": description,
            f"criteria-{index}-max_points": str(points),
        }
    return client.post("/education/rubrics/new", data=data | extra)


def create_assignment(client, rubric_id: int, title="Homework 3", reference="1/2 + 1/4 = 3/4"):
    data = {
        "csrf_token": csrf_token(client, "/education/assignments/new"),
        "title": title,
        "reference_text": reference,
        "rubric": str(rubric_id),
    }
    return client.post("/education/assignments/new", data=data)


def upload(client, assignment_id: int, files: list[tuple[bytes, str]]):
    data = {
        "csrf_token": csrf_token(client, f"/education/assignments/{assignment_id}"),
        "images": [(io.BytesIO(payload), name) for payload, name in files],
    }
    return client.post(f"/education/assignments/{assignment_id}/upload", data=data, content_type="multipart/form-data")


def grade_url(assignment_id: int, submission_id: int) -> str:
    return f"/education/assignments/{assignment_id}/submissions/{submission_id}"


def post_grade(client, assignment_id, submission_id, scores: dict, feedback="", button="save"):
    """Post the grading form; ``scores`` maps criterion ids to points as typed."""
    url = grade_url(assignment_id, submission_id)
    data = {"csrf_token": csrf_token(client, url), "feedback": feedback, button: "1"}
    data |= {f"criterion_{key}": str(value) for key, value in scores.items()}
    return client.post(url, data=data)


def rubric_ids(app) -> list[int]:
    with app.app_context():
        return db.session.scalars(db.select(Rubric.id).order_by(Rubric.id)).all()


def criterion_ids(app, rubric_id: int) -> list[int]:
    with app.app_context():
        return [c.id for c in db.session.get(Rubric, rubric_id).criteria]


def submissions(app, assignment_id: int) -> list[dict]:
    with app.app_context():
        rows = db.session.scalars(
            db.select(Submission).where(Submission.assignment_id == assignment_id).order_by(Submission.id)
        )
        return [
            {
                "id": s.id,
                "analysis_id": s.analysis_id,
                "student": s.student_name,
                "status": s.analysis.status,
                "graded": s.is_graded,
                "total": s.total(),
            }
            for s in rows
        ]


@pytest.fixture
def homework(app, teacher):
    """A rubric (Method /4, Answer /6), an assignment using it, and three uploaded photos; returns ids."""
    assert create_rubric(teacher).status_code == 302
    [rubric_id] = rubric_ids(app)
    response = create_assignment(teacher, rubric_id)
    assignment_id = record_id(response)
    files = [(png_bytes(color=(200, 10, 10)), "张伟.png"), (png_bytes(color=(10, 200, 10)), "Li Na.jpg")]
    files.append((png_bytes(color=(10, 10, 200)), "omar.png"))
    assert upload(teacher, assignment_id, files).status_code == 302
    method, answer = criterion_ids(app, rubric_id)
    return {
        "rubric": rubric_id,
        "assignment": assignment_id,
        "method": method,
        "answer": answer,
        "submissions": [s["id"] for s in submissions(app, assignment_id)],
    }


# --- Rubrics ------------------------------------------------------------------------------------


def test_rubric_create_edit_and_delete(app, teacher):
    """A rubric is created with ordered criteria, edited (rename, new maximum, one removed, one added), deleted."""
    response = create_rubric(teacher)
    assert response.status_code == 302 and response.headers["Location"] == "/education/rubrics/"
    [rubric_id] = rubric_ids(app)
    with app.app_context():
        rubric = db.session.get(Rubric, rubric_id)
        assert [(c.title, c.description, c.max_points, c.position) for c in rubric.criteria] == [
            ("Method", "Shows the working", 4, 0),
            ("Answer", "", 6, 1),
        ]
        assert rubric.max_total == 10
    listing = teacher.get("/education/rubrics/").get_data(as_text=True)
    assert "Fractions" in listing and "Method · Answer" in listing

    method, answer = criterion_ids(app, rubric_id)
    url = f"/education/rubrics/{rubric_id}"
    page = teacher.get(url).get_data(as_text=True)
    assert page.count('class="criterion-row"') == 4  # two criteria and two blank rows
    data = {
        "csrf_token": csrf_token(teacher, url),
        "title": "Fractions v2",
        "criteria-0-criterion_id": str(method),
        "criteria-0-title": "Working",
        "criteria-0-max_points": "5",
        "criteria-1-criterion_id": str(answer),
        "criteria-1-title": "",  # cleared: removed
        "criteria-2-title": "Neatness",
        "criteria-2-max_points": "1.5",
        "submit": "Save rubric",
    }
    assert teacher.post(url, data=data).status_code == 302
    with app.app_context():
        rubric = db.session.get(Rubric, rubric_id)
        assert rubric.title == "Fractions v2"
        assert [(c.id == method, c.title, c.max_points) for c in rubric.criteria] == [
            (True, "Working", 5),
            (False, "Neatness", 1.5),
        ]

    token = csrf_token(teacher, "/education/rubrics/")
    assert teacher.post(f"{url}/delete", data={"csrf_token": token}).status_code == 302
    assert rubric_ids(app) == []


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        ([], "A rubric needs at least one criterion."),
        ([("Method", "", "")], "Give this criterion its points."),
        ([("Method", "", "0")], "From 0.5 to 1000 points."),
        ([("", "only a description", "3")], "Give this criterion a title, or clear the row to remove it."),
    ],
)
def test_rubric_validation(app, teacher, criteria, message):
    """No criteria, a criterion without points or with 0, points without a title: 400, nothing saved."""
    response = create_rubric(teacher, criteria=criteria)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert rubric_ids(app) == []


def test_add_rows_keeps_the_input_and_saves_nothing(app, teacher):
    """The "Add rows" button (no script needed) posts the form back with two more blank rows and what was typed."""
    response = create_rubric(teacher, criteria=[("Method", "", "4")], add_rows="Add rows")
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert body.count('class="criterion-row"') == 3 and 'value="Method"' in body
    assert rubric_ids(app) == []


def test_rubric_that_grades_an_assignment_cannot_be_deleted(app, teacher, homework):
    """Deleting a rubric an assignment uses is refused with a message."""
    token = csrf_token(teacher, "/education/rubrics/")
    response = teacher.post(f"/education/rubrics/{homework['rubric']}/delete", data={"csrf_token": token})
    assert "cannot be deleted" in teacher.get(response.headers["Location"]).get_data(as_text=True)
    assert rubric_ids(app) == [homework["rubric"]]


def test_graded_criteria_stay_and_keep_their_maximum(app, teacher, homework):
    """Once a grade uses a criterion, it cannot be removed nor get a maximum below the points given."""
    first = homework["submissions"][0]
    post_grade(teacher, homework["assignment"], first, {homework["method"]: 3, homework["answer"]: 5})
    url = f"/education/rubrics/{homework['rubric']}"
    base = {
        "csrf_token": csrf_token(teacher, url),
        "title": "Fractions",
        "criteria-0-criterion_id": str(homework["method"]),
        "criteria-0-title": "Method",
        "criteria-0-max_points": "2",
        "criteria-1-criterion_id": str(homework["answer"]),
        "criteria-1-title": "",
        "submit": "Save rubric",
    }
    body = teacher.post(url, data=base).get_data(as_text=True)
    assert "Method: a grade already gives it 3, so its maximum cannot be lower." in body
    assert "Answer is used by grades and cannot be removed." in body
    with app.app_context():
        assert [(c.title, c.max_points) for c in db.session.get(Rubric, homework["rubric"]).criteria] == [
            ("Method", 4),
            ("Answer", 6),
        ]


# --- Assignments and upload -----------------------------------------------------------------------


def test_assignment_needs_a_rubric_of_ones_own(app, teacher):
    """Without a rubric the page asks for one; another teacher's rubric is not a valid choice."""
    assert "Create a rubric first." in teacher.get("/education/assignments/new").get_data(as_text=True)
    other = client_for(app, "otto", "teacher")
    create_rubric(other, title="Otto's")
    [others] = rubric_ids(app)
    create_rubric(teacher)
    response = create_assignment(teacher, others)
    assert response.status_code == 400 and "Not a valid choice" in response.get_data(as_text=True)
    mine = rubric_ids(app)[-1]
    response = create_assignment(teacher, mine, title="Homework 3")
    assert response.status_code == 302
    with app.app_context():
        [assignment] = db.session.scalars(db.select(Assignment)).all()
        assert (assignment.title, assignment.rubric_id, assignment.reference_text) == (
            "Homework 3",
            mine,
            "1/2 + 1/4 = 3/4",
        )
    listing = teacher.get("/education/assignments/").get_data(as_text=True)
    assert "Homework 3" in listing and "0 of 0" in listing


def test_upload_makes_one_submission_per_photo_and_a_broken_file_fails_alone(app, teacher):
    """Three photos and one broken file: three submissions named after their files, read by the jobs;
    the broken file fails alone with its reason, audited, and gets no submission."""
    create_rubric(teacher)
    response = create_assignment(teacher, rubric_ids(app)[0])
    assignment_id = record_id(response)
    files = [
        (png_bytes(color=(200, 10, 10)), "张伟.png"),
        (b"this is plain text, not an image", "broken.png"),
        (png_bytes(color=(10, 200, 10)), "Li Na.jpg"),
        # A path with its directories. werkzeug 3.1.9 reads a backslash in the quoted multipart file name
        # as a quoted-string escape, so a Windows path reaches the app without its backslashes; the
        # display_filename test covers backslashes, this one the route, with "/".
        (png_bytes(color=(10, 10, 200)), "C:/scans/omar.page1.png"),
    ]
    response = upload(teacher, assignment_id, files)
    assert response.status_code == 302 and response.headers["Location"] == f"/education/assignments/{assignment_id}"
    rows = submissions(app, assignment_id)
    assert [(r["student"], r["status"], r["graded"]) for r in rows] == [
        ("张伟", "done", False),
        ("Li Na", "done", False),
        ("omar.page1", "done", False),
    ]
    with app.app_context():
        analyses = db.session.scalars(db.select(Analysis).order_by(Analysis.id)).all()
        assert [a.status for a in analyses] == ["done", "failed", "done", "done"]
        assert {a.scenario for a in analyses} == {"education"} and len({a.batch_id for a in analyses}) == 1
        assert analyses[0].prediction("caption").value == "a 64x48 picture, mostly red"
        # The grade is no job task; the sentiment is of the text read from the photo; each photo is
        # compared with its assignment (a refused file has no submission, so nothing to compare).
        photo, refused = ["ocr", "caption", "sentiment", "agreement"], ["ocr", "caption", "sentiment"]
        assert [a.tasks for a in analyses] == [photo, refused, photo, photo]
        assert analyses[1].error.startswith("The file is not a supported image")
    [rejected] = audit_rows(app, "upload.rejected")
    assert rejected["details"]["scenario"] == "education"
    page = teacher.get(response.headers["Location"]).get_data(as_text=True)
    assert "Photos added: 3. Prism is reading them." in page
    assert "broken.png was not added: The file is not a supported image" in page
    assert page.count("not graded") == 3
    assert teacher.get(f"/education/assignments/{assignment_id}/status").get_json() == {
        "total": 3,
        "done": 3,
        "failed": 0,
        "finished": True,
    }


READ_FROM_PHOTO = "Nothing was typed: this is the tone of the text Prism read from the image, as first read."


def test_a_reflection_written_on_the_photo_gets_its_sentiment(app, teacher, monkeypatch):
    """With nothing typed, the sentiment scores the text OCR read from the photo, and says so; a photo
    with no text gets no sentiment (the kind leaves the job's tasks) and still finishes."""

    def read(self, images):  # a red page carries a handwritten reflection, a blue one nothing
        line = OcrLine("我很喜欢分数 I love fractions now", 0.9, ((0, 0), (10, 0), (10, 10), (0, 10)))
        return [(line,) if _dominant_colour(image) == "red" else () for image in images]

    monkeypatch.setattr(FakeOcrModel, "read_prepared", read)
    assert create_rubric(teacher).status_code == 302
    assignment_id = record_id(create_assignment(teacher, rubric_ids(app)[0]))
    files = [(png_bytes(color=(200, 10, 10)), "Wang.png"), (png_bytes(color=(10, 10, 200)), "Blank.png")]
    assert upload(teacher, assignment_id, files).status_code == 302
    written, blank = submissions(app, assignment_id)
    with app.app_context():
        analysis = db.session.get(Analysis, written["analysis_id"])
        assert (analysis.status, analysis.tasks) == ("done", ["ocr", "caption", "sentiment", "agreement"])
        sentiment = analysis.prediction("sentiment")
        assert (sentiment.value, sentiment.read_from_image) == ("positive", True)
        assert sentiment.output["text_source"] == "image"
        empty = db.session.get(Analysis, blank["analysis_id"])
        assert (empty.status, empty.error, empty.tasks) == ("done", None, ["ocr", "caption", "agreement"])
        assert empty.prediction("sentiment") is None and empty.status_dict()["progress"] == {"done": 3, "total": 3}
    page = teacher.get(grade_url(assignment_id, written["id"])).get_data(as_text=True)
    assert READ_FROM_PHOTO in page and "我很喜欢分数 I love fractions now" in page
    headers = {"Authorization": f"Bearer {make_token(app, 'tina')}"}
    body = teacher.get(f"/api/v1/analyses/{written['analysis_id']}", headers=headers).get_json()
    assert {p["kind"]: p["output"].get("text_source") for p in body["predictions"]}["sentiment"] == "image"

    typed = record_id(submit(teacher, "education", text="I love fractions", image=png_bytes(color=(200, 10, 10))))
    with app.app_context():
        assert db.session.get(Analysis, typed).prediction("sentiment").read_from_image is False
    assert READ_FROM_PHOTO not in teacher.get(f"/history/{typed}").get_data(as_text=True)


def test_upload_without_files_is_a_form_error(app, teacher, homework):
    """Posting the upload form with no file answers 400 with a message and adds nothing."""
    url = f"/education/assignments/{homework['assignment']}"
    response = teacher.post(f"{url}/upload", data={"csrf_token": csrf_token(teacher, url)})
    assert response.status_code == 400 and "Choose one or more photos." in response.get_data(as_text=True)
    assert len(submissions(app, homework["assignment"])) == 3


# --- Grading ------------------------------------------------------------------------------------


def test_grade_is_a_review_of_a_placeholder_that_stays(app, teacher, homework):
    """A grade is a "correct" review of the grade prediction; the placeholder output stays; the grade counts."""
    first = homework["submissions"][0]
    response = post_grade(
        teacher, homework["assignment"], first, {homework["method"]: 3, homework["answer"]: 4.5}, feedback=" Good "
    )
    assert response.status_code == 302 and response.headers["Location"] == grade_url(homework["assignment"], first)
    with app.app_context():
        submission = db.session.get(Submission, first)
        grade = submission.grade
        assert isinstance(grade, GradePrediction)
        assert (grade.model_id, grade.revision, grade.output) == (
            "prism/rubric",
            str(homework["rubric"]),
            {"scores": {}, "feedback": ""},
        )
        assert (grade.user_id, grade.scenario) == (submission.analysis.user_id, "education")
        [review] = grade.reviews
        value = {"scores": {str(homework["method"]): 3, str(homework["answer"]): 4.5}, "feedback": "Good"}
        assert (review.decision, review.value, review.reviewer_name) == ("correct", value, "tina")
        assert grade.review_state == "corrected" and grade.value == value and submission.total() == 7.5
        assert "Good" in submission.analysis.search_text  # history search finds the feedback
    [audited] = [row for row in audit_rows(app, "review.record") if row["details"]["kind"] == "grade"]
    assert audited["details"]["decision"] == "correct"
    page = teacher.get(grade_url(homework["assignment"], first)).get_data(as_text=True)
    assert "7.5 / 10" in page and "graded by tina" in page
    assert 'value="3"' in page and 'value="4.5"' in page  # the form shows the grade that counts

    # A regrade is a new review; the earlier one is kept. Saving the same grade again adds nothing.
    post_grade(teacher, homework["assignment"], first, {homework["method"]: 4, homework["answer"]: 6}, "Better")
    response = post_grade(
        teacher, homework["assignment"], first, {homework["method"]: 4, homework["answer"]: 6}, "Better"
    )
    assert "Nothing changed." in teacher.get(response.headers["Location"]).get_data(as_text=True)
    with app.app_context():
        reviews = db.session.scalars(db.select(Review).order_by(Review.id)).all()
        assert [r.value["feedback"] for r in reviews] == ["Good", "Better"]
        assert db.session.get(Submission, first).total() == 10
    assert "10 / 10" in teacher.get(f"/education/assignments/{homework['assignment']}").get_data(as_text=True)


@pytest.mark.parametrize(
    ("method", "answer", "message"),
    [
        ("5", "6", "Points from 0 to 4."),
        ("-1", "6", "Points from 0 to 4."),
        ("", "6", "Give points for this criterion."),
        ("three", "6", "Not a valid float value."),
    ],
)
def test_points_out_of_range_or_missing_are_refused(app, teacher, homework, method, answer, message):
    """Points above the maximum, below 0, missing or not a number: 400 with the reason, nothing stored."""
    first = homework["submissions"][0]
    response = post_grade(
        teacher, homework["assignment"], first, {homework["method"]: method, homework["answer"]: answer}
    )
    assert response.status_code == 400 and message in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalars(db.select(Prediction).where(Prediction.kind == "grade")).all() == []
        assert db.session.scalars(db.select(Review)).all() == []


def test_save_and_next_goes_to_the_next_ungraded_and_wraps(app, teacher, homework):
    """The "Save & next ungraded" button skips graded work, wraps around, and ends on the summary when all is graded."""
    assignment_id, (one, two, three) = homework["assignment"], homework["submissions"]
    scores = {homework["method"]: 2, homework["answer"]: 2}
    response = post_grade(teacher, assignment_id, one, scores, button="save_next")
    assert response.headers["Location"] == grade_url(assignment_id, two)
    response = post_grade(teacher, assignment_id, three, scores, button="save_next")
    assert response.headers["Location"] == grade_url(assignment_id, two)  # wrapped past the graded first
    response = post_grade(teacher, assignment_id, two, scores, button="save_next")
    assert response.headers["Location"] == f"/education/assignments/{assignment_id}/summary"
    assert "Every submission of this assignment is graded." in teacher.get(response.headers["Location"]).get_data(
        as_text=True
    )


def test_grading_page_shows_photo_reading_neighbours_and_shortcuts(app, teacher, homework):
    """The grading page has the zoomable photo, the AI caption, previous / next links, and the shortcut script."""
    assignment_id, (one, two, three) = homework["assignment"], homework["submissions"]
    analysis_id = submissions(app, assignment_id)[1]["analysis_id"]
    page = teacher.get(grade_url(assignment_id, two)).get_data(as_text=True)
    assert f'href="/history/{analysis_id}/image" target="_blank"' in page and 'class="zoomable"' in page
    assert "a 64x48 picture, mostly green" in page
    assert f'rel="prev" data-shortcut="prev" href="{grade_url(assignment_id, one)}"' in page
    assert f'rel="next" data-shortcut="next" href="{grade_url(assignment_id, three)}"' in page
    assert "/static/js/grading.js" in page and "1/2 + 1/4 = 3/4" in page  # the reference text too
    assert 'max="4"' in page and 'max="6"' in page
    first_page = teacher.get(grade_url(assignment_id, one)).get_data(as_text=True)
    assert 'rel="prev"' not in first_page


def test_rename_student(app, teacher, homework):
    """The student's name taken from the file name can be corrected on the grading page."""
    assignment_id, first = homework["assignment"], homework["submissions"][0]
    url = grade_url(assignment_id, first)
    response = teacher.post(f"{url}/name", data={"csrf_token": csrf_token(teacher, url), "student_name": " 张小伟 "})
    assert response.status_code == 302
    assert submissions(app, assignment_id)[0]["student"] == "张小伟"


def test_record_page_links_a_grade_to_the_grading_page(app, teacher, homework):
    """On the record page the grade card says Prism proposes none and links to the grading page."""
    assignment_id, first = homework["assignment"], homework["submissions"][0]
    post_grade(teacher, assignment_id, first, {homework["method"]: 1, homework["answer"]: 1})
    analysis_id = submissions(app, assignment_id)[0]["analysis_id"]
    page = teacher.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert "prediction-grade" in page and "Prism proposes no grade" in page
    response = teacher.get(f"/education/records/{analysis_id}")
    assert response.headers["Location"] == grade_url(assignment_id, first)
    # The history export has the grade kind's columns; the review queue holds no grade placeholder.
    header = next(csv.reader(io.StringIO(teacher.get("/history/export.csv").get_data(as_text=True)[1:])))
    assert "grade" in header and "grade_total" in header
    assert "grade" not in teacher.get("/review/education/").get_data(as_text=True).split("<tbody>")[-1]


def test_deleting_the_record_removes_the_submission(app, teacher, homework):
    """A submission is its record: deleting the record from history removes it from the assignment."""
    analysis_id = submissions(app, homework["assignment"])[0]["analysis_id"]
    token = csrf_token(teacher, f"/history/{analysis_id}")
    teacher.post(f"/history/{analysis_id}/delete", data={"csrf_token": token})
    assert [s["student"] for s in submissions(app, homework["assignment"])] == ["Li Na", "omar"]


# --- Summary and export ---------------------------------------------------------------------------


def test_summary_counts_means_and_distribution(app, teacher, homework):
    """Graded / ungraded counts, the mean total, the mean per criterion and the distribution of totals."""
    assignment_id, (one, two, _three) = homework["assignment"], homework["submissions"]
    post_grade(teacher, assignment_id, one, {homework["method"]: 4, homework["answer"]: 5})
    post_grade(teacher, assignment_id, two, {homework["method"]: 1, homework["answer"]: 2})
    page = teacher.get(f"/education/assignments/{assignment_id}/summary").get_data(as_text=True)
    stats = dict(re.findall(r'stat-value">([^<]+)</span> <span class="stat-label">([^<]+)<', page))
    assert stats == {"3": "submissions", "2": "graded", "1": "not graded", "6": "mean total (of 10)"}
    means = re.findall(r'<tr><th scope="row">(\w+)</th><td>([\d.]+)</td><td>(\d+)</td>', page)
    assert means == [("Method", "2.5", "4"), ("Answer", "3.5", "6")]
    distribution = re.findall(r'<tr><th scope="row">(\d+)</th><td>(\d+)</td>', page)
    assert distribution[:2] == [("10", "0"), ("9", "1")] and ("3", "1") in distribution
    assert sum(int(count) for _, count in distribution) == 2


def test_grades_csv(app, teacher, homework):
    """The grades CSV: BOM, header, Chinese name intact, formulas neutralised, ungraded rows empty, audited."""
    assignment_id, (one, two, _three) = homework["assignment"], homework["submissions"]
    post_grade(teacher, assignment_id, one, {homework["method"]: 4, homework["answer"]: 5}, feedback="=HYPERLINK(x)")
    url = grade_url(assignment_id, two)
    teacher.post(f"{url}/name", data={"csrf_token": csrf_token(teacher, url), "student_name": "@Li Na"})
    response = teacher.get(f"/education/assignments/{assignment_id}/grades.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith(f'attachment; filename="prism-grades-{assignment_id}-')
    raw = response.get_data()
    assert raw.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8")[1:])))
    header = ["student", "total", "Method (/4)", "Answer (/6)", "feedback", "graded_by", "graded_at", "agreement"]
    assert rows[0] == header
    assert rows[1][:6] == ["张伟", "9", "4", "5", "'=HYPERLINK(x)", "tina"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", rows[1][6])
    assert rows[2][:7] == ["'@Li Na", "", "", "", "", "", ""]
    assert all(0 <= float(row[7]) <= 1 for row in rows[1:])  # OCR text against the answer key
    assert rows[3][0] == "omar" and len(rows) == 4
    [exported] = audit_rows(app, "history.export")
    assert (exported["target_type"], exported["target_id"]) == ("Assignment", str(assignment_id))


def test_grade_parse_correction_is_generic():
    """The kind's parser takes points per criterion (numbers from 0) and a text; the rubric is the view's check."""
    value = GradePrediction.parse_correction({"scores": {7: 3.0, "8": 2.5}, "feedback": "  ok "})
    assert value == {"scores": {"7": 3, "8": 2.5}, "feedback": "ok"}
    for raw in ({"scores": {}}, {"scores": {"7": True}}, {"scores": {"7": -1}}, {"scores": {"7": "3"}}, "7=3"):
        with pytest.raises(CorrectionError):
            GradePrediction.parse_correction(raw)
    with pytest.raises(CorrectionError):
        GradePrediction.parse_correction({"scores": {"7": 1}, "feedback": 3})


# --- Who may see what -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["user", "clinician"])
def test_other_roles_get_403(app, role, homework):
    """Users and clinicians get 403 on every education page, GET and POST."""
    other = client_for(app, "someone", role)
    assignment_id = homework["assignment"]
    for url in (
        "/education/assignments/",
        "/education/rubrics/",
        "/education/assignments/new",
        f"/education/assignments/{assignment_id}",
        f"/education/assignments/{assignment_id}/grades.csv",
    ):
        assert other.get(url).status_code == 403, url
    token = csrf_token(other, "/service/")
    assert other.post("/education/rubrics/new", data={"csrf_token": token, "title": "x"}).status_code == 403
    body = other.get("/").get_data(as_text=True)
    assert "/education/assignments/" not in body


def test_another_teacher_gets_404(app, homework):
    """Another teacher's assignment, submissions, rubric and export answer 404, as missing ones do."""
    other = client_for(app, "otto", "teacher")
    assignment_id, first = homework["assignment"], homework["submissions"][0]
    analysis_id = submissions(app, assignment_id)[0]["analysis_id"]
    for url in (
        f"/education/assignments/{assignment_id}",
        f"/education/assignments/{assignment_id}/summary",
        f"/education/assignments/{assignment_id}/status",
        f"/education/assignments/{assignment_id}/grades.csv",
        grade_url(assignment_id, first),
        f"/education/rubrics/{homework['rubric']}",
        f"/education/records/{analysis_id}",
    ):
        assert other.get(url).status_code == 404, url
    token = csrf_token(other, "/service/")
    response = other.post(
        grade_url(assignment_id, first),
        data={"csrf_token": token, f"criterion_{homework['method']}": "1", f"criterion_{homework['answer']}": "1"},
    )
    assert response.status_code == 404
    assert other.post(f"/education/assignments/{assignment_id}/upload", data={"csrf_token": token}).status_code == 404
    assert "Homework 3" not in other.get("/education/assignments/").get_data(as_text=True)


def test_admin_reads_everything_audited_and_changes_nothing(app, teacher, homework, admin_client):
    """An admin reads every teacher's assignments and grades (each read audited) but may not grade or create."""
    assignment_id, first = homework["assignment"], homework["submissions"][0]
    post_grade(teacher, assignment_id, first, {homework["method"]: 1, homework["answer"]: 1}, feedback="fine")
    listing = admin_client.get("/education/assignments/").get_data(as_text=True)
    assert "Homework 3" in listing and "tina" in listing
    page = admin_client.get(grade_url(assignment_id, first))
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and "fine" in body and 'class="grade-form"' not in body
    assert "this view is audited" in body
    assert admin_client.get(f"/education/assignments/{assignment_id}/grades.csv").status_code == 200
    assert admin_client.get(f"/education/rubrics/{homework['rubric']}").status_code == 200
    parts = [row["details"]["part"] for row in audit_rows(app, "education.view_other")]
    assert parts == ["grading", "export", "rubric"]
    with app.app_context():
        owner = db.session.scalar(db.select(Assignment.user_id))
        assert {
            e.details["owner_id"]
            for e in db.session.scalars(db.select(AuditEvent).where(AuditEvent.action == "education.view_other"))
        } == {owner}
    token = csrf_token(admin_client, "/service/")
    response = admin_client.post(
        grade_url(assignment_id, first),
        data={"csrf_token": token, f"criterion_{homework['method']}": "4", f"criterion_{homework['answer']}": "6"},
    )
    assert response.status_code == 403
    assert admin_client.get("/education/assignments/new").status_code == 403
    assert submissions(app, assignment_id)[0]["total"] == 2


def test_education_forms_are_labelled(app, teacher, homework):
    """Every field of the rubric, assignment, upload and grading forms has a label; help texts exist."""
    from tests.test_accessibility import assert_described_by_existing_ids, assert_fields_labelled

    for url in (
        "/education/rubrics/new",
        f"/education/rubrics/{homework['rubric']}",
        "/education/assignments/new",
        f"/education/assignments/{homework['assignment']}",
        grade_url(homework["assignment"], homework["submissions"][0]),
    ):
        html = teacher.get(url).get_data(as_text=True)
        assert_fields_labelled(html)
        assert_described_by_existing_ids(html)


def test_a_grade_is_decided_only_on_the_grading_page(app, teacher, homework):
    """The record page's generic review form and the API refuse a grade (they would skip the rubric's
    checks), and a grade given later never counts as job progress."""
    first = homework["submissions"][0]
    post_grade(teacher, homework["assignment"], first, {homework["method"]: 1, homework["answer"]: 1})
    with app.app_context():
        submission = db.session.get(Submission, first)
        grade_id, analysis_id = submission.grade.id, submission.analysis_id
        # page text, caption, its tone, its agreement with the assignment; the grade is no task
        assert submission.analysis.progress == (4, 4)
    token = make_token(app, "tina")
    response = teacher.post(
        f"/api/v1/analyses/{analysis_id}/reviews",
        json={"kind": "grade", "decision": "correct", "value": {"scores": {"1": 99}}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 400 and "own page" in response.json["error"]["message"]
    page = teacher.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert f'action="/review/predictions/{grade_id}"' not in page
    form = {"csrf_token": csrf_token(teacher, f"/history/{analysis_id}"), "decision": "reject"}
    assert teacher.post(f"/review/predictions/{grade_id}", data=form).status_code == 404


def test_agreement_compares_the_page_text_with_the_answer_key():
    """Spaces, punctuation and case do not count (OCR drops spaces); different words do."""
    from webapp.models.education import text_agreement

    assert text_agreement("1/2+1/4=3/4", "1/2 + 1/4 = 3/4") == 1.0
    assert text_agreement("TheWaterCycle", "the water cycle.") == 1.0
    assert text_agreement("水的循环", "水的循环。") == 1.0
    assert 0.4 < text_agreement("the water cycle", "the carbon cycle") < 0.9
    assert text_agreement("abc", "xyz") == 0.0


def test_api_lists_assignments_submissions_and_scores_and_takes_photos_into_one(app, teacher, homework):
    """GET /api/v1/assignments[/<id>] give the rubric, progress and each submission's grade; the batch
    endpoint with an `assignment` adds photos to it; other teachers and other roles see nothing."""
    import io

    first = homework["submissions"][0]
    post_grade(teacher, homework["assignment"], first, {homework["method"]: 2, homework["answer"]: 5}, feedback="ok")
    headers = {"Authorization": f"Bearer {make_token(app, 'tina')}"}
    listed = teacher.get("/api/v1/assignments", headers=headers).json["items"]
    assert [item["id"] for item in listed] == [homework["assignment"]]
    assert [c["max_points"] for c in listed[0]["rubric"]["criteria"]] == [4, 6]
    body = teacher.get(f"/api/v1/assignments/{homework['assignment']}", headers=headers).json
    graded = next(s for s in body["submissions"] if s["id"] == first)
    assert (graded["total"], graded["feedback"], graded["graded_by"]) == (7, "ok", "tina")
    assert [s["student"] for s in body["submissions"]] == ["张伟", "Li Na", "omar"]

    response = teacher.post(
        "/api/v1/batches",
        headers=headers,
        data={"assignment": str(homework["assignment"]), "images": [(io.BytesIO(png_bytes()), "Zoe.png")]},
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    assert [s["student"] for s in submissions(app, homework["assignment"])][-1] == "Zoe"

    client_for(app, "tom", role="teacher")
    other = {"Authorization": f"Bearer {make_token(app, 'tom')}"}
    assert teacher.get(f"/api/v1/assignments/{homework['assignment']}", headers=other).status_code == 404
    client_for(app, "una", role="user")
    assert (
        teacher.get("/api/v1/assignments", headers={"Authorization": f"Bearer {make_token(app, 'una')}"}).status_code
        == 403
    )


def test_assignment_api_reads_in_a_fixed_number_of_queries(app, teacher, homework):
    """The API's assignment list and detail load submissions, their records and grades with the
    assignment: one more photo adds no query."""

    headers = {"Authorization": f"Bearer {make_token(app, 'tina')}"}

    def read():
        assert teacher.get("/api/v1/assignments", headers=headers).status_code == 200
        assert teacher.get(f"/api/v1/assignments/{homework['assignment']}", headers=headers).status_code == 200

    read()  # the token's first use of the day is written once; measure the steady state
    before = queries_during(app, read)
    upload(teacher, homework["assignment"], [(png_bytes(color=(1, 2, 3)), "Zoe.png")])
    read()
    assert queries_during(app, read) == before


def test_record_grade_checks_the_rubric_whoever_calls_it(app, teacher, homework):
    """The grading function refuses a grade that misses a criterion, names an unknown one or goes past
    a maximum, with nothing stored (the form checks the same, but this is the rule for every caller)."""
    from webapp.education import GradeInputError, record_grade
    from webapp.models import User

    first = homework["submissions"][0]
    method, answer = str(homework["method"]), str(homework["answer"])
    with app.app_context():
        submission = db.session.get(Submission, first)
        tina = db.session.scalar(User.by_username("tina"))
        for scores, message in (
            ({method: 2}, "every criterion"),
            ({method: 2, answer: 3, "999": 1}, "every criterion"),
            ({method: 5, answer: 3}, "points from 0 to 4"),
        ):
            with pytest.raises(GradeInputError, match=message):
                record_grade(submission, tina, scores, "")
        db.session.rollback()
        assert db.session.get(Submission, first).grade is None
