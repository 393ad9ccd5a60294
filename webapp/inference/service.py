"""The model service: lazy, once-per-process loading and serialised inference.

Nothing loads at import or in ``create_app``. The first call (or ``manage.py models warm``) starts a
background thread that resolves the model (local directory, ``instance/models/``, hub cache, then a
download when online) and loads it, once, whatever the number of concurrent first callers. Callers
wait at most ``load_wait_seconds`` and otherwise get ``ModelUnavailable`` with a Retry-After hint, so
no request hangs on a 1 GB download.

Inference goes through one ``MicroBatcher`` per model (batching.py): request threads do the
per-item preprocessing (image decode and resize) themselves, then queue the prepared item; one
inference thread per service runs the queued items of both models in batches. Tokenizers and
models are not thread-safe (huggingface/transformers#47085), and that thread is the only one that
touches them. A full queue or a timed-out wait becomes ``ModelUnavailable`` (reason "busy"), which the web
tier answers with 503 and Retry-After.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, TypeVar

from PIL import Image

from . import labels
from .batching import InferenceTimeout, InferenceWorker, MicroBatcher, QueueFull
from .settings import InferenceSettings
from .types import CaptionResult, ModelState, ModelStatus, ModelUnavailable, SentimentResult

logger = logging.getLogger(__name__)

# A loader reports progress as (state, fraction or None, human-readable detail).
ProgressCallback = Callable[[ModelState, "float | None", str], None]


class CaptionModel(Protocol):
    model_id: str
    revision: str | None
    precision: str

    def prepare(self, image: Image.Image) -> Any:
        """Per-image preprocessing; thread-safe, runs on the request thread."""
        ...

    def caption_prepared(self, batch: Sequence[Any]) -> list[str]:
        """One batched generate() over prepared items; runs on the model's worker thread."""
        ...


class SentimentModel(Protocol):
    model_id: str
    revision: str | None
    precision: str

    def classify(self, texts: list[str]) -> list[dict[str, float]]:
        """Probabilities per raw class label, in the checkpoint's id order."""
        ...


M = TypeVar("M", CaptionModel, SentimentModel)
Loader = Callable[[ProgressCallback], M]


class ModelSlot(Generic[M]):
    """One model: its load state, the single loading thread, and its batch queue."""

    def __init__(
        self,
        kind: str,
        source: str,
        loader: Loader,
        settings: InferenceSettings,
        *,
        prepare: Callable[[M, Any], Any],
        run_batch: Callable[[M, Sequence[Any]], Sequence[Any]],
        max_batch: int,
        worker: InferenceWorker | None = None,
    ):
        self.kind = kind
        self.source = source
        self._loader = loader
        self._settings = settings
        self._prepare = prepare
        self.batcher = MicroBatcher(
            kind,
            lambda batch: run_batch(self._model, batch),
            max_batch=max_batch,
            window_seconds=settings.batch_window_ms / 1000.0,
            busy_window_seconds=settings.batch_busy_window_ms / 1000.0,
            queue_size=settings.queue_size,
            worker=worker,
        )
        self._state_lock = threading.Lock()
        self._settled = threading.Event()  # set when a load attempt ends, ready or failed
        self._model: M | None = None
        self._state = ModelState.NOT_LOADED
        self._detail = ""
        self._progress: float | None = None
        self._failed_at = 0.0
        self._load_count = 0  # how many times the loader ran; tests check it stays 1

    @property
    def load_count(self) -> int:
        return self._load_count

    def status(self) -> ModelStatus:
        with self._state_lock:
            model = self._model
            return ModelStatus(
                kind=self.kind,
                source=self.source,
                state=self._state,
                detail=self._detail,
                progress=self._progress,
                model_id=getattr(model, "model_id", None),
                revision=getattr(model, "revision", None),
            )

    def start_loading(self) -> None:
        """Start the background load unless it is running, done, or failed too recently."""
        with self._state_lock:
            if self._state in (ModelState.READY, ModelState.DOWNLOADING, ModelState.LOADING):
                return
            if self._state is ModelState.FAILED and (
                time.monotonic() - self._failed_at < self._settings.retry_failed_after_seconds
            ):
                return
            self._state, self._detail, self._progress = ModelState.LOADING, "starting", None
            self._settled.clear()
            thread = threading.Thread(target=self._load, name=f"prism-load-{self.kind}", daemon=True)
        thread.start()

    def _report(self, state: ModelState, progress: float | None, detail: str) -> None:
        with self._state_lock:
            self._state, self._progress, self._detail = state, progress, detail

    def _load(self) -> None:
        self._load_count += 1
        try:
            model = self._loader(self._report)
        except Exception as exc:  # any loader failure becomes a visible state, never a crash
            with self._state_lock:
                self._state, self._progress = ModelState.FAILED, None
                self._detail = f"{type(exc).__name__}: {exc}"[:500]
                self._failed_at = time.monotonic()
        else:
            with self._state_lock:
                self._model = model
                self._state, self._progress, self._detail = ModelState.READY, None, ""
        finally:
            self._settled.set()

    def unload(self) -> None:
        with self._state_lock:
            self._model = None
            self._state, self._detail, self._progress = ModelState.NOT_LOADED, "", None
            self._settled.clear()

    def get(self, wait: float | None = None) -> M:
        """Return the loaded model, waiting up to ``wait`` seconds for a load in progress."""
        self.start_loading()
        self._settled.wait(self._settings.load_wait_seconds if wait is None else wait)
        status = self.status()
        if status.state is ModelState.READY:
            return self._model  # type: ignore[return-value]
        if status.state is ModelState.FAILED:
            raise ModelUnavailable(
                self.kind,
                status.state,
                f"The {self.kind} model could not be loaded: {status.detail}",
                retry_after=int(self._settings.retry_failed_after_seconds),
            )
        percent = f" ({status.progress:.0%})" if status.progress is not None else ""
        raise ModelUnavailable(
            self.kind,
            status.state,
            f"The {self.kind} model is not ready yet: {status.state.value}{percent}. Try again shortly.",
            retry_after=10,
        )

    def infer(self, item: Any) -> tuple[Any, M]:
        """Run one item through the model's batch queue; returns (result, model).

        Raises ``ModelUnavailable``: not loaded, queue full or timed out ("busy"), or the model
        failed on this input ("error"). Nothing here raises anything else.
        """
        model = self.get()
        try:
            result = self.batcher.submit(
                item,
                timeout=self._settings.inference_timeout_seconds,
                prepare=lambda raw: self._prepare(model, raw),
            )
        except (QueueFull, InferenceTimeout) as exc:
            logger.warning("%s request shed: %s", self.kind, exc)
            raise ModelUnavailable(
                self.kind,
                ModelState.READY,
                f"Prism is busy: the {self.kind} model has more requests than it can take right now. "
                "Please try again in a few seconds.",
                retry_after=self._busy_retry_after(),
                reason="busy",
            ) from exc
        except Exception as exc:
            logger.exception("%s inference failed", self.kind)
            raise ModelUnavailable(
                self.kind,
                ModelState.READY,
                f"The {self.kind} model failed on this input ({type(exc).__name__}).",
                retry_after=self._busy_retry_after(),
                reason="error",
            ) from exc
        return result, model

    def _busy_retry_after(self) -> int:
        """Seconds until the queue has likely drained: queued batches x the last batch's duration."""
        batches_ahead = math.ceil((self.batcher.pending() + 1) / self.batcher.max_batch)
        return max(1, math.ceil(batches_ahead * self.batcher.last_batch_seconds))


class ModelService:
    """The one interface views and the API call; returns frozen dataclasses of plain values."""

    def __init__(self, settings: InferenceSettings):
        self.settings = settings
        caption_loader, sentiment_loader = _loaders(settings)
        self.worker = InferenceWorker()  # one thread runs both models' batches (see batching.py)
        self.caption_slot: ModelSlot[CaptionModel] = ModelSlot(
            "caption",
            settings.caption_model,
            caption_loader,
            settings,
            prepare=lambda model, image: model.prepare(image),
            run_batch=lambda model, batch: model.caption_prepared(batch),
            max_batch=settings.caption_max_batch,
            worker=self.worker,
        )
        self.sentiment_slot: ModelSlot[SentimentModel] = ModelSlot(
            "sentiment",
            settings.sentiment_model,
            sentiment_loader,
            settings,
            prepare=lambda model, text: text,  # tokenising happens in the worker: tokenizers aren't thread-safe
            run_batch=lambda model, batch: model.classify(list(batch)),
            max_batch=settings.sentiment_max_batch,
            worker=self.worker,
        )

    @property
    def slots(self) -> tuple[ModelSlot, ModelSlot]:
        return (self.caption_slot, self.sentiment_slot)

    def statuses(self) -> list[ModelStatus]:
        return [slot.status() for slot in self.slots]

    def close(self) -> None:
        """Stop the inference thread and drop the models (the benchmark runs several services in turn)."""
        self.worker.stop()
        for slot in self.slots:
            slot.unload()

    def start_loading(self, *, caption: bool, sentiment: bool) -> None:
        """Start every load a request will need at once, so two models download side by side
        rather than one after the other across retries."""
        for needed, slot in ((caption, self.caption_slot), (sentiment, self.sentiment_slot)):
            if needed:
                slot.start_loading()

    def warm(self, wait: float | None = None) -> list[ModelStatus]:
        """Start loading every model and wait for each (used by ``manage.py models warm/check``)."""
        for slot in self.slots:
            slot.start_loading()
        for slot in self.slots:
            try:
                slot.get(wait)
            except ModelUnavailable:
                pass
        return self.statuses()

    def announce(self, kind: str) -> AbstractContextManager[None]:
        """Tell ``kind``'s batcher that this thread will submit one item soon (``MicroBatcher.announce``)."""
        return {"caption": self.caption_slot, "sentiment": self.sentiment_slot}[kind].batcher.announce()

    def caption(self, image: Image.Image) -> CaptionResult:
        started = time.perf_counter()
        text, model = self.caption_slot.infer(image)
        return CaptionResult(
            text=str(text).strip(),
            model_id=model.model_id,
            revision=model.revision,
            precision=model.precision,
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )

    def sentiment(self, text: str) -> SentimentResult:
        started = time.perf_counter()
        raw, model = self.sentiment_slot.infer(text)
        label, score, scores = labels.normalise(raw, self.settings.neutral_range)
        return SentimentResult(
            label=label,
            score=score,
            scores=scores,
            raw_scores=dict(raw),
            model_id=model.model_id,
            revision=model.revision,
            precision=model.precision,
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )


def _loaders(settings: InferenceSettings) -> tuple[Loader, Loader]:
    if settings.backend == "fake":
        from . import fake

        delay = settings.fake_latency_ms / 1000.0
        return (
            lambda progress: fake.load_caption_model(progress, delay),
            lambda progress: fake.load_sentiment_model(progress, delay),
        )
    if settings.backend == "transformers":
        # torch is imported by the first load, not here: create_app, init-db and the CLI stay fast.
        def load_caption(progress):
            from . import transformers_backend

            return transformers_backend.load_caption_model(settings, progress)

        def load_sentiment(progress):
            from . import transformers_backend

            return transformers_backend.load_sentiment_model(settings, progress)

        return load_caption, load_sentiment
    raise ValueError(f"unknown PRISM_MODEL_BACKEND {settings.backend!r} (use 'transformers' or 'fake')")
