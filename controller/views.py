"""How environments are shown to people: `envctl status` tables and the status page.

Pure functions of the status rows (`controller.store.row`, ISO 8601 times) and
the current time, so the CLI and the page say the same thing and tests can pin
it. Tables show relative times ("in 4 min", "2 h ago"); JSON keeps ISO 8601.
The page has no external assets: one HTML document with its own CSS.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable
from datetime import datetime
from typing import Any

DAY = 86400.0
PHASE_ORDER = (
    "Failed",
    "Stalled",
    "Invalid",
    "DestroyHeld",
    "Applying",
    "Destroying",
    "Pending",
    "Ready",
    "Orphaned",
    "Destroyed",
)
FAILING = ("Failed", "Stalled", "Invalid", "DestroyHeld")
_RANK = {phase: index for index, phase in enumerate(PHASE_ORDER)}


def seconds(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


UNITS = (("d", DAY), ("h", 3600.0), ("min", 60.0), ("s", 1.0))
"""Largest unit first; an age is shown in the largest unit it has at least one of."""


def relative(iso: str | None, now: float) -> str:
    """ "in 4 min", "2 h ago", "12 s ago", "just now"; "-" for never.

    Whole units, rounded down (59.9 min is "59 min", never "60 min"); under a second is "just now".
    """
    at = seconds(iso)
    if at is None:
        return "-"
    return relative_seconds(at - now)


def relative_seconds(delta: float) -> str:
    """`delta` seconds from now (negative: in the past) in words."""
    span = abs(delta)
    if span < 1:
        return "just now"
    unit, size = next((u, n) for u, n in UNITS if span >= n)
    amount = int(span // size)
    return f"in {amount} {unit}" if delta > 0 else f"{amount} {unit} ago"


def hidden(row: dict[str, Any], now: float) -> bool:
    """Destroyed more than a day ago: out of the default listing."""
    updated = seconds(row.get("updated_at"))
    return row["phase"] == "Destroyed" and updated is not None and now - updated > DAY


def ordered(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failing first, then the rest by phase, each by name; Destroyed last."""
    return sorted(rows, key=lambda r: (_RANK.get(r["phase"], len(_RANK)), r["name"]))


def counts(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Environments per phase, failing phases first."""
    found: dict[str, int] = {}
    for row in rows:
        found[row["phase"]] = found.get(row["phase"], 0) + 1
    return {phase: found[phase] for phase in sorted(found, key=lambda p: (_RANK.get(p, len(_RANK)), p))}


def change_line(change: dict[str, Any]) -> str:
    """One drifted resource: `address: action (source): attributes`."""
    attributes = ", ".join(
        str(a.get("name")) if isinstance(a, dict) else str(a) for a in change.get("attributes") or []
    )
    source = f" ({change['source']})" if change.get("source") else ""
    return f"{change.get('address', '?')}: {change.get('action', '?')}{source}" + (
        f": {attributes}" if attributes else ""
    )


def retry_at(row: dict[str, Any], now: float) -> str:
    """When a failing environment is retried by itself; "-" when only a person can move it on."""
    if row["phase"] not in ("Failed", "Stalled") or not row.get("next_attempt_at"):
        return "-"
    return relative(row["next_attempt_at"], now)


def collapsed(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The phase history with a retry loop shown once: a repeated pair (Applying, Failed) or a
    repeated single entry becomes one entry with `count` (how many times it happened in a row)."""
    key = [(h["phase"], h["reason"]) for h in history]
    out: list[dict[str, Any]] = []
    index = 0
    while index < len(history):
        for period in (1, 2):
            repeats = 1
            while key[index : index + period] == key[
                index + repeats * period : index + (repeats + 1) * period
            ] and index + (repeats + 1) * period <= len(history):
                repeats += 1
            if repeats > 1:
                out.extend({**h, "count": repeats} for h in history[index : index + period])
                index += repeats * period
                break
        else:
            out.append({**history[index], "count": 1})
            index += 1
    return out


def took(run: dict[str, Any]) -> str:
    return f"{run['seconds']:.0f} s" if run["seconds"] is not None else "running"


# --- the terminal -------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]], now: float, *, show_all: bool = False, width: int = 100) -> str:
    """`envctl status`: one line per environment, then its reason, next retry and last error."""
    shown = [r for r in ordered(rows) if show_all or not hidden(r, now)]
    lines = [
        f"{'NAME':<18}{'KIND':<12}{'PHASE':<13}{'REASON':<26}{'PR':<7}{'DRIFT':<10}{'EXPIRES':<13}NEXT RETRY"
    ]
    for row in shown:
        pull = f"#{row['pull_request']}" if row.get("pull_request") else "-"
        retry = retry_at(row, now)
        lines.append(
            f"{row['name']:<18}{row['kind'] or '-':<12}{row['phase']:<13}{row['reason'] or '-':<26}"
            f"{pull:<7}{row['drift']['status'] or '-':<10}{relative(row.get('expires_at'), now):<13}{retry}"
        )
        if row["phase"] in FAILING and row["message"]:
            for line in _wrapped(row["message"], width, indent="    "):
                lines.append(line)
    hidden_count = len(rows) - len(shown)
    if hidden_count:
        lines.append(f"({hidden_count} destroyed more than a day ago not shown; --all shows them)")
    if not rows:
        lines.append("(no environments yet)")
    return "\n".join(lines)


def _wrapped(text: str, width: int, indent: str) -> list[str]:
    out = []
    for paragraph in text.splitlines() or [""]:
        out.extend(
            textwrap.wrap(paragraph, width=width, initial_indent=indent, subsequent_indent=indent) or [indent]
        )
    return out


def detail_text(detail: dict[str, Any], now: float, width: int = 100) -> str:
    """`envctl status NAME`: everything known about one environment."""
    lines = [f"{detail['name']}: {detail['phase']}" + (f" ({detail['reason']})" if detail["reason"] else "")]
    facts = [
        ("kind", detail["kind"]),
        ("region", detail.get("region")),
        ("pull request", f"#{detail['pull_request']}" if detail.get("pull_request") else None),
        ("commit", detail.get("commit")),
        ("last seen revision", (detail.get("revision") or "")[:12] or None),
        ("applied revision", (detail.get("applied_revision") or "")[:12] or None),
        ("updated", _when(detail.get("updated_at"), now)),
        ("next retry", _when(detail.get("next_attempt_at"), now) if retry_at(detail, now) != "-" else None),
        ("expires", _when(detail.get("expires_at"), now)),
        ("deployment", detail["deployment"]["url"]),
    ]
    lines.extend(f"  {label + ':':<20}{value}" for label, value in facts if value)
    if detail["message"]:
        lines.append("  message:")
        lines.extend(_wrapped(detail["message"], width, indent="    "))
    spec = detail.get("spec") or {}
    if spec.get("parameters"):
        lines.append("  parameters:")
        lines.extend(f"    {key}: {json.dumps(value)}" for key, value in sorted(spec["parameters"].items()))
    if detail.get("outputs"):
        lines.append("  outputs:")
        lines.extend(f"    {key}: {json.dumps(value)}" for key, value in detail["outputs"].items())
    drift = detail["drift"]
    if drift["status"]:
        lines.append(f"  drift: {drift['status']} (checked {relative(drift['checked_at'], now)})")
        lines.extend(f"    {change_line(change)}" for change in drift["report"])
    if detail.get("history"):
        lines.append("  phases (newest first):")
        for entry in collapsed(detail["history"])[:10]:
            reason = f" ({entry['reason']})" if entry["reason"] else ""
            times = f" x{entry['count']}" if entry["count"] > 1 else ""
            lines.append(f"    {relative(entry['at'], now):<14}{entry['phase']}{reason}{times}")
    if detail.get("runs"):
        lines.append("  runs (newest first):")
        for run in detail["runs"][:10]:
            lines.append(
                f"    {relative(run['started_at'], now):<14}{run['action']:<13}{run['outcome'] or '-':<13}"
                f"{took(run):<10}{(run['revision'] or '')[:12]}"
            )
    return "\n".join(lines)


def _when(iso: str | None, now: float) -> str | None:
    return f"{relative(iso, now)} ({iso})" if iso else None
