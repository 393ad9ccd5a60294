"""Clinical image review with DICOM: de-identified everywhere (stored file, page, API, exports),
windowed previews, frames, and clear refusals."""

from __future__ import annotations

import io
import json

import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from tests.conftest import client_for, csrf_token, make_token, record_id
from webapp.extensions import db
from webapp.models import Analysis
from webapp.storage import get_storage
from webapp.uploads import image_key

pytestmark = pytest.mark.both_databases


def identifying_values(path: str) -> list[str]:
    """The sample file's own patient and institution values, which must appear nowhere after upload."""
    original = pydicom.dcmread(path)
    values = []
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "ReferringPhysicianName"):
        value = str(original.get(keyword, "") or "").strip()
        if len(value) >= 3:
            values.append(value)
    assert values, f"{path} has no identifying values to check"
    return values


def upload(client, path: str, filename: str = "DOE_JANE_CT.dcm", scenario: str = "medical"):
    with open(path, "rb") as handle:
        data = handle.read()
    return client.post(
        f"/{scenario}/",
        data={"csrf_token": csrf_token(client, f"/{scenario}/"), "image": (io.BytesIO(data), filename)},
        content_type="multipart/form-data",
    )


@pytest.mark.parametrize("sample", ["CT_small.dcm", "MR_small.dcm"])
def test_dicom_upload_is_de_identified_in_the_stored_file_page_api_and_exports(app, sample):
    path = get_testdata_file(sample)
    secrets = identifying_values(path)
    clinician = client_for(app, "drwho", role="clinician")
    analysis_id = record_id(upload(clinician, path))
    with app.app_context():
        analysis = db.session.get(Analysis, analysis_id)
        assert (analysis.status, analysis.image_format, analysis.image_filename) == ("done", "DICOM", None)
        stored = get_storage().get(image_key(analysis.image_sha256, analysis.image_format))
        meta = analysis.image_meta
    dataset = pydicom.dcmread(io.BytesIO(stored))
    assert dataset.PatientIdentityRemoved == "YES" and "PatientName" not in dataset
    assert meta["metadata"]["modality"] == dataset.Modality and meta["frames"] == 1

    token = make_token(app, "drwho")
    surfaces = {
        "stored file": stored.decode("latin-1"),
        "page": clinician.get(f"/history/{analysis_id}").get_data(as_text=True),
        "api": json.dumps(
            clinician.get(f"/api/v1/analyses/{analysis_id}", headers={"Authorization": f"Bearer {token}"}).json
        ),
        "csv": clinician.get("/history/export.csv").get_data(as_text=True),
        "json export": clinician.get("/history/export.json").get_data(as_text=True),
        "download": clinician.get(f"/history/{analysis_id}/image?original=1").get_data().decode("latin-1"),
    }
    # MR_small's institution, "TOSHIBA", is also the start of its scanner's manufacturer, "TOSHIBA_MEC",
    # which is kept (a device, not a person or a place): look for the secrets with that value removed.
    manufacturer = str(pydicom.dcmread(path).get("Manufacturer", ""))
    for surface, text in surfaces.items():
        for secret in [*secrets, "DOE_JANE"]:
            assert secret not in text.replace(manufacturer, ""), f"{secret!r} found in the {surface}"


def test_preview_renders_the_chosen_window_and_ct_presets(app):
    clinician = client_for(app, "drwho", role="clinician")
    analysis_id = record_id(upload(clinician, get_testdata_file("CT_small.dcm")))
    default = clinician.get(f"/history/{analysis_id}/image")
    assert default.status_code == 200 and default.mimetype == "image/png"
    assert default.headers["Cache-Control"] == "private, no-store"
    image = Image.open(io.BytesIO(default.data))
    assert image.size == (128, 128)
    narrow = clinician.get(f"/history/{analysis_id}/image?center=40&width=80").data
    assert narrow != default.data
    page = clinician.get(f"/history/{analysis_id}?preset=bone").get_data(as_text=True)
    assert "center=400" in page and "width=1800" in page and "CT presets" in page
    assert clinician.get(f"/history/{analysis_id}/image?width=-5&frame=99").status_code == 200  # clamped


def test_multi_frame_file_offers_a_frame_chooser(app):
    clinician = client_for(app, "drwho", role="clinician")
    analysis_id = record_id(upload(clinician, get_testdata_file("rtdose.dcm")))
    page = clinician.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert 'name="frame"' in page and "frame 1 of 15" in page
    last = clinician.get(f"/history/{analysis_id}/image?frame=14")
    first = clinician.get(f"/history/{analysis_id}/image?frame=0")
    assert last.status_code == first.status_code == 200 and last.data != first.data


def test_unsupported_or_broken_dicom_is_refused_with_a_clear_message(app):
    clinician = client_for(app, "drwho", role="clinician")
    response = upload(clinician, get_testdata_file("MR_truncated.dcm"))
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert "DICOM" in body and "Traceback" not in body
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Analysis.id)).where(Analysis.status == "done")) == 0


def test_other_clinicians_cannot_see_a_case(app):
    owner = client_for(app, "drwho", role="clinician")
    other = client_for(app, "drno", role="clinician")
    analysis_id = record_id(upload(owner, get_testdata_file("CT_small.dcm")))
    assert owner.get(f"/history/{analysis_id}").status_code == 200
    assert owner.get(f"/history/{analysis_id}/image").status_code == 200
    assert other.get(f"/history/{analysis_id}").status_code == 404
    assert other.get(f"/history/{analysis_id}/image").status_code == 404


def test_regions_sign_off_and_case_export(app):
    from tests.conftest import audit_rows
    from tests.test_history import decide

    clinician = client_for(app, "drwho", role="clinician")
    path = get_testdata_file("CT_small.dcm")
    analysis_id = record_id(upload(clinician, path))

    def post(url, **fields):
        return clinician.post(url, data={"csrf_token": csrf_token(clinician, f"/history/{analysis_id}"), **fields})

    add = f"/cases/{analysis_id}/annotations"
    post(add, shape="rect", x="10", y="20", width="30", height="40", label="nodule", note="compare with prior")
    post(add, shape="point", x="64", y="64", label="centre")
    refused = post(add, shape="rect", x="120", y="120", width="50", height="50", label="outside", note="keep me")
    assert refused.status_code == 400  # beyond 128 px: the page again, with the input kept and the reason
    body = refused.get_data(as_text=True)
    assert "must lie inside the image (128 × 128 pixels)" in body
    assert 'value="outside"' in body and "keep me</textarea>" in body and 'value="120"' in body
    post(add, shape="rect", x="1", y="1", width="5", height="5", label="")  # no label
    page = clinician.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert "nodule" in page and "centre" in page and "outside" not in page
    assert '<rect x="10.0" y="20.0" width="30.0" height="40.0"' in page  # drawn over the image in image pixels
    other = client_for(app, "drno", role="clinician")
    token = csrf_token(other, "/medical/")
    assert other.post(add, data={"csrf_token": token, "x": "1", "y": "1", "label": "x"}).status_code == 404

    post(f"/cases/{analysis_id}/sign-off")
    with app.app_context():
        assert db.session.get(Analysis, analysis_id).signed_off_at is None  # the finding is undecided
    decide(clinician, analysis_id, "caption", "correct", value="small hypodense lesion, left lobe")
    post(f"/cases/{analysis_id}/sign-off")
    post(add, shape="point", x="5", y="5", label="late")
    with app.app_context():
        case = db.session.get(Analysis, analysis_id)
        assert case.signed_off_by == "drwho" and [r.label for r in case.annotations] == ["nodule", "centre"]

    export = clinician.get(f"/cases/{analysis_id}/export.json")
    body = export.json
    assert export.headers["Content-Disposition"].startswith("attachment")
    assert [f["value"] for f in body["findings"]] == ["small hypodense lesion, left lobe"]
    assert body["findings"][0]["ai_original"] and body["findings"][0]["model"]
    assert [(a["shape"], a["label"]) for a in body["annotations"]] == [("rect", "nodule"), ("point", "centre")]
    for secret in identifying_values(path):
        assert secret not in export.get_data(as_text=True)
    admin = client_for(app, "boss", role="admin")
    assert admin.get(f"/cases/{analysis_id}/export.json").status_code == 200
    assert any(row["details"].get("part") == "case export" for row in audit_rows(app, "analysis.view_other"))
    assert [row["action"] for row in audit_rows(app, "case.sign_off")] == ["case.sign_off"]


def test_a_case_is_signed_off_only_once_its_findings_exist_and_then_they_are_final(app):
    """No sign-off while the job is still pending (the finding would arrive undecided); after sign-off
    no decision changes, on the page or through the API."""
    from tests.conftest import make_token
    from tests.test_history import decide

    clinician = client_for(app, "drwho", role="clinician")
    queue = app.extensions["prism_jobs"].huey
    queue.immediate = False  # nobody runs the job: the case stays pending
    try:
        pending_id = record_id(upload(clinician, get_testdata_file("CT_small.dcm")))
    finally:
        queue.immediate = True
    token = csrf_token(clinician, f"/history/{pending_id}")
    clinician.post(f"/cases/{pending_id}/sign-off", data={"csrf_token": token})
    with app.app_context():
        assert db.session.get(Analysis, pending_id).signed_off_at is None

    analysis_id = record_id(upload(clinician, get_testdata_file("MR_small.dcm")))
    decide(clinician, analysis_id, "caption", "accept")
    clinician.post(
        f"/cases/{analysis_id}/sign-off", data={"csrf_token": csrf_token(clinician, f"/history/{analysis_id}")}
    )
    page = clinician.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert "Signed off" in page and "/review/predictions/" not in page  # no decision form any more
    api = clinician.post(
        f"/api/v1/analyses/{analysis_id}/reviews",
        json={"kind": "caption", "decision": "reopen"},
        headers={"Authorization": f"Bearer {make_token(app, 'drwho')}"},
    )
    assert api.status_code == 400 and "signed off" in api.json["error"]["message"]
    with app.app_context():
        assert db.session.get(Analysis, analysis_id).prediction("caption").review_state == "accepted"
