"""OCR: the real RapidOCR (PP-OCRv4, weights inside its wheel) on rendered text, the fake backend, and the
service around them."""

from __future__ import annotations

import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import pytest
from flask import Flask
from PIL import Image, ImageDraw, ImageFont
from tiny_models import tiny_settings

from webapp.config import defaults
from webapp.inference.cli import models_cli
from webapp.inference.service import ModelService
from webapp.inference.types import ModelState, ModelUnavailable, OcrResult

pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr-onnxruntime is not installed")

ENGLISH_LINES = ["Invoice 4821 was charged twice", "Homework page 7: fractions", "Delivery to Room 305"]
CHINESE_LINES = ["我的退款还没有到账", "请在周五之前交作业"]
_CJK_FONTS = [
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
]


def _cjk_font_path() -> str | None:
    """A font with Chinese glyphs: a known path, else the first one fontconfig lists for zh."""
    for path in _CJK_FONTS:
        if Path(path).is_file():
            return path
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return None
    try:
        listed = subprocess.run(  # noqa: S603 (fontconfig, fixed arguments)
            [fc_list, ":lang=zh", "file"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    files = sorted(line.strip().rstrip(":") for line in listed.splitlines() if line.strip())
    return files[0] if files else None


def _render(lines: list[str], font: ImageFont.FreeTypeFont, size: tuple[int, int] = (720, 80)) -> Image.Image:
    """Black text on white, one line every 60 px from the top."""
    image = Image.new("RGB", (size[0], max(size[1], 40 + 60 * len(lines))), "white")
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((24, 24 + 60 * index), line, fill="black", font=font)
    return image


def _squashed(text: str) -> str:
    """PP-OCRv4 sometimes drops the spaces between English words: compare without any whitespace."""
    return "".join(text.split())


@pytest.fixture(scope="module")
def ocr_service(tmp_path_factory):
    """One service with the real RapidOCR engine, shared by this module (loading takes about 0.2 s)."""
    service = ModelService(tiny_settings(tmp_path_factory.mktemp("models")))
    yield service
    service.close()


def test_real_ocr_reads_rendered_english_lines_in_order(ocr_service):
    """RapidOCR reads three rendered English lines, top to bottom, with boxes inside the image."""
    image = _render(ENGLISH_LINES, ImageFont.load_default(size=30))

    result = ocr_service.ocr(image)

    assert isinstance(result, OcrResult)
    assert [_squashed(line.text) for line in result.lines] == [_squashed(line) for line in ENGLISH_LINES]
    assert result.text == "\n".join(line.text for line in result.lines)
    assert 0.8 < result.score <= 1.0
    assert result.score == pytest.approx(sum(line.score for line in result.lines) / len(result.lines))
    tops = [min(y for _x, y in line.box) for line in result.lines]
    assert tops == sorted(tops)
    for line in result.lines:
        assert len(line.box) == 4
        assert all(0 <= x <= image.width and 0 <= y <= image.height for x, y in line.box)
        assert all(isinstance(value, int) for point in line.box for value in point)
    assert result.model_id == "rapidocr-onnxruntime/PP-OCRv4"
    assert result.revision == metadata.version("rapidocr-onnxruntime")
    assert result.precision == "fp32" and result.latency_ms > 0


def test_real_ocr_reads_rendered_chinese_and_mixed_lines(ocr_service):
    """RapidOCR reads Chinese lines and a Chinese+English line rendered with a CJK font."""
    font_path = _cjk_font_path()
    if font_path is None:
        pytest.skip("no font with Chinese glyphs on this machine (fc-list :lang=zh found none)")
    mixed = "订单号 A1024 已发货"
    image = _render([*CHINESE_LINES, mixed], ImageFont.truetype(font_path, 30))

    result = ocr_service.ocr(image)

    assert _squashed(result.text) == "".join(_squashed(line) for line in [*CHINESE_LINES, mixed])
    assert len(result.lines) == 3 and result.score > 0.8


def test_real_ocr_reads_the_scanned_page_from_scikit_image(ocr_service):
    """On skimage's scanned page.png RapidOCR finds its words (a real scan, not a rendering). Its last
    line sits in the page's dark, unevenly lit corner (the sample exists to show that) and is not
    read here; every other line is."""
    import skimage.data as skimage_data  # in requirements.txt: the tests' offline photo and page samples

    image = Image.fromarray(skimage_data.page())

    result = ocr_service.ocr(image)

    text = _squashed(result.text).lower()
    for word in ("region", "segmentation", "markers", "coins", "unambiguously", "background", "histogram"):
        assert word in text, result.text


def test_an_image_without_text_gives_an_empty_result(ocr_service):
    """A blank image yields no lines, empty text and no score (not an error)."""
    result = ocr_service.ocr(Image.new("RGB", (200, 120), "white"))

    assert (result.text, result.lines, result.score) == ("", (), None)
    assert result.model_id == "rapidocr-onnxruntime/PP-OCRv4"


def test_real_ocr_runs_only_on_the_inference_thread(ocr_service, monkeypatch):
    """Concurrent OCR calls all read correctly, and the engine is only ever called on the inference thread."""
    model = ocr_service.ocr_slot.get()
    threads: set[str] = set()
    original = model.engine

    def engine(image):
        threads.add(threading.current_thread().name)
        return original(image)

    monkeypatch.setattr(model, "engine", engine)
    image = _render(["Prism reads this line"], ImageFont.load_default(size=30))

    with ThreadPoolExecutor(max_workers=4) as pool:
        texts = list(pool.map(lambda _: ocr_service.ocr(image).text, range(4)))

    assert threads == {"prism-inference"}
    assert {_squashed(text) for text in texts} == {"Prismreadsthisline"}


def test_onnx_runtime_threads_follow_prism_torch_threads(tmp_path):
    """PRISM_TORCH_THREADS=1 caps every ONNX Runtime session of the OCR engine at one intra-op thread."""
    service = ModelService(tiny_settings(tmp_path / "models", torch_threads=1))
    engine = service.ocr_slot.get().engine
    service.close()

    sessions = [engine.text_det.infer.session, engine.text_cls.infer.session, engine.text_rec.session.session]
    assert [session.get_session_options().intra_op_num_threads for session in sessions] == [1, 1, 1]


def test_an_unsupported_ocr_backend_is_model_unavailable(tmp_path):
    """PRISM_OCR_MODEL other than 'rapidocr' leaves the OCR slot FAILED with the reason."""
    service = ModelService(tiny_settings(tmp_path / "models", ocr_model="/models/pp-ocr"))

    with pytest.raises(ModelUnavailable) as caught:
        service.ocr(Image.new("RGB", (32, 32), "white"))

    service.close()
    assert caught.value.kind == "ocr" and caught.value.state is ModelState.FAILED
    assert "PRISM_OCR_MODEL" in caught.value.detail and "rapidocr" in caught.value.detail


def test_models_pull_has_nothing_to_fetch_for_ocr(tmp_path):
    """`models pull --only ocr` says the weights ship in the package and downloads nothing."""
    app = Flask(__name__)
    app.config.from_mapping(defaults(str(tmp_path)))
    app.cli.add_command(models_cli)

    result = app.test_cli_runner().invoke(args=["models", "pull", "--only", "ocr"])

    assert result.exit_code == 0, result.output
    assert "ocr: its weights ship inside the installed package; nothing to pull" in result.output
    assert not (tmp_path / "models").exists()


def test_fake_ocr_is_deterministic_and_stamped(fake_service):
    """The fake backend reads 'TEXT <w>x<h> <colour>' over the whole image, confidence 0.9, id prism/fake-ocr."""
    image = Image.new("RGB", (64, 48), (200, 30, 30))

    first, second = fake_service.ocr(image), fake_service.ocr(image)

    assert first.text == second.text == "TEXT 64x48 red"
    assert first.lines == second.lines
    assert first.lines[0].box == ((0, 0), (64, 0), (64, 48), (0, 48))
    assert first.score == 0.9 and first.model_id == "prism/fake-ocr"
