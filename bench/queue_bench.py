"""Commit-to-apply-start of a new environment while three others run slow applies.

Both designs in one run, on the same code and the same machine:

- *blocking passes*: a pass waits for every action it started before the next
  pass can begin (`run_pass(wait=True)`), as envctl did before the work queue;
- *the queue*: a pass decides and queues (`run_pass(wait=False)`), as `envctl run` does now.

A webhook-like trigger runs a pass at once after each commit; passes never
overlap (one refresher thread, as in the daemon). The figure is the time from
the commit of the new preview to the start of its apply run (its run record).

    .venv/bin/python -m bench.queue_bench --sleep 60
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import yaml

from bench.pass_bench import build, make_repo
from bench.sandbox import start_moto


def scenario(tmp: Path, *, wait: bool, sleep: int) -> float:
    """Seconds from committing pr4 to the start of its apply, with three slow applies running."""
    moto, endpoint = start_moto()
    try:
        repo = make_repo(tmp / "repo", 3)
        for index in (1, 2, 3):
            spec = {"kind": "preview", "pull_request": index, "parameters": {"sleep_seconds": sleep}}
            (tmp / "repo" / "environments" / f"pr{index}.yaml").write_text(yaml.safe_dump(spec))
        repo.index.add([f"environments/pr{i}.yaml" for i in (1, 2, 3)])
        repo.index.commit("three slow previews")
        reconciler, store = build(tmp / "work", tmp / "repo", endpoint, concurrency=4)
        trigger = threading.Event()
        stop = threading.Event()

        def refresher() -> None:
            while not stop.is_set():
                if trigger.wait(0.1):
                    trigger.clear()
                    reconciler.run_pass(wait=wait)

        thread = threading.Thread(target=refresher, daemon=True)
        thread.start()
        trigger.set()
        while (
            sum(
                store.load(f"pr{i}") is not None and store.load(f"pr{i}").phase.value == "Applying"
                for i in (1, 2, 3)
            )
            < 3
        ):
            time.sleep(0.1)
        time.sleep(2)  # well into the slow resources
        (tmp / "repo" / "environments" / "pr4.yaml").write_text(
            yaml.safe_dump({"kind": "preview", "pull_request": 4})
        )
        repo.index.add(["environments/pr4.yaml"])
        repo.index.commit("open pr4")
        committed = time.time()
        trigger.set()
        while not [r for r in store.runs("pr4") if r.action == "apply"]:
            time.sleep(0.1)
        started = min(r.started_at for r in store.runs("pr4") if r.action == "apply")
        stop.set()
        reconciler.queue.wait([f"pr{i}" for i in (1, 2, 3, 4)])
        thread.join(timeout=sleep * 2)
        reconciler.synth.close()
        store.close()
        return round(started - committed, 2)
    finally:
        moto.terminate()
        moto.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sleep", type=int, default=60, help="seconds each of the three slow applies takes")
    args = parser.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    blocking = scenario(Path(tempfile.mkdtemp(prefix="envctl-queue-bench-")), wait=True, sleep=args.sleep)
    queued = scenario(Path(tempfile.mkdtemp(prefix="envctl-queue-bench-")), wait=False, sleep=args.sleep)
    print(
        json.dumps(
            {
                "slow_apply_seconds": args.sleep,
                "commit_to_apply_start_seconds": {"blocking_passes": blocking, "work_queue": queued},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
