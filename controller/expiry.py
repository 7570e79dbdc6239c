"""Expiry of forgotten previews: a pure `expires_at`.

A preview with a TTL expires its TTL after the last commit to its file; a new
commit moves the expiry. Operators get one warning per expiry time, a lead
time before it (the pass records it; status.transitions alerts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from controller.settings import PreviewSettings, parse_duration
from controller.types import Environment, Invalid, Record


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


def warnings(
    expires: Mapping[str, float], recorded: Mapping[str, Record], *, now: float, lead: float
) -> dict[str, dict[str, Any]]:
    """Per environment, the record changes: its expiry time, and a warning once per expiry time
    when it is within `lead` (status.transitions alerts on it)."""
    changes: dict[str, dict[str, Any]] = {}
    for name, known in recorded.items():
        at = expires.get(name, 0.0)
        change: dict[str, Any] = {"expires_at": at} if known.expires_at != at else {}
        near = at and at - lead <= now < at
        if near and known.live and known.expiry_warned_for != at:
            change["expiry_warned_for"] = at
        if change:
            changes[name] = change
    return changes
