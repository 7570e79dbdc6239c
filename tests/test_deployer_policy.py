"""What the deployer roles can do, proven on the policy documents the chart ships.

The evaluator (tests/iam_eval.py) applies IAM's rules to the documents; parliament (in
test_shipping) checks their syntax and actions against AWS's reference.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import ROOT
from tests.iam_eval import allowed, decide
from tests.test_shipping import tool

ACCOUNT = "123456789012"
HELM = ROOT / "helm"
DEPLOYER = json.loads((HELM / "deployer-iam-policy.json").read_text())
PREVIEW_DENY = json.loads((HELM / "deployer-preview-deny-persistent.json").read_text())
BOUNDARY_DOC = json.loads((HELM / "deployer-permissions-boundary.json").read_text())
BOUNDARY = f"arn:aws:iam::{ACCOUNT}:policy/envctl-workload-boundary"
PREVIEW = [DEPLOYER, PREVIEW_DENY]
PERSISTENT = [DEPLOYER]


def role(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


@pytest.mark.parametrize("policies", [PREVIEW, PERSISTENT], ids=["preview", "persistent"])
@pytest.mark.parametrize(
    "action",
    [
        "iam:PutRolePolicy",
        "iam:AttachRolePolicy",
        "iam:UpdateAssumeRolePolicy",
        "iam:DeleteRolePermissionsBoundary",
        "iam:TagRole",
        "iam:DeleteRole",
    ],
)
@pytest.mark.parametrize("target", ["envctl-deployer", "envctl-deployer-preview", "envctl"])
def test_no_deployer_can_change_itself_or_the_controller(policies, action, target):
    """The deployer roles and the controller's role are out of reach, whatever the conditions."""
    context = {
        "iam:PermissionsBoundary": BOUNDARY,
        "iam:PolicyARN": "arn:aws:iam::aws:policy/AdministratorAccess",
    }
    assert decide(policies, action, role(target), context) == "Deny"


def test_a_role_is_created_only_with_the_boundary_and_only_with_the_stacks_names():
    """CreateRole: allowed for the stack's role names with the boundary; not without it, not with
    another boundary, not for another name."""
    name = role("envctl-pr7-cluster")
    assert allowed(PERSISTENT, "iam:CreateRole", name, {"iam:PermissionsBoundary": BOUNDARY})
    assert not allowed(PERSISTENT, "iam:CreateRole", name)
    other = f"arn:aws:iam::{ACCOUNT}:policy/envctl-anything"
    assert not allowed(PERSISTENT, "iam:CreateRole", name, {"iam:PermissionsBoundary": other})
    assert not allowed(PERSISTENT, "iam:CreateRole", role("admin"), {"iam:PermissionsBoundary": BOUNDARY})
    assert not allowed(
        PERSISTENT, "iam:CreateRole", role("envctl-admin"), {"iam:PermissionsBoundary": BOUNDARY}
    )


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("arn:aws:iam::aws:policy/AmazonEKSClusterPolicy", True),
        ("arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy", True),
        (f"arn:aws:iam::{ACCOUNT}:policy/envctl-pr7-aws-lb-controller-policy", True),
        ("arn:aws:iam::aws:policy/AdministratorAccess", False),
        ("arn:aws:iam::aws:policy/IAMFullAccess", False),
    ],
)
def test_only_the_stacks_policies_can_be_attached(policy, expected):
    """AttachRolePolicy is limited to the managed policies the stack attaches and envctl's own."""
    context = {"iam:PermissionsBoundary": BOUNDARY, "iam:PolicyARN": policy}
    assert allowed(PERSISTENT, "iam:AttachRolePolicy", role("envctl-pr7-irsa"), context) is expected


def test_the_boundary_cannot_be_changed_and_contains_no_identity_changes():
    """The boundary policy is out of the deployer's reach (it matches policy/envctl-*); inside the
    boundary, a workload role can create no user, role or key, and read only envctl's secrets."""
    for action in ("iam:CreatePolicyVersion", "iam:DeletePolicy", "iam:SetDefaultPolicyVersion"):
        assert decide(PERSISTENT, action, BOUNDARY) == "Deny"
    everything = [{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}]
    for action in ("iam:CreateUser", "iam:CreateAccessKey", "iam:PassRole", "sts:AssumeRole"):
        assert not allowed(everything, action, role("x"), boundary=[BOUNDARY_DOC])
    assert allowed(everything, "ec2:DescribeInstances", "*", boundary=[BOUNDARY_DOC])
    secret = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:"
    assert allowed(
        everything,
        "secretsmanager:GetSecretValue",
        secret + "envctl/pr7/payment-AbC",
        boundary=[BOUNDARY_DOC],
    )
    assert not allowed(
        everything, "secretsmanager:GetSecretValue", secret + "prod/db-AbC", boundary=[BOUNDARY_DOC]
    )


def test_the_preview_deployer_cannot_touch_a_persistent_environment():
    """Tagged EnvironmentKind=persistent (every resource of a persistent environment is): the
    preview role reads, changes and deletes none of it, nor creates anything so tagged; the
    persistent role can; both can manage previews."""
    secret = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:envctl/production/payment-AbC"
    cluster = f"arn:aws:eks:us-east-1:{ACCOUNT}:cluster/envctl-production"
    persistent = {"aws:ResourceTag/EnvironmentKind": "persistent"}
    for action, resource in (
        ("secretsmanager:GetSecretValue", secret),
        ("secretsmanager:DeleteSecret", secret),
        ("eks:DeleteCluster", cluster),
        ("eks:UpdateClusterConfig", cluster),
    ):
        assert decide(PREVIEW, action, resource, persistent) == "Deny", action
        assert allowed(PERSISTENT, action, resource, persistent), action
        assert allowed(PREVIEW, action, resource, {"aws:ResourceTag/EnvironmentKind": "preview"}), action
    create = {"aws:RequestTag/EnvironmentKind": "persistent", "aws:RequestTag/ManagedBy": "envctl"}
    assert decide(PREVIEW, "eks:CreateCluster", "*", create) == "Deny"


def test_load_balancer_clean_up_reaches_only_envctls_clusters():
    """The pre-destroy sweep deletes load balancers and security groups tagged for an envctl-*
    cluster only; another team's (or an untagged one) is out of reach."""
    lb = f"arn:aws:elasticloadbalancing:us-east-1:{ACCOUNT}:loadbalancer/app/k8s-x/1"
    sg = f"arn:aws:ec2:us-east-1:{ACCOUNT}:security-group/sg-1"
    for action, resource in (
        ("elasticloadbalancing:DeleteLoadBalancer", lb),
        ("ec2:DeleteSecurityGroup", sg),
    ):
        assert allowed(PERSISTENT, action, resource, {"aws:ResourceTag/elbv2.k8s.aws/cluster": "envctl-pr7"})
        assert not allowed(
            PERSISTENT, action, resource, {"aws:ResourceTag/elbv2.k8s.aws/cluster": "payments"}
        )
        assert not allowed(PERSISTENT, action, resource)


def test_parliament_finds_only_the_boundarys_deliberate_breadth():
    """A boundary is an upper bound: `Resource: *` is its point; parliament finds nothing else."""
    result = subprocess.run(
        [tool("parliament"), "--string", json.dumps(BOUNDARY_DOC)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    findings = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(findings) == 1 and findings[0].startswith("LOW - Unnecessary use of Resource *"), findings
