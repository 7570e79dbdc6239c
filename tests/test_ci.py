"""The test run's own guards: a deadlocked test fails within its limit and the run goes on."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

DEADLOCK = """
import threading
import pytest


@pytest.mark.timeout(2)
def test_deadlocks():
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()


def test_after_it():
    pass
"""


def test_a_deadlocked_test_fails_at_its_timeout_and_the_run_continues(tmp_path):
    """With the project's pytest settings, a test stuck on a lock fails ("Timeout") and the next
    test still runs: CI reports a failure instead of hanging for 90 minutes."""
    (tmp_path / "test_stuck.py").write_text(DEADLOCK)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_stuck.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 passed" in result.stdout and "Timeout (>2.0s)" in result.stdout
