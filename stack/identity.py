"""Workload identity: the cluster's OIDC provider, IRSA roles per service, the ALB controller role."""

from __future__ import annotations

import json

from cdktf import Fn
from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import (
    DataAwsIamPolicyDocument,
    DataAwsIamPolicyDocumentStatement,
    DataAwsIamPolicyDocumentStatementCondition,
    DataAwsIamPolicyDocumentStatementPrincipals,
)
from cdktf_cdktf_provider_aws.iam_openid_connect_provider import IamOpenidConnectProvider
from cdktf_cdktf_provider_aws.iam_policy import IamPolicy
from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.iam_role_policy import IamRolePolicy
from cdktf_cdktf_provider_aws.iam_role_policy_attachment import IamRolePolicyAttachment
from cdktf_cdktf_provider_aws.secretsmanager_secret import SecretsmanagerSecret
from constructs import Construct

from stack.alb_policy import alb_controller_policy
from stack.cluster import ADOT_NAMESPACE, Cluster
from stack.config import StackConfig

STS_AUDIENCE = "sts.amazonaws.com"
ALB_CONTROLLER_ACCOUNT = ("kube-system", "aws-load-balancer-controller")
ADOT_ACCOUNT = (ADOT_NAMESPACE, "adot-collector")
CLOUDWATCH_AGENT_POLICY = "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"


def service_account_name(namespace: str) -> str:
    """The Kubernetes service account each service runs as."""
    return namespace


class Identity(Construct):
    """IAM roles that exactly one Kubernetes service account each may assume."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        config: StackConfig,
        cluster: Cluster,
        secrets: dict[str, SecretsmanagerSecret],
    ) -> None:
        super().__init__(scope, id_)
        names = config.names
        self._boundary = config.permissions_boundary_arn
        issuer = cluster.cluster.identity.get(0).oidc.get(0).issuer

        # EKS OIDC issuers are trusted through IAM's CA library: no thumbprint to pin.
        self.oidc_provider = IamOpenidConnectProvider(
            self,
            "oidc",
            url=issuer,
            client_id_list=[STS_AUDIENCE],
            tags={"Name": f"{names.cluster}-oidc"},
        )
        self._issuer_host = Fn.replace(issuer, "https://", "")

        # Each service's role: assumable only by its own service account, reading only its secret.
        self.irsa_roles: dict[str, IamRole] = {}
        for namespace in config.namespaces:
            ident = namespace.replace("-", "_")
            role = self._irsa_role(
                ident, names.irsa_role(namespace), namespace, service_account_name(namespace)
            )
            IamRolePolicy(
                self,
                f"irsa_{ident}_secret",
                name="read-own-secret",
                role=role.name,
                policy=Fn.jsonencode(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": [
                                    "secretsmanager:GetSecretValue",
                                    "secretsmanager:DescribeSecret",
                                ],
                                "Resource": secrets[namespace].arn,
                            }
                        ],
                    }
                ),
            )
            self.irsa_roles[namespace] = role

        # The AWS Load Balancer Controller, running as kube-system:aws-load-balancer-controller.
        namespace, account = ALB_CONTROLLER_ACCOUNT
        self.alb_controller_role = self._irsa_role(
            "alb_controller", names.alb_controller_role, namespace, account
        )
        policy = IamPolicy(
            self,
            "alb_controller_policy",
            name=f"{names.alb_controller_role}-policy",
            description=f"AWS Load Balancer Controller of {names.cluster}",
            policy=json.dumps(alb_controller_policy()),
            tags={"Name": f"{names.alb_controller_role}-policy"},
        )
        self.alb_controller_attachment = IamRolePolicyAttachment(
            self, "alb_controller_attach", role=self.alb_controller_role.name, policy_arn=policy.arn
        )

        # The Container Insights collector (ADOT) writes EMF metrics to CloudWatch Logs.
        namespace, account = ADOT_ACCOUNT
        self.adot_role = self._irsa_role("adot", names.adot_role, namespace, account)
        self.adot_attachment = IamRolePolicyAttachment(
            self, "adot_attach", role=self.adot_role.name, policy_arn=CLOUDWATCH_AGENT_POLICY
        )

    def _irsa_role(self, ident: str, name: str, namespace: str, account: str) -> IamRole:
        """A role trusted by the OIDC provider for one `namespace:account` and the STS audience."""
        trust = DataAwsIamPolicyDocument(
            self,
            f"{ident}_trust",
            statement=[
                DataAwsIamPolicyDocumentStatement(
                    effect="Allow",
                    actions=["sts:AssumeRoleWithWebIdentity"],
                    principals=[
                        DataAwsIamPolicyDocumentStatementPrincipals(
                            type="Federated", identifiers=[self.oidc_provider.arn]
                        )
                    ],
                    condition=[
                        DataAwsIamPolicyDocumentStatementCondition(
                            test="StringEquals",
                            variable=f"{self._issuer_host}:sub",
                            values=[f"system:serviceaccount:{namespace}:{account}"],
                        ),
                        DataAwsIamPolicyDocumentStatementCondition(
                            test="StringEquals",
                            variable=f"{self._issuer_host}:aud",
                            values=[STS_AUDIENCE],
                        ),
                    ],
                )
            ],
        )
        return IamRole(
            self,
            f"{ident}_role",
            name=name,
            assume_role_policy=trust.json,
            permissions_boundary=self._boundary,
            tags={"Name": name},
        )
