"""`make run`'s sandbox: from nothing to every bundled environment Ready, then a clean Ctrl-C."""

from __future__ import annotations

import os
import re
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
    # A session of its own, as a terminal runs `make run`: Ctrl-C goes to the whole group.
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.sandbox"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=env,
        start_new_session=True,
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
        moto = int(re.search(r"moto pid (\d+)", log.read_text()).group(1))
        # The terminal's Ctrl-C reaches the sandbox's group; moto is not in it.
        assert os.getpgid(proc.pid) == proc.pid and os.getpgid(moto) != proc.pid
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            stop_daemon(proc, log, signal.SIGINT)
    output = log.read_text()
    assert re.search(r"status page: http://127\.0\.0\.1:\d+/", output)
    # envctl stopped (its Terraform saved state to moto) before moto was stopped.
    assert output.index('"event": "daemon_stopped"') < output.index("envctl stopped; stopping moto")
    assert proc.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    assert '"event": "daemon_stopped"' in output
    # The recommended lock: Terraform's own lock file in the bucket (the toolchain's Terraform has it).
    assert "lock: s3)" in output
