"""When an environment next needs attention: a pure function of its record (tested as a table).

The queue holds one timer per environment (`WorkQueue.put_after`); after every
run and every pass, an environment's timer is set to the soonest of: its
backoff's end, its expiry warning, its expiry, its next drift check. Nothing of
this is stored: it follows from the record.
"""

from __future__ import annotations

import hashlib

from controller.types import Phase, Record

DRIFT_FLOOR_SECONDS = 1.0
"""An overdue drift check is due this soon (not in the past: a check that cannot run yet is
not retried in a loop)."""


def spread(name: str) -> float:
    """A fixed fraction in [0, 1) per environment: drift checks spread over the jitter window."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 2**32


def drift_due(record: Record, jitter_fraction: float) -> float | None:
    """When a Ready environment's next drift check is due: its interval after the last check or
    apply (times a fixed share of the jitter window), or None."""
    if record.phase is not Phase.READY or not record.spec or not record.drift_interval_seconds:
        return None
    since = max(record.drift_checked_at, record.applied_at) or record.updated_at
    return since + record.drift_interval_seconds * (1 + jitter_fraction * spread(record.name))


def due(record: Record, *, now: float, warning_lead: float, jitter_fraction: float) -> float | None:
    """The soonest time after `now` at which `record` needs a visit, or None."""
    times = []
    # A failed (or unsaved-state) run is retried when its backoff ends; earlier times are the pass's.
    # `>=` (a mutant) is filtered out below anyway.
    if record.phase in (Phase.FAILED, Phase.STALLED) and record.next_attempt_at > now:  # pragma: no mutate
        times.append(record.next_attempt_at)
    # A preview with a TTL: warned a lead time before its expiry, destroyed at it.
    if record.expires_at and record.live:
        if warning_lead and record.expiry_warned_for != record.expires_at:
            times.append(record.expires_at - warning_lead)
        times.append(record.expires_at)
    times = [at for at in times if at > now]
    checked = drift_due(record, jitter_fraction)
    if checked is not None:
        times.append(max(checked, now + DRIFT_FLOOR_SECONDS))
    return min(times, default=None)
