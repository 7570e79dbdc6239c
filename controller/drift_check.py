"""Drift check and repair of one applied environment (the pure report stays in drift.py).

A check plans with refresh in the directory of the last apply; a failed check is
not drift; drift is alerted on transitions (detected, changed, persists) and,
with `remediation: auto`, repaired by applying exactly the plan inspected.
"""

from __future__ import annotations

from typing import Any

import structlog

from controller import drift
from controller.alerts import Event
from controller.errors import EnvctlError, TerraformError
from controller.executor import APPLIED_MARKER, Executor, drift_cleared
from controller.terraform import PLAN_FILE
from controller.types import Environment, Phase, Reason, Record

log = structlog.get_logger("envctl.drift_check")


class DriftChecker:
    """Checks and repairs drift through the executor's slots, locks and failure recording."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.settings = executor.settings
        self.store = executor.store
        self.terraform = executor.terraform
        self.clock = executor.clock

    def check_drift(self, name: str, repair: bool | None = None) -> str:
        """Plan with refresh; record in sync, drifted (with a report) or failed; repair if asked.

        `repair`: None follows the environment's remediation (the daemon's own checks); False
        only reports (a check asked through the API); True repairs (`envctl drift NAME --repair`).
        Returns `in_sync`, `drifted`, `repaired`, `failed` or `skipped` (busy or not Ready).
        """
        lock = self.executor.busy[name]
        # Never while the environment is applying or destroying, never twice at once.
        if not lock.acquire(blocking=False):
            return "skipped"
        try:
            record = self.store.load(name)
            if record is None or record.phase is not Phase.READY or not record.spec:
                return "skipped"
            # Drift checks share the `concurrency` slots with applies and destroys.
            with self.executor.slots:
                if not self.executor.may_act():
                    return "skipped"
                try:
                    return self._check_drift(record, repair)
                finally:
                    # The inspected plan may hold sensitive values; it is not kept past its use.
                    (self.executor.workdir(name) / PLAN_FILE).unlink(missing_ok=True)
        finally:
            lock.release()

    def _check_drift(self, record: Record, repair: bool | None) -> str:
        env = Environment.from_spec(record.spec or {})
        now = self.clock()
        run_id = self.store.start_run(env.name, "drift_check", record.applied_revision)
        bound = log.bind(env=env.name, revision=record.applied_revision[:12], run_id=run_id)
        workdir = self.executor.workdir(env.name)
        try:
            # Reuse the working dir when it holds exactly what was applied; otherwise rebuild it.
            marker = workdir / APPLIED_MARKER
            if not marker.exists() or marker.read_text() != record.applied_digest:
                self.executor.prepare(env, fresh=True)
                marker.write_text(record.applied_digest)
            drifted = self.terraform.plan(workdir, env=env.name, run_id=run_id)
            entries = drift.report(self.terraform.show(workdir, env=env.name)) if drifted else []
        except EnvctlError as error:
            # A failed check is not drift: recorded, retried on schedule, nothing repaired.
            self.store.update(
                env.name,
                drift_status="CheckFailed",
                drift_checked_at=now,
                drift_failures=record.drift_failures + 1,
                message=f"drift check failed: {error}",
            )
            self.store.finish_run(run_id, "failed", str(error))
            bound.error("drift_check_failed", error=str(error))
            return "failed"
        if not drifted:
            return self._in_sync(record, run_id, now, bound)
        return self._drifted(env, record, entries=entries, run_id=run_id, now=now, bound=bound, repair=repair)

    def _in_sync(self, record: Record, run_id: int, now: float, bound: Any) -> str:
        was_drifted = record.drift_status == "Drifted"
        updated = self.store.update(
            record.name,
            **drift_cleared("InSync"),
            drift_checked_at=now,
            drift_failures=0,
            message=f"in sync at {record.applied_revision[:12]}",
        )
        self.store.finish_run(run_id, "in_sync")
        bound.info("drift_check_in_sync")
        if was_drifted:
            self.executor.alert(Event.DRIFT_RESOLVED, updated, "drift resolved outside envctl")
        return "in_sync"

    def _drifted(
        self,
        env: Environment,
        record: Record,
        *,
        entries: list[dict[str, Any]],
        run_id: int,
        now: float,
        bound: Any,
        repair: bool | None,
    ) -> str:
        fingerprint = drift.fingerprint(entries)
        summary = drift.summary(entries)
        realert = self.settings.alerts.realert_hours * 3600
        if record.drift_status != "Drifted":
            event: Event | None = Event.DRIFT_DETECTED
        elif record.drift_fingerprint != fingerprint:
            event = Event.DRIFT_CHANGED
        elif now - record.drift_alerted_at >= realert:
            event = Event.DRIFT_PERSISTS
        else:
            event = None
        updated = self.store.update(
            env.name,
            drift_status="Drifted",
            drift_report=entries,
            drift_fingerprint=fingerprint,
            drift_first_seen=record.drift_first_seen if record.drift_status == "Drifted" else now,
            drift_checked_at=now,
            drift_failures=0,
            drift_alerted_at=now if event else record.drift_alerted_at,
            message=f"drifted: {summary}",
        )
        self.store.finish_run(run_id, "drifted", summary)
        bound.warning(
            "drift_detected", resources=[e["address"] for e in entries], remediation=env.remediation_mode
        )
        if event is not None:
            self.executor.alert(event, updated, summary, report=entries, remediation=env.remediation_mode)
        if not (env.remediation_mode == "auto" if repair is None else repair):
            return "drifted"
        return self._repair(env, updated, summary, bound)

    def _repair(self, env: Environment, record: Record, summary: str, bound: Any) -> str:
        """Apply exactly the plan that was inspected; a failure is a failed apply."""
        run_id = self.store.start_run(env.name, "repair", record.applied_revision)
        try:
            self.terraform.apply(self.executor.workdir(env.name), env=env.name, run_id=run_id)
        except TerraformError as error:
            # A state Terraform could not upload is kept and pushed first, as after an apply.
            failure = self.executor.keep_errored_state(env.name, error)
            return self.executor.failed(env.name, run_id, "apply", failure, bound, before=record)
        except EnvctlError as error:
            return self.executor.failed(env.name, run_id, "apply", error, bound, before=record)
        updated = self.store.update(
            env.name,
            **drift_cleared("InSync"),
            reason=Reason.DRIFT_REPAIRED,
            message=f"drift repaired: {summary}",
        )
        self.store.finish_run(run_id, "succeeded", summary)
        bound.info("drift_repaired")
        self.executor.alert(
            Event.DRIFT_RESOLVED, updated, f"drift repaired by applying the inspected plan: {summary}"
        )
        return "repaired"
