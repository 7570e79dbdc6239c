"""`envctl run`: passes on a schedule until a signal stops them, then a graceful shutdown.

APScheduler is the daemon's clock for the poll only: backoff retries, expiries
and drift checks are timers in the work queue (see controller.timers).

On SIGTERM or SIGINT the scheduler stops taking new work, running Terraform
processes get SIGINT and a grace period to save state and release locks, and
the process exits; the next start resumes interrupted environments.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Protocol

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from controller.leader import Lease
from controller.reconciler import Reconciler

log = structlog.get_logger("envctl.scheduler")
REFRESH_DEBOUNCE_SECONDS = 1.0
SIGNAL_POLL_SECONDS = 0.2


class Service(Protocol):
    """What the daemon starts and stops beside itself (the HTTP API)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def on_shutdown_signal(stop: Callable[[], object]) -> None:
    """On SIGTERM or SIGINT, run `stop` (interrupt Terraform gracefully) on a thread of its own.

    The handler only records the signal: taking a lock inside a signal handler (a log line, an
    Event, starting a thread) deadlocks when the signal lands while the main thread holds it.
    """
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    def watch() -> None:
        while not received:
            time.sleep(SIGNAL_POLL_SECONDS)
        log.warning("shutdown_requested", signal=signal.Signals(received[0]).name)
        stop()

    threading.Thread(target=watch, name="envctl-signals", daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


class Daemon:
    """The poll job, webhook-requested passes and the shutdown path."""

    def __init__(self, reconciler: Reconciler, poll_seconds: int, lease: Lease | None = None) -> None:
        self.reconciler = reconciler
        self.poll_seconds = poll_seconds
        self.lease = lease
        reconciler.worker.may_act = lambda: self.leading
        self.exit_code = 0
        self.stopped = threading.Event()
        self._signal: int | None = None
        self._refresh = threading.Event()
        self._refresher_thread = threading.Thread(target=self._refresher, name="envctl-refresh", daemon=True)
        self.scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": poll_seconds}
        )

    @property
    def leading(self) -> bool:
        return self.lease is None or self.lease.is_leader

    def role(self) -> str:
        return "leader" if self.leading else "follower"

    def _poll(self) -> None:
        # Only the leader fetches, reconciles, checks drift and sends alerts.
        if not self.leading:
            return
        # A pass's failure is logged; the schedule goes on.
        try:
            # Decide and queue; the applies run on the queue's workers, so a pass ends at once.
            self.reconciler.run_pass(wait=False)
        except Exception:
            log.exception("pass_crashed")

    def request_pass(self) -> None:
        """Run a pass as soon as possible (a webhook); a burst while one runs makes one more pass."""
        self._refresh.set()

    def _refresher(self) -> None:
        while not self.stopped.is_set():
            if self._refresh.wait(timeout=1.0) and not self.stopped.is_set():
                # Let a burst of deliveries land, then make one pass for all of them.
                self.stopped.wait(REFRESH_DEBOUNCE_SECONDS)
                self._refresh.clear()
                self._poll()

    def _on_leadership(self, leader: bool) -> None:
        if leader:
            self.request_pass()
            return
        # Lost the lease while acting: stop at once; the orchestrator restarts us as a follower.
        log.error("leadership_lost", holder=self.lease.identity if self.lease else "")
        self.exit_code = 1
        self.stopped.set()

    def run(self, api: Service | None = None) -> int:
        """Block until a signal; returns the exit code after the graceful shutdown."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.start(api)
        while self._signal is None and not self.stopped.is_set():
            self.stopped.wait(SIGNAL_POLL_SECONDS)
        if self._signal is not None:
            log.warning("shutdown_requested", signal=signal.Signals(self._signal).name)
        if api is not None:
            api.stop()
        self.shutdown()
        return self.exit_code

    def start(self, api: Service | None = None) -> None:
        """Start the schedule, the refresher, the lease and the API; returns at once."""
        # Every replica runs the poll job from the start; only the leader's does anything. (With
        # next_run_time=None, APScheduler 3 would add the job paused: a leader that never polls.)
        self.scheduler.add_job(
            self._poll, "interval", seconds=self.poll_seconds, id="poll", next_run_time=_now()
        )
        self.scheduler.start()
        self._refresher_thread.start()
        if self.lease is not None:
            self.lease.on_change = self._on_leadership
            self.lease.start()
        if api is not None:
            api.start()
        self.reconciler.feedback.start()
        log.info("daemon_started", poll_seconds=self.poll_seconds, leader_election=self.lease is not None)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only a flag: no lock may be taken in a signal handler (see on_shutdown_signal).
        self._signal = signum

    def shutdown(self) -> None:
        """Stop taking work, interrupt Terraform, wait for running jobs, release the lease."""
        self.stopped.set()
        self.scheduler.pause()
        interrupted = self.reconciler.stop()
        self.scheduler.shutdown(wait=True)
        if self._refresher_thread.is_alive():
            self._refresher_thread.join()
        if self.lease is not None:
            self.lease.stop()
        self.reconciler.alerts.close()
        # What is not delivered stays in the outbox for the next start.
        self.reconciler.feedback.stop()
        log.info("daemon_stopped", interrupted=interrupted)


def _now() -> datetime:
    return datetime.now(UTC)
