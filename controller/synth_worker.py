"""The warm synth worker process: imports the stack module once, then synthesizes on request.

Run as `python -m controller.synth_worker ENTRY`. Requests and answers are JSON
lines on a private copy of stdout; the process's own stdout is pointed at
stderr so nothing cdktf or jsii prints can corrupt the protocol. This module
and `stack/` are the only places that import cdktf.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from controller.types import Environment


def _rss_mb() -> float:
    """Resident memory of this worker and its descendants (the jsii Node.js process)."""
    pids, total = [os.getpid()], 0
    while pids:
        pid = pids.pop()
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1])
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    pids.extend(int(child) for child in children.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # a process that exited while we looked
    return total * os.sysconf("SC_PAGE_SIZE") / 1024 / 1024


def load_entry(entry: str) -> Any:
    module_name, _, attribute = entry.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def synth_one(build: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Synthesize one environment with the controller's backend and write main.tf.json."""
    from cdktf import App  # noqa: PLC0415 - only the worker process pays for cdktf

    environment = Environment.from_spec(request["environment"])
    backend = request["backend"]
    outdir = Path(request["outdir"])
    with tempfile.TemporaryDirectory(prefix="envctl-synth-") as tmp:
        app = App(outdir=tmp, skip_validation=False)
        try:
            build(app, environment)
        except (ValueError, TypeError, KeyError) as error:
            return {"ok": False, "kind": "invalid", "error": f"{type(error).__name__}: {error}"}
        app.synth()
        files = list(Path(tmp, "stacks").glob("*/cdk.tf.json"))
        if len(files) != 1:
            return {
                "ok": False,
                "kind": "invalid",
                "error": f"the entry point made {len(files)} stacks; expected 1",
            }
        document = json.loads(files[0].read_text())
    # The controller owns where state lives: whatever backend the stack declared (cdktf adds
    # `local` when none) is replaced by this environment's own S3 key.
    document.setdefault("terraform", {})["backend"] = {"s3": backend}
    outdir.mkdir(parents=True, exist_ok=True)
    target = outdir / "main.tf.json"
    target.write_text(json.dumps(document, indent=2, sort_keys=True))
    return {"ok": True, "file": str(target), "rss_mb": round(_rss_mb(), 1)}


def main() -> None:
    entry = sys.argv[1]
    # The controller stops this worker by closing stdin; a terminal's Ctrl-C is the controller's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        build = load_entry(entry)
    except Exception as error:  # any import failure is reported, not crashed on
        protocol.write(json.dumps({"ready": False, "error": f"cannot load {entry}: {error!r}"}) + "\n")
        return
    protocol.write(json.dumps({"ready": True, "rss_mb": round(_rss_mb(), 1)}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = synth_one(build, request)
        except Exception as error:  # a stack bug, jsii crash or full disk must not kill the worker
            answer = {
                "ok": False,
                # Not the stack rejecting its input (that is ValueError/TypeError in build): transient.
                "kind": "error",
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(limit=8),
            }
        protocol.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
