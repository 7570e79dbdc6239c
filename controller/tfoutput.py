"""What Terraform prints and writes, read: versions, lock errors, error excerpts, secrets redacted.

Pure helpers of controller.terraform (which alone starts Terraform), and the
allowlist of what a Terraform process may see of envctl's environment.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import socket
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

from controller.errors import PermanentError, StateLocked, TerraformError
from controller.secrets import known_values, mask
from controller.settings import Settings

_EXCERPT_LINES = 25


_SECRET_ASSIGNMENT = re.compile(
    r"(?i)([\w-]*(?:password|passwd|secret|token|access_key|private_key)\"?)(\s*[=:]\s*)(\"[^\"]*\"|\S+)"
)


# What Terraform, its providers and their commands may see of envctl's environment: the AWS SDK's
# and Terraform's own variables, locale, proxies and CA bundles. Never envctl's secrets.
_CHILD_PREFIXES = ("AWS_", "TF_", "LC_")


_CHILD_NAMES = frozenset(
    (
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "TZ",
        "TMPDIR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    )
)


PR_SET_DUMPABLE = 4


def make_undumpable() -> bool:
    """prctl(PR_SET_DUMPABLE, 0): processes of the same user (Terraform, its providers, a
    `local-exec` a stack runs) can no longer read this process's environment or memory through
    /proc, where envctl's tokens live. False where the call is not available (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a Terraform process, built from an allowlist (no ENVCTL_*, no git credentials)."""
    return {
        name: value
        for name, value in environ.items()
        if name in _CHILD_NAMES or name.startswith(_CHILD_PREFIXES)
    }


def parse_version(text: str) -> tuple[int, int, int]:
    """`1.10.3` or `v1.0.3` -> (1, 10, 3)."""
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    if not match:
        raise TerraformError(f"cannot read a Terraform version from {text!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


class Redactor:
    """Removes known secret values and secret-looking assignments from output."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = known_values(secrets)

    def __call__(self, line: str) -> str:
        line = mask(line, self._secrets)
        return _SECRET_ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}***", line)


def lock_error(text: str, excerpt: str, *, env: str, ours: bool = False) -> StateLocked:
    """The StateLocked error of Terraform's lock failure output, with every field it names.

    `ours`: the holder is this envctl and one of its Terraforms still runs (never to be unlocked).
    """
    return StateLocked(
        holder=_lock_field(text, "Who") or "unknown",
        lock_id=_lock_field(text, "ID") or "unknown",
        excerpt=excerpt,
        operation=(_lock_field(text, "Operation") or "").removeprefix("OperationType"),
        created=_lock_field(text, "Created") or "",
        env=env,
        ours=ours,
    )


def lock_created(text: str) -> float | None:
    """Terraform's `2026-11-30 08:55:31.595301451 +0000 UTC` as epoch seconds; None if unreadable."""
    match = re.match(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(\.\d+)? ?([+-]\d{4}|Z)", text)
    if not match:
        return None
    day, clock, fraction, offset = match.groups()
    offset = "+0000" if offset == "Z" else offset
    moment = datetime.strptime(f"{day} {clock} {offset}", "%Y-%m-%d %H:%M:%S %z")
    return moment.timestamp() + float(fraction or 0)


def local_identity() -> str:
    """`user@host`, as Terraform writes it into the locks it takes (`Who`)."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _lock_field(text: str, field: str) -> str | None:
    # Plain, or inside Terraform's box-drawn diagnostics (`│   ID: ...`).
    match = re.search(rf"^[\s│]*{field}:\s*(.+?)\s*$", text, re.MULTILINE)
    return match.group(1) if match else None


def _excerpt(lines: list[str]) -> str:
    """The error part of Terraform's output: from the first `Error:` on, else the last lines."""
    for index, line in enumerate(lines):
        if line.lstrip("│ ").startswith("Error:"):
            picked = [text for text in lines[index:] if text.strip()][:_EXCERPT_LINES]
            return "\n".join(picked)
    return "\n".join(text for text in lines[-_EXCERPT_LINES:] if text.strip())


MIN_TERRAFORM = (1, 6, 0)
"""The oldest Terraform envctl runs: the S3 backend's `endpoints` block and `use_path_style` are 1.6+."""


def check_version(version: tuple[int, int, int], settings: Settings) -> None:
    """The binary is a Terraform envctl supports, and reads the settings' backend arguments."""
    found = ".".join(map(str, version))
    if version < MIN_TERRAFORM:
        minimum = ".".join(map(str, MIN_TERRAFORM))
        raise PermanentError(
            f"{settings.source_file}: terraform.binary: {settings.terraform.binary!r} is "
            f"Terraform {found}; envctl needs Terraform {minimum} or newer (the S3 backend's "
            "`endpoints` block and `use_path_style`)"
        )
    if settings.state.lock == "s3" and version < (1, 10, 0):
        raise PermanentError(
            f"{settings.source_file}: state.lock: 's3' is not allowed with Terraform "
            f"{found}; expected dynamodb, or Terraform 1.10 or newer"
        )


def terraform_running_in(workdir: Path) -> bool:
    """Whether any process on this host runs with `workdir` as its working directory."""
    target = str(workdir.resolve())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.readlink(proc / "cwd") == target:
                return True
        except OSError:
            continue
    return False
