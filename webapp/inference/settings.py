"""Model-service settings, read once from the Flask config so the service never touches ``current_app``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class InferenceSettings:
    backend: str  # "transformers" (real models) or "fake" (deterministic, for tests and demos)
    caption_model: str  # hub id or local directory
    sentiment_model: str
    model_dir: Path  # where `manage.py models pull` puts snapshots; searched before the hub
    offline: bool
    caption_num_beams: int
    caption_max_new_tokens: int
    neutral_range: tuple[float, float]  # two-class models: P(positive) inside this range is "neutral"
    torch_threads: int  # 0 = leave torch's default
    load_wait_seconds: float  # how long a request waits for a loading model before "not ready"
    retry_failed_after_seconds: float
    # Speed (see README "Performance"): where and in what precision models run, and how requests
    # are batched. Defaults here keep direct constructions (tests) exact and unbatched-equivalent.
    device: str = "cpu"  # "auto" (cuda when present), "cpu" or "cuda"
    precision: str = "fp32"  # "auto", "fp32", "bf16", "fp16" (cuda) or "int8" (dynamic, CPU)
    caption_max_batch: int = 8
    sentiment_max_batch: int = 32
    # Extra wait for company after the first item; callers already preparing an item are waited for
    # regardless (batching.py), so 0 costs a lone user nothing and bursts still batch.
    batch_window_ms: float = 0.0
    # While the previous batch held several items: jobs of a burst reach the model tens of ms apart.
    batch_busy_window_ms: float = 0.0
    queue_size: int = 32  # requests waiting per model before new ones are refused (503)
    inference_timeout_seconds: float = 30.0  # a request's wait for its result, queue included
    fake_latency_ms: float = 0.0  # the fake backend sleeps this long per batch (job tests kill a worker mid-job)
    # OCR: "rapidocr" (PP-OCRv4 ONNX weights inside the rapidocr-onnxruntime wheel) is the only backend
    # for now. A local directory of PP-OCR ONNX files (det/cls/rec) could be accepted here later.
    ocr_model: str = "rapidocr"
    # Text embeddings (categories): a sentence-embedding checkpoint, hub id or local directory. The
    # default is multilingual (Chinese and English in one vector space).
    embedding_model: str = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"
    embedding_max_batch: int = 32  # requests per batch, and texts per forward pass
    # Optional: an instruction-tuned text-generation model that writes reply drafts (None: templates).
    reply_model: str | None = None
    reply_max_new_tokens: int = 160
    # Optional: a CLIP-style joint image-text model for image-text agreement (None: caption and OCR text
    # compared with the text by the embedding model; webapp/fusion.py).
    agreement_model: str | None = None
    # Refuse to download a hub id not pinned to a commit (``org/name@<commit>``; see hub.py).
    require_pinned: bool = False
    # "auto": Prism's own forward passes for the architectures they implement; "off": transformers' code.
    fast_path: str = "auto"

    @classmethod
    def from_config(cls, config: Mapping) -> InferenceSettings:
        low, high = (float(part) for part in str(config["PRISM_SENTIMENT_NEUTRAL_RANGE"]).split(","))
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError("PRISM_SENTIMENT_NEUTRAL_RANGE must be 'low,high' with 0 <= low <= high <= 1")
        return cls(
            backend=str(config["PRISM_MODEL_BACKEND"]),
            caption_model=str(config["PRISM_CAPTION_MODEL"]),
            sentiment_model=str(config["PRISM_SENTIMENT_MODEL"]),
            model_dir=Path(config["PRISM_MODEL_DIR"]),
            offline=bool(config["PRISM_MODEL_OFFLINE"]),
            require_pinned=bool(config.get("PRISM_MODEL_REQUIRE_PINNED", False)),
            caption_num_beams=int(config["PRISM_CAPTION_NUM_BEAMS"]),
            caption_max_new_tokens=int(config["PRISM_CAPTION_MAX_NEW_TOKENS"]),
            fast_path=str(config["PRISM_FAST_PATH"]),
            neutral_range=(low, high),
            torch_threads=int(config["PRISM_TORCH_THREADS"]),
            load_wait_seconds=float(config["PRISM_MODEL_LOAD_WAIT"]),
            retry_failed_after_seconds=float(config["PRISM_MODEL_RETRY_AFTER"]),
            device=str(config["PRISM_DEVICE"]),
            precision=str(config["PRISM_PRECISION"]),
            caption_max_batch=int(config["PRISM_CAPTION_MAX_BATCH"]),
            sentiment_max_batch=int(config["PRISM_SENTIMENT_MAX_BATCH"]),
            batch_window_ms=float(config["PRISM_BATCH_WINDOW_MS"]),
            batch_busy_window_ms=float(config["PRISM_BATCH_BUSY_WINDOW_MS"]),
            queue_size=int(config["PRISM_QUEUE_SIZE"]),
            inference_timeout_seconds=float(config["PRISM_INFERENCE_TIMEOUT"]),
            fake_latency_ms=float(config["PRISM_FAKE_LATENCY_MS"]),
            ocr_model=str(config["PRISM_OCR_MODEL"]),
            embedding_model=str(config["PRISM_EMBEDDING_MODEL"]),
            embedding_max_batch=int(config["PRISM_EMBEDDING_MAX_BATCH"]),
            reply_model=str(config["PRISM_REPLY_MODEL"]) if config.get("PRISM_REPLY_MODEL") else None,
            reply_max_new_tokens=int(config["PRISM_REPLY_MAX_NEW_TOKENS"]),
            agreement_model=str(config["PRISM_AGREEMENT_MODEL"]) if config.get("PRISM_AGREEMENT_MODEL") else None,
        )
