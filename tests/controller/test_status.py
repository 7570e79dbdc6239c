"""Alert transitions as a table: (record before, record after, action) -> events."""

from __future__ import annotations

import pytest

from controller.alerts import Event
from controller.status import transitions
from controller.types import Phase, Reason, Record


def rec(phase: Phase, reason: str = "", failures: int = 0) -> Record:
    return Record(name="pr1", phase=phase, reason=reason, failures=failures)


READY = rec(Phase.READY)
FAILED = rec(Phase.FAILED, Reason.APPLY_FAILED, failures=1)
FAILED_AGAIN = rec(Phase.FAILED, Reason.APPLY_FAILED, failures=2)
LOCKED = rec(Phase.FAILED, Reason.LOCKED, failures=2)
STALLED = rec(Phase.STALLED, Reason.OWNED_ELSEWHERE, failures=1)
INTERRUPTED = rec(Phase.FAILED, Reason.INTERRUPTED, failures=1)

TABLE = [
    # (what, before, after, action, events)
    ("first apply succeeds", None, READY, "apply", []),
    ("ready stays ready", READY, READY, "apply", []),
    ("first failure of a new environment", None, FAILED, "apply", [Event.APPLY_FAILED]),
    ("ready environment starts failing", READY, FAILED, "apply", [Event.APPLY_FAILED]),
    ("retry after failure fails again", FAILED, FAILED_AGAIN, "apply", []),
    ("retry fails for another reason, same episode", FAILED, LOCKED, "apply", []),
    (
        "a destroy starts failing",
        READY,
        rec(Phase.FAILED, Reason.DESTROY_FAILED, 1),
        "destroy",
        [Event.DESTROY_FAILED],
    ),
    ("recovery after failures", FAILED_AGAIN, READY, "apply", [Event.RECOVERED]),
    ("stalls", READY, STALLED, "apply", [Event.STALLED]),
    ("a failing environment stalls", FAILED, STALLED, "apply", [Event.STALLED]),
    ("still stalled", STALLED, rec(Phase.STALLED, Reason.OWNED_ELSEWHERE, 2), "apply", []),
    ("recovers from a stall", STALLED, READY, "apply", [Event.RECOVERED]),
    ("interrupted by a shutdown", READY, INTERRUPTED, "apply", []),
    ("resumed after an interrupt and succeeded", INTERRUPTED, READY, "apply", [Event.RECOVERED]),
    ("destroyed", READY, rec(Phase.DESTROYED), "destroy", []),
    # Failed with no failure counted (adopted from the inventory after an attempted apply): a
    # failure now is the first of its episode.
    (
        "adopted as failed, then fails",
        rec(Phase.FAILED, Reason.ADOPTED, 0),
        FAILED,
        "apply",
        [Event.APPLY_FAILED],
    ),
]


@pytest.mark.parametrize(
    ("what", "before", "after", "action", "events"), TABLE, ids=[row[0] for row in TABLE]
)
def test_transitions(what, before, after, action, events):
    """Each row: the alerts one piece of work causes."""
    assert transitions(before, after, action, now=0.0).events == events


# --- every event and every piece of feedback -------------------------------------------------------

SPEC = {
    "name": "pr1",
    "kind": "preview",
    "state": "open",
    "region": "us-east-1",
    "deletion": "destroy",
    "file": "environments/pr1.yaml",
    "pull_request": 1,
    "parameters": {},
    "drift_interval_minutes": None,
    "remediation": "",
    "ttl_seconds": None,
    "commit": None,
}
REPORT = [{"address": "null_resource.a", "action": "update", "attributes": [{"name": "triggers"}]}]
OTHER = [{"address": "null_resource.b", "action": "delete", "attributes": []}]


def r(**fields) -> Record:
    base = {
        "name": "pr1",
        "kind": "preview",
        "phase": Phase.READY,
        "spec": SPEC,
        "applied_revision": "a" * 40,
    }
    return Record(**{**base, **fields})


DRIFTED = r(drift_status="Drifted", drift_report=REPORT, drift_fingerprint="f1", drift_alerted_at=100.0)
EVERY_EVENT = [
    # (what, before, after, action, alerts as (event, message), feedback as (state, description))
    ("applied", r(), r(reason=Reason.APPLIED), "apply", [], [("success", "ready: applied at aaaaaaaaaaaa")]),
    (
        "recovered",
        r(phase=Phase.FAILED, failures=2),
        r(),
        "apply",
        [(Event.RECOVERED, "applied at aaaaaaaaaaaa after 2 failures")],
        [("success", "ready: applied at aaaaaaaaaaaa")],
    ),
    (
        "apply failed",
        r(),
        r(phase=Phase.FAILED, reason=Reason.APPLY_FAILED, message="boom", failures=1),
        "apply",
        [(Event.APPLY_FAILED, "boom")],
        [("failure", "ApplyFailed: boom")],
    ),
    (
        "stalled",
        r(),
        r(phase=Phase.STALLED, reason=Reason.OWNED_ELSEWHERE, message="theirs", failures=1),
        "apply",
        [(Event.STALLED, "theirs")],
        [("error", "OwnedByAnotherRepository: theirs")],
    ),
    (
        "a drift check stalls",
        r(),
        r(phase=Phase.STALLED, reason=Reason.OWNED_ELSEWHERE, message="theirs", failures=1),
        "drift_check",
        [(Event.STALLED, "theirs")],
        [],
    ),
    (
        "destroy failed",
        r(),
        r(phase=Phase.FAILED, reason=Reason.DESTROY_FAILED, message="stuck", failures=1),
        "destroy",
        [(Event.DESTROY_FAILED, "stuck")],
        [],
    ),
    (
        "destroyed",
        r(),
        r(phase=Phase.DESTROYED, reason=Reason.DESTROYED, message="destroyed (PullRequestClosed)"),
        "destroy",
        [],
        [("inactive", "destroyed (PullRequestClosed)")],
    ),
    (
        "expired",
        r(),
        r(phase=Phase.DESTROYED, reason=Reason.EXPIRED, message="destroyed (Expired)"),
        "destroy",
        [(Event.EXPIRED, "preview destroyed: its TTL ran out")],
        [("inactive", "destroyed (Expired)")],
    ),
    ("interrupted", r(), r(phase=Phase.FAILED, reason=Reason.INTERRUPTED, failures=1), "apply", [], []),
    (
        "drift detected",
        r(drift_status="InSync"),
        DRIFTED,
        "drift_check",
        [(Event.DRIFT_DETECTED, "null_resource.a (update: triggers)")],
        [],
    ),
    (
        "drift changed",
        DRIFTED,
        r(drift_status="Drifted", drift_report=OTHER, drift_fingerprint="f2", drift_alerted_at=200.0),
        "drift_check",
        [(Event.DRIFT_CHANGED, "null_resource.b (delete)")],
        [],
    ),
    (
        "drift persists past realert",
        DRIFTED,
        r(drift_status="Drifted", drift_report=REPORT, drift_fingerprint="f1", drift_alerted_at=900.0),
        "drift_check",
        [(Event.DRIFT_PERSISTS, "null_resource.a (update: triggers)")],
        [],
    ),
    ("drift unchanged, not yet realerted", DRIFTED, DRIFTED, "drift_check", [], []),
    (
        "drift resolved outside envctl",
        DRIFTED,
        r(drift_status="InSync"),
        "drift_check",
        [(Event.DRIFT_RESOLVED, "drift resolved outside envctl")],
        [],
    ),
    (
        "drift repaired",
        DRIFTED,
        r(drift_status="InSync", reason=Reason.DRIFT_REPAIRED),
        "repair",
        [
            (
                Event.DRIFT_RESOLVED,
                "drift repaired by applying the inspected plan: null_resource.a (update: triggers)",
            )
        ],
        [],
    ),
    (
        "drift resolved by an apply",
        DRIFTED,
        r(drift_status="InSync"),
        "apply",
        [(Event.DRIFT_RESOLVED, "drift resolved by an apply")],
        [("success", "ready: applied at aaaaaaaaaaaa")],
    ),
    (
        "a check fails: not drift",
        r(drift_status="InSync"),
        r(drift_status="CheckFailed"),
        "drift_check",
        [],
        [],
    ),
    (
        "invalid",
        r(),
        r(phase=Phase.INVALID, reason=Reason.INVALID_SPEC, message="pr1.yaml: kind: 'x'"),
        "record",
        [(Event.INVALID, "pr1.yaml: kind: 'x'")],
        [],
    ),
    (
        "still the same invalid file",
        r(phase=Phase.INVALID, reason=Reason.INVALID_SPEC, message="m"),
        r(phase=Phase.INVALID, reason=Reason.INVALID_SPEC, message="m"),
        "record",
        [],
        [],
    ),
    (
        "orphaned",
        r(),
        r(phase=Phase.ORPHANED, reason=Reason.ORPHANED, message="left in place"),
        "record",
        [(Event.ORPHANED, "left in place")],
        [],
    ),
    (
        "held",
        r(),
        r(phase=Phase.DESTROY_HELD, reason=Reason.PERSISTENT, message="confirm it"),
        "record",
        [(Event.DESTROYS_HELD, "confirm it")],
        [],
    ),
    (
        "expiring",
        r(expires_at=4600.0),
        r(expires_at=4600.0, expiry_warned_for=4600.0),
        "expiry",
        [(Event.EXPIRING, "preview expires in 1 h unless its file changes")],
        [],
    ),
    ("expiry time recorded", r(), r(expires_at=4600.0), "expiry", [], []),
    (
        "a dead run's lock released",
        r(),
        r(lock_released="released the state lock L1", lock_released_id="L1"),
        "apply",
        [(Event.LOCK_RELEASED, "released the state lock L1")],
        [("success", "ready: applied at aaaaaaaaaaaa")],
    ),
    (
        "a confirmation",
        r(phase=Phase.DESTROY_HELD),
        r(phase=Phase.DESTROY_HELD, destroy_confirmed=True),
        "confirm",
        [],
        [],
    ),
]


@pytest.mark.parametrize(
    ("what", "before", "after", "action", "alerts", "feedback"),
    EVERY_EVENT,
    ids=[row[0] for row in EVERY_EVENT],
)
def test_every_event_and_its_feedback(what, before, after, action, alerts, feedback):
    """Each row: the alerts (event and message) and pull-request feedback one record change causes;
    together they cover every event there is."""
    effects = transitions(before, after, action, now=1000.0)
    assert [(n.event, n.message) for n in effects.alerts] == alerts
    assert effects.feedback == feedback


def test_the_table_covers_every_event():
    """No event is left out of the table above."""
    covered = {event for row in EVERY_EVENT for event, _ in row[4]}
    assert covered == set(Event)


def test_drift_alerts_carry_the_report_and_the_remediation():
    """A drift alert's details: the report and the environment's remediation (a preview: auto)."""
    (notice,) = transitions(r(drift_status="InSync"), DRIFTED, "drift_check", now=0.0).alerts
    assert notice.details == {"report": REPORT, "remediation": "auto"}


MORE = [
    # (what, before, after, action, alerts as (event, message, details), feedback)
    (
        "a repair recovers a failing environment",
        r(phase=Phase.FAILED, failures=2),
        r(),
        "repair",
        [(Event.RECOVERED, "drift repaired after 2 failures", {})],
        [],
    ),
    (
        "a failed repair is shown as a failure",
        r(),
        r(phase=Phase.FAILED, reason=Reason.APPLY_FAILED, message="boom", failures=1),
        "repair",
        [(Event.APPLY_FAILED, "boom", {})],
        [("failure", "ApplyFailed: boom")],
    ),
    (
        "drift changed, with its report",
        DRIFTED,
        r(drift_status="Drifted", drift_report=OTHER, drift_fingerprint="f2", drift_alerted_at=200.0),
        "drift_check",
        [(Event.DRIFT_CHANGED, "null_resource.b (delete)", {"report": OTHER, "remediation": "auto"})],
        [],
    ),
    (
        "drift persists, with its report",
        DRIFTED,
        r(drift_status="Drifted", drift_report=REPORT, drift_fingerprint="f1", drift_alerted_at=900.0),
        "drift_check",
        [
            (
                Event.DRIFT_PERSISTS,
                "null_resource.a (update: triggers)",
                {"report": REPORT, "remediation": "auto"},
            )
        ],
        [],
    ),
    (
        "drift without a spec has no remediation",
        r(drift_status="InSync", spec=None),
        r(drift_status="Drifted", drift_report=REPORT, drift_fingerprint="f1", spec=None),
        "drift_check",
        [(Event.DRIFT_DETECTED, "null_resource.a (update: triggers)", {"report": REPORT, "remediation": ""})],
        [],
    ),
    (
        "a destroy clears drift without resolving it",
        DRIFTED,
        r(phase=Phase.DESTROYED, reason=Reason.DESTROYED, message="destroyed (FileRemoved)", drift_status=""),
        "destroy",
        [],
        [("inactive", "destroyed (FileRemoved)")],
    ),
    (
        "invalid, with no details",
        None,
        r(phase=Phase.INVALID, reason=Reason.INVALID_SPEC, message="bad"),
        "record",
        [(Event.INVALID, "bad", {})],
        [],
    ),
    (
        "orphaned, with no details",
        None,
        r(phase=Phase.ORPHANED, reason=Reason.ORPHANED, message="left"),
        "record",
        [(Event.ORPHANED, "left", {})],
        [],
    ),
    (
        "held, with its reason",
        None,
        r(phase=Phase.DESTROY_HELD, reason=Reason.SAFETY_LIMIT, message="too many"),
        "record",
        [(Event.DESTROYS_HELD, "too many", {"reason": Reason.SAFETY_LIMIT})],
        [],
    ),
    (
        "expiring on a new record, in 90 s",
        None,
        r(expires_at=1090.0, expiry_warned_for=1090.0),
        "expiry",
        [(Event.EXPIRING, "preview expires in 1 min unless its file changes", {"expires_at": 1090.0})],
        [],
    ),
    (
        "already warned for this expiry",
        r(expiry_warned_for=1090.0),
        r(expiry_warned_for=1090.0),
        "expiry",
        [],
        [],
    ),
    (
        "a lock released on a new record",
        None,
        r(
            phase=Phase.FAILED,
            reason=Reason.LOCKED,
            message="m",
            failures=1,
            lock_released="freed L2",
            lock_released_id="L2",
        ),
        "apply",
        [(Event.APPLY_FAILED, "m", {}), (Event.LOCK_RELEASED, "freed L2", {"lock_id": "L2"})],
        [("failure", "StateLocked: m")],
    ),
    (
        "a release already alerted",
        r(lock_released="freed L2", lock_released_id="L2"),
        r(lock_released="freed L2", lock_released_id="L2"),
        "drift_check",
        [],
        [],
    ),
]


@pytest.mark.parametrize(
    ("what", "before", "after", "action", "alerts", "feedback"), MORE, ids=[row[0] for row in MORE]
)
def test_details_and_edges(what, before, after, action, alerts, feedback):
    """Each row: alerts with their details, and the feedback, at the edges of each rule."""
    effects = transitions(before, after, action, now=1000.0)
    assert [(n.event, n.message, n.details) for n in effects.alerts] == alerts
    assert effects.feedback == feedback


def test_only_an_apply_shows_that_it_started():
    """An apply shows `in_progress` on its pull request when it starts; nothing else shows a start."""
    from controller.status import started

    assert started("apply") == [("in_progress", "applying")]
    assert [started(action) for action in ("destroy", "drift_check", "repair")] == [[], [], []]
