"""Request batching: concurrent requests to one model grouped into one pipeline call.

A :class:`Batcher` owns one worker thread (so one model runs one forward at a time). ``submit(key, payload,
size)`` queues a job and returns a :class:`concurrent.futures.Future`. The worker takes the oldest job,
waits for others with the same ``key`` (the same decoding settings) until ``wait_s`` after that job
arrived or after the previous batch ended, whichever is later. After a batch, the next one of the same key
also waits up to ``refill_s`` after it ended for as many items as that batch answered plus those that were
queued when it ended: under load the clients just answered send their next requests at once, and without
this wait they would miss the batch that starts while their requests are being read, leaving batches
half full for good (the clients split into groups that take turns). Then it hands up to ``max_items``
items' worth of them, oldest first, to ``run(key, payloads)``,
which returns one result per payload (an exception instance fails that job alone). Jobs with other keys keep their place for the next batch. A job
cancelled before its batch starts (a request that timed out) is dropped; when a batch of several jobs
fails, each job is retried alone so one bad request cannot fail the others.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any


@dataclasses.dataclass
class Job:
    key: Hashable
    payload: Any
    size: int
    future: Future
    arrived: float


class Batcher:
    def __init__(self, name: str, run: Callable[[Hashable, list[Any]], list[Any]], max_items: int = 16,
                 wait_s: float = 0.01, refill_s: float = 0.0):
        self.name, self.run, self.max_items, self.wait_s = name, run, max(1, max_items), max(0.0, wait_s)
        self.refill_s = max(0.0, refill_s)
        self._refill: tuple[Hashable, int] | None = None  # (key, items) the next batch of that key waits for
        self._pending: collections.deque[Job] = collections.deque()
        self._cv = threading.Condition()
        self._closed = False
        self._last_done = 0.0
        # busy_s: seconds in ``run``; waited_s: seconds jobs spent queued before their batch started (summed)
        self.stats = {"batches": 0, "jobs": 0, "items": 0, "largest": 0, "failed": 0, "busy_s": 0.0, "waited_s": 0.0}
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, payload: Any, size: int = 1) -> Future:
        fut: Future = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError(f"batcher {self.name} is closed")
            self._pending.append(Job(key, payload, max(1, size), fut, time.monotonic()))
            self._cv.notify()
        return fut

    @property
    def queued(self) -> int:
        return len(self._pending)

    def close(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout)

    def _same(self, key: Hashable) -> int:
        return sum(j.size for j in self._pending if j.key == key)

    def _take(self) -> list[Job] | None:
        with self._cv:
            while not self._pending and not self._closed:
                self._cv.wait()
            if not self._pending:
                return None
            first = self._pending[0]
            deadline = max(first.arrived, self._last_done) + self.wait_s
            want = min(self.max_items, self._refill[1]) if self._refill and self._refill[0] == first.key else 0
            while (same := self._same(first.key)) < self.max_items and not self._closed:
                until = deadline if same >= want else max(deadline, self._last_done + self.refill_s)
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            batch: list[Job] = []
            rest: collections.deque[Job] = collections.deque()
            total = 0
            for job in self._pending:
                if job.key == first.key and (not batch or total + job.size <= self.max_items):
                    batch.append(job)
                    total += job.size
                else:
                    rest.append(job)
            self._pending = rest
        return [j for j in batch if j.future.set_running_or_notify_cancel()]  # drops cancelled jobs

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if batch:
                start = time.monotonic()
                self.stats["waited_s"] = round(self.stats["waited_s"] + sum(start - j.arrived for j in batch), 3)
                self._run(batch, retry_alone=True)
                with self._cv:
                    self._last_done = time.monotonic()
                    key = batch[0].key
                    self._refill = (key, sum(j.size for j in batch) + self._same(key))
                self.stats["busy_s"] = round(self.stats["busy_s"] + self._last_done - start, 3)

    def _run(self, batch: list[Job], retry_alone: bool) -> None:
        try:
            results = self.run(batch[0].key, [j.payload for j in batch])
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting requests
            if retry_alone and len(batch) > 1:
                for job in batch:
                    self._run([job], retry_alone=False)
                return
            self.stats["failed"] += len(batch)
            for job in batch:
                job.future.set_exception(exc)
            return
        self.stats["batches"] += 1
        self.stats["jobs"] += len(batch)
        self.stats["items"] += sum(j.size for j in batch)
        self.stats["largest"] = max(self.stats["largest"], sum(j.size for j in batch))
        for job, result in zip(batch, results):
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
