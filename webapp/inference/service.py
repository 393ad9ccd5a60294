"""The model service: lazy, once-per-process loading and serialised inference.

Nothing loads at import or in ``create_app``. The first call (or ``manage.py models warm``) starts a
background thread that resolves the model (local directory, ``instance/models/``, hub cache, then a
download when online) and loads it, once, whatever the number of concurrent first callers. Callers
wait at most ``load_wait_seconds`` and otherwise get ``ModelUnavailable`` with a Retry-After hint, so
no request hangs on a 1 GB download.

Four kinds of model (``MODEL_KINDS``): caption, sentiment, OCR and text embedding, and two opt-in ones: a
reply writer (PRISM_REPLY_MODEL) and a joint image-text model for agreement (PRISM_AGREEMENT_MODEL). Inference goes
through one ``MicroBatcher`` per model (batching.py): request threads do the per-item preprocessing
(image decode and resize) themselves, then queue the prepared item; one inference thread per service
runs the queued items of every model in batches. Tokenizers, models and the OCR engine are not
thread-safe (huggingface/transformers#47085), and that thread is the only one that touches them.
A full queue or a timed-out wait becomes ``ModelUnavailable`` (reason "busy"), which the web tier
answers with 503 and Retry-After. Explanations (``explain_caption``, ``explain_sentiment``) use a second
queue per model (``ModelSlot.call``), one call at a time, on that same thread.
"""

from __future__ import annotations

import functools
import importlib
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
from .types import (
    MODEL_KINDS,
    CaptionExplanation,
    CategoryResult,
    EmbeddingResult,
    GeneratedText,
    ImageTextSimilarity,
    ModelSourceError,
    ModelState,
    ModelStatus,
    ModelUnavailable,
    OcrLine,
    OcrResult,
    SentimentExplanation,
    SentimentResult,
)

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

    def explain_caption(self, prepared: Any, caption: str) -> dict[str, Any]:
        """``CaptionExplanation``'s words, grid, per_word, overall and method; on the worker thread."""
        ...


class SentimentModel(Protocol):
    model_id: str
    revision: str | None
    precision: str

    def classify(self, texts: list[str]) -> list[dict[str, float]]:
        """Probabilities per raw class label, in the checkpoint's id order."""
        ...

    def explain_sentiment(self, text: str) -> dict[str, Any]:
        """``SentimentExplanation``'s fields but ``text`` and the stamp; on the worker thread."""
        ...


class OcrModel(Protocol):
    model_id: str
    revision: str | None
    precision: str

    def prepare(self, image: Image.Image) -> Any:
        """Per-image conversion; thread-safe, runs on the request thread."""
        ...

    def read_prepared(self, batch: Sequence[Any]) -> list[tuple[OcrLine, ...]]:
        """The lines of each image, in reading order; runs on the model's worker thread."""
        ...


class EmbeddingModel(Protocol):
    model_id: str
    revision: str | None
    precision: str

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One unit-length vector per text, in order; tokenises on the worker thread."""
        ...


class ImageTextModel(Protocol):
    model_id: str
    revision: str | None
    precision: str

    def prepare(self, image: Image.Image) -> Any:
        """Per-image preprocessing; thread-safe, runs on the request thread."""
        ...

    def similarity_prepared(self, batch: Sequence[tuple[Any, str]]) -> list[dict[str, Any]]:
        """``ImageTextSimilarity``'s fields but the stamp, per (prepared image, text); on the worker thread."""
        ...


M = TypeVar("M", CaptionModel, SentimentModel, OcrModel, EmbeddingModel, ImageTextModel)
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
        # One-off calls on the loaded model (explanations), one at a time, on the same inference thread.
        self.calls = MicroBatcher(
            f"{kind}-calls",
            lambda calls: [function(self._model, item) for function, item in calls],
            max_batch=1,
            window_seconds=0.0,
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
        self._source_failed = False  # the last failure was ModelSourceError: retrying alone cannot help
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
            # Administrators read why in the banner, on records and in `models check`; the log has it too.
            logger.error("the %s model could not be loaded: %s: %s", self.kind, type(exc).__name__, exc)
            with self._state_lock:
                self._state, self._progress = ModelState.FAILED, None
                self._detail = f"{type(exc).__name__}: {exc}"[:1000]
                self._failed_at = time.monotonic()
                self._source_failed = isinstance(exc, ModelSourceError)
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
                f"The {self.kind} model is not available on this server yet; an administrator has been told.",
                retry_after=None if self._source_failed else int(self._settings.retry_failed_after_seconds),
                detail=status.detail,
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
        return self._submit(self.batcher, item, lambda raw: self._prepare(model, raw)), model

    def call(
        self, function: Callable[[M, Any], Any], item: Any = None, prepare: Callable[[M, Any], Any] | None = None
    ) -> tuple[Any, M]:
        """Run ``function(model, prepare(model, item))`` on the inference thread (the only one that touches
        models), ``prepare`` on this thread; returns (its result, model). One call at a time, not batched.
        Raises ``ModelUnavailable`` exactly as ``infer`` does, for a failing ``prepare`` too."""
        model = self.get()

        def prepared(raw: Any) -> tuple[Callable[[M, Any], Any], Any]:
            return function, raw if prepare is None else prepare(model, raw)

        return self._submit(self.calls, item, prepared), model

    def _submit(self, batcher: MicroBatcher, item: Any, prepare: Callable[[Any], Any] | None) -> Any:
        try:
            return batcher.submit(item, timeout=self._settings.inference_timeout_seconds, prepare=prepare)
        except (QueueFull, InferenceTimeout) as exc:
            logger.warning("%s request shed: %s", self.kind, exc)
            raise ModelUnavailable(
                self.kind,
                ModelState.READY,
                f"Prism is busy: the {self.kind} model has more requests than it can take right now. "
                "Please try again in a few seconds.",
                retry_after=self._busy_retry_after(batcher),
                reason="busy",
            ) from exc
        except Exception as exc:
            logger.exception("%s inference failed", self.kind)
            raise ModelUnavailable(
                self.kind,
                ModelState.READY,
                f"The {self.kind} model failed on this input ({type(exc).__name__}).",
                retry_after=self._busy_retry_after(batcher),
                reason="error",
            ) from exc

    def _busy_retry_after(self, batcher: MicroBatcher | None = None) -> int:
        """Seconds until the queue has likely drained: queued batches x the last batch's duration."""
        batcher = batcher or self.batcher
        batches_ahead = math.ceil((batcher.pending() + 1) / batcher.max_batch)
        return max(1, math.ceil(batches_ahead * batcher.last_batch_seconds))


# Softmax temperature that turns cosine similarities into category scores. Sentence-embedding cosines
# of a text to a matching and to an unrelated description typically differ by 0.1 to 0.5, so at 0.05 a
# gap of 0.1 already gives ~7:1 odds (e^2) and 0.3 gives ~400:1; CLIP's learned temperature is 0.01.
CATEGORY_TEMPERATURE = 0.05
_DESCRIPTION_CACHE_SIZE = 64  # category sets whose description vectors are kept (each a few KB)


class ModelService:
    """The one interface views and the API call; returns frozen dataclasses of plain values."""

    def __init__(self, settings: InferenceSettings):
        self.settings = settings
        loaders = _loaders(settings)
        self.worker = InferenceWorker()  # one thread runs every model's batches (see batching.py)

        def slot(kind: str, source: str, **routing) -> ModelSlot:
            return ModelSlot(kind, source, loaders[kind], settings, worker=self.worker, **routing)

        self.caption_slot: ModelSlot[CaptionModel] = slot(
            "caption",
            settings.caption_model,
            prepare=lambda model, image: model.prepare(image),
            run_batch=lambda model, batch: model.caption_prepared(batch),
            max_batch=settings.caption_max_batch,
        )
        self.sentiment_slot: ModelSlot[SentimentModel] = slot(
            "sentiment",
            settings.sentiment_model,
            prepare=lambda model, text: text,  # tokenising happens in the worker: tokenizers aren't thread-safe
            run_batch=lambda model, batch: model.classify(list(batch)),
            max_batch=settings.sentiment_max_batch,
        )
        self.ocr_slot: ModelSlot[OcrModel] = slot(
            "ocr",
            settings.ocr_model,
            prepare=lambda model, image: model.prepare(image),
            run_batch=lambda model, batch: model.read_prepared(batch),
            max_batch=1,  # one page is already a batch of lines for the recogniser
        )
        self.embedding_slot: ModelSlot[EmbeddingModel] = slot(
            "embedding",
            settings.embedding_model,
            prepare=lambda model, texts: texts,  # tokenised in the worker, as for sentiment
            run_batch=_embed_requests,
            max_batch=settings.embedding_max_batch,
        )
        self._slots: dict[str, ModelSlot] = {
            slot.kind: slot for slot in (self.caption_slot, self.sentiment_slot, self.ocr_slot, self.embedding_slot)
        }
        # Opt-in (PRISM_REPLY_MODEL): a model that writes reply drafts; without it drafts come from templates.
        self.reply_slot: ModelSlot | None = None
        if settings.reply_model:
            self.reply_slot = slot(
                "reply",
                settings.reply_model,
                prepare=lambda model, conversation: conversation,  # tokenised in the worker
                run_batch=lambda model, batch: model.write(list(batch)),
                max_batch=1,  # replies differ in length: one conversation per generate()
            )
            self._slots["reply"] = self.reply_slot
        # Opt-in (PRISM_AGREEMENT_MODEL): a CLIP-style model that compares an image with a text directly;
        # without it agreement compares the image's caption and OCR text with the text (webapp/fusion.py).
        self.agreement_slot: ModelSlot[ImageTextModel] | None = None
        if settings.agreement_model:
            self.agreement_slot = slot(
                "agreement",
                settings.agreement_model,
                prepare=lambda model, pair: (model.prepare(pair[0]), pair[1]),  # tokenised in the worker
                run_batch=lambda model, batch: model.similarity_prepared(list(batch)),
                max_batch=settings.caption_max_batch,  # a batch holds as many images as a caption batch
            )
            self._slots["agreement"] = self.agreement_slot
        self._description_lock = threading.Lock()
        self._description_vectors: dict[tuple, tuple[list[float], ...]] = {}  # see categorize()

    @property
    def slots(self) -> tuple[ModelSlot, ...]:
        return tuple(self._slots.values())

    def statuses(self) -> list[ModelStatus]:
        return [slot.status() for slot in self.slots]

    def close(self) -> None:
        """Stop the inference thread and drop the models (the benchmark runs several services in turn)."""
        self.worker.stop()
        for slot in self.slots:
            slot.unload()

    def start_loading(self, *kinds: str) -> None:
        """Start every load a request will need at once (by kind: "caption", "ocr" ...), so two models
        download side by side rather than one after the other across retries."""
        for kind in kinds:
            self._slots[kind].start_loading()

    @property
    def writes_replies(self) -> bool:
        """Whether a reply-writing model is configured (``PRISM_REPLY_MODEL``)."""
        return self.reply_slot is not None

    @property
    def compares_images_with_text(self) -> bool:
        """Whether a joint image-text model is configured (``PRISM_AGREEMENT_MODEL``)."""
        return self.agreement_slot is not None

    def image_text_similarity(self, image: Image.Image, text: str) -> ImageTextSimilarity:
        """The cosine of the joint model's image embedding of ``image`` and its text embedding of ``text``
        (cut to the model's maximum length); raises ModelUnavailable."""
        if self.agreement_slot is None:
            raise RuntimeError("no PRISM_AGREEMENT_MODEL is configured")
        started = time.perf_counter()
        fields, model = self.agreement_slot.infer((image, text))
        return ImageTextSimilarity(**fields, **_stamp(model, started))

    def write_reply(self, conversation: list[dict[str, str]]) -> GeneratedText:
        """The configured model's answer to a chat (system and user messages); raises ModelUnavailable."""
        if self.reply_slot is None:
            raise RuntimeError("no PRISM_REPLY_MODEL is configured")
        started = time.perf_counter()
        text, model = self.reply_slot.infer(conversation)
        return GeneratedText(
            text=text,
            **_stamp(model, started),
        )

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
        return self._slots[kind].batcher.announce()

    def caption(self, image: Image.Image) -> GeneratedText:
        started = time.perf_counter()
        text, model = self.caption_slot.infer(image)
        return GeneratedText(
            text=str(text).strip(),
            **_stamp(model, started),
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
            **_stamp(model, started),
        )

    def explain_caption(self, image: Image.Image, caption: str) -> CaptionExplanation:
        """Where the caption model looked while writing ``caption`` for ``image`` (the record's caption,
        re-read token by token in one forward pass, not generated again); raises ModelUnavailable."""
        started = time.perf_counter()
        fields, model = self.caption_slot.call(
            lambda loaded, prepared: loaded.explain_caption(prepared, caption),
            image,
            prepare=lambda loaded, raw: loaded.prepare(raw),  # decode and resize on this thread, as for captions
        )
        return CaptionExplanation(caption=caption, **fields, **_stamp(model, started))

    def explain_sentiment(self, text: str) -> SentimentExplanation:
        """Which tokens of ``text`` pushed the sentiment model to its label (integrated gradients);
        raises ModelUnavailable."""
        started = time.perf_counter()
        fields, model = self.sentiment_slot.call(lambda loaded, text: loaded.explain_sentiment(text), text)
        return SentimentExplanation(text=text, **fields, **_stamp(model, started))

    def ocr(self, image: Image.Image) -> OcrResult:
        """The printed text in ``image`` (Chinese and English), line by line in reading order."""
        started = time.perf_counter()
        lines, model = self.ocr_slot.infer(image)
        return OcrResult(
            text="\n".join(line.text for line in lines),
            lines=tuple(lines),
            score=sum(line.score for line in lines) / len(lines) if lines else None,
            **_stamp(model, started),
        )

    def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        """Unit-length vectors for ``texts`` (at least one), computed in one queued request.

        Concurrent requests share forward passes; a long list runs in forwards of at most
        PRISM_EMBEDDING_MAX_BATCH texts, within the inference timeout.
        """
        if not texts:
            raise ValueError("embed() needs at least one text")
        started = time.perf_counter()
        vectors, model = self.embedding_slot.infer(tuple(texts))
        return EmbeddingResult(
            vectors=tuple(tuple(vector) for vector in vectors),
            **_stamp(model, started),
        )

    def categorize(self, text: str, categories: Sequence[tuple[str, str]]) -> CategoryResult:
        """The category of ``text`` among ``categories``, given as (key, description) pairs.

        Scores are a softmax over the cosine similarities of the text to each description, at
        ``CATEGORY_TEMPERATURE``. Description vectors are computed once per model and set of
        descriptions, then reused, so a call usually embeds just the one text.
        """
        keys = [key for key, _description in categories]
        if not keys or len(set(keys)) != len(keys):
            raise ValueError("categorize() needs at least one category and unique keys")
        descriptions = tuple(description for _key, description in categories)
        started = time.perf_counter()
        loaded = self.embedding_slot.get()
        cache_key = (loaded.model_id, loaded.revision, descriptions)
        with self._description_lock:
            described = self._description_vectors.get(cache_key)
        vectors, model = self.embedding_slot.infer((text,) if described is not None else (text, *descriptions))
        if described is None:
            described = tuple(vectors[1:])
            with self._description_lock:
                if len(self._description_vectors) >= _DESCRIPTION_CACHE_SIZE:
                    del self._description_vectors[next(iter(self._description_vectors))]  # the oldest set
                self._description_vectors[cache_key] = described
        similarities = {
            key: sum(a * b for a, b in zip(vectors[0], vector, strict=True))
            for key, vector in zip(keys, described, strict=True)
        }
        scores = _softmax(similarities, CATEGORY_TEMPERATURE)
        label = max(scores, key=scores.__getitem__)
        return CategoryResult(
            label=label,
            score=scores[label],
            scores=scores,
            similarities=similarities,
            **_stamp(model, started),
        )


def _stamp(model: Any, started: float) -> dict[str, Any]:
    """The fields every result carries: which model answered, in what number format, how fast."""
    return {
        "model_id": model.model_id,
        "revision": model.revision,
        "precision": model.precision,
        "latency_ms": (time.perf_counter() - started) * 1000.0,
    }


def _embed_requests(model: EmbeddingModel, requests: Sequence[tuple[str, ...]]) -> list[list[list[float]]]:
    """Embed the texts of every queued request together; each request gets its own vectors back."""
    vectors = model.embed([text for texts in requests for text in texts])
    results, start = [], 0
    for texts in requests:
        results.append(vectors[start : start + len(texts)])
        start += len(texts)
    return results


def _softmax(values: dict[str, float], temperature: float) -> dict[str, float]:
    top = max(values.values())  # shifting by the maximum changes nothing but keeps exp() in range
    weights = {key: math.exp((value - top) / temperature) for key, value in values.items()}
    total = sum(weights.values())
    return {key: weight / total for key, weight in weights.items()}


def _loaders(settings: InferenceSettings) -> dict[str, Loader]:
    """One loader per kind; nothing is imported or loaded until a loader runs."""
    if settings.backend == "fake":
        from . import fake

        delay = settings.fake_latency_ms / 1000.0
        kinds = (*MODEL_KINDS, "reply", "agreement")
        return {kind: functools.partial(fake.load, kind, delay_seconds=delay) for kind in kinds}
    if settings.backend == "transformers":
        # torch (and onnxruntime) are imported by the first load, not here: create_app, init-db and the
        # CLI stay fast. OCR is not a transformers model; "transformers" selects the real backends.
        def real(module: str, function: str, ref: str | None = None) -> Loader:
            def load(progress: ProgressCallback):
                if ref is not None:
                    # Fail in seconds, before torch's import (several seconds itself), when the weights
                    # cannot be had: offline and not cached, or the hub unreachable (hub.py).
                    from . import hub

                    hub.resolve_source(
                        ref,
                        settings.model_dir,
                        settings.offline,
                        progress,
                        require_pinned=settings.require_pinned,
                        download=False,
                    )
                backend = importlib.import_module(f".{module}", __package__)
                return getattr(backend, function)(settings, progress)

            return load

        return {
            "caption": real("transformers_backend", "load_caption_model", settings.caption_model),
            "sentiment": real("transformers_backend", "load_sentiment_model", settings.sentiment_model),
            "ocr": real("ocr_backend", "load_ocr_model"),
            "embedding": real("transformers_backend", "load_embedding_model", settings.embedding_model),
            "reply": real("transformers_backend", "load_reply_model", settings.reply_model),
            "agreement": real("transformers_backend", "load_agreement_model", settings.agreement_model),
        }
    raise ValueError(f"unknown PRISM_MODEL_BACKEND {settings.backend!r} (use 'transformers' or 'fake')")
