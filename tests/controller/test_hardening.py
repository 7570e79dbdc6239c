"""envctl's own process cannot be read by what it starts (same user, no privileges)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROBE = """
import ctypes, os, subprocess, sys
from controller.terraform import PR_SET_DUMPABLE, make_undumpable
if os.geteuid() == 0:
    # As an unprivileged user (root reads any process's memory); changing user makes a process
    # undumpable by itself, so an ordinary one is made dumpable again first.
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
if sys.argv[1] == "hardened":
    assert make_undumpable()
# A child of the same user, like a local-exec of Terraform: read the parent's environment.
child = subprocess.run(["cat", f"/proc/{os.getpid()}/environ"], capture_output=True)
print("readable" if b"token-in-the-parent" in child.stdout else "refused")
"""


@pytest.mark.parametrize(("mode", "expected"), [("plain", "readable"), ("hardened", "refused")])
def test_a_child_cannot_read_envctls_environment_once_hardened(mode, expected):
    """Same user, no privileges: an ordinary process's environ is readable by its child; after
    make_undumpable it is not (run as an unprivileged user when the tests run as root)."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "ENVCTL_API_TOKEN": "token-in-the-parent"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
