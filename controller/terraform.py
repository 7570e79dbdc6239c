"""TerraformRunner: every Terraform process envctl starts goes through here (sole subprocess user).

Argument lists only, never a shell; `-input=false`, TF_IN_AUTOMATION, a per-run
timeout, `-lock-timeout`; an environment built from an allowlist, so envctl's
own secrets never reach Terraform, providers or `local-exec`; output streamed line by line into structlog with
secrets redacted. On shutdown running processes get SIGINT (Terraform's graceful
stop: it saves state and releases the lock) and a grace period before SIGKILL.
A lock held by someone else is reported with its holder, never force-unlocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import structlog

from controller import metrics
from controller.errors import Interrupted, StateLocked, TerraformError
from controller.settings import SECRET_VARIABLES, TerraformSettings
from controller.tfoutput import (
    _EXCERPT_LINES,
    PR_SET_DUMPABLE,
    Redactor,
    _excerpt,
    _lock_field,
    child_environment,
    local_identity,
    lock_created,
    lock_error,
    make_undumpable,
    parse_version,
    terraform_running_in,
)
from controller.workspace import PLAN_FILE, Workspace

__all__ = [
    "PR_SET_DUMPABLE",
    "Redactor",
    "TerraformRunner",
    "_excerpt",
    "_lock_field",
    "child_environment",
    "lock_created",
    "lock_error",
    "make_undumpable",
    "parse_version",
    "terraform_running_in",
]

log = structlog.get_logger("envctl.terraform")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SUMMARY = re.compile(
    r"(Plan: \d+ to add|Apply complete!|Destroy complete!|No changes\.|Error: |Warning: |"
    r"Changes to Outputs:|Terraform has been successfully initialized)"
)
OUTPUT_FILE = ".envctl-terraform.log"
"""Where a Terraform run in a working directory writes its output (followed, not piped)."""
FOLLOW_SECONDS = 0.05


class TerraformRunner:
    """Runs init/plan/apply/destroy/show in one environment's working directory."""

    def __init__(
        self,
        settings: TerraformSettings,
        plugin_cache: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        plugin_cache.mkdir(parents=True, exist_ok=True)
        environ = os.environ if env is None else env
        base = child_environment(environ)
        base.update(
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
            CHECKPOINT_DISABLE="1",
            TF_PLUGIN_CACHE_DIR=str(plugin_cache),
            # Reuse a cached provider although the (synthesized, never committed) working directory
            # has no lock file naming its checksum. Without it every init installs the provider again
            # and rewrites the shared cache in place, under plans and applies of other environments
            # that are executing that very binary.
            TF_PLUGIN_CACHE_MAY_BREAK_DEPENDENCY_LOCK_FILE="1",
        )
        if settings.cli_config_file:
            base["TF_CLI_CONFIG_FILE"] = settings.cli_config_file
        self._env = base
        self.redact = Redactor(environ.get(name, "") for name in SECRET_VARIABLES)
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self.identity = local_identity()
        self._lock = threading.Lock()
        self._init_lock = threading.Lock()
        self._stopping = threading.Event()
        self.processes_started = 0

    # --- the commands ---------------------------------------------------------------------------

    def version(self) -> tuple[int, int, int]:
        """The binary's version, from `terraform version -json`."""
        code, lines = self._run(["version", "-json"], cwd=None, quiet=True, raw=True)
        if code != 0:
            raise TerraformError("terraform version failed", "\n".join(lines[-5:]))
        try:
            return parse_version(json.loads("\n".join(lines))["terraform_version"])
        except (ValueError, KeyError):
            return parse_version("\n".join(lines))

    def init(self, workspace: Workspace | Path, **bind: Any) -> None:
        workdir = _dir(workspace)
        # One init at a time: inits write the shared plugin cache, which Terraform does not make
        # safe for concurrent writers (racing inits fail with "file exists", or replace a provider
        # binary under a running plan).
        with self._init_lock:
            self._check(["init", "-input=false", "-no-color", "-reconfigure"], workdir, bind)

    def plan(self, workspace: Workspace | Path, *, lock: bool = True, **bind: Any) -> bool:
        """Plan into PLAN_FILE; True when it has changes (-detailed-exitcode 2).

        `lock=False`: a read-only plan for people (never applied) that never waits for a run's lock.
        """
        args = [
            "plan",
            "-input=false",
            "-no-color",
            "-detailed-exitcode",
            f"-out={PLAN_FILE}",
            *(self._lock_args() if lock else ["-lock=false"]),
        ]
        code = self._check(args, _dir(workspace), bind, ok=(0, 2))
        return code == 2

    def apply(self, workspace: Workspace | Path, **bind: Any) -> None:
        """Apply exactly the saved plan."""
        args = ["apply", "-input=false", "-no-color", *self._lock_args(), PLAN_FILE]
        self._check(args, _dir(workspace), bind)

    def force_unlock(self, workspace: Workspace | Path, lock_id: str, **bind: Any) -> None:
        """Release the lock `lock_id` of this working directory's state (`terraform force-unlock`)."""
        self._check(["force-unlock", "-force", lock_id], _dir(workspace), bind)

    def state_push(self, workspace: Workspace | Path, state: bytes, **bind: Any) -> None:
        """Upload a saved state as the environment's state (`terraform state push`).

        The state is written to a file outside the workspace for the command, then removed.
        """
        with tempfile.NamedTemporaryFile(prefix="envctl-push-", suffix=".tfstate") as file:
            file.write(state)
            file.flush()
            self._check(["state", "push", *self._lock_args(), file.name], _dir(workspace), bind)

    def destroy(self, workspace: Workspace | Path, **bind: Any) -> None:
        args = ["destroy", "-input=false", "-no-color", "-auto-approve", *self._lock_args()]
        self._check(args, _dir(workspace), bind)

    def busy(self, workspace: Workspace | Path) -> bool:
        """Whether a Terraform process (this one's or an earlier envctl's) still runs there."""
        workdir = _dir(workspace)
        return workdir.exists() and terraform_running_in(workdir)

    def left_by_us(self, locked: StateLocked) -> float | None:
        """When a lock this runner's identity took was created; None if it is not ours."""
        return lock_created(locked.created) if locked.holder == self.identity else None

    def show(self, workspace: Workspace | Path, **bind: Any) -> dict[str, Any]:
        """The saved plan as JSON."""
        # Not redacted line by line (that would break the JSON) and never logged: drift.report
        # masks what Terraform marks sensitive before anything leaves this process.
        code, lines = self._run(
            ["show", "-json", "-no-color", PLAN_FILE], _dir(workspace), bind, quiet=True, raw=True
        )
        if code != 0:
            raise TerraformError("terraform show failed", "\n".join(lines[-_EXCERPT_LINES:]))
        result: dict[str, Any] = json.loads("\n".join(lines))
        return result

    def show_text(self, workspace: Workspace | Path, **bind: Any) -> str:
        """The saved plan as Terraform prints it for people (secrets redacted)."""
        code, lines = self._run(["show", "-no-color", PLAN_FILE], _dir(workspace), bind, quiet=True)
        if code != 0:
            raise TerraformError("terraform show failed", "\n".join(lines[-_EXCERPT_LINES:]))
        return "\n".join(lines).strip() + "\n"

    def running(self) -> int:
        """How many Terraform processes this runner has running now."""
        with self._lock:
            return len(self._running)

    # --- shutdown -------------------------------------------------------------------------------

    def interrupt_all(self, grace_seconds: float | None = None) -> int:
        """SIGINT every running Terraform at once; SIGKILL what outlives one shared grace period."""
        grace = self.settings.grace_seconds if grace_seconds is None else grace_seconds
        with self._lock:
            self._stopping.set()
            running = list(self._running.values())
        for proc in running:
            log.warning("terraform_interrupt_sent", pid=proc.pid)
            _signal(proc, signal.SIGINT)
        # One deadline for all of them, not `grace` each in turn.
        deadline = time.monotonic() + grace
        for proc in running:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                log.error("terraform_killed_after_grace", pid=proc.pid, grace_seconds=grace)
                _signal(proc, signal.SIGKILL)
        return len(running)

    # --- plumbing -------------------------------------------------------------------------------

    def _lock_args(self) -> list[str]:
        return ["-lock=true", f"-lock-timeout={self.settings.lock_timeout_seconds}s"]

    def _check(
        self, args: list[str], workdir: Path, bind: Mapping[str, Any], ok: tuple[int, ...] = (0,)
    ) -> int:
        started = time.time()
        code, lines = self._run(args, workdir, bind)
        if code in ok:
            return code
        if self._stopping.is_set():
            raise Interrupted(f"terraform {args[0]} interrupted by shutdown")
        text = "\n".join(lines)
        if "Error acquiring the state lock" in text:
            locked = lock_error(text, _excerpt(lines), env=str(bind.get("env", "")))
            if args[0] != "force-unlock" and self.owns(locked, since=started, workdir=workdir):
                # Taken by the very process that then failed on it: the AWS SDK retried a lock write
                # whose first attempt had succeeded. Nobody else can hold it; release and run again.
                log.warning("own_lock_released", lock_id=locked.lock_id, command=args[0], **bind)
                self.force_unlock(workdir, locked.lock_id, **bind)
                return self._check(args, workdir, bind, ok)
            if locked.holder == self.identity and self.running():
                locked = lock_error(text, _excerpt(lines), env=str(bind.get("env", "")), ours=True)
            raise locked
        raise TerraformError(f"terraform {args[0]} failed (exit {code})", _excerpt(lines))

    def owns(self, locked: StateLocked, *, since: float, workdir: Path) -> bool:
        """Whether a lock was provably left by envctl: taken on this host by this user at or after
        `since`, with no process still running in `workdir`."""
        created = lock_created(locked.created)
        return (
            locked.holder == self.identity
            and created is not None
            and created >= since - 1.0
            and not terraform_running_in(workdir)
        )

    def _run(  # noqa: PLR0915 - one process's whole life: start, follow, time out, reap
        self,
        args: list[str],
        cwd: Path | None,
        bind: Mapping[str, Any] | None = None,
        quiet: bool = False,
        raw: bool = False,
    ) -> tuple[int, list[str]]:
        """Run terraform; return exit code and (redacted) output lines.

        Terraform writes to a file that this process follows, not to a pipe: if envctl dies, its
        Terraform still finishes its run and releases its lock instead of dying on a broken pipe.
        """
        logger = log.bind(command=args[0], **(bind or {}))
        tail: deque[str] = deque(maxlen=2000 if quiet else 400)
        with contextlib.ExitStack() as files:
            sink: IO[bytes]
            if cwd is not None:
                output = cwd / OUTPUT_FILE
                sink = files.enter_context(output.open("wb"))
            else:
                sink = files.enter_context(tempfile.NamedTemporaryFile(prefix="envctl-terraform-"))
                output = Path(sink.name)
            source = files.enter_context(output.open("rb"))
            # Checked and registered under one lock: no process can start once a shutdown began.
            with self._lock:
                if self._stopping.is_set():
                    raise Interrupted(f"terraform {args[0]} not started: shutting down")
                proc = subprocess.Popen(
                    [self.settings.binary, *args],
                    cwd=cwd,
                    env=self._env,
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                self._running[proc.pid] = proc
                self.processes_started += 1
            started = time.monotonic()
            timer = threading.Timer(self.settings.timeout_seconds, self._timeout, args=(proc, logger))
            timer.daemon = True
            timer.start()

            def take(data: bytes) -> None:
                text = _ANSI.sub("", data.decode("utf-8", errors="replace").rstrip("\r"))
                line = text if raw else self.redact(text)
                tail.append(line)
                if not quiet and line.strip():
                    # Each line at debug; the run's summary and its errors at info.
                    important = _SUMMARY.match(line.strip("│ ").strip())
                    (logger.info if important else logger.debug)("terraform_output", line=line)

            try:
                pending = b""
                while True:
                    chunk = source.read(65536)
                    if chunk:
                        *lines, pending = (pending + chunk).split(b"\n")
                        for data in lines:
                            take(data)
                    elif proc.poll() is not None:
                        # Exited, and everything it wrote has been read.
                        if not source.read(1):
                            break
                        source.seek(-1, os.SEEK_CUR)
                    else:
                        time.sleep(FOLLOW_SECONDS)
                if pending:
                    take(pending)
                code = proc.wait()
            finally:
                timer.cancel()
                with self._lock:
                    self._running.pop(proc.pid, None)
        metrics.TERRAFORM_SECONDS.labels(args[0]).observe(time.monotonic() - started)
        metrics.TERRAFORM_RUNS.labels(args[0], "ok" if code in (0, 2) else "error").inc()
        if not quiet:
            logger.info("terraform_exited", exit_code=code)
        return code, list(tail)

    def _timeout(self, proc: subprocess.Popen[bytes], logger: Any) -> None:
        logger.error("terraform_timeout", timeout_seconds=self.settings.timeout_seconds)
        _signal(proc, signal.SIGINT)
        try:
            proc.wait(timeout=self.settings.grace_seconds)
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL)


def _dir(workspace: Workspace | Path) -> Path:
    return workspace.path if isinstance(workspace, Workspace) else workspace


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal Terraform's whole process group, as a terminal's Ctrl-C would.

    Terraform runs as a panicwrap parent that ignores SIGINT and a child that
    handles it; both, their providers and provisioner commands share the group
    we started them in (start_new_session), so the group is the right target.
    """
    # The process may have exited between the check and the signal.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
