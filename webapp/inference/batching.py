"""Dynamic micro-batching with a bounded queue: one worker thread per model.

Concurrent requests are queued; the worker takes the first, keeps collecting for up to
``window_seconds`` (or until ``max_batch`` items), and runs them as one batch. Callers announce
themselves while they preprocess their item (``submit(..., prepare=...)``), and the worker keeps
waiting, up to ``max_wait_seconds``, while such an announced item is still on its way: a burst of
clients whose preprocessing is spread out by the GIL then shares one batch instead of splitting
into two, and a lone request never waits for company that is not coming.

The single worker also serialises every use of the (non-thread-safe) tokenizer and model. A full
queue is refused at once (``QueueFull``) so the web tier can answer 503 with Retry-After instead
of letting requests pile up until a server timeout; a caller that waited longer than ``timeout``
gets ``InferenceTimeout`` and its queued item is dropped if not yet started.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any


class QueueFull(RuntimeError):
    """The model's queue is full; try again later."""


class InferenceTimeout(RuntimeError):
    """The request waited longer than its timeout."""


@dataclass
class _Job:
    payload: Any
    future: Future = field(default_factory=Future)


class MicroBatcher:
    def __init__(
        self,
        name: str,
        run_batch: Callable[[Sequence[Any]], Sequence[Any]],
        *,
        max_batch: int,
        window_seconds: float,
        queue_size: int,
        max_wait_seconds: float = 0.1,
    ):
        if max_batch < 1 or queue_size < 1:
            raise ValueError("max_batch and queue_size must be at least 1")
        self.name = name
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.window_seconds = window_seconds
        self.max_wait_seconds = max(max_wait_seconds, window_seconds)
        self._arriving = 0  # callers preparing an item they are about to queue
        self._arriving_lock = threading.Lock()
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=queue_size)
        self._start_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.batches_run = 0  # for tests and the benchmark: how often run_batch was called
        self.items_run = 0
        self.last_batch_seconds = 1.0  # duration of the latest batch, for Retry-After estimates

    @property
    def queue_size(self) -> int:
        return self._queue.maxsize

    def pending(self) -> int:
        return self._queue.qsize()

    def _ensure_worker(self) -> None:
        # Started on first use, not at construction: under a forking server each worker process
        # starts its own thread after the fork (threads do not survive fork).
        if self._worker is not None and self._worker.is_alive():
            return
        with self._start_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._loop, name=f"prism-batch-{self.name}", daemon=True)
                self._worker.start()

    def submit(self, payload: Any, timeout: float, prepare: Callable[[Any], Any] | None = None) -> Any:
        """Run ``payload`` (after ``prepare(payload)`` on this thread, if given) in the next batch.

        Returns the item's result or raises the batch's exception, ``QueueFull`` or ``InferenceTimeout``.
        """
        self._ensure_worker()
        with self._arriving_lock:
            self._arriving += 1
        try:
            if prepare is not None:
                payload = prepare(payload)
            job = _Job(payload)
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self.name}: {self._queue.maxsize} requests already waiting") from None
        finally:
            with self._arriving_lock:
                self._arriving -= 1
        try:
            return job.future.result(timeout=timeout)
        except FutureTimeout:
            job.future.cancel()  # dropped by the worker if it has not started yet
            raise InferenceTimeout(f"{self.name}: no result within {timeout:g} s") from None

    def _collect(self) -> list[_Job]:
        batch = [self._queue.get()]
        started = time.monotonic()
        window_end, patience_end = started + self.window_seconds, started + self.max_wait_seconds
        while len(batch) < self.max_batch:
            now = time.monotonic()
            if now < window_end:
                timeout = window_end - now
            elif self._arriving and now < patience_end:
                timeout = min(0.002, patience_end - now)  # an announced item is being prepared: wait for it
            else:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except queue.Empty:
                    break
            try:
                batch.append(self._queue.get(timeout=timeout))
            except queue.Empty:
                continue
        return batch

    def _run(self, jobs: list[_Job]) -> None:
        started = time.monotonic()
        try:
            results = self._run_batch([job.payload for job in jobs])
            if len(results) != len(jobs):
                raise RuntimeError(f"{self.name}: batch returned {len(results)} results for {len(jobs)} items")
        except Exception as exc:  # the worker must survive any model error
            if len(jobs) > 1:
                # One bad item must not fail its neighbours: retry them one by one.
                for job in jobs:
                    self._run([job])
                return
            jobs[0].future.set_exception(exc)
            return
        self.last_batch_seconds = time.monotonic() - started
        self.batches_run += 1
        self.items_run += len(jobs)
        for job, result in zip(jobs, results, strict=True):
            job.future.set_result(result)

    def _loop(self) -> None:
        while True:
            jobs = [job for job in self._collect() if job.future.set_running_or_notify_cancel()]
            if jobs:
                self._run(jobs)
