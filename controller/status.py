"""What a change of one record means to people: alerts and pull-request feedback, decided here only.

`transitions(before, after, action)` is a pure function of the record as last
written before a run (or a pass's decision, an expiry warning, an operator's
command) and as written after it. Alerts fire on transitions, not on every
pass or retry: once when an environment starts failing (or stalls), never
again while it retries the same way, once when it recovers; drift when it is
found, changes, persists past `realert_hours` (the run stamps
`drift_alerted_at`) or is resolved. Feedback: what a preview's pull request
shows after an apply or destroy. Tested as a table covering every event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller import drift
from controller.alerts import Event
from controller.types import Environment, Phase, Reason, Record
from controller.views import relative_seconds

FAILING = (Phase.FAILED, Phase.STALLED)
BATCH_HOLDS = (Reason.SAFETY_LIMIT, Reason.EMPTY_LISTING)
"""Holds decided for a whole batch of removals: the pass sends one alert for the batch."""
RUN_ACTIONS = ("apply", "destroy", "repair", "drift_check")
"""Actions whose outcome is a success or a failure of Terraform work (a drift check stalls when
its preflight finds the environment owned elsewhere)."""


@dataclass(frozen=True)
class Notice:
    """One alert: its event, message and details."""

    event: Event
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Effects:
    """What one record change causes: alerts, and pull-request feedback as (state, description)."""

    alerts: list[Notice] = field(default_factory=list)
    feedback: list[tuple[str, str]] = field(default_factory=list)

    @property
    def events(self) -> list[Event]:
        return [notice.event for notice in self.alerts]


def started(action: str) -> list[tuple[str, str]]:
    """The feedback a run shows on its pull request when it starts (an apply: in progress)."""
    return [("in_progress", "applying")] if action == "apply" else []


def transitions(before: Record | None, after: Record, action: str, *, now: float) -> Effects:
    """The effects of `action` (`apply`, `destroy`, `repair`, `drift_check`, `record`, `expiry`,
    `confirm`) taking a record from `before` (as last written before it) to `after`."""
    alerts = [*_run_alerts(before, after, action), *_drift_alerts(before, after, action)]
    alerts += _recorded_alerts(before, after, action, now)
    return Effects(alerts, _feedback(after, action))


def _run_alerts(before: Record | None, after: Record, action: str) -> list[Notice]:  # noqa: PLR0911 - one guard clause per transition
    if action not in RUN_ACTIONS:
        return []
    was_failing = before is not None and before.failures > 0 and before.phase in FAILING
    # Back to Ready after failures: recovered, once.
    if after.phase is Phase.READY:
        if not was_failing or before is None:
            return []
        return [Notice(Event.RECOVERED, f"{_done(after, action)} after {before.failures} failures")]
    # An interrupted run resumes on its own; anything else that is not a failure says nothing.
    if after.phase not in FAILING or after.reason == Reason.INTERRUPTED:
        return []
    # A retry failing the same way (still failed, still stalled) is the same episode.
    if was_failing and before is not None and before.phase is after.phase:
        return []
    if after.phase is Phase.STALLED:
        return [Notice(Event.STALLED, after.message)]
    event = Event.DESTROY_FAILED if action == "destroy" else Event.APPLY_FAILED
    return [Notice(event, after.message)]


def _done(after: Record, action: str) -> str:
    return "drift repaired" if action == "repair" else f"applied at {after.applied_revision[:12]}"


def _drift_alerts(before: Record | None, after: Record, action: str) -> list[Notice]:
    # Without a record before, any status other than "Drifted" means the same (a mutant's "XXXX").
    was = before.drift_status if before is not None else ""  # pragma: no mutate
    if after.drift_status == "Drifted":
        summary = drift.summary(after.drift_report)
        remediation = Environment.from_spec(after.spec).remediation_mode if after.spec else ""
        details = {"report": after.drift_report, "remediation": remediation}
        if was != "Drifted":
            return [Notice(Event.DRIFT_DETECTED, summary, details)]
        assert before is not None
        if before.drift_fingerprint != after.drift_fingerprint:
            return [Notice(Event.DRIFT_CHANGED, summary, details)]
        if after.drift_alerted_at != before.drift_alerted_at:
            return [Notice(Event.DRIFT_PERSISTS, summary, details)]
        return []
    if was != "Drifted" or after.drift_status != "InSync":
        return []
    assert before is not None
    message = {
        "apply": "drift resolved by an apply",
        "repair": f"drift repaired by applying the inspected plan: {drift.summary(before.drift_report)}",
    }.get(action, "drift resolved outside envctl")
    return [Notice(Event.DRIFT_RESOLVED, message)]


def _recorded_alerts(before: Record | None, after: Record, action: str, now: float) -> list[Notice]:
    notices = []
    # A pass's decisions: a file that is invalid (or invalid anew), orphaned resources, a hold.
    changed = before is None or (before.phase, before.reason, before.message) != (
        after.phase,
        after.reason,
        after.message,
    )
    event = {
        Phase.INVALID: Event.INVALID,
        Phase.ORPHANED: Event.ORPHANED,
        Phase.DESTROY_HELD: Event.DESTROYS_HELD,
    }.get(after.phase)
    if action == "record" and changed and event is not None:
        details = {"reason": after.reason} if event is Event.DESTROYS_HELD else {}
        notices.append(Notice(event, after.message, details))
    # A preview's expiry: warned once per expiry time; destroyed when it came.
    # A mutant's 1.0 differs only for an expiry at 1 s past the epoch.
    warned = before.expiry_warned_for if before is not None else 0.0  # pragma: no mutate
    if after.expiry_warned_for and after.expiry_warned_for != warned:
        at = after.expiry_warned_for
        message = f"preview expires {relative_seconds(at - now)} unless its file changes"
        notices.append(Notice(Event.EXPIRING, message, {"expires_at": at}))
    if action == "destroy" and after.phase is Phase.DESTROYED and after.reason == Reason.EXPIRED:
        notices.append(Notice(Event.EXPIRED, "preview destroyed: its TTL ran out"))
    # A lock one of envctl's own dead runs left, released during this run.
    # A mutant's "XXXX" differs only for a release message that says "XXXX".
    released = before.lock_released if before is not None else ""  # pragma: no mutate
    if after.lock_released and after.lock_released != released:
        notices.append(Notice(Event.LOCK_RELEASED, after.lock_released, {"lock_id": after.lock_released_id}))
    return notices


def _feedback(after: Record, action: str) -> list[tuple[str, str]]:
    """What the pull request shows: ready, failed (not an interrupt), stalled, destroyed."""
    if action == "apply" and after.phase is Phase.READY:
        return [("success", f"ready: applied at {after.applied_revision[:12]}")]
    if action in ("apply", "repair") and after.phase in FAILING and after.reason != Reason.INTERRUPTED:
        state = "error" if after.phase is Phase.STALLED else "failure"
        return [(state, f"{after.reason}: {after.message}")]
    if action == "destroy" and after.phase is Phase.DESTROYED:
        return [("inactive", after.message)]
    return []
