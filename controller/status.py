"""Which alerts a piece of work causes: a pure function of the record before and after it.

Alerts fire on transitions, not on every pass or retry: once when an
environment starts failing (or stalls), never again while it retries the same
way, and once when it recovers. Tested as a table.
"""

from __future__ import annotations

from controller.alerts import Event
from controller.types import Phase, Reason, Record

FAILING = (Phase.FAILED, Phase.STALLED)


def transitions(before: Record | None, after: Record, action: str) -> list[Event]:
    """The events of `action` (`apply` or `destroy`) taking a record from `before` to `after`.

    `before` is the record as it was before the work began (not its `Applying` step).
    """
    was_failing = before is not None and before.failures > 0 and before.phase in FAILING
    # Back to Ready after failures: recovered, once.
    if after.phase is Phase.READY:
        return [Event.RECOVERED] if was_failing else []
    # An interrupted run resumes on its own; anything else that is not a failure says nothing.
    if after.phase not in FAILING or after.reason == Reason.INTERRUPTED:
        return []
    # A retry failing the same way (still failed, still stalled) is the same episode.
    if was_failing and before is not None and before.phase is after.phase:
        return []
    if after.phase is Phase.STALLED:
        return [Event.STALLED]
    return [Event.APPLY_FAILED if action == "apply" else Event.DESTROY_FAILED]
