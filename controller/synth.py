"""The warm synth worker's client: Environment -> synthesized `main.tf.json`, checked.

Importing the AWS provider bindings costs 15-25 s and up to 1.6 GB, so it is
done once, in one long-lived child process, which is recycled after N synths or
when its memory grows past a bound. The controller itself never imports cdktf.
Before anything runs Terraform, the synthesized backend is checked to be
exactly this environment's own S3 key.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog

from controller.errors import SynthError, TransientError
from controller.settings import SynthSettings
from controller.types import Environment

log = structlog.get_logger("envctl.synth")


@dataclass(frozen=True)
class Synthesized:
    """A synthesized stack ready for Terraform."""

    dir: Path
    file: Path


def stack_version(entry: str) -> str:
    """A digest of the stack code: every source file of the entry's top-level package."""
    top = entry.partition(":")[0].split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None:
        raise SynthError(f"stack: {entry!r}: module {top!r} cannot be found")
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] or [Path(spec.origin or "")]
    digest = hashlib.sha256()
    for root in roots:
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in files:
            if path.suffix in (".py", ".json", ".yaml") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root.parent)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def parameter_problems(entry: str, environment: Environment) -> list[str] | None:
    """What the stack `entry` would refuse in `environment.parameters`, without synthesizing.

    By convention a stack package declares its parameters in `<package>.parameters`, a pure
    module (no cdktf) with `check(entry, environment) -> list[str] | None`. None: the stack
    declares nothing there, and its parameters are checked when it synthesizes.
    """
    package = entry.partition(":")[0].split(".")[0]
    try:
        module = importlib.import_module(f"{package}.parameters")
    except ModuleNotFoundError:
        return None
    check = getattr(module, "check", None)
    if not callable(check):
        return None
    problems = check(entry, environment)
    return None if problems is None else [str(problem) for problem in problems]


def check_backend(document: dict[str, Any], expected: dict[str, Any], source: str) -> None:
    """Refuse a synthesized stack whose backend is not exactly the expected S3 key."""
    backends = document.get("terraform", {}).get("backend", {})
    if list(backends) != ["s3"]:
        raise SynthError(
            f"{source}: terraform.backend: {sorted(backends)!r} is not allowed; expected only s3"
        )
    actual = backends["s3"]
    for field in ("bucket", "key", "region"):
        if actual.get(field) != expected[field]:
            raise SynthError(
                f"{source}: terraform.backend.s3.{field}: {actual.get(field)!r} is not allowed; "
                f"expected {expected[field]!r}"
            )


WORKER_NAMES = frozenset(
    ("PATH", "HOME", "USER", "LANG", "TZ", "TMPDIR", "VIRTUAL_ENV", "SSL_CERT_FILE", "SSL_CERT_DIR")
)
WORKER_PREFIXES = ("JSII_", "NODE_", "LC_", "PYTHON", "COVERAGE_", "COV_CORE_")


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The synth worker's environment, from an allowlist."""
    return {
        name: value
        for name, value in environ.items()
        if name in WORKER_NAMES or name.startswith(WORKER_PREFIXES)
    }


class SynthWorker:
    """A single warm worker process, used by one synth at a time."""

    def __init__(self, entry: str, settings: SynthSettings, env: dict[str, str] | None = None) -> None:
        self.entry = entry
        self.settings = settings
        # What stack code may see of envctl's environment: what Python, Node.js and jsii need,
        # never envctl's secrets, git credentials or AWS credentials (synthesis calls no API).
        self._env = worker_environment(os.environ if env is None else env)
        self._env.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
        self._env.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._served = 0
        self._rss_mb = 0.0
        self.synths = 0
        self.starts = 0

    def start(self) -> None:
        """Start (and warm) the worker now rather than on the first synth."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller.synth_worker", self.entry],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
            env=self._env,
            # Its own process group: a terminal's Ctrl-C must not kill it (or its Node.js process)
            # under the controller, which stops it by closing its stdin.
            start_new_session=True,
        )
        self.starts += 1
        assert proc.stdout is not None
        hello = self._read(proc, proc.stdout)
        if not hello.get("ready"):
            proc.wait()
            raise SynthError(f"stack: {self.entry!r}: {hello.get('error', 'worker did not start')}")
        self._proc, self._served, self._rss_mb = proc, 0, float(hello.get("rss_mb", 0))
        log.info("synth_worker_started", pid=proc.pid, seconds=round(time.monotonic() - started, 2))
        return proc

    def _read(self, proc: subprocess.Popen[str], stream: IO[str]) -> dict[str, Any]:
        ready, _, _ = select.select([stream], [], [], self.settings.timeout_seconds)
        line = stream.readline() if ready else ""
        if not line:
            proc.kill()
            proc.wait()
            self._proc = None
            reason = "timed out" if not ready else f"exited with {proc.returncode}"
            raise TransientError(f"synth worker {reason}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def synth(self, environment: Environment, backend: dict[str, Any], outdir: Path) -> Synthesized:
        """Synthesize one environment into `outdir/main.tf.json`, backend set and checked."""
        with self._lock:
            if self._proc is not None and (
                self._served >= self.settings.max_synths or self._rss_mb > self.settings.max_rss_mb
            ):
                log.info("synth_worker_recycled", synths=self._served, rss_mb=self._rss_mb)
                self._stop()
            proc = self._ensure()
            assert proc.stdin is not None and proc.stdout is not None
            request = {"environment": environment.spec(), "backend": backend, "outdir": str(outdir)}
            try:
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
            except BrokenPipeError as error:
                self._proc = None
                raise TransientError("synth worker went away") from error
            answer = self._read(proc, proc.stdout)
            self._served += 1
            self.synths += 1
            self._rss_mb = float(answer.get("rss_mb", self._rss_mb))
        if not answer["ok"]:
            if answer.get("kind") == "invalid":
                # The stack's validation refused this input: waits for a change of the file or stack.
                raise SynthError(f"{environment.file}: stack {self.entry} rejected it: {answer['error']}")
            # Anything else (a stack bug, a jsii crash, a full disk) is retried with backoff.
            log.error(
                "synth_crashed",
                env=environment.name,
                error=answer["error"],
                traceback=answer.get("traceback", ""),
            )
            raise TransientError(f"{environment.file}: stack {self.entry} failed: {answer['error']}")
        file = Path(answer["file"])
        text = file.read_text()
        check_backend(json.loads(text), backend, environment.file)
        return Synthesized(dir=outdir, file=file)

    def _stop(self) -> None:
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        with self._lock:
            self._stop()
