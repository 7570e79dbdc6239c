"""How envctl ships: the Dockerfile's properties and the Helm chart rendered by Helm's own engine."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import subprocess

import helm_python as helm
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from tests.conftest import ROOT

CHART = ROOT / "helm" / "envctl"


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    return parser


def instructions(parser: DockerfileParser, name: str) -> list[str]:
    return [i["value"] for i in parser.structure if i["instruction"] == name]


def test_dockerfile_is_multi_stage_on_a_slim_python(dockerfile):
    """Several stages; the final image is a slim Python 3.11+ base."""
    froms = instructions(dockerfile, "FROM")
    assert len(froms) >= 3
    final = froms[-1]
    match = re.match(r"python:3\.(\d+)-slim", final)
    assert match and int(match.group(1)) >= 11, final


def test_dockerfile_ships_the_terraform_the_tests_run(dockerfile, toolchain):
    """The image's Terraform is the exact version of the test toolchain, verified with sha256sum."""
    args = dict(a.split("=", 1) for a in instructions(dockerfile, "ARG") if "=" in a)
    tested = subprocess.run(
        [str(toolchain.terraform), "version", "-json"],
        env=toolchain.env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert args["TERRAFORM_VERSION"] == json.loads(tested.stdout)["terraform_version"]
    assert re.fullmatch(r"[0-9a-f]{64}", args["TERRAFORM_SHA256"])
    runs = " ".join(instructions(dockerfile, "RUN"))
    assert "sha256sum -c -" in runs and "${TERRAFORM_SHA256}" in runs


def test_dockerfile_brings_node_22_installs_the_wheel_and_warms_jsii(dockerfile):
    """Node.js 22 for jsii; envctl from the built wheel, offline; the jsii cache warmed at build."""
    assert any(f.startswith("node:22") for f in instructions(dockerfile, "FROM"))
    runs = instructions(dockerfile, "RUN")
    assert any("pip wheel" in r for r in runs)
    assert any("--no-index --find-links=/wheels envctl" in r for r in runs)
    assert any("import cdktf_cdktf_provider_aws" in r for r in runs)
    assert "JSII_RUNTIME_PACKAGE_CACHE_ROOT" in " ".join(instructions(dockerfile, "ENV"))


def test_dockerfile_runs_envctl_as_non_root_with_a_healthcheck(dockerfile):
    """USER is a numeric non-root id; ENTRYPOINT envctl, CMD run; a HEALTHCHECK hits /healthz."""
    (user,) = instructions(dockerfile, "USER")
    assert int(user.split(":")[0]) >= 1000
    assert json.loads(instructions(dockerfile, "ENTRYPOINT")[-1]) == ["envctl"]
    assert json.loads(instructions(dockerfile, "CMD")[-1]) == ["run"]
    (check,) = instructions(dockerfile, "HEALTHCHECK")
    assert "/healthz" in check


IMAGE = {"image": {"repository": "registry.example/envctl"}, "secrets": {"apiTokenSecretName": "envctl-api"}}
"""The values the chart requires: where the image was pushed, the API token's Secret."""


def deep_merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, nested mappings merged (as Helm merges --set and -f values)."""
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (
            deep_merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def render(values: dict | None = None, *, image: bool = True) -> dict[str, dict]:
    """Every rendered manifest keyed by kind (one of each expected)."""
    chart = helm.Chart.load(CHART)
    merged = chart.merge_values(deep_merge(IMAGE, values or {}) if image else values or {})
    chart.validate_schema(merged)
    manifests = chart.render(merged, name="envctl", namespace="platform", is_install=True)
    result: dict[str, dict] = {}
    for path, text in manifests.items():
        if not path.endswith(".yaml"):
            continue  # NOTES.txt
        for document in yaml.safe_load_all(text):
            if document:
                assert document["kind"] not in result, document["kind"]
                result[document["kind"]] = document
    return result


def test_chart_lints_clean():
    """helm lint finds no errors with default values and with leader election on."""
    for values in (IMAGE, {**IMAGE, "leaderElection": {"enabled": True}}):
        report = helm.lint(CHART, values, strict=True)
        assert report["errors"] == [], report
        assert not [m for m in report["messages"] if m["severity"] >= 3], report


def test_chart_defaults_render_a_single_replica_with_probes_and_a_restricted_pod():
    """One replica, Recreate, PVC workdir, IRSA-ready account, probes, limits, locked-down container."""
    kinds = render({"serviceAccount": {"roleArn": "arn:aws:iam::123456789012:role/envctl"}})
    assert {"Deployment", "ServiceAccount", "ConfigMap", "Service", "PersistentVolumeClaim"} <= set(kinds)
    assert "PodDisruptionBudget" not in kinds and "Ingress" not in kinds and "ServiceMonitor" not in kinds
    deployment = kinds["Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["run", "--config", "/etc/envctl/envctl.yaml"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["limits"]["memory"] == "6Gi"
    assert container["resources"]["requests"]["memory"] == "4Gi"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/envctl", "/tmp", "/etc/envctl"} <= mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["workdir"]["persistentVolumeClaim"]["claimName"] == "envctl"
    account = kinds["ServiceAccount"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/envctl")
    settings = yaml.safe_load(kinds["ConfigMap"]["data"]["envctl.yaml"])
    assert settings["api"] == {
        "host": "0.0.0.0",
        "port": 8080,
        "webhooks": False,
        "source_failure_seconds": 600,
        "allowed_hosts": [
            "envctl",
            "envctl.platform",
            "envctl.platform.svc",
            "envctl.platform.svc.cluster.local",
        ],
    }
    assert "leader_election" not in settings
    assert settings["state"]["bucket"] == "envctl-state"


def test_chart_with_leader_election_runs_two_replicas_with_a_budget():
    """Leader election on: two replicas, lease settings, a PDB, emptyDir workdirs, webhooks wired."""
    kinds = render(
        {
            "leaderElection": {"enabled": True},
            "api": {"webhooks": True},
            "secrets": {"webhookSecretName": "envctl-webhook", "gitCredentialsSecretName": "envctl-git"},
            "ingress": {
                "enabled": True,
                "className": "alb",
                "tls": [{"hosts": ["envctl.example.com"], "secretName": "envctl-tls"}],
            },
            "serviceMonitor": {"enabled": True},
        }
    )
    deployment = kinds["Deployment"]
    assert deployment["spec"]["replicas"] == 2 and "strategy" not in deployment["spec"]
    assert "PersistentVolumeClaim" not in kinds
    pod = deployment["spec"]["template"]["spec"]
    assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}["workdir"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["ENVCTL_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "envctl-webhook",
        "key": "secret",
    }
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "envctl-git"}}]
    # The leader advertises its pod IP in the lease; followers forward status and webhooks there.
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    settings = yaml.safe_load(kinds["ConfigMap"]["data"]["envctl.yaml"])
    assert settings["api"]["host"] == "0.0.0.0"
    assert settings["leader_election"] == {"table": "envctl-leases", "lease_seconds": 15}
    assert settings["api"]["webhooks"] is True
    assert kinds["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    (rule,) = kinds["Ingress"]["spec"]["rules"]
    assert [p["path"] for p in rule["http"]["paths"]] == ["/hooks/"]
    policy = kinds["NetworkPolicy"]["spec"]
    (allowed,) = policy["ingress"]
    assert allowed["ports"] == [{"port": "http", "protocol": "TCP"}]
    namespaces = allowed["from"][1]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert namespaces == ["monitoring", "ingress-nginx"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert kinds["ServiceAccount"]["automountServiceAccountToken"] is False
    assert kinds["ServiceMonitor"]["spec"]["endpoints"][0]["path"] == "/metrics"


def test_chart_schema_rejects_bad_values():
    """values.schema.json refuses a bad lock mode, a bad role ARN and a too-short lease."""
    chart = helm.Chart.load(CHART)
    for bad in (
        {"settings": {"state": {"bucket": "b", "lock": "redis"}}},
        {"serviceAccount": {"roleArn": "not-an-arn"}},
        {"leaderElection": {"leaseSeconds": 1}},
    ):
        with pytest.raises(helm.HelmError):
            chart.validate_schema(chart.merge_values(bad))


def test_rendered_settings_are_valid_envctl_settings(tmp_path):
    """The ConfigMap's settings file passes envctl's own validation."""
    from controller.settings import load

    kinds = render({"leaderElection": {"enabled": True}})
    path = tmp_path / "envctl.yaml"
    path.write_text(kinds["ConfigMap"]["data"]["envctl.yaml"])
    settings = load(path)
    assert settings.api is not None and settings.api.host == "0.0.0.0"
    assert settings.leader_election is not None and settings.leader_election.lease_seconds == 15


def test_iam_policy_is_least_privilege_json():
    """The controller's IAM policy names exact resources; no Action or Resource wildcard alone."""
    policy = json.loads((ROOT / "helm" / "iam-policy.json").read_text())
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert "*" not in actions and all(":" in a and not a.endswith(":*") for a in actions)
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        assert "*" not in resources


def tool(name: str) -> str:
    """A linter installed in this virtual environment."""
    import sys
    from pathlib import Path

    return str(Path(sys.executable).parent / name)


def test_hadolint_finds_nothing_in_the_dockerfile():
    """hadolint (with .hadolint.yaml's one documented exception) passes the Dockerfile."""
    result = subprocess.run(
        [tool("hadolint"), "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "file", ["iam-policy.json", "deployer-iam-policy.json", "deployer-preview-deny-persistent.json"]
)
def test_parliament_finds_nothing_in_the_iam_policies(file):
    """parliament audits the controller's policy and the deployer role's: no unknown actions,
    conditions or resources, no needless `*`."""
    policy = (ROOT / "helm" / file).read_text()
    result = subprocess.run(
        [tool("parliament"), "--string", policy],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_the_image_installs_the_version_being_built():
    """The Dockerfile pins envctl's own wheel to pyproject's version."""
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"--find-links=/wheels envctl=={version}" in (ROOT / "Dockerfile").read_text()


def validate_strict(kinds: dict[str, dict], folder) -> None:
    """kubernetes-validate --strict on every rendered manifest (unknown fields rejected)."""
    files = []
    for index, document in enumerate(kinds.values()):
        path = folder / f"{index}-{document['kind']}.yaml"
        path.write_text(yaml.safe_dump(document))
        files.append(str(path))
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-k", "1.33.0", *files],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "values",
    [
        None,
        {"leaderElection": {"enabled": True}},
        {
            "api": {"webhooks": True},
            "secrets": {
                "webhookSecretName": "w",
                "gitCredentialsSecretName": "g",
                "githubTokenSecretName": "gh",
                "gitlabTokenSecretName": "gl",
                "apiReadTokenSecretName": "r",
                "alertWebhookSecretName": "a",
            },
            "ingress": {"enabled": True, "tls": [{"hosts": ["envctl.example.com"], "secretName": "t"}]},
            "networkPolicy": {"allowedNamespaces": ["ci", "platform-tools"]},
        },
    ],
    ids=["defaults", "leader-election", "webhooks-secrets-ingress-and-network-policy"],
)
def test_rendered_chart_passes_kubernetes_validate_strict(values, tmp_path):
    """Every rendered manifest validates against the Kubernetes schemas, unknown fields rejected."""
    validate_strict(render(values), tmp_path)


def test_the_chart_refuses_to_render_without_an_image_repository():
    """No published image: an install without image.repository stops, saying what to set and how."""
    with pytest.raises(
        helm.HelmError, match=r"image\.repository is required: the registry and name you pushed"
    ):
        render(image=False)


def test_the_chart_keeps_settings_api_pins_by_digest_and_mounts_extra_volumes():
    """settings.api's own keys survive the chart's api block; a digest pins the image; extra
    volumes, mounts and variables reach the container; ENVCTL_CONFIG points at the settings."""
    digest = "sha256:" + "ab" * 32
    kinds = render(
        {
            "image": {"digest": digest},
            "settings": {"api": {"public_url": "https://envctl.acme.example", "port": 1}},
            "extraVolumes": [{"name": "key", "secret": {"secretName": "k"}}],
            "extraVolumeMounts": [{"name": "key", "mountPath": "/etc/envctl-key", "readOnly": True}],
            "extraEnv": [{"name": "GIT_SSH_COMMAND", "value": "ssh -i /etc/envctl-key/id"}],
        }
    )
    settings = yaml.safe_load(kinds["ConfigMap"]["data"]["envctl.yaml"])
    assert settings["api"] == {
        "host": "0.0.0.0",
        "port": 8080,  # the chart's port wins: it is the container's
        "webhooks": False,
        "source_failure_seconds": 600,
        "public_url": "https://envctl.acme.example",
        "allowed_hosts": [
            "envctl",
            "envctl.platform",
            "envctl.platform.svc",
            "envctl.platform.svc.cluster.local",
        ],
    }
    (container,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"registry.example/envctl@{digest}"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ENVCTL_CONFIG"] == "/etc/envctl/envctl.yaml" == container["args"][-1]
    tokens = {e["name"]: e for e in container["env"] if e["name"].startswith("ENVCTL_API")}
    assert tokens["ENVCTL_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "envctl-api", "key": "token"}
    assert env["GIT_SSH_COMMAND"] == "ssh -i /etc/envctl-key/id"
    assert {"name": "key", "mountPath": "/etc/envctl-key", "readOnly": True} in container["volumeMounts"]
    volumes = kinds["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "key", "secret": {"secretName": "k"}} in volumes


def readme_installs() -> dict[str, dict]:
    """Every `helm install` command of the README as the values it passes: its --set flags (parsed
    by Helm's own parser) and the values files the README shows (`-f NAME`, from a block whose
    first line is `# NAME...`)."""
    readme = (ROOT / "README.md").read_text()
    files = {
        match[2]: yaml.safe_load(match[1])
        for match in re.finditer(r"```yaml\n(# ([\w.-]+\.yaml)[^`]*)```", readme)
    }
    installs = {}
    for block in re.findall(r"```sh\n(helm install [^`]*)```", readme):
        words = shlex.split(block.replace("\\\n", " "))
        values: dict = {}
        for flag, value in itertools.pairwise(words):
            if flag == "--set":
                values = deep_merge(values, helm.parse_set_string(value))
        installs[" ".join(words[:5])] = values
        for name, file_values in files.items():
            installs[f"{' '.join(words[:5])} -f {name}"] = deep_merge(values, file_values)
    return installs


def test_the_readme_has_a_complete_install_command():
    """The README's install command sets the image, the bucket, the lock, the deploy role and secrets."""
    (command, *_) = readme_installs().items()
    values = command[1]
    assert values["image"]["repository"]
    assert values["settings"]["state"]["lock"] == "s3"
    assert values["settings"]["stack_parameters"]["deploy_role_arn"].startswith("arn:aws:iam::")
    assert values["secrets"]["gitCredentialsSecretName"] and values["secrets"]["webhookSecretName"]
    assert values["secrets"]["apiTokenSecretName"]


@pytest.mark.parametrize("command", sorted(readme_installs()))
def test_each_readme_install_renders_validates_and_contains_what_the_readme_says(command, tmp_path):
    """Each README install renders with Helm, passes kubernetes-validate --strict, its settings pass
    envctl's validation, and the pod has the image, settings and mounts the README promises."""
    from controller.settings import load

    values = readme_installs()[command]
    kinds = render(values, image=False)
    validate_strict(kinds, tmp_path)
    (settings_file := tmp_path / "envctl.yaml").write_text(kinds["ConfigMap"]["data"]["envctl.yaml"])
    settings = load(settings_file)
    assert settings.state.lock == "s3" and settings.state.bucket == values["settings"]["state"]["bucket"]
    assert (
        settings.stack_parameters["deploy_role_arn"]
        == values["settings"]["stack_parameters"]["deploy_role_arn"]
    )
    assert settings.api is not None and settings.api.public_url == values["settings"]["api"]["public_url"]
    (container,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{values['image']['repository']}:0.1.0"
    assert {"name": "ENVCTL_CONFIG", "value": "/etc/envctl/envctl.yaml"} in container["env"]
    assert container["envFrom"] == [{"secretRef": {"name": values["secrets"]["gitCredentialsSecretName"]}}]
    for mount in values.get("extraVolumeMounts", []):
        assert mount in container["volumeMounts"]
    if "github" in values["settings"]:
        key = settings.github.private_key_file if settings.github else ""
        assert any(key.startswith(m["mountPath"] + "/") for m in values["extraVolumeMounts"])


def test_an_ingress_without_tls_does_not_render():
    """Webhook deliveries carry their signatures: an Ingress without TLS stops the install."""
    with pytest.raises(helm.HelmError, match=r"ingress\.tls is required"):
        render({"ingress": {"enabled": True}})


def test_the_alert_webhook_url_comes_from_a_secret():
    """A Slack webhook URL is a credential: ENVCTL_ALERT_WEBHOOK_URL from a Secret, not the ConfigMap."""
    kinds = render({"secrets": {"alertWebhookSecretName": "envctl-alerts"}})
    (container,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["ENVCTL_ALERT_WEBHOOK_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "envctl-alerts",
        "key": "url",
    }
    assert "hooks.slack.com" not in kinds["ConfigMap"]["data"]["envctl.yaml"]
