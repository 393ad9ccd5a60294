"""`manage.py models pull|check|warm`: fetch weights ahead of time and prove they load.

Run `models pull` on a connected machine, then `models check` wherever Prism runs (with
PRISM_MODEL_OFFLINE=1 it proves nothing is fetched at run time).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup
from PIL import Image

from . import get_model_service, hub
from .service import ModelService
from .settings import InferenceSettings
from .types import ModelState, ModelStatus, ModelUnavailable

models_cli = AppGroup("models", help="Download, load and check the caption and sentiment models.")

_timeout_option = click.option(
    "--timeout", default=600.0, show_default=True, type=float, help="Seconds to wait for each model to load."
)


@models_cli.command("pull")
@click.option("--only", type=click.Choice(["caption", "sentiment"]), help="Pull only this model.")
def pull_command(only: str | None) -> None:
    """Download the configured models into PRISM_MODEL_DIR for offline use."""
    settings = InferenceSettings.from_config(current_app.config)
    refs = {"caption": settings.caption_model, "sentiment": settings.sentiment_model}
    for kind, ref in refs.items():
        if only and kind != only:
            continue
        if Path(ref).is_dir():
            click.echo(f"{kind}: {ref} is a local directory; nothing to pull")
            continue
        try:
            target = hub.pull(ref, settings.model_dir, echo=click.echo)
        except hub.ModelSourceError as exc:
            raise click.ClickException(f"{kind}: {exc}") from exc
        click.echo(f"{kind}: {ref} is in {target}")
    click.echo("Set PRISM_MODEL_OFFLINE=1 so Prism loads these copies and never contacts the hub.")


@models_cli.command("warm")
@_timeout_option
def warm_command(timeout: float) -> None:
    """Load both models now and report their state; exit 1 unless both are ready."""
    statuses = _warm(get_model_service(), timeout)
    _exit_unless_ready(statuses)


@models_cli.command("check")
@_timeout_option
def check_command(timeout: float) -> None:
    """Load both models, run one tiny inference on each, and report; exit 1 unless both are ready."""
    service = get_model_service()
    statuses = _warm(service, timeout)
    states = {status.kind: status.state for status in statuses}
    if states["caption"] is ModelState.READY:
        try:
            result = service.caption(Image.new("RGB", (64, 64), (128, 128, 128)))
            click.echo(f"caption smoke test: {result.text!r} in {result.latency_ms:.0f} ms")
        except ModelUnavailable as exc:
            click.echo(f"caption smoke test failed: {exc}")
    if states["sentiment"] is ModelState.READY:
        try:
            result = service.sentiment("Prism works well.")
            click.echo(
                f"sentiment smoke test: {result.label} ({result.score:.2f}) in {result.latency_ms:.0f} ms;"
                f" raw {_rounded(result.raw_scores)}"
            )
        except ModelUnavailable as exc:
            click.echo(f"sentiment smoke test failed: {exc}")
    _exit_unless_ready(statuses)


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
