"""Synthesized platform stacks, one per parameter set, shared by the whole session.

The AWS bindings take 15-25 s to import, so every parameter set is synthesized
once and read as JSON by as many tests as need it.
"""

from __future__ import annotations

import json
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from stack import config

TODAY = date(2026, 12, 2)
"""The day the stack tests build on: EKS's support table is dated, and these tests must not
start failing when a version they use leaves support (1.34 does on 2027-12-02)."""


@pytest.fixture(autouse=True, scope="session")
def pinned_clock() -> Any:
    """Every stack built in these tests sees TODAY as the current date."""
    real = config.CLOCK
    config.CLOCK = lambda: TODAY
    yield TODAY
    config.CLOCK = real


LONGEST_SUFFIX = "abcdefghijklmnop"


def synth(**kwargs: Any) -> dict[str, Any]:
    """Synthesize one PlatformStack and return its Terraform JSON, as the synth worker writes it.

    (`Testing.synth` drops the top-level `//` comment, where the stack's hooks for the
    controller travel.)
    """
    from cdktf import App

    from stack.platform import PlatformStack

    with tempfile.TemporaryDirectory(prefix="envctl-stack-test-") as outdir:
        app = App(outdir=outdir)
        PlatformStack(app, "test", **kwargs)
        app.synth()
        (document,) = Path(outdir, "stacks").glob("*/cdk.tf.json")
        return json.loads(document.read_text())


@pytest.fixture(scope="session")
def default_stack() -> dict[str, Any]:
    """A preview with every default."""
    return synth(environment_suffix="pr7284", aws_region="us-east-1")


@pytest.fixture(scope="session")
def seed_stack() -> dict[str, Any]:
    """An explicit version (the seed's 1.29 is no longer creatable), a NAT per zone."""
    return synth(
        environment_suffix="staging",
        aws_region="eu-west-1",
        availability_zones=["eu-west-1a", "eu-west-1b", "eu-west-1c"],
        kubernetes_version="1.34",
        nat_gateways="per_az",
        tags={"Team": "platform", "ManagedBy": "someone-else"},
        permissions_boundary_arn="arn:aws:iam::123456789012:policy/envctl-workload-boundary",
    )


@pytest.fixture(scope="session")
def longest_stack() -> dict[str, Any]:
    """The longest allowed suffix, with the longest allowed namespace."""
    return synth(
        environment_suffix=LONGEST_SUFFIX,
        aws_region="ap-southeast-2",
        namespaces=["payment", "a" * 20],
    )
