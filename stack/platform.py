"""PlatformStack: the AWS platform of one environment (EKS on Fargate and what it needs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cdktf import Fn, TerraformOutput, TerraformStack
from cdktf_cdktf_provider_aws.provider import AwsProvider, AwsProviderAssumeRole, AwsProviderDefaultTags
from constructs import Construct

from stack.baseline import Baseline
from stack.cluster import Cluster
from stack.config import DEFAULT_KUBERNETES_VERSION, StackConfig, validate
from stack.identity import Identity
from stack.network import Network
from stack.observability import Observability
from stack.registry import Registry
from stack.secrets import Secrets


class PlatformStack(TerraformStack):
    """Every resource of one environment, each named with its suffix."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        environment_suffix: str,
        aws_region: str,
        availability_zones: Sequence[str] | None = None,
        kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
        namespaces: Sequence[str] | None = None,
        nat_gateways: str = "single",
        tags: Mapping[str, str] | None = None,
        deploy_role_arn: str | None = None,
        cluster_admin_arns: Sequence[str] | None = None,
        public_access_cidrs: Sequence[str] | None = None,
        image_tag_mutability: str = "IMMUTABLE",
        permissions_boundary_arn: str | None = None,
    ) -> None:
        # Validate everything before creating a single construct.
        config = validate(
            environment_suffix=environment_suffix,
            aws_region=aws_region,
            availability_zones=availability_zones,
            kubernetes_version=kubernetes_version,
            namespaces=namespaces,
            nat_gateways=nat_gateways,
            tags=tags,
            deploy_role_arn=deploy_role_arn,
            cluster_admin_arns=cluster_admin_arns,
            public_access_cidrs=public_access_cidrs,
            image_tag_mutability=image_tag_mutability,
            permissions_boundary_arn=permissions_boundary_arn,
        )
        super().__init__(scope, id_)
        self.config = config
        AwsProvider(
            self,
            "aws",
            region=config.aws_region,
            default_tags=[AwsProviderDefaultTags(tags=config.default_tags)],
            # The controller's own role only assumes the deployer role that manages the platform.
            assume_role=(
                [
                    AwsProviderAssumeRole(
                        role_arn=config.deploy_role_arn, session_name=f"envctl-{config.environment_suffix}"
                    )
                ]
                if config.deploy_role_arn
                else None
            ),
        )

        self.network = Network(self, "network", config=config)
        self.cluster = Cluster(self, "cluster", config=config, network=self.network)
        self.registry = Registry(self, "registry", config=config)
        self.secrets = Secrets(self, "secrets", config=config)
        self.identity = Identity(
            self, "identity", config=config, cluster=self.cluster, secrets=self.secrets.secrets
        )
        self.observability = Observability(self, "observability", config=config)
        self.baseline = Baseline(
            self,
            "baseline",
            config=config,
            network=self.network,
            cluster=self.cluster,
            identity=self.identity,
            observability=self.observability,
        )
        self._outputs(config)
        # Carried in the synthesized JSON as a comment Terraform ignores (`//`), so the
        # configuration saved for a destroy carries them too.
        self.add_override("//.envctl", self._hooks(config))

    def _outputs(self, config: StackConfig) -> None:
        """What the application's deploy pipeline needs to know about this environment."""
        cluster = self.cluster.cluster
        values = {
            "cluster_name": cluster.name,
            "cluster_endpoint": cluster.endpoint,
            "vpc_id": self.network.vpc.id,
            "private_subnet_ids": [subnet.id for subnet in self.network.private_subnets],
            "public_subnet_ids": [subnet.id for subnet in self.network.public_subnets],
            "oidc_provider_arn": self.identity.oidc_provider.arn,
            "alb_controller_role_arn": self.identity.alb_controller_role.arn,
            "ecr_repository_urls": {
                ns: repo.repository_url for ns, repo in self.registry.repositories.items()
            },
            "irsa_role_arns": {ns: role.arn for ns, role in self.identity.irsa_roles.items()},
            "cluster_certificate_authority_data": cluster.certificate_authority.get(0).data,
            "cluster_security_group_id": cluster.vpc_config.cluster_security_group_id,
            "region": config.aws_region,
            "secret_arns": {ns: secret.arn for ns, secret in self.secrets.secrets.items()},
            "kms_key_arn": self.cluster.kms_key.arn,
            "cluster_role_arn": self.cluster.role.arn,
            "fargate_pod_execution_role_arn": self.cluster.fargate_role.arn,
            "adot_collector_role_arn": self.identity.adot_role.arn,
            "service_account_names": {
                ns: account.metadata.name for ns, account in self.baseline.service_accounts.items()
            },
        }
        for name, value in values.items():
            TerraformOutput(self, name, value=value)
        # Keep the issuer around for kubectl/helm wiring without a lookup.
        TerraformOutput(self, "oidc_issuer", value=Fn.tostring(cluster.identity.get(0).oidc.get(0).issuer))

    def _hooks(self, config: StackConfig) -> dict[str, object]:
        """What the controller does around this stack's Terraform runs (see controller.hooks).

        - `adopt`: a resource that may exist outside state before the first apply (EKS recreates
          its control-plane log group from late logs after a destroy): imported, not created.
        - `creates`: what a new environment adds against the region's account quotas.
        - `pre_destroy`: load balancers, target groups and security groups the AWS Load
          Balancer Controller made at run time (not in state) are deleted before a destroy.
        - `post_destroy`: log groups EKS recreated after their deletion are deleted.
        """
        names = config.names
        log_group = self.cluster.log_group
        return {
            "region": config.aws_region,
            "role_arn": config.deploy_role_arn,
            "adopt": [
                {
                    "address": f"aws_cloudwatch_log_group.{log_group.friendly_unique_id}",
                    "log_group": names.cluster_log_group,
                }
            ],
            "creates": {"vpcs": 1, "elastic_ips": len(self.network.nat_gateways)},
            "pre_destroy": {"elbv2_cluster_tag": names.cluster},
            "post_destroy": {"log_groups": [names.cluster_log_group]},
        }
