"""The work queue: one item per name at a time, the latest decision wins, at most N at once."""

from __future__ import annotations

import threading

import pytest

from controller.workqueue import WorkQueue


class Gate:
    """Runs items, each blocked until released; records what ran, in order, and what overlapped."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[tuple[str, str]] = []
        self.running: set[str] = set()
        self.most = 0
        self.overlaps: list[str] = []
        self.release: dict[str, threading.Event] = {}
        self.entered = threading.Condition(self.lock)

    def run(self, name: str, item: str) -> str:
        with self.lock:
            if name in self.running:
                self.overlaps.append(name)
            self.running.add(name)
            self.most = max(self.most, len(self.running))
            self.started.append((name, item))
            gate = self.release.setdefault(item, threading.Event())
            self.entered.notify_all()
        gate.wait(timeout=30)
        with self.lock:
            self.running.discard(name)
        if item.startswith("boom"):
            raise RuntimeError(item)
        return f"done {item}"

    def wait_started(self, count: int) -> None:
        with self.lock:
            assert self.entered.wait_for(lambda: len(self.started) >= count, timeout=30), self.started

    def open(self, item: str) -> None:
        with self.lock:
            self.release.setdefault(item, threading.Event()).set()


@pytest.fixture
def gate():
    return Gate()


def test_one_name_is_never_worked_on_twice_at_once_and_the_last_decision_wins(gate):
    """Three decisions for a while `a1` runs: one follow-up, with the last of them."""
    queue: WorkQueue[str] = WorkQueue(4, gate.run)
    queue.put("a", "a1")
    gate.wait_started(1)
    for item in ("a2", "a3", "a4"):
        queue.put("a", item)
    assert queue.pending() == {"a"}
    gate.open("a1")
    gate.wait_started(2)
    gate.open("a4")
    assert queue.wait(["a"], timeout=30) == {"a": "done a4"}
    assert gate.started == [("a", "a1"), ("a", "a4")]
    assert gate.overlaps == []
    queue.close(timeout=5)


def test_merge_decides_what_replaces_a_waiting_item(gate):
    """With `merge`, a waiting item can be kept over a new one."""
    queue: WorkQueue[str] = WorkQueue(1, gate.run)
    queue.put("a", "a1")
    gate.wait_started(1)
    queue.put("a", "keep")
    queue.put("a", "drop", merge=lambda waiting, new: waiting)
    gate.open("a1")
    gate.open("keep")
    assert queue.wait(["a"], timeout=30) == {"a": "done keep"}
    assert [item for _, item in gate.started] == ["a1", "keep"]
    queue.close(timeout=5)


def test_at_most_workers_run_at_once_and_others_wait_their_turn(gate):
    """Two workers, three names: two run, the third starts only when one ends."""
    queue: WorkQueue[str] = WorkQueue(2, gate.run)
    for name in ("a", "b", "c"):
        queue.put(name, f"{name}1")
    gate.wait_started(2)
    assert {name for name, _ in gate.started} == {"a", "b"}
    gate.open("a1")
    gate.wait_started(3)
    assert gate.started[2] == ("c", "c1")
    gate.open("b1")
    gate.open("c1")
    assert queue.wait(["a", "b", "c"], timeout=30) == {"a": "done a1", "b": "done b1", "c": "done c1"}
    assert gate.most == 2
    queue.close(timeout=5)


def test_a_crash_is_an_outcome_and_the_worker_goes_on(gate):
    """An exception out of a run is recorded as `failed`; the next item runs."""
    queue: WorkQueue[str] = WorkQueue(1, gate.run)
    gate.open("boom1")
    gate.open("b1")
    queue.put("a", "boom1")
    queue.put("b", "b1")
    assert queue.wait(["a", "b"], timeout=30) == {"a": "failed", "b": "done b1"}
    queue.close(timeout=5)


def test_close_drops_waiting_items_and_refuses_new_ones(gate):
    """Closing lets the running item finish, drops what waits, and takes nothing more."""
    queue: WorkQueue[str] = WorkQueue(1, gate.run)
    queue.put("a", "a1")
    gate.wait_started(1)
    queue.put("b", "b1")
    closer = threading.Thread(target=queue.close, kwargs={"timeout": 30})
    closer.start()
    queue.put("c", "c1")
    gate.open("a1")
    closer.join(timeout=30)
    assert gate.started == [("a", "a1")]
    assert queue.pending() == set()


def test_a_new_decision_clears_the_last_outcome_until_it_has_run(gate):
    """`wait` reports the outcome of the latest item, never a stale one."""
    queue: WorkQueue[str] = WorkQueue(1, gate.run)
    gate.open("a1")
    queue.put("a", "a1")
    assert queue.wait(["a"], timeout=30) == {"a": "done a1"}
    queue.put("a", "a2")
    assert queue.wait(["a"], timeout=0.2) == {}
    gate.open("a2")
    assert queue.wait(["a"], timeout=30) == {"a": "done a2"}
    queue.close(timeout=5)


def test_workers_are_named_daemon_threads(gate):
    """Each worker is a daemon thread named after the queue: a hung run never blocks exit."""
    queue: WorkQueue[str] = WorkQueue(2, gate.run, name="test-queue")
    workers = [t for t in threading.enumerate() if t.name.startswith("test-queue-")]
    assert sorted(t.name for t in workers) == ["test-queue-0", "test-queue-1"]
    assert all(t.daemon for t in workers)
    queue.close(timeout=5)


def test_pending_is_what_waits_and_what_runs(gate):
    """A running item and a waiting one are both pending; merge sees the new item."""
    queue: WorkQueue[str] = WorkQueue(1, gate.run)
    queue.put("a", "a1")
    gate.wait_started(1)
    queue.put("b", "b1")
    assert queue.pending() == {"a", "b"}
    queue.put("b", "b2", merge=lambda waiting, new: f"{waiting}+{new}")
    gate.open("a1")
    gate.open("b1+b2")
    assert queue.wait(["a", "b"]) == {"a": "done a1", "b": "done b1+b2"}
    queue.close(timeout=5)


def test_wait_returns_an_outcome_that_comes_within_its_timeout(gate):
    """Waiting a second for an item released a moment later gets its outcome, not nothing."""
    queue: WorkQueue[str] = WorkQueue(1, gate.run)
    queue.put("a", "a1")
    gate.wait_started(1)
    threading.Timer(0.05, gate.open, args=("a1",)).start()
    assert queue.wait(["a"], timeout=1.0) == {"a": "done a1"}
    queue.close(timeout=5)


def test_close_gives_up_on_a_stuck_run_after_its_timeout_and_says_what_it_dropped(gate):
    """A run that does not end does not hold close() past its timeout; dropped items are logged."""
    import structlog

    queue: WorkQueue[str] = WorkQueue(1, gate.run)
    queue.put("a", "stuck")
    gate.wait_started(1)
    queue.put("b", "b1")
    with structlog.testing.capture_logs() as logs:
        queue.close(timeout=0.1)
    assert [(e["event"], e["envs"], e["note"]) for e in logs] == [
        ("queued_work_dropped", ["b"], "decided again at the next start")
    ]
    gate.open("stuck")


def test_a_crash_is_logged_with_the_environment(gate):
    """`work_crashed` names the environment whose run raised, with the traceback."""
    import structlog

    queue: WorkQueue[str] = WorkQueue(1, gate.run)
    gate.open("boom2")
    with structlog.testing.capture_logs() as logs:
        queue.put("a", "boom2")
        queue.wait(["a"], timeout=30)
    assert [(e["event"], e["env"], e.get("exc_info")) for e in logs] == [("work_crashed", "a", True)]
    queue.close(timeout=5)


def test_the_default_name_of_the_workers_is_envctl_work(gate):
    """Without a name, workers are `envctl-work-N` (what a thread dump shows)."""
    queue: WorkQueue[str] = WorkQueue(1, gate.run)
    assert "envctl-work-0" in {t.name for t in threading.enumerate()}
    queue.close(timeout=5)


# --- timers, work from outside the workers, slots ---------------------------------------------------


def test_a_timer_queues_its_item_when_due_and_one_timer_per_name_is_kept(gate):
    """put_after: the item runs once its delay has passed; a second timer for the name replaces the
    first (the later computation knows best), and a cancelled one never runs."""
    queue: WorkQueue[str] = WorkQueue(2, gate.run)
    gate.open("late")
    gate.open("b1")
    queue.put_after("a", "early", 3600)
    queue.put_after("a", "late", 0.05)
    queue.put_after("b", "b1", 3600)
    queue.cancel("b")
    gate.wait_started(1)
    assert gate.started == [("a", "late")]
    assert queue.timer("a") is None and queue.timer("b") is None
    queue.close()


def test_a_due_timer_never_displaces_waiting_work(gate):
    """Work already waiting for a name when its timer comes due runs instead of the timer's item."""
    queue: WorkQueue[str] = WorkQueue(1, gate.run)
    queue.put("x", "x1")
    gate.wait_started(1)
    queue.put("a", "apply")
    queue.put_after("a", "visit", 0.0)
    # The timer has fired (it is gone) while the one worker is still busy with x1.
    while queue.timer("a") is not None:
        threading.Event().wait(0.01)
    gate.open("x1")
    gate.open("apply")
    gate.wait_started(2)
    queue.wait(["a"])
    assert gate.started == [("x", "x1"), ("a", "apply")]
    queue.close()


def test_run_now_is_refused_while_the_name_is_busy_and_shares_the_slots(gate):
    """run_now runs in the caller's thread only when the name is idle, and takes one of the slots:
    with the one slot held by a plan, a worker's item waits for it."""
    queue: WorkQueue[str] = WorkQueue(1, gate.run)
    queue.put("a", "a1")
    gate.wait_started(1)
    assert queue.run_now("a", lambda: "checked") is None
    gate.open("a1")
    queue.wait(["a"])
    assert queue.run_now("a", lambda: "checked") == "checked"
    order: list[str] = []
    with queue.slot():
        queue.put("b", "b1")
        gate.open("b1")
        # The worker took b1 but cannot start it while the slot is held.
        threading.Event().wait(0.2)
        assert ("b", "b1") not in gate.started
        order.append("slot released")
    queue.wait(["b"])
    order.append("b1 done")
    assert order == ["slot released", "b1 done"]
    assert gate.started[-1] == ("b", "b1")
    queue.close()


def test_a_timer_due_while_its_name_runs_is_dropped(gate):
    """A visit that comes due during a run of the same name is not queued behind it: whoever ran
    sets the next timer, and the run's outcome is the one a caller waiting for it gets."""
    queue: WorkQueue[str] = WorkQueue(1, gate.run)
    queue.put("a", "apply")
    gate.wait_started(1)
    queue.put_after("a", "visit", 0.0)
    while queue.timer("a") is not None:
        threading.Event().wait(0.01)
    gate.open("apply")
    assert queue.wait(["a"]) == {"a": "done apply"}
    assert gate.started == [("a", "apply")]
    queue.close()


def test_close_drops_the_timers(gate):
    """After close no timer fires: the next start sets them again from the records."""
    queue: WorkQueue[str] = WorkQueue(1, gate.run)
    queue.put_after("a", "a1", 0.2)
    queue.close()
    assert queue.timer("a") is None
    threading.Event().wait(0.3)
    assert gate.started == []


def test_the_timer_thread_is_a_named_daemon_thread(gate):
    """The timer thread is named after the queue and never blocks exit."""
    queue: WorkQueue[str] = WorkQueue(1, gate.run, name="timed-queue")
    (ticker,) = [t for t in threading.enumerate() if t.name == "timed-queue.timers"]
    assert ticker.daemon
    queue.close()


def test_a_timer_waits_its_delay_and_says_how_long_is_left(gate):
    """A timer an hour away is an hour away (nothing runs meanwhile); a short one says at most its
    delay; cancelling a name without a timer is fine."""
    queue: WorkQueue[str] = WorkQueue(1, gate.run)
    queue.put_after("a", "a-later", 3600)
    left = queue.timer("a")
    assert left is not None and 3590 < left <= 3600
    queue.put_after("b", "b-soon", 0.3)
    soon = queue.timer("b")
    assert soon is None or soon <= 0.3
    queue.put_after("c", "c-now", 0.0)
    now = queue.timer("c")
    assert now is None or now == 0.0
    gate.open("b-soon")
    gate.open("c-now")
    gate.wait_started(2)
    queue.wait(["b", "c"])
    assert ("a", "a-later") not in gate.started
    queue.cancel("nothing-here")
    queue.close()


def test_run_now_holds_its_name_while_it_runs(gate):
    """While run_now works on a name, an item queued for it waits until run_now returns."""
    queue: WorkQueue[str] = WorkQueue(2, gate.run)
    inside = threading.Event()
    leave = threading.Event()

    def held() -> str:
        inside.set()
        leave.wait(timeout=30)
        return "held"

    result: list[str | None] = []
    caller = threading.Thread(target=lambda: result.append(queue.run_now("a", held)))
    caller.start()
    assert inside.wait(timeout=30)
    queue.put("a", "a1")
    gate.open("a1")
    threading.Event().wait(0.2)
    assert gate.started == []
    leave.set()
    caller.join(timeout=30)
    queue.wait(["a"])
    assert result == ["held"] and gate.started == [("a", "a1")]
    queue.close()
