"""The controller's entry point for the platform stack: `stack.app:build`.

It maps an environment (name, kind, region, parameters, pull request) to a
PlatformStack. Where state lives is not its business: the controller sets the
backend on whatever this returns.
"""

from __future__ import annotations

from typing import Any

from constructs import Construct

from stack.parameters import PLATFORM, check
from stack.platform import PlatformStack

PARAMETERS = tuple(PLATFORM)


def build(scope: Construct, environment: Any) -> PlatformStack:
    """One PlatformStack for `environment`; unknown or mistyped parameters are refused by name."""
    problems = check("stack.app:build", environment) or []
    if problems:
        raise ValueError(problems[0])
    parameters = dict(environment.parameters)
    # Previews default to one NAT gateway (cheap); long-lived environments to one per zone.
    parameters.setdefault("nat_gateways", "single" if environment.kind == "preview" else "per_az")
    tags = {"EnvironmentKind": environment.kind, **parameters.pop("tags", {})}
    if environment.pull_request is not None:
        tags["PullRequest"] = str(environment.pull_request)
    return PlatformStack(
        scope,
        environment.name,
        environment_suffix=environment.name,
        aws_region=environment.region,
        tags=tags,
        **parameters,
    )
