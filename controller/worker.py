"""The queue worker's side of one item: run it, write its outcome once, and say what it means.

For every run: the run row is written when it starts, then the run's outcome
(record patch and the row's result) in one transaction, then one call of
`status.transitions(before, after)`, whose alerts and pull-request feedback
are sent from here and nowhere else. An exception is recorded on the
environment, never raised out of the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog

from controller import runs, status
from controller.alerts import Alert, Alerts
from controller.backoff import delay
from controller.errors import EnvctlError, StalledError
from controller.feedback import Feedback
from controller.planner import Action, Kind, digest
from controller.settings import Settings
from controller.source import Revision
from controller.status import Effects, Notice
from controller.steps import Parts, Run
from controller.types import Environment, Outcome, Phase, Reason, Record

log = structlog.get_logger("envctl.worker")


@dataclass(frozen=True)
class Work:
    """A queued item: an apply or destroy decided at `revision`, or (no action) a visit: a drift
    check when one is due, else the environment decided again (a backoff ended, an expiry)."""

    action: Action | None = None
    revision: Revision | None = None
    check: bool = False
    """A drift check asked for now (not only when due)."""


def keep_terraform_work(waiting: Work, new: Work) -> Work:
    """A drift check or a visit never displaces a waiting apply or destroy (which makes it moot)."""
    return waiting if new.action is None and waiting.action is not None else new


def backoff(settings: Settings, failures: int, jitter: float) -> float:
    """Jittered exponential backoff: base * 2^(n-1), capped, times 0.5..1 (`jitter` in 0..1)."""
    return delay(failures, settings.retry.base_seconds, settings.retry.max_seconds, jitter)


class Worker:
    """Runs applies, destroys, drift checks and repairs; writes each outcome once."""

    def __init__(
        self,
        parts: Parts,
        *,
        alerts: Alerts,
        feedback: Feedback,
        clock: Callable[[], float],
        jitter: Callable[[], float],
    ) -> None:
        self.parts = parts
        self.settings = parts.settings
        self.store = parts.store
        self.alerts = alerts
        self.feedback = feedback
        self.clock = clock
        self.jitter = jitter
        self.may_act: Callable[[], bool] = lambda: True
        """Whether this process may start Terraform now (the daemon: while it holds the lease)."""

    # --- one write, one decision ----------------------------------------------------------------

    def record(
        self, name: str, changes: dict[str, Any], action: str, *, run_id: int | None = None, **row: str
    ) -> tuple[Record, list[Notice]]:
        """Write `changes` (and finish run `run_id`) in one transaction; send what it means.

        Returns the record and the notices left to the caller: holds of a whole batch, which the
        pass sends as one alert.
        """
        before, after = self.store.commit(name, changes, run_id=run_id, **row)
        every = before.drift_interval_seconds if before is not None else 0.0
        if after.drift_interval_seconds != every:
            # Timers follow from the record (controller.timers); the interval in effect is logged.
            if after.drift_interval_seconds:
                log.info("drift_check_scheduled", env=name, every_seconds=after.drift_interval_seconds)
            else:
                log.info("drift_check_unscheduled", env=name)
        effects = status.transitions(before, after, action, now=self.clock())
        return after, self.emit(after, effects)

    def decided(self, action: Action, revision: Revision) -> list[Notice]:
        """A decision that needs no process, written like a run's outcome; returns batch holds."""
        changes: dict[str, Any] = {
            "phase": action.phase,
            "reason": action.reason,
            "message": action.message,
            "revision": revision.sha,
        }
        if action.phase is Phase.DESTROYED:
            changes.update(applied_digest="", attempted_digest="", failures=0, next_attempt_at=0.0)
        record, held = self.record(action.name, changes, "record")
        level = log.warning if action.phase in (Phase.ORPHANED, Phase.INVALID) else log.info
        if action.phase is Phase.DESTROY_HELD:
            level = log.error
        level(
            "environment_recorded",
            env=action.name,
            phase=str(record.phase),
            reason=action.reason,
            message=action.message,
            revision=revision.short,
        )
        return held

    def emit(self, record: Record, effects: Effects) -> list[Notice]:
        kept = []
        for notice in effects.alerts:
            if notice.details.get("reason") in status.BATCH_HOLDS:
                kept.append(notice)
                continue
            self.alert(notice, record)
        for state, description in effects.feedback:
            self.feedback.notify(record, state, description)
        return kept

    def alert_batch(self, held: list[tuple[str, Notice]]) -> None:
        """One alert for a held batch, naming every environment, not one alert each."""
        names = [name for name, _ in held]
        notice = held[0][1]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        details = {"environments": names, "reason": notice.details.get("reason", "")}
        self.alerts.emit(Alert(notice.event, shown, "preview", notice.message, details, at=self.clock()))

    def alert(self, notice: Notice, record: Record) -> None:
        alert = Alert(notice.event, record.name, record.kind, notice.message, notice.details, at=self.clock())
        self.alerts.emit(alert)

    def backoff(self, failures: int) -> float:
        return backoff(self.settings, failures, self.jitter())

    def recover(self) -> None:
        """Runs a crash or kill left open are recorded as interrupted; their environments resume."""
        for run in self.store.unfinished_runs():
            changes: dict[str, Any] = {}
            if run.action in ("apply", "destroy"):
                changes = {
                    "phase": Phase.FAILED,
                    "reason": Reason.INTERRUPTED,
                    "message": f"{run.action} interrupted; resuming",
                    "next_attempt_at": 0.0,
                    "revision": run.revision,
                }
                if run.digest:
                    changes.update(attempted_digest=run.digest, kind=run.kind)
            self.record(
                run.name,
                changes,
                "recover",
                run_id=run.id,
                outcome="interrupted",
                message="the controller stopped during this run",
            )

    # --- applies and destroys -------------------------------------------------------------------

    def execute(self, action: Action, revision: Revision) -> str:
        """Apply or destroy one environment; the outcome is recorded, never raised."""
        assert action.environment is not None
        # Checked right before Terraform starts: a leader whose lease renewals stopped working may
        # have queued this while it still led.
        if not self.may_act():
            log.warning("work_not_started", env=action.name, reason="not the leader")
            return "skipped"
        env = action.environment
        verb = "apply" if action.kind is Kind.APPLY else "destroy"
        wanted = action.digest or digest(env, self.parts.stack_version) if verb == "apply" else ""
        run = self._start(env, revision, verb, wanted)
        if verb == "apply":
            return self._finish(run, lambda: runs.apply(run, now=self.clock(), drift_every=self.every(env)))
        reason = action.reason or Reason.FILE_REMOVED
        return self._finish(run, lambda: runs.destroy(run, reason))

    def every(self, env: Environment) -> float:
        """The drift check interval of `env` in seconds (its file's, else the settings')."""
        minutes = env.drift_interval_minutes or self.settings.drift.interval_minutes
        return float(minutes * 60)

    def _start(self, env: Environment, revision: Revision, action: str, wanted: str = "") -> Run:
        before = self.store.stored(env.name)
        run_id = self.store.start_run(
            env.name, action, revision.sha, digest=wanted, kind=env.kind, spec=env.spec() if wanted else None
        )
        run = Run(self.parts, env, revision, action, run_id, before, digest=wanted)
        shown = replace(before or Record(name=env.name), kind=env.kind, spec=env.spec())
        for state, description in status.started(action):
            self.feedback.notify(shown, state, description)
        run.log.info(f"{action}_started")
        return run

    def _finish(self, run: Run, script: Callable[[], Outcome]) -> str:
        """Run `script`; whatever happens, write its outcome once and send what it means."""
        try:
            outcome = script()
        except EnvctlError as error:
            outcome = runs.failed(run, error, now=self.clock(), backoff=self.backoff)
        except Exception as error:  # a bug, OSError, sqlite: recorded on this environment, never raised
            run.log.exception("work_crashed", action=run.action)
            if run.action == "drift_check":
                outcome = runs.check_failed(
                    run, EnvctlError(f"unexpected error: {error!r}"), now=self.clock()
                )
            else:
                outcome = runs.crashed(run, error, now=self.clock(), backoff=self.backoff)
        finally:
            # The saved plan may hold sensitive values; it is not kept past its use.
            if run.action != "drift_check":
                run.workspace.drop_plan()
        changes = {**outcome.changes, **runs.released(run)}
        action = run.action
        self.record(
            run.env.name, changes, action, run_id=run.id, outcome=outcome.run_outcome, message=outcome.message
        )
        if outcome.result in ("applied", "destroyed", "repaired"):
            run.log.info(f"{action}_succeeded")
        return outcome.result

    # --- drift ----------------------------------------------------------------------------------

    def check_drift(self, name: str, repair: bool | None = None) -> str:
        """Plan with refresh; record in sync, drifted (with a report) or failed; repair if asked.

        `repair`: None follows the environment's remediation (the daemon's own checks); False
        only reports (a check asked through the API); True repairs (`envctl drift NAME --repair`).
        Returns `in_sync`, `drifted`, `repaired`, `failed` or `skipped` (not Ready).
        """
        record = self.store.stored(name)
        if record is None or record.phase is not Phase.READY or not record.spec or not self.may_act():
            return "skipped"
        env = Environment.from_spec(record.spec)
        wanted = env.remediation_mode == "auto" if repair is None else repair
        revision = Revision(record.applied_revision, 0.0)
        run = self._start(env, revision, "drift_check")
        realert = self.settings.alerts.realert_hours * 3600
        drifted: list[Outcome] = []

        def check() -> Outcome:
            try:
                outcome = runs.drift_check(run, now=self.clock(), realert_seconds=realert, repair=wanted)
            except StalledError as error:
                # The preflight found what stalls any run (another repository owns it): stalled.
                outcome = runs.failed(run, error, now=self.clock(), backoff=self.backoff)
            except EnvctlError as error:
                run.workspace.drop_plan()
                outcome = runs.check_failed(run, error, now=self.clock())
            drifted.append(outcome)
            return outcome

        result = self._finish(run, check)
        if not (drifted and drifted[0].repair):
            return result
        # Apply exactly the plan that was inspected, in the same workspace, as a run of its own.
        repair_run = self._start(env, revision, "repair")
        return self._finish(repair_run, lambda: runs.repair(repair_run, now=self.clock()))
