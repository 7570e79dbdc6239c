"""WorkQueue: per-environment work, so no environment waits for another's slow apply.

A pass only decides; what it decides to run goes here, keyed by environment
name. `concurrency` workers take items; one environment is never worked on
twice at once; a decision for an environment that is busy or already waiting
replaces the waiting one (level-based: the latest desired state wins, so five
commits during an apply give one follow-up apply, with the last content).

The queue alone serializes an environment's runs and bounds how many run at
once: work asked from outside the workers (`run_now`: a drift check through
the API) and plans for people (`slot`) take the same slots. Each name has at
most one timer (`put_after`, controller-runtime's RequeueAfter): when it is
due, its item is queued like any other, unless work for the name already waits
or runs (whoever runs it sets the next timer when it ends).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger("envctl.queue")
Item = TypeVar("Item")
T = TypeVar("T")


class WorkQueue(Generic[Item]):
    """Items keyed by name, `workers` threads, at most one item per name in progress."""

    def __init__(self, workers: int, run: Callable[[str, Item], str], name: str = "envctl-work") -> None:
        self._run = run
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        self._ticker = threading.Condition(lock)
        """Wakes the timer thread only (a put or a finished item never makes it scan the timers)."""
        self._next_due = float("inf")  # pragma: no mutate - the timer thread sets it at start
        self._waiting: dict[str, Item] = {}
        """The latest item per name, in the order names were first queued."""
        self._busy: set[str] = set()
        self._outcomes: dict[str, str] = {}
        self._closing = False  # pragma: no mutate - None (the mutant) is as false: equivalent
        self._timers: dict[str, tuple[float, Item]] = {}
        """Per name: (monotonic due time, item)."""
        self._slots = threading.BoundedSemaphore(workers)
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True)
            for index in range(workers)
        ]
        self._threads.append(threading.Thread(target=self._tick, name=f"{name}.timers", daemon=True))
        for thread in self._threads:
            thread.start()

    def put_after(self, name: str, item: Item, delay: float) -> None:
        """Queue `item` for `name` in `delay` seconds; replaces the name's timer (one per name)."""
        with self._cond:
            if self._closing:
                return
            at = time.monotonic() + max(delay, 0.0)
            self._timers[name] = (at, item)
            # The timer thread sleeps until the soonest timer; only an earlier one needs it now.
            if at < self._next_due:  # pragma: no mutate - `<=` only wakes the thread once more
                self._ticker.notify()

    def timer(self, name: str) -> float | None:
        """Seconds until `name`'s timer is due, or None when it has none."""
        with self._cond:
            entry = self._timers.get(name)
            return None if entry is None else max(entry[0] - time.monotonic(), 0.0)

    def cancel(self, name: str) -> None:
        """Drop `name`'s timer, if any."""
        with self._cond:
            self._timers.pop(name, None)

    def run_now(self, name: str, work: Callable[[], T]) -> T | None:
        """Run `work` for `name` in the caller's thread, in a slot; None when `name` is busy."""
        with self._cond:
            if name in self._busy or self._closing:
                return None
            self._busy.add(name)
        try:
            with self._slots:
                return work()
        finally:
            with self._cond:
                self._busy.discard(name)
                self._cond.notify_all()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """One of the `workers` slots, for work that is no environment's run (a plan for people)."""
        with self._slots:
            yield

    def put(self, name: str, item: Item, merge: Callable[[Item, Item], Item] | None = None) -> None:
        """Queue `item` for `name`; it runs once `name` is not busy. An item already waiting is
        replaced, or, with `merge`, replaced by `merge(waiting, item)`."""
        with self._cond:
            if self._closing:
                return
            waiting = self._waiting.get(name)
            self._waiting[name] = item if waiting is None or merge is None else merge(waiting, item)
            self._outcomes.pop(name, None)
            self._cond.notify_all()

    def pending(self) -> set[str]:
        """Names waiting or in progress."""
        with self._cond:
            return set(self._waiting) | set(self._busy)

    def wait(self, names: Iterable[str], timeout: float | None = None) -> dict[str, str]:
        """Block until none of `names` waits or runs; their last outcomes."""
        wanted = set(names)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while wanted & (set(self._waiting) | self._busy):
                remaining = None if deadline is None else deadline - time.monotonic()
                # `< 0` (a mutant) differs only when exactly 0.0 s remain, which no clock shows.
                if remaining is not None and remaining <= 0:  # pragma: no mutate
                    break
                self._cond.wait(remaining)
            return {name: self._outcomes[name] for name in wanted if name in self._outcomes}

    def close(self, timeout: float | None = None) -> None:
        """Take no more items; drop those waiting; let running ones finish (up to `timeout`)."""
        with self._cond:
            self._closing = True
            dropped = list(self._waiting)
            self._waiting.clear()
            self._timers.clear()
            self._cond.notify_all()
            self._ticker.notify()
        if dropped:
            log.info("queued_work_dropped", envs=dropped, note="decided again at the next start")
        for thread in self._threads:
            thread.join(timeout)

    def _take(self) -> tuple[str, Item] | None:
        with self._cond:
            while True:
                if self._closing:
                    return None
                name = next((n for n in self._waiting if n not in self._busy), None)
                if name is not None:
                    self._busy.add(name)
                    return name, self._waiting.pop(name)
                self._cond.wait()

    def _tick(self) -> None:
        """Move due timers into the queue; sleep until the next one is due (or a timer changes)."""
        with self._cond:
            while not self._closing:
                now = time.monotonic()
                for name, (at, item) in list(self._timers.items()):
                    if at <= now:  # pragma: no mutate - `<` differs at exactly `now`, no clock shows
                        del self._timers[name]
                        # Work waiting for the name or running comes first: when it ends, the
                        # name's next timer is set from what it did.
                        if name not in self._waiting and name not in self._busy:
                            self._waiting[name] = item
                            self._cond.notify_all()
                soonest = min((at for at, _ in self._timers.values()), default=None)
                # Mutants here only wake the timer thread more often (every put), or later.
                self._next_due = float("inf") if soonest is None else soonest  # pragma: no mutate
                self._ticker.wait(None if soonest is None else max(soonest - now, 0.0))  # pragma: no mutate

    def _work(self) -> None:
        while (taken := self._take()) is not None:
            name, item = taken
            try:
                with self._slots:
                    outcome = self._run(name, item)
            except BaseException:  # the runner records failures; this is the last line of defence
                log.exception("work_crashed", env=name)
                outcome = "failed"
            with self._cond:
                self._busy.discard(name)
                self._outcomes[name] = outcome
                self._cond.notify_all()
