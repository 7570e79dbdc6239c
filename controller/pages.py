"""The status page and an environment's page: HTML for people, escaped, refreshed every 10 s."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

from controller.views import (
    FAILING,
    change_line,
    collapsed,
    counts,
    ordered,
    relative,
    retry_at,
    took,
)

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
    # Long on purpose: one page written top to bottom (facts, drift, outputs, phases, runs), each
    # part as it appears, rather than scattered over helpers.
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
