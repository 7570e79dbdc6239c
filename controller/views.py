"""How environments are shown to people: `envctl status` tables and the status page.

Pure functions of the status rows (`controller.store.row`, ISO 8601 times) and
the current time, so the CLI and the page say the same thing and tests can pin
it. Tables show relative times ("in 4 min", "2 h ago"); JSON keeps ISO 8601.
The page has no external assets: one HTML document with its own CSS.
"""

from __future__ import annotations

import html
import json
import textwrap
from collections.abc import Iterable
from datetime import UTC, datetime
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


# --- the status page ----------------------------------------------------------------------------

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { background: #1d2330; color: #fff; padding: 1em 2em; }
header h1 { font-size: 1.3em; margin: 0 0 .4em; } header a { color: #fff; }
.meta { color: #c8cede; font-size: .95em; } main { padding: 1.2em 2em; }
.counts span { display: inline-block; margin: .2em .5em .2em 0; padding: .15em .6em; border-radius: 1em;
  background: #39415a; } .counts .failing { background: #b3261e; } .counts .ready { background: #17733a; }
table { border-collapse: collapse; width: 100%; background: #fff; margin-bottom: 1.2em; }
th, td { text-align: left; padding: .45em .7em; border-bottom: 1px solid #dde1e8; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; }
td.msg { white-space: pre-wrap; max-width: 38em; color: #5b1a16; }
tr.failing td { background: #fdf1f0; } .phase-Ready { color: #17733a; font-weight: 600; }
.phase-Failed, .phase-Stalled, .phase-Invalid { color: #b3261e; font-weight: 600; }
summary { cursor: pointer; margin: .5em 0; color: #39415a; } pre { background: #fff; padding: .8em;
  border: 1px solid #dde1e8; white-space: pre-wrap; } h2 { font-size: 1.1em; margin-top: 1.4em; }
dl { display: grid; grid-template-columns: 12em auto; gap: .2em 1em; } dt { color: #5b6577; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _document(title: str, header: str, body: str, refresh: bool = True) -> str:
    refresh_tag = '<meta http-equiv="refresh" content="10">' if refresh else ""
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">{refresh_tag}'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        f"<header>{header}</header><main>{body}</main></body></html>\n"
    )


def _header(rows: list[dict[str, Any]] | None, meta: dict[str, Any], now: float, title: str) -> str:
    """The title, counts by phase (the fleet's page only), last fetch and revision, the leader."""
    chips = ""
    if rows is not None:
        chips = "".join(
            f'<span class="{"failing" if phase in FAILING else phase.lower()}">{_e(phase)} {count}</span>'
            for phase, count in counts(rows).items()
        )
        chips = f'<div class="counts">{chips or "<span>no environments</span>"}</div>'
    fetched = meta.get("last_fetch_at")
    if fetched:
        when = relative(datetime.fromtimestamp(fetched, UTC).isoformat(), now)
        revision = _e(meta.get("revision", "")[:12] or "-")
        fetch = f"last fetch {_e(when)} at revision <code>{revision}</code>"
    else:
        fetch = "not fetched yet"
    source_error = f" &middot; source error: {_e(meta['source_error'])}" if meta.get("source_error") else ""
    return (
        f'<h1><a href="/">envctl</a> {_e(title)}</h1>{chips}<div class="meta">{fetch}'
        f" &middot; leader: {_e(meta.get('leader', '-'))} &middot; this replica: {_e(meta.get('role', ''))}"
        f"{source_error} &middot; refreshes every 10 s</div>"
    )


def _pull_link(row: dict[str, Any], meta: dict[str, Any]) -> str:
    number = row.get("pull_request")
    if not number:
        return "-"
    template = meta.get("pull_url")
    return f'<a href="{_e(template.format(number=number))}">#{number}</a>' if template else f"#{number}"


def _rows_html(rows: list[dict[str, Any]], meta: dict[str, Any], now: float) -> str:
    body = []
    for row in rows:
        failing = row["phase"] in FAILING
        message = row["message"] if failing else ""
        retry = retry_at(row, now)
        deployment = row["deployment"]["url"]
        deployment_link = f'<a href="{_e(deployment)}">deployment</a>' if deployment else "-"
        body.append(
            f'<tr class="{"failing" if failing else ""}">'
            f'<td><a href="/environments/{_e(row["name"])}">{_e(row["name"])}</a></td>'
            f"<td>{_e(row['kind'])}</td>"
            f'<td class="phase-{_e(row["phase"])}">{_e(row["phase"])}</td><td>{_e(row["reason"])}</td>'
            f"<td>{_pull_link(row, meta)}</td>"
            f"<td>{deployment_link}</td>"
            f"<td><code>{_e((row.get('applied_revision') or '')[:12] or '-')}</code></td>"
            f"<td>{_e(row['drift']['status'] or '-')}</td>"
            f"<td>{_e(relative(row.get('expires_at'), now))}</td><td>{_e(retry)}</td>"
            f'<td class="msg">{_e(message)}</td></tr>'
        )
    head = (
        "<tr><th>Name</th><th>Kind</th><th>Phase</th><th>Reason</th><th>Pull request</th><th>Deployment</th>"
        "<th>Applied revision</th><th>Drift</th><th>Expires</th><th>Next retry</th><th>Last error</th></tr>"
    )
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def page(rows: list[dict[str, Any]], meta: dict[str, Any], now: float) -> str:
    """The status page: live environments first, Destroyed folded away."""
    live = ordered(r for r in rows if r["phase"] != "Destroyed")
    gone = ordered(r for r in rows if r["phase"] == "Destroyed")
    body = _rows_html(live, meta, now) if live else "<p>No live environments.</p>"
    if gone:
        body += f"<details><summary>{len(gone)} destroyed</summary>{_rows_html(gone, meta, now)}</details>"
    return _document("envctl status", _header(rows, meta, now, "environments"), body)


def environment_page(detail: dict[str, Any], meta: dict[str, Any], now: float) -> str:
    """One environment: what `envctl status NAME` shows, with the pull request and deployment links."""
    facts = {
        "Phase": f'<span class="phase-{_e(detail["phase"])}">{_e(detail["phase"])}</span> '
        + _e(detail["reason"]),
        "Kind": _e(detail["kind"]),
        "Region": _e(detail.get("region")),
        "Pull request": _pull_link(detail, meta),
        "Commit": f"<code>{_e(detail.get('commit') or '-')}</code>",
        "Deployment": (
            f'<a href="{_e(detail["deployment"]["url"])}">{_e(detail["deployment"]["url"])}</a>'
            if detail["deployment"]["url"]
            else "-"
        ),
        "Applied revision": f"<code>{_e((detail.get('applied_revision') or '')[:12] or '-')}</code>",
        "Last seen revision": f"<code>{_e((detail.get('revision') or '')[:12] or '-')}</code>",
        "Updated": _e(relative(detail.get("updated_at"), now)),
        "Expires": _e(relative(detail.get("expires_at"), now)),
        "Next retry": _e(retry_at(detail, now)),
    }
    body = "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts.items()) + "</dl>"
    if detail["message"]:
        body += f"<h2>Message</h2><pre>{_e(detail['message'])}</pre>"
    outputs = detail.get("outputs") or {}
    if outputs:
        body += (
            "<h2>Outputs</h2><table>"
            + "".join(
                f"<tr><th>{_e(k)}</th><td><code>{_e(json.dumps(v))}</code></td></tr>"
                for k, v in outputs.items()
            )
            + "</table>"
        )
    drift = detail["drift"]
    if drift["status"]:
        changes = "".join(
            f"<tr><td><code>{_e(c.get('address'))}</code></td>"
            f"<td>{_e(change_line(c).split(': ', 1)[-1])}</td></tr>"
            for c in drift["report"]
        )
        body += (
            f"<h2>Drift: {_e(drift['status'])} (checked {_e(relative(drift['checked_at'], now))})</h2>"
            + (f"<table><tr><th>Resource</th><th>Change</th></tr>{changes}</table>" if changes else "")
        )
    spec_title = "Last spec (destroyed)" if detail["phase"] == "Destroyed" else "Spec"
    body += (
        f"<h2>{spec_title}</h2><pre>"
        + _e(json.dumps(detail.get("spec") or {}, indent=2, sort_keys=True))
        + "</pre>"
    )
    if detail.get("history"):
        body += (
            "<h2>Phases</h2><table><tr><th>When</th><th>Phase</th><th>Reason</th><th>Times</th></tr>"
            + "".join(
                f'<tr><td title="{_e(h["at"])}">{_e(relative(h["at"], now))}</td><td>{_e(h["phase"])}</td>'
                f"<td>{_e(h['reason'])}</td><td>{h['count'] if h['count'] > 1 else ''}</td></tr>"
                for h in collapsed(detail["history"])
            )
            + "</table>"
        )
    if detail.get("runs"):
        body += (
            "<h2>Runs</h2><table><tr><th>Started</th><th>Action</th><th>Outcome</th><th>Took</th>"
            "<th>Revision</th><th>Message</th></tr>"
            + "".join(
                f'<tr><td title="{_e(r["started_at"])}">{_e(relative(r["started_at"], now))}</td>'
                f"<td>{_e(r['action'])}</td><td>{_e(r['outcome'] or 'running')}</td>"
                f"<td>{_e(took(r))}</td>"
                f"<td><code>{_e((r['revision'] or '')[:12])}</code></td>"
                f'<td class="msg">{_e(r["message"])}</td></tr>'
                for r in detail["runs"]
            )
            + "</table>"
        )
    header = _header(None, meta, now, detail["name"])
    return _document(f"{detail['name']} - envctl", header, body)


def not_found(path: str) -> str:
    return _document(
        "not found - envctl", '<h1><a href="/">envctl</a></h1>', f"<p>Nothing at {_e(path)}.</p>", False
    )
