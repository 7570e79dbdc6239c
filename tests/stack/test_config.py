"""Validation of PlatformStack parameters and the names derived from them (no synthesis)."""

from __future__ import annotations

from datetime import date

import pytest

from stack.config import (
    DEFAULT_KUBERNETES_VERSION,
    DEFAULT_NAMESPACES,
    EKS_SUPPORT,
    Names,
    validate,
)

TODAY = date(2026, 11, 30)


def valid(**overrides):
    """validate() with good defaults and some parameters replaced."""
    arguments = {"environment_suffix": "pr7284", "aws_region": "us-east-1", "today": TODAY}
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


def test_without_zones_terraform_picks_them():
    """No zone letter is assumed: the stack looks zones up (None); us-west-1 must name them."""
    assert valid(aws_region="eu-west-1").availability_zones is None
    assert valid(aws_region="ap-northeast-1").availability_zones is None
    with pytest.raises(ValueError, match="fewer than three"):
        valid(aws_region="us-west-1")


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
    """Versions must be EKS-style strings."""
    with pytest.raises(ValueError, match="kubernetes_version="):
        valid(kubernetes_version=version)


@pytest.mark.parametrize("version", ["1.29", "1.30", "1.31", "1.28"])
def test_versions_eks_no_longer_creates_are_refused_naming_the_oldest(version):
    """On 2026-11-30, 1.29-1.31 have left extended support: the error names 1.32 and the date."""
    with pytest.raises(ValueError) as info:
        valid(kubernetes_version=version)
    message = str(info.value)
    assert f"kubernetes_version={version!r}" in message
    assert "1.32 or newer" in message
    if version in EKS_SUPPORT:
        assert f"EKS support ended on {EKS_SUPPORT[version][1].isoformat()}" in message


@pytest.mark.parametrize("version", ["1.32", "1.33", "1.34", "1.35", "1.36"])
def test_creatable_and_newer_versions_pass(version):
    """Every version still in (extended) support, and ones newer than the table, are accepted."""
    assert valid(kubernetes_version=version).kubernetes_version == version


def test_version_check_moves_with_the_date():
    """1.32 is refused the day its extended support ends; the default stays creatable a year on."""
    assert valid(kubernetes_version="1.32", today=date(2027, 3, 22)).kubernetes_version == "1.32"
    with pytest.raises(ValueError, match=r"2027-03-23.*1\.33 or newer"):
        valid(kubernetes_version="1.32", today=date(2027, 3, 23))
    assert valid(today=date(2027, 11, 30)).kubernetes_version == DEFAULT_KUBERNETES_VERSION
    with pytest.raises(ValueError, match=r"1\.36 or newer"):
        valid(today=date(2029, 1, 1))


def test_access_parameters_default_open_and_accept_narrowing():
    """No admins and an open endpoint by default; role/user ARNs and CIDRs are kept in order."""
    config = valid()
    assert config.cluster_admin_arns == ()
    assert config.public_access_cidrs == ("0.0.0.0/0",)
    assert config.image_tag_mutability == "IMMUTABLE"
    admins = ["arn:aws:iam::123456789012:role/platform", "arn:aws:iam::123456789012:user/ci"]
    narrowed = valid(cluster_admin_arns=admins, public_access_cidrs=["203.0.113.0/24"])
    assert narrowed.cluster_admin_arns == tuple(admins)
    assert narrowed.public_access_cidrs == ("203.0.113.0/24",)


@pytest.mark.parametrize(
    ("parameter", "value", "expected"),
    [
        ("cluster_admin_arns", ["arn:aws:iam::123456789012:group/admins"], "IAM role or user ARNs"),
        ("cluster_admin_arns", ["platform-admins"], "IAM role or user ARNs"),
        ("cluster_admin_arns", ["arn:aws:iam::123456789012:role/a"] * 2, "distinct ARNs"),
        ("public_access_cidrs", [], "one or more IPv4 CIDR blocks"),
        ("public_access_cidrs", ["203.0.113.7/24"], "no host bits"),
        ("public_access_cidrs", ["office"], "no host bits"),
        ("public_access_cidrs", ["2001:db8::/32"], "IPv4 CIDR"),
        ("image_tag_mutability", "mutable", "IMMUTABLE, MUTABLE"),
        ("permissions_boundary_arn", "arn:aws:iam::123456789012:role/x", "an IAM policy ARN"),
        ("permissions_boundary_arn", 7, "an IAM policy ARN"),
    ],
)
def test_bad_access_and_registry_parameters_are_refused(parameter, value, expected):
    """Each bad value is named with its parameter and what is allowed."""
    with pytest.raises(ValueError, match=parameter) as info:
        valid(**{parameter: value})
    assert expected in str(info.value)


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
        ["aws-observability"],
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


def test_names_for_the_longest_suffix_fit():
    """The longest cluster and role names stay within EKS and IAM limits."""
    names = Names("a" * 16)
    assert len(names.cluster) <= 100
    assert len(names.irsa_role("b" * 20)) <= 64
    assert len(names.alb_controller_role) <= 64
    assert names.repository("payment") == "a" * 16 + "/payment"
