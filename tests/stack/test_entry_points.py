"""The controller's entry points into stack/: `stack.app:build` and `stack.demo:build`."""

from __future__ import annotations

import json

import pytest

from controller.types import Environment
from tests.stack.helpers import block, resources


def env(name="pr7284", kind="preview", **parameters):
    return Environment(
        name=name,
        kind=kind,
        state="open",
        region="eu-west-1",
        deletion="destroy" if kind == "preview" else "orphan",
        file=f"environments/{name}.yaml",
        pull_request=7284 if kind == "preview" else None,
        parameters=parameters,
    )


def synth_entry(build, environment):
    from cdktf import Testing

    app = Testing.app()
    return json.loads(Testing.synth(build(app, environment)))


def test_platform_entry_point_maps_the_environment(default_stack):
    """A preview gets one NAT, its pull request tag and its parameters; persistent gets one NAT per zone."""
    from stack.app import build

    preview = synth_entry(build, env(kubernetes_version="1.34", tags={"Team": "payments"}))
    (cluster,) = resources(preview, "aws_eks_cluster")
    assert (cluster["name"], cluster["version"]) == ("envctl-pr7284", "1.34")
    assert len(resources(preview, "aws_nat_gateway")) == 1
    tags = block(preview["provider"]["aws"][0]["default_tags"])["tags"]
    assert tags == {
        "EnvironmentKind": "preview",
        "Team": "payments",
        "PullRequest": "7284",
        "Environment": "pr7284",
        "ManagedBy": "envctl",
    }
    staging = synth_entry(build, env("staging", kind="persistent"))
    assert len(resources(staging, "aws_nat_gateway")) == 3
    assert "PullRequest" not in block(staging["provider"]["aws"][0]["default_tags"])["tags"]


def test_platform_entry_point_refuses_unknown_parameters():
    """An unknown parameter is named with the list of allowed ones."""
    from cdktf import Testing

    from stack.app import build

    with pytest.raises(ValueError, match=r"parameters\.size: unknown parameter of the platform stack"):
        build(Testing.app(), env(size="xl"))


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"components": "network"}, "parameters.components"),
        ({"components": ["ok", ""]}, "parameters.components"),
        ({"sleep_seconds": True}, "parameters.sleep_seconds"),
        ({"colour": 1}, "parameters.colour: unknown parameter of the demo stack"),
    ],
)
def test_demo_stack_refuses_bad_parameters(parameters, expected):
    """The demo stack validates like the real one: unknown or malformed parameters are named."""
    from cdktf import Testing

    from stack.demo import build

    with pytest.raises(ValueError, match=expected.replace(".", r"\.")):
        build(Testing.app(), env(**parameters))


def test_demo_stack_refuses_a_bad_suffix():
    """The demo stack enforces the same suffix rule as the platform stack."""
    from cdktf import Testing

    from stack.demo import DemoStack

    with pytest.raises(ValueError, match="environment_suffix='PR1'"):
        DemoStack(Testing.app(), "x", environment_suffix="PR1")


def test_demo_stack_components_are_named_with_the_suffix():
    """One null resource per component, its name carrying the suffix; fail and sleep add resources."""
    from stack.demo import COMPONENTS, build

    document = synth_entry(build, env("pr5", components=["network", "cluster"], fail="it's broken"))
    nulls = document["resource"]["null_resource"]
    assert sorted(nulls) == ["broken", "cluster", "network"]
    assert nulls["cluster"]["triggers"]["name"] == "envctl-pr5-cluster"
    assert (
        nulls["broken"]["provisioner"][0]["local-exec"]["command"] == "echo 'it'\"'\"'s broken' >&2; exit 1"
    )
    assert document["terraform"]["required_providers"]["null"] == {
        "source": "hashicorp/null",
        "version": "2.1.2",
    }
    assert len(COMPONENTS) == 6
    printing = synth_entry(build, env("pr5", components=[], print_environment=True))
    command = printing["resource"]["null_resource"]["environment"]["provisioner"][0]["local-exec"]["command"]
    assert command == "env | sort"
    with pytest.raises(RuntimeError, match="crashed, as asked"):
        synth_entry(build, env("pr5", crash=True))


def test_deploy_role_is_assumed_by_the_provider_when_given():
    """deploy_role_arn makes the AWS provider assume that role; a malformed ARN is refused."""
    from cdktf import Testing

    from stack.app import build

    document = synth_entry(
        build, env(deploy_role_arn="arn:aws:iam::123456789012:role/envctl-platform-deployer")
    )
    (provider,) = document["provider"]["aws"]
    assert block(provider["assume_role"]) == {
        "role_arn": "arn:aws:iam::123456789012:role/envctl-platform-deployer",
        "session_name": "envctl-pr7284",
    }
    with pytest.raises(ValueError, match=r"parameters\.deploy_role_arn: 'deployer' is not allowed"):
        build(Testing.app(), env(deploy_role_arn="deployer"))


def test_no_assume_role_by_default(default_stack):
    """Without a deploy role the provider uses the caller's credentials."""
    (provider,) = default_stack["provider"]["aws"]
    assert "assume_role" not in provider
