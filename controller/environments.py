"""Environment files: raw YAML at a revision -> validated `Environment` or `Invalid`.

Nothing here touches git or Terraform; the reconciler hands in file contents.
An invalid file never becomes a deletion: it is reported as `Invalid` under its
name, and the planner keeps whatever exists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

import yaml

from controller.errors import InvalidEnvironment
from controller.settings import DURATION_RULE, parse_duration
from controller.types import Environment, Invalid

NAME_PATTERN = re.compile(r"[a-z][a-z0-9]{0,15}")
NAME_RULE = "a file name stem of 1 to 16 characters: a lowercase letter, then lowercase letters or digits"
SUFFIXES = (".yaml", ".yml")
KINDS = ("preview", "persistent")
STATES = ("open", "closed")
DELETIONS = ("destroy", "orphan")
_REGION = re.compile(r"[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d")
_PARAMETER_KEY = re.compile(r"[a-z][a-z0-9_]*")
FIELDS = ("kind", "pull_request", "state", "region", "deletion", "parameters", "drift", "ttl", "commit")
_COMMIT = re.compile(r"[0-9a-f]{7,64}")
DRIFT_FIELDS = ("interval_minutes", "remediation")
REMEDIATIONS = ("auto", "alert")


def is_environment_file(path: str) -> bool:
    """Whether a path in the environments folder declares an environment."""
    return PurePosixPath(path).suffix in SUFFIXES


def parse(path: str, text: str, default_region: str) -> Environment:
    """Validate one file; raise InvalidEnvironment naming the file, field, value and what is allowed."""
    name = PurePosixPath(path).stem
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidEnvironment(path, "name", name, NAME_RULE)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(document)"
        raise InvalidEnvironment(path, where, getattr(error, "problem", str(error)), "valid YAML") from error
    if not isinstance(raw, dict):
        raise InvalidEnvironment(path, "(document)", raw, "a mapping of " + ", ".join(FIELDS))
    unknown = sorted(str(k) for k in raw if k not in FIELDS)
    if unknown:
        raise InvalidEnvironment(path, unknown[0], raw[unknown[0]], "only the fields " + ", ".join(FIELDS))

    kind = _choice(path, raw, "kind", KINDS, required=True)
    state = _choice(path, raw, "state", STATES, default="open")
    deletion = _choice(path, raw, "deletion", DELETIONS, default="destroy" if kind == "preview" else "orphan")
    pull_request = raw.get("pull_request")
    if kind == "preview":
        if not isinstance(pull_request, int) or isinstance(pull_request, bool) or pull_request < 1:
            raise InvalidEnvironment(path, "pull_request", pull_request, "a pull request number (1 or more)")
    elif pull_request is not None:
        raise InvalidEnvironment(
            path, "pull_request", pull_request, "no pull_request on a persistent environment"
        )
    if kind == "persistent" and state == "closed":
        raise InvalidEnvironment(path, "state", state, "open: persistent environments are removed explicitly")
    region = raw.get("region", default_region)
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        raise InvalidEnvironment(path, "region", region, "an AWS region name such as us-east-1")
    parameters = raw.get("parameters", {})
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise InvalidEnvironment(path, "parameters", parameters, "a mapping of stack parameters")
    for key in parameters:
        if not isinstance(key, str) or not _PARAMETER_KEY.fullmatch(key):
            raise InvalidEnvironment(path, f"parameters.{key}", key, "snake_case parameter names")
    interval, remediation = _drift(path, raw.get("drift"))
    ttl = None
    if "ttl" in raw:
        if kind != "preview":
            raise InvalidEnvironment(
                path, "ttl", raw["ttl"], "no ttl on a persistent environment: they never expire"
            )
        ttl = parse_duration(raw["ttl"])
        if ttl is None:
            raise InvalidEnvironment(path, "ttl", raw["ttl"], DURATION_RULE)
    commit = raw.get("commit")
    if commit is not None and (not isinstance(commit, str) or not _COMMIT.fullmatch(commit)):
        raise InvalidEnvironment(
            path, "commit", commit, "a commit SHA of 7 to 64 lowercase hex digits, quoted in YAML"
        )
    return Environment(
        name=name,
        kind=kind,
        state=state,
        region=region,
        deletion=deletion,
        file=path,
        pull_request=pull_request if kind == "preview" else None,
        parameters=_plain(parameters),
        drift_interval_minutes=interval,
        remediation=remediation,
        ttl_seconds=ttl,
        commit=commit,
    )


def _drift(path: str, raw: object) -> tuple[float | None, str]:
    """The `drift:` block: interval_minutes (1 to 10080) and remediation (auto | alert)."""
    if raw is None:
        return None, ""
    if not isinstance(raw, dict):
        raise InvalidEnvironment(path, "drift", raw, "a mapping with interval_minutes and/or remediation")
    unknown = sorted(str(k) for k in raw if k not in DRIFT_FIELDS)
    if unknown:
        raise InvalidEnvironment(
            path, f"drift.{unknown[0]}", raw[unknown[0]], "only " + ", ".join(DRIFT_FIELDS)
        )
    interval = raw.get("interval_minutes")
    if interval is not None and (
        not isinstance(interval, int) or isinstance(interval, bool) or not 1 <= interval <= 10080
    ):
        raise InvalidEnvironment(
            path, "drift.interval_minutes", interval, "a whole number of minutes, 1 to 10080"
        )
    remediation = raw.get("remediation", "")
    if remediation and remediation not in REMEDIATIONS:
        raise InvalidEnvironment(path, "drift.remediation", remediation, "one of " + ", ".join(REMEDIATIONS))
    return (float(interval) if interval is not None else None), str(remediation)


def _choice(
    path: str,
    raw: Mapping[str, Any],
    field: str,
    allowed: tuple[str, ...],
    *,
    required: bool = False,
    default: str = "",
) -> str:
    if field not in raw:
        if required:
            raise InvalidEnvironment(path, field, None, f"one of {', '.join(allowed)} (required)")
        return default
    value = raw[field]
    if value not in allowed:
        raise InvalidEnvironment(path, field, value, f"one of {', '.join(allowed)}")
    return str(value)


def _plain(value: Any) -> Any:
    """YAML data as JSON-able data (dates and the like become strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def load_all(files: Mapping[str, str], default_region: str) -> dict[str, Environment | Invalid]:
    """Every environment file of a listing, keyed by name; collisions make both invalid."""
    by_name: dict[str, list[str]] = {}
    for path in sorted(files):
        if is_environment_file(path):
            by_name.setdefault(PurePosixPath(path).stem, []).append(path)
    result: dict[str, Environment | Invalid] = {}
    for name, paths in by_name.items():
        if len(paths) > 1:
            message = (
                f"{', '.join(paths)}: name: {name!r} is declared by {len(paths)} files; expected one file"
            )
            result[name] = Invalid(name=name, file=paths[0], message=message)
            continue
        try:
            result[name] = parse(paths[0], files[paths[0]], default_region)
        except InvalidEnvironment as error:
            result[name] = Invalid(name=name, file=paths[0], message=str(error))
    return result
