"""Expiry of forgotten previews: a pure `expires_at` and the warning step.

A preview with a TTL expires its TTL after the last commit to its file; a new
commit moves the expiry. Operators get one warning per expiry time, a lead
time before it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from controller.alerts import Event
from controller.settings import PreviewSettings, parse_duration
from controller.store import StatusStore
from controller.types import Environment, Invalid, Record
from controller.views import relative_seconds


def expires_at(
    desired: Mapping[str, Environment | Invalid],
    last_changes: Callable[[], Mapping[str, float]],
    committed_at: float,
    previews: PreviewSettings,
) -> dict[str, float]:
    """When each preview with a TTL expires: its file's last commit time plus its TTL.

    `last_changes` (file -> time of the last commit touching it) is only asked when a preview
    has a TTL; `committed_at` stands in for a file the history does not name.
    """
    default = parse_duration(previews.ttl) if previews.ttl else None
    with_ttl = {
        name: env
        for name, env in desired.items()
        if isinstance(env, Environment) and env.kind == "preview" and (env.ttl_seconds or default)
    }
    if not with_ttl:
        return {}
    changes = last_changes()
    return {
        name: changes.get(env.file, committed_at) + (env.ttl_seconds or default or 0.0)
        for name, env in with_ttl.items()
    }


def warn_expiring(
    store: StatusStore,
    alert: Callable[..., Any],
    *,
    expires: Mapping[str, float],
    recorded: Mapping[str, Record],
    now: float,
    previews: PreviewSettings,
) -> None:
    """Record each preview's expiry; warn once per expiry time when it is near."""
    lead = parse_duration(previews.expiry_warning) or 0.0
    for name, known in recorded.items():
        at = expires.get(name, 0.0)
        record = store.update(name, expires_at=at) if known.expires_at != at else known
        near = at and at - lead <= now < at
        if near and record.live and record.expiry_warned_for != at:
            store.update(name, expiry_warned_for=at)
            alert(
                Event.EXPIRING,
                record,
                f"preview expires {relative_seconds(at - now)} unless its file changes",
                expires_at=at,
            )
