"""When an environment next needs a visit, as a table: (record, now) -> the soonest due time."""

from __future__ import annotations

import pytest

from controller.timers import DRIFT_FLOOR_SECONDS, due, spread
from controller.types import Phase, Reason, Record

NOW = 10_000.0
SPEC = {"name": "pr1"}


def rec(**fields) -> Record:
    return Record(**{"name": "pr1", "kind": "preview", **fields})


TABLE = [
    ("nothing to wait for", rec(phase=Phase.PENDING), None),
    (
        "a backoff ends",
        rec(phase=Phase.FAILED, reason=Reason.APPLY_FAILED, next_attempt_at=NOW + 30),
        NOW + 30,
    ),
    ("a backoff already over is the pass's", rec(phase=Phase.FAILED, next_attempt_at=NOW - 1), None),
    (
        "an unsaved state retried",
        rec(phase=Phase.STALLED, reason=Reason.STATE_NOT_PERSISTED, next_attempt_at=NOW + 60),
        NOW + 60,
    ),
    ("held: no timer", rec(phase=Phase.DESTROY_HELD, applied_digest="d"), None),
    (
        "an expiry warning comes first",
        rec(phase=Phase.FAILED, attempted_digest="d", expires_at=NOW + 7200),
        NOW + 7200 - 3600,
    ),
    (
        "warned: the expiry itself",
        rec(phase=Phase.FAILED, attempted_digest="d", expires_at=NOW + 7200, expiry_warned_for=NOW + 7200),
        NOW + 7200,
    ),
    ("destroyed: no expiry", rec(phase=Phase.DESTROYED, expires_at=NOW + 7200), None),
    (
        "a drift check its interval after the last one",
        rec(phase=Phase.READY, spec=SPEC, drift_interval_seconds=600, drift_checked_at=NOW - 100),
        NOW + 500,
    ),
    (
        "or after the last apply, whichever is later",
        rec(
            phase=Phase.READY,
            spec=SPEC,
            drift_interval_seconds=600,
            drift_checked_at=NOW - 500,
            applied_at=NOW,
        ),
        NOW + 600,
    ),
    (
        "an overdue check is due at once, not in the past",
        rec(phase=Phase.READY, spec=SPEC, drift_interval_seconds=600, drift_checked_at=NOW - 5000),
        NOW + DRIFT_FLOOR_SECONDS,
    ),
    (
        "the soonest of a drift check and an expiry",
        rec(
            phase=Phase.READY,
            spec=SPEC,
            applied_digest="d",
            drift_interval_seconds=600,
            applied_at=NOW,
            expires_at=NOW + 300,
            expiry_warned_for=NOW + 300,
        ),
        NOW + 300,
    ),
    ("not Ready: no drift check", rec(phase=Phase.FAILED, spec=SPEC, drift_interval_seconds=600), None),
]


@pytest.mark.parametrize(("what", "record", "expected"), TABLE, ids=[row[0] for row in TABLE])
def test_due(what, record, expected):
    """Each row: when the record's environment needs a visit (no jitter)."""
    assert due(record, now=NOW, warning_lead=3600, jitter_fraction=0) == expected


def test_drift_checks_spread_over_the_jitter_window_at_a_fixed_point_per_environment():
    """With jitter, each environment's check sits at its own fixed share of the window."""
    record = rec(phase=Phase.READY, spec=SPEC, drift_interval_seconds=600, drift_checked_at=NOW)
    at = due(record, now=NOW, warning_lead=0, jitter_fraction=0.1)
    assert at == NOW + 600 * (1 + 0.1 * spread("pr1"))
    assert at == due(record, now=NOW, warning_lead=0, jitter_fraction=0.1)
    assert 0 <= spread("pr1") < 1 and spread("pr1") != spread("pr2")


EDGES = [
    ("Ready with no interval: no check", rec(phase=Phase.READY, spec=SPEC, drift_interval_seconds=0), None),
    (
        "a stale retry time on a Ready record is no timer",
        rec(phase=Phase.READY, next_attempt_at=NOW + 30),
        None,
    ),
    (
        "an expiry right now is the pass's, not a timer",
        rec(phase=Phase.FAILED, attempted_digest="d", expires_at=NOW, expiry_warned_for=NOW),
        None,
    ),
]


@pytest.mark.parametrize(("what", "record", "expected"), EDGES, ids=[row[0] for row in EDGES])
def test_due_at_the_edges(what, record, expected):
    """Each row: an edge of `due` (no jitter)."""
    assert due(record, now=NOW, warning_lead=3600, jitter_fraction=0) == expected


def test_the_spread_covers_the_window():
    """Over 1,000 names the fixed shares fall across the whole window [0, 1)."""
    shares = [spread(f"pr{index}") for index in range(1000)]
    assert all(0 <= share < 1 for share in shares)
    assert min(shares) < 0.01 and max(shares) > 0.99
