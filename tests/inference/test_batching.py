"""Micro-batching, backpressure, precision and devices of the model service."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from webapp.inference import ModelService, ModelUnavailable
from webapp.inference.batching import InferenceTimeout, MicroBatcher, QueueFull
from webapp.inference.transformers_backend import (
    cpu_has_native_bf16,
    length_buckets,
    load_caption_model,
    load_sentiment_model,
    resolve_placement,
)


def _no_progress(*report) -> None:
    return None


def _images() -> list[Image.Image]:
    """Distinct test images of different sizes and content."""
    images = []
    for index, size in enumerate([(32, 32), (64, 40), (20, 90), (100, 100), (48, 48), (77, 33)]):
        image = Image.new("RGB", size, (40 * index % 255, 200 - 30 * index, 90 + 25 * index))
        image.paste((255 - 40 * index, 10 * index, 128), (0, 0, size[0] // 2, size[1] // 3))
        images.append(image)
    return images


TEXTS = [
    "ok",
    "The parcel arrived two weeks late and the box was crushed; nobody answered my three emails about it.",
    "great",
    "我的订单还没到，很失望",
    "Thanks a lot, the replacement works perfectly and support was quick and friendly.",
    "meh, it is fine I guess",
]


def test_concurrent_submissions_run_as_batches_and_each_caller_gets_its_own_result():
    """Items queued while the worker is busy are run together, and results go back to the right callers."""
    release = threading.Event()
    batch_sizes: list[int] = []

    def run_batch(batch):
        release.wait(5)
        batch_sizes.append(len(batch))
        return [item * 10 for item in batch]

    batcher = MicroBatcher("test", run_batch, max_batch=8, window_seconds=0.005, queue_size=32)
    with ThreadPoolExecutor(max_workers=9) as pool:
        futures = [pool.submit(batcher.submit, number, 10) for number in range(9)]
        time.sleep(0.3)  # the first item is running (blocked); the other eight are queued behind it
        release.set()
        results = [future.result() for future in futures]
    assert results == [number * 10 for number in range(9)]
    assert sum(batch_sizes) == 9
    assert max(batch_sizes) > 1 and batcher.batches_run < 9


def test_a_full_queue_is_refused_at_once():
    """With the worker busy and the queue full, the next submit raises QueueFull without waiting."""
    release = threading.Event()
    batcher = MicroBatcher(
        "test", lambda batch: [release.wait(5) and item for item in batch], max_batch=1, window_seconds=0, queue_size=1
    )
    with ThreadPoolExecutor(max_workers=2) as pool:
        running = pool.submit(batcher.submit, "first", 10)
        time.sleep(0.2)
        queued = pool.submit(batcher.submit, "second", 10)
        time.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(QueueFull):
            batcher.submit("third", 10)
        refused_after = time.monotonic() - started
        release.set()
        assert (running.result(), queued.result()) == ("first", "second")
    assert refused_after < 1.0  # refused immediately, not after the 10 s timeout


def test_a_timed_out_request_is_dropped_from_the_queue():
    """A caller that stops waiting gets InferenceTimeout, and its item is never run."""
    release = threading.Event()
    ran: list[str] = []

    def run_batch(batch):
        release.wait(5)
        ran.extend(batch)
        return batch

    batcher = MicroBatcher("test", run_batch, max_batch=1, window_seconds=0, queue_size=4)
    with ThreadPoolExecutor(max_workers=1) as pool:
        blocker = pool.submit(batcher.submit, "blocker", 10)
        time.sleep(0.2)
        with pytest.raises(InferenceTimeout):
            batcher.submit("impatient", 0.2)
        release.set()
        assert blocker.result() == "blocker"
    assert batcher.submit("later", 5) == "later"
    assert ran == ["blocker", "later"]


def test_one_bad_item_fails_alone_and_the_worker_survives():
    """An item that makes the batch raise is retried alone; its neighbours still get results."""
    release = threading.Event()

    def run_batch(batch):
        release.wait(5)
        if "bad" in batch:
            raise ValueError("cannot handle bad")
        return [item.upper() for item in batch]

    batcher = MicroBatcher("test", run_batch, max_batch=4, window_seconds=0.005, queue_size=8)
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(batcher.submit, "warm", 10)
        time.sleep(0.2)
        futures = {item: pool.submit(batcher.submit, item, 10) for item in ("a", "bad", "b")}
        time.sleep(0.2)
        release.set()
        assert first.result() == "WARM"
        assert futures["a"].result() == "A" and futures["b"].result() == "B"
        with pytest.raises(ValueError, match="cannot handle bad"):
            futures["bad"].result()
    assert batcher.submit("after", 5) == "AFTER"


@pytest.mark.parametrize("caption_dir_fixture, beams", [("vit_gpt2_dir", 1), ("vit_gpt2_dir", 3), ("blip_dir", 2)])
def test_batched_captions_equal_unbatched_captions_in_fp32(request, make_settings, caption_dir_fixture, beams):
    """A batch of images gets the captions, and (to 1e-4) the first-step scores, each image gets alone (fp32)."""
    settings = make_settings(
        caption_model=str(request.getfixturevalue(caption_dir_fixture)), caption_num_beams=beams, precision="fp32"
    )
    model = load_caption_model(settings, _no_progress)
    prepared = [model.prepare(image) for image in _images()]
    alone = [model.caption_prepared([item])[0] for item in prepared]
    assert model.caption_prepared(prepared) == alone

    def first_step_scores(batch):
        with torch.inference_mode():
            out = model.model.generate(
                pixel_values=torch.from_numpy(np.stack(batch)),
                **model.generate_kwargs,
                output_scores=True,
                return_dict_in_generate=True,
            )
        return out.scores[0].reshape(len(batch), beams, -1)[:, 0, :]

    together = first_step_scores(prepared)
    singles = torch.cat([first_step_scores([item]) for item in prepared])
    torch.testing.assert_close(together, singles, atol=1e-4, rtol=1e-4)
    # Tiny random models often caption every image alike; their scores still differ per image, so the
    # comparison above is not between identical rows.
    assert not torch.allclose(singles[0], singles[1])


def test_length_buckets_bound_padding_and_batch_size():
    """Groups cover every index once, stay within max_batch, and pad by at most 50% (beyond singletons)."""
    lengths = [5, 120, 7, 6, 118, 60, 64, 5, 9, 100, 33, 31]
    groups = length_buckets(lengths, max_batch=3)
    assert sorted(index for group in groups for index in group) == list(range(len(lengths)))
    for group in groups:
        assert len(group) <= 3
        real = sum(lengths[index] for index in group)
        assert max(lengths[index] for index in group) * len(group) <= real * 1.5 or len(group) == 1
    assert length_buckets([], max_batch=4) == []


def test_bucketed_sentiment_batch_matches_one_text_at_a_time(make_settings):
    """Classifying mixed-length texts together gives the labels and (to 1e-5) the scores of one-by-one runs."""
    model = load_sentiment_model(make_settings(precision="fp32"), _no_progress)
    together = model.classify(TEXTS)
    for text, batched in zip(TEXTS, together, strict=True):
        [alone] = model.classify([text])
        assert max(batched, key=batched.get) == max(alone, key=alone.get)
        assert batched == pytest.approx(alone, abs=1e-5)


def test_service_prepares_images_on_the_request_thread(make_settings, monkeypatch):
    """Image preprocessing runs on the caller's thread; only generate() runs on the model worker."""
    service = ModelService(make_settings())
    model = service.caption_slot.get()
    threads: dict[str, str] = {}
    original_prepare, original_run = model.prepare, model.caption_prepared
    monkeypatch.setattr(
        model,
        "prepare",
        lambda image: threads.setdefault("prepare", threading.current_thread().name) and original_prepare(image),
    )
    monkeypatch.setattr(
        model,
        "caption_prepared",
        lambda batch: threads.setdefault("generate", threading.current_thread().name) and original_run(batch),
    )
    service.caption(_images()[0])
    assert threads["prepare"] == threading.current_thread().name
    assert threads["generate"] == "prism-inference"


def test_overloaded_service_answers_busy_with_retry_after(make_settings, monkeypatch):
    """When a model's queue is full, the service raises ModelUnavailable(reason='busy') with a Retry-After."""
    service = ModelService(make_settings(queue_size=1, sentiment_max_batch=1))
    model = service.sentiment_slot.get()
    release = threading.Event()
    original = model.classify
    monkeypatch.setattr(model, "classify", lambda texts: release.wait(5) and original(texts))
    with ThreadPoolExecutor(max_workers=2) as pool:
        running = pool.submit(service.sentiment, "first")
        time.sleep(0.2)
        queued = pool.submit(service.sentiment, "second")
        time.sleep(0.2)
        with pytest.raises(ModelUnavailable) as caught:
            service.sentiment("third")
        release.set()
        assert running.result().label and queued.result().label
    assert caught.value.reason == "busy"
    assert caught.value.retry_after >= 1
    assert service.sentiment("after").label in {"negative", "neutral", "positive"}


def test_a_model_error_becomes_model_unavailable_not_a_crash(make_settings, monkeypatch):
    """An exception inside the model is reported as ModelUnavailable(reason='error'), and the next call works."""
    service = ModelService(make_settings())
    model = service.sentiment_slot.get()
    original = model.classify

    def explode_once(texts):
        monkeypatch.setattr(model, "classify", original)
        raise RuntimeError("kernel fault")

    monkeypatch.setattr(model, "classify", explode_once)
    with pytest.raises(ModelUnavailable) as caught:
        service.sentiment("hello")
    assert caught.value.reason == "error" and "RuntimeError" in caught.value.message
    assert service.sentiment("hello").label


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_models_load_and_answer(make_settings, precision):
    """bf16 and dynamic-int8 modes load the tiny models and return well-formed outputs."""
    settings = make_settings(precision=precision)
    captioner = load_caption_model(settings, _no_progress)
    classifier = load_sentiment_model(settings, _no_progress)
    assert captioner.placement.precision == precision == classifier.placement.precision
    if precision == "bf16":
        assert next(captioner.model.parameters()).dtype == torch.bfloat16
    else:
        assert any("quantized" in type(module).__module__ for module in classifier.model.modules())
    assert all(isinstance(text, str) for text in captioner.caption(_images()[:2]))
    [scores] = classifier.classify(["great stuff"])
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-3)


def test_placement_resolution_and_refusals(make_settings):
    """auto picks bf16 only on CPUs with native bf16; impossible combinations are refused with a reason."""
    auto = resolve_placement(make_settings(device="auto", precision="auto"))
    if not torch.cuda.is_available():
        assert auto.device.type == "cpu"
        assert auto.precision == ("bf16" if cpu_has_native_bf16() else "fp32")
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_placement(make_settings(device="cuda"))
        with pytest.raises(ValueError, match="needs a CUDA device"):
            resolve_placement(make_settings(device="cpu", precision="fp16"))
    with pytest.raises(ValueError, match="PRISM_PRECISION"):
        resolve_placement(make_settings(precision="fp8"))
    with pytest.raises(ValueError, match="PRISM_DEVICE"):
        resolve_placement(replace(make_settings(), device="tpu"))


def test_callers_still_preparing_their_item_join_the_batch():
    """Items announced before the batch starts join it even when their preprocessing outlasts the window."""
    batch_sizes: list[int] = []

    def run_batch(batch):
        batch_sizes.append(len(batch))
        return batch

    def slow_prepare(item):
        time.sleep(item)  # the item is its own preparation time
        return item

    batcher = MicroBatcher("test", run_batch, max_batch=8, window_seconds=0.005, queue_size=8, max_wait_seconds=2)
    with ThreadPoolExecutor(max_workers=3) as pool:
        slow = [pool.submit(batcher.submit, delay, 10, slow_prepare) for delay in (0.05, 0.1)]
        time.sleep(0.01)  # both slow callers have announced themselves and are preparing
        fast = pool.submit(batcher.submit, 0.0, 10, slow_prepare)
        assert sorted([fast.result(), *(future.result() for future in slow)]) == [0.0, 0.05, 0.1]
    assert batch_sizes == [3]


def test_a_lone_caller_is_not_held_for_company():
    """With nobody else preparing an item, a request runs after the short window, not the long patience."""
    batcher = MicroBatcher(
        "test", lambda batch: batch, max_batch=8, window_seconds=0.001, queue_size=8, max_wait_seconds=30
    )
    assert batcher.submit("alone", timeout=5) == "alone"  # would time out if it waited max_wait_seconds


def test_one_inference_thread_serves_both_models_and_close_ends_it(make_settings):
    """Caption and sentiment batches run on the same thread; close() ends that thread and unloads the models."""
    service = ModelService(make_settings())
    seen: set[str] = set()
    caption_model, sentiment_model = service.caption_slot.get(), service.sentiment_slot.get()
    for model, name in ((caption_model, "caption_prepared"), (sentiment_model, "classify")):
        original = getattr(model, name)

        def spy(batch, original=original):
            seen.add(threading.current_thread().name)
            return original(batch)

        setattr(model, name, spy)
    service.caption(_images()[0])
    service.sentiment("fine")
    assert seen == {"prism-inference"}
    thread = next(t for t in threading.enumerate() if t.name == "prism-inference" and t is service.worker._thread)
    service.close()
    assert not thread.is_alive()
    assert [status.state.value for status in service.statuses()] == ["not_loaded"] * 4


def test_beam_search_cache_that_skips_cross_attention_reorder_gives_identical_output(make_settings):
    """Skipping the (no-op) cross-attention reorder leaves beam-search sequences and scores unchanged."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    from webapp.inference.transformers_backend import BeamSharedCrossAttentionCache

    model = load_caption_model(make_settings(caption_num_beams=3, precision="fp32"), _no_progress)
    pixel_values = torch.from_numpy(np.stack([model.prepare(image) for image in _images()]))
    outputs = {}
    for name, cache in (
        ("default", EncoderDecoderCache(DynamicCache(), DynamicCache())),
        ("shared", BeamSharedCrossAttentionCache(DynamicCache(), DynamicCache())),
    ):
        with torch.inference_mode():
            outputs[name] = model.model.generate(
                pixel_values=pixel_values,
                **model.generate_kwargs,
                cache=cache,
                output_scores=True,
                return_dict_in_generate=True,
            )
    assert torch.equal(outputs["default"].sequences, outputs["shared"].sequences)
    torch.testing.assert_close(outputs["default"].sequences_scores, outputs["shared"].sequences_scores)


def test_an_announced_job_joins_the_batch_being_cut_and_leaving_withdraws_it():
    """A caller that announces itself, then submits 50 ms later, joins the batch a lone caller started;
    an announcement left without a submit (or repeated on the same thread) leaves no count behind."""
    batch_sizes: list[int] = []

    def run_batch(batch):
        batch_sizes.append(len(batch))
        return batch

    batcher = MicroBatcher("test", run_batch, max_batch=8, window_seconds=0.001, queue_size=8, max_wait_seconds=2)
    announced = threading.Event()

    def announced_caller():
        with batcher.announce():
            announced.set()
            time.sleep(0.05)  # reading its row and its image
            return batcher.submit("late", timeout=5)

    with ThreadPoolExecutor(max_workers=2) as pool:
        late = pool.submit(announced_caller)
        announced.wait(1)
        early = pool.submit(batcher.submit, "early", 5)
        assert {early.result(), late.result()} == {"early", "late"}
    assert batch_sizes == [2]

    with batcher.announce(), batcher.announce():  # nested on one thread: one arrival
        pass
    assert batcher._arriving == 0
    started = time.monotonic()
    assert batcher.submit("alone", timeout=5) == "alone"
    assert time.monotonic() - started < 0.5  # not held for an announced caller that never comes


def test_after_a_busy_batch_the_next_one_waits_briefly_for_the_same_load():
    """Busy window: after a batch of 4, a lone first item waits (up to the window) for the rest of the
    load, which arrives 100 ms later, instead of running alone (a lone caller after a batch of 1 is
    not held: see test_a_lone_caller_is_not_held_for_company)."""
    batches: list[list] = []
    gate = threading.Event()

    def run_batch(batch):
        if batch == ["hold"]:
            gate.wait(5)  # the burst queues behind this batch, so it runs as one batch of 4
        batches.append(list(batch))
        return batch

    batcher = MicroBatcher(
        "test", run_batch, max_batch=8, window_seconds=0.0, queue_size=8, max_wait_seconds=2, busy_window_seconds=0.5
    )
    with ThreadPoolExecutor(max_workers=5) as pool:
        held = pool.submit(batcher.submit, "hold", 5)
        time.sleep(0.05)
        burst = [pool.submit(batcher.submit, item, 5) for item in range(4)]
        time.sleep(0.05)
        gate.set()
        assert held.result() == "hold" and [future.result() for future in burst] == [0, 1, 2, 3]
        first = pool.submit(batcher.submit, "a", 5)
        time.sleep(0.1)  # the rest of the load arrives a little later
        rest = [pool.submit(batcher.submit, item, 5) for item in ("b", "c", "d")]
        assert [first.result(), *(future.result() for future in rest)] == ["a", "b", "c", "d"]
    assert batches == [["hold"], [0, 1, 2, 3], ["a", "b", "c", "d"]]  # "a" waited for its company


def test_the_end_of_a_burst_is_not_held_for_clients_that_are_gone():
    """Four clients call in a loop and come back within milliseconds; when three stop, the fourth's
    last item waits about twice their return time, not the whole busy window (1 s here, 200 ms by
    default), for company that is not coming."""
    batches: list[int] = []

    def run_batch(batch):
        time.sleep(0.01)  # a batch takes long enough for all four to be waiting again
        batches.append(len(batch))
        return batch

    batcher = MicroBatcher(
        "test", run_batch, max_batch=8, window_seconds=0.0, queue_size=8, max_wait_seconds=2, busy_window_seconds=1.0
    )
    start, done = threading.Barrier(4), threading.Barrier(4)

    def client(stays: bool) -> float:
        start.wait()
        for item in range(12):
            assert batcher.submit(item, timeout=5) == item
        done.wait()  # the burst is over; three clients leave
        if not stays:
            return 0.0
        started = time.monotonic()
        assert batcher.submit("last", timeout=5) == "last"
        return time.monotonic() - started

    with ThreadPoolExecutor(max_workers=4) as pool:
        last_latency = max(pool.map(client, [False, False, False, True]))
    assert batches[-1] == 1 and sum(batches) == 49
    assert sorted(batches)[len(batches) // 2] == 4  # the loop itself ran in batches of four
    assert last_latency < 0.5  # the whole window would be over 1 s


def test_a_wait_that_gave_up_is_doubled_next_time():
    """When the expected clients did not come back within the wait, the next wait is twice as long, up to
    the busy window, in case they were slow rather than gone."""
    gate = threading.Event()

    def run_batch(batch):
        if "hold" in batch:
            gate.wait(5)  # the pair queues behind this batch, so it runs as one batch of 2
        return batch

    batcher = MicroBatcher(
        "test", run_batch, max_batch=8, window_seconds=0.0, queue_size=8, max_wait_seconds=2, busy_window_seconds=0.2
    )
    with batcher.worker.changed:
        batcher._refills.append(0.005)  # clients used to come back within 5 ms: wait 10 ms
    waits = []
    with ThreadPoolExecutor(max_workers=3) as pool:
        for _ in range(3):
            gate.clear()
            held = pool.submit(batcher.submit, "hold", 5)
            time.sleep(0.05)
            pair = [pool.submit(batcher.submit, item, 5) for item in ("a", "b")]
            time.sleep(0.05)
            gate.set()  # the pair's batch expects 3 (the held one's client and the pair): one is not coming
            assert [held.result(), *(future.result() for future in pair)] == ["hold", "a", "b"]
            with batcher.worker.changed:
                waits.append(batcher._busy_wait_seconds())
            assert batcher.submit("lone", 5) == "lone"  # expects the pair's 2: gives up again
            with batcher.worker.changed:
                waits.append(batcher._busy_wait_seconds())
    assert waits == pytest.approx([0.02, 0.04, 0.08, 0.16, 0.2, 0.2])
