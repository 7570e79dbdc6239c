"""One ECR repository per service: scanned on push, pruned, destroyable with images in it."""

from __future__ import annotations

import json

from cdktf_cdktf_provider_aws.ecr_lifecycle_policy import EcrLifecyclePolicy
from cdktf_cdktf_provider_aws.ecr_repository import (
    EcrRepository,
    EcrRepositoryImageScanningConfiguration,
)
from constructs import Construct

from stack.config import ECR_KEEP_IMAGES, StackConfig


class Registry(Construct):
    """ECR repositories named `<suffix>/<namespace>`."""

    def __init__(self, scope: Construct, id_: str, *, config: StackConfig) -> None:
        super().__init__(scope, id_)
        names = config.names
        lifecycle = json.dumps(
            {
                "rules": [
                    {
                        "rulePriority": 1,
                        "description": f"Keep the last {ECR_KEEP_IMAGES} images",
                        "selection": {
                            "tagStatus": "any",
                            "countType": "imageCountMoreThan",
                            "countNumber": ECR_KEEP_IMAGES,
                        },
                        "action": {"type": "expire"},
                    }
                ]
            }
        )
        self.repositories: dict[str, EcrRepository] = {}
        for namespace in config.namespaces:
            ident = namespace.replace("-", "_")
            repository = EcrRepository(
                self,
                f"repo_{ident}",
                name=names.repository(namespace),
                # IMMUTABLE by default: a tag always names the image that was scanned and deployed.
                image_tag_mutability=config.image_tag_mutability,
                image_scanning_configuration=EcrRepositoryImageScanningConfiguration(scan_on_push=True),
                # A preview must be destroyable while its images are still there.
                force_delete=True,
                tags={"Name": names.repository(namespace)},
            )
            EcrLifecyclePolicy(self, f"repo_{ident}_lifecycle", repository=repository.name, policy=lifecycle)
            self.repositories[namespace] = repository
