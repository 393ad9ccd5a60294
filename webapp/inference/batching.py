"""Dynamic micro-batching with bounded queues, run by one inference thread per process.

Each model has a ``MicroBatcher``: a bounded queue plus the rule for cutting a batch from it. The
``InferenceWorker`` thread runs the batches of every model registered with it, always serving the
model whose oldest item has waited longest. When it cuts a batch it takes what is queued (up to
``max_batch``), waits up to ``window_seconds`` for more (and, until it holds as many as the
previous batch, about twice as long as those clients took to come back lately, at most
``busy_window_seconds``: a lone user never pays it, and the end of a burst is not held for clients
that are gone), and keeps waiting, up to ``max_wait_seconds``, while callers are still preparing an
item they announced (``submit(..., prepare=...)``, or earlier with ``announce()``): a burst of
clients whose preprocessing is spread out by the GIL then shares one batch instead of splitting
into two, and a lone request never waits for company that is not coming.

Why one thread for all models: it is the only thread that touches tokenizers and models (which are
not thread-safe), and torch work runs fastest when a single long-lived thread does it. Measured
here, once a second long-lived thread has run a parallel torch op, torch work on the first is
20-25% slower (two OpenMP thread teams on 2 cores; libgomp then stops spinning between parallel
regions). Two models computing side by side would share the same cores anyway.

A full queue is refused at once (``QueueFull``) so the web tier can answer 503 with Retry-After
instead of letting requests pile up until a server timeout; a caller that waited longer than
``timeout`` gets ``InferenceTimeout`` and its queued item is dropped if not yet started.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

_REFILLS_KEPT = 8  # batches whose clients' return times set the busy wait
_MIN_BUSY_WAIT_SECONDS = 0.002


class QueueFull(RuntimeError):
    """The model's queue is full; try again later."""


class InferenceTimeout(RuntimeError):
    """The request waited longer than its timeout."""


@dataclass
class _Job:
    payload: Any
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


class InferenceWorker:
    """The thread that runs every registered batcher's batches, oldest waiting item first."""

    def __init__(self, name: str = "prism-inference"):
        self.name = name
        self.changed = threading.Condition()  # guards every registered batcher's queue
        self._batchers: list[MicroBatcher] = []
        self._thread: threading.Thread | None = None
        self._stopping = False

    def register(self, batcher: MicroBatcher) -> None:
        with self.changed:
            self._batchers.append(batcher)

    def ensure_running(self) -> None:
        # Started on first use, not at construction: under a forking server each worker process
        # starts its own thread after the fork (threads do not survive fork).
        with self.changed:
            if self._stopping:
                raise RuntimeError(f"{self.name} is stopped")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """End the thread after its current batch (its torch state goes with it); queued jobs fail."""
        with self.changed:
            self._stopping = True
            thread = self._thread
            for batcher in self._batchers:
                while batcher.jobs:
                    batcher.jobs.popleft().future.set_exception(RuntimeError(f"{self.name} stopped"))
            self.changed.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self.changed:
                while not (ready := [batcher for batcher in self._batchers if batcher.jobs]):
                    if self._stopping:
                        return
                    self.changed.wait()
                batcher = min(ready, key=lambda candidate: candidate.jobs[0].enqueued)
            jobs = batcher.cut_batch()
            if jobs:
                batcher.run(jobs)


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
        busy_window_seconds: float = 0.0,
        worker: InferenceWorker | None = None,
    ):
        if max_batch < 1 or queue_size < 1:
            raise ValueError("max_batch and queue_size must be at least 1")
        self.name = name
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.window_seconds = window_seconds
        # While fewer items wait than the last batch held, wait up to this long for the rest: the
        # clients of that batch are sending their next requests, and requests that go through
        # background jobs arrive tens of ms apart. A lone user (last batch: 1) never waits.
        self.busy_window_seconds = max(busy_window_seconds, window_seconds)
        self.max_wait_seconds = max(max_wait_seconds, window_seconds)
        self._last_batch_size = 0
        self._results_out: float | None = None  # when the last batch's results went to their callers
        # How long the last batches' clients took to send the next batch (see _busy_wait_seconds).
        self._refills: collections.deque[float] = collections.deque(maxlen=_REFILLS_KEPT)
        self._running = False  # a batch of this model is running (guarded by worker.changed)
        self._arrived_while_running = 0
        self.queue_size = queue_size
        self.worker = worker or InferenceWorker(f"prism-batch-{name}")
        self.worker.register(self)
        self.jobs: collections.deque[_Job] = collections.deque()  # guarded by worker.changed
        self._arriving = 0  # callers preparing an item they are about to queue (guarded too)
        self._announced = threading.local()  # per thread: an announcement not yet turned into a submit
        self.batches_run = 0  # for tests and the benchmark: how often run_batch was called
        self.items_run = 0
        self.last_batch_seconds = 1.0  # duration of the latest batch, for Retry-After estimates

    def pending(self) -> int:
        return len(self.jobs)

    def submit(self, payload: Any, timeout: float, prepare: Callable[[Any], Any] | None = None) -> Any:
        """Run ``payload`` (after ``prepare(payload)`` on this thread, if given) in the next batch.

        Returns the item's result or raises the batch's exception, ``QueueFull`` or ``InferenceTimeout``.
        """
        self.worker.ensure_running()
        changed = self.worker.changed
        with changed:
            if getattr(self._announced, "pending", False):
                self._announced.pending = False  # this thread's announcement becomes this arrival
            else:
                self._arriving += 1
        job = None
        try:
            if prepare is not None:
                payload = prepare(payload)
            with changed:
                if len(self.jobs) >= self.queue_size:
                    raise QueueFull(f"{self.name}: {self.queue_size} requests already waiting")
                job = _Job(payload)
                self.jobs.append(job)
                if self._running:
                    self._arrived_while_running += 1
        finally:
            with changed:
                self._arriving -= 1
                changed.notify_all()
        try:
            return job.future.result(timeout=timeout)
        except FutureTimeout:
            job.future.cancel()  # dropped by the worker if it has not started yet
            raise InferenceTimeout(f"{self.name}: no result within {timeout:g} s") from None

    @contextmanager
    def announce(self) -> Iterator[None]:
        """Count this thread as arriving from now until its next ``submit`` queues the item.

        For callers whose own work before ``submit`` is long enough to split a burst (a background
        job reads its row and its image first): a batch being cut waits for them, as for callers
        inside ``prepare``. Leaving without submitting withdraws the announcement.
        """
        changed = self.worker.changed
        with changed:
            if getattr(self._announced, "pending", False):  # already announced: one arrival, one count
                nested = True
            else:
                nested = False
                self._arriving += 1
                self._announced.pending = True
        if nested:
            yield
            return
        try:
            yield
        finally:
            with changed:
                if self._announced.pending:
                    self._announced.pending = False
                    self._arriving -= 1
                    changed.notify_all()

    def cut_batch(self) -> list[_Job]:
        """Take the next batch (called by the worker while this queue holds at least one job)."""
        changed = self.worker.changed
        started = time.monotonic()
        window_end, patience_end = started + self.window_seconds, started + self.max_wait_seconds
        # The current load: the last batch's clients, who just got their results and are sending the
        # next requests, plus everyone who queued while that batch ran. A lone user expects only
        # themselves; a burst that split into two groups expects both and merges again.
        with changed:
            expected = min(self.max_batch, self._last_batch_size + self._arrived_while_running)
            busy_from = self._results_out if self._results_out is not None else started
            busy_end = busy_from + self._busy_wait_seconds()
            while len(self.jobs) < self.max_batch:
                now = time.monotonic()
                if now < window_end:
                    changed.wait(window_end - now)
                elif len(self.jobs) < expected and now < busy_end:
                    changed.wait(busy_end - now)
                elif self._arriving and now < patience_end:
                    changed.wait(patience_end - now)  # an announced item is being prepared: wait for it
                else:
                    break
            if expected > 1 and self._results_out is not None:
                if len(self.jobs) >= expected:
                    self._refills.append(time.monotonic() - self._results_out)
                else:  # gave up on some: wait twice as long next time, in case they were slow, not gone
                    self._refills.append(busy_end - busy_from)
            batch = [self.jobs.popleft() for _ in range(min(self.max_batch, len(self.jobs)))]
        return [job for job in batch if job.future.set_running_or_notify_cancel()]

    def _busy_wait_seconds(self) -> float:
        """How long after the last batch's results went out to wait for its clients' next items.

        Twice the longest time they took to come back over the last ``_REFILLS_KEPT`` batches (at least
        ``_MIN_BUSY_WAIT_SECONDS``), never more than ``busy_window_seconds``, which also applies before
        any was seen. Why: clients calling in a loop come back within a few ms and jobs within tens of
        ms, so the full window is only ever spent on clients that are not coming, at the end of every
        burst (measured: 16 sentiment clients, the last batch waited the whole 200 ms for them).
        Caller holds ``worker.changed``.
        """
        if not self._refills:
            return self.busy_window_seconds
        return min(self.busy_window_seconds, max(_MIN_BUSY_WAIT_SECONDS, 2 * max(self._refills)))

    def run(self, jobs: list[_Job]) -> None:
        started = time.monotonic()
        with self.worker.changed:
            self._running, self._arrived_while_running = True, 0
        try:
            results = self._run_batch([job.payload for job in jobs])
            if len(results) != len(jobs):
                raise RuntimeError(f"{self.name}: batch returned {len(results)} results for {len(jobs)} items")
        except Exception as exc:  # the worker must survive any model error
            self._stopped_running()
            if len(jobs) > 1:
                # One bad item must not fail its neighbours: retry them one by one.
                for job in jobs:
                    self.run([job])
                return
            self._results_out = time.monotonic()
            jobs[0].future.set_exception(exc)
            return
        self._stopped_running()  # before the results go out: their callers' next items are new arrivals
        self.last_batch_seconds = time.monotonic() - started
        self._last_batch_size = len(jobs)
        self._results_out = time.monotonic()
        self.batches_run += 1
        self.items_run += len(jobs)
        for job, result in zip(jobs, results, strict=True):
            job.future.set_result(result)

    def _stopped_running(self) -> None:
        with self.worker.changed:
            self._running = False
