"""Validation of PlatformStack parameters and the names derived from them (no synthesis)."""

from __future__ import annotations

import pytest

from stack.config import (
    DEFAULT_NAMESPACES,
    Names,
    StateBackend,
    default_availability_zones,
    validate,
)


def valid(**overrides):
    """validate() with good defaults and some parameters replaced."""
    arguments = {"environment_suffix": "pr7284", "aws_region": "us-east-1"}
    arguments.update(overrides)
    return validate(**arguments)


@pytest.mark.parametrize("suffix", ["PR7284", "pr-7284", "../x", "", "a" * 17, "7284", None, "pr_1"])
def test_bad_suffixes_are_rejected_with_the_rule(suffix):
    """Uppercase, dashes, paths, empty, 17 characters, a digit first: each named with the rule."""
    with pytest.raises(ValueError, match=r"environment_suffix=.* expected 1 to 16 characters") as info:
        valid(environment_suffix=suffix)
    assert repr(suffix) in str(info.value)


@pytest.mark.parametrize("suffix", ["pr7284", "staging", "a", "a" * 16])
def test_good_suffixes_pass(suffix):
    """Previews, long-lived names, one and sixteen characters are accepted."""
    assert valid(environment_suffix=suffix).environment_suffix == suffix


def test_two_zones_are_rejected():
    """Exactly three availability zones are required."""
    with pytest.raises(ValueError, match=r"availability_zones=\['us-east-1a', 'us-east-1b'\].*exactly 3"):
        valid(availability_zones=["us-east-1a", "us-east-1b"])


def test_repeated_zone_is_rejected():
    """Three zones must be three different zones."""
    with pytest.raises(ValueError, match="exactly 3 distinct"):
        valid(availability_zones=["us-east-1a", "us-east-1a", "us-east-1b"])


def test_zone_of_another_region_is_rejected():
    """A zone must belong to the stack's region."""
    with pytest.raises(ValueError, match="zones of us-east-1"):
        valid(availability_zones=["us-east-1a", "us-east-1b", "eu-west-1c"])


def test_default_zones_follow_the_region():
    """Defaults are a, b, c except where accounts lack a zone letter."""
    assert default_availability_zones("eu-west-1") == ("eu-west-1a", "eu-west-1b", "eu-west-1c")
    assert default_availability_zones("ap-northeast-1") == (
        "ap-northeast-1a",
        "ap-northeast-1c",
        "ap-northeast-1d",
    )
    with pytest.raises(ValueError, match="fewer than three"):
        default_availability_zones("us-west-1")


@pytest.mark.parametrize("region", ["US-EAST-1", "us-east", "", 7])
def test_bad_region_is_rejected(region):
    """The region must look like an AWS region."""
    with pytest.raises(ValueError, match="aws_region="):
        valid(aws_region=region)


def test_unknown_nat_mode_is_rejected():
    """nat_gateways must be single or per_az."""
    with pytest.raises(ValueError, match=r"nat_gateways='two'.*single, per_az"):
        valid(nat_gateways="two")


@pytest.mark.parametrize("version", ["1.2", "2.0", "1.22", "latest", 1.35])
def test_bad_kubernetes_version_is_rejected(version):
    """Versions must be EKS-style strings from 1.23 on."""
    with pytest.raises(ValueError, match="kubernetes_version="):
        valid(kubernetes_version=version)


@pytest.mark.parametrize(
    "namespaces",
    [
        ["Payment"],
        ["payment", "payment"],
        [],
        ["pay_ment"],
        ["a" * 21],
        ["payment-"],
        ["kube-system"],
    ],
)
def test_bad_namespaces_are_rejected(namespaces):
    """Uppercase, duplicates, none, underscores, over 20 characters, trailing dash, reserved."""
    with pytest.raises(ValueError, match="namespaces="):
        valid(namespaces=namespaces)


def test_namespaces_default_to_the_three_services():
    """payment, fraud-detection, reporting unless told otherwise."""
    assert valid().namespaces == DEFAULT_NAMESPACES == ("payment", "fraud-detection", "reporting")


@pytest.mark.parametrize("tags", [{"aws:x": "1"}, {"": "1"}, {"k": "v" * 257}, {"k": 1}])
def test_bad_tags_are_rejected(tags):
    """Reserved or empty keys and over-long or non-string values are refused."""
    with pytest.raises(ValueError, match="tags"):
        valid(tags=tags)


def test_state_backend_validation():
    """Backend settings name the bad field: bucket, key, lock mode, lock table."""
    with pytest.raises(ValueError, match=r"state\.bucket"):
        StateBackend(bucket="", key="k", region="us-east-1", lock_table="t")
    with pytest.raises(ValueError, match=r"state\.key"):
        StateBackend(bucket="b", key="/abs", region="us-east-1", lock_table="t")
    with pytest.raises(ValueError, match=r"state.lock='redis'.*dynamodb, s3"):
        StateBackend(bucket="b", key="k", region="us-east-1", lock="redis")
    with pytest.raises(ValueError, match=r"state\.lock_table"):
        StateBackend(bucket="b", key="k", region="us-east-1")


def test_backend_without_endpoint_has_only_the_essentials():
    """A real-AWS backend carries bucket, key, region, encryption and the lock table only."""
    backend = StateBackend(bucket="b", key="k", region="us-east-1", lock_table="t")
    assert backend.backend_config() == {
        "bucket": "b",
        "key": "k",
        "region": "us-east-1",
        "encrypt": True,
        "dynamodb_table": "t",
    }


def test_names_for_the_longest_suffix_fit():
    """The longest cluster and role names stay within EKS and IAM limits."""
    names = Names("a" * 16)
    assert len(names.cluster) <= 100
    assert len(names.irsa_role("b" * 20)) <= 64
    assert len(names.alb_controller_role) <= 64
    assert names.repository("payment") == "a" * 16 + "/payment"
