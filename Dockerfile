# syntax=docker/dockerfile:1.7
# envctl: the controller, Terraform, and Node.js for jsii, as a non-root image.

# --- build the wheels of envctl and everything it needs ------------------------------------
FROM python:3.12-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller ./controller
COPY stack ./stack
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- Terraform, pinned by version and checksum ------------------------------------------------
FROM debian:bookworm-slim AS terraform
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The version the test suite runs (scripts/install-toolchain.sh): what is tested is what ships.
ARG TERRAFORM_VERSION=1.15.5
# sha256 of terraform_1.15.5_linux_amd64.zip; the build fails if the download differs.
ARG TERRAFORM_SHA256=702b2136af6728c8ff037f843dd2dbce2b7ad88786b7381d1d72aefa250f601c
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl unzip \
 && curl -fsSLo /tmp/terraform.zip \
      "https://releases.hashicorp.com/terraform/${TERRAFORM_VERSION}/terraform_${TERRAFORM_VERSION}_linux_amd64.zip" \
 && echo "${TERRAFORM_SHA256}  /tmp/terraform.zip" | sha256sum -c - \
 && unzip /tmp/terraform.zip terraform -d /out \
 && /out/terraform version

# --- Node.js 22 for the jsii runtime under cdktf ------------------------------------------------
FROM node:22-bookworm-slim AS node

# --- the image ------------------------------------------------------------------------------------
FROM python:3.12-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 envctl \
 && useradd --uid 10001 --gid 10001 --home-dir /home/envctl --create-home envctl
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=terraform /out/terraform /usr/local/bin/terraform
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels envctl==0.1.0 \
 && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 \
    JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION=1 \
    JSII_RUNTIME_PACKAGE_CACHE_ROOT=/opt/jsii-cache \
    TF_PLUGIN_CACHE_DIR=/var/lib/envctl/plugin-cache \
    TF_IN_AUTOMATION=1 \
    ENVCTL_CONFIG=/etc/envctl/envctl.yaml
# Warm the jsii assembly cache at build time, so the first synth in a pod does not unpack it.
RUN mkdir -p /opt/jsii-cache \
 && python -c "import cdktf_cdktf_provider_aws.eks_cluster, stack.platform" \
 && chmod -R a+rX /opt/jsii-cache \
 && mkdir -p /var/lib/envctl && chown envctl:envctl /var/lib/envctl
USER 10001:10001
WORKDIR /var/lib/envctl
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["envctl"]
CMD ["run"]
