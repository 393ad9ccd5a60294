"""Read, refuse, decode, de-identify and render one uploaded DICOM file, without Flask.

The contract: ``read_dicom(data, max_pixels=...)`` either returns a :class:`DicomStudy` made only of
plain values, decoded pixels and de-identified bytes, or raises :class:`DicomRejected` with an English
sentence a view can show as it is. Malformed input never escapes as another exception type: the file
is untrusted, so any failure of the parser or a decoder is the file's fault (the original exception
is chained for the log). The uploaded bytes are not kept: nothing in a ``DicomStudy`` refers to them
or to the parsed original dataset.

What is accepted
    DICOM Part 10 files only: the 128-byte preamble followed by ``DICM`` (see :func:`looks_like_dicom`).
    Files without it (old ACR-NEMA streams such as pydicom's ``no_meta.dcm``) are refused rather than
    read with ``force=True``, which makes pydicom guess the encoding of any byte string and "succeed"
    on junk. The file meta must state its transfer syntax, and the syntax must be one of
    ``SUPPORTED_TRANSFER_SYNTAXES``: the native little/big-endian and deflated encodings, RLE
    (pydicom's own decoder) and the JPEG, JPEG-LS and JPEG 2000 families, decoded by the pylibjpeg
    plugins only (pydicom could also hand JPEG and JPEG 2000 to Pillow; we keep Pillow's rarely used
    decoders out of reach of uploads). Anything else, video syntaxes and High-Throughput JPEG 2000
    included, is refused by name and UID. Rows x Columns x Number of Frames is checked against
    ``max_pixels`` from the header before any pixel is decoded: a 10 kB RLE or JPEG stream can claim
    gigabytes, the DICOM analogue of a PNG decompression bomb. 1-bit (segmentation) and float pixel
    data are refused.

De-identification: an allow-list, checked against PS3.15 Annex E
    Three maintained implementations on PyPI were evaluated:

    * ``deid`` (pydicom/deid) applies "recipes"; the header part of its bundled ``deid.dicom`` recipe
      is a hand-written REMOVE/REPLACE list, not the Annex E table, and the package pulls in
      matplotlib for its pixel-cleaning helpers.
    * ``dicognito`` pseudonymises: it replaces names, IDs, addresses and dates with plausible fakes and
      shifts dates. That suits research exports that must stay IOD-conformant, but it keeps private
      tags and any attribute it has no rule for, and is not organised around the Annex E table.
    * ``dicom-anonymizer`` (KitwareMedical) is table-driven: its ``dicomfields_2026c`` lists are
      generated from table E.1-1 of the standard. As a runtime library it is a poor fit for a web
      process: the UID map is a module-level dict that grows for the life of the process and links
      every upload to every other, it prints to stdout, and its X action replaces dates instead of
      removing them.

    So the runtime uses pydicom alone, and the profile is implemented as an allow-list: the
    de-identified file keeps exactly ``KEPT_ATTRIBUTES`` (plus the file meta we write and the pixel
    data) and drops everything else: all private tags, curves (50xx), overlays (60xx), every
    sequence, every person name, ID, date, time, address and free-text description. That is stricter
    than Annex E's table (which keeps whatever it does not list) and easy to prove: the tests read
    the de-identified file and check its attribute set, and cross-check every kept attribute against
    ``dicom-anonymizer``'s copy of table E.1-1 (a test-only dependency): each one is either absent
    from the table or a UID with action U, which we replace. Patient- and study-level Type 2
    attributes (Patient's Name, Patient ID, Study Date, Accession Number ...) are removed rather than
    emptied, so the result is an image for viewing and analysis, not an object to send back to a
    PACS. Decoding also drops overlay bits embedded in unused high bits of the pixel data: pydicom
    masks bits above Bits Stored, and the de-identified pixel data is written from the decoded array.

    UIDs (Study, Series, SOP Instance, Frame of Reference) follow action U: replaced consistently
    within the file (the file meta's Media Storage SOP Instance UID matches), either by fresh random
    UIDs or, when the caller passes ``uid_key``, by ``HMAC-SHA256(uid_key, original UID)`` fed to
    ``pydicom.uid.generate_uid``: the same original always maps to the same new UID under one key, so
    two series of one study stay grouped, while nobody without the key can link them to the source.

    Dates: the Basic Profile without the "Retain Longitudinal Temporal Information" options. Study
    Date and every other date and time are removed (Annex E gives them Z, D or X), Longitudinal
    Temporal Information Modified is set to ``REMOVED``, and ``DicomStudy.metadata`` therefore has no
    study date: it is built from the de-identified dataset, so it can never show more than the
    de-identified file keeps. (Keeping dates is an Annex E option, but a date plus modality and body
    part narrows a patient down quickly, and nothing in Prism's workflows needs it.)

    Not handled here: text burned into the pixels. ``DicomStudy.may_contain_burned_in_text`` is True
    when Burned In Annotation is YES, or when it is absent on ultrasound, secondary-capture and other
    screen-grab-like objects; callers route those to manual review rather than releasing them.

Rendering
    Rescale Slope/Intercept (the Modality LUT), then the VOI window (PS3.3 C.11.2.1.2 LINEAR, plus
    LINEAR_EXACT and SIGMOID from C.11.2.1.3), then MONOCHROME1 inverted, to an 8-bit greyscale image;
    colour data (RGB, YBR converted by the decoder, PALETTE COLOR expanded through its LUT) becomes
    8-bit RGB and ignores the window. A Modality LUT Sequence is not applied (it is not kept either,
    so the de-identified file renders the same).

Callers' duties: parsing untrusted DICOM can still hang or eat memory in ways a header check cannot
see (pydicom/pydicom#1274), so run this under the upload size cap and a time and memory limit; and
pydicom's warnings about invalid values quote those values (a malformed Patient's Name included) via
``warnings`` and the ``pydicom`` logger, so logging must keep them out of the logs (RELIABILITY L3).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import operator
from dataclasses import dataclass, field

import numpy as np
import pydicom
from PIL import Image
from pydicom import uid as dicom_uid
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, get_decoder
from pydicom.pixels.utils import get_expected_length
from pydicom.sequence import Sequence

# (centre, width) in Hounsfield units; meaningful for CT only.
CT_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40, 80),
    "lung": (-600, 1500),
    "bone": (400, 1800),
    "abdomen": (40, 400),
}

# Transfer syntax -> the pydicom decoding plugin we allow for it ("" for the native encodings).
SUPPORTED_TRANSFER_SYNTAXES: dict[str, str] = {
    dicom_uid.ImplicitVRLittleEndian: "",
    dicom_uid.ExplicitVRLittleEndian: "",
    dicom_uid.DeflatedExplicitVRLittleEndian: "",
    dicom_uid.ExplicitVRBigEndian: "",
    dicom_uid.RLELossless: "pydicom",
    dicom_uid.JPEGBaseline8Bit: "pylibjpeg",
    dicom_uid.JPEGExtended12Bit: "pylibjpeg",
    dicom_uid.JPEGLossless: "pylibjpeg",
    dicom_uid.JPEGLosslessSV1: "pylibjpeg",
    dicom_uid.JPEGLSLossless: "pylibjpeg",
    dicom_uid.JPEGLSNearLossless: "pylibjpeg",
    dicom_uid.JPEG2000Lossless: "pylibjpeg",
    dicom_uid.JPEG2000: "pylibjpeg",
}

# Lossy syntaxes -> Lossy Image Compression Method (PS3.3 C.7.6.1.1.5.1); decoding them to native
# pixels must not hide that the image was lossy-compressed.
_LOSSY_METHODS = {
    dicom_uid.JPEGBaseline8Bit: "ISO_10918_1",
    dicom_uid.JPEGExtended12Bit: "ISO_10918_1",
    dicom_uid.JPEGLSNearLossless: "ISO_14495_1",
    dicom_uid.JPEG2000: "ISO_15444_1",
}

# Copied unchanged: attributes table E.1-1 does not list (the Basic Profile keeps them).
_COPIED = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "ImageType",
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "BodyPartExamined",
    "Laterality",
    "ImageLaterality",
    "ViewPosition",
    "PatientPosition",
    "PatientOrientation",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SliceLocation",
    "SliceThickness",
    "SpacingBetweenSlices",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "PixelAspectRatio",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "BurnedInAnnotation",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
)
# Annex E action U: kept, with a new value (see _UidMap).
_REPLACED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
# Written from the decoded array (Image Pixel module), not copied.
_PIXEL_DESCRIPTION = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
)
# Written by the de-identifier (PS3.15 E.1.1 and E.3.6).
_DEIDENTIFICATION_MARKS = (
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified",
)
# Every attribute a de-identified file can hold besides the file meta (group 0002) and Pixel Data.
KEPT_ATTRIBUTES: tuple[str, ...] = _COPIED + _REPLACED_UIDS + _PIXEL_DESCRIPTION + _DEIDENTIFICATION_MARKS

_DEIDENTIFICATION_METHOD = [
    "DICOM PS3.15 Annex E Basic Profile",
    "Allow-list: attributes not listed are removed",
    "Dates and times removed",
]
_BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")

# Objects that are often screen captures with patient details drawn into the pixels.
_SCREEN_CAPTURE_MODALITIES = {"US", "SC", "OT", "XC", "ES", "DOC", "SM", "GM"}

_NOT_DICOM = (
    "This is not a DICOM file: a DICOM file has the 4-byte marker 'DICM' at byte 128, and this one "
    "does not. Export the image from your PACS or viewer as a DICOM (Part 10) file."
)
_DAMAGED = "This DICOM file is damaged or malformed and could not be read."
_BAD_SIZE = "This DICOM file's image size (Rows, Columns, Number of Frames) is missing or invalid."


class DicomRejected(ValueError):
    """An uploaded DICOM file Prism will not accept; ``str(exc)`` is a sentence for the user."""


def looks_like_dicom(data: bytes) -> bool:
    """True when ``data`` starts like a DICOM Part 10 file: 128-byte preamble, then ``DICM``.

    Files without the preamble are deliberately not recognised (see the module docstring): reading
    them needs ``force=True``, and then any byte string parses as *something*.
    """
    return len(data) >= 132 and data[128:132] == b"DICM"


@dataclass(frozen=True, eq=False)
class DicomStudy:
    """One decoded, de-identified DICOM file.

    ``pixels`` holds the stored values (before the Modality LUT), shaped ``(frames, rows, columns)``
    or ``(frames, rows, columns, 3)`` for colour, read-only. ``metadata`` holds only values the
    de-identified file also holds, plus ``transfer_syntax``, the name of the upload's encoding.
    The window and rescale fields apply to greyscale images; colour images ignore them.
    """

    frames: int
    rows: int
    columns: int
    metadata: dict[str, object]
    window_center: float
    window_width: float
    rescale_slope: float
    rescale_intercept: float
    voi_lut_function: str
    may_contain_burned_in_text: bool
    deidentified_bytes: bytes = field(repr=False)
    pixels: np.ndarray = field(repr=False)

    @property
    def is_colour(self) -> bool:
        return self.pixels.ndim == 4

    def render(self, frame: int = 0, center: float | None = None, width: float | None = None) -> Image.Image:
        """An 8-bit image of one frame: greyscale through the window, or RGB (the window is ignored).

        ``center``/``width`` default to the study's window; ``width`` must be at least 1.
        Raises ValueError for a frame outside ``0..frames-1`` or a bad window.
        """
        try:
            index = operator.index(frame)
        except TypeError:
            index = -1
        if isinstance(frame, bool) or not 0 <= index < self.frames:
            raise ValueError(f"Frame {frame!r} does not exist: frames run from 0 to {self.frames - 1}.")
        stored = self.pixels[index]
        if self.is_colour:
            bits_stored = int(self.metadata["bits_stored"])
            if bits_stored > 8:
                stored = np.right_shift(stored, bits_stored - 8)
            return Image.fromarray(np.ascontiguousarray(stored, dtype=np.uint8), "RGB")

        center = self.window_center if center is None else float(center)
        width = self.window_width if width is None else float(width)
        if not (np.isfinite(center) and np.isfinite(width)) or width < 1:
            raise ValueError("The window width must be a number of at least 1, and the centre a finite number.")
        values = stored.astype(np.float64) * self.rescale_slope + self.rescale_intercept
        grey = _window(values, center, width, self.voi_lut_function)
        if self.metadata["photometric_interpretation"] == "MONOCHROME1":
            grey = 255.0 - grey
        return Image.fromarray(np.rint(grey).astype(np.uint8), "L")


def preview_png(study: DicomStudy, frame: int = 0, center: float | None = None, width: float | None = None) -> bytes:
    """``study.render(...)`` as PNG bytes: a fresh image, so no text chunks or profiles."""
    buffer = io.BytesIO()
    study.render(frame, center, width).save(buffer, "PNG")
    return buffer.getvalue()


def read_dicom(data: bytes, *, max_pixels: int, uid_key: bytes | None = None) -> DicomStudy:
    """Parse, check, decode and de-identify ``data``; raise DicomRejected for anything Prism refuses.

    ``max_pixels`` caps Rows x Columns x Number of Frames, checked before decoding. ``uid_key``, when
    given, makes the replacement UIDs a keyed hash of the originals (stable across uploads); without
    it they are random.
    """
    if max_pixels < 1:
        raise ValueError("max_pixels must be positive")
    if not looks_like_dicom(data):
        raise DicomRejected(_NOT_DICOM)
    try:
        return _read(data, max_pixels, uid_key)
    except DicomRejected:
        raise
    except Exception as exc:  # untrusted input: a parser or decoder failure is a property of the file
        raise DicomRejected(_DAMAGED) from exc


def _read(data: bytes, max_pixels: int, uid_key: bytes | None) -> DicomStudy:
    source = pydicom.dcmread(io.BytesIO(data), force=False)
    syntax = source.file_meta.get("TransferSyntaxUID")
    if not syntax:
        raise DicomRejected("This DICOM file does not say how its data is encoded (no Transfer Syntax UID).")
    syntax = dicom_uid.UID(str(syntax))
    if syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        if not syntax.is_valid:  # never echo arbitrary bytes from the file into a message or a log
            raise DicomRejected("This DICOM file's Transfer Syntax UID is not a valid UID.")
        described = f"the {syntax.name} transfer syntax" if syntax.name != syntax else "an unknown transfer syntax"
        raise DicomRejected(
            f"This DICOM file uses {described} ({syntax}), which Prism cannot decode. "
            "Export it again uncompressed or as JPEG, JPEG-LS, JPEG 2000 or RLE."
        )
    _check_header(source, max_pixels)
    pixels, photometric, bits_stored = _decode(source, syntax)
    deidentified = _deidentify(source, syntax, pixels, photometric, bits_stored, uid_key)
    return _study(deidentified, syntax, pixels, _to_bytes(deidentified), _may_contain_burned_in_text(source))


def read_stored(data: bytes) -> DicomStudy:
    """A file Prism stored: checked and de-identified when it was uploaded, so it is only parsed and
    decoded here (previews and jobs read it again and again; de-identifying it anew would cost several
    times the render and give it new UIDs each time). Not for untrusted input: use ``read_dicom``."""
    stored = pydicom.dcmread(io.BytesIO(data), force=False)
    syntax = dicom_uid.UID(str(stored.file_meta.TransferSyntaxUID))
    pixels, _photometric, _bits_stored = _decode(stored, syntax)
    return _study(stored, syntax, pixels, data, _may_contain_burned_in_text(stored))


def _study(ds: Dataset, syntax: dicom_uid.UID, pixels: np.ndarray, stored_bytes: bytes, burned_in: bool) -> DicomStudy:
    """The study of a de-identified dataset ``ds`` and its decoded ``pixels``."""
    metadata = _metadata(ds, syntax)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    voi_function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    if not (np.isfinite(slope) and np.isfinite(intercept)):
        raise DicomRejected("This DICOM file's Rescale Slope or Rescale Intercept is not a finite number.")
    center, width = _default_window(ds, pixels, slope, intercept)
    pixels.flags.writeable = False
    return DicomStudy(
        frames=pixels.shape[0],
        rows=pixels.shape[1],
        columns=pixels.shape[2],
        metadata=metadata,
        window_center=center,
        window_width=width,
        rescale_slope=slope,
        rescale_intercept=intercept,
        voi_lut_function=voi_function,
        may_contain_burned_in_text=burned_in,
        deidentified_bytes=stored_bytes,
        pixels=pixels,
    )


def _check_header(ds: Dataset, max_pixels: int) -> None:
    """Refuse files without usable pixel data, and oversized images, before decoding anything."""
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise DicomRejected("This DICOM file holds floating-point pixel data, which Prism cannot display.")
        raise DicomRejected("This DICOM file contains no image (it has no Pixel Data).")
    rows, columns = ds.get("Rows"), ds.get("Columns")
    frames = ds.get("NumberOfFrames", 1)
    try:
        rows, columns, frames = int(rows), int(columns), int(frames or 1)
    except (TypeError, ValueError):
        raise DicomRejected(_BAD_SIZE) from None
    if rows < 1 or columns < 1 or frames < 1:
        raise DicomRejected(_BAD_SIZE)
    if rows * columns * frames > max_pixels:
        raise DicomRejected(
            f"This DICOM image is too large: {columns} x {rows} pixels x {frames} frame(s) is "
            f"{rows * columns * frames:,} pixels, and Prism accepts at most {max_pixels:,}."
        )
    if ds.get("BitsAllocated") not in (8, 16, 32):
        raise DicomRejected(
            f"This DICOM file stores {ds.get('BitsAllocated')}-bit pixels; Prism reads 8-, 16- and 32-bit images only."
        )
    if not ds.file_meta.TransferSyntaxUID.is_encapsulated and len(ds.PixelData) < get_expected_length(ds):
        raise DicomRejected(
            f"This DICOM file is truncated: its pixel data has {len(ds.PixelData):,} bytes, "
            f"and the header describes {get_expected_length(ds):,}."
        )


def _decode(ds: Dataset, syntax: dicom_uid.UID) -> tuple[np.ndarray, str, int]:
    """Decode every frame to ``(frames, rows, cols[, 3])`` native little-endian values.

    Returns the array, its photometric interpretation (YBR is converted to RGB, a palette expanded
    to RGB) and Bits Stored.
    """
    try:
        pixels, meta = get_decoder(syntax).as_array(
            ds, as_rgb=True, decoding_plugin=SUPPORTED_TRANSFER_SYNTAXES[syntax]
        )
    except Exception as exc:
        raise DicomRejected(
            f"The image data in this DICOM file ({syntax.name}) could not be decoded; it may be damaged."
        ) from exc
    photometric = str(meta["photometric_interpretation"])
    bits_stored = int(meta["bits_stored"])
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
        photometric = "RGB"
        bits_stored = pixels.dtype.itemsize * 8
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB"):
        raise DicomRejected("This DICOM file uses a colour model (Photometric Interpretation) Prism cannot display.")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    colour = photometric == "RGB"
    shape = (frames, *pixels.shape[-3:]) if colour else (frames, *pixels.shape[-2:])
    pixels = np.ascontiguousarray(pixels.reshape(shape), dtype=pixels.dtype.newbyteorder("<"))
    if not pixels.flags.owndata:  # a view would keep the upload's Pixel Data buffer alive
        pixels = pixels.copy()
    return pixels, photometric, bits_stored


class _UidMap:
    """Action U: each original UID gets one replacement, keyed-hash or random."""

    def __init__(self, key: bytes | None) -> None:
        self._key = key
        self._seen: dict[str, str] = {}

    def __call__(self, original: str) -> str:
        if original not in self._seen:
            if self._key is None:
                self._seen[original] = dicom_uid.generate_uid()
            else:
                digest = hmac.new(self._key, original.encode(), hashlib.sha256).hexdigest()
                self._seen[original] = dicom_uid.generate_uid(entropy_srcs=[digest])
        return self._seen[original]


def _deidentify(
    source: Dataset,
    syntax: dicom_uid.UID,
    pixels: np.ndarray,
    photometric: str,
    bits_stored: int,
    uid_key: bytes | None,
) -> Dataset:
    """A new dataset holding only KEPT_ATTRIBUTES and the decoded pixels (see the module docstring)."""
    ds = Dataset()
    for keyword in _COPIED:
        if keyword in source:
            element = source[keyword]
            ds.add(DataElement(element.tag, element.VR, element.value))
    new_uid = _UidMap(uid_key)
    for keyword in _REPLACED_UIDS:
        if keyword in source and source[keyword].value:
            ds.add_new(tag_for_keyword(keyword), "UI", new_uid(str(source[keyword].value)))
    if "SOPClassUID" not in ds:
        ds.SOPClassUID = dicom_uid.SecondaryCaptureImageStorage
    if "SOPInstanceUID" not in ds:
        ds.SOPInstanceUID = dicom_uid.generate_uid()
    if syntax in _LOSSY_METHODS and "LossyImageCompression" not in ds:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = _LOSSY_METHODS[syntax]

    frames = pixels.shape[0]
    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    ds.PhotometricInterpretation = photometric
    if photometric == "RGB":
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[2]
    if frames > 1 or "NumberOfFrames" in source:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    pixel_bytes = pixels.tobytes()
    if len(pixel_bytes) % 2:
        pixel_bytes += b"\0"
    ds.add_new(tag_for_keyword("PixelData"), "OB" if ds.BitsAllocated == 8 else "OW", pixel_bytes)

    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = _DEIDENTIFICATION_METHOD
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = _BASIC_PROFILE_CODE
    ds.DeidentificationMethodCodeSequence = Sequence([code])
    ds.LongitudinalTemporalInformationModified = "REMOVED"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = dicom_uid.ExplicitVRLittleEndian
    meta.ImplementationClassUID = dicom_uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _to_bytes(ds: Dataset) -> bytes:
    """Part 10 bytes with an all-zero preamble (CVE-2019-11687: preambles can carry executables)."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _metadata(ds: Dataset, syntax: dicom_uid.UID) -> dict[str, object]:
    """Display metadata, read from the de-identified dataset; absent attributes are left out."""

    def text(keyword: str) -> str | None:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        return "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)

    def numbers(keyword: str) -> list[float] | None:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        values = value if isinstance(value, MultiValue) else [value]
        return [float(v) for v in values]

    sop_class = ds.get("SOPClassUID")
    spacing = numbers("PixelSpacing") or numbers("ImagerPixelSpacing")
    thickness = numbers("SliceThickness")
    found: dict[str, object | None] = {
        "modality": text("Modality"),
        "sop_class": sop_class.name if isinstance(sop_class, dicom_uid.UID) and sop_class.is_valid else None,
        "body_part": text("BodyPartExamined"),
        "laterality": text("ImageLaterality") or text("Laterality"),
        "view_position": text("ViewPosition"),
        "image_type": text("ImageType"),
        "manufacturer": text("Manufacturer"),
        "manufacturer_model": text("ManufacturerModelName"),
        "pixel_spacing_mm": spacing,
        "slice_thickness_mm": thickness[0] if thickness else None,
        "photometric_interpretation": str(ds.PhotometricInterpretation),
        "bits_stored": int(ds.BitsStored),
        "lossy_compressed": ds.get("LossyImageCompression") == "01",
        "transfer_syntax": syntax.name,
    }
    return {key: value for key, value in found.items() if value is not None}


def _default_window(ds: Dataset, pixels: np.ndarray, slope: float, intercept: float) -> tuple[float, float]:
    """The file's first Window Center/Width when usable, else the full range of the modality values."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None and center != "" and width != "":
        center = float(center[0] if isinstance(center, MultiValue) else center)
        width = float(width[0] if isinstance(width, MultiValue) else width)
        if np.isfinite(center) and np.isfinite(width) and width >= 1:
            return center, width
    low = float(pixels.min()) * slope + intercept
    high = float(pixels.max()) * slope + intercept
    low, high = min(low, high), max(low, high)
    return (low + high) / 2, max(high - low, 1.0)


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 / C.11.2.1.3 VOI functions onto 0..255 (as floats)."""
    if function == "SIGMOID":
        return 255.0 / (1.0 + np.exp(np.clip(-4.0 * (values - center) / width, -700, 700)))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0) * 255.0
    if width == 1:
        return np.where(values > center - 0.5, 255.0, 0.0)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0) * 255.0


def _may_contain_burned_in_text(ds: Dataset) -> bool:
    """PS3.15 Annex E leaves pixel text to the Clean Pixel Data option; we only flag likely cases."""
    burned_in = str(ds.get("BurnedInAnnotation", "")).upper()
    if burned_in == "YES":
        return True
    if burned_in == "NO":
        return False
    sop_class = ds.get("SOPClassUID")
    secondary_capture = isinstance(sop_class, dicom_uid.UID) and "Secondary Capture" in sop_class.name
    return secondary_capture or str(ds.get("Modality", "")).upper() in _SCREEN_CAPTURE_MODALITIES
