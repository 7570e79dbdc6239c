"""A pass with nothing to do over N applied environments: the pass's own cost, without Terraform.

The status database is seeded with every environment Ready at exactly the digest the pass wants
(as after a first pass that applied them all), so a pass reads, decides "nothing" for each and
sets their timers. Run it from two checkouts to compare two versions of the pass in one run:

    python -m bench.idle_pass_bench --environments 1000 --passes 15
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.pass_bench import build, make_repo, start_moto
from controller.planner import digest
from controller.types import Environment, Phase, Record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--environments", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=15)
    args = parser.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    tmp = Path(tempfile.mkdtemp(prefix="envctl-idle-bench-"))
    moto, endpoint = start_moto()
    try:
        make_repo(tmp / "repo", args.environments)
        reconciler, store = build(tmp / "work", tmp / "repo", endpoint, 4)
        revision = reconciler.source.fetch()
        for name, env in reconciler.desired(revision).items():
            assert isinstance(env, Environment)
            wanted = digest(env, reconciler.stack_version)
            store.save(
                Record(
                    name=name,
                    kind=env.kind,
                    phase=Phase.READY,
                    revision=revision.sha,
                    applied_revision=revision.sha,
                    applied_digest=wanted,
                    attempted_digest=wanted,
                    applied_kind=env.kind,
                    spec=env.spec(),
                )
            )
        reconciler.run_pass()  # the first one records what a first pass would (expiry, intervals)
        seconds = []
        for _ in range(args.passes):
            started = time.perf_counter()
            result = reconciler.run_pass()
            seconds.append(time.perf_counter() - started)
            assert not result.outcomes, result.outcomes
        reconciler.synth.close()
        store.close()
    finally:
        moto.terminate()
        moto.wait()
    print(
        json.dumps(
            {
                "environments": args.environments,
                "passes": args.passes,
                "median_seconds": round(statistics.median(seconds), 3),
                "min_seconds": round(min(seconds), 3),
                "max_seconds": round(max(seconds), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
