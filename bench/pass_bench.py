"""Passes over many applied environments (demo stack, real Terraform, state on a local moto server).

Measures: the first pass that applies all of them; a pass with nothing changed
(wall time, synths and Terraform processes started: the target is 0 of each);
a pass after one file changed (exactly one apply); the first pass of a new
leader whose status database is empty (every environment adopted from the
inventory beside its state: no synth, no Terraform process).

    .venv/bin/python -m bench.pass_bench --environments 200
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import git
import yaml

from bench.sandbox import BUCKET, TABLE, start_moto
from controller import wiring
from controller.reconciler import Reconciler
from controller.settings import SynthSettings, parse
from controller.source import GitSource
from controller.statefiles import StateFiles
from controller.store import StatusStore
from controller.synth import SynthWorker
from controller.terraform import TerraformRunner

ROOT = Path(__file__).resolve().parent.parent


def make_repo(path: Path, count: int) -> git.Repo:
    folder = path / "environments"
    folder.mkdir(parents=True)
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as config:
        config.set_value("user", "name", "bench")
        config.set_value("user", "email", "bench@localhost")
    for index in range(1, count + 1):
        (folder / f"pr{index}.yaml").write_text(yaml.safe_dump({"kind": "preview", "pull_request": index}))
    repo.index.add([f"environments/pr{i}.yaml" for i in range(1, count + 1)])
    repo.index.commit(f"{count} previews")
    return repo


def build(workdir: Path, repo_path: Path, endpoint: str, concurrency: int) -> tuple[Reconciler, StatusStore]:
    tools = ROOT / ".tools"
    settings = parse(
        {
            "repository": {"url": str(repo_path)},
            "workdir": str(workdir),
            "stack": "stack.demo:build",
            "state": {"bucket": BUCKET, "lock_table": TABLE, "endpoint": endpoint},
            "terraform": {
                "binary": str(tools / "bin" / "terraform"),
                "cli_config_file": str(tools / "terraformrc"),
                "concurrency": concurrency,
                # Short, so that a lock write the AWS SDK retried against moto (the lock then
                # looks held by its own taker) costs seconds before envctl releases it, not minutes.
                "lock_timeout_seconds": 10,
            },
            "safety": {"max_destroys_per_pass": 5},
        },
        "bench",
    )
    store = StatusStore(workdir / "status.db")
    reconciler = wiring.reconciler(
        settings,
        source=GitSource(str(repo_path), "main", "environments", workdir),
        synth=SynthWorker(settings.stack, SynthSettings()),
        terraform=TerraformRunner(settings.terraform, workdir / "plugin-cache"),
        store=store,
        state=StateFiles(settings.state),
    )
    reconciler.check_terraform()
    return reconciler, store


def controller_rss_mb() -> float:
    """RSS of this process and its descendants except Terraform, its providers and moto (MB):
    the controller, its synth worker and the worker's Node.js child."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            status = (proc / "status").read_text()
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if any(part in cmdline for part in ("bin/terraform", "terraform-provider", "moto_server")):
            continue
        parents[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        line = next((x for x in status.splitlines() if x.startswith("VmRSS:")), "VmRSS: 0 kB")
        rss[int(proc.name)] = int(line.split()[1])
    ours = {os.getpid()}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in ours and pid not in ours:
                ours.add(pid)
                changed = True
    return sum(rss.get(pid, 0) for pid in ours) / 1024


class MemorySampler:
    """Samples controller_rss_mb() every second in a thread: peak and last value."""

    def __init__(self) -> None:
        import threading

        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append(controller_rss_mb())

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {
            "peak_mb": round(max(self.samples, default=0.0)),
            "end_mb": round(self.samples[-1] if self.samples else 0.0),
        }


def measured(reconciler: Reconciler) -> dict[str, float]:
    synths, processes = reconciler.synth.synths, reconciler.terraform.processes_started
    started = time.perf_counter()
    result = reconciler.run_pass()
    return {
        "wall_seconds": round(time.perf_counter() - started, 3),
        "synths": reconciler.synth.synths - synths,
        "terraform_processes": reconciler.terraform.processes_started - processes,
        "applied": sum(outcome == "applied" for outcome in result.outcomes.values()),
        "failed": len(result.failed),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--environments", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    tmp = Path(tempfile.mkdtemp(prefix="envctl-pass-bench-"))
    moto, endpoint = start_moto()
    try:
        repo = make_repo(tmp / "repo", args.environments)
        reconciler, store = build(tmp / "work", tmp / "repo", endpoint, args.concurrency)
        sampler = MemorySampler()
        first = measured(reconciler)
        first["controller_memory"] = sampler.stop()
        unchanged = measured(reconciler)
        target = tmp / "repo" / "environments" / "pr1.yaml"
        target.write_text(
            yaml.safe_dump({"kind": "preview", "pull_request": 1, "parameters": {"revision": "2"}})
        )
        repo.index.add(["environments/pr1.yaml"])
        repo.index.commit("change pr1")
        one_changed = measured(reconciler)
        reconciler.synth.close()
        store.close()
        # A new leader: same repository and bucket, a workdir of its own (no status database).
        leader, leader_store = build(tmp / "work-leader", tmp / "repo", endpoint, args.concurrency)
        new_leader = measured(leader)
        records = leader_store.load_all().values()
        new_leader["adopted"] = sum(r.reason == "AdoptedFromInventory" for r in records)
        leader.synth.close()
        leader_store.close()
    finally:
        moto.terminate()
        moto.wait()
    print(
        json.dumps(
            {
                "environments": args.environments,
                "concurrency": args.concurrency,
                "first_pass": first,
                "nothing_changed": unchanged,
                "one_file_changed": one_changed,
                "new_leader_first_pass": new_leader,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
