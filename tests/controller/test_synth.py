"""The warm synth worker: one import, many synths, recycling, and the backend check."""

from __future__ import annotations

import json

import pytest

from controller.errors import SynthError
from controller.settings import SynthSettings
from controller.synth import SynthWorker, check_backend, stack_version
from controller.types import Environment

BACKEND = {"bucket": "b", "key": "envctl/pr1/terraform.tfstate", "region": "us-east-1", "dynamodb_table": "t"}


def env(name="pr1", **parameters):
    return Environment(
        name=name,
        kind="preview",
        state="open",
        region="us-east-1",
        deletion="destroy",
        file=f"environments/{name}.yaml",
        pull_request=1,
        parameters=parameters,
    )


def test_worker_synthesizes_many_environments_in_one_process(tmp_path):
    """Three synths, one worker start; each file carries its own backend key."""
    worker = SynthWorker("stack.demo:build", SynthSettings())
    try:
        for name in ("pr1", "pr2", "pr3"):
            backend = {**BACKEND, "key": f"envctl/{name}/terraform.tfstate"}
            result = worker.synth(env(name), backend, tmp_path / name)
            document = json.loads(result.file.read_text())
            assert document["terraform"]["backend"] == {"s3": backend}
            assert (
                document["resource"]["null_resource"]["cluster"]["triggers"]["name"]
                == f"envctl-{name}-cluster"
            )
        assert (worker.starts, worker.synths) == (1, 3)
    finally:
        worker.close()


def test_worker_is_recycled_after_max_synths(tmp_path):
    """With max_synths=2 the third synth runs in a fresh process."""
    worker = SynthWorker("stack.demo:build", SynthSettings(max_synths=2))
    try:
        for index in range(3):
            worker.synth(env(), BACKEND, tmp_path / str(index))
        assert worker.starts == 2
    finally:
        worker.close()


def test_unknown_parameter_is_a_synth_error_naming_file_and_parameter(tmp_path):
    """The stack refuses an unknown parameter; the worker survives for the next synth."""
    worker = SynthWorker("stack.demo:build", SynthSettings())
    try:
        with pytest.raises(SynthError, match=r"environments/pr1.yaml: .*parameters\.size"):
            worker.synth(env(size="xl"), BACKEND, tmp_path / "a")
        with pytest.raises(SynthError, match="sleep_seconds"):
            worker.synth(env(sleep_seconds=-1), BACKEND, tmp_path / "b")
        assert worker.synth(env(), BACKEND, tmp_path / "c").file.exists()
        assert worker.starts == 1
    finally:
        worker.close()


def test_missing_entry_point_fails_clearly():
    """A stack entry that cannot be imported is reported with its name."""
    worker = SynthWorker("nosuchmodule.app:build", SynthSettings())
    with pytest.raises(SynthError, match=r"nosuchmodule\.app:build"):
        worker.start()


def test_backend_check_refuses_any_other_key_or_backend():
    """Before Terraform runs, a wrong key, bucket or extra backend is refused."""
    good = {"terraform": {"backend": {"s3": dict(BACKEND)}}}
    check_backend(good, BACKEND, "environments/pr1.yaml")
    shared = {"terraform": {"backend": {"s3": {**BACKEND, "key": "envctl/pr2/terraform.tfstate"}}}}
    with pytest.raises(SynthError, match=r"terraform.backend.s3.key: 'envctl/pr2/terraform.tfstate'"):
        check_backend(shared, BACKEND, "environments/pr1.yaml")
    with pytest.raises(SynthError, match=r"\['local', 's3'\]"):
        check_backend({"terraform": {"backend": {"s3": BACKEND, "local": {}}}}, BACKEND, "f")
    with pytest.raises(SynthError, match=r"\[\]"):
        check_backend({}, BACKEND, "f")


def test_stack_version_follows_the_stack_code(tmp_path, monkeypatch):
    """The stack version is a digest of the entry's package; editing a file changes it."""
    package = tmp_path / "mystack"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "app.py").write_text("def build(scope, env):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = stack_version("mystack.app:build")
    assert before == stack_version("mystack.app:build")
    (package / "app.py").write_text("def build(scope, env):\n    return 1\n")
    assert stack_version("mystack.app:build") != before
    with pytest.raises(SynthError, match="cannot be found"):
        stack_version("absent_pkg_xyz:build")


def test_worker_is_recycled_when_memory_grows_past_the_bound(tmp_path):
    """With max_rss_mb=1 (below any real worker, Node.js child included) every synth gets a fresh worker."""
    worker = SynthWorker("stack.demo:build", SynthSettings(max_rss_mb=1))
    try:
        for index in range(2):
            worker.synth(env(), BACKEND, tmp_path / str(index))
        assert worker.starts == 2
        assert worker._rss_mb > 50  # worker + node, as reported by the worker itself
    finally:
        worker.close()


def test_a_stack_rejecting_its_input_waits_and_any_other_failure_is_retried(tmp_path):
    """ValueError from the stack's validation is a SynthError; a RuntimeError (a bug) is transient."""
    import os

    from controller.errors import TransientError

    (tmp_path / "picky_stack.py").write_text(
        "def build(scope, environment):\n"
        "    if environment.parameters.get('mode') == 'invalid':\n"
        "        raise ValueError('parameters.mode: invalid is not allowed')\n"
        "    raise RuntimeError('out of memory in the stack')\n"
    )
    worker = SynthWorker(
        "picky_stack:build", SynthSettings(), env={**os.environ, "PYTHONPATH": str(tmp_path)}
    )
    try:
        with pytest.raises(SynthError, match=r"rejected it: ValueError: parameters\.mode"):
            worker.synth(env(mode="invalid"), BACKEND, tmp_path / "a")
        with pytest.raises(TransientError, match="failed: RuntimeError: out of memory") as raised:
            worker.synth(env(mode="other"), BACKEND, tmp_path / "b")
        assert not isinstance(raised.value, SynthError)
    finally:
        worker.close()


def test_the_backend_block_with_dynamodb_locking_on_an_endpoint():
    """DynamoDB locking on a custom endpoint: the lock table, path-style S3, no AWS account lookups,
    and never use_lockfile beside a table (seed failure 2)."""
    from controller.backend import backend_block
    from controller.settings import StateSettings

    state = StateSettings(
        bucket="envctl-state",
        region="eu-west-1",
        lock="dynamodb",
        lock_table="envctl-locks",
        endpoint="http://127.0.0.1:5000",
    )
    assert backend_block(state, "staging") == {
        "bucket": "envctl-state",
        "key": state.key("staging"),
        "region": "eu-west-1",
        "encrypt": True,
        "dynamodb_table": "envctl-locks",
        "endpoints": {"s3": "http://127.0.0.1:5000", "dynamodb": "http://127.0.0.1:5000"},
        "use_path_style": True,
        "skip_credentials_validation": True,
        "skip_metadata_api_check": True,
        "skip_region_validation": True,
        "skip_requesting_account_id": True,
    }


def test_the_backend_block_with_lockfile_locking_on_real_aws():
    """lock=s3 emits use_lockfile (Terraform 1.10+) and no table; real AWS has only the essentials."""
    from controller.backend import backend_block
    from controller.settings import StateSettings

    state = StateSettings(bucket="b", region="us-east-1", lock="s3")
    assert backend_block(state, "pr1") == {
        "bucket": "b",
        "key": state.key("pr1"),
        "region": "us-east-1",
        "encrypt": True,
        "use_lockfile": True,
    }
