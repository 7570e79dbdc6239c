"""A cluster people can use, creatable everywhere and destroyable: checked in the synthesized JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from stack.baseline import ADOT_IMAGE, ALB_CONTROLLER_CHART, METRICS_SERVER_CHART, METRICS_SERVER_PORT
from stack.config import EKS_UNSUPPORTED_ZONE_IDS
from tests.stack.conftest import synth
from tests.stack.helpers import address, block, output, resources

NAMESPACES = ["payment", "fraud-detection", "reporting"]
ADMINS = ["arn:aws:iam::123456789012:role/platform-admins", "arn:aws:iam::123456789012:user/release-bot"]
UPSTREAM_POLICY = Path(__file__).parent / "data" / "alb-controller-iam-policy-v3.5.0.json"


@pytest.fixture(scope="session")
def narrowed_stack() -> dict[str, Any]:
    """Two admins, the endpoint narrowed to an office range, mutable tags, a NAT per zone."""
    return synth(
        environment_suffix="staging",
        aws_region="eu-west-1",
        cluster_admin_arns=ADMINS,
        public_access_cidrs=["203.0.113.0/24", "198.51.100.0/24"],
        image_tag_mutability="MUTABLE",
        nat_gateways="per_az",
    )


def one(synth_: dict[str, Any], kind: str, predicate: Any = lambda r: True) -> dict[str, Any]:
    (found,) = [r for r in resources(synth_, kind) if predicate(r)]
    return found


def addr(synth_: dict[str, Any], kind: str, predicate: Any = lambda r: True) -> str:
    return address(synth_, kind, predicate)


def actions(document: dict[str, Any]) -> set[str]:
    return {
        a
        for s in document["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }


# --- access ------------------------------------------------------------------------------------


def test_access_entries_only_and_the_creator_stays_admin(default_stack):
    """authentication_mode API (no aws-auth ConfigMap); the deployer keeps admin for the baseline."""
    cluster = one(default_stack, "aws_eks_cluster")
    access = block(cluster["access_config"])
    assert access == {"authentication_mode": "API", "bootstrap_cluster_creator_admin_permissions": True}
    assert block(cluster["vpc_config"])["public_access_cidrs"] == ["0.0.0.0/0"]
    assert "aws_eks_access_entry" not in default_stack["resource"]


def test_named_admins_get_cluster_admin_through_access_entries(narrowed_stack):
    """Each ARN gets an access entry and AmazonEKSClusterAdminPolicy at cluster scope."""
    entries = resources(narrowed_stack, "aws_eks_access_entry")
    assert sorted(e["principal_arn"] for e in entries) == sorted(ADMINS)
    assert all(e["type"] == "STANDARD" for e in entries)
    associations = resources(narrowed_stack, "aws_eks_access_policy_association")
    assert len(associations) == 2
    entry_addresses = {
        addr(narrowed_stack, "aws_eks_access_entry", lambda e, a=arn: e["principal_arn"] == a)
        for arn in ADMINS
    }
    for association in associations:
        assert (
            association["policy_arn"] == "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
        )
        assert block(association["access_scope"]) == {"type": "cluster"}
        assert association["principal_arn"] in {f"${{{a}.principal_arn}}" for a in entry_addresses}


def test_public_endpoint_can_be_narrowed(narrowed_stack):
    """public_access_cidrs reaches the cluster's vpc_config as given."""
    cluster = one(narrowed_stack, "aws_eks_cluster")
    assert block(cluster["vpc_config"])["public_access_cidrs"] == ["203.0.113.0/24", "198.51.100.0/24"]


# --- creatable everywhere, and again -------------------------------------------------------------


def test_zones_come_from_the_region_without_eks_unsupported_ids(default_stack):
    """Available, not opt-in, use1-az3/usw1-az2/cac1-az3 excluded, three demanded by a postcondition."""
    (lookup,) = default_stack["data"]["aws_availability_zones"].values()
    assert lookup["state"] == "available"
    assert (
        lookup["exclude_zone_ids"] == list(EKS_UNSUPPORTED_ZONE_IDS) == ["use1-az3", "usw1-az2", "cac1-az3"]
    )
    assert lookup["filter"] == [{"name": "opt-in-status", "values": ["opt-in-not-required"]}]
    (condition,) = lookup["lifecycle"]["postcondition"]
    assert condition["condition"] == "${length(self.names) >= 3}"
    assert "parameters.availability_zones" in condition["error_message"]


def test_explicit_zones_skip_the_lookup_and_names_stay_index_based(seed_stack):
    """Named zones are used as given; subnet and NAT names carry an index, not a letter."""
    assert "aws_availability_zones" not in seed_stack.get("data", {})
    subnets = resources(seed_stack, "aws_subnet")
    assert sorted({s["availability_zone"] for s in subnets}) == ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    names = sorted(s["tags"]["Name"] for s in subnets)
    assert names == sorted(f"envctl-staging-{tier}-{i}" for tier in ("private", "public") for i in range(3))
    assert sorted(n["tags"]["Name"] for n in resources(seed_stack, "aws_nat_gateway")) == [
        f"envctl-staging-nat-{i}" for i in range(3)
    ]


def test_hooks_declare_adoption_quotas_and_clean_up(default_stack, narrowed_stack):
    """The controller's instructions travel in the synthesized JSON (a `//` comment Terraform ignores)."""
    hooks = default_stack["//"]["envctl"]
    log_group = addr(default_stack, "aws_cloudwatch_log_group", lambda g: g["name"].endswith("/cluster"))
    assert hooks == {
        "region": "us-east-1",
        "adopt": [{"address": log_group, "log_group": "/aws/eks/envctl-pr7284/cluster"}],
        "creates": {"vpcs": 1, "elastic_ips": 1},
        "pre_destroy": {"elbv2_cluster_tag": "envctl-pr7284"},
        "post_destroy": {"log_groups": ["/aws/eks/envctl-pr7284/cluster"]},
    }
    assert narrowed_stack["//"]["envctl"]["creates"] == {"vpcs": 1, "elastic_ips": 3}


# --- destroyable ---------------------------------------------------------------------------------


def test_cluster_waits_for_its_policy_attachment(default_stack):
    """The cluster depends on AmazonEKSClusterPolicy's attachment, so it is detached only after."""
    cluster = one(default_stack, "aws_eks_cluster")
    attachment = addr(
        default_stack,
        "aws_iam_role_policy_attachment",
        lambda a: a["policy_arn"] == "arn:aws:iam::aws:policy/AmazonEKSClusterPolicy",
    )
    assert attachment in cluster["depends_on"]


# --- in-cluster baseline -------------------------------------------------------------------------


def test_kubernetes_and_helm_providers_use_the_cluster_and_a_token(default_stack):
    """Endpoint, CA and an aws_eks_cluster_auth token read once the cluster exists; no kubeconfig."""
    cluster = addr(default_stack, "aws_eks_cluster")
    (auth_key, auth) = next(iter(default_stack["data"]["aws_eks_cluster_auth"].items()))
    assert auth["name"] == f"${{{cluster}.name}}"
    assert auth["depends_on"] == [cluster]
    expected = {
        "host": f"${{{cluster}.endpoint}}",
        "cluster_ca_certificate": f"${{base64decode({cluster}.certificate_authority[0].data)}}",
        "token": f"${{data.aws_eks_cluster_auth.{auth_key}.token}}",
    }
    (kubernetes,) = default_stack["provider"]["kubernetes"]
    (helm,) = default_stack["provider"]["helm"]
    assert kubernetes == expected
    assert block(helm["kubernetes"]) == expected
    text = json.dumps(default_stack["provider"])
    assert "config_path" not in text and "exec" not in text
    required = default_stack["terraform"]["required_providers"]
    assert {"aws", "kubernetes", "helm"} <= set(required)


def test_namespaces_and_irsa_service_accounts(default_stack):
    """Each service gets its namespace and `<ns>:<ns>` annotated with its own IRSA role."""
    namespaces = {
        block(n["metadata"])["name"]: n for n in resources(default_stack, "kubernetes_namespace_v1")
    }
    assert set(NAMESPACES) <= set(namespaces)
    accounts = resources(default_stack, "kubernetes_service_account_v1")
    for ns in NAMESPACES:
        namespace_ref = addr(
            default_stack, "kubernetes_namespace_v1", lambda n, x=ns: block(n["metadata"])["name"] == x
        )
        (account,) = [
            a
            for a in accounts
            if block(a["metadata"])["namespace"] == f"${{{namespace_ref}.metadata[0].name}}"
        ]
        role = addr(default_stack, "aws_iam_role", lambda r, x=ns: r["name"] == f"envctl-pr7284-{x}-irsa")
        assert block(account["metadata"])["name"] == ns
        assert block(account["metadata"])["annotations"] == {"eks.amazonaws.com/role-arn": f"${{{role}.arn}}"}
        # A namespace waits for its Fargate profile, and outlives the load balancer controller
        # on destroy (deleted first), so the controller removes its Ingresses' load balancers.
        profile = addr(
            default_stack,
            "aws_eks_fargate_profile",
            lambda p, x=ns: block(p["selector"])["namespace"] == x,
        )
        assert profile in namespaces[ns]["depends_on"]
        assert (
            addr(default_stack, "helm_release", lambda r: r["name"] == "aws-load-balancer-controller")
            in (namespaces[ns]["depends_on"])
        )


def test_fargate_pod_logs_go_to_the_application_log_group(default_stack):
    """aws-observability (labelled) + aws-logging with a cloudwatch_logs output; the router may write."""
    observability = one(
        default_stack,
        "kubernetes_namespace_v1",
        lambda n: block(n["metadata"])["name"] == "aws-observability",
    )
    assert block(observability["metadata"])["labels"] == {"aws-observability": "enabled"}
    logging = one(
        default_stack, "kubernetes_config_map_v1", lambda c: block(c["metadata"])["name"] == "aws-logging"
    )
    output_conf = logging["data"]["output.conf"]
    assert "Name cloudwatch_logs" in output_conf
    application = addr(
        default_stack, "aws_cloudwatch_log_group", lambda g: g["name"].endswith("/application")
    )
    assert f"log_group_name ${{{application}.name}}" in output_conf
    assert "region us-east-1" in output_conf
    assert "auto_create_group false" in output_conf
    router = one(default_stack, "aws_iam_role_policy", lambda p: p["name"] == "fargate-log-router")
    statement = json.loads(router["policy"])["Statement"][0]
    assert {"logs:CreateLogStream", "logs:PutLogEvents"} <= set(statement["Action"])
    assert re.fullmatch(
        r"arn:aws:logs:\*:\*:log-group:/aws/containerinsights/envctl-pr7284/\*", statement["Resource"]
    )
    assert (
        addr(default_stack, "aws_iam_role_policy", lambda p: p["name"] == "fargate-log-router")
        in logging["depends_on"]
    )


def test_load_balancer_controller_release(default_stack):
    """Pinned chart; cluster, region and VPC given (no instance metadata on Fargate); its IRSA role."""
    release = one(default_stack, "helm_release", lambda r: r["name"] == "aws-load-balancer-controller")
    assert {k: release[k] for k in ("repository", "chart", "version")} == ALB_CONTROLLER_CHART
    assert re.fullmatch(r"\d+\.\d+\.\d+", release["version"])
    assert release["namespace"] == "kube-system"
    assert release["wait"] is True
    (values,) = release["values"]
    cluster = addr(default_stack, "aws_eks_cluster")
    vpc = addr(default_stack, "aws_vpc")
    role = addr(default_stack, "aws_iam_role", lambda r: r["name"] == "envctl-pr7284-aws-lb-controller")
    for fragment in (
        f'"clusterName" = {cluster}.name',
        '"region" = "us-east-1"',
        f'"vpcId" = {vpc}.id',
        f'"eks.amazonaws.com/role-arn" = {role}.arn',
        '"name" = "aws-load-balancer-controller"',
    ):
        assert fragment in values, fragment
    kube_system = addr(
        default_stack, "aws_eks_fargate_profile", lambda p: block(p["selector"])["namespace"] == "kube-system"
    )
    coredns = addr(default_stack, "aws_eks_addon", lambda a: a["addon_name"] == "coredns")
    attach = addr(
        default_stack, "aws_iam_role_policy_attachment", lambda a: "aws_iam_policy." in a["policy_arn"]
    )
    assert {kube_system, coredns, attach} <= set(release["depends_on"])


def test_load_balancer_controller_policy_has_every_upstream_action(default_stack):
    """The policy allows exactly the actions of the upstream v3.5.0 iam_policy.json."""
    upstream = json.loads(UPSTREAM_POLICY.read_text())
    ours = json.loads(one(default_stack, "aws_iam_policy")["policy"])
    assert actions(ours) == actions(upstream)
    assert {
        "ec2:DescribeRouteTables",
        "ec2:DescribeIpamPools",
        "elasticloadbalancing:ModifyIpPools",
    } <= actions(ours)


def test_metrics_server_release(default_stack):
    """Pinned chart, on a port Fargate's kubelet does not hold, after kube-system can run pods."""
    release = one(default_stack, "helm_release", lambda r: r["name"] == "metrics-server")
    assert {k: release[k] for k in ("repository", "chart", "version")} == METRICS_SERVER_CHART
    assert release["values"] == [f'${{yamlencode({{"containerPort" = {METRICS_SERVER_PORT}}})}}']
    kube_system = addr(
        default_stack, "aws_eks_fargate_profile", lambda p: block(p["selector"])["namespace"] == "kube-system"
    )
    assert kube_system in release["depends_on"]


def test_container_insights_collector_on_fargate(default_stack):
    """An ADOT collector with its IRSA role (CloudWatchAgentServerPolicy), its own Fargate profile,
    scraping cAdvisor through the API server and writing EMF into the performance group."""
    role = one(default_stack, "aws_iam_role", lambda r: r["name"] == "envctl-pr7284-adot-collector")
    role_addr = addr(default_stack, "aws_iam_role", lambda r: r["name"] == "envctl-pr7284-adot-collector")
    from tests.stack.test_platform import trust_conditions

    assert trust_conditions(default_stack, role)["sub"] == [
        "system:serviceaccount:fargate-container-insights:adot-collector"
    ]
    attach = one(
        default_stack,
        "aws_iam_role_policy_attachment",
        lambda a: a["policy_arn"] == "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy",
    )
    assert attach["role"] == f"${{{role_addr}.name}}"
    config_map = one(
        default_stack,
        "kubernetes_config_map_v1",
        lambda c: block(c["metadata"])["name"] == "adot-collector-config",
    )
    collector = json.loads(config_map["data"]["collector.yaml"])
    (scrape,) = collector["receivers"]["prometheus"]["config"]["scrape_configs"]
    assert scrape["kubernetes_sd_configs"] == [{"role": "node"}]
    assert any(
        r.get("replacement") == "/api/v1/nodes/$$1/proxy/metrics/cadvisor" for r in scrape["relabel_configs"]
    )
    emf = collector["exporters"]["awsemf"]
    assert emf["log_group_name"] == "/aws/containerinsights/envctl-pr7284/performance"
    assert emf["region"] == "us-east-1"
    assert emf["namespace"] == "ContainerInsights"
    pipeline = collector["service"]["pipelines"]["metrics"]
    assert set(pipeline["processors"]) == set(collector["processors"])
    assert pipeline["exporters"] == ["awsemf"]
    statefulset = one(default_stack, "kubernetes_stateful_set_v1")
    pod = block(block(block(statefulset["spec"])["template"])["spec"])
    container = block(pod["container"])
    assert container["image"] == ADOT_IMAGE
    assert {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "ClusterName=envctl-pr7284"} in container["env"]
    account = addr(
        default_stack,
        "kubernetes_service_account_v1",
        lambda a: block(a["metadata"])["name"] == "adot-collector",
    )
    assert pod["service_account_name"] == f"${{{account}.metadata[0].name}}"
    namespace = one(
        default_stack,
        "kubernetes_namespace_v1",
        lambda n: block(n["metadata"])["name"] == "fargate-container-insights",
    )
    profile = addr(
        default_stack,
        "aws_eks_fargate_profile",
        lambda p: block(p["selector"])["namespace"] == "fargate-container-insights",
    )
    assert profile in namespace["depends_on"]
    performance = addr(
        default_stack, "aws_cloudwatch_log_group", lambda g: g["name"].endswith("/performance")
    )
    assert performance in statefulset["depends_on"]


# --- smaller -------------------------------------------------------------------------------------


def test_every_secret_starts_as_an_empty_json_object_terraform_then_ignores(default_stack):
    """A placeholder `{}` version per secret; later values are the owners' (ignore_changes)."""
    versions = resources(default_stack, "aws_secretsmanager_secret_version")
    assert len(versions) == 3
    for ns in NAMESPACES:
        secret = addr(
            default_stack, "aws_secretsmanager_secret", lambda s, x=ns: s["name"] == f"envctl/pr7284/{x}"
        )
        (version,) = [v for v in versions if v["secret_id"] == f"${{{secret}.id}}"]
        assert version["secret_string"] == "{}"
        assert version["lifecycle"] == {"ignore_changes": ["secret_string"]}


def test_image_tag_mutability_defaults_to_immutable(default_stack, narrowed_stack):
    """IMMUTABLE unless asked; MUTABLE when a team re-pushes a tag such as pr-7284."""
    assert {r["image_tag_mutability"] for r in resources(default_stack, "aws_ecr_repository")} == {
        "IMMUTABLE"
    }
    assert {r["image_tag_mutability"] for r in resources(narrowed_stack, "aws_ecr_repository")} == {"MUTABLE"}


def test_outputs_carry_what_a_deploy_pipeline_needs(default_stack):
    """CA data, cluster security group, region, secrets, KMS key, roles, repositories, accounts."""
    cluster = addr(default_stack, "aws_eks_cluster")
    assert output(default_stack, "cluster_certificate_authority_data")["value"] == (
        f"${{{cluster}.certificate_authority[0].data}}"
    )
    assert output(default_stack, "cluster_security_group_id")["value"] == (
        f"${{{cluster}.vpc_config[0].cluster_security_group_id}}"
    )
    assert output(default_stack, "region")["value"] == "us-east-1"
    assert set(output(default_stack, "secret_arns")["value"]) == set(NAMESPACES)
    kms = addr(default_stack, "aws_kms_key")
    assert output(default_stack, "kms_key_arn")["value"] == f"${{{kms}.arn}}"
    for name in ("cluster_role_arn", "fargate_pod_execution_role_arn", "adot_collector_role_arn"):
        assert output(default_stack, name)["value"].startswith("${aws_iam_role.")
    assert set(output(default_stack, "ecr_repository_urls")["value"]) == set(NAMESPACES)
    assert set(output(default_stack, "service_account_names")["value"]) == set(NAMESPACES)


CREATE_ACTIONS = {
    "aws_vpc": "ec2:CreateVpc",
    "aws_subnet": "ec2:CreateSubnet",
    "aws_internet_gateway": "ec2:CreateInternetGateway",
    "aws_eip": "ec2:AllocateAddress",
    "aws_nat_gateway": "ec2:CreateNatGateway",
    "aws_route_table": "ec2:CreateRouteTable",
    "aws_route_table_association": "ec2:AssociateRouteTable",
    "aws_security_group": "ec2:CreateSecurityGroup",
    "aws_kms_key": "kms:CreateKey",
    "aws_kms_alias": "kms:CreateAlias",
    "aws_cloudwatch_log_group": "logs:CreateLogGroup",
    "aws_iam_role": "iam:CreateRole",
    "aws_iam_role_policy_attachment": "iam:AttachRolePolicy",
    "aws_iam_role_policy": "iam:PutRolePolicy",
    "aws_iam_policy": "iam:CreatePolicy",
    "aws_iam_openid_connect_provider": "iam:CreateOpenIDConnectProvider",
    "aws_eks_cluster": "eks:CreateCluster",
    "aws_eks_fargate_profile": "eks:CreateFargateProfile",
    "aws_eks_addon": "eks:CreateAddon",
    "aws_eks_access_entry": "eks:CreateAccessEntry",
    "aws_eks_access_policy_association": "eks:AssociateAccessPolicy",
    "aws_ecr_repository": "ecr:CreateRepository",
    "aws_ecr_lifecycle_policy": "ecr:PutLifecyclePolicy",
    "aws_secretsmanager_secret": "secretsmanager:CreateSecret",
    "aws_secretsmanager_secret_version": "secretsmanager:PutSecretValue",
}


def test_the_deployer_policy_can_create_every_aws_resource_of_the_stack(narrowed_stack):
    """helm/deployer-iam-policy.json allows creating each AWS resource type the stack has (a new
    type fails here until the policy and this table know it) and the hooks' calls."""
    policy = json.loads((Path(__file__).parents[2] / "helm" / "deployer-iam-policy.json").read_text())
    allowed = actions(policy)
    kinds = {kind for kind in narrowed_stack["resource"] if kind.startswith("aws_")}
    assert kinds <= set(CREATE_ACTIONS), sorted(kinds - set(CREATE_ACTIONS))
    assert {CREATE_ACTIONS[kind] for kind in kinds} <= allowed
    hooks_calls = {
        "logs:DescribeLogGroups",
        "logs:DeleteLogGroup",
        "ec2:DescribeVpcs",
        "ec2:DescribeAddresses",
        "servicequotas:GetServiceQuota",
        "elasticloadbalancing:DeleteLoadBalancer",
        "elasticloadbalancing:DeleteTargetGroup",
        "ec2:DeleteSecurityGroup",
    }
    assert hooks_calls <= allowed


def test_every_role_carries_the_permissions_boundary_when_one_is_given(seed_stack, default_stack):
    """With permissions_boundary_arn, each IAM role the stack creates names it (the deployer may
    create no role without it); without, none does."""
    roles = seed_stack["resource"]["aws_iam_role"]
    assert len(roles) >= 5
    assert {role.get("permissions_boundary") for role in roles.values()} == {
        "arn:aws:iam::123456789012:policy/envctl-workload-boundary"
    }
    assert all(
        "permissions_boundary" not in role for role in default_stack["resource"]["aws_iam_role"].values()
    )
