"""`envctl` as a process: graceful shutdown, status, validate, synth, plan and destroy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from controller.settings import Settings
from tests.conftest import ROOT
from tests.integration.conftest import Aws, Repo, env_keys, make_settings, persistent, preview


def write_config(tmp_path: Path, settings_raw: dict) -> Path:
    path = tmp_path / "envctl.yaml"
    path.write_text(yaml.safe_dump(settings_raw))
    return path


def raw_settings(settings: Settings) -> dict:
    """The settings file text equivalent to a Settings object (for subprocess runs)."""
    return {
        "repository": {
            "url": settings.repository.url,
            "branch": "main",
            "path": "environments",
            "poll_seconds": 1,
        },
        "workdir": str(settings.workdir),
        "stack": settings.stack,
        "state": {
            "bucket": settings.state.bucket,
            "region": "us-east-1",
            "lock": "dynamodb",
            "lock_table": settings.state.lock_table,
            "endpoint": settings.state.endpoint,
        },
        "terraform": {
            "binary": settings.terraform.binary,
            "cli_config_file": settings.terraform.cli_config_file,
            "lock_timeout_seconds": 2,
            "grace_seconds": 30,
            "plugin_cache_dir": settings.terraform.plugin_cache_dir,
        },
        "api": {"host": "127.0.0.1", "port": 0},
    }


def envctl(
    *args: str, config: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `envctl ARGS --config CONFIG` as a process and return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "controller", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
        env=env,
    )


def setup(tmp_path: Path, repo: Repo, aws: Aws, toolchain, **overrides) -> tuple[Settings, Path]:
    settings = make_settings(tmp_path, repo, aws, toolchain, **overrides)
    raw = raw_settings(settings)
    raw.update(overrides)
    return settings, write_config(tmp_path, raw)


def status(config: Path) -> dict[str, dict]:
    result = envctl("status", "--json", config=config)
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def reconcile_until_slow(config: Path) -> subprocess.Popen[str]:
    """`envctl reconcile` as a process, returned once Terraform is creating the slow resource."""
    proc = subprocess.Popen(
        # At debug: Terraform's own lines (the slow resource's progress) are debug events.
        [sys.executable, "-m", "controller", "reconcile", "--config", str(config), "--log-level", "debug"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        seen.append(line)
        if "null_resource.slow: Creating" in line or "null_resource.slow: Still creating" in line:
            return proc
        assert time.monotonic() < deadline, "".join(seen[-20:])
    raise AssertionError("envctl ended before the slow resource: " + "".join(seen[-20:]))


def test_sigterm_interrupts_terraform_gracefully_and_the_next_run_resumes(tmp_path, repo, aws, toolchain):
    """SIGTERM mid-apply: Terraform stops, saves state, releases the lock; the next run applies cleanly."""
    settings, config = setup(tmp_path, repo, aws, toolchain)
    repo.write("pr1", preview(1, sleep_seconds=60))
    proc = reconcile_until_slow(config)
    lock_id = f"{aws.bucket}/{settings.state.key('pr1')}"
    assert lock_id in {item["LockID"]["S"] for item in aws.lock_items()}
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 1
    assert "terraform_interrupt_sent" in output
    # Interrupted: the 60 s resource never finished.
    assert "null_resource.slow: Creation complete" not in output
    # The lock was released by Terraform itself; nobody force-unlocked anything.
    assert lock_id not in {item["LockID"]["S"] for item in aws.lock_items()}
    assert "force-unlock" not in output
    record = status(config)["pr1"]
    assert record["phase"] == "Failed"
    assert record["reason"] == "Interrupted"
    # The other resources were saved to state before the interrupt.
    saved = aws.state(settings.state.key("pr1"))
    assert len([r for r in saved["resources"] if r["name"] != "slow"]) == 6
    repo.write("pr1", preview(1, sleep_seconds=1))
    result = envctl("reconcile", config=config)
    assert result.returncode == 0, result.stdout[-3000:]
    assert status(config)["pr1"]["phase"] == "Ready"


def test_status_json_lists_every_environment(tmp_path, repo, aws, toolchain):
    """`envctl status --json` has name, kind, phase, revision and message for each environment."""
    _, config = setup(tmp_path, repo, aws, toolchain)
    repo.write("pr1", preview(1))
    repo.write("staging", persistent())
    repo.write("pr2", {"kind": "preview"})
    result = envctl("reconcile", config=config)
    assert result.returncode == 0, result.stdout[-2000:]
    rows = status(config)
    assert {name: row["phase"] for name, row in rows.items()} == {
        "pr1": "Ready",
        "pr2": "Invalid",
        "staging": "Ready",
    }
    head = repo.clone.head.commit.hexsha
    assert rows["pr1"]["revision"] == head and rows["staging"]["kind"] == "persistent"
    assert "pull_request" in rows["pr2"]["message"]
    table = envctl("status", config=config)
    assert "pr1" in table.stdout and "Ready" in table.stdout and head[:12] in table.stdout


def test_a_status_that_cannot_be_shown_is_one_line_naming_the_failure(tmp_path, repo, aws, toolchain):
    """A value the table cannot render (a corrupt `last_fetch_at`) is one line on stderr, exit 1,
    naming the command and the error; no traceback."""
    from controller.store import StatusStore

    settings, config = setup(tmp_path, repo, aws, toolchain)
    store = StatusStore(settings.workdir / "status.db")
    store.set_meta("last_fetch_at", "yesterday-ish")
    store.close()
    result = envctl("status", config=config)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "envctl: status failed: ValueError: could not convert string to float: 'yesterday-ish' (a bug; "
        "`--log-level debug` shows the traceback)"
    ]


def test_destroy_needs_confirm_and_then_destroys(tmp_path, repo, aws, toolchain):
    """A removed persistent environment with deletion: destroy is held; `destroy --confirm` releases it."""
    settings, config = setup(tmp_path, repo, aws, toolchain)
    repo.write("staging", {**persistent(), "deletion": "destroy"})
    repo.write("pr1", preview(1))
    assert envctl("reconcile", config=config).returncode == 0
    repo.remove("staging")
    assert envctl("reconcile", config=config).returncode == 0
    held = status(config)["staging"]
    assert (held["phase"], held["reason"]) == ("DestroyHeld", "PersistentNeedsConfirmation")
    assert aws.objects() == env_keys(settings.state, "pr1", "staging")
    refused = envctl("destroy", "staging", config=config)
    assert refused.returncode == 2
    assert "--confirm" in refused.stderr
    done = envctl("destroy", "staging", "--confirm", config=config)
    assert done.returncode == 0, done.stdout[-2000:]
    assert aws.objects() == env_keys(settings.state, "pr1")
    assert status(config)["staging"]["phase"] == "Destroyed"


def test_confirming_an_environment_that_is_not_held_changes_nothing(tmp_path, repo, aws, toolchain):
    """`--confirm` on an open, Ready environment exits 2 and records nothing; a later mass removal is held."""
    settings, config = setup(tmp_path, repo, aws, toolchain, safety={"max_destroys_per_pass": 2})
    for pr in (1, 2, 3):
        repo.write(f"pr{pr}", preview(pr))
    assert envctl("reconcile", config=config).returncode == 0
    refused = envctl("destroy", "pr1", "--confirm", config=config)
    assert refused.returncode == 2
    assert "pr1: not waiting for a destroy (phase Ready)" in refused.stderr
    assert "close its pull request" in refused.stderr
    assert status(config)["pr1"]["phase"] == "Ready"
    repo.remove("pr1", "pr2", "pr3")
    assert envctl("reconcile", config=config).returncode == 0
    assert {row["phase"] for row in status(config).values()} == {"DestroyHeld"}
    assert aws.objects() == env_keys(settings.state, "pr1", "pr2", "pr3")


def test_a_persistent_environment_flipped_to_a_closed_preview_is_held(tmp_path, repo, aws, toolchain):
    """staging: persistent -> preview, state: closed is held (a kind change away from persistent);
    state intact; confirming releases it, and then the closed preview is destroyed."""
    settings, config = setup(tmp_path, repo, aws, toolchain)
    repo.write("staging", persistent())
    assert envctl("reconcile", config=config).returncode == 0
    state_before = aws.state(settings.state.key("staging"))
    repo.write("staging", {"kind": "preview", "pull_request": 9, "state": "closed"})
    assert envctl("reconcile", config=config).returncode == 0
    row = status(config)["staging"]
    assert (row["phase"], row["reason"]) == ("DestroyHeld", "KindChangeNeedsConfirmation")
    assert "envctl destroy staging --confirm" in row["message"]
    assert aws.state(settings.state.key("staging")) == state_before
    assert envctl("reconcile", config=config).returncode == 0
    assert aws.state(settings.state.key("staging")) == state_before
    confirmed = envctl("destroy", "staging", "--confirm", config=config)
    assert confirmed.returncode == 0, confirmed.stdout[-2000:] + confirmed.stderr
    assert "staging: destroyed" in confirmed.stdout
    assert aws.objects() == []


def test_destroy_confirm_with_a_lost_workdir_uses_the_inventory(tmp_path, repo, aws, toolchain):
    """With the workdir gone and the file removed, `destroy --confirm` still finds what to destroy."""
    settings, config = setup(tmp_path, repo, aws, toolchain)
    repo.write("pr1", preview(1))
    repo.write("pr2", preview(2))
    assert envctl("reconcile", config=config).returncode == 0
    repo.remove("pr1")
    shutil.rmtree(settings.workdir)
    done = envctl("destroy", "pr1", "--confirm", config=config)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "pr1: destroyed" in done.stdout
    assert aws.objects() == env_keys(settings.state, "pr2")
    missing = envctl("destroy", "pr3", "--confirm", config=config)
    assert missing.returncode == 2
    assert "pr3: no such environment, in the repository, the status store or the inventory" in missing.stderr


def test_synth_and_plan_one_environment(tmp_path, repo, aws, toolchain):
    """`envctl synth` writes the stack with its own backend key; `envctl plan` prints Terraform's
    plan text (not log events) and a one-line summary."""
    _, config = setup(tmp_path, repo, aws, toolchain)
    repo.write("pr7", preview(7))
    out = tmp_path / "out"
    result = envctl("synth", "pr7", "--out", str(out), config=config)
    assert result.returncode == 0, result.stderr
    document = json.loads((out / "main.tf.json").read_text())
    assert document["terraform"]["backend"]["s3"]["key"] == "envctl/pr7/terraform.tfstate"
    assert "null_resource" in document["resource"]
    plan = envctl("plan", "pr7", config=config)
    assert plan.returncode == 0, plan.stdout[-2000:]
    assert "# null_resource.cluster will be created" in plan.stdout
    assert plan.stdout.strip().splitlines()[-1] == "pr7: Plan: 6 to add, 0 to change, 0 to destroy."
    assert '"event"' not in plan.stdout
    missing = envctl("synth", "pr99", config=config)
    assert missing.returncode == 2 and "pr99" in missing.stderr


def test_validate_reports_each_problem_on_a_line(tmp_path):
    """`envctl validate DIR` exits 1 with one line per bad file naming file and field."""
    folder = tmp_path / "environments"
    folder.mkdir()
    (folder / "pr1.yaml").write_text("kind: preview\npull_request: 1\n")
    (folder / "pr2.yaml").write_text("kind: preview\n")
    (folder / "Bad.yaml").write_text("kind: preview\npull_request: 3\n")
    (folder / "staging.yaml").write_text("kind: persistent\nsize: big\n")
    result = subprocess.run(
        [sys.executable, "-m", "controller", "validate", str(folder)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    assert any("pr2.yaml: pull_request: None" in line for line in lines)
    assert any("Bad.yaml: name: 'Bad'" in line for line in lines)
    assert any("staging.yaml: size: 'big'" in line for line in lines)


def test_validate_checks_the_stack_parameters_and_lists_every_problem(tmp_path):
    """`envctl validate --stack-only` (no settings file, no AWS credentials): a mistyped parameter
    and field are named with a suggestion, every problem of a file on a line of its own."""
    folder = tmp_path / "environments"
    folder.mkdir()
    (folder / "pr1.yaml").write_text("kind: preview\npull_request: 1\nparameters: {revison: '3'}\n")
    (folder / "pr2.yaml").write_text(
        "kind: preview\npull_request: 2\nparamters: {}\nparameters: {nat_gateways: many, tags: [a]}\n"
    )
    (folder / "pr3.yaml").write_text("kind: preview\npull_request: 3\nparameters: {nat_gateways: single}\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [sys.executable, "-m", "controller", "validate", "--stack-only", str(folder)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
        env=environment,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        f"{folder}/pr1.yaml: parameters.revison: unknown parameter of the platform stack; expected one of "
        "availability_zones, cluster_admin_arns, deploy_role_arn, image_tag_mutability, kubernetes_version, "
        "namespaces, nat_gateways, permissions_boundary_arn, public_access_cidrs, tags",
        f"{folder}/pr2.yaml: paramters: {{}} is not allowed; expected only the fields kind, pull_request, "
        "state, region, deletion, parameters, drift, ttl, commit; did you mean `parameters`?",
    ]
    demo = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller",
            "validate",
            "--stack-only",
            "--stack",
            "stack.demo:build",
            str(folder),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
        env=environment,
    )
    assert demo.returncode == 1
    assert (
        "pr1.yaml: parameters.revison: unknown parameter of the demo stack; did you mean `revision`?"
        in demo.stdout
    )
    assert "pr3.yaml: parameters.nat_gateways: unknown parameter of the demo stack" in demo.stdout


def test_shipped_examples_are_valid():
    """The example environments in environments/ pass `envctl validate`."""
    result = subprocess.run(
        [sys.executable, "-m", "controller", "validate", str(ROOT / "environments")],
        capture_output=True,
        text=True,
        cwd=ROOT / "tests",
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout
    assert "4 environment files" in result.stdout


def test_bad_settings_file_is_a_usage_error(tmp_path):
    """A settings file with a bad value exits 2 naming the file, field, value and what is allowed."""
    config = tmp_path / "envctl.yaml"
    config.write_text("repository: {url: /x}\nterraform: {concurrency: 0}\n")
    result = subprocess.run(
        [sys.executable, "-m", "controller", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"{config}: terraform.concurrency: 0 is not allowed; expected a number above 0" in result.stderr


def test_drift_command_exit_codes(tmp_path, repo, aws, toolchain):
    """`envctl drift NAME`: 0 in sync, 2 drifted (persistent: reported, not repaired), 2 for a usage error."""
    from tests.integration.conftest import tamper

    settings, config = setup(tmp_path, repo, aws, toolchain)
    repo.write("staging", persistent())
    assert envctl("reconcile", config=config).returncode == 0
    clean = envctl("drift", "staging", config=config)
    assert (clean.returncode, clean.stdout) == (0, "staging: in_sync\n")

    def drop(state):
        state["resources"] = [r for r in state["resources"] if r["name"] != "secrets"]

    tamper(aws, settings.state.key("staging"), drop)
    drifted = envctl("drift", config=config)
    assert drifted.returncode == 2
    assert drifted.stdout.splitlines() == [
        "staging: drifted",
        "  null_resource.secrets: create (plan): triggers",
    ]
    row = status(config)["staging"]
    assert row["drift"]["status"] == "Drifted"
    assert row["drift"]["report"][0]["address"] == "null_resource.secrets"
    table = envctl("status", config=config).stdout
    assert "Drifted" in table
    missing = envctl("drift", "pr404", config=config)
    assert missing.returncode == 2 and "pr404: not a Ready environment" in missing.stderr
    everything = envctl("drift", "--repair", config=config)
    assert everything.returncode == 2 and "--repair needs the environment's name" in everything.stderr
    repaired = envctl("drift", "staging", "--repair", config=config)
    assert (repaired.returncode, repaired.stdout) == (0, "staging: repaired\n")
    assert "secrets" in {r["name"] for r in aws.state(settings.state.key("staging"))["resources"]}


def test_start_checks_name_what_to_fix(tmp_path, repo, aws, toolchain):
    """A missing state bucket, a Terraform older than 1.6, and lockfile locking before 1.10 fail at start."""
    settings, _ = setup(tmp_path, repo, aws, toolchain)
    raw = raw_settings(settings)
    raw["state"]["bucket"] = "no-such-bucket-here"
    missing = envctl("reconcile", config=write_config(tmp_path, raw))
    assert missing.returncode == 1
    assert "state.bucket: 'no-such-bucket-here' is not reachable" in missing.stderr

    def terraform_reporting(version: str) -> str:
        # Stands in for an installed older Terraform: only `version -json` is asked before refusing.
        binary = tmp_path / f"terraform-{version}"
        binary.write_text(f'#!/bin/sh\necho \'{{"terraform_version": "{version}"}}\'\n')
        binary.chmod(0o755)
        return str(binary)

    raw = raw_settings(settings)
    raw["terraform"]["binary"] = terraform_reporting("1.5.7")
    old = envctl("reconcile", config=write_config(tmp_path, raw))
    assert old.returncode == 1
    assert (
        f"terraform.binary: {raw['terraform']['binary']!r} is Terraform 1.5.7; "
        "envctl needs Terraform 1.6.0 or newer"
    ) in old.stderr
    raw["terraform"]["binary"] = terraform_reporting("1.9.8")
    raw["state"]["lock"] = "s3"
    no_lockfile = envctl("reconcile", config=write_config(tmp_path, raw))
    assert no_lockfile.returncode == 1
    assert (
        "state.lock: 's3' is not allowed with Terraform 1.9.8; expected dynamodb, or Terraform 1.10"
        in no_lockfile.stderr
    )
    assert aws.objects() == []
