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
    assert transitions(before, after, action).events == events
