"""One record as the API, `envctl status --json` and the status page show it (times in ISO 8601)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from controller.types import Record


def iso(at: float | None) -> str | None:
    """A Unix time as ISO 8601 with its zone (UTC), or None for "never"."""
    if not at:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def row(record: Record) -> dict[str, Any]:
    """One record as the API, `status --json` and the status page show it."""
    spec = record.spec or {}
    return {
        "name": record.name,
        "kind": record.kind,
        "phase": str(record.phase),
        "reason": record.reason,
        "revision": record.revision,
        "applied_revision": record.applied_revision,
        "message": record.message,
        "failures": record.failures,
        "next_attempt_at": iso(record.next_attempt_at),
        "updated_at": iso(record.updated_at),
        "expires_at": iso(record.expires_at),
        "pull_request": spec.get("pull_request"),
        "commit": spec.get("commit"),
        "region": spec.get("region"),
        "spec": spec,
        "outputs": record.outputs,
        "lock_released": record.lock_released or None,
        "deployment": {
            "id": record.deployment_id or None,
            "commit": record.deployment_commit or None,
            "url": record.deployment_url or None,
        },
        "drift": {
            "status": record.drift_status or None,
            "first_seen": iso(record.drift_first_seen),
            "checked_at": iso(record.drift_checked_at),
            "every_seconds": record.drift_interval_seconds or None,
            "report": record.drift_report,
        },
    }


def detail(record: Record, history: list[dict[str, Any]], runs: Iterable[Any]) -> dict[str, Any]:
    """One environment's row with its phase history and recent runs (durations in seconds)."""
    return {
        **row(record),
        "history": history,
        "runs": [
            {
                "id": run.id,
                "action": run.action,
                "revision": run.revision,
                "started_at": iso(run.started_at),
                "finished_at": iso(run.finished_at),
                "seconds": round(run.finished_at - run.started_at, 1) if run.finished_at else None,
                "outcome": run.outcome,
                "message": run.message,
            }
            for run in runs
        ],
    }
