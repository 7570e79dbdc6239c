"""WorkQueue: per-environment work, so no environment waits for another's slow apply.

A pass only decides; what it decides to run goes here, keyed by environment
name. `concurrency` workers take items; one environment is never worked on
twice at once; a decision for an environment that is busy or already waiting
replaces the waiting one (level-based: the latest desired state wins, so five
commits during an apply give one follow-up apply, with the last content).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger("envctl.queue")
Item = TypeVar("Item")


class WorkQueue(Generic[Item]):
    """Items keyed by name, `workers` threads, at most one item per name in progress."""

    def __init__(self, workers: int, run: Callable[[str, Item], str], name: str = "envctl-work") -> None:
        self._run = run
        self._cond = threading.Condition()
        self._waiting: dict[str, Item] = {}
        """The latest item per name, in the order names were first queued."""
        self._busy: set[str] = set()
        self._outcomes: dict[str, str] = {}
        self._closing = False  # pragma: no mutate - None (the mutant) is as false: equivalent
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True)
            for index in range(workers)
        ]
        for thread in self._threads:
            thread.start()

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
            self._cond.notify_all()
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

    def _work(self) -> None:
        while (taken := self._take()) is not None:
            name, item = taken
            try:
                outcome = self._run(name, item)
            except BaseException:  # the runner records failures; this is the last line of defence
                log.exception("work_crashed", env=name)
                outcome = "failed"
            with self._cond:
                self._busy.discard(name)
                self._outcomes[name] = outcome
                self._cond.notify_all()
