"""What every cluster runs before any service is deployed to it.

Installed by Terraform through the Kubernetes and Helm providers, configured from
the cluster's endpoint, certificate and a token from `aws_eks_cluster_auth` (no
kubeconfig file, no `aws` CLI):

- each service's namespace, and its service account annotated with its IRSA role;
- `aws-observability` with the `aws-logging` ConfigMap: Fargate's log router
  ships every pod's logs to the environment's `application` log group;
- the AWS Load Balancer Controller (Helm, chart pinned): Ingress and Service
  objects get load balancers;
- metrics-server (Helm, chart pinned): `kubectl top` and HorizontalPodAutoscalers;
- an ADOT collector: Container Insights metrics on Fargate, into `performance`.

Every object depends on the Fargate profile its pods need and on the add-ons
they use, so nothing is scheduled onto a cluster that cannot run it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cdktf import Fn, TerraformStack
from cdktf_cdktf_provider_aws.data_aws_eks_cluster_auth import DataAwsEksClusterAuth
from cdktf_cdktf_provider_helm.provider import HelmProvider, HelmProviderKubernetes
from cdktf_cdktf_provider_helm.release import Release
from cdktf_cdktf_provider_kubernetes.cluster_role_binding_v1 import ClusterRoleBindingV1
from cdktf_cdktf_provider_kubernetes.cluster_role_v1 import ClusterRoleV1
from cdktf_cdktf_provider_kubernetes.config_map_v1 import ConfigMapV1
from cdktf_cdktf_provider_kubernetes.namespace_v1 import NamespaceV1
from cdktf_cdktf_provider_kubernetes.provider import KubernetesProvider
from cdktf_cdktf_provider_kubernetes.service_account_v1 import ServiceAccountV1
from cdktf_cdktf_provider_kubernetes.stateful_set_v1 import StatefulSetV1
from constructs import Construct

from stack.cluster import ADOT_NAMESPACE, Cluster
from stack.config import StackConfig
from stack.identity import ADOT_ACCOUNT, ALB_CONTROLLER_ACCOUNT, Identity, service_account_name
from stack.network import Network
from stack.observability import Observability

IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
ALB_CONTROLLER_CHART = {
    "repository": "https://aws.github.io/eks-charts",
    "chart": "aws-load-balancer-controller",
    "version": "3.5.0",
}
"""Chart 3.5.0 runs controller v3.5.0, whose IAM policy `stack.alb_policy` follows."""
METRICS_SERVER_CHART = {
    "repository": "https://kubernetes-sigs.github.io/metrics-server/",
    "chart": "metrics-server",
    "version": "3.13.0",
}
METRICS_SERVER_PORT = 10251
"""Fargate's kubelet holds 10250 on the pod's host: metrics-server listens elsewhere."""
ADOT_IMAGE = "public.ecr.aws/aws-observability/aws-otel-collector:v0.48.0"
HELM_TIMEOUT_SECONDS = 900
"""Fargate pods take one to two minutes each to be scheduled; a release waits for its pods."""

# Pod-level cAdvisor series Container Insights shows for Fargate, by the name it shows them under.
_POD_METRICS = {
    "pod_cpu_usage_total": "container_cpu_usage_seconds_total",
    "pod_memory_working_set": "container_memory_working_set_bytes",
    "pod_memory_limit": "container_spec_memory_limit_bytes",
    "pod_network_rx_bytes": "container_network_receive_bytes_total",
    "pod_network_tx_bytes": "container_network_transmit_bytes_total",
}
_RATES = ("pod_cpu_usage_total", "pod_network_rx_bytes", "pod_network_tx_bytes")


def adot_config(config: StackConfig, log_group: str) -> dict[str, Any]:
    """The collector's pipeline: cAdvisor through the API server proxy -> EMF in `log_group`.

    Fargate pods cannot reach their node's kubelet, so the collector discovers nodes and
    scrapes `/api/v1/nodes/<node>/proxy/metrics/cadvisor` through the Kubernetes API.
    """
    pod_series = {"image": "^$", "container": "^$", "pod": "\\S", "LaunchType": "fargate"}
    return {
        "receivers": {
            "prometheus": {
                "config": {
                    "global": {"scrape_interval": "1m", "scrape_timeout": "40s"},
                    "scrape_configs": [
                        {
                            "job_name": "fargate-cadvisor",
                            "sample_limit": 10000,
                            "scheme": "https",
                            "kubernetes_sd_configs": [{"role": "node"}],
                            "tls_config": {"ca_file": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"},
                            "bearer_token_file": "/var/run/secrets/kubernetes.io/serviceaccount/token",
                            "relabel_configs": [
                                {"action": "labelmap", "regex": "__meta_kubernetes_node_label_(.+)"},
                                {"target_label": "__address__", "replacement": "kubernetes.default.svc:443"},
                                {
                                    "source_labels": ["__meta_kubernetes_node_name"],
                                    "regex": "(.+)",
                                    "target_label": "__metrics_path__",
                                    # `$$` is a literal `$` in the collector's configuration.
                                    "replacement": "/api/v1/nodes/$$1/proxy/metrics/cadvisor",
                                },
                            ],
                        }
                    ],
                }
            }
        },
        "processors": {
            "metricstransform/labels": {
                "transforms": [
                    {
                        "include": ".*",
                        "match_type": "regexp",
                        "action": "update",
                        "operations": [
                            {"action": "update_label", "label": old, "new_label": new}
                            for old, new in (
                                ("eks_amazonaws_com_compute_type", "LaunchType"),
                                ("kubernetes_io_hostname", "NodeName"),
                            )
                        ],
                    }
                ]
            },
            "metricstransform/pods": {
                "transforms": [
                    {
                        "include": source,
                        "new_name": name,
                        "action": "insert",
                        "match_type": "regexp",
                        "experimental_match_labels": (
                            {"pod": "\\S", "LaunchType": "fargate"} if "network" in name else pod_series
                        ),
                    }
                    for name, source in _POD_METRICS.items()
                ]
            },
            "filter/pods": {"metrics": {"include": {"match_type": "regexp", "metric_names": ["pod_.*"]}}},
            "cumulativetodelta": {"include": {"metrics": list(_RATES), "match_type": "strict"}},
            "deltatorate": {"metrics": list(_RATES)},
            "metricstransform/names": {
                "transforms": [
                    {
                        "include": "pod_cpu_usage_total",
                        "action": "update",
                        # Cores to millicores, the unit Container Insights shows.
                        "operations": [{"action": "experimental_scale_value", "experimental_scale": 1000}],
                    },
                    {
                        "include": "pod_.*",
                        "match_type": "regexp",
                        "action": "update",
                        "operations": [
                            {"action": "add_label", "new_label": "Type", "new_value": "Pod"},
                            {"action": "update_label", "label": "namespace", "new_label": "Namespace"},
                            {"action": "update_label", "label": "pod", "new_label": "PodName"},
                        ],
                    },
                ]
            },
            "resourcedetection": {"detectors": ["env", "eks"]},
            "batch": {"timeout": "60s"},
        },
        "exporters": {
            "awsemf": {
                "log_group_name": log_group,
                "log_stream_name": "{PodName}",
                "namespace": "ContainerInsights",
                "region": config.aws_region,
                "resource_to_telemetry_conversion": {"enabled": True},
                "eks_fargate_container_insights_enabled": True,
                "dimension_rollup_option": "NoDimensionRollup",
                "metric_declarations": [
                    {
                        "dimensions": [
                            ["ClusterName", "LaunchType"],
                            ["ClusterName", "Namespace", "LaunchType"],
                            ["ClusterName", "Namespace", "PodName", "LaunchType"],
                        ],
                        "metric_name_selectors": list(_POD_METRICS),
                    }
                ],
            }
        },
        "extensions": {"health_check": {}},
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "metrics": {
                    "receivers": ["prometheus"],
                    "processors": [
                        "metricstransform/labels",
                        "resourcedetection",
                        "metricstransform/pods",
                        "filter/pods",
                        "cumulativetodelta",
                        "deltatorate",
                        "metricstransform/names",
                        "batch",
                    ],
                    "exporters": ["awsemf"],
                }
            },
        },
    }


def fluent_bit_output(config: StackConfig, log_group: str) -> str:
    """The `output.conf` of Fargate's log router: every pod's logs into `log_group`."""
    return (
        "[OUTPUT]\n"
        "    Name cloudwatch_logs\n"
        "    Match *\n"
        f"    region {config.aws_region}\n"
        f"    log_group_name {log_group}\n"
        "    log_stream_prefix fargate-\n"
        "    auto_create_group false\n"
    )


class Baseline(Construct):
    """Namespaces, service accounts, log routing, load balancer controller, metrics."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        config: StackConfig,
        network: Network,
        cluster: Cluster,
        identity: Identity,
        observability: Observability,
    ) -> None:
        super().__init__(scope, id_)
        names = config.names
        eks = cluster.cluster
        # Read at apply time once the cluster exists (depends_on), so a 20-minute cluster
        # creation does not outlive the token's 15 minutes.
        auth = DataAwsEksClusterAuth(self, "auth", name=eks.name, depends_on=[eks])
        endpoint = {
            "host": eks.endpoint,
            "cluster_ca_certificate": Fn.base64decode(eks.certificate_authority.get(0).data),
            "token": auth.token,
        }
        stack = TerraformStack.of(self)
        self.kubernetes = KubernetesProvider(stack, "kubernetes", **endpoint)
        self.helm = HelmProvider(stack, "helm", kubernetes=HelmProviderKubernetes(**endpoint))
        kube_system = cluster.fargate_profiles["kube-system"]
        dns = cluster.addons["coredns"]

        # Pod logs: Fargate's built-in router reads this ConfigMap when a pod starts.
        logs = ConfigMapV1(
            self,
            "aws_logging",
            metadata={
                "name": "aws-logging",
                "namespace": NamespaceV1(
                    self,
                    "aws_observability",
                    metadata={"name": "aws-observability", "labels": {"aws-observability": "enabled"}},
                    depends_on=cluster.admin_entries,
                ).metadata.name,
            },
            data={
                "flb_log_cw": "false",
                "output.conf": fluent_bit_output(config, observability.log_groups["application"].name),
            },
            depends_on=[cluster.log_router],
        )

        # Load balancers for Ingress and Service objects. Fargate has no instance metadata:
        # cluster name, region and VPC are given.
        alb_namespace, alb_account = ALB_CONTROLLER_ACCOUNT
        self.alb_controller = Release(
            self,
            "aws_load_balancer_controller",
            name="aws-load-balancer-controller",
            namespace=alb_namespace,
            **ALB_CONTROLLER_CHART,
            values=[
                Fn.yamlencode(
                    {
                        "clusterName": eks.name,
                        "region": config.aws_region,
                        "vpcId": network.vpc.id,
                        "replicaCount": 2,
                        "serviceAccount": {
                            "create": True,
                            "name": alb_account,
                            "annotations": {IRSA_ANNOTATION: identity.alb_controller_role.arn},
                        },
                    }
                )
            ],
            wait=True,
            timeout=HELM_TIMEOUT_SECONDS,
            depends_on=[kube_system, dns, identity.alb_controller_attachment, logs],
        )

        self.metrics_server = Release(
            self,
            "metrics_server",
            name="metrics-server",
            namespace="kube-system",
            **METRICS_SERVER_CHART,
            values=[Fn.yamlencode({"containerPort": METRICS_SERVER_PORT})],
            wait=True,
            timeout=HELM_TIMEOUT_SECONDS,
            depends_on=[kube_system, dns, logs],
        )

        # Each service's namespace and service account. Namespaces are deleted before the
        # load balancer controller on destroy, so it still removes the load balancers of their
        # Ingress and Service objects.
        self.namespaces: dict[str, NamespaceV1] = {}
        self.service_accounts: dict[str, ServiceAccountV1] = {}
        for namespace in config.namespaces:
            ident = namespace.replace("-", "_")
            self.namespaces[namespace] = NamespaceV1(
                self,
                f"namespace_{ident}",
                metadata={"name": namespace, "labels": {"app.kubernetes.io/managed-by": "envctl"}},
                depends_on=[cluster.fargate_profiles[namespace], self.alb_controller, logs],
            )
            self.service_accounts[namespace] = ServiceAccountV1(
                self,
                f"service_account_{ident}",
                metadata={
                    "name": service_account_name(namespace),
                    "namespace": self.namespaces[namespace].metadata.name,
                    "annotations": {IRSA_ANNOTATION: identity.irsa_roles[namespace].arn},
                },
            )

        self.adot = self._adot(
            config,
            cluster_name=names.cluster,
            cluster=cluster,
            identity=identity,
            logs=logs,
            groups=observability,
        )

    def _adot(
        self,
        config: StackConfig,
        *,
        cluster_name: str,
        cluster: Cluster,
        identity: Identity,
        groups: Observability,
        logs: ConfigMapV1,
    ) -> StatefulSetV1:
        """Container Insights on Fargate: one ADOT collector scraping every node through the API."""
        namespace = NamespaceV1(
            self,
            "adot_namespace",
            metadata={"name": ADOT_NAMESPACE},
            depends_on=[cluster.fargate_profiles[ADOT_NAMESPACE], logs],
        ).metadata.name
        _, account = ADOT_ACCOUNT
        service_account = ServiceAccountV1(
            self,
            "adot_service_account",
            metadata={
                "name": account,
                "namespace": namespace,
                "annotations": {IRSA_ANNOTATION: identity.adot_role.arn},
            },
        )
        role = ClusterRoleV1(
            self,
            "adot_cluster_role",
            metadata={"name": f"{cluster_name}-adot-collector"},
            rule=[
                {
                    "api_groups": [""],
                    "resources": ["nodes", "nodes/proxy", "nodes/metrics", "services", "endpoints", "pods"],
                    "verbs": ["get", "list", "watch"],
                },
                {"non_resource_urls": ["/metrics/cadvisor"], "verbs": ["get", "list", "watch"]},
            ],
        )
        ClusterRoleBindingV1(
            self,
            "adot_cluster_role_binding",
            metadata={"name": f"{cluster_name}-adot-collector"},
            role_ref={
                "api_group": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role.metadata.name,
            },
            subject=[{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        )
        # JSON is YAML: written here, with no Terraform expression in it, so its digest is known.
        collector_yaml = json.dumps(
            adot_config(config, config.names.insights_log_group("performance")), indent=1, sort_keys=True
        )
        config_map = ConfigMapV1(
            self,
            "adot_config",
            metadata={"name": "adot-collector-config", "namespace": namespace},
            data={"collector.yaml": collector_yaml},
        )
        labels = {"app.kubernetes.io/name": "adot-collector"}
        return StatefulSetV1(
            self,
            "adot_collector",
            metadata={"name": "adot-collector", "namespace": namespace, "labels": labels},
            spec={
                "replicas": "1",
                "service_name": "adot-collector",
                "selector": {"match_labels": labels},
                "template": {
                    "metadata": {
                        "labels": labels,
                        # A new configuration rolls the collector.
                        "annotations": {
                            "envctl/config-sha256": hashlib.sha256(collector_yaml.encode()).hexdigest()
                        },
                    },
                    "spec": {
                        "service_account_name": service_account.metadata.name,
                        "container": [
                            {
                                "name": "adot-collector",
                                "image": ADOT_IMAGE,
                                "args": ["--config=/conf/collector.yaml"],
                                "env": [
                                    {
                                        "name": "OTEL_RESOURCE_ATTRIBUTES",
                                        "value": f"ClusterName={cluster_name}",
                                    }
                                ],
                                "resources": {
                                    "requests": {"cpu": "200m", "memory": "400Mi"},
                                    "limits": {"cpu": "1", "memory": "1Gi"},
                                },
                                "volume_mount": [{"name": "config", "mount_path": "/conf"}],
                            }
                        ],
                        "volume": [{"name": "config", "config_map": {"name": config_map.metadata.name}}],
                    },
                },
            },
            depends_on=[identity.adot_attachment, groups.log_groups["performance"]],
        )
