"""The parameters each stack entry point accepts, with their types: checked without synthesizing.

Pure (no cdktf import), so `envctl validate` and the controller can ask "would the stack accept
these parameters?" in milliseconds and without AWS credentials. The controller finds this module
by convention: for the entry `stack.app:build` it calls `stack.parameters:check("stack.app:build",
environment)`. The stacks refuse the same problems when they build (`stack.app.build`,
`stack.demo.build`), from this one declaration.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from stack.config import validate


@dataclass(frozen=True)
class Parameter:
    """One parameter an environment file may set under `parameters:`."""

    type: str
    """"string", "integer", "boolean", "list of strings" or "map of strings"."""
    description: str


def _is(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "list of strings":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if kind == "map of strings":
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        )
    raise AssertionError(f"unknown parameter type {kind!r}")  # pragma: no cover - a declaration bug


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list" if all(isinstance(v, str) for v in value) else "a list with non-string items"
    if isinstance(value, dict):
        return "a mapping" if all(isinstance(v, str) for v in value.values()) else "a mapping of non-strings"
    return "null" if value is None else type(value).__name__


PLATFORM: Mapping[str, Parameter] = {
    "availability_zones": Parameter("list of strings", "three zones of the region (default: looked up)"),
    "cluster_admin_arns": Parameter("list of strings", "IAM roles/users made cluster admins"),
    "deploy_role_arn": Parameter("string", "the role Terraform assumes to manage the stack"),
    "image_tag_mutability": Parameter("string", "IMMUTABLE or MUTABLE"),
    "kubernetes_version": Parameter("string", "an EKS version EKS still creates, like 1.35"),
    "namespaces": Parameter("list of strings", "application namespaces, each with a Fargate profile"),
    "nat_gateways": Parameter("string", "single or per_az"),
    "permissions_boundary_arn": Parameter("string", "a permissions boundary on every role created"),
    "public_access_cidrs": Parameter("list of strings", "who may reach the public API endpoint"),
    "tags": Parameter("map of strings", "tags on every resource"),
}
"""`stack.app:build`, the platform stack."""

DEMO: Mapping[str, Parameter] = {
    "components": Parameter("list of strings", "null resources standing in for components"),
    "fail": Parameter("string", "a resource whose creation fails with this message"),
    "sleep_seconds": Parameter("integer", "a resource that takes this long (0 to 3600)"),
    "revision": Parameter("string", "changes every resource's triggers"),
    "credentials": Parameter("boolean", "a sensitive value derived in Terraform"),
    "print_environment": Parameter("boolean", "a resource printing its environment"),
    "crash": Parameter("boolean", "the stack raises while it builds (a stack bug)"),
    "platform_hooks": Parameter("boolean", "the platform stack's controller hooks"),
}
"""`stack.demo:build`, null resources standing in for the platform (tests and `make run`)."""


def _platform_values(name: str, value: Any, environment: Any, today: date | None) -> str | None:
    try:
        validate(
            environment_suffix=environment.name,
            aws_region=environment.region,
            **{name: tuple(value) if isinstance(value, list) else value},
            today=today,
        )
    except ValueError as error:
        return str(error).removeprefix("PlatformStack: ")
    return None


def _demo_values(name: str, value: Any, environment: Any, today: date | None) -> str | None:
    if name == "sleep_seconds" and not 0 <= value <= 3600:
        return f"{value!r} is not allowed; expected 0 to 3600"
    if name == "components" and not all(value):
        return f"{value!r} is not allowed; expected a list of non-empty names"
    return None


Values = Callable[[str, Any, Any, "date | None"], "str | None"]
STACKS: Mapping[str, tuple[str, Mapping[str, Parameter], Values]] = {
    "stack.app:build": ("platform stack", PLATFORM, _platform_values),
    "stack.demo:build": ("demo stack", DEMO, _demo_values),
}


def check(entry: str, environment: Any, today: date | None = None) -> list[str] | None:
    """Every problem of `environment.parameters` for the stack `entry`, as `parameters.NAME: ...`
    lines; None when `entry` declares no parameters here (the stack checks them at synth)."""
    if entry not in STACKS:
        return None
    title, declared, values = STACKS[entry]
    problems = []
    for name, value in sorted(environment.parameters.items()):
        if name not in declared:
            close = difflib.get_close_matches(name, list(declared), n=1, cutoff=0.7)
            hint = f"did you mean `{close[0]}`? " if close else ""
            problems.append(
                f"parameters.{name}: unknown parameter of the {title}; {hint}expected one of "
                + ", ".join(declared)
            )
            continue
        kind = declared[name].type
        if not _is(kind, value):
            problems.append(f"parameters.{name}: {value!r} is {_describe(value)}; expected {kind}")
            continue
        problem = values(name, value, environment, today)
        if problem is not None:
            problems.append(f"parameters.{name}: {problem.removeprefix(f'{name}=')}")
    return problems
