"""Drift reports from `terraform show -json` of a plan; pure, so tested as a table.

A report lists each resource that differs from its configuration or from the
real world: its address, the action Terraform would take, and the changed
attribute names. Values are shown only where Terraform does not mark them
sensitive; sensitive ones appear as `(sensitive)` and never in clear.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

SENSITIVE = "(sensitive)"
_MAX_VALUE = 120


def _changed(before: Any, after: Any) -> list[str]:
    """Top-level attribute names whose values differ."""
    before = before if isinstance(before, dict) else {}
    after = after if isinstance(after, dict) else {}
    return sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))


def _is_sensitive(marks: Any, attribute: str) -> bool:
    """Whether Terraform's *_sensitive structure marks the attribute (or anything in it)."""
    if marks is True:
        return True
    if not isinstance(marks, dict) or attribute not in marks:
        return False
    value = marks[attribute]
    return value is not False and value not in ({}, [])


def _shown(value: Any) -> Any:
    text = json.dumps(value, sort_keys=True)
    return value if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


def _entry(item: dict[str, Any], source: str) -> dict[str, Any]:
    change = item.get("change", {})
    before, after = change.get("before"), change.get("after")
    attributes = []
    for name in _changed(before, after):
        secret = _is_sensitive(change.get("before_sensitive"), name) or _is_sensitive(
            change.get("after_sensitive"), name
        )
        unknown = isinstance(change.get("after_unknown"), dict) and change["after_unknown"].get(name) is True
        attributes.append(
            {
                "name": name,
                "before": SENSITIVE if secret else _shown((before or {}).get(name)),
                "after": SENSITIVE
                if secret
                else ("(known after apply)" if unknown else _shown((after or {}).get(name))),
            }
        )
    return {
        "address": item.get("address", "?"),
        "action": "-".join(change.get("actions", [])) or "unknown",
        "source": source,
        "attributes": attributes,
    }


def report(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Drift entries: what changed outside Terraform (`resource_drift`) and what the plan would do."""
    entries = [_entry(item, "drift") for item in plan.get("resource_drift", []) or []]
    for item in plan.get("resource_changes", []) or []:
        actions = item.get("change", {}).get("actions", [])
        if actions and actions != ["no-op"]:
            entries.append(_entry(item, "plan"))
    return entries


def fingerprint(entries: list[dict[str, Any]]) -> str:
    """Identity of a drift: which resources and attributes, not the values, so re-checks match."""
    shape = sorted(
        (entry["address"], entry["action"], tuple(a["name"] for a in entry["attributes"]))
        for entry in entries
    )
    return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]


def summary(entries: list[dict[str, Any]]) -> str:
    """One line for alerts and status: `null_resource.a (create); null_resource.b (update: triggers)`."""
    parts = []
    for entry in entries:
        # Attribute names say what changed in an update or replace; a create or delete is whole.
        whole = entry["action"] in ("create", "delete")
        names = "" if whole else ", ".join(a["name"] for a in entry["attributes"])
        parts.append(f"{entry['address']} ({entry['action']}{': ' + names if names else ''})")
    return "; ".join(parts)
