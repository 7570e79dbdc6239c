"""A stand-in for the platform stack made of null resources: `stack.demo:build`.

It runs anywhere (no AWS provider, no account): one `null_resource` per
platform component, named with the environment suffix, so the controller's
whole lifecycle -- synth, init, plan, apply, drift, destroy -- goes through
exactly the code path the real stack uses. `make run` and the tests use it.
"""

from __future__ import annotations

from typing import Any

from cdktf import TerraformResource, TerraformStack
from constructs import Construct

from stack.config import SUFFIX_PATTERN, SUFFIX_RULE
from stack.parameters import DEMO, check

COMPONENTS = ("network", "cluster", "registry", "identity", "secrets", "observability")
PARAMETERS = tuple(DEMO)
NULL_PROVIDER = {"source": "hashicorp/null", "version": "2.1.2"}


class DemoStack(TerraformStack):
    """Null resources standing in for the platform's components."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        environment_suffix: str,
        components: list[str] | tuple[str, ...] = COMPONENTS,
        fail: str | None = None,
        sleep_seconds: int = 0,
        revision: str = "1",
        credentials: bool = False,
        print_environment: bool = False,
        crash: bool = False,
        platform_hooks: bool = False,
        region: str = "us-east-1",
    ) -> None:
        if crash:
            # Stands in for a stack bug or a jsii crash: not the stack rejecting its input.
            raise RuntimeError("the demo stack crashed, as asked")
        if not SUFFIX_PATTERN.fullmatch(environment_suffix):
            raise ValueError(
                f"environment_suffix={environment_suffix!r} is not allowed; expected {SUFFIX_RULE}"
            )
        # Parameter types and ranges: stack.parameters.check, through build.
        super().__init__(scope, id_)
        self.add_override("terraform.required_providers", {"null": NULL_PROVIDER})
        self.add_override("provider", {"null": [{}]})
        for component in components:
            self._null(
                component, {"name": f"envctl-{environment_suffix}-{component}", "revision": str(revision)}
            )
        if sleep_seconds:
            # A slow resource, for interrupt tests and demos of a long apply.
            self._null("slow", {"seconds": str(sleep_seconds)}, command=f"sleep {sleep_seconds}")
        if credentials:
            # A value Terraform treats as sensitive, derived in Terraform (never in the env file).
            token = f'${{sensitive(sha256("envctl-{environment_suffix}-token"))}}'
            self._null("credentials", {"token": token})
        if print_environment:
            # A provisioner printing the environment Terraform gives its children (secrets tests).
            self._null("environment", {"probe": "env"}, command="env | sort")
        if platform_hooks:
            # The platform stack's hooks, on the same names: the controller's side of adoption,
            # quotas and clean-up runs against the AWS APIs exactly as for the real stack.
            cluster = f"envctl-{environment_suffix}"
            log_group = f"/aws/eks/{cluster}/cluster"
            self.add_override(
                "//.envctl",
                {
                    "region": region,
                    "adopt": [{"address": "null_resource.cluster", "log_group": log_group}],
                    "creates": {"vpcs": 1, "elastic_ips": 1},
                    "pre_destroy": {"elbv2_cluster_tag": cluster},
                    "post_destroy": {"log_groups": [log_group]},
                },
            )
        if fail is not None:
            # A resource whose creation fails with `fail` as the error.
            self._null("broken", {"message": str(fail)}, command=f"echo {_quote(str(fail))} >&2; exit 1")

    def _null(self, name: str, triggers: dict[str, str], command: str | None = None) -> None:
        resource = TerraformResource(self, name, terraform_resource_type="null_resource")
        resource.add_override("triggers", triggers)
        if command is not None:
            resource.add_override("provisioner", [{"local-exec": {"command": command}}])


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def build(scope: Construct, environment: Any) -> DemoStack:
    """The demo stack for an environment; unknown parameters are refused by name."""
    problems = check("stack.demo:build", environment) or []
    if problems:
        raise ValueError(problems[0])
    parameters: dict[str, Any] = dict(environment.parameters)
    return DemoStack(
        scope, environment.name, environment_suffix=environment.name, region=environment.region, **parameters
    )
