"""One Secrets Manager secret per service, deleted at once on destroy."""

from __future__ import annotations

from cdktf import TerraformResourceLifecycle
from cdktf_cdktf_provider_aws.secretsmanager_secret import SecretsmanagerSecret
from cdktf_cdktf_provider_aws.secretsmanager_secret_version import SecretsmanagerSecretVersion
from constructs import Construct

from stack.config import StackConfig

PLACEHOLDER = "{}"
"""The first value of every secret: a service reading its secret at start finds valid JSON."""


class Secrets(Construct):
    """Secrets named `envctl/<suffix>/<namespace>`; values are written by the services' owners.

    Each starts with an empty JSON object; Terraform never touches the value again, so what the
    owners write is neither drift nor overwritten.
    """

    def __init__(self, scope: Construct, id_: str, *, config: StackConfig) -> None:
        super().__init__(scope, id_)
        names = config.names
        self.secrets: dict[str, SecretsmanagerSecret] = {}
        for namespace in config.namespaces:
            self.secrets[namespace] = SecretsmanagerSecret(
                self,
                f"secret_{namespace.replace('-', '_')}",
                name=names.secret(namespace),
                description=f"Runtime configuration of {namespace} in {config.environment_suffix}",
                # No recovery window: a re-created preview reuses the name at once.
                recovery_window_in_days=0,
                tags={"Name": names.secret(namespace)},
            )
            SecretsmanagerSecretVersion(
                self,
                f"secret_{namespace.replace('-', '_')}_initial",
                secret_id=self.secrets[namespace].id,
                secret_string=PLACEHOLDER,
                lifecycle=TerraformResourceLifecycle(ignore_changes=["secret_string"]),
            )
