"""The stacks' parameter declarations: what `envctl validate` checks without synthesizing."""

from __future__ import annotations

import subprocess
import sys
from datetime import date

import pytest

from stack import parameters
from tests.stack.test_entry_points import env

TODAY = date(2026, 12, 2)


@pytest.mark.parametrize(
    ("entry", "given", "expected"),
    [
        ("stack.app:build", {"kubernetes_version": "1.35", "nat_gateways": "single"}, []),
        (
            "stack.app:build",
            {"kubernetse_version": "1.35"},
            [
                "parameters.kubernetse_version: unknown parameter of the platform stack; did you mean "
                "`kubernetes_version`? expected one of availability_zones, cluster_admin_arns, "
                "deploy_role_arn, image_tag_mutability, kubernetes_version, namespaces, nat_gateways, "
                "permissions_boundary_arn, public_access_cidrs, tags"
            ],
        ),
        (
            "stack.app:build",
            {"kubernetes_version": 1.35},
            ["parameters.kubernetes_version: 1.35 is a number; expected string"],
        ),
        (
            "stack.app:build",
            {"namespaces": "payment"},
            ["parameters.namespaces: 'payment' is a string; expected list of strings"],
        ),
        (
            "stack.app:build",
            {"tags": {"team": 3}},
            ["parameters.tags: {'team': 3} is a mapping of non-strings; expected map of strings"],
        ),
        (
            "stack.app:build",
            {"namespaces": ["a", 1]},
            ["parameters.namespaces: ['a', 1] is a list with non-string items; expected list of strings"],
        ),
        (
            "stack.app:build",
            {"deploy_role_arn": None},
            ["parameters.deploy_role_arn: None is null; expected string"],
        ),
        (
            "stack.app:build",
            {"kubernetes_version": "1.29", "nat_gateways": "many"},
            [
                "parameters.kubernetes_version: '1.29' is not allowed; expected a version EKS still creates "
                "on 2026-12-02 (EKS support ended on 2026-03-23): 1.32 or newer",
                "parameters.nat_gateways: 'many' is not allowed; expected one of single, per_az",
            ],
        ),
        (
            "stack.demo:build",
            {"sleep_seconds": True},
            ["parameters.sleep_seconds: True is a boolean; expected integer"],
        ),
        (
            "stack.demo:build",
            {"sleep_seconds": 4000},
            ["parameters.sleep_seconds: 4000 is not allowed; expected 0 to 3600"],
        ),
        (
            "stack.demo:build",
            {"components": ["a", ""]},
            ["parameters.components: ['a', ''] is not allowed; expected a list of non-empty names"],
        ),
        (
            "stack.demo:build",
            {"revison": "2"},
            [
                "parameters.revison: unknown parameter of the demo stack; did you mean `revision`? expected "
                "one of components, fail, sleep_seconds, revision, credentials, print_environment, crash, "
                "platform_hooks"
            ],
        ),
    ],
)
def test_every_problem_is_named_with_what_is_allowed(entry, given, expected):
    """Unknown names (with the nearest known one), wrong types and bad values: one line each."""
    assert parameters.check(entry, env("pr1", **given), today=TODAY) == expected


def test_an_entry_that_declares_nothing_is_left_to_synthesis():
    """A stack of a platform team's own, not declared here: None (checked when it synthesizes)."""
    assert parameters.check("acme.stack:build", env("pr1", anything=1)) is None


def test_checking_imports_neither_cdktf_nor_the_aws_bindings():
    """The check is pure: a process that runs it has loaded no cdktf, constructs or provider module."""
    code = (
        "import sys\nfrom types import SimpleNamespace\nfrom stack.parameters import check\n"
        "check('stack.app:build', SimpleNamespace(name='pr1', region='us-east-1', parameters={'tags': {}}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cdktf', 'constructs', 'jsii')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
