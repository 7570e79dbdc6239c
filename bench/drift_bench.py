"""A drift pass over N applied environments: envctl's checks vs a plain `terraform plan` loop.

Both run at the same parallelism over the same working directories, in this
one run: first the plain loop (`terraform plan -detailed-exitcode` per
directory), then envctl's `check_drift` for every environment (which reuses
the applied working directory, plans, and records the outcome). Each side runs
`--rounds` times and the median is reported.

    .venv/bin/python -m bench.drift_bench --environments 50 --concurrency 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.pass_bench import build, make_repo
from bench.sandbox import start_moto


def plain_loop(reconciler, names: list[str], concurrency: int) -> float:
    terraform = reconciler.settings.terraform
    env = {
        **os.environ,
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",
        "TF_CLI_CONFIG_FILE": terraform.cli_config_file or "",
        "TF_PLUGIN_CACHE_DIR": str(reconciler.settings.workdir / "plugin-cache"),
    }

    def plan(name: str) -> int:
        workdir = reconciler.settings.workdir / "envs" / name
        return subprocess.run(
            [
                terraform.binary,
                "plan",
                "-input=false",
                "-no-color",
                "-detailed-exitcode",
                "-out=tfplan",
                f"-lock-timeout={terraform.lock_timeout_seconds}s",
            ],
            cwd=workdir,
            env=env,
            capture_output=True,
            check=False,
        ).returncode

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        codes = list(pool.map(plan, names))
    assert set(codes) == {0}, codes
    return time.perf_counter() - started


def envctl_pass(reconciler, names: list[str], concurrency: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outcomes = list(pool.map(reconciler.check_drift, names))
    assert set(outcomes) == {"in_sync"}, outcomes
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--environments", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    tmp = Path(tempfile.mkdtemp(prefix="envctl-drift-bench-"))
    moto, endpoint = start_moto()
    try:
        make_repo(tmp / "repo", args.environments)
        reconciler, store = build(tmp / "work", tmp / "repo", endpoint, args.concurrency)
        first = reconciler.run_pass()
        assert not first.failed, first.failed
        names = sorted(first.outcomes)
        plain, ours = [], []
        for _ in range(args.rounds):
            plain.append(plain_loop(reconciler, names, args.concurrency))
            ours.append(envctl_pass(reconciler, names, args.concurrency))
        reconciler.synth.close()
        store.close()
    finally:
        moto.terminate()
        moto.wait()
    plain_median, ours_median = statistics.median(plain), statistics.median(ours)
    print(
        json.dumps(
            {
                "environments": args.environments,
                "concurrency": args.concurrency,
                "rounds": args.rounds,
                "plain_loop_seconds": [round(x, 2) for x in plain],
                "envctl_seconds": [round(x, 2) for x in ours],
                "plain_median_seconds": round(plain_median, 2),
                "envctl_median_seconds": round(ours_median, 2),
                "overhead_percent": round(100 * (ours_median / plain_median - 1), 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
