"""Platform-stack synthesis for N environments: the warm worker vs a fresh process per environment.

A fresh process per environment is how `cdktf synth` runs an app: every run
pays for importing the AWS provider bindings. Both are measured in this one
run, on this machine, with the same environments.

    .venv/bin/python -m bench.synth_bench --environments 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from controller.settings import SynthSettings
from controller.synth import SynthWorker
from controller.types import Environment

FRESH = """
import json, sys
from cdktf import App
from controller.types import Environment
from stack.app import build
spec, outdir = json.loads(sys.argv[1]), sys.argv[2]
app = App(outdir=outdir)
build(app, Environment.from_spec(spec))
app.synth()
"""


def environments(count: int) -> list[Environment]:
    return [
        Environment(
            name=f"pr{7000 + i}",
            kind="preview",
            state="open",
            region="us-east-1",
            deletion="destroy",
            file=f"environments/pr{7000 + i}.yaml",
            pull_request=7000 + i,
            parameters={},
        )
        for i in range(count)
    ]


def backend(name: str) -> dict[str, object]:
    return {
        "bucket": "envctl-state",
        "key": f"envctl/{name}/terraform.tfstate",
        "region": "us-east-1",
        "encrypt": True,
        "dynamodb_table": "envctl-locks",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--environments", type=int, default=20)
    parser.add_argument("--fresh", type=int, default=None, help="fresh-process runs (default: same count)")
    args = parser.parse_args()
    envs = environments(args.environments)
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")
    out = Path(tempfile.mkdtemp(prefix="envctl-bench-"))

    worker = SynthWorker("stack.app:build", SynthSettings(max_synths=10_000, max_rss_mb=100_000))
    started = time.perf_counter()
    worker.start()
    warmup = time.perf_counter() - started
    warm_times, warm_rss = [], 0.0
    for env in envs:
        t0 = time.perf_counter()
        worker.synth(env, backend(env.name), out / "warm" / env.name)
        warm_times.append(time.perf_counter() - t0)
        warm_rss = max(warm_rss, worker._rss_mb)
    worker.close()

    fresh_times = []
    for env in envs[: args.fresh or args.environments]:
        (out / "fresh" / env.name).mkdir(parents=True)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", FRESH, json.dumps(env.spec()), str(out / "fresh" / env.name)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode:
            raise SystemExit(f"fresh synth of {env.name} failed:\n{proc.stderr[-3000:]}")
        fresh_times.append(time.perf_counter() - t0)
    fresh_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    warm_median, fresh_median = statistics.median(warm_times), statistics.median(fresh_times)
    result = {
        "environments": len(envs),
        "fresh_runs": len(fresh_times),
        "warm_start_seconds": round(warmup, 2),
        "warm_median_seconds": round(warm_median, 3),
        "warm_total_seconds_incl_start": round(warmup + sum(warm_times), 2),
        "fresh_median_seconds": round(fresh_median, 2),
        "fresh_total_seconds": round(sum(fresh_times), 1),
        "ratio_per_environment": round(fresh_median / warm_median, 1),
        "warm_worker_peak_rss_mb": round(warm_rss),
        "fresh_process_peak_rss_mb": round(fresh_rss),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
