"""`make run`: the controller on embedded defaults, in a local sandbox, with nothing to configure.

Starts a moto server on 127.0.0.1 for S3 state and its locks (Terraform's S3
lock file when the Terraform found has it, else DynamoDB; `ENVCTL_SANDBOX_LOCK`
picks one), makes a local git repository of the bundled environments under
`.envctl/sandbox/`, points envctl at it with the demo stack (null resources named like the
platform's components) and Terraform from the test toolchain, then runs
`envctl run` until Ctrl-C, and stops everything it started.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import git
import yaml

from controller import cli
from controller.settings import TerraformSettings
from controller.terraform import TerraformRunner

ROOT = Path(__file__).resolve().parent.parent
SANDBOX = Path(os.environ.get("ENVCTL_SANDBOX_DIR", ROOT / ".envctl" / "sandbox"))
BUCKET, TABLE = "envctl-state", "envctl-locks"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto_server() -> tuple[subprocess.Popen[bytes], str]:
    """A moto server on a free loopback port; returns the process and its endpoint once it answers."""
    port = _free_port()
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # A process group of its own: a terminal's Ctrl-C reaches envctl, not moto, so envctl
        # stops first (Terraform saves its state to moto) and moto is stopped last.
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)  # noqa: S310 - loopback only
            return proc, endpoint
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"moto server did not answer on {endpoint}")


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """A moto server with the state bucket and lock table."""
    proc, endpoint = start_moto_server()
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1").create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return proc, endpoint


def seed_repository(target: Path) -> None:
    """A git repository holding the bundled environments (platform parameters left out)."""
    if (target / ".git").exists():
        return
    folder = target / "environments"
    folder.mkdir(parents=True)
    for source in sorted((ROOT / "environments").glob("*.yaml")):
        spec = yaml.safe_load(source.read_text())
        # The demo stack takes its own parameters, not the platform stack's.
        spec.pop("parameters", None)
        (folder / source.name).write_text(yaml.safe_dump(spec, sort_keys=False))
    repo = git.Repo.init(target, initial_branch="main")
    with repo.config_writer() as config:
        config.set_value("user", "name", "envctl sandbox")
        config.set_value("user", "email", "sandbox@localhost")
    repo.index.add([str(p.relative_to(target)) for p in folder.iterdir()])
    repo.index.commit("bundled example environments")
    repo.close()


def sandbox_lock(terraform: TerraformSettings) -> str:
    """`ENVCTL_SANDBOX_LOCK` when set; else `s3` (the recommended lock) when Terraform has it (1.10+)."""
    asked = os.environ.get("ENVCTL_SANDBOX_LOCK", "")
    if asked:
        if asked not in ("s3", "dynamodb"):
            raise SystemExit(f"ENVCTL_SANDBOX_LOCK: {asked!r} is not allowed; expected s3 or dynamodb")
        return asked
    runner = TerraformRunner(terraform, SANDBOX / "plugin-cache")
    return "s3" if runner.version() >= (1, 10, 0) else "dynamodb"


class Refused(SystemExit):
    """The sandbox cannot start, for a reason the message names; nothing was touched."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message


def hold_sandbox(directory: Path) -> Any:
    """An exclusive lock on the sandbox folder for this process's life; Refused if another holds it.

    Taken before anything else, so a second `make run` touches nothing of the first one's.
    """
    directory.mkdir(parents=True, exist_ok=True)
    handle = (directory / "sandbox.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise Refused(
            f"envctl sandbox: {directory} is in use by a running sandbox ({holder}); stop it "
            "(Ctrl-C in its terminal) or set ENVCTL_SANDBOX_DIR to another folder"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def check_port(port: int) -> None:
    """Refused, naming ENVCTL_API_PORT, when the status page's port is taken."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as error:
            raise Refused(
                f"envctl sandbox: port {port} on 127.0.0.1 is in use ({error.strerror}); set "
                "ENVCTL_API_PORT to a free port (0 picks one), e.g. ENVCTL_API_PORT=8081 make run"
            ) from None


def write_credentials(directory: Path) -> dict[str, str]:
    """The sandbox's fake AWS credentials as a shared credentials file, and the variables that
    point at it: what a second shell exports to run `envctl` commands against the sandbox."""
    credentials = directory / "aws-credentials"
    credentials.write_text("[default]\naws_access_key_id = sandbox\naws_secret_access_key = sandbox-secret\n")
    config = directory / "aws-config"
    config.write_text("[default]\nregion = us-east-1\n")
    return {
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_CONFIG_FILE": str(config),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def write_settings(path: Path, endpoint: str, repository: Path, port: int) -> str:
    """The sandbox's settings file; returns the state lock it uses."""
    tools = Path(os.environ.get("ENVCTL_TOOLS_DIR", ROOT / ".tools"))
    terraform = TerraformSettings(
        binary=str(tools / "bin" / "terraform"), cli_config_file=str(tools / "terraformrc")
    )
    lock = sandbox_lock(terraform)
    settings = {
        "repository": {"url": str(repository), "branch": "main", "path": "environments", "poll_seconds": 5},
        "workdir": str(SANDBOX / "work"),
        "stack": "stack.demo:build",
        "state": {
            "bucket": BUCKET,
            "region": "us-east-1",
            "lock": lock,
            "lock_table": TABLE,
            "endpoint": endpoint,
        },
        "terraform": {
            "binary": terraform.binary,
            "cli_config_file": terraform.cli_config_file,
            "concurrency": 4,
            "lock_timeout_seconds": 30,
            "grace_seconds": 30,
        },
        "retry": {"base_seconds": 10, "max_seconds": 300},
        # Loopback; the page and the status JSON without a token, as the banner's URL promises.
        "api": {"host": "127.0.0.1", "port": port, "anonymous_read": True},
    }
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return lock


def api_port() -> int:
    """ENVCTL_API_PORT (default 8080); 0 picks a free port here, so the page's URL can be printed."""
    port = int(os.environ.get("ENVCTL_API_PORT", "8080"))
    return port or _free_port()


def main() -> int:
    try:
        # One sandbox per folder, and its port free, checked before anything is touched.
        held = hold_sandbox(SANDBOX)
        port = api_port()
        check_port(port)
    except Refused as refused:
        print(refused.message, file=sys.stderr)
        return 2
    # Fake credentials: the only AWS the sandbox talks to is its own moto server. Written to a
    # file too, so `envctl` commands from another shell reach the same moto server.
    aws = write_credentials(SANDBOX)
    os.environ.update(
        AWS_ACCESS_KEY_ID="sandbox",
        AWS_SECRET_ACCESS_KEY="sandbox-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    # moto keeps state in memory, so each start begins with fresh state and status.
    shutil.rmtree(SANDBOX / "work", ignore_errors=True)
    repository = SANDBOX / "environments-repo"
    seed_repository(repository)
    moto, endpoint = start_moto()
    config = SANDBOX / "envctl.yaml"
    lock = write_settings(config, endpoint, repository, port)
    exports = {"ENVCTL_CONFIG": str(config), **aws}
    (SANDBOX / "env.sh").write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in exports.items()))
    print(
        f"envctl sandbox: environments repository {repository}, state on {endpoint} (moto pid "
        f"{moto.pid}, lock: {lock})\nsettings: {config}\nstatus page: http://127.0.0.1:{port}/\n"
        "for envctl commands in another shell (or `. "
        f"{shlex.quote(str(SANDBOX / 'env.sh'))}`):\n"
        f"  export {' '.join(f'{k}={shlex.quote(v)}' for k, v in exports.items())}\n"
        "Ctrl-C stops envctl, then moto",
        file=sys.stderr,
        flush=True,
    )
    try:
        return cli.main(["run", "--config", str(config)])
    finally:
        print("envctl sandbox: envctl stopped; stopping moto", file=sys.stderr, flush=True)
        moto.terminate()
        moto.wait(timeout=10)
        held.close()


if __name__ == "__main__":
    sys.exit(main())
