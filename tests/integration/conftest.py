"""Real collaborators for integration tests: a moto server, git repositories, Terraform.

A moto server runs for the whole session on a free loopback port; each test
gets its own bucket and lock table. Each test gets a bare origin and a clone
that pushes to it, like an application's CI does.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import git
import pytest
import yaml

from bench.sandbox import start_moto_server
from controller import wiring
from controller.actions import Actions
from controller.reconciler import Reconciler
from controller.settings import Settings, StateSettings, parse
from controller.source import GitSource
from controller.statefiles import StateFiles
from controller.store import StatusStore
from controller.synth import SynthWorker
from controller.terraform import TerraformRunner
from tests.conftest import Toolchain

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on loopback for the whole session."""
    os.environ.update(AWS_ENV)
    proc, endpoint = start_moto_server()
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@dataclass
class Aws:
    """Clients of the moto server and this test's bucket and table."""

    endpoint: str
    bucket: str
    table: str

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1")

    def objects(self) -> list[str]:
        listing = self.client("s3").list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def state(self, key: str) -> dict[str, Any]:
        import json

        body = self.client("s3").get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return json.loads(body)

    def lock_items(self) -> list[dict[str, Any]]:
        return self.client("dynamodb").scan(TableName=self.table)["Items"]


@pytest.fixture
def aws(moto_endpoint: str) -> Aws:
    """A fresh state bucket and lock table on the moto server."""
    suffix = uuid.uuid4().hex[:8]
    result = Aws(moto_endpoint, f"state-{suffix}", f"locks-{suffix}")
    result.client("s3").create_bucket(Bucket=result.bucket)
    result.client("dynamodb").create_table(
        TableName=result.table,
        KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return result


@dataclass
class Repo:
    """A bare origin and a clone that commits and pushes environment files."""

    origin: Path
    clone: git.Repo
    folder: str = "environments"

    def write(self, name: str, data: dict[str, Any] | str, message: str = "") -> None:
        path = Path(self.clone.working_tree_dir) / self.folder / (name if "." in name else f"{name}.yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        self.clone.index.add([str(path)])
        self.commit(message or f"write {name}")

    def remove(self, *names: str) -> None:
        for name in names:
            self.clone.index.remove([f"{self.folder}/{name}.yaml"], working_tree=True)
        self.commit(f"remove {', '.join(names)}")

    def commit(self, message: str) -> None:
        self.clone.index.commit(message)
        self.clone.remotes.origin.push("HEAD:refs/heads/main", force=True).raise_if_error()


def make_repo(path: Path) -> Repo:
    """A bare origin under `path` and a clone that pushes to it, with one initial commit."""
    origin = path / "origin.git"
    git.Repo.init(origin, bare=True, initial_branch="main")
    clone = git.Repo.clone_from(str(origin), path / "clone")
    with clone.config_writer() as config:
        config.set_value("user", "name", "CI")
        config.set_value("user", "email", "ci@example.com")
    result = Repo(origin, clone)
    (path / "clone" / "README.md").write_text("environments\n")
    clone.index.add(["README.md"])
    result.commit("initial")
    return result


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return make_repo(tmp_path)


def preview(pr: int, state: str = "open", **parameters: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"kind": "preview", "pull_request": pr, "state": state}
    if parameters:
        spec["parameters"] = parameters
    return spec


def persistent(**parameters: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"kind": "persistent"}
    if parameters:
        spec["parameters"] = parameters
    return spec


def make_settings(tmp_path: Path, repo: Repo, aws: Aws, toolchain: Toolchain, **overrides: Any) -> Settings:
    raw: dict[str, Any] = {
        "repository": {"url": str(repo.origin), "branch": "main", "path": "environments", "poll_seconds": 1},
        "workdir": str(tmp_path / "work"),
        "stack": "stack.demo:build",
        "state": {
            "bucket": aws.bucket,
            "region": "us-east-1",
            "key_prefix": "envctl",
            "lock": os.environ.get("ENVCTL_TEST_LOCK", "dynamodb"),
            "lock_table": aws.table,
            "endpoint": aws.endpoint,
        },
        "terraform": {
            "binary": str(toolchain.terraform),
            "cli_config_file": str(toolchain.cli_config),
            "concurrency": 2,
            "timeout_seconds": 300,
            "lock_timeout_seconds": 2,
            "grace_seconds": 30,
            "plugin_cache_dir": str(tmp_path.parent / "plugin-cache"),
        },
        "safety": {"max_destroys_per_pass": 5},
        "retry": {"base_seconds": 30, "max_seconds": 600},
        "api": {"host": "127.0.0.1", "port": 0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    return parse(raw, "test-settings.yaml", tmp_path)


@pytest.fixture(scope="session")
def demo_worker() -> Iterator[SynthWorker]:
    """One warm worker for the demo stack, shared by every test (as the daemon shares it)."""
    from controller.settings import SynthSettings

    worker = SynthWorker("stack.demo:build", SynthSettings())
    yield worker
    worker.close()


@dataclass
class World:
    """A controller wired to this test's repository, bucket and table, with an injected clock."""

    settings: Settings
    reconciler: Reconciler
    store: StatusStore
    repo: Repo
    aws: Aws
    now: list[float] = field(default_factory=lambda: [1_000_000.0])

    @property
    def actions(self) -> Actions:
        """What the API and the CLI ask of this controller (plans, drift reports, confirmations)."""
        if not hasattr(self, "_actions"):
            self._actions = Actions(self.reconciler)
        return self._actions

    def phase(self, name: str) -> str:
        record = self.store.load(name)
        return str(record.phase) if record else "(none)"

    def key(self, name: str) -> str:
        return self.settings.state.key(name)

    def keys(self, *names: str) -> list[str]:
        return env_keys(self.settings.state, *names)


def env_keys(state: StateSettings, *names: str) -> list[str]:
    """Every object an applied environment has in the bucket: state, inventory entry, saved configuration."""
    return sorted(
        key for name in names for key in (state.key(name), state.inventory_key(name), state.config_key(name))
    )


@pytest.fixture
def world(
    tmp_path: Path, repo: Repo, aws: Aws, toolchain: Toolchain, demo_worker: SynthWorker
) -> Iterator[World]:
    settings = make_settings(tmp_path, repo, aws, toolchain)
    yield from build_world(settings, repo, aws, demo_worker)


def build_world(settings: Settings, repo: Repo, aws: Aws, worker: SynthWorker) -> Iterator[World]:
    store = StatusStore(settings.workdir / "status.db")
    repository = settings.repository
    source = GitSource(repository.url, repository.branch, repository.path, settings.workdir)
    terraform = TerraformRunner(settings.terraform, Path(settings.terraform.plugin_cache_dir or ""))
    now = [1_000_000.0]
    reconciler = wiring.reconciler(
        settings,
        source=source,
        synth=worker,
        terraform=terraform,
        store=store,
        state=StateFiles(settings.state),
        clock=lambda: now[0],
        jitter=lambda: 1.0,
    )
    reconciler.check_terraform()
    world = World(settings, reconciler, store, repo, aws, now)
    yield world
    reconciler.queue.close(timeout=0)
    source.close()
    store.close()
    shutil.rmtree(settings.workdir, ignore_errors=True)


class Hook:
    """A local HTTP server standing in for a chat webhook; records what it receives."""

    def __init__(self) -> None:
        import http.server
        import json as _json
        import threading

        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self.attempted_at: list[float] = []
        """time.monotonic() of each attempt's arrival."""
        self.fail_next = 0
        self.delay = 0.0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                owner.attempts += 1
                owner.attempted_at.append(time.monotonic())
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if owner.delay:
                    time.sleep(owner.delay)
                if owner.fail_next > 0:
                    owner.fail_next -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                owner.received.append(_json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/secret-path"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[str]:
        return [item["event"] for item in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.close()


@dataclass
class Topic:
    """An SNS topic with an SQS queue subscribed, to read published alerts back."""

    arn: str
    queue_url: str
    aws: Aws

    def messages(self, wait: float = 0) -> list[dict[str, Any]]:
        import json as _json

        sqs = self.aws.client("sqs")
        result = []
        deadline = time.monotonic() + wait
        while True:
            batch = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            for message in batch:
                result.append(_json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
            if not batch and time.monotonic() >= deadline:
                return result
            if not batch:
                time.sleep(0.2)


@pytest.fixture
def topic(aws: Aws) -> Topic:
    sns, sqs = aws.client("sns"), aws.client("sqs")
    arn = sns.create_topic(Name=f"envctl-{aws.bucket}")["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"alerts-{aws.bucket}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
    return Topic(arn, queue_url, aws)


def tamper(aws: Aws, key: str, change: Any) -> dict[str, Any]:
    """Change a state object behind Terraform's back (and its lock-table digest); returns the original."""
    import json as _json

    original = aws.state(key)
    state = _json.loads(_json.dumps(original))
    change(state)
    state["serial"] += 1
    write_state(aws, key, state)
    return original


def write_state(aws: Aws, key: str, state: dict[str, Any]) -> None:
    import hashlib
    import json as _json

    body = _json.dumps(state, indent=2).encode()
    aws.client("s3").put_object(Bucket=aws.bucket, Key=key, Body=body)
    aws.client("dynamodb").put_item(
        TableName=aws.table,
        Item={"LockID": {"S": f"{aws.bucket}/{key}-md5"}, "Digest": {"S": hashlib.md5(body).hexdigest()}},  # noqa: S324
    )
