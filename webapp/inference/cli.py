"""`manage.py models pull|check|warm`: fetch weights ahead of time and prove they load.

Run `models pull` on a connected machine, then `models check` wherever Prism runs (with
PRISM_MODEL_OFFLINE=1 it proves nothing is fetched at run time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup
from PIL import Image, ImageDraw, ImageFont

from . import get_model_service, hub
from .service import ModelService
from .settings import InferenceSettings
from .types import MODEL_KINDS, ModelState, ModelStatus, ModelUnavailable

models_cli = AppGroup(
    "models", help="Download, load and check the caption, sentiment, OCR and embedding models (and the optional ones)."
)

OPTIONAL_MODELS = {"reply": "PRISM_REPLY_MODEL", "agreement": "PRISM_AGREEMENT_MODEL"}  # kind: its setting
_timeout_option = click.option(
    "--timeout", default=600.0, show_default=True, type=float, help="Seconds to wait for each model to load."
)


@models_cli.command("pull")
@click.option("--only", type=click.Choice([*MODEL_KINDS, *OPTIONAL_MODELS]), help="Pull only this model.")
def pull_command(only: str | None) -> None:
    """Download the configured models into PRISM_MODEL_DIR for offline use."""
    settings = InferenceSettings.from_config(current_app.config)
    refs = {
        "caption": settings.caption_model,
        "sentiment": settings.sentiment_model,
        "ocr": None,  # PP-OCRv4 ships inside the rapidocr-onnxruntime wheel
        "embedding": settings.embedding_model,
    }
    # Optional models: None when their setting is not set.
    refs["reply"], refs["agreement"] = settings.reply_model, settings.agreement_model
    for kind, ref in refs.items():
        if only and kind != only:
            continue
        if ref is None:
            if kind in OPTIONAL_MODELS and only == kind:
                click.echo(f"{kind}: {OPTIONAL_MODELS[kind]} is not set; nothing to pull")
            elif kind not in OPTIONAL_MODELS:
                click.echo(f"{kind}: its weights ship inside the installed package; nothing to pull")
            continue
        if Path(ref).is_dir():
            click.echo(f"{kind}: {ref} is a local directory; nothing to pull")
            continue
        try:
            target = hub.pull(ref, settings.model_dir, echo=click.echo)
        except hub.ModelSourceError as exc:
            raise click.ClickException(f"{kind}: {exc}") from exc
        click.echo(f"{kind}: {ref} is in {target}")
        repo, pinned = hub.split_revision(ref)
        if not pinned:
            click.echo(f"{kind}: to pin it, set its setting to {repo}@{hub.revision_of(target)}")
    click.echo("Set PRISM_MODEL_OFFLINE=1 so Prism loads these copies and never contacts the hub.")


@models_cli.command("warm")
@_timeout_option
def warm_command(timeout: float) -> None:
    """Load every model now and report its state; exit 1 unless all are ready."""
    statuses = _warm(get_model_service(), timeout)
    _exit_unless_ready(statuses)


@models_cli.command("check")
@_timeout_option
def check_command(timeout: float) -> None:
    """Load every model, run one tiny inference on each, and report; exit 1 unless all are ready."""
    service = get_model_service()
    statuses = _warm(service, timeout)
    for status in statuses:
        if status.state is ModelState.READY:
            try:
                click.echo(f"{status.kind} smoke test: {_SMOKE_TESTS[status.kind](service)}")
            except ModelUnavailable as exc:
                click.echo(f"{status.kind} smoke test failed: {exc}")
    _exit_unless_ready(statuses)


def _smoke_caption(service: ModelService) -> str:
    result = service.caption(Image.new("RGB", (64, 64), (128, 128, 128)))
    return f"{result.text!r} in {result.latency_ms:.0f} ms"


def _smoke_sentiment(service: ModelService) -> str:
    result = service.sentiment("Prism works well.")
    return f"{result.label} ({result.score:.2f}) in {result.latency_ms:.0f} ms; raw {_rounded(result.raw_scores)}"


def _smoke_ocr(service: ModelService) -> str:
    image = Image.new("RGB", (240, 64), "white")
    ImageDraw.Draw(image).text((12, 14), "Prism 2024", fill="black", font=ImageFont.load_default(size=32))
    result = service.ocr(image)
    return f"read {result.text!r} from 'Prism 2024' in {result.latency_ms:.0f} ms"


def _smoke_embedding(service: ModelService) -> str:
    result = service.embed(["Prism works well."])
    return f"{result.dimensions} dimensions in {result.latency_ms:.0f} ms"


def _smoke_reply(service: ModelService) -> str:
    result = service.write_reply([{"role": "user", "content": "Say hello."}])
    return f"{result.text[:60]!r} in {result.latency_ms:.0f} ms"


def _smoke_agreement(service: ModelService) -> str:
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    matching = service.image_text_similarity(image, "a red square")
    unrelated = service.image_text_similarity(image, "a page of handwritten notes")
    return (
        f"'a red square' {matching.similarity:.3f}, 'a page of handwritten notes' {unrelated.similarity:.3f} "
        f"for a red image in {matching.latency_ms:.0f} ms"
    )


_SMOKE_TESTS: dict[str, Callable[[ModelService], str]] = {
    "caption": _smoke_caption,
    "sentiment": _smoke_sentiment,
    "ocr": _smoke_ocr,
    "embedding": _smoke_embedding,
    "reply": _smoke_reply,
    "agreement": _smoke_agreement,
}


def _warm(service: ModelService, timeout: float) -> list[ModelStatus]:
    """Run ``service.warm``, echoing download and load progress (minutes on first use)."""
    statuses: list[ModelStatus] = []
    worker = threading.Thread(target=lambda: statuses.extend(service.warm(wait=timeout)), daemon=True)
    worker.start()
    shown: dict[str, str] = {}
    while worker.is_alive():
        for status in service.statuses():
            line = _progress_line(status)
            busy = status.state in (ModelState.DOWNLOADING, ModelState.LOADING)
            if busy and shown.get(status.kind) != line:
                click.echo(line)
                shown[status.kind] = line
        time.sleep(1.0)
    worker.join()
    for status in statuses:
        click.echo(
            f"{status.kind}: {status.state.value}\n"
            f"  model_id: {status.model_id or '-'}\n"
            f"  revision: {status.revision or '-'}\n"
            f"  source:   {status.source}\n"
            f"  detail:   {status.detail or '-'}"
        )
    return statuses


def _progress_line(status: ModelStatus) -> str:
    percent = f" {status.progress:.0%}" if status.progress is not None else ""
    return f"{status.kind}: {status.state.value}{percent} {status.detail}".rstrip()


def _rounded(scores: dict[str, float]) -> dict[str, float]:
    return {label: round(value, 3) for label, value in scores.items()}


def _exit_unless_ready(statuses: list[ModelStatus]) -> None:
    if any(status.state is not ModelState.READY for status in statuses):
        raise click.exceptions.Exit(1)
