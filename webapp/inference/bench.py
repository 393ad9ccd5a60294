"""`manage.py bench`: Prism's model service against the naive way, measured in the same run.

The naive way (the baseline) is what one plain Flask worker does per request: preprocess on the
request thread, then one batch-1 float32 ``generate(num_beams=4)`` (or one classifier forward) under
a lock. Prism is ``ModelService`` with the settings under test, driven by 1, 4, 8 and 16 client
threads that each send requests back to back. Both run the same checkpoint on the same inputs, so
the run also reports how often each precision and decoding agrees with the float32 outputs.

Nothing is hard-coded: the GEMM peak the compute floor divides by is measured in the run, the
FLOPs per item are counted with ``torch.utils.flop_counter`` on the model itself, and every target
of the issue is printed as measured ratio against its goal.

``--arch`` builds architecture-equivalent checkpoints with random weights (``build_arch``), for
machines without the real weights. Random weights give real speed, but agreement rates from them
say nothing about caption or label quality: near-uniform logits flip at the slightest change.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import platform
import random
import resource
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from PIL import Image, ImageDraw
from torch.utils.flop_counter import FlopCounterMode
from transformers.utils import logging as hf_logging

from . import labels, transformers_backend
from .service import ModelService
from .settings import InferenceSettings

ARCHES = {"vit-gpt2": "caption", "blip-base": "caption", "sentiment-distilbert": "sentiment"}
NEW_TOKENS = 16  # every caption gets exactly this many new tokens, so each run does the same work
CAPTION_TARGET_CLIENTS = 8
SENTIMENT_TARGET_CLIENTS = 16
DEFAULT_ITEMS = {"caption": 12, "sentiment": 192}
_ROUNDS = 3  # every client sends at least this many requests per level
_SLOW_WAIT = 900.0  # seconds the bench waits for a load or a queued request; it measures, it never sheds


@dataclass(frozen=True)
class BenchOptions:
    clients: tuple[int, ...] = (1, 4, 8, 16)
    items: int | None = None  # requests per client level; None: DEFAULT_ITEMS per kind
    gemm_size: int = 2048
    seed: int = 0
    peer: str | None = None  # "onnxruntime": also time ort_peer on the same checkpoints and inputs (issue #12)


@dataclass(frozen=True)
class _Mode:
    name: str
    precision: str
    num_beams: int = 1  # captions only


# The default (PRISM_PRECISION=auto on a CPU with native bf16) is int8 for ViT-GPT2 captions: a bf16
# encoder and int8 decoder weights (caption_decoding.py); bf16 beam4 shows what int8 adds.
_CAPTION_MODES = (
    _Mode("fp32 beam4", "fp32", 4),
    _Mode("bf16 beam4", "bf16", 4),
    _Mode("int8 beam4", "int8", 4),
    _Mode("int8 greedy", "int8", 1),
)
_SENTIMENT_MODES = (_Mode("fp32", "fp32"), _Mode("bf16", "bf16"), _Mode("int8", "int8"))


def _no_progress(state, fraction, detail) -> None:
    """Loaders report progress; the bench prints its own."""


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No weight-loading bars or generate() warnings between the bench's own lines; restored after."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


# --- The run ------------------------------------------------------------------------------------


def run_isolated(
    settings: InferenceSettings,
    *,
    caption_model: str | None,
    sentiment_model: str | None,
    options: BenchOptions = BenchOptions(),  # noqa: B008 (frozen)
    random_weights: bool = False,
) -> dict[str, Any]:
    """``run`` for each kind in a fresh process (spawned, so no torch state is inherited), merged.

    A kind benched after another in the same process inherits its heap and thread pools: measured here,
    Prism's bf16 sentiment at 16 clients took 6.4 ms per text after the caption bench and 5.0 ms alone.
    The children print their progress to this process's stdout.
    """
    context = multiprocessing.get_context("spawn")
    parts = []
    for kind, model in (("caption", caption_model), ("sentiment", sentiment_model)):
        if not model:
            continue
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            models = {"caption_model": None, "sentiment_model": None, f"{kind}_model": model}
            parts.append(pool.submit(run, settings, **models, options=options, random_weights=random_weights).result())
    return merge_runs(parts)


def merge_runs(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result from ``run`` results of different kinds: each kind's section, the first start and
    load average, the last environment, each GEMM peak first measured, the largest RSS; targets anew."""
    merged: dict[str, Any] = dict(parts[0])
    for part in parts[1:]:
        merged.update({kind: part[kind] for kind in ("caption", "sentiment") if kind in part})
        merged["load_average_after"] = part["load_average_after"]
        merged["environment"] = part["environment"]
        merged["gemm_peak_gflops"] = {**part["gemm_peak_gflops"], **merged["gemm_peak_gflops"]}
        merged["peak_rss_mb"] = max(merged["peak_rss_mb"], part["peak_rss_mb"])
    merged["targets"] = targets(merged)
    return merged


def run(
    settings: InferenceSettings,
    *,
    caption_model: str | None,
    sentiment_model: str | None,
    options: BenchOptions = BenchOptions(),  # noqa: B008 (frozen)
    random_weights: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Bench the given caption and/or sentiment model (hub ids or directories); returns the results."""
    base = replace(settings, load_wait_seconds=_SLOW_WAIT, inference_timeout_seconds=_SLOW_WAIT)
    result: dict[str, Any] = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_before": os.getloadavg()[0],  # a busy machine explains a slow run
        "random_weights": random_weights,
    }
    peaks: dict[str, float] = {}
    with _quiet_transformers():
        if caption_model:
            result["caption"] = _bench_captions(replace(base, caption_model=caption_model), options, peaks, echo)
        if sentiment_model:
            result["sentiment"] = _bench_sentiment(replace(base, sentiment_model=sentiment_model), options, peaks, echo)
    result["load_average_after"] = os.getloadavg()[0]
    result["environment"] = _environment(base)  # after the loads: they apply PRISM_TORCH_THREADS
    result["gemm_peak_gflops"] = {name: round(value / 1e9, 1) for name, value in peaks.items()}
    result["peak_rss_mb"] = _peak_rss_mb()
    result["targets"] = targets(result)
    return result


def _bench_captions(settings: InferenceSettings, options: BenchOptions, peaks: dict, echo) -> dict[str, Any]:
    items = options.items or DEFAULT_ITEMS["caption"]
    images = sample_images(min(8, items), options.seed)
    facts, runs = _caption_baseline(settings, images, options, items, peaks, echo)
    gc.collect()  # the baseline's model is unreferenced now; free it before Prism's copies load

    for mode in _CAPTION_MODES:
        echo(f"captions: prism {mode.name}")
        service = ModelService(
            replace(
                settings, precision=mode.precision, caption_num_beams=mode.num_beams, caption_max_new_tokens=NEW_TOKENS
            )
        )
        slot = service.caption_slot
        started = time.perf_counter()
        model = slot.get(wait=_SLOW_WAIT)
        load_seconds = time.perf_counter() - started
        model.generate_kwargs.update(min_new_tokens=NEW_TOKENS, max_new_tokens=NEW_TOKENS)

        def caption(index: int, service=service) -> str:
            return service.caption(images[index % len(images)]).text

        _warm_up(caption, min(max(options.clients), settings.caption_max_batch))
        measured = [_level(caption, clients, items, slot.batcher) for clients in options.clients]
        entry = _run_entry(mode.name, mode.precision, mode.num_beams, load_seconds, measured, len(images))
        entry["forward"] = model.decoder_name  # "prism" (caption_decoding.py) or "generate"
        runs.append(entry)
        service.close()  # its inference thread and model must not linger into the next mode's timing
        gc.collect()

    by_name = {entry["name"]: entry for entry in runs}
    for entry in runs:
        reference = by_name["baseline beam4" if entry["num_beams"] == 4 else "baseline greedy"]
        if entry is not reference:
            entry["agreement_with_fp32"] = _agreement(entry["outputs"], reference["outputs"], reference["name"])
    greedy_vs_beam4 = {
        "fp32, batch 1": _agreement(by_name["baseline greedy"]["outputs"], by_name["baseline beam4"]["outputs"]),
        "int8, Prism": _agreement(by_name["int8 greedy"]["outputs"], by_name["int8 beam4"]["outputs"]),
    }
    peer = _run_peer("caption", settings, images, options, items, runs, echo)
    flops = facts["flops"]
    return {
        "model": facts["model"],
        "new_tokens": NEW_TOKENS,
        "images": [f"{image.width}x{image.height}" for image in images],
        "items_per_level": items,
        "prepare_ms_per_image": facts["prepare_ms"],
        "flops_per_item": flops,
        "floor_ms": _floors(flops, peaks, ("greedy", "beam4")),
        "runs": _finish_runs(runs, flops, peaks, lambda entry: "beam4" if entry["num_beams"] == 4 else "greedy"),
        "greedy_vs_beam4": greedy_vs_beam4,
        "peer": peer,
    }


def _caption_baseline(
    settings: InferenceSettings, images: list[Image.Image], options: BenchOptions, items: int, peaks: dict, echo
) -> tuple[dict[str, Any], list[dict]]:
    """Load the float32 model, measure the GEMM peak, count FLOPs and time the naive requests.

    Returns (facts, runs); the model is unreferenced once this returns, before Prism's copies load.
    """
    echo(f"captions: loading the float32 baseline from {settings.caption_model}")
    started = time.perf_counter()
    naive = _off_main_thread(
        lambda: transformers_backend.load_caption_model(replace(settings, precision="fp32"), _no_progress)
    )
    load_seconds = time.perf_counter() - started
    _off_main_thread(lambda: _measure_peaks(peaks, naive.device, options.gemm_size, echo))
    lock = threading.Lock()

    def naive_caption(image: Image.Image, num_beams: int) -> str:
        # The naive request: processor on the request thread, then one batch-1 generate under a lock.
        pixel_values = naive.image_processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"]
        with lock, torch.inference_mode():
            token_ids = naive.model.generate(
                pixel_values=pixel_values.to(naive.device),
                num_beams=num_beams,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
            )
            return naive.tokenizer.batch_decode(token_ids.cpu(), skip_special_tokens=True)[0].strip()

    echo("captions: counting FLOPs per caption")
    pixel_values = torch.from_numpy(naive.prepare(images[0]))[None].to(naive.device)
    facts = _off_main_thread(
        lambda: {
            "model": {"source": settings.caption_model, "model_id": naive.model_id, "revision": naive.revision},
            "flops": {
                "encoder": _count_flops(lambda: _vision_encoder(naive.model)(pixel_values=pixel_values)),
                "greedy": _count_flops(lambda: naive_caption(images[0], 1)),
                "beam4": _count_flops(lambda: naive_caption(images[0], 4)),
            },
            "prepare_ms": round(_mean_ms(lambda: [naive.prepare(image) for image in images]) / len(images), 2),
        }
    )
    _off_main_thread(lambda: naive_caption(images[0], 4))  # warm-up
    runs = []
    beam4_levels = sorted({1, CAPTION_TARGET_CLIENTS} & set(options.clients) or {1})
    for name, num_beams, levels in (("baseline beam4", 4, beam4_levels), ("baseline greedy", 1, [1])):
        echo(f"captions: {name}")
        measured = [
            _level(lambda index, beams=num_beams: naive_caption(images[index % len(images)], beams), clients, items)
            for clients in levels
        ]
        runs.append(_run_entry(name, "fp32", num_beams, load_seconds, measured, len(images), baseline=True))
        runs[-1]["forward"] = "generate"
    return facts, runs


def _bench_sentiment(settings: InferenceSettings, options: BenchOptions, peaks: dict, echo) -> dict[str, Any]:
    items = options.items or DEFAULT_ITEMS["sentiment"]
    texts = sample_texts(64, options.seed)
    facts, runs = _sentiment_baseline(settings, texts, options, items, peaks, echo)
    gc.collect()  # the baseline's model is unreferenced now; free it before Prism's copies load

    modes = [mode for mode in _SENTIMENT_MODES if mode.precision != "int8" or _device(settings).type == "cpu"]
    for mode in modes:
        echo(f"sentiment: prism {mode.name}")
        service = ModelService(replace(settings, precision=mode.precision))
        slot = service.sentiment_slot
        started = time.perf_counter()
        model = slot.get(wait=_SLOW_WAIT)
        load_seconds = time.perf_counter() - started

        def classify(index: int, service=service) -> tuple[str, dict[str, float]]:
            result = service.sentiment(texts[index % len(texts)])
            return result.label, result.raw_scores

        _warm_up(classify, min(max(options.clients), settings.sentiment_max_batch))
        measured = [_level(classify, clients, items, slot.batcher) for clients in options.clients]
        entry = _run_entry(mode.name, mode.precision, 1, load_seconds, measured, len(texts))
        entry["forward"] = "prism" if model.fast_classifier is not None else "transformers"
        entry["agreement_with_fp32"] = _label_agreement(entry["outputs"], runs[0]["outputs"])
        runs.append(entry)
        service.close()
        gc.collect()
    peer = _run_peer("sentiment", settings, texts, options, items, runs, echo)
    return {
        "model": facts["model"],
        "texts": len(texts),
        "tokens_per_text": facts["tokens"],
        "items_per_level": items,
        "flops_per_item": facts["flops"],
        "floor_ms": _floors(facts["flops"], peaks, ("text",)),
        "runs": _finish_runs(runs, facts["flops"], peaks, lambda entry: "text"),
        "peer": peer,
    }


def _sentiment_baseline(
    settings: InferenceSettings, texts: list[str], options: BenchOptions, items: int, peaks: dict, echo
) -> tuple[dict[str, Any], list[dict]]:
    """As ``_caption_baseline``, for the classifier: one tokenise + forward per request."""
    echo(f"sentiment: loading the float32 baseline from {settings.sentiment_model}")
    started = time.perf_counter()
    naive = _off_main_thread(
        lambda: transformers_backend.load_sentiment_model(replace(settings, precision="fp32"), _no_progress)
    )
    load_seconds = time.perf_counter() - started
    _off_main_thread(lambda: _measure_peaks(peaks, naive.device, options.gemm_size, echo))
    lock = threading.Lock()

    def naive_sentiment(index: int) -> tuple[str, dict[str, float]]:
        # The naive request: tokenise and one batch-1 forward, serialised (tokenizers aren't thread-safe).
        with lock:
            encoded = naive.tokenizer(
                texts[index % len(texts)], truncation=True, max_length=naive.max_length, return_tensors="pt"
            ).to(naive.device)
            with torch.inference_mode():
                logits = naive.model(**encoded).logits
        raw = dict(zip(naive.label_names, logits.float().softmax(dim=-1)[0].tolist(), strict=True))
        return labels.normalise(raw, settings.neutral_range)[0], raw

    lengths = [len(ids) for ids in naive.tokenizer(texts, truncation=True, max_length=naive.max_length)["input_ids"]]
    mean_length = round(sum(lengths) / len(lengths))
    echo(f"sentiment: counting FLOPs per text at the mix's mean length ({mean_length} tokens)")
    input_ids = torch.full((1, mean_length), naive.tokenizer.unk_token_id or 0, device=naive.device)
    facts = {
        "model": {"source": settings.sentiment_model, "model_id": naive.model_id, "revision": naive.revision},
        "tokens": {"mean": mean_length, "min": min(lengths), "max": max(lengths)},
        "flops": {
            "text": _off_main_thread(
                lambda: _count_flops(
                    lambda: naive.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
                )
            )
        },
    }
    _off_main_thread(lambda: naive_sentiment(0))  # warm-up
    echo("sentiment: baseline")
    levels = sorted({1, SENTIMENT_TARGET_CLIENTS} & set(options.clients) or {1})
    measured = [_level(naive_sentiment, clients, items) for clients in levels]
    return facts, [_run_entry("baseline", "fp32", 1, load_seconds, measured, len(texts), baseline=True)]


# --- The peer (--peer onnxruntime) ---------------------------------------------------------------


def _run_peer(
    kind: str, settings: InferenceSettings, inputs: list, options: BenchOptions, items: int, runs: list[dict], echo
) -> dict[str, Any] | None:
    """``--peer``: the peer on the same checkpoint and inputs, fed as the target level's clients feed Prism
    (at least ``_ROUNDS`` requests per client, batches of that many), checked against the baseline's outputs."""
    if not options.peer:
        return None
    from . import ort_peer  # onnx and onnxruntime load only for --peer

    clients = CAPTION_TARGET_CLIENTS if kind == "caption" else SENTIMENT_TARGET_CLIENTS
    return _off_main_thread(
        lambda: ort_peer.for_bench(
            options.peer,
            kind,
            settings,
            inputs,
            runs,
            requests=max(items, _ROUNDS * clients),
            batch_size=clients,
            threads=torch.get_num_threads(),
            new_tokens=NEW_TOKENS,
            echo=echo,
        )
    )


# --- Measuring ----------------------------------------------------------------------------------


def _level(call: Callable[[int], Any], clients: int, requests: int, batcher=None) -> dict[str, Any]:
    """``clients`` threads send ``requests`` calls back to back (call(i) for i in order); time each one.

    Every client sends at least ``_ROUNDS`` requests, so the batcher sees a steady stream, not one burst.
    """
    requests = max(requests, _ROUNDS * clients)
    lock = threading.Lock()
    pending = iter(range(requests))
    latencies: list[float] = []
    outputs: dict[int, Any] = {}
    errors: list[str] = []
    start: list[float] = []
    barrier = threading.Barrier(clients, action=lambda: start.append(time.perf_counter()))
    batches_before = (batcher.batches_run, batcher.items_run) if batcher is not None else None

    def client() -> None:
        barrier.wait()
        while True:
            with lock:
                index = next(pending, None)
            if index is None:
                return
            began = time.perf_counter()
            try:
                output = call(index)
            except Exception as exc:  # noqa: BLE001 - a refused request is a result to report, not a crash
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            elapsed = (time.perf_counter() - began) * 1000.0
            with lock:
                latencies.append(elapsed)
                outputs[index] = output

    threads = [threading.Thread(target=client, name=f"bench-client-{n}") for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start[0]
    level: dict[str, Any] = {
        "clients": clients,
        "requests": requests,
        "completed": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(seconds, 3),
        "items_per_second": len(latencies) / seconds if latencies else 0.0,
        "ms_per_item": seconds * 1000.0 / len(latencies) if latencies else None,
        "p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
        "p95_ms": float(np.percentile(latencies, 95)) if latencies else None,
        "mean_batch": None,
        "outputs": outputs,
    }
    if batches_before is not None:
        batches = batcher.batches_run - batches_before[0]
        level["mean_batch"] = (batcher.items_run - batches_before[1]) / batches if batches else None
    return level


def _warm_up(call: Callable[[int], Any], concurrent: int) -> None:
    """One full batch and one lone request, untimed: first calls pay for allocations and kernel choice."""
    _level(call, max(concurrent, 1), max(concurrent, 1))
    _off_main_thread(lambda: call(0))


def _off_main_thread(call: Callable[[], Any]) -> Any:
    """Run ``call`` in a short-lived thread and return its result (or raise its exception).

    Measured here: once a long-lived thread (such as the main thread) has run a parallel torch op,
    torch work on *other* threads is about 20-25% slower for the rest of the process (OpenMP thread
    teams), while a thread that has exited leaves nothing behind. In the app no long-lived thread runs
    torch besides the model workers, so the bench keeps its own torch work off the main thread too.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # re-raised on the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="bench-setup")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _run_entry(
    name: str,
    precision: str,
    num_beams: int,
    load_seconds: float,
    levels: list[dict],
    inputs: int,
    *,
    baseline: bool = False,
) -> dict[str, Any]:
    """One run's record; ``outputs`` maps each input (request i used input i mod ``inputs``) to its
    first output, for the agreement rates."""
    outputs: dict[int, Any] = {}
    for level in levels:
        for index, output in level.pop("outputs").items():
            outputs.setdefault(index % inputs, output)
    return {
        "name": name,
        "baseline": baseline,
        "precision": precision,
        "num_beams": num_beams,
        "load_seconds": round(load_seconds, 2),
        "rss_mb": _rss_mb(),
        "levels": levels,
        "outputs": outputs,
    }


def _finish_runs(runs: list[dict], flops: dict, peaks: dict, flops_key: Callable[[dict], str]) -> list[dict]:
    """Add each level's ratio to the baseline and to the bf16 compute floor; drop the raw outputs."""
    # The baseline: beam 4 for captions (also for greedy runs), the only one for sentiment.
    reference = max((entry for entry in runs if entry["baseline"]), key=lambda entry: entry["num_beams"])
    for entry in runs:
        floor_ms = _floor_ms(flops[flops_key(entry)], peaks.get("bf16"))
        for level in entry["levels"]:
            base = _baseline_throughput(reference, level["clients"])
            level["vs_baseline"] = level["items_per_second"] / base if base else None
            level["vs_bf16_floor"] = level["ms_per_item"] / floor_ms if floor_ms and level["ms_per_item"] else None
        entry.pop("outputs")
    return runs


def _baseline_throughput(baseline: dict, clients: int) -> float | None:
    """The baseline's items/s at ``clients``; where not measured, the mean of its levels (it is
    serialised, so its throughput does not depend on the number of clients)."""
    levels = baseline["levels"]
    same = [level["items_per_second"] for level in levels if level["clients"] == clients]
    values = same or [level["items_per_second"] for level in levels]
    return sum(values) / len(values) if values else None


def _agreement(outputs: dict[int, str], reference: dict[int, str], reference_name: str | None = None) -> dict:
    """Exact-match rate of captions on the same images."""
    shared = sorted(set(outputs) & set(reference))
    matches = sum(outputs[index] == reference[index] for index in shared)
    result = {"matches": matches, "compared": len(shared), "rate": matches / len(shared) if shared else None}
    if reference_name:
        result["reference"] = reference_name
    return result


def _label_agreement(outputs: dict, reference: dict) -> dict[str, Any]:
    """Label agreement and the largest probability difference against the float32 baseline."""
    shared = sorted(set(outputs) & set(reference))
    matches = sum(outputs[index][0] == reference[index][0] for index in shared)
    worst = max(
        (abs(outputs[i][1][name] - reference[i][1][name]) for i in shared for name in reference[i][1]), default=0.0
    )
    return {
        "reference": "baseline",
        "matches": matches,
        "compared": len(shared),
        "rate": matches / len(shared) if shared else None,
        "max_probability_difference": worst,
    }


def _count_flops(call: Callable[[], Any]) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        call()
    return int(counter.get_total_flops())


def _vision_encoder(model):
    """The image encoder of a VisionEncoderDecoder (``encoder``) or BLIP (``vision_model``) model."""
    return getattr(model, "vision_model", None) or model.encoder


def _measure_peaks(peaks: dict[str, float], device: torch.device, size: int, echo) -> None:
    """Best-of-three GEMM throughput in fp32 and bf16 on ``device``, measured once per run."""
    if peaks:
        return
    echo(f"measuring the GEMM peak ({size}x{size}, {torch.get_num_threads()} threads)")
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        out = torch.empty(size, size, device=device, dtype=dtype)
        repeats = 5
        torch.mm(a, b, out=out)  # warm-up
        best = float("inf")
        for _ in range(3):
            _sync(device)
            started = time.perf_counter()
            for _ in range(repeats):
                torch.mm(a, b, out=out)
            _sync(device)
            best = min(best, time.perf_counter() - started)
        peaks[name] = 2.0 * size**3 * repeats / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _floor_ms(flops: int, peak: float | None) -> float | None:
    return flops / peak * 1000.0 if peak else None


def _floors(flops: dict, peaks: dict, keys: Sequence[str]) -> dict[str, dict[str, float | None]]:
    return {precision: {key: _floor_ms(flops[key], peak) for key in keys} for precision, peak in peaks.items()}


def _mean_ms(call: Callable[[], Any], repeats: int = 3) -> float:
    call()
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - started) * 1000.0 / repeats


def _device(settings: InferenceSettings) -> torch.device:
    return transformers_backend.resolve_placement(settings).device


def _rss_mb() -> float | None:
    """Current resident memory (Linux), to see what each loaded model adds."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _environment(settings: InferenceSettings) -> dict[str, Any]:
    placement = transformers_backend.resolve_placement(settings)
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": transformers_backend.cpu_has_native_bf16(),
        "device": str(placement.device),
        "gpu": torch.cuda.get_device_name(0) if placement.device.type == "cuda" else None,
        "precision_auto": transformers_backend.resolve_placement(replace(settings, precision="auto")).precision,
        "batch_window_ms": settings.batch_window_ms,
        "caption_max_batch": settings.caption_max_batch,
        "sentiment_max_batch": settings.sentiment_max_batch,
        "queue_size": settings.queue_size,
        # The allocator changes CPU inference speed a lot: glibc serves big tensors with fresh mmap()s by
        # default, and every page of each one faults on first touch (beam search copies its caches per step).
        "allocator_env": {name: value for name, value in os.environ.items() if name.startswith("MALLOC_")}
        | ({"LD_PRELOAD": os.environ["LD_PRELOAD"]} if "LD_PRELOAD" in os.environ else {}),
        "git_commit": _git_commit(),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    """HEAD, with "+dirty" when the working tree has changes; None outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(  # noqa: S603 - a fixed command, no user input
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH, like a developer runs it
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603
            ["git", "status", "--porcelain"],  # noqa: S607
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


# --- Targets and the report ---------------------------------------------------------------------


# The throughput targets: (kind, Prism run, clients, level key, label, comparison, goal).
_THROUGHPUT_TARGETS = (
    ("caption", "int8 beam4", CAPTION_TARGET_CLIENTS, "vs_baseline", "x baseline captions/s", ">=", 5.0),
    ("caption", "int8 beam4", CAPTION_TARGET_CLIENTS, "vs_bf16_floor", "x bf16 compute floor", "<=", 2.0),
    ("caption", "int8 greedy", CAPTION_TARGET_CLIENTS, "vs_baseline", "x baseline (beam4) captions/s", ">=", 10.0),
    ("sentiment", "bf16", SENTIMENT_TARGET_CLIENTS, "vs_baseline", "x baseline texts/s", ">=", 3.0),
    ("sentiment", "bf16", SENTIMENT_TARGET_CLIENTS, "vs_bf16_floor", "x bf16 compute floor", "<=", 1.5),
)
# Single-client latency targets: (kind, its baseline run, Prism runs).
_LATENCY_TARGETS = (
    ("caption", "baseline beam4", ("fp32 beam4", "int8 beam4")),
    ("sentiment", "baseline", ("fp32", "bf16")),
)
_KIND_NAMES = {"caption": "captions", "sentiment": "sentiment"}
# Prism against the ONNX Runtime peer (--peer): (kind, Prism run, clients, peer run); Prism's items/s at
# that level over the peer's must be >= 1. The Prism run names follow the default modes above.
_PEER_TARGETS = (
    ("caption", "int8 beam4", CAPTION_TARGET_CLIENTS, "int8 beam4"),
    ("caption", "int8 greedy", CAPTION_TARGET_CLIENTS, "int8 greedy"),
    ("sentiment", "bf16", SENTIMENT_TARGET_CLIENTS, "int8"),
)


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue as {name, measured, goal, passed}; passed is None when not measured."""
    found: list[dict[str, Any]] = []
    for kind_key, run_name, clients, key, label, comparison, goal in _THROUGHPUT_TARGETS:
        if kind := result.get(kind_key):
            name = f"{_KIND_NAMES[kind_key]} {run_name}, {clients} clients: {label}"
            found.append(target(name, _level_value(kind, run_name, clients, key), comparison, goal))
    for kind_key, baseline, modes in _LATENCY_TARGETS:
        if kind := result.get(kind_key):
            found += _latency_targets(_KIND_NAMES[kind_key], kind, baseline, modes)
    for kind_key, run_name, clients, peer_run in _PEER_TARGETS:
        if (kind := result.get(kind_key)) and kind.get("peer"):
            prism = _level_value(kind, run_name, clients, "items_per_second")
            peer = next((entry for entry in kind["peer"]["runs"] if entry["name"] == peer_run), None)
            measured = prism / peer["items_per_second"] if prism and peer else None
            name = f"{_KIND_NAMES[kind_key]} {run_name}, {clients} clients: Prism ÷ ORT items/s ({peer_run})"
            found.append(target(name, measured, ">=", 1.0))
    return found


def _latency_targets(kind_name: str, kind: dict, baseline: str, modes: Sequence[str]) -> list[dict[str, Any]]:
    """A lone user's p50 against the baseline's: fp32 isolates what batching costs, bf16 is the default."""
    baseline_p50 = _level_value(kind, baseline, 1, "p50_ms")
    found = []
    for mode in modes:
        prism_p50 = _level_value(kind, mode, 1, "p50_ms")
        found.append(
            target(
                f"{kind_name} {mode}, 1 client: p50 latency / baseline p50",
                prism_p50 / baseline_p50 if prism_p50 and baseline_p50 else None,
                "<=",
                1.05,
            )
        )
    return found


def target(name: str, measured: float | None, comparison: str, goal: float) -> dict[str, Any]:
    """A bench target as every bench reports it: {name, measured, goal, passed} (None: not measured)."""
    if measured is None:
        passed = None
    else:
        passed = measured >= goal if comparison == ">=" else measured <= goal
    return {"name": name, "measured": measured, "goal": f"{comparison} {goal:g}", "passed": passed}


def _level_value(kind: dict, run_name: str, clients: int, key: str) -> float | None:
    for entry in kind["runs"]:
        if entry["name"] == run_name:
            for level in entry["levels"]:
                if level["clients"] == clients:
                    return level[key]
    return None


def format_report(result: dict[str, Any]) -> str:
    env = result["environment"]
    peaks = result["gemm_peak_gflops"]
    weights = "random weights, architecture-equivalent" if result["random_weights"] else "configured weights"
    lines = [
        f"Model bench ({weights})"
        f" · torch {env['torch']} · {env['torch_threads']} threads · {env['cpu']} ({env['cpu_capability']},"
        f" native bf16: {'yes' if env['cpu_native_bf16'] else 'no'}) · device {env['device']}"
        f" · git {env['git_commit'] or '-'}",
        f"GEMM peak measured in this run: fp32 {peaks.get('fp32', 0):.0f} GFLOP/s, bf16 {peaks.get('bf16', 0):.0f}"
        f" GFLOP/s · batch window {env['batch_window_ms']:g} ms · max batch caption {env['caption_max_batch']},"
        f" sentiment {env['sentiment_max_batch']} · PRISM_PRECISION=auto means {env['precision_auto']}",
        "Allocator settings: "
        + (", ".join(f"{name}={value}" for name, value in env["allocator_env"].items()) or "glibc defaults"),
        "Columns: forward = whose forward pass ran (prism: caption_decoding.py / text_classification.py, "
        "PRISM_FAST_PATH=auto; generate/transformers: transformers' own); x base = items/s / the beam-4 (sentiment: "
        "only) baseline's; x floor = ms per item / the bf16 compute floor (FLOPs per item / bf16 GEMM peak); "
        "batch = mean items per batch the service ran.",
    ]
    caption = result.get("caption")
    if caption:
        flops, floors = caption["flops_per_item"], caption["floor_ms"].get("bf16", {})
        lines += [
            "",
            f"Captions: {caption['model']['model_id']} · {caption['new_tokens']} new tokens forced · "
            f"{len(caption['images'])} images ({', '.join(caption['images'])}) · "
            f"{caption['items_per_level']} requests per level (at least {_ROUNDS} per client)",
            f"FLOPs per caption: encoder {_giga(flops['encoder'])}, greedy {_giga(flops['greedy'])}, "
            f"beam4 {_giga(flops['beam4'])} · bf16 floor: greedy {_num(floors.get('greedy'), 1)} ms, "
            f"beam4 {_num(floors.get('beam4'), 1)} ms · image preprocessing {caption['prepare_ms_per_image']:.1f} ms "
            "on the request thread",
        ]
        lines += _runs_table(caption["runs"], "caps/s", "ms/cap")
        lines.append(
            "The baseline is serialised (one lock), so it is measured at 1 and "
            f"{CAPTION_TARGET_CLIENTS} clients only; other levels compare with the mean of those."
        )
        lines.append("Agreement with fp32 batch-1 outputs of the same decoding (exact caption match, same images):")
        for entry in caption["runs"]:
            if "agreement_with_fp32" in entry:
                lines.append(f"  {entry['name']:<16} {_rate(entry['agreement_with_fp32'])}")
        lines.append(
            "Greedy vs beam4 (same images): "
            + "; ".join(f"{name} {_rate(value)}" for name, value in caption["greedy_vs_beam4"].items())
        )
        lines += _peer_lines(caption.get("peer"), "caps/s", "ms/cap")
    sentiment = result.get("sentiment")
    if sentiment:
        tokens = sentiment["tokens_per_text"]
        lines += [
            "",
            f"Sentiment: {sentiment['model']['model_id']} · {sentiment['texts']} mixed EN/ZH texts, "
            f"{tokens['min']}-{tokens['max']} tokens (mean {tokens['mean']}) · "
            f"{sentiment['items_per_level']} requests per level (at least {_ROUNDS} per client)",
            f"FLOPs per text at the mean length: {_giga(sentiment['flops_per_item']['text'])} · bf16 floor "
            f"{_num(sentiment['floor_ms'].get('bf16', {}).get('text'), 2)} ms",
        ]
        lines += _runs_table(sentiment["runs"], "texts/s", "ms/text")
        lines.append("Label agreement with the fp32 batch-1 baseline (same texts):")
        for entry in sentiment["runs"]:
            if "agreement_with_fp32" in entry:
                agreement = entry["agreement_with_fp32"]
                lines.append(
                    f"  {entry['name']:<16} {_rate(agreement)}, largest probability difference "
                    f"{agreement['max_probability_difference']:.4f}"
                )
        lines += _peer_lines(sentiment.get("peer"), "texts/s", "ms/text")
    if result["random_weights"]:
        lines.append(
            "Random weights: speeds are real, but agreement rates only show numerical sensitivity; with near-uniform "
            "logits any change flips outputs. Run without --arch on the real weights to choose a precision."
        )
    lines.append(
        f"Peak RSS {result['peak_rss_mb']:.0f} MB (the whole run; 'RSS MB' is after each load; each mode's service is "
        f"closed before the next loads) · load average {result['load_average_before']:.2f} before the run, "
        f"{result['load_average_after']:.2f} after (the bench itself keeps about 2 busy)"
    )
    return "\n".join(lines)


def _peer_lines(peer: dict | None, rate: str, per_item: str) -> list[str]:
    if not peer:
        return []
    from . import ort_peer

    return ort_peer.report_lines(peer, rate, per_item)


def _runs_table(runs: list[dict], rate: str, per_item: str) -> list[str]:
    lines = [
        f"  {'run':<16} {'forward':<12} {'load s':>6} {'RSS MB':>7} {'clients':>7} {rate:>8} {per_item:>8} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'batch':>5} {'x base':>6} {'x floor':>7} {'errors':>6}"
    ]
    for entry in runs:
        for position, level in enumerate(entry["levels"]):
            head = (
                f"  {entry['name']:<16} {entry.get('forward', 'transformers'):<12} {entry['load_seconds']:>6.1f} "
                f"{_num(entry['rss_mb'], 0, 7)}"
                if position == 0
                else f"  {'':<16} {'':<12} {'':>6} {'':>7}"
            )
            lines.append(
                f"{head} {level['clients']:>7} {level['items_per_second']:>8.2f} {_num(level['ms_per_item'], 1, 8)} "
                f"{_num(level['p50_ms'], 1, 8)} {_num(level['p95_ms'], 1, 8)} {_num(level['mean_batch'], 1, 5)} "
                f"{_num(level['vs_baseline'], 2, 6)} {_num(level['vs_bf16_floor'], 2, 7)} {level['errors']:>6}"
            )
    return lines


def _num(value: float | None, digits: int = 0, width: int = 0) -> str:
    return f"{'-' if value is None else f'{value:.{digits}f}':>{width}}"


def _giga(flops: int) -> str:
    return f"{flops / 1e9:.3g} GFLOP"


def _rate(agreement: dict) -> str:
    if not agreement["compared"]:
        return "not measured"
    return f"{agreement['matches']}/{agreement['compared']} ({agreement['rate']:.0%})"


def write_json(result: dict[str, Any], path: Path) -> None:
    """Write a bench result (the ``bench`` command's, or one part of it) as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")


# --- Inputs -------------------------------------------------------------------------------------

_SIZES = ((640, 480), (800, 600), (1024, 768), (500, 500), (320, 240), (1280, 720), (600, 800), (256, 256))


def sample_images(count: int, seed: int = 0) -> list[Image.Image]:
    """Varied RGB images: a colour gradient, noise and a few shapes, in the sizes uploads come in."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        width, height = _SIZES[index % len(_SIZES)]
        low, high = rng.integers(0, 256, size=(2, 3))
        ramp = np.linspace(0.0, 1.0, width)[None, :, None]
        pixels = low + (high - low) * ramp * np.ones((height, 1, 1))
        pixels += rng.normal(0, 24, size=(height, width, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x0, y0 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
            box = (x0, y0, x0 + int(rng.integers(10, width // 2)), y0 + int(rng.integers(10, height // 2)))
            draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 256, size=3)))
        images.append(image)
    return images


_EN_CLAUSES = (
    "thanks for the quick refund",
    "the delivery was late again and the box was damaged",
    "the staff were friendly and very helpful",
    "nobody answered my emails for two weeks",
    "it works exactly as described",
    "I would not recommend this shop to anyone",
    "the new update made the app much slower on my phone",
    "great value for the price",
    "the doctor explained the scan results clearly and patiently",
    "the waiting room was crowded and noisy",
    "support fixed my problem in five minutes",
    "the lesson on fractions was easy to follow",
    "my daughter finally understands the water cycle",
    "the product broke after a single day",
    "it was fine, nothing special",
    "the checkout page kept crashing when I tried to pay",
    "I am very happy with the result",
    "the instructions were confusing and half of them were missing",
)
_ZH_CLAUSES = (
    "服务态度很好",
    "快递太慢了，等了一个星期",
    "产品质量不错，值得购买",
    "客服一直没有回复我的邮件",
    "老师讲得很清楚，孩子很喜欢",
    "这次的体验非常糟糕",
    "价格有点贵，但是很好用",
    "医生很耐心地解释了检查结果",
    "包装破了，里面的东西也坏了",
    "一般般，没有什么特别的",
)


def sample_texts(count: int, seed: int = 0) -> list[str]:
    """Mixed-length English and Chinese reviews, from a few words to a long complaint (~5-120 tokens).

    Most are short, as in a helpdesk queue; about a quarter are long. One in three is Chinese.
    """
    rng = random.Random(seed)  # noqa: S311 - sample data, not secrets
    texts = []
    for _ in range(count):
        chinese = rng.random() < 1 / 3
        clauses = _ZH_CLAUSES if chinese else _EN_CLAUSES
        roll = rng.random()
        target = rng.randint(4, 16) if roll < 0.4 else rng.randint(16, 50) if roll < 0.75 else rng.randint(50, 110)
        parts: list[str] = []
        size = 0
        while size < target:
            clause = rng.choice(clauses)
            parts.append(clause)
            size += len(clause) if chinese else len(clause.split()) + 1
        texts.append(("，".join(parts) + "。") if chinese else (". ".join(parts).capitalize() + "."))
    return texts


# --- Architecture-equivalent checkpoints with random weights --------------------------------------


def build_arch(arch: str, directory: Path) -> Path:
    """Save a randomly initialised checkpoint of ``arch`` at its real size, loadable by Prism's loaders.

    Tokenizers are built here, never downloaded; their vocabularies cover every id the model can emit.
    """
    builders = {"vit-gpt2": _build_vit_gpt2, "blip-base": _build_blip_base, "sentiment-distilbert": _build_distilbert}
    if arch not in builders:
        raise ValueError(f"unknown --arch {arch!r}; choose from {', '.join(builders)}")
    directory.mkdir(parents=True, exist_ok=True)

    def build() -> None:
        torch.manual_seed(0)
        with _quiet_transformers():
            builders[arch](directory)

    # Random initialisation runs parallel torch ops; on the main thread they would slow every later
    # inference thread of the bench (see _off_main_thread): measured 119 vs 72 ms per int8 greedy caption.
    _off_main_thread(build)
    return directory


def _build_vit_gpt2(directory: Path) -> None:
    """ViT-base/16 at 224 + GPT-2 small with cross-attention, ids as nlpconnect/vit-gpt2-image-captioning has."""
    from transformers import (
        GPT2Config,
        GPT2Tokenizer,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessorPil,
    )

    end = 50256
    vocab = {f"\u0120w{index}": index for index in range(end)}  # "Ġw123": a word with its leading space
    vocab["<|endoftext|>"] = end
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=[])
    decoder = GPT2Config(add_cross_attention=True, is_decoder=True, bos_token_id=end, eos_token_id=end)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(ViTConfig(), decoder)
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = end
    VisionEncoderDecoderModel(config=config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    ViTImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(directory)


def _build_blip_base(directory: Path) -> None:
    """BLIP with default (base) configs, as Salesforce/blip-image-captioning-base: ViT-B/16 at 384, BERT-base
    decoder, vocabulary 30524 with [DEC] (30522) as the decoder's start token."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    config = BlipConfig()
    specials = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 30522: "[DEC]", 30523: "[ENC]"}
    vocab = {specials.get(index, f"w{index}"): index for index in range(config.text_config.vocab_size)}
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]", model_max_length=512)  # noqa: S106 (a token name)
    BlipForConditionalGeneration(config).save_pretrained(directory)
    BlipProcessor(image_processor=BlipImageProcessorPil(), tokenizer=tokenizer).save_pretrained(directory)


BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_wordpiece_vocab(
    texts: Sequence[str], *, vocab_size: int, lowercase: bool, extra_specials: Sequence[str] = ()
) -> dict[str, int]:
    """A BERT-style WordPiece vocabulary trained on ``texts`` on the spot (no tokenizer download)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))  # noqa: S106 (a token name)
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = [*BERT_SPECIAL_TOKENS, *extra_specials]
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer.get_vocab()


def _build_distilbert(directory: Path) -> None:
    """DistilBERT-base with three labels and the vocabulary size of distilbert-base-multilingual-cased
    (as lxyuan/distilbert-base-multilingual-cased-sentiments-student): a WordPiece vocabulary trained on
    the bench's own texts, padded with filler tokens to the model's 119,547 ids."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertTokenizer

    vocab_size = 119_547
    texts = sample_texts(400, seed=1) + list(_EN_CLAUSES + _ZH_CLAUSES)
    vocab = train_wordpiece_vocab(texts, vocab_size=8000, lowercase=False)
    vocab.update({f"[unused{index}]": index for index in range(len(vocab), vocab_size)})
    tokenizer = DistilBertTokenizer(vocab=vocab, do_lower_case=False, model_max_length=512)
    names = ["negative", "neutral", "positive"]
    config = DistilBertConfig(
        vocab_size=vocab_size,
        pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(names)),
        label2id={name: index for index, name in enumerate(names)},
    )
    DistilBertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
