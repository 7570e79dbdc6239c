"""`envctl run`: passes on a schedule until a signal stops them, then a graceful shutdown.

On SIGTERM or SIGINT the scheduler stops taking new work, running Terraform
processes get SIGINT and a grace period to save state and release locks, and
the process exits; the next start resumes interrupted environments.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from controller.reconciler import Reconciler

log = structlog.get_logger("envctl.scheduler")


def on_shutdown_signal(stop: Callable[[], object]) -> None:
    """On SIGTERM or SIGINT, run `stop` (interrupt Terraform gracefully) without blocking the handler."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.warning("shutdown_requested", signal=signal.Signals(signum).name)
        threading.Thread(target=stop, name="envctl-shutdown", daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


class Daemon:
    """The poll job and the shutdown path."""

    def __init__(self, reconciler: Reconciler, poll_seconds: int) -> None:
        self.reconciler = reconciler
        self.poll_seconds = poll_seconds
        self.stopped = threading.Event()
        self.scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": poll_seconds}
        )

    def _poll(self) -> None:
        # A pass's failure is logged; the schedule goes on.
        try:
            self.reconciler.run_pass()
        except Exception:
            log.exception("pass_crashed")

    def request_pass(self) -> None:
        """Run a pass as soon as possible (a webhook or a CLI nudge); bursts coalesce."""
        self.scheduler.modify_job("poll", next_run_time=_now())

    def run(self) -> None:
        """Block until a signal; returns after the graceful shutdown."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.scheduler.add_job(
            self._poll, "interval", seconds=self.poll_seconds, id="poll", next_run_time=_now()
        )
        self.scheduler.start()
        log.info("daemon_started", poll_seconds=self.poll_seconds)
        self.stopped.wait()
        self.shutdown()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.warning("shutdown_requested", signal=signal.Signals(signum).name)
        self.stopped.set()

    def shutdown(self) -> None:
        self.scheduler.pause()
        interrupted = self.reconciler.stop()
        self.scheduler.shutdown(wait=True)
        log.info("daemon_stopped", interrupted=interrupted)


def _now() -> datetime:
    return datetime.now(UTC)
