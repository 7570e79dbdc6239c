"""What people read: relative times, the status table and one environment's story (pure functions)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import pages, views
from controller.store import iso

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (None, "-"),
        (0, "just now"),
        (-10, "10 s ago"),
        (20, "in 20 s"),
        (-44, "44 s ago"),
        (-45, "45 s ago"),
        (-59, "59 s ago"),
        (-60, "1 min ago"),
        (240, "in 4 min"),
        (-3599, "59 min ago"),
        (-3600, "1 h ago"),
        (-7200, "2 h ago"),
        (-86399, "23 h ago"),
        (-3 * 86400, "3 d ago"),
        (90 * 60, "in 1 h"),
    ],
)
def test_relative_times(offset, expected):
    """Whole units rounded down, correct on each side of every boundary (45 s and 60 s included)."""
    assert views.relative(iso(NOW + offset) if offset is not None else None, NOW) == expected


@settings(max_examples=400, deadline=None)
@given(age=st.floats(min_value=-3 * 86400, max_value=3 * 86400, allow_nan=False))
def test_relative_times_are_words_for_every_age(age):
    """Any age, past or future, is one phrase with a whole positive amount in the largest fitting unit."""
    text = views.relative_seconds(age)
    if abs(age) < 1:
        assert text == "just now"
        return
    match = re.fullmatch(r"(in )?(\d+) (d|h|min|s)( ago)?", text)
    assert match is not None, text
    assert bool(match[1]) == (age > 0) and bool(match[4]) == (age < 0)
    size = dict(views.UNITS)[match[3]]
    assert int(match[2]) >= 1 and int(match[2]) * size <= abs(age) < (int(match[2]) + 1) * size


@settings(max_examples=60, deadline=None)
@given(age=st.integers(min_value=0, max_value=3600))
def test_page_table_and_detail_render_at_every_age(age):
    """The page, an environment's page, `status` and `status NAME` render whatever age their times have."""
    when = iso(NOW - age)
    shown = row(
        "pr1", "Failed", reason="ApplyFailed", message="boom", updated_at=when, next_attempt_at=iso(NOW + age)
    )
    meta = {"last_fetch_at": NOW - age, "revision": "a" * 40, "leader": "x", "role": "leader"}
    detail = {
        **shown,
        "region": "us-east-1",
        "outputs": {},
        "spec": {},
        "history": [{"at": when, "phase": "Failed", "reason": "ApplyFailed"}],
        "runs": [],
    }
    detail["drift"] = {"status": "InSync", "report": [], "checked_at": when}
    assert "pr1" in pages.page([shown], meta, NOW)
    assert "pr1" in pages.environment_page(detail, meta, NOW)
    assert "pr1" in views.table([shown], NOW)
    assert "pr1" in views.detail_text(detail, NOW)


def row(name: str, phase: str, **extra) -> dict:
    base = {
        "name": name,
        "kind": "preview",
        "phase": phase,
        "reason": "",
        "message": "",
        "pull_request": 1,
        "next_attempt_at": None,
        "expires_at": None,
        "updated_at": iso(NOW - 60),
        "revision": "a" * 40,
        "drift": {"status": None, "report": [], "checked_at": None},
        "deployment": {"id": None, "url": None, "commit": None},
    }
    return {**base, **extra}


def test_table_puts_failing_first_shows_the_whole_error_and_hides_old_destroyed():
    """Failed first with its reason, next retry and full error wrapped; Destroyed > 1 day hidden."""
    long_error = "terraform apply failed: " + "Error: creating EKS Cluster: ResourceInUseException " * 4
    rows = [
        row("pr1", "Ready"),
        row("pr2", "Failed", reason="ApplyFailed", message=long_error, next_attempt_at=iso(NOW + 240)),
        row("pr3", "Destroyed", updated_at=iso(NOW - 2 * 86400)),
        row("pr4", "Destroyed", updated_at=iso(NOW - 3600)),
    ]
    text = views.table(rows, NOW, width=60)
    lines = text.splitlines()
    assert lines[1].startswith("pr2") and "ApplyFailed" in lines[1] and lines[1].endswith("in 4 min")
    error_lines = [line for line in lines if line.startswith("    ")]
    assert " ".join(line.strip() for line in error_lines) == long_error.strip()
    assert all(len(line) <= 60 for line in error_lines)
    assert "pr3" not in text and "pr4" in text
    assert "(1 destroyed more than a day ago not shown; --all shows them)" in text
    assert "pr3" in views.table(rows, NOW, show_all=True)


def test_one_environment_tells_its_story():
    detail = row(
        "pr1",
        "Ready",
        reason="Applied",
        spec={"parameters": {"revision": "2"}},
        outputs={"environment_url": "https://pr1.example.com"},
        deployment={"id": "7", "url": "https://github.com/acme/shop/deployments/pr1", "commit": "abc"},
        history=[{"phase": "Ready", "reason": "Applied", "at": iso(NOW - 300)}],
        runs=[
            {
                "started_at": iso(NOW - 200),
                "finished_at": iso(NOW - 190),
                "seconds": 10.0,
                "action": "drift_check",
                "outcome": "drifted",
                "revision": "b" * 40,
            },
            {
                "started_at": iso(NOW - 400),
                "finished_at": iso(NOW - 300),
                "seconds": 100.0,
                "action": "apply",
                "outcome": "succeeded",
                "revision": "b" * 40,
            },
        ],
        drift={
            "status": "Drifted",
            "checked_at": iso(NOW - 60),
            "report": [
                {"address": "aws_vpc.main", "action": "update", "source": "plan", "attributes": ["tags"]}
            ],
        },
    )
    text = views.detail_text(detail, NOW)
    for fragment in (
        "pr1: Ready (Applied)",
        "deployment:         https://github.com/acme/shop/deployments/pr1",
        'revision: "2"',
        'environment_url: "https://pr1.example.com"',
        "drift: Drifted (checked 1 min ago)",
        "aws_vpc.main: update (plan): tags",
        "5 min ago     Ready (Applied)",
        "apply        succeeded    100 s",
        "drift_check  drifted",
    ):
        assert fragment in text, fragment


def test_a_retry_loop_is_one_row_with_a_count():
    """Dozens of Applying/Failed pairs collapse into one pair with how many times it happened."""
    loop = []
    for index in range(12):
        loop.append({"at": iso(NOW - 2 * index), "phase": "Failed", "reason": "ApplyFailed"})
        loop.append({"at": iso(NOW - 2 * index - 1), "phase": "Applying", "reason": ""})
    history = [*loop, {"at": iso(NOW - 100), "phase": "Pending", "reason": ""}]
    assert [(h["phase"], h["count"]) for h in views.collapsed(history)] == [
        ("Failed", 12),
        ("Applying", 12),
        ("Pending", 1),
    ]
    single = [{"at": iso(NOW), "phase": "DestroyHeld", "reason": "SafetyLimit"}] * 3
    assert [(h["phase"], h["count"]) for h in views.collapsed(single)] == [("DestroyHeld", 3)]
    assert views.collapsed([]) == []


def test_held_rows_show_no_retry_time_and_rows_show_the_applied_revision():
    """A held destroy waits for a person (no "next retry"); the page shows the applied revision."""
    held = row("pr1", "DestroyHeld", reason="SafetyLimit", next_attempt_at=iso(NOW - 5))
    failed = row("pr2", "Failed", next_attempt_at=iso(NOW + 240), applied_revision="b" * 40)
    text = views.table([held, failed], NOW)
    assert [line.split()[-1] for line in text.splitlines()[1:3]] == ["min", "-"]
    assert views.retry_at(held, NOW) == "-" and views.retry_at(failed, NOW) == "in 4 min"
    page = pages.page([held, failed], {"revision": "c" * 40}, NOW)
    assert "<th>Applied revision</th>" in page and "<code>bbbbbbbbbbbb</code>" in page
    assert "aaaaaaaaaaaa" not in page  # the last seen revision is not passed off as applied
