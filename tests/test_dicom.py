"""webapp.dicom: reading, refusing, decoding, de-identifying and rendering DICOM uploads.

Inputs are pydicom's bundled test files and files built here with pydicom's Dataset API; no network.
"""

from __future__ import annotations

import ast
import io
import random
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import uid as dicom_uid
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence

import webapp.dicom as dicom_module
from webapp.dicom import (
    CT_PRESETS,
    KEPT_ATTRIBUTES,
    DicomRejected,
    DicomStudy,
    looks_like_dicom,
    preview_png,
    read_dicom,
)

MAX_PIXELS = 20_000_000
REPLACED_UIDS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"}
TEXT_VRS = {"AE", "AS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UT"}

# The identifying values planted in built_phi_file().
PLANTED = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-12345",
    "PatientBirthDate": "19700101",
    "OtherPatientIDs": "OTHER-777",
    "InstitutionName": "General Hospital",
    "InstitutionAddress": "1 Main Street Springfield",
    "ReferringPhysicianName": "Smith^John",
    "PerformingPhysicianName": "House^Gregory",
    "OperatorsName": "Tech^Tina",
    "AccessionNumber": "ACC-998877",
    "StudyID": "STUDY-42",
    "DeviceSerialNumber": "SN-31337",
    "StationName": "CTROOM7",
    "StudyDate": "20240102",
    "StudyTime": "101112",
    "SeriesDescription": "Jane Doe head scan",
    "ImageComments": "Patient Jane Doe, MRN 555",
}
PLANTED_ELSEWHERE = ["Doe^Jane private note", "Jane Doe overlay", "CURVE-Doe", "NESTED-Jane"]


def sample(name: str) -> bytes:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom's test file {name} is not installed")
    return Path(path).read_bytes()


def to_part10(ds: Dataset, syntax: str = dicom_uid.ExplicitVRLittleEndian) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    buffer = io.BytesIO()
    # pydicom needs the encoding spelled out for a transfer syntax it does not know.
    encoding = {} if meta.TransferSyntaxUID.is_transfer_syntax else {"implicit_vr": False, "little_endian": True}
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True, **encoding)
    return buffer.getvalue()


def image_dataset(rows: int = 16, columns: int = 12, frames: int | None = None, bits_stored: int = 16) -> Dataset:
    """A minimal CT image: a 16-bit signed gradient, Rescale -1024, with the UIDs an image has."""
    ds = Dataset()
    ds.SOPClassUID = dicom_uid.CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4.5.6.7.8.1"
    ds.StudyInstanceUID = "1.2.3.4.5.6.7.8.2"
    ds.SeriesInstanceUID = "1.2.3.4.5.6.7.8.3"
    ds.FrameOfReferenceUID = "1.2.3.4.5.6.7.8.4"
    ds.Modality = "CT"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    count = rows * columns * (frames or 1)
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.PixelData = (np.arange(count, dtype="<i2") * 7 % 2000).tobytes()
    return ds


def built_phi_file() -> bytes:
    """A CT file carrying the PLANTED values, a private tag, a nested sequence, an overlay and a curve."""
    ds = image_dataset()
    for keyword, value in PLANTED.items():
        setattr(ds, keyword, value)
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.BodyPartExamined = "HEAD"
    ds.Manufacturer = "ACME Imaging"
    ds.private_block(0x0011, "ACME 1.0", create=True).add_new(0x01, "LO", "Doe^Jane private note")
    item = Dataset()
    item.PatientID = "NESTED-Jane"
    ds.OtherPatientIDsSequence = Sequence([item])
    ds.add_new(0x60000010, "US", 16)  # overlay rows
    ds.add_new(0x60000011, "US", 12)  # overlay columns
    ds.add_new(0x60000022, "LO", "Jane Doe overlay")  # overlay description
    ds.add_new(0x60003000, "OW", b"\xff" * 24)  # overlay data
    ds.add_new(0x50002500, "LO", "CURVE-Doe")  # curve label (retired curve module)
    return to_part10(ds)


def identifying_values(original: Dataset) -> set[str]:
    """Every text value in the original outside KEPT_ATTRIBUTES, nested and private ones included."""
    values = set()
    for element in original.iterall():
        if element.keyword in KEPT_ATTRIBUTES or element.VR not in TEXT_VRS or element.value in (None, ""):
            continue
        items = element.value if isinstance(element.value, pydicom.multival.MultiValue) else [element.value]
        for value in items:
            text = str(value).strip()
            if len(text) >= 4 and any(c.isalnum() for c in text):
                values.add(text)
    return values


SAMPLES = {
    "CT_small": lambda: sample("CT_small.dcm"),
    "MR_small": lambda: sample("MR_small.dcm"),
    "built": built_phi_file,
}


# --- reading and rendering -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_reads_size_frames_and_modality_from_samples(name):
    """CT_small and MR_small report the header's size, one frame and their modality."""
    original = pydicom.dcmread(get_testdata_file(name))
    study = read_dicom(sample(name), max_pixels=MAX_PIXELS)
    assert (study.rows, study.columns, study.frames) == (original.Rows, original.Columns, 1)
    assert study.metadata["modality"] == original.Modality
    assert study.pixels.shape == (1, original.Rows, original.Columns)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_render_gives_8bit_greyscale_of_the_image_size(name):
    """render() returns an 8-bit greyscale image as large as the DICOM image, with real contrast."""
    study = read_dicom(sample(name), max_pixels=MAX_PIXELS)
    image = study.render()
    assert image.mode == "L"
    assert image.size == (study.columns, study.rows)
    values = np.asarray(image)
    assert values.dtype == np.uint8
    assert int(values.max()) - int(values.min()) > 100


def test_window_from_file_is_the_default():
    """MR_small's own Window Center/Width (600/1600) are the study's window and render()'s default."""
    study = read_dicom(sample("MR_small.dcm"), max_pixels=MAX_PIXELS)
    assert (study.window_center, study.window_width) == (600.0, 1600.0)
    assert study.render().tobytes() == study.render(center=600, width=1600).tobytes()
    assert study.render().tobytes() != study.render(center=300, width=400).tobytes()


def test_first_value_of_a_multi_valued_window_is_used():
    """A file with two windows (examples_overlay.dcm: 450\\200, 790\\443) uses the first pair."""
    study = read_dicom(sample("examples_overlay.dcm"), max_pixels=MAX_PIXELS)
    assert (study.window_center, study.window_width) == (450.0, 790.0)


def test_window_without_one_in_the_file_spans_the_modality_values():
    """CT_small has no window: the default spans its Hounsfield range, so black and white both occur."""
    original = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert "WindowCenter" not in original
    study = read_dicom(sample("CT_small.dcm"), max_pixels=MAX_PIXELS)
    hounsfield = original.pixel_array.astype(float) + float(original.RescaleIntercept)
    assert study.window_center == pytest.approx((hounsfield.min() + hounsfield.max()) / 2)
    assert study.window_width == pytest.approx(hounsfield.max() - hounsfield.min())
    values = np.asarray(study.render())
    assert values.min() == 0 and values.max() == 255


def test_ct_presets_apply_rescale_then_the_linear_window():
    """A CT preset changes the picture, and each pixel follows PS3.3's linear window on Hounsfield units."""
    assert CT_PRESETS == {"brain": (40, 80), "lung": (-600, 1500), "bone": (400, 1800), "abdomen": (40, 400)}
    original = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    study = read_dicom(sample("CT_small.dcm"), max_pixels=MAX_PIXELS)
    renders = {name: np.asarray(study.render(0, *window)) for name, window in CT_PRESETS.items()}
    assert not np.array_equal(renders["brain"], np.asarray(study.render()))
    assert not np.array_equal(renders["brain"], renders["lung"])
    center, width = CT_PRESETS["lung"]
    hounsfield = original.pixel_array.astype(float) * float(original.RescaleSlope) + float(original.RescaleIntercept)
    expected = np.clip((hounsfield - (center - 0.5)) / (width - 1) + 0.5, 0, 1) * 255
    assert np.array_equal(renders["lung"], np.rint(expected).astype(np.uint8))


def test_monochrome1_renders_inverted():
    """MONOCHROME1 (low values white) renders as the inverse of the same pixels as MONOCHROME2."""
    ds = image_dataset()
    mono2 = read_dicom(to_part10(ds), max_pixels=MAX_PIXELS)
    ds.PhotometricInterpretation = "MONOCHROME1"
    mono1 = read_dicom(to_part10(ds), max_pixels=MAX_PIXELS)
    assert np.array_equal(np.asarray(mono1.render()), 255 - np.asarray(mono2.render()))


@pytest.mark.parametrize(
    ("function", "at_center", "at_center_plus_half_width"),
    [("SIGMOID", 128, 225), ("LINEAR_EXACT", 128, 255)],  # 255 / (1 + e^-2) = 224.6
)
def test_voi_lut_function_from_the_file_is_applied(function, at_center, at_center_plus_half_width):
    """VOI LUT Function SIGMOID and LINEAR_EXACT follow PS3.3 C.11.2.1.3 (values at centre and centre + w/2)."""
    ds = image_dataset(rows=1, columns=2)
    ds.RescaleIntercept = 0
    ds.PixelData = np.array([100, 150], dtype="<i2").tobytes()
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 100, 100, function
    study = read_dicom(to_part10(ds), max_pixels=MAX_PIXELS)
    assert study.voi_lut_function == function
    assert np.asarray(study.render()).tolist() == [[at_center, at_center_plus_half_width]]


def test_render_rejects_a_window_narrower_than_one():
    """A window width under 1 (undefined in PS3.3) is a ValueError, not a division by zero."""
    study = read_dicom(sample("MR_small.dcm"), max_pixels=MAX_PIXELS)
    with pytest.raises(ValueError, match="width"):
        study.render(center=10, width=0)
    assert np.asarray(study.render(center=600, width=1)).max() == 255


def test_colour_images_render_as_rgb():
    """RGB, YBR (JPEG baseline) and PALETTE COLOR files all render to 8-bit RGB of the right size."""
    for name in ["SC_rgb_rle_16bit.dcm", "SC_rgb_jpeg.dcm", "examples_palette.dcm", "SC_ybr_full_422_uncompressed.dcm"]:
        study = read_dicom(sample(name), max_pixels=MAX_PIXELS)
        image = study.render()
        assert (image.mode, image.size) == ("RGB", (study.columns, study.rows)), name
        assert study.metadata["photometric_interpretation"] == "RGB"
    # The palette file's blue header bar survives the LUT (it would be grey without it).
    red, green, blue = read_dicom(sample("examples_palette.dcm"), max_pixels=MAX_PIXELS).render().getpixel((400, 5))
    assert blue > red + 40


def test_preview_png_is_a_plain_png_of_the_render():
    """preview_png() returns PNG bytes that decode to exactly render()'s pixels, with no text chunks."""
    study = read_dicom(sample("CT_small.dcm"), max_pixels=MAX_PIXELS)
    png = preview_png(study, center=40, width=400)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    assert image.tobytes() == study.render(center=40, width=400).tobytes()
    assert b"tEXt" not in png and b"iTXt" not in png and b"eXIf" not in png


def test_study_is_frozen_and_its_repr_leaves_out_pixels_and_bytes():
    """DicomStudy cannot be changed after reading, its pixels are read-only, and repr stays short."""
    study = read_dicom(sample("CT_small.dcm"), max_pixels=MAX_PIXELS)
    with pytest.raises(AttributeError):
        study.frames = 2
    with pytest.raises(ValueError):
        study.pixels[0, 0, 0] = 1
    text = repr(study)
    assert "deidentified_bytes" not in text and "pixels=" not in text and len(text) < 1500


def test_module_does_not_import_flask():
    """webapp.dicom stays usable from workers and scripts: it imports no Flask."""
    tree = ast.parse(Path(dicom_module.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in imported if name.split(".")[0].startswith("flask")}


# --- de-identification ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLES)
def test_deidentified_file_holds_only_the_allow_list(name):
    """The de-identified file holds KEPT_ATTRIBUTES, file meta and Pixel Data only: no private tags,
    overlays, curves or other sequences, and it is marked as de-identified with code 113100."""
    study = read_dicom(SAMPLES[name](), max_pixels=MAX_PIXELS)
    assert study.deidentified_bytes[:128] == b"\0" * 128 and study.deidentified_bytes[128:132] == b"DICM"
    ds = pydicom.dcmread(io.BytesIO(study.deidentified_bytes))
    keywords = {element.keyword for element in ds}
    assert keywords - {"PixelData"} <= set(KEPT_ATTRIBUTES)
    assert all(not element.tag.is_private for element in ds.iterall())
    assert all(element.tag.group & 0xFF00 not in (0x5000, 0x6000) for element in ds)
    assert [element.keyword for element in ds if element.VR == "SQ"] == ["DeidentificationMethodCodeSequence"]
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod
    code = ds.DeidentificationMethodCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
        "113100",
        "DCM",
        "Basic Application Confidentiality Profile",
    )
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert ds.file_meta.TransferSyntaxUID == dicom_uid.ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert "SourceApplicationEntityTitle" not in ds.file_meta


@pytest.mark.parametrize("name", SAMPLES)
def test_identifying_values_are_gone_from_the_deidentified_bytes(name):
    """No name, ID, date, time, institution, private or nested value of the original survives, parsed
    or as raw bytes; for the built file that includes every planted value."""
    data = SAMPLES[name]()
    original = pydicom.dcmread(io.BytesIO(data))
    study = read_dicom(data, max_pixels=MAX_PIXELS)
    raw = study.deidentified_bytes
    kept_text = " ".join(str(element.value) for element in pydicom.dcmread(io.BytesIO(raw)) if element.VR != "OW")

    phi = identifying_values(original)
    if name == "built":
        assert set(PLANTED.values()) | set(PLANTED_ELSEWHERE) <= phi
    # MR_small's institution "TOSHIBA" is a substring of its Manufacturer "TOSHIBA_MEC", which Annex E
    # keeps; no planted value may be excused this way.
    excused = {value for value in phi if value in kept_text}
    assert excused <= {"TOSHIBA"}
    for value in phi - excused:
        assert value.encode("latin-1") not in raw, value
    for keyword in ["PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "InstitutionName"]:
        assert keyword not in pydicom.dcmread(io.BytesIO(raw))


@pytest.mark.parametrize("name", SAMPLES)
def test_uids_are_replaced_and_the_pixels_still_render_the_same(name):
    """Study/Series/SOP/Frame-of-Reference UIDs are new valid UIDs, and the de-identified file reads
    back to the same pixels, window and picture."""
    data = SAMPLES[name]()
    original = pydicom.dcmread(io.BytesIO(data))
    study = read_dicom(data, max_pixels=MAX_PIXELS)
    ds = pydicom.dcmread(io.BytesIO(study.deidentified_bytes))
    for keyword in REPLACED_UIDS:
        assert ds[keyword].value != original[keyword].value
        assert ds[keyword].value.is_valid
    assert ds.SOPClassUID == original.SOPClassUID

    again = read_dicom(study.deidentified_bytes, max_pixels=MAX_PIXELS)
    assert np.array_equal(again.pixels, study.pixels)
    assert (again.window_center, again.window_width) == (study.window_center, study.window_width)
    assert again.render().tobytes() == study.render().tobytes()
    assert again.metadata == study.metadata


def test_keyed_uids_are_stable_per_key_and_random_without_one():
    """With uid_key the same upload always gets the same new UIDs (another key, others); without, new ones."""
    data = sample("CT_small.dcm")

    def uids(**kwargs):
        ds = pydicom.dcmread(io.BytesIO(read_dicom(data, max_pixels=MAX_PIXELS, **kwargs).deidentified_bytes))
        return [ds[keyword].value for keyword in sorted(REPLACED_UIDS)]

    assert uids(uid_key=b"k1") == uids(uid_key=b"k1")
    assert uids(uid_key=b"k1") != uids(uid_key=b"k2")
    assert uids() != uids()
    assert len(set(uids(uid_key=b"k1"))) == len(REPLACED_UIDS)


def test_metadata_shows_only_what_the_deidentified_file_keeps():
    """metadata comes from the de-identified file: no study date (dates are removed), no description."""
    study = read_dicom(built_phi_file(), max_pixels=MAX_PIXELS)
    ds = pydicom.dcmread(io.BytesIO(study.deidentified_bytes))
    assert study.metadata["modality"] == ds.Modality == "CT"
    assert study.metadata["body_part"] == ds.BodyPartExamined == "HEAD"
    assert study.metadata["manufacturer"] == ds.Manufacturer
    assert study.metadata["transfer_syntax"] == "Explicit VR Little Endian"
    assert "study_date" not in study.metadata and "StudyDate" not in ds
    assert not set(map(str, study.metadata.values())) & set(PLANTED.values())


def test_kept_attributes_follow_annex_e_table():
    """Each kept attribute is either absent from PS3.15 table E.1-1 (2026c, as dicom-anonymizer
    transcribes it) or a UID with action U, which read_dicom replaces; none is a curve or overlay."""
    selector = pytest.importorskip("dicomanonymizer.dicomfields_selector")
    table = selector.dicom_anonymization_database_selector("dicomfields_2026c")
    kept = {pydicom.datadict.tag_for_keyword(keyword): keyword for keyword in KEPT_ATTRIBUTES}
    assert None not in kept
    listed: dict[str, str] = {}
    for action, tags in table.items():
        for tag in tags:
            if action == "ALL_TAGS":
                continue
            if len(tag) == 2:
                keyword = kept.get((tag[0] << 16) | tag[1])
                if keyword:
                    listed[keyword] = action
            else:  # a repeating group: (group, element, group mask, element mask)
                group, element, group_mask, element_mask = tag
                for number in kept:
                    in_group = (number >> 16) & group_mask == group & group_mask
                    assert not (in_group and (number & 0xFFFF) & element_mask == element & element_mask)
    assert listed == {keyword: "U_TAGS" for keyword in REPLACED_UIDS}


@pytest.mark.parametrize("name", SAMPLES)
def test_no_attribute_with_an_annex_e_action_keeps_its_value(name):
    """RELIABILITY P2's figure: attributes table E.1-1 gives X/Z/D/U that still hold the original value = 0."""
    selector = pytest.importorskip("dicomanonymizer.dicomfields_selector")
    table = selector.dicom_anonymization_database_selector("dicomfields_2026c")
    data = SAMPLES[name]()
    original = pydicom.dcmread(io.BytesIO(data))
    ds = pydicom.dcmread(io.BytesIO(read_dicom(data, max_pixels=MAX_PIXELS).deidentified_bytes))
    listed = {(group << 16) | element for tags in table.values() for group, element, *mask in tags if not mask}
    present = [tag for tag in listed if tag in original and original[tag].value not in (None, "")]
    assert present  # the check is not vacuous
    survivors = [str(original[tag].tag) for tag in present if tag in ds and ds[tag].value == original[tag].value]
    assert survivors == []


def test_overlay_bits_embedded_above_bits_stored_are_dropped():
    """Old-style overlays hidden in unused high bits of 12-bit pixels do not reach the de-identified file."""
    ds = image_dataset(bits_stored=12)
    ds.PixelRepresentation = 0
    values = (np.arange(16 * 12, dtype="<u2") % 4000) | 0x8000  # bit 15: an embedded overlay plane
    ds.PixelData = values.tobytes()
    study = read_dicom(to_part10(ds), max_pixels=MAX_PIXELS)
    stored = np.frombuffer(pydicom.dcmread(io.BytesIO(study.deidentified_bytes)).PixelData, dtype="<u2")
    assert stored.max() < 4096
    assert np.array_equal(stored, values & 0x0FFF)


def test_burned_in_text_risk_is_flagged():
    """Burned In Annotation YES, ultrasound and secondary captures are flagged; a plain CT is not."""
    assert not read_dicom(sample("CT_small.dcm"), max_pixels=MAX_PIXELS).may_contain_burned_in_text
    assert read_dicom(sample("examples_palette.dcm"), max_pixels=MAX_PIXELS).may_contain_burned_in_text  # US
    assert read_dicom(sample("SC_rgb_jpeg.dcm"), max_pixels=MAX_PIXELS).may_contain_burned_in_text
    ds = image_dataset()
    ds.BurnedInAnnotation = "YES"
    assert read_dicom(to_part10(ds), max_pixels=MAX_PIXELS).may_contain_burned_in_text


# --- compressed transfer syntaxes ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm"]
)
def test_lossless_encodings_decode_to_the_uncompressed_pixels(name):
    """RLE, JPEG-LS lossless, JPEG 2000 lossless and big-endian copies of MR_small decode to its exact pixels."""
    reference = read_dicom(sample("MR_small.dcm"), max_pixels=MAX_PIXELS)
    study = read_dicom(sample(name), max_pixels=MAX_PIXELS)
    assert np.array_equal(study.pixels, reference.pixels)
    assert (
        study.metadata["transfer_syntax"] == pydicom.dcmread(get_testdata_file(name)).file_meta.TransferSyntaxUID.name
    )
    assert study.render().tobytes() == reference.render().tobytes()


@pytest.mark.parametrize(
    ("name", "frames"),
    [
        ("JPGExtended.dcm", 1),
        ("JPEG2000.dcm", 1),
        ("693_J2KI.dcm", 1),
        ("SC_rgb_jpeg.dcm", 1),
        ("examples_ybr_color.dcm", 30),
    ],
)
def test_lossy_encodings_decode_and_are_marked_lossy(name, frames):
    """JPEG (baseline, 12-bit extended) and JPEG 2000 decode; the de-identified copy says it was lossy."""
    original = pydicom.dcmread(get_testdata_file(name))
    study = read_dicom(sample(name), max_pixels=MAX_PIXELS)
    assert (study.frames, study.rows, study.columns) == (frames, original.Rows, original.Columns)
    assert study.render(study.frames - 1).size == (study.columns, study.rows)
    assert study.metadata["lossy_compressed"] is True
    ds = pydicom.dcmread(io.BytesIO(study.deidentified_bytes))
    assert ds.LossyImageCompression == "01"


def test_compressed_data_never_reaches_pillows_decoders(monkeypatch):
    """JPEG and JPEG 2000 go to pylibjpeg only, never to Pillow's decoders (kept off untrusted input)."""

    def refuse(*args, **kwargs):
        raise AssertionError("Pillow was asked to decode DICOM pixel data")

    monkeypatch.setattr(Image, "open", refuse)
    for name in ["SC_rgb_jpeg.dcm", "JPEG2000.dcm"]:
        assert read_dicom(sample(name), max_pixels=MAX_PIXELS).frames == 1


def test_a_jpeg_the_decoder_cannot_read_is_rejected_clearly():
    """JPEG-lossy.dcm (a misplaced JPEG marker libjpeg refuses) is a DicomRejected naming its syntax."""
    with pytest.raises(DicomRejected, match=r"JPEG Extended \(Process 2 and 4\)\) could not be decoded"):
        read_dicom(sample("JPEG-lossy.dcm"), max_pixels=MAX_PIXELS)


def encapsulated_file(syntax: str, payload: bytes = b"\xff\xd8 not really compressed \xff\xd9") -> bytes:
    ds = image_dataset()
    ds.PixelData = encapsulate([payload])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return to_part10(ds, syntax)


@pytest.mark.parametrize(
    ("syntax", "named"),
    [
        (dicom_uid.MPEG4HP41, "MPEG-4 AVC/H.264 High Profile / Level 4.1"),
        (dicom_uid.HTJ2KLossless, "High-Throughput JPEG 2000 Image Compression (Lossless Only)"),
        ("1.2.3.4.5.6", "an unknown transfer syntax"),
    ],
)
def test_unsupported_transfer_syntax_is_rejected_by_name_and_uid(syntax, named, monkeypatch):
    """Syntaxes outside the supported list are refused with their name and UID, before any decoder runs."""
    monkeypatch.setattr(dicom_module, "get_decoder", pytest.fail)
    with pytest.raises(DicomRejected) as caught:
        read_dicom(encapsulated_file(syntax), max_pixels=MAX_PIXELS)
    message = str(caught.value)
    assert named in message and f"({syntax})" in message and "cannot decode" in message


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_an_invalid_transfer_syntax_uid_is_not_echoed():
    """A Transfer Syntax UID holding markup and a line break is refused without repeating it."""
    data = encapsulated_file("1.2.840\n<script>")
    with pytest.raises(DicomRejected, match="not a valid UID") as caught:
        read_dicom(data, max_pixels=MAX_PIXELS)
    assert "<script>" not in str(caught.value) and "\n" not in str(caught.value)


def test_junk_in_a_supported_syntax_is_a_decode_rejection():
    """A JPEG-LS file whose frame is junk is rejected as undecodable, not with a decoder's exception."""
    with pytest.raises(DicomRejected, match=r"JPEG-LS Lossless Image Compression\) could not be decoded"):
        read_dicom(encapsulated_file(dicom_uid.JPEGLSLossless), max_pixels=MAX_PIXELS)


# --- malformed input -----------------------------------------------------------------------------


def test_looks_like_dicom_needs_the_part10_marker():
    """Only the 'DICM' marker at byte 128 counts; preamble-less files (no_meta.dcm) are not DICOM to Prism."""
    assert looks_like_dicom(sample("CT_small.dcm"))
    assert not looks_like_dicom(sample("no_meta.dcm"))
    assert not looks_like_dicom(b"DICM" + bytes(200))
    assert not looks_like_dicom(b"")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: sample("MR_truncated.dcm"), "truncated"),
        (lambda: sample("no_meta.dcm"), "not a DICOM file"),
        (lambda: sample("meta_missing_tsyntax.dcm"), "no Transfer Syntax UID"),
        (lambda: sample("rtplan.dcm"), "contains no image"),
        (lambda: sample("liver_1frame.dcm"), "1-bit pixels"),
        (lambda: random.Random(7).randbytes(4096), "not a DICOM file"),
        (lambda: png_bytes(), "not a DICOM file"),
        (lambda: b"", "not a DICOM file"),
        (lambda: bytes(128) + b"DICM" + random.Random(8).randbytes(2048), "no Transfer Syntax UID"),
    ],
    ids=["truncated", "no_meta", "no_syntax", "no_pixels", "1-bit", "random", "png", "empty", "DICM+junk"],
)
def test_malformed_input_is_rejected_with_a_clear_message(make, message):
    """Each malformed input raises DicomRejected (a ValueError) with a sentence that says what is wrong."""
    with pytest.raises(DicomRejected, match=message):
        read_dicom(make(), max_pixels=MAX_PIXELS)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_parser_failures_become_dicom_rejected(monkeypatch):
    """An exception inside pydicom becomes the generic 'damaged' DicomRejected, with the cause chained."""

    def broken(*args, **kwargs):
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(dicom_module.pydicom, "dcmread", broken)
    with pytest.raises(DicomRejected, match="damaged or malformed") as caught:
        read_dicom(sample("CT_small.dcm"), max_pixels=MAX_PIXELS)
    assert isinstance(caught.value.__cause__, struct.error)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about every invalid value it meets
def test_cut_or_corrupted_files_only_ever_raise_dicom_rejected():
    """CT_small cut at 60 points and with 200 random byte corruptions: a study or DicomRejected, nothing else."""
    data = sample("CT_small.dcm")
    rng = random.Random(1274)
    variants = [data[:cut] for cut in range(0, len(data), len(data) // 60)]
    for _ in range(200):
        corrupted = bytearray(data)
        for position in rng.sample(range(132, 3000), 4):
            corrupted[position] = rng.randrange(256)
        variants.append(bytes(corrupted))
    outcomes = {"read": 0, "rejected": 0}
    for variant in variants:
        try:
            study = read_dicom(variant, max_pixels=MAX_PIXELS)
            study.render()
            outcomes["read"] += 1
        except DicomRejected:
            outcomes["rejected"] += 1
    assert outcomes["rejected"] >= 60 and sum(outcomes.values()) == len(variants)


# --- multi-frame and the pixel cap ---------------------------------------------------------------


def test_multi_frame_renders_each_frame_and_refuses_others():
    """A 15-frame RT Dose and a built 3-frame CT render any frame in range; others are ValueErrors."""
    dose = read_dicom(sample("rtdose.dcm"), max_pixels=MAX_PIXELS)
    assert dose.frames == 15
    assert dose.render(frame=14).size == (dose.columns, dose.rows)
    assert dose.render(frame=14).tobytes() != dose.render(frame=0).tobytes()

    ds = image_dataset(rows=4, columns=5, frames=3)
    ds.PixelData = np.repeat(np.array([0, 1000, 2000], dtype="<i2"), 20).tobytes()
    study = read_dicom(to_part10(ds), max_pixels=MAX_PIXELS)
    assert [int(np.asarray(study.render(k)).mean()) for k in range(3)] == [0, 128, 255]
    assert study.render(np.int64(2)).size == (5, 4)
    for bad in [3, -1, 1.5, "1", True]:
        with pytest.raises(ValueError, match="Frame"):
            study.render(frame=bad)


def test_colour_multi_frame_keeps_its_frames():
    """SC_rgb_rle_2frame.dcm: two RGB frames, both rendered, both in the de-identified file."""
    study = read_dicom(sample("SC_rgb_rle_2frame.dcm"), max_pixels=MAX_PIXELS)
    assert study.frames == 2 and study.render(1).mode == "RGB"
    assert pydicom.dcmread(io.BytesIO(study.deidentified_bytes)).NumberOfFrames == 2


@pytest.mark.parametrize("syntax", [dicom_uid.ExplicitVRLittleEndian, dicom_uid.RLELossless])
def test_oversized_header_is_refused_before_decoding(syntax, monkeypatch):
    """A header claiming 60000 x 60000 pixels is refused from the header alone: no decoder is called."""
    monkeypatch.setattr(dicom_module, "get_decoder", pytest.fail)
    if syntax == dicom_uid.RLELossless:
        data = encapsulated_file(syntax, b"\x00" * 64)
    else:
        data = to_part10(image_dataset())
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Rows, ds.Columns = 60000, 60000
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    with pytest.raises(DicomRejected, match=r"too large: 60000 x 60000 pixels x 1 frame\(s\)"):
        read_dicom(buffer.getvalue(), max_pixels=MAX_PIXELS)


def test_pixel_cap_counts_every_frame():
    """max_pixels bounds Rows x Columns x frames: exactly at the cap is read, one below it is refused."""
    data = sample("rtdose.dcm")  # 10 x 10 x 15 frames
    assert read_dicom(data, max_pixels=1500).frames == 15
    with pytest.raises(DicomRejected, match="at most 1,499"):
        read_dicom(data, max_pixels=1499)
    assert isinstance(read_dicom(sample("CT_small.dcm"), max_pixels=128 * 128), DicomStudy)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm"])
def test_a_stored_file_reads_back_as_it_was_stored_without_a_second_de_identification(name, monkeypatch):
    """``read_stored`` gives the same pixels, window and bytes as the upload's study, and never runs
    the de-identification again (its UIDs would change on every read)."""
    study = dicom_module.read_dicom(Path(get_testdata_file(name)).read_bytes(), max_pixels=10**8)
    monkeypatch.setattr(dicom_module, "_deidentify", lambda *args, **kwargs: pytest.fail("de-identified twice"))
    again = dicom_module.read_stored(study.deidentified_bytes)
    assert again.deidentified_bytes == study.deidentified_bytes
    assert (again.frames, again.rows, again.columns) == (study.frames, study.rows, study.columns)
    assert (again.window_center, again.window_width) == (study.window_center, study.window_width)
    assert np.array_equal(again.pixels, study.pixels)
    assert again.render(0).tobytes() == study.render(0).tobytes()
