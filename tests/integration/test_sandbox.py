"""`make run`'s sandbox: from nothing to every bundled environment Ready, then a clean Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request

import git

from controller.store import StatusStore
from tests.conftest import ROOT
from tests.integration.test_daemon import stop_daemon, wait_for


def test_sandbox_converges_the_bundled_environments_and_follows_commits(tmp_path):  # noqa: PLR0915 - one walk through the sandbox, as a newcomer takes it
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
        # A second `make run` on the same folder is refused before it touches anything.
        second = subprocess.run(
            [sys.executable, "-m", "bench.sandbox"],
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=60,
        )
        assert second.returncode == 2
        assert f"{tmp_path} is in use by a running sandbox (pid {proc.pid})" in second.stderr
        # One on another folder but the same port is refused naming the variable that moves it.
        port = re.search(r"status page: http://127\.0\.0\.1:(\d+)/", log.read_text()).group(1)
        elsewhere = {**env, "ENVCTL_SANDBOX_DIR": str(tmp_path / "other"), "ENVCTL_API_PORT": port}
        third = subprocess.run(
            [sys.executable, "-m", "bench.sandbox"],
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=elsewhere,
            timeout=60,
        )
        assert third.returncode == 2 and "set ENVCTL_API_PORT to a free port" in third.stderr
        assert not (tmp_path / "other" / "work").exists()
        # The first sandbox is untouched: its records, its workdir and its API.
        assert phases() == dict.fromkeys(["pr42", "pr7284", "pr7301", "production", "staging"], "Ready")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as ready:
            assert ready.status == 200
        # Another shell: the banner's exports alone (no AWS variables of this test) reach the sandbox.
        exports = dict(re.findall(r"(\w+)=(\S+)", re.search(r"  export (.*)", log.read_text()).group(1)))
        shell = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ENVCTL_"))}
        shell.update(exports)
        listed = subprocess.run(
            [sys.executable, "-m", "controller", "status"],
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=shell,
            timeout=60,
        )
        assert listed.returncode == 0 and "pr42" in listed.stdout, listed.stderr
        unlock = subprocess.run(
            [sys.executable, "-m", "controller", "unlock", "pr42", "0000", "--confirm"],
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=shell,
            timeout=120,
        )
        # It reaches Terraform (no such lock), not a credentials error.
        assert unlock.returncode == 1 and "credentials" not in unlock.stderr.lower(), unlock.stderr
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
    assert f"settings: {tmp_path}/envctl.yaml" in output
    assert f"export ENVCTL_CONFIG={tmp_path}/envctl.yaml AWS_SHARED_CREDENTIALS_FILE=" in output
    # envctl stopped (its Terraform saved state to moto) before moto was stopped.
    assert output.index('"event": "daemon_stopped"') < output.index("envctl stopped; stopping moto")
    assert proc.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    assert '"event": "daemon_stopped"' in output
    # The recommended lock: Terraform's own lock file in the bucket (the toolchain's Terraform has it).
    assert "lock: s3)" in output
