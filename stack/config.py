"""Validated inputs of the platform stack and every name derived from them.

This module is pure (no cdktf import) so that the controller can check an
environment's parameters, and tests can check name limits, without paying for
the AWS bindings. Every derived AWS name is built here, in one place, so a test
can prove each one fits its AWS limit for the longest allowed suffix.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

SUFFIX_PATTERN = re.compile(r"[a-z][a-z0-9]{0,15}")
SUFFIX_RULE = "1 to 16 characters: a lowercase letter, then lowercase letters or digits"
NAMESPACE_PATTERN = re.compile(r"[a-z]([a-z0-9-]{0,18}[a-z0-9])?")
NAMESPACE_RULE = (
    "a DNS label of 1 to 20 characters: lowercase letters, digits and '-', "
    "starting with a letter and not ending with '-'"
)
REGION_PATTERN = re.compile(r"[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d")
K8S_VERSION_PATTERN = re.compile(r"1\.(\d{2})")
TAG_KEY_PATTERN = re.compile(r"[\w .:/=+\-@]{1,128}")
ROLE_ARN_PATTERN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,64}")
POLICY_ARN_PATTERN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:policy/[\w+=,.@/-]{1,128}")
PRINCIPAL_ARN_PATTERN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]{1,64}")

DEFAULT_KUBERNETES_VERSION = "1.35"
"""In EKS standard support until 2027-03-27 (1.29, the seed's value, left extended support)."""
EKS_SUPPORT: Mapping[str, tuple[date, date]] = {
    # version: (end of standard support, end of extended support). After the second date EKS
    # neither creates nor keeps a cluster of that version (it auto-upgrades it). Source: the EKS
    # User Guide, "Understand the Kubernetes version lifecycle on EKS" (release calendar), as
    # mirrored by endoflife.date/amazon-eks; checked 2026-11-30.
    "1.29": (date(2025, 3, 23), date(2026, 3, 23)),
    "1.30": (date(2025, 7, 23), date(2026, 7, 23)),
    "1.31": (date(2025, 11, 26), date(2026, 11, 26)),
    "1.32": (date(2026, 3, 23), date(2027, 3, 23)),
    "1.33": (date(2026, 7, 29), date(2027, 7, 29)),
    "1.34": (date(2026, 12, 2), date(2027, 12, 2)),
    "1.35": (date(2027, 3, 27), date(2028, 3, 27)),
}
"""Versions newer than the newest listed are taken as released after this table was written."""
EKS_UNSUPPORTED_ZONE_IDS = ("use1-az3", "usw1-az2", "cac1-az3")
"""Zone IDs where EKS cannot place a control plane (UnsupportedAvailabilityZoneException); eksctl
avoids the same three."""
IMAGE_TAG_MUTABILITY = ("IMMUTABLE", "MUTABLE")
OPEN_TO_THE_WORLD = ("0.0.0.0/0",)
DEFAULT_NAMESPACES = ("payment", "fraud-detection", "reporting")
NAT_GATEWAY_MODES = ("single", "per_az")
RESERVED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", "default", "aws-observability")
VPC_CIDR = "10.0.0.0/16"
LOG_RETENTION_DAYS = 30
ECR_KEEP_IMAGES = 30
"""Images an ECR lifecycle policy keeps per repository."""

_TWO_ZONE_REGIONS = ("us-west-1",)
CLOCK: Callable[[], date] = date.today
"""Today's date for `validate` when none is given (tests pin it: the support table is dated)."""


class _Invalid(ValueError):
    """A constructor argument outside what is allowed."""

    def __init__(self, parameter: str, value: object, allowed: str) -> None:
        super().__init__(f"PlatformStack: {parameter}={value!r} is not allowed; expected {allowed}")
        self.parameter = parameter
        self.value = value
        self.allowed = allowed


@dataclass(frozen=True)
class Names:
    """Every AWS name the stack derives from the environment suffix."""

    suffix: str

    @property
    def cluster(self) -> str:
        return f"envctl-{self.suffix}"

    @property
    def vpc(self) -> str:
        return f"{self.cluster}-vpc"

    def subnet(self, tier: str, index: int) -> str:
        """Index-based: which zone letter a subnet gets differs from account to account."""
        return f"{self.cluster}-{tier}-{index}"

    @property
    def cluster_role(self) -> str:
        return f"{self.cluster}-cluster"

    @property
    def fargate_role(self) -> str:
        return f"{self.cluster}-fargate-pods"

    @property
    def alb_controller_role(self) -> str:
        return f"{self.cluster}-aws-lb-controller"

    def irsa_role(self, namespace: str) -> str:
        return f"{self.cluster}-{namespace}-irsa"

    def fargate_profile(self, namespace: str) -> str:
        return f"{self.cluster}-{namespace}"

    def repository(self, namespace: str) -> str:
        return f"{self.suffix}/{namespace}"

    def secret(self, namespace: str) -> str:
        return f"envctl/{self.suffix}/{namespace}"

    @property
    def cluster_log_group(self) -> str:
        return f"/aws/eks/{self.cluster}/cluster"

    def insights_log_group(self, kind: str) -> str:
        return f"/aws/containerinsights/{self.cluster}/{kind}"

    @property
    def adot_role(self) -> str:
        return f"{self.cluster}-adot-collector"

    @property
    def kms_alias(self) -> str:
        return f"alias/{self.cluster}-eks-secrets"


def check_kubernetes_version(version: object, today: date) -> str:
    """`version` if EKS still creates clusters of it on `today`, else ValueError naming the oldest."""
    match = K8S_VERSION_PATTERN.fullmatch(version) if isinstance(version, str) else None
    creatable = sorted(
        (v for v, (_, extended_end) in EKS_SUPPORT.items() if extended_end > today),
        key=lambda v: int(v.split(".")[1]),
    )
    newest = max(int(v.split(".")[1]) for v in EKS_SUPPORT)
    if match is None:
        raise _Invalid("kubernetes_version", version, 'an EKS version string such as "1.35"')
    minor = int(match.group(1))
    if (version in creatable) or minor > newest:
        return str(version)
    oldest = creatable[0] if creatable else f"1.{newest + 1}"
    ended = EKS_SUPPORT.get(str(version))
    why = f"EKS support ended on {ended[1].isoformat()}" if ended else "EKS does not create it"
    raise _Invalid(
        "kubernetes_version",
        version,
        f"a version EKS still creates on {today.isoformat()} ({why}): {oldest} or newer",
    )


@dataclass(frozen=True)
class StackConfig:
    """The validated parameters of one PlatformStack."""

    environment_suffix: str
    aws_region: str
    availability_zones: tuple[str, ...] | None
    """Explicit zones, or None: three available zones EKS supports, looked up by Terraform."""
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
    namespaces: tuple[str, ...] = DEFAULT_NAMESPACES
    nat_gateways: str = "single"
    tags: Mapping[str, str] = field(default_factory=dict)
    vpc_cidr: str = VPC_CIDR
    deploy_role_arn: str | None = None
    """Role the AWS provider assumes to manage the stack (None: the caller's credentials)."""
    cluster_admin_arns: tuple[str, ...] = ()
    """IAM roles/users given AmazonEKSClusterAdminPolicy through EKS access entries."""
    public_access_cidrs: tuple[str, ...] = OPEN_TO_THE_WORLD
    """Who may reach the public Kubernetes API endpoint."""
    image_tag_mutability: str = "IMMUTABLE"
    permissions_boundary_arn: str | None = None
    """A permissions boundary on every role the stack creates (the deployer may create none
    without it: helm/deployer-iam-policy.json)."""

    @property
    def names(self) -> Names:
        return Names(self.environment_suffix)

    @property
    def default_tags(self) -> dict[str, str]:
        """Provider default tags: the caller's tags, then ours (ours win)."""
        return {**self.tags, "Environment": self.environment_suffix, "ManagedBy": "envctl"}

    def subnet_cidrs(self) -> tuple[list[str], list[str]]:
        """Public /24s from .0, private /20s from .64: room for Fargate pods."""
        network = ipaddress.ip_network(self.vpc_cidr)
        public = list(network.subnets(new_prefix=24))[:3]
        private = list(network.subnets(new_prefix=20))[4:7]
        return [str(n) for n in public], [str(n) for n in private]


def validate(  # noqa: PLR0912 - one check per parameter, before any construct exists
    *,
    environment_suffix: object,
    aws_region: object,
    availability_zones: Sequence[str] | None = None,
    kubernetes_version: object = DEFAULT_KUBERNETES_VERSION,
    namespaces: Sequence[str] | None = None,
    nat_gateways: object = "single",
    tags: Mapping[str, str] | None = None,
    deploy_role_arn: object = None,
    cluster_admin_arns: Sequence[str] | None = None,
    public_access_cidrs: Sequence[str] | None = None,
    image_tag_mutability: object = "IMMUTABLE",
    permissions_boundary_arn: object = None,
    today: date | None = None,
) -> StackConfig:
    """Check every parameter and return the config, or raise ValueError naming the first bad one.

    `today` decides which Kubernetes versions EKS still creates (default: the current date).
    """
    if not isinstance(environment_suffix, str) or not SUFFIX_PATTERN.fullmatch(environment_suffix):
        raise _Invalid("environment_suffix", environment_suffix, SUFFIX_RULE)
    if not isinstance(aws_region, str) or not REGION_PATTERN.fullmatch(aws_region):
        raise _Invalid("aws_region", aws_region, "an AWS region name such as us-east-1")
    zones = None if availability_zones is None else tuple(availability_zones)
    if zones is None and aws_region in _TWO_ZONE_REGIONS:
        raise _Invalid(
            "availability_zones",
            None,
            f"three zones named explicitly: {aws_region} offers fewer than three to most accounts",
        )
    if zones is not None and (len(zones) != 3 or len(set(zones)) != 3):
        raise _Invalid("availability_zones", list(zones), "exactly 3 distinct zones")
    for zone in zones or ():
        if not isinstance(zone, str) or not re.fullmatch(re.escape(aws_region) + r"[a-z]", zone):
            raise _Invalid(
                "availability_zones", list(zones or ()), f"zones of {aws_region}, like {aws_region}a"
            )
    version = check_kubernetes_version(kubernetes_version, today or CLOCK())
    spaces = tuple(namespaces) if namespaces is not None else DEFAULT_NAMESPACES
    if not spaces or len(set(spaces)) != len(spaces):
        raise _Invalid("namespaces", list(spaces), "one or more distinct namespace names")
    for space in spaces:
        if not isinstance(space, str) or not NAMESPACE_PATTERN.fullmatch(space):
            raise _Invalid("namespaces", space, NAMESPACE_RULE)
        if space in RESERVED_NAMESPACES:
            raise _Invalid("namespaces", space, f"a namespace other than {', '.join(RESERVED_NAMESPACES)}")
    if nat_gateways not in NAT_GATEWAY_MODES:
        raise _Invalid("nat_gateways", nat_gateways, f"one of {', '.join(NAT_GATEWAY_MODES)}")
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not TAG_KEY_PATTERN.fullmatch(key) or key.startswith("aws:"):
            raise _Invalid("tags", key, "tag keys of 1-128 letters, digits, spaces and _.:/=+-@, not aws:")
        if not isinstance(value, str) or len(value) > 256:
            raise _Invalid(f"tags[{key}]", value, "a string of at most 256 characters")
    if deploy_role_arn is not None and (
        not isinstance(deploy_role_arn, str) or not ROLE_ARN_PATTERN.fullmatch(deploy_role_arn)
    ):
        raise _Invalid(
            "deploy_role_arn", deploy_role_arn, "an IAM role ARN like arn:aws:iam::123456789012:role/x"
        )
    admins = tuple(cluster_admin_arns or ())
    for arn in admins:
        if not isinstance(arn, str) or not PRINCIPAL_ARN_PATTERN.fullmatch(arn):
            raise _Invalid(
                "cluster_admin_arns",
                arn,
                "IAM role or user ARNs like arn:aws:iam::123456789012:role/platform-admins",
            )
    if len(set(admins)) != len(admins):
        raise _Invalid("cluster_admin_arns", list(admins), "distinct ARNs")
    cidrs = tuple(public_access_cidrs) if public_access_cidrs is not None else OPEN_TO_THE_WORLD
    if not cidrs:
        raise _Invalid("public_access_cidrs", [], "one or more IPv4 CIDR blocks, like 203.0.113.0/24")
    for cidr in cidrs:
        try:
            network = ipaddress.IPv4Network(cidr) if isinstance(cidr, str) else None
        except ValueError:
            network = None
        if network is None or str(network) != cidr:
            raise _Invalid(
                "public_access_cidrs", cidr, "IPv4 CIDR blocks with no host bits, like 203.0.113.0/24"
            )
    if image_tag_mutability not in IMAGE_TAG_MUTABILITY:
        raise _Invalid(
            "image_tag_mutability", image_tag_mutability, f"one of {', '.join(IMAGE_TAG_MUTABILITY)}"
        )
    if permissions_boundary_arn is not None and (
        not isinstance(permissions_boundary_arn, str)
        or not POLICY_ARN_PATTERN.fullmatch(permissions_boundary_arn)
    ):
        raise _Invalid(
            "permissions_boundary_arn",
            permissions_boundary_arn,
            "an IAM policy ARN like arn:aws:iam::123456789012:policy/envctl-workload-boundary",
        )
    return StackConfig(
        environment_suffix=environment_suffix,
        aws_region=aws_region,
        availability_zones=zones,
        kubernetes_version=version,
        namespaces=spaces,
        nat_gateways=str(nat_gateways),
        tags=dict(tags or {}),
        deploy_role_arn=deploy_role_arn,
        cluster_admin_arns=admins,
        public_access_cidrs=cidrs,
        image_tag_mutability=str(image_tag_mutability),
        permissions_boundary_arn=permissions_boundary_arn,
    )
