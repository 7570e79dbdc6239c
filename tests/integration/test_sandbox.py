"""`make run`'s sandbox: from nothing to every bundled environment Ready, then a clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import git

from controller.store import StatusStore
from tests.conftest import ROOT
from tests.integration.test_daemon import stop_daemon, wait_for


def test_sandbox_converges_the_bundled_environments_and_follows_commits(tmp_path):
    """The sandbox applies the four examples, applies a committed new preview, and stops on SIGINT."""
    env = {**os.environ, "ENVCTL_SANDBOX_DIR": str(tmp_path), "ENVCTL_API_PORT": "0"}
    log = tmp_path / "sandbox.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.sandbox"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=env,
    )
    database = tmp_path / "work" / "status.db"
    try:
        wait_for(database.exists)
        store = StatusStore(database)

        def phases() -> dict[str, str]:
            return {name: str(r.phase) for name, r in store.load_all().items()}

        wait_for(lambda: phases() == dict.fromkeys(["pr7284", "pr7301", "production", "staging"], "Ready"))
        repo = git.Repo(tmp_path / "environments-repo")
        (tmp_path / "environments-repo" / "environments" / "pr42.yaml").write_text(
            "kind: preview\npull_request: 42\n"
        )
        repo.index.add(["environments/pr42.yaml"])
        repo.index.commit("open pr42")
        wait_for(lambda: phases().get("pr42") == "Ready")
        store.close()
    finally:
        stop_daemon(proc, log, signal.SIGINT)
    output = log.read_text()
    assert proc.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    assert '"event": "daemon_stopped"' in output
    # The recommended lock: Terraform's own lock file in the bucket (the toolchain's Terraform has it).
    assert "(lock: s3)" in output
