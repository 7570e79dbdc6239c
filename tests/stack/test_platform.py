"""The synthesized platform stack: what it contains, checked value by value."""

from __future__ import annotations

import json
import re
from typing import Any

from stack.config import DEFAULT_KUBERNETES_VERSION, ECR_KEEP_IMAGES, LOG_RETENTION_DAYS
from tests.stack.conftest import LONGEST_SUFFIX
from tests.stack.helpers import address, block, output, resources

NAMESPACES = ["payment", "fraud-detection", "reporting"]


def by_name(synth: dict[str, Any], kind: str, key: str = "name") -> dict[str, dict[str, Any]]:
    """Resources of one type keyed by their `name` (or another attribute)."""
    return {item[key]: item for item in resources(synth, kind)}


def ref(synth: dict[str, Any], kind: str, predicate: Any, attribute: str) -> str:
    """The interpolation string a resource's attribute is referred to by."""
    return "${" + address(synth, kind, predicate) + "." + attribute + "}"


# --- network -------------------------------------------------------------------------


def test_vpc_has_dns_and_the_platform_cidr(default_stack):
    """The VPC enables DNS support and hostnames (EKS needs both) on 10.0.0.0/16."""
    (vpc,) = resources(default_stack, "aws_vpc")
    assert vpc["cidr_block"] == "10.0.0.0/16"
    assert vpc["enable_dns_support"] is True
    assert vpc["enable_dns_hostnames"] is True
    assert vpc["tags"]["Name"] == "envctl-pr7284-vpc"


def test_subnets_span_three_zones_with_load_balancer_tags(default_stack):
    """Each of the three zones has one public (elb) and one private (internal-elb) subnet."""
    subnets = resources(default_stack, "aws_subnet")
    public = sorted(
        (s["availability_zone"], s["cidr_block"]) for s in subnets if s["map_public_ip_on_launch"]
    )
    private = sorted(
        (s["availability_zone"], s["cidr_block"]) for s in subnets if not s["map_public_ip_on_launch"]
    )
    # No zone letter is assumed: the zones come from the region's list, by index.
    (lookup,) = default_stack["data"]["aws_availability_zones"]
    zones = [f"${{element(data.aws_availability_zones.{lookup}.names, {i})}}" for i in range(3)]
    assert public == list(zip(zones, ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"], strict=True))
    assert private == list(zip(zones, ["10.0.64.0/20", "10.0.80.0/20", "10.0.96.0/20"], strict=True))
    for subnet in subnets:
        role = "elb" if subnet["map_public_ip_on_launch"] else "internal-elb"
        tier = "public" if subnet["map_public_ip_on_launch"] else "private"
        assert subnet["tags"][f"kubernetes.io/role/{role}"] == "1"
        assert subnet["tags"]["kubernetes.io/cluster/envctl-pr7284"] == "shared"
        index = zones.index(subnet["availability_zone"])
        assert subnet["tags"]["Name"] == f"envctl-pr7284-{tier}-{index}"


def test_single_nat_gateway_serves_every_private_subnet(default_stack):
    """With nat_gateways=single, one NAT in a public subnet routes all three private tables."""
    (nat,) = resources(default_stack, "aws_nat_gateway")
    nat_ref = ref(default_stack, "aws_nat_gateway", lambda r: True, "id")
    public_a = ref(
        default_stack,
        "aws_subnet",
        lambda s: s["map_public_ip_on_launch"] and s["availability_zone"].endswith(", 0)}"),
        "id",
    )
    assert nat["subnet_id"] == public_a
    tables = resources(default_stack, "aws_route_table")
    private_routes = [t["route"] for t in tables if "private" in t["tags"]["Name"]]
    assert len(private_routes) == 3
    assert all(routes[0]["nat_gateway_id"] == nat_ref for routes in private_routes)
    (public,) = [t for t in tables if "public" in t["tags"]["Name"]]
    assert public["route"][0]["gateway_id"] == ref(
        default_stack, "aws_internet_gateway", lambda r: True, "id"
    )
    assert public["route"][0]["cidr_block"] == "0.0.0.0/0"
    assert len(resources(default_stack, "aws_route_table_association")) == 6
    (eip,) = resources(default_stack, "aws_eip")
    assert eip["domain"] == "vpc"


def test_per_az_nat_gateways_keep_each_zone_on_its_own_nat(seed_stack):
    """With nat_gateways=per_az, each private table routes through the NAT of its own zone."""
    nats = resources(seed_stack, "aws_nat_gateway")
    assert len(nats) == 3
    tables = [t for t in resources(seed_stack, "aws_route_table") if "private" in t["tags"]["Name"]]
    nat_ids = {t["route"][0]["nat_gateway_id"] for t in tables}
    assert len(nat_ids) == 3
    for table in tables:
        zone = table["tags"]["Name"].rsplit("-", 1)[-1]
        nat_ref = ref(seed_stack, "aws_nat_gateway", lambda n, z=zone: n["tags"]["Name"].endswith(z), "id")
        assert table["route"][0]["nat_gateway_id"] == nat_ref


# --- security group and cluster ---------------------------------------------------------


def test_security_group_rules_are_inline_and_api_is_vpc_only(default_stack):
    """Ingress and egress are inline in the SecurityGroup (seed failure 1); 443 from the VPC only."""
    assert "aws_security_group_rule" not in default_stack["resource"]
    assert "aws_vpc_security_group_ingress_rule" not in default_stack["resource"]
    (group,) = resources(default_stack, "aws_security_group")
    assert group["name"] == "envctl-pr7284-cluster"
    (ingress,) = group["ingress"]
    assert (ingress["from_port"], ingress["to_port"], ingress["protocol"]) == (443, 443, "tcp")
    assert ingress["cidr_blocks"] == ["10.0.0.0/16"]
    (egress,) = group["egress"]
    assert (egress["from_port"], egress["to_port"], egress["protocol"]) == (0, 0, "-1")
    assert egress["cidr_blocks"] == ["0.0.0.0/0"]


def test_cluster_version_logging_encryption_and_endpoints(default_stack):
    """The cluster runs the default version on private subnets, logs everything, encrypts secrets."""
    (cluster,) = resources(default_stack, "aws_eks_cluster")
    assert cluster["name"] == "envctl-pr7284"
    assert cluster["version"] == DEFAULT_KUBERNETES_VERSION == "1.35"
    assert sorted(cluster["enabled_cluster_log_types"]) == sorted(
        ["api", "audit", "authenticator", "controllerManager", "scheduler"]
    )
    vpc_config = block(cluster["vpc_config"])
    private_ids = sorted(
        "${aws_subnet." + key + ".id}"
        for key, s in default_stack["resource"]["aws_subnet"].items()
        if not s["map_public_ip_on_launch"]
    )
    assert sorted(vpc_config["subnet_ids"]) == private_ids
    assert vpc_config["endpoint_private_access"] is True
    assert vpc_config["endpoint_public_access"] is True
    assert vpc_config["security_group_ids"] == [
        ref(default_stack, "aws_security_group", lambda r: True, "id")
    ]
    encryption = block(cluster["encryption_config"])
    assert encryption["resources"] == ["secrets"]
    assert block(encryption["provider"])["key_arn"] == ref(
        default_stack, "aws_kms_key", lambda r: True, "arn"
    )
    assert cluster["deletion_protection"] is False


def test_kms_key_rotates_and_deletes_after_the_shortest_window(default_stack):
    """The secrets key has rotation on and the 7-day minimum deletion window."""
    (key,) = resources(default_stack, "aws_kms_key")
    assert key["enable_key_rotation"] is True
    assert key["deletion_window_in_days"] == 7
    (alias,) = resources(default_stack, "aws_kms_alias")
    assert alias["name"] == "alias/envctl-pr7284-eks-secrets"


def test_cluster_log_group_exists_before_the_cluster_with_retention(default_stack):
    """/aws/eks/<cluster>/cluster is created by the stack, with retention, before the cluster."""
    groups = by_name(default_stack, "aws_cloudwatch_log_group")
    group = groups["/aws/eks/envctl-pr7284/cluster"]
    assert group["retention_in_days"] == LOG_RETENTION_DAYS
    (cluster,) = resources(default_stack, "aws_eks_cluster")
    log_address = address(
        default_stack,
        "aws_cloudwatch_log_group",
        lambda g: g["name"] == "/aws/eks/envctl-pr7284/cluster",
    )
    assert log_address in cluster["depends_on"]


def test_seed_version_synthesizes_exactly_as_asked(seed_stack):
    """kubernetes_version='1.34' passed explicitly is honoured verbatim."""
    (cluster,) = resources(seed_stack, "aws_eks_cluster")
    assert cluster["version"] == "1.34"


def test_fargate_profiles_one_per_namespace_plus_kube_system(default_stack):
    """Five profiles on the private subnets (kube-system, the collector's, the services'), each
    selecting exactly its namespace, created once the pod execution role can pull and log."""
    profiles = resources(default_stack, "aws_eks_fargate_profile")
    selected = sorted(block(p["selector"])["namespace"] for p in profiles)
    assert selected == sorted(["kube-system", "fargate-container-insights", *NAMESPACES])
    needs = {
        address(default_stack, "aws_iam_role_policy_attachment", lambda a: "Fargate" in a["policy_arn"]),
        address(default_stack, "aws_iam_role_policy", lambda p: p["name"] == "fargate-log-router"),
    }
    assert all(set(p["depends_on"]) == needs for p in profiles)
    role_ref = ref(default_stack, "aws_iam_role", lambda r: r["name"] == "envctl-pr7284-fargate-pods", "arn")
    (cluster,) = resources(default_stack, "aws_eks_cluster")
    for profile in profiles:
        assert profile["pod_execution_role_arn"] == role_ref
        assert sorted(profile["subnet_ids"]) == sorted(block(cluster["vpc_config"])["subnet_ids"])
    role = by_name(default_stack, "aws_iam_role")["envctl-pr7284-fargate-pods"]
    trust = json.loads(role["assume_role_policy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "eks-fargate-pods.amazonaws.com"}


def test_addons_follow_the_cluster_version_and_wait_for_kube_system(default_stack):
    """vpc-cni, coredns, kube-proxy: the newest version for the cluster's version (looked up again
    when kubernetes_version changes), OVERWRITE, depends_on the kube-system profile."""
    addons = by_name(default_stack, "aws_eks_addon", key="addon_name")
    assert sorted(addons) == ["coredns", "kube-proxy", "vpc-cni"]
    kube_system = address(
        default_stack,
        "aws_eks_fargate_profile",
        lambda p: block(p["selector"])["namespace"] == "kube-system",
    )
    cluster = address(default_stack, "aws_eks_cluster", lambda r: True)
    lookups = default_stack["data"]["aws_eks_addon_version"]
    for name, addon in addons.items():
        (lookup,) = [key for key, value in lookups.items() if value["addon_name"] == name]
        assert addon["addon_version"] == f"${{data.aws_eks_addon_version.{lookup}.version}}"
        assert lookups[lookup]["kubernetes_version"] == f"${{{cluster}.version}}"
        assert lookups[lookup]["most_recent"] is True
        assert addon["resolve_conflicts_on_create"] == "OVERWRITE"
        assert addon["resolve_conflicts_on_update"] == "OVERWRITE"
        assert addon["depends_on"] == [kube_system]
    assert json.loads(addons["coredns"]["configuration_values"]) == {"computeType": "Fargate"}


# --- registry, identity, secrets, observability -----------------------------------------------


def test_ecr_repositories_scan_prune_and_force_delete(default_stack):
    """One repository per service: scan on push, a keep-last-N lifecycle, force_delete."""
    repos = by_name(default_stack, "aws_ecr_repository")
    assert sorted(repos) == sorted(f"pr7284/{ns}" for ns in NAMESPACES)
    for repo in repos.values():
        assert block(repo["image_scanning_configuration"])["scan_on_push"] is True
        assert repo["force_delete"] is True
    policies = resources(default_stack, "aws_ecr_lifecycle_policy")
    assert len(policies) == 3
    for policy in policies:
        (rule,) = json.loads(policy["policy"])["rules"]
        assert rule["selection"]["countType"] == "imageCountMoreThan"
        assert rule["selection"]["countNumber"] == ECR_KEEP_IMAGES
        assert rule["action"] == {"type": "expire"}


def test_scan_check_accepts_object_and_list_renderings():
    """The block reader accepts both renderings cdktf may produce and rejects others (seed failure 6)."""
    assert block({"scan_on_push": True}) == {"scan_on_push": True}
    assert block([{"scan_on_push": True}]) == {"scan_on_push": True}
    for bad in ([], "scan_on_push"):
        try:
            block(bad)
        except AssertionError:
            continue
        raise AssertionError(f"block({bad!r}) accepted")


def test_oidc_provider_trusts_the_cluster_issuer(default_stack):
    """The IAM OIDC provider points at the cluster's issuer with the STS audience."""
    (provider,) = resources(default_stack, "aws_iam_openid_connect_provider")
    cluster = address(default_stack, "aws_eks_cluster", lambda r: True)
    assert provider["url"] == "${" + cluster + ".identity[0].oidc[0].issuer}"
    assert provider["client_id_list"] == ["sts.amazonaws.com"]


def trust_conditions(synth: dict[str, Any], role: dict[str, Any]) -> dict[str, list[str]]:
    """The StringEquals conditions of a role's trust document, keyed by sub/aud."""
    match = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", role["assume_role_policy"])
    assert match, role["assume_role_policy"]
    (statement,) = synth["data"]["aws_iam_policy_document"][match.group(1)]["statement"]
    assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    assert statement["principals"][0]["type"] == "Federated"
    assert statement["principals"][0]["identifiers"] == [
        ref(synth, "aws_iam_openid_connect_provider", lambda r: True, "arn")
    ]
    result = {}
    for condition in statement["condition"]:
        assert condition["test"] == "StringEquals"
        assert condition["variable"].startswith("${replace(aws_eks_cluster.")
        result[condition["variable"].rsplit(":", 1)[1]] = condition["values"]
    return result


def test_irsa_roles_trust_only_their_own_service_account(default_stack):
    """Each service's role is assumable by system:serviceaccount:<ns>:<sa> with the STS audience."""
    roles = by_name(default_stack, "aws_iam_role")
    for ns in NAMESPACES:
        role = roles[f"envctl-pr7284-{ns}-irsa"]
        assert trust_conditions(default_stack, role) == {
            "sub": [f"system:serviceaccount:{ns}:{ns}"],
            "aud": ["sts.amazonaws.com"],
        }


def test_irsa_roles_read_only_their_own_secret(default_stack):
    """Each IRSA role's inline policy allows reading exactly its service's secret."""
    policies = [p for p in resources(default_stack, "aws_iam_role_policy") if p["name"] == "read-own-secret"]
    assert len(policies) == 3
    for ns in NAMESPACES:
        role_ref = ref(
            default_stack,
            "aws_iam_role",
            lambda r, n=ns: r["name"] == f"envctl-pr7284-{n}-irsa",
            "name",
        )
        secret_ref = ref(
            default_stack,
            "aws_secretsmanager_secret",
            lambda s, n=ns: s["name"] == f"envctl/pr7284/{n}",
            "arn",
        )
        (policy,) = [p for p in policies if p["role"] == role_ref]
        assert secret_ref.strip("${}") in policy["policy"]
        assert "secretsmanager:GetSecretValue" in policy["policy"]
        assert '"Resource":"*"' not in policy["policy"].replace(" ", "")
        others = [n for n in NAMESPACES if n != ns]
        for other in others:
            other_ref = address(
                default_stack,
                "aws_secretsmanager_secret",
                lambda s, o=other: s["name"] == f"envctl/pr7284/{o}",
            )
            assert other_ref not in policy["policy"]


def test_alb_controller_role_and_policy(default_stack):
    """The load balancer controller's role trusts kube-system:aws-load-balancer-controller only."""
    role = by_name(default_stack, "aws_iam_role")["envctl-pr7284-aws-lb-controller"]
    assert trust_conditions(default_stack, role) == {
        "sub": ["system:serviceaccount:kube-system:aws-load-balancer-controller"],
        "aud": ["sts.amazonaws.com"],
    }
    (policy,) = resources(default_stack, "aws_iam_policy")
    document = json.loads(policy["policy"])
    actions = {
        a
        for s in document["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert {
        "elasticloadbalancing:CreateLoadBalancer",
        "elasticloadbalancing:DeleteLoadBalancer",
    } <= actions
    deletes = [s for s in document["Statement"] if "elasticloadbalancing:DeleteLoadBalancer" in s["Action"]]
    assert all("aws:ResourceTag/elbv2.k8s.aws/cluster" in s["Condition"]["Null"] for s in deletes)
    (attachment,) = [
        a
        for a in resources(default_stack, "aws_iam_role_policy_attachment")
        if a["policy_arn"] == ref(default_stack, "aws_iam_policy", lambda r: True, "arn")
    ]
    assert attachment["role"] == ref(
        default_stack,
        "aws_iam_role",
        lambda r: r["name"] == "envctl-pr7284-aws-lb-controller",
        "name",
    )


def test_secrets_one_per_service_with_no_recovery_window(default_stack):
    """Each service has a secret named with the suffix that is deleted at once on destroy."""
    secrets = by_name(default_stack, "aws_secretsmanager_secret")
    assert sorted(secrets) == sorted(f"envctl/pr7284/{ns}" for ns in NAMESPACES)
    assert all(s["recovery_window_in_days"] == 0 for s in secrets.values())


def test_container_insights_log_groups_have_retention(default_stack):
    """application (the Fargate log router's) and performance (the collector's) exist with
    retention; no group that nothing on Fargate writes (dataplane: node agents only)."""
    groups = by_name(default_stack, "aws_cloudwatch_log_group")
    insights = sorted(name for name in groups if name.startswith("/aws/containerinsights/"))
    assert insights == [
        f"/aws/containerinsights/envctl-pr7284/{kind}" for kind in ("application", "performance")
    ]
    assert all(groups[name]["retention_in_days"] == LOG_RETENTION_DAYS for name in insights)


# --- outputs, tags, backend, destroyability, names ------------------------------------------------


def test_outputs_name_the_cluster_network_registries_and_roles(default_stack):
    """Outputs are found whatever prefix cdktf gives them and point at the right attributes."""
    cluster = address(default_stack, "aws_eks_cluster", lambda r: True)
    assert output(default_stack, "cluster_name")["value"] == "${" + cluster + ".name}"
    assert output(default_stack, "cluster_endpoint")["value"] == "${" + cluster + ".endpoint}"
    assert output(default_stack, "vpc_id")["value"] == ref(default_stack, "aws_vpc", lambda r: True, "id")
    assert len(output(default_stack, "private_subnet_ids")["value"]) == 3
    assert len(output(default_stack, "public_subnet_ids")["value"]) == 3
    assert sorted(output(default_stack, "ecr_repository_urls")["value"]) == sorted(NAMESPACES)
    assert sorted(output(default_stack, "irsa_role_arns")["value"]) == sorted(NAMESPACES)
    assert output(default_stack, "oidc_provider_arn")["value"] == ref(
        default_stack, "aws_iam_openid_connect_provider", lambda r: True, "arn"
    )
    assert output(default_stack, "alb_controller_role_arn")["value"].endswith(".arn}")


def test_output_lookup_ignores_cdktf_prefixes():
    """An output named with a construct path and hash is found by its plain name (seed failure 4)."""
    synth = {"output": {"microservices_cluster_name_F27AAE71": {"value": "x"}, "vpc_id": {"value": "y"}}}
    assert output(synth, "cluster_name") == {"value": "x"}
    assert output(synth, "vpc_id") == {"value": "y"}


def test_default_tags_merge_caller_tags_under_ours(default_stack, seed_stack):
    """The provider tags every resource with Environment and ManagedBy=envctl, after the caller's tags."""
    (provider,) = default_stack["provider"]["aws"]
    assert provider["region"] == "us-east-1"
    assert block(provider["default_tags"])["tags"] == {
        "Environment": "pr7284",
        "ManagedBy": "envctl",
    }
    (seed_provider,) = seed_stack["provider"]["aws"]
    assert block(seed_provider["default_tags"])["tags"] == {
        "Team": "platform",
        "Environment": "staging",
        "ManagedBy": "envctl",
    }


def test_the_stack_declares_no_backend(default_stack, seed_stack, longest_stack):
    """The stack declares no state backend (cdktf's local default): the controller owns it and the
    synth worker sets its own block (controller.backend), so a stack can never point elsewhere."""
    for synth in (default_stack, seed_stack, longest_stack):
        assert list(synth["terraform"]["backend"]) == ["local"]


def test_nothing_blocks_destroy(default_stack, seed_stack):
    """No prevent_destroy, deletion protection, retained secret or undeletable repository."""
    for synth in (default_stack, seed_stack):
        text = json.dumps(synth)
        assert "prevent_destroy" not in text
        for kind, items in synth["resource"].items():
            for item in items.values():
                assert item.get("deletion_protection", False) is False, kind
                assert item.get("lifecycle", {}).get("prevent_destroy", False) is False
        assert all(s["recovery_window_in_days"] == 0 for s in resources(synth, "aws_secretsmanager_secret"))
        assert all(r["force_delete"] is True for r in resources(synth, "aws_ecr_repository"))


def test_every_resource_is_named_with_the_suffix(longest_stack):
    """Every name and every Name tag carries the environment suffix."""
    for kind, items in longest_stack["resource"].items():
        for item in items.values():
            for key in ("name", "fargate_profile_name"):
                if key in item and isinstance(item[key], str) and not item[key].startswith("${"):
                    if kind in ("aws_iam_role_policy", "helm_release"):
                        continue  # scoped to their role, or to the environment's own cluster
                    assert LONGEST_SUFFIX in item[key], (kind, item[key])
            if "tags" in item:
                assert LONGEST_SUFFIX in item["tags"]["Name"], (kind, item["tags"])


NAME_LIMITS: dict[str, tuple[int, str]] = {
    "aws_iam_role": (64, r"[\w+=,.@-]+"),
    "aws_iam_policy": (128, r"[\w+=,.@-]+"),
    "aws_iam_role_policy": (128, r"[\w+=,.@-]+"),
    "aws_eks_cluster": (100, r"[0-9A-Za-z][A-Za-z0-9\-_]*"),
    "aws_eks_fargate_profile": (100, r"[0-9A-Za-z][A-Za-z0-9\-_]*"),
    "aws_ecr_repository": (256, r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"),
    "aws_cloudwatch_log_group": (512, r"[.\-_/#A-Za-z0-9]+"),
    "aws_secretsmanager_secret": (512, r"[\w/+=.@-]+"),
    "aws_security_group": (255, r"[\w .:/()#,@\[\]+=&;{}!$*-]+"),
    "aws_kms_alias": (256, r"alias/[\w/-]+"),
    "helm_release": (53, r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"),
}


def test_every_derived_name_fits_its_aws_limit(longest_stack):
    """With a 16-character suffix and a 20-character namespace every name fits its AWS limit."""
    checked: set[str] = set()
    for kind, items in longest_stack["resource"].items():
        for item in items.values():
            for key in ("name", "name_prefix", "fargate_profile_name"):
                if key not in item:
                    continue
                value = item[key]
                if value.startswith("${"):
                    continue  # a reference to a name checked where it is defined
                limit, pattern = NAME_LIMITS[kind]
                assert len(value) <= limit, (kind, value, len(value), limit)
                assert re.fullmatch(pattern, value), (kind, value)
                checked.add(kind)
    assert checked == set(NAME_LIMITS)
    (cluster,) = resources(longest_stack, "aws_eks_cluster")
    assert len(cluster["name"]) == len("envctl-") + 16
    longest_role = max((r["name"] for r in resources(longest_stack, "aws_iam_role")), key=len)
    assert longest_role == f"envctl-{LONGEST_SUFFIX}-{'a' * 20}-irsa"
    assert len(longest_role) <= 64
