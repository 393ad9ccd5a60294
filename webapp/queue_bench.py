"""`manage.py bench --only queue`: what the job queue costs on top of the model service, measured in one run.

It builds a throwaway app on a temporary SQLite database and SQLite job queue, with a real consumer
(``PRISM_WORKER_THREADS`` threads) in this process, and the caption model under test (beam 4, a
fixed number of new tokens, as in the model bench). Two paths caption the same images, driven by
the model bench's client threads:

- direct: decode the validated upload and ``ModelService.caption`` it, what v1 did inside the web
  request;
- queue: what a submission does now: store the upload, insert a pending analysis (and its audit
  row), commit, enqueue; a consumer thread claims the row, reads the image back from storage,
  captions it, stores the prediction and marks the row done. The client wakes on Huey's
  "complete" signal for its task, then reads the row (the row, not the signal, says it is done).

Both share one model service (one loaded model), so the difference is the queue machinery alone.
The issue's targets: p50 at 1 client within direct + 25 ms; throughput at 8 clients >= 95% of direct.
"""

from __future__ import annotations

import io
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LATENCY_BUDGET_MS = 25.0
THROUGHPUT_GOAL = 0.95
TARGET_CLIENTS = 8
ROUNDS = 6  # requests per client at a level: enough that one batch split at start-up does not decide it
_MODEL_KEYS = (
    "PRISM_MODEL_BACKEND",
    "PRISM_MODEL_OFFLINE",
    "PRISM_MODEL_DIR",
    "PRISM_DEVICE",
    "PRISM_PRECISION",
    "PRISM_TORCH_THREADS",
    "PRISM_CAPTION_MAX_BATCH",
    "PRISM_BATCH_WINDOW_MS",
    "PRISM_BATCH_BUSY_WINDOW_MS",
    "PRISM_FAKE_LATENCY_MS",
)


def run(
    config: dict[str, Any],
    caption_model: str,
    *,
    clients: tuple[int, ...] = (1, TARGET_CLIENTS),
    items: int = 24,
    new_tokens: int = 16,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Bench ``caption_model`` (hub id or directory) both ways; ``config`` gives the model settings."""
    from huey.signals import SIGNAL_COMPLETE, SIGNAL_ERROR

    from .analyses import submit_analysis, validate_upload
    from .extensions import db
    from .history_bench import scratch_app
    from .inference import get_model_service
    from .inference.bench import _level, _off_main_thread, sample_images
    from .jobs import RUN_ANALYSIS, create_consumer, enqueue_analyses, get_queue
    from .models import DONE, FAILED, Analysis, Prediction, User

    with tempfile.TemporaryDirectory(prefix="prism-queue-bench-") as tmp:
        app = scratch_app(
            Path(tmp),
            **{key: config[key] for key in _MODEL_KEYS if key in config},
            PRISM_JOBS_IMMEDIATE=False,
            PRISM_WORKER_THREADS=max(clients),
            PRISM_CAPTION_MODEL=caption_model,
            PRISM_CAPTION_NUM_BEAMS=4,
            PRISM_CAPTION_MAX_NEW_TOKENS=new_tokens,
            PRISM_QUEUE_SIZE=1024,
            PRISM_MODEL_LOAD_WAIT=900.0,
            PRISM_INFERENCE_TIMEOUT=900.0,
        )
        with app.app_context():
            user = User(username="bench", role="clinician")
            user.set_password("queue-bench", app.config["PRISM_PASSWORD_HASH_METHOD"])
            db.session.add(user)
            db.session.commit()
            user_id = user.id
            service = get_model_service()
            started = time.perf_counter()
            model = service.caption_slot.get(wait=900.0)
            echo(f"queue: loaded {caption_model} in {time.perf_counter() - started:.1f} s")
            if hasattr(model, "generate_kwargs"):  # the same work per caption on both paths
                model.generate_kwargs.update(min_new_tokens=new_tokens, max_new_tokens=new_tokens)
        images = sample_images(8)
        uploads = []
        for index, image in enumerate(images):
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            with app.app_context():
                uploads.append(validate_upload(buffer.getvalue(), f"bench-{index}.png"))

        def direct(index: int) -> str:
            # What v1 did inside the request: decode the validated upload, then caption it.
            return service.caption(uploads[index % len(uploads)].to_rgb()).text

        local = threading.local()
        finished: dict[int, threading.Event] = {}
        finished_lock = threading.Lock()

        def wake(signal: str, task, exc=None) -> None:
            if task.name == RUN_ANALYSIS:
                with finished_lock:
                    event = finished.get(task.args[0])
                if event is not None:
                    event.set()

        with app.app_context():
            get_queue().huey.signal(SIGNAL_COMPLETE, SIGNAL_ERROR)(wake)

        def queued(index: int) -> str:
            # One app context per client thread, as a web worker thread has per request.
            if not hasattr(local, "context"):
                local.context = app.app_context()
                local.context.push()
            user = db.session.get(User, user_id)
            # A medical image: the one scenario whose analysis is the caption alone, the direct path's work.
            analysis = submit_analysis(user, "medical", None, uploads[index % len(uploads)])
            analysis_id = analysis.id
            event = threading.Event()
            with finished_lock:
                finished[analysis_id] = event
            db.session.commit()
            enqueue_analyses([analysis_id])
            # The row and its caption in one read, as a client polling the API would get them.
            read = (
                db.select(Analysis.status, Analysis.error, Prediction.output)
                .outerjoin(Prediction, (Prediction.analysis_id == Analysis.id) & (Prediction.kind == "caption"))
                .where(Analysis.id == analysis_id)
            )
            while True:
                event.wait(900)
                event.clear()
                status, error, output = db.session.execute(read).one()
                db.session.rollback()
                if status in (DONE, FAILED):
                    break
            if status == FAILED:
                raise RuntimeError(error)
            return output["text"]

        consumer = create_consumer(app, in_process=True)
        consumer.start()
        try:
            echo("queue: warming up both paths")
            _level(direct, max(clients), max(clients))
            _level(queued, max(clients), max(clients))
            levels = []
            for count in clients:
                paths = (("direct", direct), ("queue", queued))
                if count == 1:
                    # A lone client: direct and queued calls alternate on the same image (and swap
                    # order each pair), so drift in the machine's speed hits both paths alike.
                    found = _off_main_thread(lambda paths=paths: _alternating(paths, items))
                else:
                    found = [
                        _level(call, count, max(items, ROUNDS * count), service.caption_slot.batcher)
                        for _name, call in paths
                    ]
                for (name, _call), level in zip(paths, found, strict=True):
                    level.pop("outputs", None)
                    level["path"] = name
                    levels.append(level)
                    echo(
                        f"queue: {name:<6} {count:>2} clients  {level['items_per_second']:6.2f} caps/s  "
                        f"p50 {level['p50_ms']:7.1f} ms  p95 {level['p95_ms']:7.1f} ms  errors {level['errors']}"
                    )
            with app.app_context():
                queued_kinds = sorted(db.session.scalars(db.select(Prediction.kind).distinct()))
            if queued_kinds != ["caption"]:  # a scenario that grew tasks would compare more work with one caption
                raise RuntimeError(f"queued analyses made {queued_kinds}, not a caption alone as the direct path")
        finally:
            consumer.stop(graceful=True)
            with app.app_context():
                service.close()
                db.engine.dispose()
    return {**_summary(caption_model, levels, clients, new_tokens), "queued_kinds": queued_kinds}


def _alternating(paths, pairs: int) -> list[dict[str, Any]]:
    """``pairs`` calls of each path at one client, interleaved; one level record per path."""
    import numpy as np

    latencies: dict[str, list[float]] = {name: [] for name, _call in paths}
    started = time.perf_counter()
    for index in range(pairs):
        for name, call in paths if index % 2 == 0 else paths[::-1]:
            began = time.perf_counter()
            call(index)
            latencies[name].append((time.perf_counter() - began) * 1000.0)
    seconds = time.perf_counter() - started
    return [
        {
            "clients": 1,
            "requests": pairs,
            "completed": pairs,
            "errors": 0,
            "first_error": None,
            "seconds": round(seconds, 3),
            # Each path had the machine half the time: its rate is its own calls over its own time.
            "items_per_second": pairs / (sum(latencies[name]) / 1000.0),
            "ms_per_item": sum(latencies[name]) / pairs,
            "p50_ms": float(np.percentile(latencies[name], 50)),
            "p95_ms": float(np.percentile(latencies[name], 95)),
            "mean_batch": 1.0,
        }
        for name, _call in paths
    ]


def _summary(caption_model: str, levels: list[dict], clients: tuple[int, ...], new_tokens: int) -> dict[str, Any]:
    from .inference.bench import target

    def value(path: str, count: int, key: str) -> float | None:
        found = [level[key] for level in levels if level["path"] == path and level["clients"] == count]
        return found[0] if found else None

    direct_p50, queue_p50 = value("direct", 1, "p50_ms"), value("queue", 1, "p50_ms")
    direct_rate = value("direct", TARGET_CLIENTS, "items_per_second")
    queue_rate = value("queue", TARGET_CLIENTS, "items_per_second")
    overhead = queue_p50 - direct_p50 if queue_p50 is not None and direct_p50 is not None else None
    ratio = queue_rate / direct_rate if queue_rate and direct_rate else None
    return {
        "caption_model": caption_model,
        "num_beams": 4,
        "new_tokens": new_tokens,
        "levels": levels,
        "p50_overhead_ms": overhead,
        "throughput_ratio": ratio,
        "targets": [
            target("queue, 1 client: p50 latency minus direct p50 (ms)", overhead, "<=", LATENCY_BUDGET_MS),
            target(f"queue, {TARGET_CLIENTS} clients: captions/s / direct captions/s", ratio, ">=", THROUGHPUT_GOAL),
        ],
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"Queue bench: {result['caption_model']} · beam {result['num_beams']} · {result['new_tokens']} new tokens · "
        "direct = ModelService.caption; queue = store + row + enqueue + consumer + prediction row, "
        "woken by the task's completion signal",
        f"  {'path':<7} {'clients':>7} {'caps/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'batch':>6} {'errors':>6}",
    ]
    for level in result["levels"]:
        batch = "-" if level["mean_batch"] is None else f"{level['mean_batch']:.1f}"
        lines.append(
            f"  {level['path']:<7} {level['clients']:>7} {level['items_per_second']:>8.2f} {level['p50_ms']:>8.1f} "
            f"{level['p95_ms']:>8.1f} {batch:>6} {level['errors']:>6}"
        )
    overhead, ratio = result["p50_overhead_ms"], result["throughput_ratio"]
    lines.append(
        f"  queue cost: p50 +{overhead:.1f} ms at 1 client; throughput {ratio:.3f} x direct at {TARGET_CLIENTS} clients"
        if overhead is not None and ratio is not None
        else "  queue cost: not measured (a level is missing)"
    )
    return "\n".join(lines)
