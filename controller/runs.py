"""Apply, destroy, drift check and repair: each a short script of named steps returning an Outcome.

A run never writes the record. Its steps succeed or raise a classified error;
`failed` turns the error into the outcome (phase, reason, backoff). Drift
checks and repairs go through the same preflight as an apply: ownership, no
live Terraform, an unsaved errored state pushed, our own dead lock released.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controller import drift, steps
from controller.errors import (
    EnvctlError,
    Interrupted,
    PermanentError,
    QuotaExceeded,
    StalledError,
    StateLocked,
    TerraformError,
)
from controller.steps import Run
from controller.types import Outcome, Phase, Reason


def drift_cleared(status: str) -> dict[str, Any]:
    """Record fields of an environment with no drift (after a clean check, a repair, an apply)."""
    return {"drift_status": status, "drift_report": [], "drift_fingerprint": "", "drift_first_seen": 0.0}


def apply(run: Run, *, now: float, drift_every: float) -> Outcome:
    """Synth -> create hooks -> init -> plan -> apply that plan if it has changes -> persist."""
    before = run.before
    # Nothing runs over another repository's environment, an unsaved errored state or our own dead lock.
    steps.preflight(run)
    # Synthesize this environment at this revision; a first creation checks quotas and adopts leftovers.
    synthesized = steps.synth(run)
    if before is None or not before.applied_digest:
        steps.before_create(run, synthesized)
    steps.init(run)
    # Before anything can exist, the inventory names it (it outlives the status database).
    steps.name_in_inventory(run)
    changed = steps.releasing(run, lambda: plan_and_apply(run))
    # The configuration and its digest travel with the state: the destroy runs with exactly this.
    config_digest = steps.persist(run)
    reason = Reason.APPLIED if changed else Reason.UP_TO_DATE
    changes = {
        **_started(run),
        "phase": Phase.READY,
        "reason": reason,
        "outputs": steps.outputs(run),
        "message": f"applied at {run.revision.short}",
        "applied_digest": run.digest,
        "applied_kind": run.env.kind,
        "applied_revision": run.revision.sha,
        "applied_at": now,
        "config_digest": config_digest,
        "failures": 0,
        "next_attempt_at": 0.0,
        "drift_interval_seconds": drift_every,
        **drift_cleared("InSync" if before and before.drift_status else ""),
    }
    return Outcome("applied", changes, "succeeded", reason)


def plan_and_apply(run: Run) -> bool:
    """Plan; apply that very plan when it has changes. True when it had."""
    if not steps.plan(run):
        return False
    steps.apply_plan(run)
    return True


def destroy(run: Run, reason: str) -> Outcome:
    """Sweep run-time leftovers, terraform destroy with the saved configuration, delete the state."""
    parts, name = run.parts, run.env.name
    steps.preflight(run)
    hooks = None
    if parts.state.exists(name):
        hooks = steps.prepare_destroy(run)
        if hooks is not None:
            # Run-time leftovers (load balancers) would block the subnets and the VPC.
            parts.hooks.before_destroy(hooks)
        steps.releasing(run, lambda: steps.destroy(run))
    elif run.before is not None and run.before.applied_digest:
        # Applied, yet no state: the bucket or prefix changed, or someone deleted it. A
        # "successful" destroy now would leave every resource running, unseen.
        key = parts.settings.state.key(name)
        raise StalledError(
            Reason.STATE_MISSING,
            f"state object missing: s3://{parts.settings.state.bucket}/{key} does not exist, "
            "yet this environment was applied; was state.bucket or key_prefix changed? Restore "
            f"the state object, then `envctl destroy {name} --confirm`",
        )
    else:
        # Terraform never got to create anything (e.g. the stack never synthesized): nothing to destroy.
        run.log.info("destroy_nothing_to_destroy", key=parts.settings.state.key(name))
    parts.state.delete(name)
    if hooks is not None:
        steps.after_destroy(run, hooks)
    run.workspace.clear()
    changes = {
        **_started(run),
        "phase": Phase.DESTROYED,
        "reason": Reason.EXPIRED if reason == Reason.EXPIRED else Reason.DESTROYED,
        "message": f"destroyed ({reason})",
        # The spec it was destroyed for (a closed preview says `closed`; a removed file, its last).
        "spec": run.env.spec(),
        "applied_digest": "",
        "attempted_digest": "",
        "config_digest": "",
        "failures": 0,
        "next_attempt_at": 0.0,
        "destroy_confirmed": False,
        "drift_interval_seconds": 0.0,
        **drift_cleared(""),
    }
    return Outcome("destroyed", changes, "succeeded", reason)


def drift_check(run: Run, *, now: float, realert_seconds: float, repair: bool) -> Outcome:
    """Plan with refresh in the applied configuration; in sync, or drifted with a report."""
    record = run.before
    assert record is not None
    steps.preflight(run)
    # Reuse the workspace when it holds exactly what was applied; otherwise rebuild it.
    if run.workspace.applied() != record.applied_digest:
        steps.synth(run, fresh=True)
        steps.init(run)
        run.workspace.mark_applied(record.applied_digest)
    drifted = steps.releasing(run, lambda: steps.plan(run))
    if not drifted:
        run.workspace.drop_plan()
        run.log.info("drift_check_in_sync")
        changes = {
            **drift_cleared("InSync"),
            "drift_checked_at": now,
            "drift_failures": 0,
            "message": f"in sync at {record.applied_revision[:12]}",
        }
        return Outcome("in_sync", changes, "in_sync")
    entries = drift.report(run.parts.runner.show(run.workspace, **run.bind))
    fingerprint = drift.fingerprint(entries)
    summary = drift.summary(entries)
    again = record.drift_status == "Drifted"
    # Alerted when found or changed, and again once `realert_hours` have passed.
    due = (
        not again
        or record.drift_fingerprint != fingerprint
        or now - record.drift_alerted_at >= realert_seconds
    )
    changes = {
        "drift_status": "Drifted",
        "drift_report": entries,
        "drift_fingerprint": fingerprint,
        "drift_first_seen": record.drift_first_seen if again else now,
        "drift_checked_at": now,
        "drift_failures": 0,
        "drift_alerted_at": now if due else record.drift_alerted_at,
        "message": f"drifted: {summary}",
    }
    run.log.warning(
        "drift_detected", resources=[e["address"] for e in entries], remediation=run.env.remediation_mode
    )
    if not repair:
        run.workspace.drop_plan()
    return Outcome("drifted", changes, "drifted", summary, repair=repair)


def repair(run: Run, *, now: float) -> Outcome:
    """Apply exactly the plan the drift check inspected (left in the workspace); a failure is a
    failed apply."""
    record = run.before
    assert record is not None
    steps.releasing(run, lambda: steps.apply_plan(run))
    run.workspace.drop_plan()
    summary = drift.summary(record.drift_report)
    run.log.info("drift_repaired")
    changes = {
        **drift_cleared("InSync"),
        "reason": Reason.DRIFT_REPAIRED,
        "message": f"drift repaired: {summary}",
        "applied_at": now,
    }
    return Outcome("repaired", changes, "succeeded", summary)


def failed(run: Run, error: EnvctlError, *, now: float, backoff: Callable[[int], float]) -> Outcome:
    """A failure with its reason and the next attempt's time (a new episode alerts, in transitions)."""
    action = "destroy" if run.action == "destroy" else "apply"
    if isinstance(error, TerraformError):
        # A state Terraform could not upload is kept and pushed first, before any other run.
        error = steps.keep_errored_state(run, error)
    failures = (run.before.failures if run.before else 0) + 1
    phase = Phase.FAILED
    if isinstance(error, Interrupted):
        reason, next_at = Reason.INTERRUPTED, 0.0
    elif isinstance(error, StalledError | PermanentError):
        # Retrying cannot help: a person acts (a new commit, a confirmation, a restored object).
        phase, next_at = Phase.STALLED, 0.0
        reason = Reason(error.reason) if isinstance(error, StalledError) else Reason.STACK_REJECTED
        if reason is Reason.STATE_NOT_PERSISTED:
            # The saved state is pushed as soon as the store answers again: retried with backoff.
            next_at = now + backoff(failures)
    else:
        reason = (
            Reason.LOCKED
            if isinstance(error, StateLocked)
            else Reason.QUOTA_EXCEEDED
            if isinstance(error, QuotaExceeded)
            else (Reason.APPLY_FAILED if action == "apply" else Reason.DESTROY_FAILED)
        )
        next_at = now + backoff(failures)
    changes = {
        **(_started(run) if run.action in ("apply", "destroy") else {}),
        "phase": phase,
        "reason": reason,
        "message": str(error),
        "failures": failures,
        "next_attempt_at": next_at,
        "stalled_action": action if phase is Phase.STALLED else "",
    }
    run.log.error(
        f"{action}_failed",
        reason=reason,
        error=str(error),
        failures=failures,
        retry_in=round(max(next_at - now, 0), 1),
        terraform=isinstance(error, TerraformError),
    )
    outcome = "interrupted" if reason is Reason.INTERRUPTED else "failed"
    return Outcome("failed", changes, outcome, str(error))


def check_failed(run: Run, error: EnvctlError, *, now: float) -> Outcome:
    """A failed drift check is not drift: recorded, retried at its interval, nothing repaired."""
    record = run.before
    failures = (record.drift_failures if record else 0) + 1
    run.log.error("drift_check_failed", error=str(error))
    changes = {
        "drift_status": "CheckFailed",
        "drift_checked_at": now,
        "drift_failures": failures,
        "message": f"drift check failed: {error}",
    }
    return Outcome("failed", changes, "failed", str(error))


def crashed(run: Run, error: Exception, *, now: float, backoff: Callable[[int], float]) -> Outcome:
    """An unexpected exception: a failure with backoff, recorded on this environment."""
    failures = (run.before.failures if run.before else 0) + 1
    destroying = run.action == "destroy"
    changes = {
        **(_started(run) if run.action in ("apply", "destroy") else {}),
        "phase": Phase.FAILED,
        "reason": Reason.DESTROY_FAILED if destroying else Reason.APPLY_FAILED,
        "message": f"unexpected error (see the log for its traceback): {error!r}",
        "failures": failures,
        "next_attempt_at": now + backoff(failures),
    }
    return Outcome("failed", changes, "failed", f"unexpected error: {error!r}")


def released(run: Run) -> dict[str, Any]:
    """The record fields naming the last lock released during `run` (alerted by transitions)."""
    if not run.released:
        return {}
    lock_id, message = run.released[-1]
    return {"lock_released": message, "lock_released_id": lock_id}


def _started(run: Run) -> dict[str, Any]:
    """What an apply or destroy records about what it ran, whatever its outcome."""
    if run.action == "destroy":
        return {"revision": run.revision.sha}
    return {
        "kind": run.env.kind,
        "revision": run.revision.sha,
        "spec": run.env.spec(),
        "attempted_digest": run.digest,
        # The file is back (or changed): a confirmation given for its destroy is void.
        "destroy_confirmed": False,
    }
