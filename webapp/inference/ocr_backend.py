"""The real OCR backend: RapidOCR, PP-OCRv4 (Chinese and English) detection, direction and recognition on ONNX Runtime.

``rapidocr-onnxruntime`` 1.x ships its ONNX weights inside the wheel, so loading never downloads
anything and works offline; the package version therefore identifies the weights and is the
revision. (``rapidocr`` 3.x may download models: check before upgrading.) PRISM_OCR_MODEL="rapidocr"
is the only backend for now; a local directory of PP-OCR ONNX files could be accepted later.

RapidOCR's engine keeps per-call state on itself and is not documented as thread-safe, so it runs
only on the service's inference thread, one image per batch: it has no batched entry point, and
its recogniser already batches the lines of one image. Request threads only convert the image to
an array. The text is kept exactly as recognised: PP-OCRv4 sometimes drops the spaces between
English words, and nothing here guesses them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
from PIL import Image

from .service import ProgressCallback
from .settings import InferenceSettings
from .types import ModelState, OcrLine

BACKEND = "rapidocr"
MODEL_ID = "rapidocr-onnxruntime/PP-OCRv4"
_PACKAGE = "rapidocr-onnxruntime"


@dataclass(eq=False)
class RapidOcrModel:
    engine: Any  # rapidocr_onnxruntime.RapidOCR
    revision: str
    model_id: str = MODEL_ID
    precision: str = "fp32"

    def prepare(self, image: Image.Image) -> np.ndarray:
        """The image as a contiguous BGR array (RapidOCR takes 3-channel arrays in OpenCV's order)."""
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])

    def read_prepared(self, batch: Sequence[np.ndarray]) -> list[tuple[OcrLine, ...]]:
        """The lines of each image in RapidOCR's reading order (top to bottom; left to right when tops
        are within 10 px), with boxes in pixels of that image."""
        return [self._read(image) for image in batch]

    def _read(self, image: np.ndarray) -> tuple[OcrLine, ...]:
        found, _timings = self.engine(image)  # (None, None) when no text is found
        return tuple(OcrLine(str(text), float(score), _corners(box)) for box, text, score in found or ())


def _corners(box: Sequence[Sequence[float]]) -> tuple[tuple[int, int], ...]:
    return tuple((round(x), round(y)) for x, y in box)  # type: ignore[return-value]


def load_ocr_model(settings: InferenceSettings, progress: ProgressCallback) -> RapidOcrModel:
    if settings.ocr_model != BACKEND:
        raise ValueError(f"PRISM_OCR_MODEL={settings.ocr_model!r} is not supported; use {BACKEND!r}")
    progress(ModelState.LOADING, None, f"loading {MODEL_ID}")
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as exc:
        # opencv-python (a dependency of rapidocr-onnxruntime) links against libGL and glib, which slim
        # container images lack.
        raise RuntimeError(
            f"{_PACKAGE} cannot be imported ({exc}); install it from requirements.txt, and where OpenCV "
            "reports a missing libGL.so.1 or libgthread, install the system packages libgl1 and libglib2.0-0"
        ) from exc
    # PRISM_TORCH_THREADS caps ONNX Runtime's thread pool too: OCR and the torch models share the cores.
    threads = {"intra_op_num_threads": settings.torch_threads} if settings.torch_threads > 0 else {}
    return RapidOcrModel(RapidOCR(**threads), metadata.version(_PACKAGE))
