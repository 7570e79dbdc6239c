"""Environment files: raw YAML at a revision -> validated `Environment` or `Invalid`.

Nothing here touches git or Terraform; the reconciler hands in file contents.
An invalid file never becomes a deletion: it is reported as `Invalid` under its
name, and the planner keeps whatever exists.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any

import yaml

from controller.errors import InvalidEnvironment
from controller.settings import DURATION_RULE, Settings, parse_duration
from controller.settings_rules import REGION
from controller.types import Environment, Invalid

NAME_PATTERN = re.compile(r"[a-z][a-z0-9]{0,15}")
NAME_RULE = "a file name stem of 1 to 16 characters: a lowercase letter, then lowercase letters or digits"
SUFFIXES = (".yaml", ".yml")
KINDS = ("preview", "persistent")
STATES = ("open", "closed")
DELETIONS = ("destroy", "orphan")
_REGION = REGION
"""The one region rule (controller.settings_rules), for environment files as for the settings."""
_PARAMETER_KEY = re.compile(r"[a-z][a-z0-9_]*")
FIELDS = ("kind", "pull_request", "state", "region", "deletion", "parameters", "drift", "ttl", "commit")
_COMMIT = re.compile(r"[0-9a-f]{7,64}")
DRIFT_FIELDS = ("interval_minutes", "remediation")
Problem = Callable[[str, object, str], None]
"""Records one problem of a file: field, value, what is allowed."""
REMEDIATIONS = ("auto", "alert")


def is_environment_file(path: str) -> bool:
    """Whether a path in the environments folder declares an environment."""
    return PurePosixPath(path).suffix in SUFFIXES


MAX_BYTES = 64 * 1024
"""An environment file is a few lines of data; anything bigger is refused before it is parsed."""
MAX_DEPTH = 20
"""Nesting of mappings and lists an environment file may use."""


def parse(path: str, text: str, default_region: str) -> Environment:  # noqa: PLR0912 - one check per field of an environment file, every problem listed
    """Validate one file; raise InvalidEnvironment naming the file, and for every problem found,
    the field, the value and what is allowed (one problem per line)."""
    name = PurePosixPath(path).stem
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidEnvironment(path, "name", name, NAME_RULE)
    raw = _load(path, text)
    problems: list[InvalidEnvironment] = []

    def problem(field: str, value: object, allowed: str) -> None:
        problems.append(InvalidEnvironment(path, field, value, allowed))

    for key in sorted((k for k in raw if k not in FIELDS), key=str):
        problem(str(key), raw[key], "only the fields " + ", ".join(FIELDS) + _did_you_mean(key, FIELDS))
    kind = _choice(problem, raw, "kind", KINDS, required=True)
    state = _choice(problem, raw, "state", STATES, default="open")
    deletion = _choice(
        problem, raw, "deletion", DELETIONS, default="destroy" if kind == "preview" else "orphan"
    )
    pull_request = raw.get("pull_request")
    if not kind:
        pass  # what else is allowed depends on the kind, which is reported already
    elif kind == "preview":
        if not isinstance(pull_request, int) or isinstance(pull_request, bool) or pull_request < 1:
            problem("pull_request", pull_request, "a pull request number (1 or more)")
    elif pull_request is not None:
        problem("pull_request", pull_request, "no pull_request on a persistent environment")
    if kind == "persistent" and state == "closed":
        problem("state", state, "open: persistent environments are removed explicitly")
    region = raw.get("region", default_region)
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        problem("region", region, "an AWS region name such as us-east-1")
    parameters = raw.get("parameters", {})
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        problem("parameters", parameters, "a mapping of stack parameters")
        parameters = {}
    for key in parameters:
        if not isinstance(key, str) or not _PARAMETER_KEY.fullmatch(key):
            problem(f"parameters.{key}", key, "snake_case parameter names")
    interval, remediation = _drift(problem, raw.get("drift"))
    ttl = None
    if "ttl" in raw and kind:
        if kind != "preview":
            problem("ttl", raw["ttl"], "no ttl on a persistent environment: they never expire")
        else:
            ttl = parse_duration(raw["ttl"])
            if ttl is None:
                problem("ttl", raw["ttl"], DURATION_RULE)
    commit = raw.get("commit")
    if commit is not None and (not isinstance(commit, str) or not _COMMIT.fullmatch(commit)):
        problem("commit", commit, "a commit SHA of 7 to 64 lowercase hex digits, quoted in YAML")
    if problems:
        raise InvalidEnvironment.several(problems)
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


def _load(path: str, text: str) -> dict[Any, Any]:
    """The file's mapping; plain data only, bounded before it is built.

    Anchors and aliases are refused (an alias is copied when the document is built: a few hundred
    bytes of nested aliases expand exponentially), as are explicit tags, files over MAX_BYTES and
    nesting deeper than MAX_DEPTH. The check walks the parser's events, linear in the file's size.
    """
    size = len(text.encode())
    if size > MAX_BYTES:
        raise InvalidEnvironment(
            path,
            "(file)",
            f"{size} bytes",
            "",
            message=f"{path}: the file is {size} bytes; at most {MAX_BYTES} bytes are allowed",
        )
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            rule = None
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                rule = "YAML anchors and aliases (&, *) are not allowed; write the values out"
            elif isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent) and event.tag is not None:
                rule = f"YAML tags ({event.tag}) are not allowed; write plain values"
            elif depth > MAX_DEPTH:
                rule = f"nesting deeper than {MAX_DEPTH} levels is not allowed"
            if rule is not None:
                line = event.start_mark.line + 1 if event.start_mark else 0
                raise InvalidEnvironment(
                    path, f"line {line}", None, "", message=f"{path}: line {line}: {rule}"
                )
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader, after the checks above
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(document)"
        problem = getattr(error, "problem", None) or str(error)
        raise InvalidEnvironment(
            path, where, problem, "", message=f"{path}: {where}: not valid YAML: {problem}"
        ) from error
    if not isinstance(raw, dict):
        raise InvalidEnvironment(path, "(document)", raw, "a mapping of " + ", ".join(FIELDS))
    return raw


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _did_you_mean(word: object, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.75)
    return f"; did you mean `{close[0]}`?" if close else ""


def _drift(problem: Problem, raw: object) -> tuple[float | None, str]:
    """The `drift:` block: interval_minutes (1 to 10080) and remediation (auto | alert)."""
    if raw is None:
        return None, ""
    if not isinstance(raw, dict):
        problem("drift", raw, "a mapping with interval_minutes and/or remediation")
        return None, ""
    for key in sorted((k for k in raw if k not in DRIFT_FIELDS), key=str):
        problem(
            f"drift.{key}", raw[key], "only " + ", ".join(DRIFT_FIELDS) + _did_you_mean(key, DRIFT_FIELDS)
        )
    interval = raw.get("interval_minutes")
    if interval is not None and (
        not isinstance(interval, int) or isinstance(interval, bool) or not 1 <= interval <= 10080
    ):
        problem("drift.interval_minutes", interval, "a whole number of minutes, 1 to 10080")
        interval = None
    remediation = raw.get("remediation", "")
    if remediation and remediation not in REMEDIATIONS:
        problem("drift.remediation", remediation, "one of " + ", ".join(REMEDIATIONS))
        remediation = ""
    return (float(interval) if interval is not None else None), str(remediation)


def _choice(
    problem: Problem,
    raw: Mapping[str, Any],
    field: str,
    allowed: tuple[str, ...],
    *,
    required: bool = False,
    default: str = "",
) -> str:
    if field not in raw:
        if required:
            problem(field, None, f"one of {', '.join(allowed)} (required)")
        return default
    value = raw[field]
    if value not in allowed:
        problem(field, value, f"one of {', '.join(allowed)}" + _did_you_mean(value, allowed))
        return default
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


def within_policy(
    desired: Mapping[str, Environment | Invalid],
    *,
    locked: tuple[str, ...],
    max_ttl_seconds: float | None,
    min_drift_minutes: float,
    settings_file: str,
) -> dict[str, Environment | Invalid]:
    """Environments that step outside what the platform team allows become Invalid, naming the
    rule and where it is set: a locked stack parameter, a TTL over the maximum, a drift interval
    under the minimum. Every such problem of a file is listed."""
    result: dict[str, Environment | Invalid] = {}
    for name, item in desired.items():
        if isinstance(item, Invalid):
            result[name] = item
            continue
        problems = [
            f"{item.file}: parameters.{key}: only the platform team sets it (locked_parameters in "
            f"{settings_file}; its value comes from stack_parameters there); remove it from this file"
            for key in sorted(set(item.parameters) & set(locked))
        ]
        if (
            item.ttl_seconds is not None
            and max_ttl_seconds is not None
            and item.ttl_seconds > max_ttl_seconds
        ):
            problems.append(
                f"{item.file}: ttl: {item.ttl_seconds / 3600:g}h is not allowed; expected at most "
                f"previews.max_ttl ({max_ttl_seconds / 3600:g}h, in {settings_file})"
            )
        interval = item.drift_interval_minutes
        if interval is not None and interval < min_drift_minutes:
            problems.append(
                f"{item.file}: drift.interval_minutes: {interval:g} is not allowed; expected at least "
                f"drift.min_interval_minutes ({min_drift_minutes:g}, in {settings_file})"
            )
        result[name] = Invalid(name, item.file, "\n".join(problems)) if problems else item
    return result


def policed(
    desired: dict[str, Environment | Invalid], settings: Settings
) -> dict[str, Environment | Invalid]:
    """`desired` with what the settings forbid an environment file made Invalid (see within_policy)."""
    return within_policy(
        desired,
        locked=settings.locked_parameters,
        max_ttl_seconds=parse_duration(settings.previews.max_ttl),
        min_drift_minutes=settings.drift.min_interval_minutes,
        settings_file=settings.source_file,
    )
