"""The EKS control plane, its Fargate profiles and its managed add-ons."""

from __future__ import annotations

import json

from cdktf_cdktf_provider_aws.cloudwatch_log_group import CloudwatchLogGroup
from cdktf_cdktf_provider_aws.data_aws_eks_addon_version import DataAwsEksAddonVersion
from cdktf_cdktf_provider_aws.eks_access_entry import EksAccessEntry
from cdktf_cdktf_provider_aws.eks_access_policy_association import (
    EksAccessPolicyAssociation,
    EksAccessPolicyAssociationAccessScope,
)
from cdktf_cdktf_provider_aws.eks_addon import EksAddon
from cdktf_cdktf_provider_aws.eks_cluster import (
    EksCluster,
    EksClusterAccessConfig,
    EksClusterEncryptionConfig,
    EksClusterEncryptionConfigProvider,
    EksClusterVpcConfig,
)
from cdktf_cdktf_provider_aws.eks_fargate_profile import (
    EksFargateProfile,
    EksFargateProfileSelector,
)
from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.iam_role_policy import IamRolePolicy
from cdktf_cdktf_provider_aws.iam_role_policy_attachment import IamRolePolicyAttachment
from cdktf_cdktf_provider_aws.kms_alias import KmsAlias
from cdktf_cdktf_provider_aws.kms_key import KmsKey
from cdktf_cdktf_provider_aws.security_group import (
    SecurityGroup,
    SecurityGroupEgress,
    SecurityGroupIngress,
)
from constructs import Construct

from stack.config import LOG_RETENTION_DAYS, StackConfig
from stack.network import Network

CONTROL_PLANE_LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")
MANAGED_ADDONS = ("vpc-cni", "coredns", "kube-proxy")
KMS_MIN_DELETION_WINDOW_DAYS = 7
CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
ADOT_NAMESPACE = "fargate-container-insights"
"""Where the Container Insights collector (ADOT) runs; it gets a Fargate profile of its own."""


def _service_role(
    scope: Construct, id_: str, name: str, service: str, policies: list[str], *, boundary: str | None
) -> tuple[IamRole, list[IamRolePolicyAttachment]]:
    """An IAM role that `service` may assume, with AWS managed policies attached."""
    role = IamRole(
        scope,
        id_,
        name=name,
        permissions_boundary=boundary,
        assume_role_policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": service},
                        "Action": ["sts:AssumeRole", "sts:TagSession"],
                    }
                ],
            }
        ),
        tags={"Name": name},
    )
    attachments = [
        IamRolePolicyAttachment(
            scope,
            f"{id_}_policy_{index}",
            role=role.name,
            policy_arn=f"arn:aws:iam::aws:policy/{policy}",
        )
        for index, policy in enumerate(policies)
    ]
    return role, attachments


class Cluster(Construct):
    """EKS on Fargate: encrypted secrets, full control-plane logging, one profile per namespace."""

    def __init__(self, scope: Construct, id_: str, *, config: StackConfig, network: Network) -> None:
        super().__init__(scope, id_)
        names = config.names
        private_ids = [subnet.id for subnet in network.private_subnets]

        # The API is reachable on 443 from inside the VPC only; rules are inline (seed failure 1).
        self.security_group = SecurityGroup(
            self,
            "cluster_sg",
            name=f"{names.cluster}-cluster",
            description="EKS control plane: HTTPS from inside the VPC",
            vpc_id=network.vpc.id,
            ingress=[
                SecurityGroupIngress(
                    description="Kubernetes API from the VPC",
                    from_port=443,
                    to_port=443,
                    protocol="tcp",
                    cidr_blocks=[network.cidr_block],
                )
            ],
            egress=[
                SecurityGroupEgress(
                    description="All outbound traffic",
                    from_port=0,
                    to_port=0,
                    protocol="-1",
                    cidr_blocks=["0.0.0.0/0"],
                    ipv6_cidr_blocks=["::/0"],
                )
            ],
            revoke_rules_on_delete=True,
            tags={"Name": f"{names.cluster}-cluster"},
        )

        # Kubernetes secrets are envelope-encrypted with a key of this environment's own.
        self.kms_key = KmsKey(
            self,
            "secrets_key",
            description=f"EKS secrets encryption for {names.cluster}",
            enable_key_rotation=True,
            deletion_window_in_days=KMS_MIN_DELETION_WINDOW_DAYS,
            tags={"Name": f"{names.cluster}-eks-secrets"},
        )
        KmsAlias(self, "secrets_key_alias", name=names.kms_alias, target_key_id=self.kms_key.key_id)

        # The log group exists before the cluster, so EKS does not create one without retention.
        self.log_group = CloudwatchLogGroup(
            self,
            "cluster_logs",
            name=names.cluster_log_group,
            retention_in_days=LOG_RETENTION_DAYS,
            tags={"Name": names.cluster_log_group},
        )

        self.role, cluster_policies = _service_role(
            self,
            "cluster_role",
            names.cluster_role,
            "eks.amazonaws.com",
            ["AmazonEKSClusterPolicy"],
            boundary=config.permissions_boundary_arn,
        )
        self.cluster = EksCluster(
            self,
            "cluster",
            name=names.cluster,
            role_arn=self.role.arn,
            version=config.kubernetes_version,
            vpc_config=EksClusterVpcConfig(
                subnet_ids=private_ids,
                security_group_ids=[self.security_group.id],
                endpoint_private_access=True,
                endpoint_public_access=True,
                public_access_cidrs=list(config.public_access_cidrs),
            ),
            enabled_cluster_log_types=list(CONTROL_PLANE_LOG_TYPES),
            encryption_config=EksClusterEncryptionConfig(
                resources=["secrets"],
                provider=EksClusterEncryptionConfigProvider(key_arn=self.kms_key.arn),
            ),
            # Access entries only (no aws-auth ConfigMap). The creator (envctl's deployer role)
            # stays admin: Terraform installs the in-cluster baseline with it.
            access_config=EksClusterAccessConfig(
                authentication_mode="API",
                bootstrap_cluster_creator_admin_permissions=True,
            ),
            # The add-ons below are managed by Terraform; EKS must not install its own copies.
            bootstrap_self_managed_addons=False,
            deletion_protection=False,
            tags={"Name": names.cluster},
            # Without the policy attachment in its dependencies, a destroy may detach the policy
            # while EKS still deletes the cluster, leaving its ENIs and security group behind.
            depends_on=[self.log_group, *cluster_policies],
        )

        # People and pipelines that may use the cluster, through access entries.
        self.admin_entries: list[EksAccessPolicyAssociation] = []
        for index, principal in enumerate(config.cluster_admin_arns):
            entry = EksAccessEntry(
                self,
                f"admin_{index}",
                cluster_name=self.cluster.name,
                principal_arn=principal,
                type="STANDARD",
                tags={"Name": f"{names.cluster}-admin-{index}"},
            )
            self.admin_entries.append(
                EksAccessPolicyAssociation(
                    self,
                    f"admin_{index}_policy",
                    cluster_name=self.cluster.name,
                    principal_arn=entry.principal_arn,
                    policy_arn=CLUSTER_ADMIN_POLICY,
                    access_scope=EksAccessPolicyAssociationAccessScope(type="cluster"),
                )
            )

        # Every pod runs on Fargate; its execution role pulls images and ships logs.
        self.fargate_role, fargate_policies = _service_role(
            self,
            "fargate_role",
            names.fargate_role,
            "eks-fargate-pods.amazonaws.com",
            ["AmazonEKSFargatePodExecutionRolePolicy"],
            boundary=config.permissions_boundary_arn,
        )
        # The Fargate log router writes pod logs to the application log group (aws-logging).
        self.log_router = IamRolePolicy(
            self,
            "fargate_logging",
            name="fargate-log-router",
            role=self.fargate_role.name,
            policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": [
                                "logs:CreateLogStream",
                                "logs:DescribeLogStreams",
                                "logs:PutLogEvents",
                                "logs:PutRetentionPolicy",
                            ],
                            "Resource": (
                                f"arn:aws:logs:*:*:log-group:/aws/containerinsights/{names.cluster}/*"
                            ),
                        }
                    ],
                }
            ),
        )
        self.fargate_profiles: dict[str, EksFargateProfile] = {}
        for namespace in ("kube-system", ADOT_NAMESPACE, *config.namespaces):
            self.fargate_profiles[namespace] = EksFargateProfile(
                self,
                f"fargate_{namespace.replace('-', '_')}",
                cluster_name=self.cluster.name,
                fargate_profile_name=names.fargate_profile(namespace),
                pod_execution_role_arn=self.fargate_role.arn,
                subnet_ids=private_ids,
                selector=[EksFargateProfileSelector(namespace=namespace)],
                tags={"Name": names.fargate_profile(namespace)},
                # Pods scheduled before the role can pull images and ship logs would fail.
                depends_on=[*fargate_policies, self.log_router],
            )

        # Add-ons: the newest version for the cluster's version (seed failure 3), looked up
        # again when kubernetes_version changes (an unset addon_version stays at the version
        # first installed), created only once the kube-system profile exists, CoreDNS told to
        # run on Fargate. The
        # dependency is `depends_on`: cdktf 0.21 drops `node.add_dependency` between resources
        # of one stack from the synthesized JSON, so the seed's "fix" ordered nothing.
        kube_system = self.fargate_profiles["kube-system"]
        self.addons: dict[str, EksAddon] = {}
        for addon_name in MANAGED_ADDONS:
            ident = addon_name.replace("-", "_")
            version = DataAwsEksAddonVersion(
                self,
                f"addon_{ident}_version",
                addon_name=addon_name,
                kubernetes_version=self.cluster.version,
                most_recent=True,
            )
            self.addons[addon_name] = EksAddon(
                self,
                f"addon_{ident}",
                cluster_name=self.cluster.name,
                addon_name=addon_name,
                addon_version=version.version,
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="OVERWRITE",
                configuration_values=(
                    json.dumps({"computeType": "Fargate"}) if addon_name == "coredns" else None
                ),
                tags={"Name": f"{names.cluster}-{addon_name}"},
                depends_on=[kube_system],
            )
